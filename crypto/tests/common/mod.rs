//! Shared fixtures: a network of keys from a seed and paths through it.
#![allow(dead_code)]

use loopix_crypto::{Command, Hop, NodeId, Params, Processor, SecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// `hops` nodes with keys from `seed`, and a path through them that relays to node `i+1`
/// (with delay `i` µs) and ends with `last`.
pub fn network(seed: u64, hops: usize, last: Command) -> (Vec<Processor>, Vec<Hop>) {
    network_with(Params::default(), seed, hops, last)
}

/// [`network`] for packets of `params`.
pub fn network_with(
    params: Params,
    seed: u64,
    hops: usize,
    last: Command,
) -> (Vec<Processor>, Vec<Hop>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let secrets: Vec<SecretKey> = (0..hops).map(|_| SecretKey::generate(&mut rng)).collect();
    let path = secrets
        .iter()
        .enumerate()
        .map(|(i, sk)| {
            Hop::new(
                sk.public_key(),
                if i + 1 == hops {
                    last
                } else {
                    Command::Relay {
                        next: NodeId(i as u64 + 1),
                        delay_us: i as u32 * 1000,
                    }
                },
            )
        })
        .collect();
    let procs = secrets
        .into_iter()
        .map(|sk| Processor::new(sk, params))
        .collect();
    (procs, path)
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}
