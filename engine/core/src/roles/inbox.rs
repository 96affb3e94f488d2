//! Provider inboxes behind a storage trait: in memory here; the runtime plugs in a durable
//! store. A message leaves an inbox only when its client acknowledges it, so a poll answer
//! lost on the way costs nothing. Every store is bounded twice: per client (one sender
//! cannot fill the store through one recipient) and in all (the disk), each refusal with
//! its own reason; and in time: the provider expires packets no client collected within
//! its inbox TTL, so a flood sent to an offline recipient frees the inbox by itself
//! instead of locking the recipient out for good.

use std::collections::{BTreeMap, VecDeque};

use loopix_crypto::NodeId;

/// A provider's inbox bounds, in count and in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxLimits {
    /// Packets kept per client (beyond it, `inbox_full`).
    pub per_client: usize,
    /// Packets kept in all (beyond it, `store_full`).
    pub total: usize,
    /// How long a packet waits for its client before it is deleted unread
    /// (`inbox_expired`), µs.
    pub ttl_us: u64,
}

/// A week: a client offline over a long weekend still finds its messages, and a flood
/// sent to a recipient who never polls frees its inbox within the week.
pub const DEFAULT_INBOX_TTL_US: u64 = 7 * 24 * 3600 * 1_000_000;

impl Default for InboxLimits {
    fn default() -> Self {
        Self {
            per_client: 10_000,
            total: 1_000_000,
            ttl_us: DEFAULT_INBOX_TTL_US,
        }
    }
}

impl InboxLimits {
    /// Memory inboxes within these bounds.
    pub fn memory(&self) -> MemoryInbox {
        MemoryInbox::new(self.per_client, self.total)
    }
}

/// Why a packet was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreRefused {
    /// The client's inbox is at its bound.
    InboxFull,
    /// The whole store is at its bound.
    StoreFull,
    /// The store's writer is behind by more than its queue holds.
    Busy,
}

/// Per-client storage of packets awaiting pickup.
pub trait InboxStore {
    /// Stores `packet` under `id` (unique per client) at the end of `client`'s inbox, as
    /// stored at `at_us` (the driver's clock, never decreasing).
    fn store(
        &mut self,
        client: NodeId,
        id: u64,
        at_us: u64,
        packet: &[u8],
    ) -> Result<(), StoreRefused>;
    /// Appends the ids of the oldest `max` packets of `client` to `out`.
    fn oldest(&self, client: NodeId, max: usize, out: &mut Vec<u64>);
    /// Copies packet `id` into `out`; false if it is not there.
    fn read(&self, client: NodeId, id: u64, out: &mut [u8]) -> bool;
    /// Removes packet `id`; false if it was not there.
    fn ack(&mut self, client: NodeId, id: u64) -> bool;
    /// Removes packets stored before `stored_before_us`, at most `max` of them (the rest
    /// at the next call: one call's work stays bounded); returns how many it removed.
    fn expire(&mut self, stored_before_us: u64, max: usize) -> usize;
    /// Packets waiting for `client`.
    fn len(&self, client: NodeId) -> usize;
    /// Packets waiting in all inboxes.
    fn total(&self) -> usize;
    /// Makes every store and ack so far durable, or hands them to what will (a writer
    /// off the packet path). Stores that are not yet durable are not handed out, so a
    /// crash can lose only packets no client has seen.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The longest any call waited on a disk, µs (0 for a store in memory): what a shard
    /// spent blocked on it.
    fn longest_wait_us(&self) -> u64 {
        0
    }
}

/// A stored packet: its id, when it was stored, its bytes.
struct Stored {
    id: u64,
    at_us: u64,
    packet: Box<[u8]>,
}

/// One client's stored packets, oldest first.
type Queue = VecDeque<Stored>;

/// Inboxes in memory, each bounded to `max_per_client` packets.
pub struct MemoryInbox {
    inboxes: BTreeMap<NodeId, Queue>,
    max_per_client: usize,
    max_total: usize,
    total: usize,
}

impl MemoryInbox {
    /// Empty inboxes of at most `max_per_client` packets each.
    pub fn new(max_per_client: usize, max_total: usize) -> Self {
        Self {
            inboxes: BTreeMap::new(),
            max_per_client,
            max_total,
            total: 0,
        }
    }
}

impl InboxStore for MemoryInbox {
    fn store(
        &mut self,
        client: NodeId,
        id: u64,
        at_us: u64,
        packet: &[u8],
    ) -> Result<(), StoreRefused> {
        if self.total >= self.max_total {
            return Err(StoreRefused::StoreFull);
        }
        let q = self.inboxes.entry(client).or_default();
        if q.len() >= self.max_per_client {
            return Err(StoreRefused::InboxFull);
        }
        q.push_back(Stored {
            id,
            at_us,
            packet: packet.into(),
        });
        self.total += 1;
        Ok(())
    }

    fn oldest(&self, client: NodeId, max: usize, out: &mut Vec<u64>) {
        if let Some(q) = self.inboxes.get(&client) {
            out.extend(q.iter().take(max).map(|s| s.id));
        }
    }

    fn read(&self, client: NodeId, id: u64, out: &mut [u8]) -> bool {
        let found = self
            .inboxes
            .get(&client)
            .and_then(|q| q.iter().find(|s| s.id == id));
        match found {
            Some(s) if s.packet.len() == out.len() => {
                out.copy_from_slice(&s.packet);
                true
            }
            _ => false,
        }
    }

    fn ack(&mut self, client: NodeId, id: u64) -> bool {
        let Some(q) = self.inboxes.get_mut(&client) else {
            return false;
        };
        let removed = q
            .iter()
            .position(|s| s.id == id)
            .and_then(|at| q.remove(at))
            .is_some();
        self.total -= usize::from(removed);
        removed
    }

    fn expire(&mut self, stored_before_us: u64, max: usize) -> usize {
        let mut removed = 0;
        for q in self.inboxes.values_mut() {
            while removed < max && q.front().is_some_and(|s| s.at_us < stored_before_us) {
                q.pop_front();
                removed += 1;
            }
        }
        self.inboxes.retain(|_, q| !q.is_empty());
        self.total -= removed;
        removed
    }

    fn len(&self, client: NodeId) -> usize {
        self.inboxes.get(&client).map_or(0, VecDeque::len)
    }

    fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_until_acknowledged() {
        let mut s = MemoryInbox::new(2, 100);
        let c = NodeId(5);
        s.store(c, 10, 0, b"one").unwrap();
        s.store(c, 11, 0, b"two").unwrap();
        assert_eq!(s.store(c, 12, 0, b"three"), Err(StoreRefused::InboxFull));
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![10, 11]);
        let mut buf = [0u8; 3];
        assert!(s.read(c, 11, &mut buf));
        assert_eq!(&buf, b"two");
        assert!(s.ack(c, 10));
        assert!(!s.ack(c, 10));
        assert_eq!(s.len(c), 1);
        assert_eq!(s.len(NodeId(6)), 0);
    }

    #[test]
    fn the_whole_store_is_bounded_too_and_acks_make_room() {
        let mut s = MemoryInbox::new(10, 3);
        for (i, c) in [1, 2, 3].into_iter().enumerate() {
            s.store(NodeId(c), i as u64, 0, b"p").unwrap();
        }
        assert_eq!(s.store(NodeId(4), 9, 0, b"p"), Err(StoreRefused::StoreFull));
        assert_eq!(s.total(), 3);
        assert!(s.ack(NodeId(2), 1));
        assert!(!s.ack(NodeId(2), 1), "acked once");
        assert_eq!(s.total(), 2);
        assert!(s.store(NodeId(4), 9, 0, b"p").is_ok());
    }

    #[test]
    fn packets_stored_before_the_cutoff_expire_at_most_max_a_call() {
        let mut s = MemoryInbox::new(10, 100);
        let (a, b) = (NodeId(1), NodeId(2));
        s.store(a, 1, 100, b"p").unwrap();
        s.store(a, 2, 200, b"p").unwrap();
        s.store(b, 3, 150, b"p").unwrap();
        s.store(a, 4, 300, b"p").unwrap();
        assert_eq!(s.expire(100, 10), 0, "stored at the cutoff: kept");
        assert_eq!(s.expire(201, 1), 1, "at most `max` a call");
        assert_eq!(s.expire(201, 10), 2);
        let mut ids = Vec::new();
        s.oldest(a, 10, &mut ids);
        s.oldest(b, 10, &mut ids);
        assert_eq!(
            ids,
            vec![4],
            "only the packet stored after the cutoff is left"
        );
        assert_eq!((s.total(), s.len(a), s.len(b)), (1, 1, 0));
        assert!(!s.ack(a, 1), "an expired packet is gone");
    }
}
