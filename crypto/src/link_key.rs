//! Keys that authenticate datagrams on a link between two nodes.
//!
//! Both ends compute the same X25519 shared secret from their static session keys (the
//! topology lists every node's public half), and from it one key per direction and epoch:
//! `HKDF-SHA256(salt = "loopix link v1", ikm = shared, info = epoch | from | to)`. A link
//! key authenticates, it does not encrypt (the Sphinx layer already hides everything): the
//! tag is HMAC-SHA256, truncated to 16 bytes, over the whole datagram before it. HMAC is
//! deterministic, so a repeated counter (a sender that restarted, say) never exposes a key
//! the way a repeated nonce would with a one-time-key MAC; the counter is only for the
//! receiver's replay window.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::command::Address;
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
    pub fn key(&self, epoch: u64, from: Address, to: Address) -> LinkKey {
        let mut info = [0u8; 24];
        info[..8].copy_from_slice(&epoch.to_le_bytes());
        info[8..16].copy_from_slice(&from.0.to_le_bytes());
        info[16..].copy_from_slice(&to.0.to_le_bytes());
        let mut okm = Zeroizing::new([0u8; 32]);
        let expanded = Hkdf::<Sha256>::new(Some(SALT), &self.0[..]).expand(&info, &mut okm[..]);
        debug_assert!(expanded.is_ok(), "32 bytes is a valid HKDF-SHA256 length");
        let mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&okm[..]) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        LinkKey(mac)
    }
}

/// One direction's key for one epoch, with its HMAC key schedule done once.
#[derive(Clone)]
pub struct LinkKey(Hmac<Sha256>);

impl LinkKey {
    /// The tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; LINK_TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; LINK_TAG_LEN];
        out.copy_from_slice(&full[..LINK_TAG_LEN]);
        out
    }

    /// Whether `tag` is `data`'s (in constant time).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        tag.len() == LINK_TAG_LEN && bool::from(self.tag(data).ct_eq(tag))
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
        let (ida, idb) = (Address(1), Address(2));
        let at_a = LinkSecret::agree(&a, &b.public()).unwrap();
        let at_b = LinkSecret::agree(&b, &a.public()).unwrap();
        let data = b"a packet and its counter";
        let tag = at_a.key(7, ida, idb).tag(data);
        assert!(at_b.key(7, ida, idb).verify(data, &tag));
        assert!(!at_b.key(8, ida, idb).verify(data, &tag), "another epoch");
        assert!(
            !at_b.key(7, idb, ida).verify(data, &tag),
            "the other direction"
        );
        assert!(!at_b.key(7, ida, idb).verify(b"another packet", &tag));
        let at_c = LinkSecret::agree(&c, &a.public()).unwrap();
        assert!(!at_c.key(7, ida, idb).verify(data, &tag), "a third node");
        assert!(!at_b.key(7, ida, idb).verify(data, &tag[..15]));
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
