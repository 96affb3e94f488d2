//! Socket addresses and topology ids, both ways. Nodes come from the topology; a provider
//! learns where its clients are from their polls (bounded, so a flood of claims cannot grow
//! it without limit).

use std::collections::HashMap;
use std::net::SocketAddr;

use loopix_core::topology::Topology;
use loopix_crypto::Address;

/// The id given to datagrams from an address nobody claimed.
pub const UNKNOWN: Address = Address(u64::MAX);

/// Learned client addresses kept at most.
const MAX_LEARNED: usize = 1 << 20;

/// The address book of one shard.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    by_id: HashMap<Address, SocketAddr>,
    by_addr: HashMap<SocketAddr, Address>,
}

impl Peers {
    /// Every node of the topology.
    pub fn from_topology(t: &Topology) -> Self {
        let mut p = Self::default();
        for n in &t.nodes {
            p.by_id.insert(n.id, n.address);
            p.by_addr.insert(n.address, n.id);
        }
        p
    }

    /// Who sends from `addr` ([`UNKNOWN`] if nobody we know).
    pub fn id_of(&self, addr: &SocketAddr) -> Address {
        self.by_addr.get(addr).copied().unwrap_or(UNKNOWN)
    }

    /// Where `id` listens.
    pub fn addr_of(&self, id: Address) -> Option<SocketAddr> {
        self.by_id.get(&id).copied()
    }

    /// Records that client `id` is at `addr` (a client that moves replaces its entry).
    pub fn learn(&mut self, id: Address, addr: SocketAddr) {
        if self.by_id.len() >= MAX_LEARNED && !self.by_id.contains_key(&id) {
            return;
        }
        if let Some(old) = self.by_id.insert(id, addr) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(addr, id);
    }
}
