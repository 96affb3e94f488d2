//! Thin wrappers over the primitives one hop uses, each exactly as packet processing calls
//! it. `loopix speed` and the criterion benches time these same functions, so the crypto
//! floor they report is the sum of what [`crate::Processor::process`] really does.

use aes::Aes128;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::params::MAC_LEN;

/// AES-128 in counter mode (big-endian 128-bit counter).
pub type Aes128Ctr = Ctr128BE<Aes128>;

/// A 32-byte stream key: the AES-128 key, then the initial counter block.
pub type StreamKey = [u8; 32];

/// Starts the AES-128-CTR keystream for `key`.
pub fn stream_cipher(key: &StreamKey) -> Aes128Ctr {
    let (k, iv) = key.split_at(16);
    // Both halves are exactly 16 bytes, so this cannot fail.
    match Aes128Ctr::new_from_slices(k, iv) {
        Ok(cipher) => cipher,
        Err(_) => unreachable!("16-byte key and IV"),
    }
}

/// XORs the keystream of `key` onto `data`, from stream offset 0.
pub fn aes_ctr_xor(key: &StreamKey, data: &mut [u8]) {
    stream_cipher(key).apply_keystream(data);
}

/// HMAC-SHA256 of `data` under a 32-byte key.
pub fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The header MAC: HMAC-SHA256 truncated to [`MAC_LEN`] bytes.
pub fn header_mac(key: &[u8; 32], beta: &[u8]) -> [u8; MAC_LEN] {
    let full = hmac_sha256(key, beta);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// `dst ^= src` over the shorter of the two.
pub fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// SHA-256 of a domain label followed by a secret: one compression for labels up to
/// 23 bytes. Distinct labels give independent keys from one shared secret.
pub fn labelled_hash(label: &[u8], secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(secret);
    h.finalize().into()
}

/// Parses a group element; `None` for non-canonical encodings and for the identity, whose
/// shared secret would be known to everyone.
pub fn decompress(bytes: &[u8; 32]) -> Option<RistrettoPoint> {
    let point = CompressedRistretto(*bytes).decompress()?;
    (point != RistrettoPoint::default()).then_some(point)
}

/// Variable-base, constant-time scalar multiplication, at the stack position that
/// [`crate::stack_position::calibrate`] chose for this build.
pub fn mul(point: &RistrettoPoint, scalar: &Scalar) -> RistrettoPoint {
    crate::stack_position::mul(point, scalar)
}

/// Canonical 32-byte encoding of a point.
pub fn compress(point: &RistrettoPoint) -> [u8; 32] {
    point.compress().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_ctr_is_an_involution() {
        let key = [7u8; 32];
        let mut data = *b"the quick brown fox jumps over the lazy dog";
        aes_ctr_xor(&key, &mut data);
        assert_ne!(
            &data[..],
            &b"the quick brown fox jumps over the lazy dog"[..]
        );
        aes_ctr_xor(&key, &mut data);
        assert_eq!(
            &data[..],
            &b"the quick brown fox jumps over the lazy dog"[..]
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; pad it the way HMAC does (zeros to 64).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let out = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(&out),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn identity_and_garbage_are_not_group_elements() {
        assert!(decompress(&[0u8; 32]).is_none());
        assert!(decompress(&[0xff; 32]).is_none());
        let g = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
        assert_eq!(decompress(&compress(&g)), Some(g));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
