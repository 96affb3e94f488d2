//! Static X25519 keys for the Noise sessions between a client and its provider (the
//! `session_key` of a topology's clients and providers). They are not Sphinx keys: Noise
//! runs over X25519, and a session key never unwraps a packet. A client does not keep a
//! second secret: its session key is hashed from its Sphinx key under its own label, so
//! one key file serves both and neither key says anything about the other.

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::SecretKey;

/// Domain label of a client's session key derived from its Sphinx key.
const DERIVE_LABEL: &[u8] = b"loopix client session key v1";

/// A secret X25519 key (its 32 bytes; X25519 clamps them when used).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionSecret([u8; 32]);

/// A public X25519 key, as published in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionPublic(pub [u8; 32]);

impl SessionSecret {
    /// A fresh key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// The key stored as these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A client's session key: a one-way function of its Sphinx key.
    pub fn derive_from(sphinx: &SecretKey) -> Self {
        let mut h = Sha256::new();
        h.update(DERIVE_LABEL);
        h.update(&sphinx.to_bytes()[..]);
        Self(h.finalize().into())
    }

    /// The stored bytes (for key files and the Noise library).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key.
    pub fn public(&self) -> SessionPublic {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        SessionPublic(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl SessionPublic {
    /// Whether no shared secret can be agreed with this key: a point of small order (or the
    /// zero point), for which X25519 gives the all-zero output whatever the other secret,
    /// so an outsider knows the "shared" secret. Such keys are refused wherever a key is
    /// published (uploads, documents, registries), before any peer tries to agree with one.
    pub fn is_weak(&self) -> bool {
        // Any fixed scalar not a multiple of the group order: clamping makes it a multiple
        // of 8, which sends exactly the small-order points (and no others) to zero.
        const PROBE: [u8; 32] = [
            0x4b, 0x66, 0xe9, 0xd4, 0xd1, 0xb4, 0x67, 0x3c, 0x5a, 0xd2, 0x26, 0x91, 0x95, 0x7d,
            0x6a, 0xf5, 0xc1, 0x1b, 0x64, 0x21, 0xe0, 0xea, 0x01, 0xd4, 0x2c, 0xa4, 0x16, 0x9e,
            0x79, 0x18, 0xba, 0x4d,
        ];
        x25519_dalek::x25519(PROBE, self.0) == [0u8; 32]
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn a_clients_session_key_is_fixed_by_its_sphinx_key_and_differs_from_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let sphinx = SecretKey::generate(&mut rng);
        let a = SessionSecret::derive_from(&sphinx);
        let b = SessionSecret::derive_from(&sphinx);
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &*sphinx.to_bytes());
        let other = SessionSecret::derive_from(&SecretKey::generate(&mut rng));
        assert_ne!(a.public(), other.public());
    }

    #[test]
    fn small_order_keys_are_weak_and_real_keys_are_not() {
        // The small-order points of Curve25519 and their non-canonical encodings
        // (the list libsodium and WireGuard refuse), each found weak.
        let small_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for hex_key in small_order {
            let key = SessionPublic(hex::decode(hex_key).unwrap().try_into().unwrap());
            assert!(key.is_weak(), "{hex_key} is of small order");
        }
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for _ in 0..64 {
            assert!(!SessionSecret::generate(&mut rng).public().is_weak());
        }
        // u = 2 is of large order (on the curve or its twist alike, X25519 agrees a secret).
        let mut twist = [0u8; 32];
        twist[0] = 2;
        assert!(!SessionPublic(twist).is_weak());
    }

    #[test]
    fn the_public_key_is_x25519_of_the_secret() {
        // RFC 7748 section 6.1: Alice's key pair.
        let secret: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let public = SessionSecret::from_bytes(secret).public();
        assert_eq!(
            hex::encode(public.0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
