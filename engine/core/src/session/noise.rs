//! The Noise protocol as `snow` runs it for us, with randomness from the core's seeded RNG
//! rather than the operating system's (the driver seeds the core; the simulator replays a
//! run exactly), and a prologue that binds every handshake to this protocol's version.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The handshake pattern and suite.
pub const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Mixed into every handshake: peers of another protocol or version cannot complete one.
const PROLOGUE: &[u8] = b"loopix client session v1";

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's own primitives, and a random source seeded from the caller's RNG.
struct Resolver([u8; 32]);

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.0))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A handshake's builder, its ephemeral key drawn from `rng`.
pub fn builder<'a, R: Rng + ?Sized>(rng: &mut R) -> snow::Builder<'a> {
    let params: NoiseParams = PATTERN.parse().expect("a valid Noise pattern");
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    snow::Builder::with_resolver(params, Box::new(Resolver(seed)))
        .prologue(PROLOGUE)
        .expect("one prologue")
}
