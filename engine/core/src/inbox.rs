//! Provider inboxes behind a storage trait: in memory here; the runtime plugs in a durable
//! store. A message leaves an inbox only when its client acknowledges it, so a poll answer
//! lost on the way costs nothing.

use std::collections::{BTreeMap, VecDeque};

use loopix_crypto::Address;

/// The inbox is at its bound; the packet was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxFull;

/// Per-client storage of packets awaiting pickup.
pub trait InboxStore {
    /// Stores `packet` under `id` (unique per client) at the end of `client`'s inbox.
    fn store(&mut self, client: Address, id: u64, packet: &[u8]) -> Result<(), InboxFull>;
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
}

impl MemoryInbox {
    /// Empty inboxes of at most `max_per_client` packets each.
    pub fn new(max_per_client: usize) -> Self {
        Self {
            inboxes: BTreeMap::new(),
            max_per_client,
        }
    }
}

impl InboxStore for MemoryInbox {
    fn store(&mut self, client: Address, id: u64, packet: &[u8]) -> Result<(), InboxFull> {
        let q = self.inboxes.entry(client).or_default();
        if q.len() >= self.max_per_client {
            return Err(InboxFull);
        }
        q.push_back((id, packet.into()));
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
        match q.iter().position(|(i, _)| *i == id) {
            Some(at) => q.remove(at).is_some(),
            None => false,
        }
    }

    fn len(&self, client: Address) -> usize {
        self.inboxes.get(&client).map_or(0, VecDeque::len)
    }

    fn total(&self) -> usize {
        self.inboxes.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_until_acknowledged() {
        let mut s = MemoryInbox::new(2);
        let c = Address(5);
        s.store(c, 10, b"one").unwrap();
        s.store(c, 11, b"two").unwrap();
        assert_eq!(s.store(c, 12, b"three"), Err(InboxFull));
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
}
