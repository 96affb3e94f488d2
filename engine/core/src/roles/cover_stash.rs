//! Cover packets a client builds ahead, a batch at a time.
//!
//! Nearly everything a client sends is cover: its loop and drop streams, and its payload
//! stream whenever no message is queued. Building a packet is the client's main cost (a
//! multiplication per hop), and building a batch together in vector lanes costs about
//! half as much per packet ([`crate::formats::codec::Codec::build_batch_into`]). So when
//! a cover tick finds none ready, the client builds a batch of that kind, sends one and
//! keeps the rest here for the next ticks.
//!
//! What a packet holds was decided when it was built: its path, the delays its hops will
//! hold it, and the epoch keys those hops are expected to use. Sent later, every hop sees
//! it later by as much. A stashed packet is therefore sent only within a short age (a
//! fraction of the key grace, so a hop it reaches after an epoch boundary still holds the
//! key it was built for) and never after the topology changed; older ones are discarded
//! and counted. The send times stay the Poisson ticks': building ahead changes when the
//! bytes are made, never when they leave.

use std::collections::VecDeque;

/// Cover packets built together: eight fill one run of the widest lanes.
pub const COVER_BATCH: usize = 8;

/// The longest a stashed packet waits, µs (at most; a quarter of the key grace if less).
pub const MAX_STASH_AGE_US: u64 = 5_000_000;

/// Which cover stream a packet is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverKind {
    Drop,
    Loop,
}

/// A packet built ahead, and what sending it needs.
#[derive(Debug)]
pub struct Prebuilt {
    pub bytes: Vec<u8>,
    pub built_at_us: u64,
    /// Loops: the nonce its body carries and the delays its path asked of its hops.
    pub nonce: u64,
    pub requested_delay_us: u64,
}

/// Prebuilt drops and loops, oldest first, and the buffers they were built in.
#[derive(Debug)]
pub struct CoverStash {
    drops: VecDeque<Prebuilt>,
    loops: VecDeque<Prebuilt>,
    /// Buffers of packets sent, for the next batch: no allocation once warm.
    spare: Vec<Vec<u8>>,
    packet_len: usize,
    max_age_us: u64,
    /// Packets built and never sent: too old, or the topology changed.
    pub discarded: u64,
}

impl CoverStash {
    /// A stash for packets of `packet_len` bytes; packets wait at most a quarter of
    /// `grace_us` (and at most [`MAX_STASH_AGE_US`]).
    pub fn new(packet_len: usize, grace_us: u64) -> Self {
        Self {
            drops: VecDeque::with_capacity(COVER_BATCH),
            loops: VecDeque::with_capacity(COVER_BATCH),
            spare: Vec::with_capacity(2 * COVER_BATCH),
            packet_len,
            max_age_us: (grace_us / 4).min(MAX_STASH_AGE_US),
            discarded: 0,
        }
    }

    fn queue(&mut self, kind: CoverKind) -> &mut VecDeque<Prebuilt> {
        match kind {
            CoverKind::Drop => &mut self.drops,
            CoverKind::Loop => &mut self.loops,
        }
    }

    /// The oldest packet of `kind` still young enough at `now_us`; older ones are
    /// discarded on the way.
    pub fn take(&mut self, kind: CoverKind, now_us: u64) -> Option<Prebuilt> {
        let max_age = self.max_age_us;
        loop {
            let p = self.queue(kind).pop_front()?;
            if now_us.saturating_sub(p.built_at_us) <= max_age {
                return Some(p);
            }
            self.discarded += 1;
            self.spare.push(p.bytes);
        }
    }

    /// Keeps `p` for a later tick of its kind.
    pub fn keep(&mut self, kind: CoverKind, p: Prebuilt) {
        self.queue(kind).push_back(p);
    }

    /// A packet-long buffer to build into: a spare one, or a new one while the stash
    /// warms up.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| vec![0u8; self.packet_len])
    }

    /// Takes back the buffer of a packet sent or not used.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        self.spare.push(bytes);
    }

    /// Forgets every stashed packet (the topology changed: their paths may be gone).
    pub fn clear(&mut self) {
        self.discarded += self.len() as u64;
        self.spare.extend(self.drops.drain(..).map(|p| p.bytes));
        self.spare.extend(self.loops.drain(..).map(|p| p.bytes));
    }

    /// Packets stashed now.
    pub fn len(&self) -> usize {
        self.drops.len() + self.loops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prebuilt(stash: &mut CoverStash, at: u64, nonce: u64) -> Prebuilt {
        Prebuilt {
            bytes: stash.buffer(),
            built_at_us: at,
            nonce,
            requested_delay_us: 0,
        }
    }

    #[test]
    fn packets_come_out_oldest_first_by_kind_and_only_while_young() {
        let mut stash = CoverStash::new(64, 60_000_000);
        for (i, kind) in [CoverKind::Loop, CoverKind::Drop, CoverKind::Loop]
            .into_iter()
            .enumerate()
        {
            let p = prebuilt(&mut stash, 1_000, i as u64);
            stash.keep(kind, p);
        }
        assert_eq!(stash.len(), 3);
        assert_eq!(stash.take(CoverKind::Loop, 2_000).unwrap().nonce, 0);
        assert_eq!(stash.take(CoverKind::Drop, 2_000).unwrap().nonce, 1);
        assert!(stash.take(CoverKind::Drop, 2_000).is_none());
        // The last loop is past its age (5 s, a quarter of the 60 s grace being more).
        assert!(
            stash
                .take(CoverKind::Loop, 1_000 + MAX_STASH_AGE_US + 1)
                .is_none()
        );
        assert_eq!(stash.discarded, 1);
        assert!(stash.is_empty());
    }

    #[test]
    fn a_short_grace_shortens_the_age_and_a_new_topology_empties_the_stash() {
        let mut stash = CoverStash::new(64, 4_000_000); // 1 s age
        for t in [0, 10, 20] {
            let p = prebuilt(&mut stash, t, t);
            stash.keep(CoverKind::Drop, p);
        }
        // Two too old at 1.000015 s; the third still young.
        assert_eq!(stash.take(CoverKind::Drop, 1_000_015).unwrap().nonce, 20);
        assert_eq!(stash.discarded, 2);
        let p = prebuilt(&mut stash, 0, 7);
        stash.keep(CoverKind::Loop, p);
        stash.clear();
        assert!(stash.take(CoverKind::Loop, 0).is_none());
        assert_eq!(stash.discarded, 3);
    }

    #[test]
    fn buffers_are_reused_once_warm() {
        let mut stash = CoverStash::new(64, 60_000_000);
        let a = stash.buffer();
        let ptr = a.as_ptr();
        stash.recycle(a);
        let b = stash.buffer();
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), 64);
    }
}
