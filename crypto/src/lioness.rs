//! LIONESS (Anderson and Biham, 1996): a wide-block cipher over the whole packet body,
//! built from AES-128-CTR and HMAC-SHA256.
//!
//! Sphinx needs a cipher where changing any bit of the ciphertext scrambles the entire
//! plaintext: that is what lets the recipient detect tagging with a fixed zero prefix.
//! The block is split into a 32-byte left half `L` and the rest `R`:
//!
//! ```text
//! encrypt:  R ^= S(L ^ K1);  L ^= H(K2, R);  R ^= S(L ^ K3);  L ^= H(K4, R)
//! decrypt:  L ^= H(K4, R);  R ^= S(L ^ K3);  L ^= H(K2, R);  R ^= S(L ^ K1)
//! ```
//!
//! `S(k)` is the AES-128-CTR keystream with key `k[..16]` and counter block `k[16..]`;
//! `H(k, m)` is HMAC-SHA256. Works in place; allocates nothing.

use ctr::cipher::StreamCipher;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::params::LIONESS_LEFT_LEN;
use crate::primitives::{hmac_sha256, stream_cipher, xor};

/// The four round keys K1..K4.
#[derive(Default, Clone, Zeroize, ZeroizeOnDrop)]
pub struct LionessKey(pub(crate) [[u8; 32]; 4]);

impl LionessKey {
    /// Wraps four 32-byte round keys.
    pub fn from_round_keys(keys: [[u8; 32]; 4]) -> Self {
        Self(keys)
    }
}

/// Encrypts `block` in place. Blocks no longer than the left half are left as they are
/// (the packet layout never produces one).
pub fn encrypt(key: &LionessKey, block: &mut [u8]) {
    let Some((left, right)) = split(block) else {
        return;
    };
    stream_round(&key.0[0], left, right);
    hash_round(&key.0[1], left, right);
    stream_round(&key.0[2], left, right);
    hash_round(&key.0[3], left, right);
}

/// Decrypts `block` in place; the inverse of [`encrypt`].
pub fn decrypt(key: &LionessKey, block: &mut [u8]) {
    let Some((left, right)) = split(block) else {
        return;
    };
    hash_round(&key.0[3], left, right);
    stream_round(&key.0[2], left, right);
    hash_round(&key.0[1], left, right);
    stream_round(&key.0[0], left, right);
}

fn split(block: &mut [u8]) -> Option<(&mut [u8; LIONESS_LEFT_LEN], &mut [u8])> {
    if block.len() <= LIONESS_LEFT_LEN {
        return None;
    }
    let (left, right) = block.split_at_mut(LIONESS_LEFT_LEN);
    Some((left.try_into().ok()?, right))
}

/// `R ^= S(L ^ k)`.
fn stream_round(k: &[u8; 32], left: &[u8; LIONESS_LEFT_LEN], right: &mut [u8]) {
    let mut round_key = *k;
    xor(&mut round_key, left);
    stream_cipher(&round_key).apply_keystream(right);
    round_key.zeroize();
}

/// `L ^= H(k, R)`.
fn hash_round(k: &[u8; 32], left: &mut [u8; LIONESS_LEFT_LEN], right: &[u8]) {
    xor(left, &hmac_sha256(k, right));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> LionessKey {
        LionessKey::from_round_keys([[seed; 32], [seed + 1; 32], [seed + 2; 32], [seed + 3; 32]])
    }

    #[test]
    fn decrypt_inverts_encrypt() {
        let plain: Vec<u8> = (0..2064u32).map(|i| (i * 7) as u8).collect();
        let mut block = plain.clone();
        encrypt(&key(1), &mut block);
        assert_ne!(block, plain);
        decrypt(&key(1), &mut block);
        assert_eq!(block, plain);
    }

    #[test]
    fn one_flipped_bit_scrambles_both_halves() {
        let mut block = vec![0u8; 2064];
        encrypt(&key(3), &mut block);
        block[1500] ^= 0x10;
        decrypt(&key(3), &mut block);
        assert_ne!(&block[..16], &[0u8; 16], "prefix must change");
        assert!(
            block[1000..1100].iter().any(|&b| b != 0),
            "far bytes must change"
        );
    }

    #[test]
    fn wrong_key_does_not_decrypt() {
        let mut block = vec![0u8; 100];
        encrypt(&key(5), &mut block);
        decrypt(&key(6), &mut block);
        assert_ne!(block, vec![0u8; 100]);
    }
}
