//! The session frame: every datagram between a client and its provider.
//!
//! ```text
//! transport:  receiver index u32 (BE) | nonce u64 (LE) | AEAD(plaintext) (P + 16 bytes)
//! initiation: 0u32                    | initiator index u32 | 0u32 | Noise IK message 1 | mac1 | mac2 | padding
//! response:   initiator index u32     | u64::MAX             | responder index u32 | message 2 | padding
//! cookie:     initiator index u32     | u64::MAX - 1         | sealed cookie | padding
//! plaintext:  kind u8 | body, zero-padded to P bytes
//! ```
//! mac1 and mac2 (16 bytes each) cover the initiation before them; a provider under load
//! answers an initiation without a valid mac2 with a cookie frame (see
//! `loopix_crypto::handshake_mac`). mac2 is zero when the client holds no cookie.
//! The receiver's index comes first so a multi-shard provider can steer a session's frames
//! to the shard that holds it (the steering program reads the first four bytes). Padding is
//! random, so a handshake frame looks like any other. P fits the largest body either way:
//! a packet, a poll's ack ids, or an answer item (its id, the count still waiting, and a
//! packet).

use loopix_crypto::Params;

use crate::formats::wire::ITEM_HEADER_LEN;

/// Bytes before a frame's body.
pub const HEADER_LEN: usize = 12;
/// The AEAD tag.
pub const TAG_LEN: usize = 16;
/// The nonce field of a handshake response (never a transport nonce).
pub const RESPONSE_NONCE: u64 = u64::MAX;
/// Noise IK's first message with an 8-byte payload: e, s (sealed), payload (sealed).
pub const INITIATION_LEN: usize = 32 + (32 + TAG_LEN) + (8 + TAG_LEN);
/// Noise IK's second message with no payload: e, an empty sealed payload.
pub const RESPONSE_LEN: usize = 32 + TAG_LEN;
/// The nonce field of a cookie reply (never a transport nonce).
pub const COOKIE_NONCE: u64 = u64::MAX - 1;
/// Where an initiation's mac1 starts (it covers the bytes before).
pub const MAC1_AT: usize = HEADER_LEN + INITIATION_LEN;
/// Where an initiation's mac2 starts (it covers the bytes before, mac1 included).
pub const MAC2_AT: usize = MAC1_AT + loopix_crypto::handshake_mac::MAC_LEN;
/// Where an initiation's padding starts.
pub const MACS_END: usize = MAC2_AT + loopix_crypto::handshake_mac::MAC_LEN;

/// What a session's plaintext carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to provider: a Sphinx packet.
    Packet = 1,
    /// Client to provider: a poll, with the ids it acknowledges.
    Poll = 2,
    /// Provider to client: one item of a poll's answer (its id, the count still
    /// waiting, then a packet).
    Item = 3,
    /// Client to provider: a send tick the client had nothing it could build for (no key
    /// for an epoch on the path): the tick still goes out, so the wire shows no gap.
    Idle = 4,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Packet),
            2 => Some(Self::Poll),
            3 => Some(Self::Item),
            4 => Some(Self::Idle),
            _ => None,
        }
    }
}

/// A decrypted plaintext: its kind and its body (padding included).
#[derive(Debug)]
pub struct Plain<'a> {
    pub kind: FrameKind,
    pub body: &'a [u8],
}

impl<'a> Plain<'a> {
    /// Reads a plaintext; `None` for an unknown kind.
    pub fn parse(plain: &'a [u8]) -> Option<Self> {
        let (&kind, body) = plain.split_first()?;
        Some(Self {
            kind: FrameKind::from_byte(kind)?,
            body,
        })
    }
}

/// The frame and plaintext lengths of one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    plaintext_len: usize,
}

impl FrameLayout {
    /// For packets of `params` and polls of `poll_size` ids.
    pub fn new(params: &Params, poll_size: u16) -> Self {
        let body = (ITEM_HEADER_LEN + params.packet_len()).max(8 * usize::from(poll_size));
        Self {
            plaintext_len: 1 + body,
        }
    }

    /// Bytes of every plaintext (kind and padded body).
    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }

    /// Bytes of every frame, either way.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.plaintext_len + TAG_LEN
    }
}

/// The receiver index a frame is addressed to (0: a handshake initiation).
pub fn receiver_index(frame: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(*frame.first_chunk::<4>()?))
}

/// The shard of a provider running `shards` that frames to receiver `index` reach: a
/// provider picks its sessions' indices by it, so that a session's frames reach the shard
/// that holds it.
pub fn receiver_shard(index: u32, shards: usize) -> usize {
    crate::pipeline::steering::owner_shard(&index.to_be_bytes(), shards)
}

/// A frame's nonce field.
pub fn nonce(frame: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(frame.get(4..12)?.try_into().ok()?))
}

pub(crate) fn write_header(frame: &mut [u8], receiver: u32, nonce: u64) {
    frame[..4].copy_from_slice(&receiver.to_be_bytes());
    frame[4..12].copy_from_slice(&nonce.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_fits_and_handshakes_fit_a_frame() {
        let params = Params::new(1024).unwrap();
        for n in [1u16, 8, 256] {
            let l = FrameLayout::new(&params, n);
            assert!(l.plaintext_len() > ITEM_HEADER_LEN + params.packet_len());
            assert!(l.plaintext_len() > 8 * usize::from(n));
            assert!(HEADER_LEN + 4 + INITIATION_LEN <= l.frame_len());
            assert!(MACS_END <= l.frame_len());
            assert!(HEADER_LEN + loopix_crypto::handshake_mac::SEALED_COOKIE_LEN <= l.frame_len());
            assert!(HEADER_LEN + 4 + RESPONSE_LEN <= l.frame_len());
            assert_ne!(
                l.frame_len(),
                params.packet_len(),
                "frames and packets differ in length"
            );
        }
    }

    #[test]
    fn a_frame_is_a_packet_and_41_bytes_at_default_sizes() {
        let params = Params::default();
        let l = FrameLayout::new(&params, 4);
        // Header 12, kind 1, item id 8, waiting 4, tag 16.
        assert_eq!(l.frame_len(), params.packet_len() + 41);
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(Plain::parse(&[9, 0, 0]).is_none());
        assert!(Plain::parse(&[]).is_none());
        assert_eq!(Plain::parse(&[2, 7]).unwrap().kind, FrameKind::Poll);
    }
}
