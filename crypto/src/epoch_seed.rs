//! A node's key for every epoch, from one seed that only moves forward.
//!
//! `seed(e + 1) = SHA-256("loopix-v1 ratchet" ‖ seed(e))`, and epoch `e`'s secret key is the
//! 64 bytes `SHA-256("loopix-v1 epoch 0" ‖ seed(e)) ‖ SHA-256("loopix-v1 epoch 1" ‖ seed(e))`
//! reduced modulo the group order. Whoever holds `seed(e)` can derive the keys of `e` and of
//! every later epoch, so an operator publishes public keys as far ahead as they like from
//! one file; nobody can go back, so once a node has moved its seed past an epoch (and its
//! key file with it) that epoch's secret is gone: forward secrecy for the packets it
//! unwrapped, even if the node is seized later. Chosen over a directory of one key file per
//! epoch because the node can delete a past key by itself (one rewrite of one file), and
//! there is nothing to generate or copy again when the published keys run out.

use core::fmt;

use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::SecretKey;
use crate::primitives::labelled_hash;

const RATCHET: &[u8] = b"loopix-v1 ratchet";
const KEY_LO: &[u8] = b"loopix-v1 epoch 0";
const KEY_HI: &[u8] = b"loopix-v1 epoch 1";

/// The seed of one epoch. Wiped from memory when dropped or moved forward.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochSeed {
    #[zeroize(skip)]
    epoch: u64,
    seed: [u8; 32],
}

impl EpochSeed {
    /// A fresh seed for `epoch` from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, epoch: u64) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self { epoch, seed }
    }

    /// The seed of `epoch` as stored in a key file.
    pub fn from_bytes(epoch: u64, seed: [u8; 32]) -> Self {
        Self { epoch, seed }
    }

    /// The epoch this seed belongs to: the earliest whose key it can give.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seed bytes, for the key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.seed)
    }

    /// The secret key of `epoch`, or `None` for an epoch before this seed's (forgotten).
    /// Costs one hash per epoch between the two.
    pub fn secret_key(&self, epoch: u64) -> Option<SecretKey> {
        let mut at = self.clone();
        at.advance_to(epoch).then(|| at.own_key())
    }

    /// Moves the seed forward to `epoch`, wiping the seeds it passes. Returns false (and
    /// does nothing) if `epoch` is before this seed's: a ratchet never goes back.
    pub fn advance_to(&mut self, epoch: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        while self.epoch < epoch {
            let mut next = labelled_hash(RATCHET, &self.seed);
            self.seed.copy_from_slice(&next);
            next.zeroize();
            self.epoch += 1;
        }
        true
    }

    fn own_key(&self) -> SecretKey {
        let mut wide = Zeroizing::new([0u8; 64]);
        wide[..32].copy_from_slice(&labelled_hash(KEY_LO, &self.seed));
        wide[32..].copy_from_slice(&labelled_hash(KEY_HI, &self.seed));
        let scalar = Scalar::from_bytes_mod_order_wide(&wide);
        // Zero has probability 2^-252; were it to come up, the key would be 1 instead.
        SecretKey::from_scalar(if scalar == Scalar::ZERO {
            Scalar::ONE
        } else {
            scalar
        })
    }
}

impl fmt::Debug for EpochSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpochSeed(epoch {}, ..)", self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn keys_differ_per_epoch_and_survive_moving_forward() {
        let seed = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(1), 10);
        let k10 = seed.secret_key(10).unwrap().public_key();
        let k11 = seed.secret_key(11).unwrap().public_key();
        let k15 = seed.secret_key(15).unwrap().public_key();
        assert_ne!(k10, k11);
        let mut moved = seed.clone();
        assert!(moved.advance_to(11));
        assert_eq!(moved.epoch(), 11);
        assert_eq!(moved.secret_key(11).unwrap().public_key(), k11);
        assert_eq!(moved.secret_key(15).unwrap().public_key(), k15);
        assert!(moved.secret_key(10).is_none(), "a past epoch's key is gone");
        assert!(!moved.advance_to(10));
        assert_eq!(moved.epoch(), 11);
    }

    #[test]
    fn a_stored_seed_gives_the_same_keys() {
        let seed = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(2), 3);
        let again = EpochSeed::from_bytes(3, *seed.to_bytes());
        assert_eq!(
            seed.secret_key(4).unwrap().public_key(),
            again.secret_key(4).unwrap().public_key()
        );
    }
}
