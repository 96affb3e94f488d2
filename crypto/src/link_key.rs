//! Keys that authenticate datagrams on a link between two nodes.
//!
//! Both ends compute the same X25519 shared secret from their static session keys (the
//! topology lists every node's public half), and from it one key per direction and epoch:
//! `HKDF-SHA256(salt = "loopix link v1", ikm = shared, info = epoch | from | to)`. A link
//! key authenticates, it does not encrypt (the Sphinx layer already hides everything): the
//! tag is ChaCha20-Poly1305's over an empty message with the whole datagram before it as
//! associated data, under a nonce of the sender's counter and flags. Poly1305 over a
//! packet costs a fraction of HMAC-SHA256 (`loopix speed` shows both).
//!
//! Nonces: a sender's counter never repeats (it runs with its clock, see the core's link
//! module). Were it ever to (a restart after the clock went back), two tags under one
//! nonce would give away that nonce's one-time Poly1305 key, so a datagram under that one
//! nonce could be forged; nothing is encrypted, so nothing else leaks, and the receiver's
//! window has already taken that nonce unless it restarted too.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::command::NodeId;
use crate::session_key::{SessionPublic, SessionSecret};

/// Bytes of a link tag.
pub const LINK_TAG_LEN: usize = 16;
const SALT: &[u8] = b"loopix link v1";

/// The X25519 secret two nodes share, from which their link keys derive.
pub struct LinkSecret(Zeroizing<[u8; 32]>);

/// Why two keys share no usable secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeakPeerKey;

impl LinkSecret {
    /// The secret of `mine` and `theirs`; refused for a peer key of small order (whose
    /// shared secret an outsider could guess).
    pub fn agree(mine: &SessionSecret, theirs: &SessionPublic) -> Result<Self, WeakPeerKey> {
        let secret = x25519_dalek::StaticSecret::from(*mine.as_bytes());
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(theirs.0));
        if !shared.was_contributory() {
            return Err(WeakPeerKey);
        }
        Ok(Self(Zeroizing::new(shared.to_bytes())))
    }

    /// The key that authenticates `from`'s datagrams to `to` in `epoch`.
    pub fn key(&self, epoch: u64, from: NodeId, to: NodeId) -> LinkKey {
        let mut info = [0u8; 24];
        info[..8].copy_from_slice(&epoch.to_le_bytes());
        info[8..16].copy_from_slice(&from.0.to_le_bytes());
        info[16..].copy_from_slice(&to.0.to_le_bytes());
        let mut okm = Zeroizing::new([0u8; 32]);
        let expanded = Hkdf::<Sha256>::new(Some(SALT), &self.0[..]).expand(&info, &mut okm[..]);
        debug_assert!(expanded.is_ok(), "32 bytes is a valid HKDF-SHA256 length");
        LinkKey(ChaCha20Poly1305::new((&*okm).into()))
    }
}

/// One direction's key for one epoch.
#[derive(Clone)]
pub struct LinkKey(ChaCha20Poly1305);

/// The 12-byte nonce of a counter and the flags byte beside it.
fn nonce(counter: u64, flags: u8) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n[8] = flags;
    n.into()
}

impl LinkKey {
    /// The tag of `data` under nonce (`counter`, `flags`).
    pub fn tag(&self, counter: u64, flags: u8, data: &[u8]) -> [u8; LINK_TAG_LEN] {
        match self
            .0
            .encrypt_in_place_detached(&nonce(counter, flags), data, &mut [])
        {
            Ok(tag) => tag.into(),
            Err(_) => unreachable!("an empty message and short associated data always seal"),
        }
    }

    /// Whether `tag` is `data`'s under that nonce (in constant time).
    pub fn verify(&self, counter: u64, flags: u8, data: &[u8], tag: &[u8]) -> bool {
        let Ok(tag) = <[u8; LINK_TAG_LEN]>::try_from(tag) else {
            return false;
        };
        self.0
            .decrypt_in_place_detached(&nonce(counter, flags), data, &mut [], &Tag::from(tag))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn both_ends_agree_per_direction_and_epoch_and_nobody_else_does() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (a, b, c) = (
            SessionSecret::generate(&mut rng),
            SessionSecret::generate(&mut rng),
            SessionSecret::generate(&mut rng),
        );
        let (ida, idb) = (NodeId(1), NodeId(2));
        let at_a = LinkSecret::agree(&a, &b.public()).unwrap();
        let at_b = LinkSecret::agree(&b, &a.public()).unwrap();
        let data = b"a packet and its counter";
        let tag = at_a.key(7, ida, idb).tag(9, 1, data);
        let key = at_b.key(7, ida, idb);
        assert!(key.verify(9, 1, data, &tag));
        assert!(
            !at_b.key(8, ida, idb).verify(9, 1, data, &tag),
            "another epoch"
        );
        assert!(
            !at_b.key(7, idb, ida).verify(9, 1, data, &tag),
            "the other direction"
        );
        assert!(!key.verify(9, 1, b"another packet", &tag));
        assert!(!key.verify(10, 1, data, &tag), "another counter");
        assert!(!key.verify(9, 2, data, &tag), "other flags");
        let at_c = LinkSecret::agree(&c, &a.public()).unwrap();
        assert!(
            !at_c.key(7, ida, idb).verify(9, 1, data, &tag),
            "a third node"
        );
        assert!(!key.verify(9, 1, data, &tag[..15]));
    }

    #[test]
    fn a_small_order_peer_key_is_refused() {
        let mine = SessionSecret::generate(&mut ChaCha20Rng::seed_from_u64(2));
        assert_eq!(
            LinkSecret::agree(&mine, &SessionPublic([0; 32])).err(),
            Some(WeakPeerKey)
        );
    }
}
