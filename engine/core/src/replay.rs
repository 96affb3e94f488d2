//! The set of replay tags a node has seen under its current key.
//!
//! Sphinx replay protection only has to last as long as a key: once a node stops accepting
//! packets under a key, their tags can be forgotten. So the set is sized at start-up for one
//! key epoch's packets, never grows, and is cleared (keeping its memory) by [`ReplaySet::rotate`]
//! when the key changes. When it is full it refuses new tags rather than forget old ones:
//! forgetting would let replays through, refusing only drops traffic, which the node counts.
//!
//! Memory: a tag is 16 bytes plus hashbrown's one control byte, in a table kept at most 7/8
//! full, so about 19.5 bytes per tag at capacity ([`ReplaySet::bytes_per_tag`]).

use hashbrown::HashSet;
use loopix_crypto::{REPLAY_TAG_LEN, ReplayTag};

/// What the set made of a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First sighting; recorded.
    Fresh,
    /// Seen before in this epoch: drop the packet.
    Replay,
    /// Not seen, but the set is full: drop the packet (overload), it was not recorded.
    Full,
}

/// A bounded set of replay tags for one key epoch.
pub struct ReplaySet {
    tags: HashSet<ReplayTag>,
    capacity: usize,
    epoch: u64,
}

impl ReplaySet {
    /// A set holding at least `min_capacity` tags, allocated now. The real capacity is
    /// rounded up to what the allocated table holds, so no memory sits unused.
    pub fn new(min_capacity: usize) -> Self {
        let mut tags = HashSet::with_capacity(min_capacity);
        let capacity = tags.capacity();
        // Fill and empty the table once, so its memory is mapped at start-up; left to the
        // first packets, the page faults stalled a fresh node's first traffic for tens of ms.
        tags.extend((0..capacity as u64).map(warm_up_tag));
        tags.clear();
        Self {
            tags,
            capacity,
            epoch: 0,
        }
    }

    /// Records `tag` unless it was seen before or the set is full.
    pub fn insert(&mut self, tag: ReplayTag) -> Seen {
        if self.tags.contains(&tag) {
            Seen::Replay
        } else if self.tags.len() >= self.capacity {
            Seen::Full
        } else {
            self.tags.insert(tag);
            Seen::Fresh
        }
    }

    /// True if `tag` was recorded in this epoch.
    pub fn contains(&self, tag: &ReplayTag) -> bool {
        self.tags.contains(tag)
    }

    /// Starts key epoch `epoch`: forgets every tag, keeps the memory.
    pub fn rotate(&mut self, epoch: u64) {
        self.tags.clear();
        self.epoch = epoch;
    }

    /// The key epoch the set holds tags for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Tags recorded.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// True if no tag is recorded.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Tags the set can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of table memory per tag when the set is full.
    pub fn bytes_per_tag(&self) -> f64 {
        let buckets = (self.capacity * 8 / 7).next_power_of_two().max(4);
        (buckets * (REPLAY_TAG_LEN + 1)) as f64 / self.capacity as f64
    }
}

/// Distinct throw-away tags for warming the table up.
fn warm_up_tag(i: u64) -> ReplayTag {
    let mut t = [0u8; REPLAY_TAG_LEN];
    t[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    ReplayTag(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u32) -> ReplayTag {
        let mut t = [0u8; REPLAY_TAG_LEN];
        t[..4].copy_from_slice(&i.to_le_bytes());
        ReplayTag(t)
    }

    #[test]
    fn second_sighting_is_a_replay() {
        let mut s = ReplaySet::new(16);
        assert_eq!(s.insert(tag(1)), Seen::Fresh);
        assert_eq!(s.insert(tag(2)), Seen::Fresh);
        assert_eq!(s.insert(tag(1)), Seen::Replay);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_full_set_refuses_new_tags_but_still_spots_replays() {
        let mut s = ReplaySet::new(100);
        let cap = s.capacity();
        assert!(cap >= 100);
        for i in 0..cap as u32 {
            assert_eq!(s.insert(tag(i)), Seen::Fresh);
        }
        assert_eq!(s.insert(tag(cap as u32)), Seen::Full);
        assert_eq!(s.insert(tag(0)), Seen::Replay);
        assert_eq!(s.len(), cap);
        assert_eq!(s.capacity(), cap, "never grows");
    }

    #[test]
    fn rotation_forgets_the_old_epoch() {
        let mut s = ReplaySet::new(8);
        s.insert(tag(5));
        s.rotate(1);
        assert_eq!(s.epoch(), 1);
        assert!(s.is_empty());
        assert_eq!(s.insert(tag(5)), Seen::Fresh);
    }

    #[test]
    fn memory_per_tag_is_within_32_bytes() {
        for n in [1_000, 100_000, 1_000_000] {
            let s = ReplaySet::new(n);
            assert!(s.bytes_per_tag() <= 32.0, "{n}: {}", s.bytes_per_tag());
        }
    }
}
