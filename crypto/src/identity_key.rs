//! Long-term identity keys: Ed25519 (via `ed25519-dalek`), one per node and one per
//! directory authority. A node signs the epoch keys it uploads to the authorities with
//! its identity key; an authority signs the network document with its own. Neither key
//! touches a packet: Sphinx keys change every epoch, an identity stays for the node's life.
//!
//! Every signature is over a label and the message (`label ‖ message`), so a signature
//! made for one purpose (a key upload) can never be shown as one for another (a document).
//! Verification is strict (`verify_strict`: no small-order keys, canonical encodings), so
//! one message has one valid signature per key and signatures cannot be malleated.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes in a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A secret identity key (its 32-byte seed). Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdentitySecret([u8; 32]);

/// A public identity key, as an authority's registry and a node's configuration list it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityPublic([u8; 32]);

/// A key that is not a valid Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidIdentityKey;

impl std::fmt::Display for InvalidIdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a valid Ed25519 public key")
    }
}

impl std::error::Error for InvalidIdentityKey {}

impl IdentitySecret {
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

    /// The stored bytes (for key files).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(SigningKey::from_bytes(&self.0).verifying_key().to_bytes())
    }

    /// Signs `message` under `label`.
    pub fn sign(&self, label: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let key = SigningKey::from_bytes(&self.0);
        key.sign(&labelled(label, message)).to_bytes()
    }
}

impl IdentityPublic {
    /// A public key from its 32 bytes, if it is a point of the curve.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, InvalidIdentityKey> {
        VerifyingKey::from_bytes(&bytes)
            .map(|_| Self(bytes))
            .map_err(|_| InvalidIdentityKey)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Whether `signature` is this key's over `message` under `label`.
    pub fn verify(&self, label: &[u8], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(&labelled(label, message), &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl std::fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySecret(..)")
    }
}

impl std::fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityPublic(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..)")
    }
}

/// `label ‖ 0 ‖ message`: the NUL ends the label, so no label is a prefix of another's
/// signed bytes.
fn labelled(label: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 1 + message.len());
    out.extend_from_slice(label);
    out.push(0);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn a_signature_verifies_only_for_its_key_label_and_message() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (a, b) = (
            IdentitySecret::generate(&mut rng),
            IdentitySecret::generate(&mut rng),
        );
        let sig = a.sign(b"upload", b"keys");
        assert!(a.public().verify(b"upload", b"keys", &sig));
        assert!(!b.public().verify(b"upload", b"keys", &sig), "another key");
        assert!(
            !a.public().verify(b"document", b"keys", &sig),
            "another label"
        );
        assert!(
            !a.public().verify(b"upload", b"keyz", &sig),
            "another message"
        );
        assert!(
            !a.public().verify(b"uploa", b"dkeys", &sig),
            "label boundary moved"
        );
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(
            !a.public().verify(b"upload", b"keys", &bent),
            "a flipped bit"
        );
    }

    #[test]
    fn keys_round_trip_and_garbage_is_refused() {
        let k = IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let p = IdentityPublic::from_bytes(k.public().to_bytes()).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(
            IdentitySecret::from_bytes(*k.as_bytes()).public(),
            k.public()
        );
        // Not on the curve: y = 2 has no x.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert_eq!(IdentityPublic::from_bytes(bad), Err(InvalidIdentityKey));
    }
}
