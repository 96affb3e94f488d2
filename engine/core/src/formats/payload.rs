//! What clients and mixes put inside a Sphinx payload, and message reassembly.
//!
//! ```text
//! fragment:        1 | msg_id u64 | index u16 | count u16 | len u16 | data[len] | zeros
//! loop:            2 | nonce u64 | zeros
//! acked fragment:  3 | msg_id u64 | index u16 | count u16 | len u16 | surb[SURB_LEN] | data[len] | zeros
//! ack:             4 | msg_id u64 | index u16 | zeros
//! reply:           5 | len u16 | data[len] | zeros
//! ```
//! An acked fragment carries a reply block its recipient sends an ack back with (the
//! ack's body names the fragment it acknowledges).
//! Little-endian. A message longer than one payload is split into `count` fragments that
//! travel independently and are put back together by `msg_id` at the recipient.

use std::collections::{BTreeMap, VecDeque};

const FRAGMENT: u8 = 1;
const LOOP: u8 = 2;
const ACKED_FRAGMENT: u8 = 3;
const ACK: u8 = 4;
const REPLY: u8 = 5;
/// Bytes of a reply's header.
pub const REPLY_HEADER_LEN: usize = 3;

use loopix_crypto::SURB_LEN;
/// Bytes of a fragment's header.
pub const FRAGMENT_HEADER_LEN: usize = 15;

/// A decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content<'a> {
    Fragment {
        msg_id: u64,
        index: u16,
        count: u16,
        /// The reply block to acknowledge it with, if the sender asked for an ack.
        surb: Option<&'a [u8]>,
        data: &'a [u8],
    },
    Loop {
        nonce: u64,
    },
    /// Fragment `index` of message `msg_id` arrived.
    Ack {
        msg_id: u64,
        index: u16,
    },
    /// An application's answer, sent along a reply block its message carried.
    Reply {
        data: &'a [u8],
    },
}

/// Data bytes one fragment carries at this payload size, with a reply block or without.
pub fn fragment_capacity(payload_bytes: usize, acked: bool) -> usize {
    let surb = if acked { SURB_LEN } else { 0 };
    payload_bytes.saturating_sub(FRAGMENT_HEADER_LEN + surb)
}

/// Writes a fragment into `out` (the whole payload, zero-padded), with the reply block to
/// acknowledge it with if `surb` is given.
pub fn write_fragment(
    out: &mut [u8],
    msg_id: u64,
    index: u16,
    count: u16,
    surb: Option<&[u8; SURB_LEN]>,
    data: &[u8],
) {
    out.fill(0);
    out[0] = if surb.is_some() {
        ACKED_FRAGMENT
    } else {
        FRAGMENT
    };
    out[1..9].copy_from_slice(&msg_id.to_le_bytes());
    out[9..11].copy_from_slice(&index.to_le_bytes());
    out[11..13].copy_from_slice(&count.to_le_bytes());
    out[13..15].copy_from_slice(&(data.len() as u16).to_le_bytes());
    let mut at = FRAGMENT_HEADER_LEN;
    if let Some(surb) = surb {
        out[at..at + SURB_LEN].copy_from_slice(surb);
        at += SURB_LEN;
    }
    out[at..at + data.len()].copy_from_slice(data);
}

/// Writes an application's reply into `out`; `data` must fit (`out.len()` minus
/// [`REPLY_HEADER_LEN`]).
pub fn write_reply(out: &mut [u8], data: &[u8]) {
    out.fill(0);
    out[0] = REPLY;
    out[1..3].copy_from_slice(&(data.len() as u16).to_le_bytes());
    out[REPLY_HEADER_LEN..REPLY_HEADER_LEN + data.len()].copy_from_slice(data);
}

/// Writes an ack of fragment `index` of message `msg_id` into `out`.
pub fn write_ack(out: &mut [u8], msg_id: u64, index: u16) {
    out.fill(0);
    out[0] = ACK;
    out[1..9].copy_from_slice(&msg_id.to_le_bytes());
    out[9..11].copy_from_slice(&index.to_le_bytes());
}

/// Writes a loop marker into `out`.
pub fn write_loop(out: &mut [u8], nonce: u64) {
    out.fill(0);
    out[0] = LOOP;
    out[1..9].copy_from_slice(&nonce.to_le_bytes());
}

/// Decodes a payload; `None` for anything malformed.
pub fn read(payload: &[u8]) -> Option<Content<'_>> {
    let u16_at = |i: usize| Some(u16::from_le_bytes(payload.get(i..i + 2)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(payload.get(i..i + 8)?.try_into().ok()?));
    match *payload.first()? {
        kind @ (FRAGMENT | ACKED_FRAGMENT) => {
            let (index, count, len) = (u16_at(9)?, u16_at(11)?, usize::from(u16_at(13)?));
            if index >= count {
                return None;
            }
            let mut at = FRAGMENT_HEADER_LEN;
            let surb = if kind == ACKED_FRAGMENT {
                at += SURB_LEN;
                Some(payload.get(FRAGMENT_HEADER_LEN..at)?)
            } else {
                None
            };
            let data = payload.get(at..at + len)?;
            Some(Content::Fragment {
                msg_id: u64_at(1)?,
                index,
                count,
                surb,
                data,
            })
        }
        LOOP => Some(Content::Loop { nonce: u64_at(1)? }),
        ACK => Some(Content::Ack {
            msg_id: u64_at(1)?,
            index: u16_at(9)?,
        }),
        REPLY => {
            let len = usize::from(u16_at(1)?);
            Some(Content::Reply {
                data: payload.get(REPLY_HEADER_LEN..REPLY_HEADER_LEN + len)?,
            })
        }
        _ => None,
    }
}

/// Puts fragments back together, delivering each message once.
///
/// Bounded: at most `max_partial` messages in progress (the oldest is abandoned when a
/// new one would exceed it), at most `max_bytes` held for them (a fragment's bytes and a
/// place per announced fragment; the oldest other messages are abandoned to make room, and a
/// message that cannot fit alone is refused and counted), and the ids of the last
/// `max_done` delivered messages are remembered to drop duplicates. Anyone who has a
/// client's public key can send it fragments, so without the byte bound one packet
/// announcing 65,535 fragments would reserve 1.5 MB, and a thousand of them 1.5 GB.
pub struct Reassembly {
    partial: BTreeMap<u64, Partial>,
    order: VecDeque<u64>,
    done: VecDeque<u64>,
    max_partial: usize,
    max_done: usize,
    max_bytes: usize,
    bytes: usize,
    refused: u64,
}

/// What one announced fragment's place costs before its bytes arrive.
const PART_BYTES: usize = std::mem::size_of::<Option<Vec<u8>>>();

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
}

impl Reassembly {
    /// Empty, with the given bounds.
    pub fn new(max_partial: usize, max_done: usize, max_bytes: usize) -> Self {
        Self {
            partial: BTreeMap::new(),
            order: VecDeque::new(),
            done: VecDeque::new(),
            max_partial,
            max_done,
            max_bytes,
            bytes: 0,
            refused: 0,
        }
    }

    /// Fragments refused because their message could not fit in `max_bytes`.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Bytes held for messages in progress.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a fragment; returns the message when it is complete and new.
    pub fn add(&mut self, msg_id: u64, index: u16, count: u16, data: &[u8]) -> Option<Vec<u8>> {
        if self.done.contains(&msg_id) {
            return None;
        }
        let new = !self.partial.contains_key(&msg_id);
        let fresh_part = new
            || self.partial[&msg_id]
                .parts
                .get(usize::from(index))
                .is_some_and(Option::is_none);
        if !fresh_part {
            return None;
        }
        let needed = data.len()
            + if new {
                usize::from(count) * PART_BYTES
            } else {
                0
            };
        if !self.make_room(msg_id, needed) {
            self.refused += 1;
            return None;
        }
        if new {
            self.start(msg_id, count);
        }
        let p = self.partial.get_mut(&msg_id)?;
        let part = p.parts.get_mut(usize::from(index))?;
        *part = Some(data.to_vec());
        p.have += 1;
        self.bytes += data.len();
        if p.have < p.parts.len() {
            return None;
        }
        let p = self.remove(msg_id)?;
        self.remember_done(msg_id);
        Some(p.parts.into_iter().flatten().flatten().collect())
    }

    /// Abandons the oldest other messages until `needed` more bytes fit; false if even
    /// with every other message gone they would not.
    fn make_room(&mut self, keep: u64, needed: usize) -> bool {
        while self.bytes + needed > self.max_bytes {
            let Some(&oldest) = self.order.iter().find(|&&id| id != keep) else {
                return false;
            };
            self.remove(oldest);
        }
        true
    }

    /// Forgets a message in progress, giving its bytes back.
    fn remove(&mut self, msg_id: u64) -> Option<Partial> {
        let p = self.partial.remove(&msg_id)?;
        self.order.retain(|&id| id != msg_id);
        self.bytes -=
            p.parts.len() * PART_BYTES + p.parts.iter().flatten().map(Vec::len).sum::<usize>();
        Some(p)
    }

    fn start(&mut self, msg_id: u64, count: u16) {
        if self.order.len() >= self.max_partial
            && let Some(&old) = self.order.front()
        {
            self.remove(old);
        }
        self.bytes += usize::from(count) * PART_BYTES;
        self.order.push_back(msg_id);
        self.partial.insert(
            msg_id,
            Partial {
                parts: vec![None; usize::from(count)],
                have: 0,
            },
        );
    }

    fn remember_done(&mut self, msg_id: u64) {
        if self.done.len() >= self.max_done {
            self.done.pop_front();
        }
        self.done.push_back(msg_id);
    }

    /// The messages delivered that it remembers (to refuse their copies), oldest first.
    pub fn delivered(&self) -> impl Iterator<Item = u64> + '_ {
        self.done.iter().copied()
    }

    /// Remembers messages delivered before (by an earlier run, from the driver's record):
    /// their copies are refused as they would have been in that run.
    pub fn remember_delivered(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if !self.done.contains(&id) {
                self.remember_done(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_remembered_from_an_earlier_run_is_not_delivered_again() {
        let mut first = Reassembly::new(8, 4, 1 << 20);
        assert_eq!(first.add(7, 0, 1, b"hello"), Some(b"hello".to_vec()));
        let record: Vec<u64> = first.delivered().collect();
        assert_eq!(record, [7]);
        // The next run, told what the first delivered: a resent copy is refused.
        let mut next = Reassembly::new(8, 4, 1 << 20);
        next.remember_delivered(record);
        assert_eq!(next.add(7, 0, 1, b"hello"), None);
        assert_eq!(next.add(8, 0, 1, b"new"), Some(b"new".to_vec()));
        // Bounded like its own record: the oldest go first.
        next.remember_delivered([1, 2, 3, 4]);
        assert_eq!(next.delivered().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn fragments_and_loops_round_trip() {
        let mut buf = [0xaau8; 64];
        write_fragment(&mut buf, 7, 1, 3, None, b"abc");
        assert_eq!(
            read(&buf),
            Some(Content::Fragment {
                msg_id: 7,
                index: 1,
                count: 3,
                surb: None,
                data: b"abc"
            })
        );
        write_loop(&mut buf, 99);
        assert_eq!(read(&buf), Some(Content::Loop { nonce: 99 }));
        write_ack(&mut buf, 7, 2);
        assert_eq!(
            read(&buf),
            Some(Content::Ack {
                msg_id: 7,
                index: 2
            })
        );
        let mut big = vec![0u8; 512];
        let surb = [5u8; SURB_LEN];
        write_fragment(&mut big, 8, 0, 1, Some(&surb), b"xyz");
        assert_eq!(
            read(&big),
            Some(Content::Fragment {
                msg_id: 8,
                index: 0,
                count: 1,
                surb: Some(&surb[..]),
                data: b"xyz"
            })
        );
        assert_eq!(fragment_capacity(512, true), 512 - 15 - SURB_LEN);
        assert_eq!(fragment_capacity(64, true), 0, "no room for a reply block");
        assert_eq!(read(&[9u8; 64]), None);
        assert_eq!(read(&[]), None);
    }

    #[test]
    fn out_of_range_fragments_are_malformed() {
        let mut buf = [0u8; 32];
        write_fragment(&mut buf, 1, 0, 1, None, b"x");
        buf[13] = 200; // len beyond the payload
        assert_eq!(read(&buf), None);
        write_fragment(&mut buf, 1, 2, 2, None, b"x");
        assert_eq!(read(&buf), None);
    }

    #[test]
    fn reassembles_in_any_order_once() {
        let mut r = Reassembly::new(4, 4, 1 << 20);
        assert_eq!(r.add(5, 2, 3, b"ef"), None);
        assert_eq!(r.add(5, 0, 3, b"ab"), None);
        assert_eq!(r.add(5, 0, 3, b"ab"), None, "duplicate fragment");
        assert_eq!(r.add(5, 1, 3, b"cd"), Some(b"abcdef".to_vec()));
        assert_eq!(r.add(5, 1, 3, b"cd"), None, "message already delivered");
    }

    #[test]
    fn a_message_announcing_more_than_fits_is_refused_and_memory_stays_bounded() {
        let mut r = Reassembly::new(1024, 16, 100_000);
        // 65,535 announced fragments would take 1.5 MB of places alone.
        assert_eq!(r.add(1, 0, u16::MAX, b"x"), None);
        assert_eq!((r.refused(), r.bytes()), (1, 0));
        // Many small partial messages: the oldest go to make room, the bound holds.
        for id in 10..2_000 {
            r.add(id, 0, 100, &[0u8; 500]);
            assert!(r.bytes() <= 100_000, "{}", r.bytes());
        }
        // And a message that fits still completes.
        assert_eq!(r.add(5_000, 1, 2, b"cd"), None);
        assert_eq!(r.add(5_000, 0, 2, b"ab"), Some(b"abcd".to_vec()));
        assert!(r.bytes() <= 100_000);
    }

    #[test]
    fn partial_messages_are_bounded() {
        let mut r = Reassembly::new(2, 2, 1 << 20);
        r.add(1, 0, 2, b"a");
        r.add(2, 0, 2, b"b");
        r.add(3, 0, 2, b"c"); // abandons message 1
        assert_eq!(r.add(1, 1, 2, b"z"), None);
        assert_eq!(r.add(3, 1, 2, b"d"), Some(b"cd".to_vec()));
    }
}
