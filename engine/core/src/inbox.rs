//! Provider inboxes behind a storage trait: in memory here; the runtime plugs in a durable
//! store. A message leaves an inbox only when its client acknowledges it, so a poll answer
//! lost on the way costs nothing. Every store is bounded twice: per client (one sender
//! cannot fill the store through one recipient) and in all (the disk), each refusal with
//! its own reason.

use std::collections::{BTreeMap, VecDeque};

use loopix_crypto::Address;

/// Why a packet was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreRefused {
    /// The client's inbox is at its bound.
    InboxFull,
    /// The whole store is at its bound.
    StoreFull,
}

/// Per-client storage of packets awaiting pickup.
pub trait InboxStore {
    /// Stores `packet` under `id` (unique per client) at the end of `client`'s inbox.
    fn store(&mut self, client: Address, id: u64, packet: &[u8]) -> Result<(), StoreRefused>;
    /// Appends the ids of the oldest `max` packets of `client` to `out`.
    fn oldest(&self, client: Address, max: usize, out: &mut Vec<u64>);
    /// Copies packet `id` into `out`; false if it is not there.
    fn read(&self, client: Address, id: u64, out: &mut [u8]) -> bool;
    /// Removes packet `id`; false if it was not there.
    fn ack(&mut self, client: Address, id: u64) -> bool;
    /// Packets waiting for `client`.
    fn len(&self, client: Address) -> usize;
    /// Packets waiting in all inboxes.
    fn total(&self) -> usize;
    /// Makes every store and ack so far durable. Stores that are not yet durable are not
    /// handed out, so a crash can lose only packets no client has seen.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// One client's stored packets, oldest first, with their ids.
type Queue = VecDeque<(u64, Box<[u8]>)>;

/// Inboxes in memory, each bounded to `max_per_client` packets.
pub struct MemoryInbox {
    inboxes: BTreeMap<Address, Queue>,
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
    fn store(&mut self, client: Address, id: u64, packet: &[u8]) -> Result<(), StoreRefused> {
        if self.total >= self.max_total {
            return Err(StoreRefused::StoreFull);
        }
        let q = self.inboxes.entry(client).or_default();
        if q.len() >= self.max_per_client {
            return Err(StoreRefused::InboxFull);
        }
        q.push_back((id, packet.into()));
        self.total += 1;
        Ok(())
    }

    fn oldest(&self, client: Address, max: usize, out: &mut Vec<u64>) {
        if let Some(q) = self.inboxes.get(&client) {
            out.extend(q.iter().take(max).map(|(id, _)| *id));
        }
    }

    fn read(&self, client: Address, id: u64, out: &mut [u8]) -> bool {
        let found = self
            .inboxes
            .get(&client)
            .and_then(|q| q.iter().find(|(i, _)| *i == id));
        match found {
            Some((_, p)) if p.len() == out.len() => {
                out.copy_from_slice(p);
                true
            }
            _ => false,
        }
    }

    fn ack(&mut self, client: Address, id: u64) -> bool {
        let Some(q) = self.inboxes.get_mut(&client) else {
            return false;
        };
        let removed = q
            .iter()
            .position(|(i, _)| *i == id)
            .and_then(|at| q.remove(at))
            .is_some();
        self.total -= usize::from(removed);
        removed
    }

    fn len(&self, client: Address) -> usize {
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
        let c = Address(5);
        s.store(c, 10, b"one").unwrap();
        s.store(c, 11, b"two").unwrap();
        assert_eq!(s.store(c, 12, b"three"), Err(StoreRefused::InboxFull));
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![10, 11]);
        let mut buf = [0u8; 3];
        assert!(s.read(c, 11, &mut buf));
        assert_eq!(&buf, b"two");
        assert!(s.ack(c, 10));
        assert!(!s.ack(c, 10));
        assert_eq!(s.len(c), 1);
        assert_eq!(s.len(Address(6)), 0);
    }

    #[test]
    fn the_whole_store_is_bounded_too_and_acks_make_room() {
        let mut s = MemoryInbox::new(10, 3);
        for (i, c) in [1, 2, 3].into_iter().enumerate() {
            s.store(Address(c), i as u64, b"p").unwrap();
        }
        assert_eq!(s.store(Address(4), 9, b"p"), Err(StoreRefused::StoreFull));
        assert_eq!(s.total(), 3);
        assert!(s.ack(Address(2), 1));
        assert!(!s.ack(Address(2), 1), "acked once");
        assert_eq!(s.total(), 2);
        assert!(s.store(Address(4), 9, b"p").is_ok());
    }
}
