//! Where each node listens, both ways. The topology is the only thing that binds a node's
//! id to an address: traffic never does, so no datagram can redirect a node's packets or
//! pass as a node by claiming its id.

use std::collections::HashMap;
use std::net::SocketAddr;

use loopix_crypto::NodeId;

use crate::network::topology::Topology;

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct NodeAddresses {
    by_id: HashMap<NodeId, SocketAddr>,
    by_addr: HashMap<SocketAddr, NodeId>,
}

impl NodeAddresses {
    /// Every node of `topology`.
    pub fn new(topology: &Topology) -> Self {
        Self {
            by_id: topology.nodes.iter().map(|n| (n.id, n.address)).collect(),
            by_addr: topology.nodes.iter().map(|n| (n.address, n.id)).collect(),
        }
    }

    /// Where node `id` listens.
    pub fn address(&self, id: NodeId) -> Option<SocketAddr> {
        self.by_id.get(&id).copied()
    }

    /// The node listening at `addr`, if any. A source address can be forged: this says
    /// where a datagram claims to come from, not who sent it.
    pub fn node_at(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.by_addr.get(addr).copied()
    }
}
