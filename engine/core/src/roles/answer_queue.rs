//! A provider's poll answers, sealed when the poll arrives and held until a fixed delay
//! after it ([`POLL_ANSWER_DELAY_US`]), so the time from a poll to its answer does not
//! depend on what the answer holds.
//!
//! Building an answer costs different work for a real item (a store read) and a dummy
//! (a random packet); sent as soon as built, the delay from poll to answer would tell an
//! observer on the wire whether a client has mail. Every item is built at once, and all
//! of them go out at `poll + delay`, whatever each cost. An answer that could not be built
//! in time (a provider far behind) goes out late and is counted.
//!
//! Frames live in one buffer made at start (no allocation per answer), bounded by
//! [`AnswerQueue::new`]'s capacity; a poll whose answer finds no room is refused whole.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// How long after a poll arrives its answer is sent, µs: far more than building N items
/// costs on any provider that keeps up (tens of µs each), far less than a poll interval.
pub const POLL_ANSWER_DELAY_US: u64 = 2_000;

struct Held {
    release_at_us: u64,
    to: SocketAddr,
    index: u32,
    len: usize,
}

/// See the module docs.
pub struct AnswerQueue {
    frame_len: usize,
    frames: Vec<u8>,
    free: Vec<u32>,
    held: VecDeque<Held>,
}

impl AnswerQueue {
    /// Room for `capacity` frames of `frame_len` bytes.
    pub fn new(capacity: usize, frame_len: usize) -> Self {
        Self {
            frame_len,
            frames: vec![0u8; capacity * frame_len],
            free: (0..capacity as u32).rev().collect(),
            held: VecDeque::with_capacity(capacity),
        }
    }

    /// Frames that can still be held.
    pub fn room(&self) -> usize {
        self.free.len()
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// A free frame buffer to seal into; hand it back with [`Self::hold`] or
    /// [`Self::give_back`]. `None` when full.
    pub fn take(&mut self) -> Option<(u32, &mut [u8])> {
        let index = self.free.pop()?;
        let at = index as usize * self.frame_len;
        Some((index, &mut self.frames[at..at + self.frame_len]))
    }

    /// Holds the frame sealed in `index` (`len` bytes, for `to`) until `release_at_us`.
    /// Releases are in the order held (each poll's time plus the same delay).
    pub fn hold(&mut self, index: u32, len: usize, to: SocketAddr, release_at_us: u64) {
        self.held.push_back(Held {
            release_at_us,
            to,
            index,
            len,
        });
    }

    /// Returns a taken frame unused.
    pub fn give_back(&mut self, index: u32) {
        self.free.push(index);
    }

    /// When the next frame is due.
    pub fn next_release_us(&self) -> Option<u64> {
        self.held.front().map(|h| h.release_at_us)
    }

    /// Copies the next frame due at `now_us` into `out`: its destination and length.
    pub fn release(&mut self, now_us: u64, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if self.held.front()?.release_at_us > now_us {
            return None;
        }
        let h = self.held.pop_front()?;
        let at = h.index as usize * self.frame_len;
        out[..h.len].copy_from_slice(&self.frames[at..at + h.len]);
        self.free.push(h.index);
        Some((h.to, h.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_out_at_their_time_in_order_and_room_is_bounded() {
        let mut q = AnswerQueue::new(3, 4);
        let to: SocketAddr = "10.0.0.1:1".parse().unwrap();
        for (i, at) in [(1u8, 100), (2, 100), (3, 150)] {
            let (index, buf) = q.take().unwrap();
            buf.fill(i);
            q.hold(index, 4, to, at);
        }
        assert!(q.take().is_none(), "full");
        let mut out = [0u8; 4];
        assert_eq!(q.release(99, &mut out), None, "not before its time");
        assert_eq!(q.next_release_us(), Some(100));
        assert_eq!(q.release(100, &mut out), Some((to, 4)));
        assert_eq!(out, [1; 4]);
        assert_eq!(q.release(120, &mut out), Some((to, 4)));
        assert_eq!(out, [2; 4]);
        assert_eq!(q.release(120, &mut out), None);
        assert_eq!(q.room(), 2);
        let (index, _) = q.take().unwrap();
        q.give_back(index);
        assert_eq!(q.release(200, &mut out), Some((to, 4)));
        assert_eq!(out, [3; 4]);
        assert!(q.is_empty());
        assert_eq!(q.room(), 3);
    }
}
