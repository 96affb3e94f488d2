//! What lets a provider refuse a handshake without a Diffie-Hellman: WireGuard's two MACs
//! and its cookie (WireGuard paper, section 5.4.4, and its protocol page), over our
//! initiation frame.
//!
//! - **mac1**, keyed by a hash of the provider's public session key, covers the frame up
//!   to it. Anyone who knows the provider's key (every client: the directory lists it) can
//!   make one, but random bytes never carry one: junk is refused after one BLAKE2s.
//! - **mac2**, keyed by a **cookie**, covers the frame up to it. Under load a provider
//!   answers an initiation without a valid mac2 with a cookie reply instead of a handshake:
//!   the cookie is a MAC of the initiation's source address under a secret the provider
//!   changes every two minutes, sealed (XChaCha20-Poly1305, keyed by another hash of its
//!   public key, bound to the initiation's mac1) so only the initiator can read it. An
//!   initiation carrying a valid mac2 proves its sender receives at its source address, so
//!   a provider under load can rate-limit handshakes per address without spoofed sources
//!   spending anyone's allowance.
//!
//! MACs are keyed BLAKE2s with 16-byte output, as in WireGuard; the hashes are BLAKE2s-256.

use blake2::digest::consts::U16;
use blake2::digest::{Digest, Mac};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::session_key::SessionPublic;

/// Bytes of a MAC, and of a cookie.
pub const MAC_LEN: usize = 16;
/// Bytes of a sealed cookie: its nonce, the cookie, the AEAD tag.
pub const SEALED_COOKIE_LEN: usize = 24 + MAC_LEN + 16;

const LABEL_MAC1: &[u8] = b"loopix mac1 v1--";
const LABEL_COOKIE: &[u8] = b"loopix cookie v1";

/// A MAC.
pub type HandshakeMac = [u8; MAC_LEN];
/// A cookie: what mac2 is keyed with.
pub type Cookie = [u8; MAC_LEN];

/// Keyed BLAKE2s-128 of `parts` in order.
fn mac(key: &[u8], parts: &[&[u8]]) -> HandshakeMac {
    // Keys are 16 or 32 bytes, within BLAKE2s's 32: the constructor cannot fail.
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("a key of at most 32 bytes"));
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

fn hash(label: &[u8], key: &SessionPublic) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(key.0);
    h.finalize().into()
}

/// The keys a provider's handshakes are checked under, from its public session key (so
/// the provider and every client compute the same).
#[derive(Clone)]
pub struct HandshakeKeys {
    mac1: [u8; 32],
    cookie: XChaCha20Poly1305,
}

impl HandshakeKeys {
    /// The keys of the provider whose public session key is `responder`.
    pub fn new(responder: &SessionPublic) -> Self {
        let cookie_key = Zeroizing::new(hash(LABEL_COOKIE, responder));
        Self {
            mac1: hash(LABEL_MAC1, responder),
            cookie: XChaCha20Poly1305::new((&*cookie_key).into()),
        }
    }

    /// mac1 of the frame bytes before it.
    pub fn mac1(&self, before: &[u8]) -> HandshakeMac {
        mac(&self.mac1, &[before])
    }

    /// Whether `tag` is the mac1 of `before`, compared in constant time.
    pub fn mac1_valid(&self, before: &[u8], tag: &HandshakeMac) -> bool {
        ct_eq(&self.mac1(before), tag)
    }

    /// Seals `cookie` for the initiator whose initiation carried `mac1`, under `nonce`.
    pub fn seal_cookie(
        &self,
        nonce: &[u8; 24],
        cookie: &Cookie,
        mac1: &HandshakeMac,
    ) -> [u8; SEALED_COOKIE_LEN] {
        let mut out = [0u8; SEALED_COOKIE_LEN];
        out[..24].copy_from_slice(nonce);
        let (body, tag) = out[24..].split_at_mut(MAC_LEN);
        body.copy_from_slice(cookie);
        // Sealing 16 bytes in place cannot exceed the cipher's length limit.
        let t = self
            .cookie
            .encrypt_in_place_detached(XNonce::from_slice(nonce), mac1, body)
            .unwrap_or_else(|_| unreachable!("16 bytes are within XChaCha20's limit"));
        tag.copy_from_slice(&t);
        out
    }

    /// Opens a sealed cookie answering the initiation that carried `mac1`.
    pub fn open_cookie(
        &self,
        sealed: &[u8; SEALED_COOKIE_LEN],
        mac1: &HandshakeMac,
    ) -> Option<Cookie> {
        let mut cookie: Cookie = sealed[24..24 + MAC_LEN].try_into().ok()?;
        let tag = Tag::from_slice(&sealed[24 + MAC_LEN..]);
        self.cookie
            .decrypt_in_place_detached(XNonce::from_slice(&sealed[..24]), mac1, &mut cookie, tag)
            .ok()?;
        Some(cookie)
    }
}

/// mac2 of the frame bytes before it, under `cookie`.
pub fn mac2(cookie: &Cookie, before: &[u8]) -> HandshakeMac {
    mac(cookie, &[before])
}

/// The cookie of the source address `source` (its bytes) under the provider's current
/// `secret`.
pub fn cookie(secret: &[u8; 32], source: &[u8]) -> Cookie {
    mac(secret, &[source])
}

/// Equality of two MACs in constant time.
pub fn ct_eq(a: &HandshakeMac, b: &HandshakeMac) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_key::SessionSecret;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn keys(seed: u64) -> HandshakeKeys {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        HandshakeKeys::new(&SessionSecret::generate(&mut rng).public())
    }

    #[test]
    fn mac1_is_bound_to_the_responders_key_and_every_byte() {
        let (a, b) = (keys(1), keys(2));
        let frame = [7u8; 124];
        let tag = a.mac1(&frame);
        assert!(a.mac1_valid(&frame, &tag));
        assert!(!b.mac1_valid(&frame, &tag), "another provider's key");
        for i in 0..frame.len() {
            let mut bent = frame;
            bent[i] ^= 1;
            assert!(!a.mac1_valid(&bent, &tag), "byte {i}");
        }
    }

    #[test]
    fn a_cookie_opens_only_for_the_initiation_it_answers_and_under_its_providers_key() {
        let (a, b) = (keys(1), keys(2));
        let cookie = cookie(&[9; 32], b"127.0.0.1:4000");
        let mac1 = a.mac1(b"an initiation");
        let sealed = a.seal_cookie(&[3; 24], &cookie, &mac1);
        assert_eq!(a.open_cookie(&sealed, &mac1), Some(cookie));
        assert_eq!(a.open_cookie(&sealed, &a.mac1(b"another")), None);
        assert_eq!(b.open_cookie(&sealed, &mac1), None);
        let mut bent = sealed;
        bent[30] ^= 1;
        assert_eq!(a.open_cookie(&bent, &mac1), None);
    }

    #[test]
    fn cookies_differ_by_source_and_secret() {
        let c = cookie(&[1; 32], b"10.0.0.1:1");
        assert_ne!(c, cookie(&[1; 32], b"10.0.0.2:1"));
        assert_ne!(c, cookie(&[2; 32], b"10.0.0.1:1"));
        assert_ne!(mac2(&c, b"frame"), mac2(&c, b"frame!"));
    }
}
