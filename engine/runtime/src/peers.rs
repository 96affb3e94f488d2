//! Socket addresses and topology ids, both ways. Nodes come from the topology and are never
//! rebound by traffic; a provider learns where its clients are from their polls (bounded,
//! so a flood of claims cannot grow it without limit). A poll is not authenticated yet, so
//! a claim may be false: what it can never do is take a node's id or a node's address,
//! which would send a mix's traffic to the claimant or drop the mix's own packets as from
//! an unknown sender.

use std::collections::{HashMap, HashSet};
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
    /// The topology's nodes: bound for good.
    nodes: HashSet<Address>,
}

impl Peers {
    /// Every node of the topology.
    pub fn from_topology(t: &Topology) -> Self {
        let mut p = Self::default();
        for n in &t.nodes {
            p.by_id.insert(n.id, n.address);
            p.by_addr.insert(n.address, n.id);
            p.nodes.insert(n.id);
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
    /// Refused, returning false, when `id` is a node's or `addr` a node's address, or the
    /// book is full.
    pub fn learn(&mut self, id: Address, addr: SocketAddr) -> bool {
        let node_addr = self
            .by_addr
            .get(&addr)
            .is_some_and(|a| self.nodes.contains(a));
        if self.nodes.contains(&id) || node_addr {
            return false;
        }
        if self.by_id.len() >= MAX_LEARNED && !self.by_id.contains_key(&id) {
            return false;
        }
        if let Some(old) = self.by_id.insert(id, addr) {
            self.by_addr.remove(&old);
        }
        if let Some(previous) = self.by_addr.insert(addr, id)
            && previous != id
        {
            // Another client was at this address: it is not there any more.
            self.by_id.remove(&previous);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Peers {
        let mut p = Peers::default();
        let mix: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        p.by_id.insert(Address(1), mix);
        p.by_addr.insert(mix, Address(1));
        p.nodes.insert(Address(1));
        p
    }

    #[test]
    fn a_claim_can_never_take_a_nodes_id_or_address() {
        let mut p = book();
        let (mix, attacker) = (
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:6666".parse().unwrap(),
        );
        assert!(!p.learn(Address(1), attacker), "a node's id");
        assert_eq!(p.addr_of(Address(1)), Some(mix));
        assert_eq!(p.id_of(&attacker), UNKNOWN);
        assert!(!p.learn(Address(10_000), mix), "a node's address");
        assert_eq!(p.id_of(&mix), Address(1));
        assert_eq!(p.addr_of(Address(10_000)), None);
    }

    #[test]
    fn clients_are_learned_and_move() {
        let mut p = book();
        let (a, b) = (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        );
        assert!(p.learn(Address(10_000), a));
        assert_eq!(p.addr_of(Address(10_000)), Some(a));
        assert!(p.learn(Address(10_000), b));
        assert_eq!((p.id_of(&a), p.id_of(&b)), (UNKNOWN, Address(10_000)));
        assert!(p.learn(Address(10_001), b), "another client now at b");
        assert_eq!(p.addr_of(Address(10_000)), None);
    }
}
