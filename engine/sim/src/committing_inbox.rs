//! A provider's store as `loopix node` keeps it, in memory: stores and acks are buffered
//! until a flush commits them, only committed packets are handed out, a crash keeps the
//! committed part alone, and a commit may fail (a full disk, an I/O error), in which case
//! the buffer stays for the next flush. The simulator's providers run on it, so that chaos
//! runs meet what the durable store meets.

use loopix_core::roles::inbox::{InboxLimits, InboxStore, MemoryInbox, StoreRefused};
use loopix_core::roles::rate::uniform;
use loopix_crypto::NodeId;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// See the module docs.
pub struct CommittingInbox {
    committed: MemoryInbox,
    stores: Vec<(NodeId, u64, u64, Box<[u8]>)>,
    acks: Vec<(NodeId, u64)>,
    limits: InboxLimits,
    /// Share of commits that fail.
    fail_rate: f64,
    rng: ChaCha20Rng,
    /// Commits that failed.
    pub failed_commits: u64,
}

impl CommittingInbox {
    /// An empty store within `limits` whose commits fail at `fail_rate`, drawn from `seed`.
    pub fn new(limits: InboxLimits, fail_rate: f64, seed: u64) -> Self {
        Self::over(limits.memory(), limits, fail_rate, seed)
    }

    /// The store over what an earlier one committed (a provider restarted on its disk).
    pub fn over(committed: MemoryInbox, limits: InboxLimits, fail_rate: f64, seed: u64) -> Self {
        Self {
            committed,
            stores: Vec::new(),
            acks: Vec::new(),
            limits,
            fail_rate,
            rng: ChaCha20Rng::seed_from_u64(seed),
            failed_commits: 0,
        }
    }

    /// What survives a crash: the committed packets.
    pub fn into_committed(self) -> MemoryInbox {
        self.committed
    }

    fn buffered(&self, client: NodeId, id: u64) -> bool {
        self.stores.iter().any(|s| s.0 == client && s.1 == id)
    }
}

impl InboxStore for CommittingInbox {
    fn store(
        &mut self,
        client: NodeId,
        id: u64,
        at_us: u64,
        packet: &[u8],
    ) -> Result<(), StoreRefused> {
        if self.committed.total() + self.stores.len() >= self.limits.total {
            return Err(StoreRefused::StoreFull);
        }
        let buffered = self.stores.iter().filter(|s| s.0 == client).count();
        if self.committed.len(client) + buffered >= self.limits.per_client {
            return Err(StoreRefused::InboxFull);
        }
        self.stores.push((client, id, at_us, packet.into()));
        Ok(())
    }

    fn oldest(&self, client: NodeId, max: usize, out: &mut Vec<u64>) {
        self.committed.oldest(client, max, out);
    }

    fn read(&self, client: NodeId, id: u64, out: &mut [u8]) -> bool {
        self.committed.read(client, id, out)
    }

    fn ack(&mut self, client: NodeId, id: u64) -> bool {
        let mut probe = Vec::new();
        self.committed.oldest(client, usize::MAX, &mut probe);
        let known = probe.contains(&id) || self.buffered(client, id);
        if known {
            self.acks.push((client, id));
        }
        known
    }

    fn expire(&mut self, stored_before_us: u64, max: usize) -> usize {
        self.committed.expire(stored_before_us, max)
    }

    fn len(&self, client: NodeId) -> usize {
        self.committed.len(client)
    }

    fn total(&self) -> usize {
        self.committed.total()
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.stores.is_empty() && self.acks.is_empty() {
            return Ok(());
        }
        if self.fail_rate > 0.0 && uniform(&mut self.rng) < self.fail_rate {
            self.failed_commits += 1;
            return Err("commit failed (injected)".into());
        }
        for (client, id, at_us, packet) in self.stores.drain(..) {
            // Within the bounds checked when it was buffered.
            let _ = self.committed.store(client, id, at_us, &packet);
        }
        for (client, id) in self.acks.drain(..) {
            self.committed.ack(client, id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> InboxLimits {
        InboxLimits {
            per_client: 10,
            total: 100,
            ttl_us: u64::MAX,
        }
    }

    #[test]
    fn only_committed_packets_are_handed_out_and_a_failed_commit_keeps_the_buffer() {
        let c = NodeId(3);
        let mut s = CommittingInbox::new(limits(), 1.0, 1);
        s.store(c, 7, 0, b"pkt").unwrap();
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert!(ids.is_empty(), "not committed, not handed out");
        assert!(s.flush().is_err());
        assert_eq!((s.failed_commits, s.len(c)), (1, 0));
        s.fail_rate = 0.0;
        s.flush().unwrap();
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![7]);
        // A crash keeps what was committed, not what was buffered since.
        s.store(c, 8, 0, b"new").unwrap();
        let after = CommittingInbox::over(s.into_committed(), limits(), 0.0, 2);
        assert_eq!(after.len(c), 1);
    }
}
