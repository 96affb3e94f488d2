//! The replay filter of one key epoch: which packets a node has unwrapped under that key.
//!
//! Sphinx replay protection only has to last as long as a key, so a node keeps one filter
//! per key in use (see [`crate::network::epoch`]). A filter is sized at start for the most packets a
//! shard can unwrap while the key is in use (its top rate times the key's lifetime), never
//! grows, and is reset (keeping its memory) when its key changes. Sized that way honest
//! load cannot fill it, and neither can anyone else: every recorded tag cost the node one
//! valid packet's unwrap.
//!
//! Layout: each tag is hashed with a per-filter secret key (SipHash-1-3, so senders cannot
//! aim tags at chosen buckets) to 64 bits `h`; 32 of them are a fingerprint, the rest pick
//! two candidate buckets of 32 fingerprints (two 64-byte cache lines each). A tag goes
//! into the emptier of its two buckets, which keeps buckets even: the first tag to find
//! both its buckets full came at 94 % of all entries filled in a 100 k-tag filter, 93 % at
//! 4 M and 91.4-92.4 % at 16 M (three seeds each; it falls slowly with size). Filters are
//! rated at 85 % ([`RATED_LOAD`]), so a tag costs 4 / 0.85 = 4.7 bytes at the rated
//! capacity, against ~19.5 for an exact hash set of 16-byte tags. (Buckets of 16 filled
//! first at 84-86 % at 4 M: too close to any useful rating.)
//!
//! The price is false positives: a fresh tag whose fingerprint equals one of the (at most
//! 64) fingerprints in its two buckets is taken for a replay and its packet dropped. That
//! happens with probability at most 64 / 2^32 = 1.5e-8 per packet ([`FALSE_POSITIVE_BOUND`]),
//! about 0.4 honest packets in a 20-minute epoch at 20,000 packets/s; they are counted as
//! replays. A replay is never missed.
//!
//! Should a filter ever meet more tags than it was sized for (a shard configured below its
//! real top rate), a tag whose two buckets are both full is not recorded and its packet is
//! dropped and counted ([`Seen::Full`]); all other packets still pass, replays are still
//! caught, and the next epoch starts empty. Full never means "drop everything".

use core::hash::Hasher;

use loopix_crypto::ReplayTag;
use siphasher::sip::SipHasher13;

/// What the filter made of a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First sighting; recorded.
    Fresh,
    /// Seen before under this key (or, with probability [`FALSE_POSITIVE_BOUND`], a
    /// fresh tag that looks like one): drop the packet.
    Replay,
    /// Not seen, but both its buckets are full: drop the packet; it was not recorded.
    Full,
}

/// Fingerprints per bucket: 32 × 4 bytes, two cache lines.
pub const BUCKET: usize = 32;
/// The share of entries a filter is rated to fill with no tag finding both its buckets
/// full (see the module docs for the measurements behind it).
pub const RATED_LOAD: f64 = 0.85;
/// The most a fresh tag can be mistaken for a replay: 2 buckets × 32 fingerprints of
/// 32 bits.
pub const FALSE_POSITIVE_BOUND: f64 = (2 * BUCKET) as f64 / 4_294_967_296.0;

/// The secret that keys a filter's hash: persisted with its tags so they can be reloaded.
pub type FilterKey = [u8; 16];

#[repr(align(64))]
#[derive(Clone, Copy)]
struct Bucket([u32; BUCKET]);

/// A bounded replay filter for one key epoch. See the module docs.
pub struct ReplayFilter {
    buckets: Box<[Bucket]>,
    key: FilterKey,
    len: usize,
    rated: usize,
}

impl ReplayFilter {
    /// A filter for at least `rated_tags` tags, allocated and touched now (left to the
    /// first packets, the page faults stalled a fresh node's first traffic for tens of ms).
    pub fn new(rated_tags: usize, key: FilterKey) -> Self {
        let n = (rated_tags as f64 / (BUCKET as f64 * RATED_LOAD))
            .ceil()
            .max(1.0) as usize;
        let mut buckets = vec![Bucket([0; BUCKET]); n].into_boxed_slice();
        for b in buckets.iter_mut() {
            // A volatile write, so that the page is really faulted in.
            // SAFETY: `b.0[0]` is a valid, aligned, exclusively borrowed u32.
            unsafe { core::ptr::write_volatile(&mut b.0[0], 0) };
        }
        Self {
            rated: (n as f64 * BUCKET as f64 * RATED_LOAD) as usize,
            buckets,
            key,
            len: 0,
        }
    }

    /// The table memory of a filter for `rated_tags` (what [`Self::new`] will allocate).
    pub fn bytes_for(rated_tags: usize) -> usize {
        buckets_for(rated_tags) * core::mem::size_of::<Bucket>()
    }

    /// Forgets every tag and takes a new hash key, keeping the memory.
    pub fn reset(&mut self, key: FilterKey) {
        self.buckets.fill(Bucket([0; BUCKET]));
        self.key = key;
        self.len = 0;
    }

    /// The 64-bit keyed hash a tag is filed under (what a journal stores).
    pub fn hash(&self, tag: &ReplayTag) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.key);
        h.write(&tag.0);
        h.finish()
    }

    /// Records `tag` unless it was seen before or its buckets are full; also returns the
    /// hash it was filed under.
    pub fn insert(&mut self, tag: &ReplayTag) -> (Seen, u64) {
        let h = self.hash(tag);
        (self.insert_hash(h), h)
    }

    /// Records a tag by its hash (see [`Self::hash`]), as when reloading a journal.
    pub fn insert_hash(&mut self, h: u64) -> Seen {
        let (fp, b1, b2) = self.place(h);
        let (seen1, free1) = scan(&self.buckets[b1], fp);
        let (seen2, free2) = scan(&self.buckets[b2], fp);
        if seen1 || seen2 {
            return Seen::Replay;
        }
        let (b, free) = if free1 <= free2 {
            (b1, free1)
        } else {
            (b2, free2)
        };
        if free == BUCKET {
            return Seen::Full;
        }
        self.buckets[b].0[free] = fp;
        self.len += 1;
        Seen::Fresh
    }

    /// True if `tag` is recorded (or looks recorded; see [`FALSE_POSITIVE_BOUND`]).
    pub fn contains(&self, tag: &ReplayTag) -> bool {
        let (fp, b1, b2) = self.place(self.hash(tag));
        scan(&self.buckets[b1], fp).0 || scan(&self.buckets[b2], fp).0
    }

    /// The fingerprint (never 0, which marks a free entry) and the two buckets of `h`.
    fn place(&self, h: u64) -> (u32, usize, usize) {
        let fp = ((h >> 32) as u32).max(1);
        let n = self.buckets.len() as u64;
        let b1 = ((h & 0xffff_ffff) * n) >> 32;
        let mixed = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let b2 = ((mixed >> 32) * n) >> 32;
        (fp, b1 as usize, b2 as usize)
    }

    /// The hash key, for the journal.
    pub fn key(&self) -> FilterKey {
        self.key
    }

    /// Tags recorded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no tag is recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tags the filter is rated for: at least what it was created for.
    pub fn rated_capacity(&self) -> usize {
        self.rated
    }

    /// Bytes of table memory.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * core::mem::size_of::<Bucket>()
    }

    /// Bytes per tag at the rated capacity.
    pub fn bytes_per_tag(&self) -> f64 {
        self.bytes() as f64 / self.rated as f64
    }
}

fn buckets_for(rated_tags: usize) -> usize {
    (rated_tags as f64 / (BUCKET as f64 * RATED_LOAD))
        .ceil()
        .max(1.0) as usize
}

/// Whether `fp` is in the bucket, and the index of its first free entry (entries fill from
/// the front and are never emptied one by one, so every entry after it is free too).
fn scan(bucket: &Bucket, fp: u32) -> (bool, usize) {
    let mut seen = false;
    let mut free = BUCKET;
    for (i, &entry) in bucket.0.iter().enumerate().rev() {
        seen |= entry == fp;
        if entry == 0 {
            free = i;
        }
    }
    (seen, free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    fn random_tags(seed: u64, n: usize) -> Vec<ReplayTag> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut t = [0u8; 16];
                rng.fill_bytes(&mut t);
                ReplayTag(t)
            })
            .collect()
    }

    #[test]
    fn second_sighting_is_a_replay() {
        let mut f = ReplayFilter::new(100, [1; 16]);
        let tags = random_tags(1, 3);
        assert_eq!(f.insert(&tags[0]).0, Seen::Fresh);
        assert_eq!(f.insert(&tags[1]).0, Seen::Fresh);
        assert_eq!(f.insert(&tags[0]).0, Seen::Replay);
        assert!(f.contains(&tags[1]) && !f.contains(&tags[2]));
        assert_eq!(f.len(), 2);
    }

    /// The sizing claim: a filter takes its whole rated capacity with no tag refused, and
    /// then still knows every one of them.
    #[test]
    fn a_filter_never_fills_below_its_rated_capacity() {
        for (seed, rated) in [(1, 10_000), (2, 100_000), (3, 250_000), (4, 777)] {
            let mut f = ReplayFilter::new(rated, [seed as u8; 16]);
            assert!(f.rated_capacity() >= rated);
            let tags = random_tags(seed, f.rated_capacity());
            for (i, t) in tags.iter().enumerate() {
                assert_eq!(f.insert(t).0, Seen::Fresh, "seed {seed}: tag {i} refused");
            }
            assert!(tags.iter().all(|t| f.insert(t).0 == Seen::Replay));
            assert!(f.bytes_per_tag() <= 4.8, "{}", f.bytes_per_tag());
        }
    }

    #[test]
    fn false_positives_stay_within_the_bound() {
        let mut f = ReplayFilter::new(200_000, [9; 16]);
        for t in random_tags(5, f.rated_capacity()) {
            f.insert(&t);
        }
        let probes = 2_000_000;
        let false_positives = random_tags(6, probes)
            .iter()
            .filter(|t| f.contains(t))
            .count();
        // Expected ~0.03 at the bound; 3 or more would be a 1-in-10^5 event.
        assert!(false_positives <= 2, "{false_positives} of {probes}");
    }

    #[test]
    fn beyond_its_capacity_a_filter_refuses_some_tags_and_still_catches_replays() {
        let mut f = ReplayFilter::new(1_000, [3; 16]);
        let tags = random_tags(7, f.rated_capacity() * 2);
        let seen: Vec<Seen> = tags.iter().map(|t| f.insert(t).0).collect();
        let full = seen.iter().filter(|s| **s == Seen::Full).count();
        let fresh = seen.iter().filter(|s| **s == Seen::Fresh).count();
        assert!(full > 0 && fresh > f.rated_capacity(), "{full} {fresh}");
        for (t, s) in tags.iter().zip(&seen) {
            if *s == Seen::Fresh {
                assert_eq!(f.insert(t).0, Seen::Replay);
            }
        }
    }

    #[test]
    fn reset_forgets_and_rekeys_and_hashes_reload() {
        let tags = random_tags(8, 50);
        let mut f = ReplayFilter::new(100, [1; 16]);
        let hashes: Vec<u64> = tags.iter().map(|t| f.insert(t).1).collect();
        let mut reloaded = ReplayFilter::new(100, f.key());
        for h in &hashes {
            assert_eq!(reloaded.insert_hash(*h), Seen::Fresh);
        }
        assert!(tags.iter().all(|t| reloaded.insert(t).0 == Seen::Replay));
        f.reset([2; 16]);
        assert!(f.is_empty() && f.key() == [2; 16]);
        assert_eq!(f.insert(&tags[0]).0, Seen::Fresh);
        assert_ne!(
            f.hash(&tags[0]),
            hashes[0],
            "a new key files tags elsewhere"
        );
    }
}
