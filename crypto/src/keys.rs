//! Long-term node keys, and the per-hop keys derived from one Sphinx shared secret.

use core::fmt;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::lioness::LionessKey;
use crate::primitives::{StreamKey, compress, decompress, labelled_hash};

/// A node's or client's private key: a Ristretto scalar. Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Scalar);

/// A public key: the canonical encoding and the point it decodes to, parsed once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

/// 1/2 modulo the group order ℓ: (ℓ + 1) / 2, little-endian.
const HALF_BYTES: [u8; 32] = [
    0xf7, 0xe9, 0x7a, 0x2e, 0x8d, 0x31, 0x09, 0x2c, 0x6b, 0xce, 0x7b, 0x51, 0xef, 0x7c, 0x6f, 0x0a,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08,
];

/// 1/2 modulo the group order (a constant: inverting a scalar per packet would cost more
/// than the batching saves).
pub(crate) fn half() -> Scalar {
    Scalar::from_bytes_mod_order(HALF_BYTES)
}

/// Bytes that are not a valid key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidKey;

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid key encoding")
    }
}

impl std::error::Error for InvalidKey {}

impl SecretKey {
    /// A fresh key from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(random_scalar(rng))
    }

    /// Parses a canonical 32-byte scalar; zero is refused.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, InvalidKey> {
        let scalar: Option<Scalar> = Scalar::from_canonical_bytes(bytes).into();
        match scalar {
            Some(s) if s != Scalar::ZERO => Ok(Self(s)),
            _ => Err(InvalidKey),
        }
    }

    /// The 32-byte encoding, for key files.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let point = RistrettoPoint::mul_base(&self.0);
        PublicKey {
            bytes: compress(&point),
            point,
        }
    }

    pub(crate) fn from_scalar(scalar: Scalar) -> Self {
        Self(scalar)
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.0
    }

    /// The key times 1/2: multiplying by it and then doubling (which batched compression
    /// does for free) gives the point the key itself would.
    pub(crate) fn halved(&self) -> SecretKey {
        SecretKey(self.0 * half())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl PublicKey {
    /// Parses a canonical, non-identity Ristretto encoding.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, InvalidKey> {
        let point = decompress(&bytes).ok_or(InvalidKey)?;
        Ok(Self { bytes, point })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    pub(crate) fn point(&self) -> &RistrettoPoint {
        &self.point
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.bytes[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A uniformly random non-zero scalar. The RNG is always the caller's.
pub(crate) fn random_scalar<R: CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    loop {
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(&mut wide[..]);
        let s = Scalar::from_bytes_mod_order_wide(&wide);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

/// Bytes of a replay tag. 16 bytes keep a replay set entry small while leaving
/// accidental collisions at about 2^-64 even after 2^32 packets.
pub const REPLAY_TAG_LEN: usize = 16;

/// Identifies a packet's shared secret at one node: a replay of the packet (whatever bytes
/// an attacker changes) yields the same tag there, a different packet a different one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReplayTag(pub [u8; REPLAY_TAG_LEN]);

impl fmt::Debug for ReplayTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayTag(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Domain labels of the key derivation; see SPEC.md.
mod label {
    pub const HEADER_STREAM: &[u8] = b"loopix-v1 rho";
    pub const HEADER_MAC: &[u8] = b"loopix-v1 mu";
    pub const BLINDING_LO: &[u8] = b"loopix-v1 blind 0";
    pub const BLINDING_HI: &[u8] = b"loopix-v1 blind 1";
    pub const REPLAY: &[u8] = b"loopix-v1 tau";
    pub const PAYLOAD: [&[u8]; 4] = [
        b"loopix-v1 pi 1",
        b"loopix-v1 pi 2",
        b"loopix-v1 pi 3",
        b"loopix-v1 pi 4",
    ];
}

/// Every key one hop needs, derived from the shared secret by domain-separated SHA-256.
/// Wiped when dropped.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct HopKeys {
    pub(crate) header_stream: StreamKey,
    pub(crate) header_mac: [u8; 32],
    pub(crate) payload: LionessKey,
    blinding: [[u8; 32]; 2],
    pub(crate) replay_tag: [u8; REPLAY_TAG_LEN],
}

impl HopKeys {
    /// Derives all keys from the compressed shared secret.
    pub fn derive(shared_secret: &[u8; 32]) -> Self {
        let hash = |label: &[u8]| labelled_hash(label, shared_secret);
        let tag = hash(label::REPLAY);
        let mut replay_tag = [0u8; REPLAY_TAG_LEN];
        replay_tag.copy_from_slice(&tag[..REPLAY_TAG_LEN]);
        Self {
            header_stream: hash(label::HEADER_STREAM),
            header_mac: hash(label::HEADER_MAC),
            payload: LionessKey::from_round_keys(label::PAYLOAD.map(hash)),
            blinding: [hash(label::BLINDING_LO), hash(label::BLINDING_HI)],
            replay_tag,
        }
    }

    /// [`Self::blinding`] times 1/2, for batched compression (see [`SecretKey::halved`]).
    pub(crate) fn half_blinding(&self) -> Scalar {
        self.blinding() * half()
    }

    /// The factor that re-blinds α for the next hop.
    pub(crate) fn blinding(&self) -> Scalar {
        let mut wide = Zeroizing::new([0u8; 64]);
        wide[..32].copy_from_slice(&self.blinding[0]);
        wide[32..].copy_from_slice(&self.blinding[1]);
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    /// The payload's LIONESS key at this hop.
    pub fn payload_key(&self) -> &LionessKey {
        &self.payload
    }

    pub(crate) fn tag(&self) -> ReplayTag {
        ReplayTag(self.replay_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_doubles_to_one() {
        assert_eq!(half() + half(), Scalar::ONE);
        assert_eq!(half(), Scalar::from(2u8).invert());
    }
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn secret_key_round_trips_and_rejects_zero() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let sk = SecretKey::generate(&mut rng);
        let again = SecretKey::from_bytes(*sk.to_bytes()).expect("canonical");
        assert_eq!(sk.public_key(), again.public_key());
        assert_eq!(SecretKey::from_bytes([0u8; 32]).err(), Some(InvalidKey));
        assert_eq!(SecretKey::from_bytes([0xff; 32]).err(), Some(InvalidKey));
    }

    #[test]
    fn public_key_round_trips_and_rejects_identity() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let pk = SecretKey::generate(&mut rng).public_key();
        assert_eq!(PublicKey::from_bytes(pk.to_bytes()), Ok(pk));
        assert_eq!(PublicKey::from_bytes([0u8; 32]), Err(InvalidKey));
    }

    #[test]
    fn every_purpose_gets_a_different_key() {
        let k = HopKeys::derive(&[9u8; 32]);
        let mut all = vec![k.header_stream, k.header_mac];
        all.extend(k.payload.0);
        all.extend(k.blinding);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_ne!(&k.replay_tag[..], &k.header_stream[..REPLAY_TAG_LEN]);
    }
}
