//! `loopix sim mix-entropy`: the entropy an observer of all of one mix's inputs and
//! outputs faces for each output (paper §4.1.3, Fig. 4), and the mean pool size.
//!
//! Senders' packets arrive as a Poisson process at λ, each with its own Exp(µ) delay; the
//! mix (the node's code, in a [`MixHarness`]) may add its loop cover at λM. Every datagram
//! in or out updates a [`PoolAdversary`]; after a burn-in of `burn_in_delays` mean delays
//! the entropy of each real output is averaged (the adversary cannot tell real from loop,
//! and computes the same for both; we average over the messages whose anonymity is at
//! stake), and the pool size is averaged over time.

use loopix_core::formats::codec::Codec;
use loopix_core::roles::rate::exp_us;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use super::mix_harness::{HarnessConfig, MixHarness, Observed};
use super::pool_model::PoolAdversary;

/// One point of the sweep.
#[derive(Clone, Copy, Debug)]
pub struct EntropyConfig {
    pub lambda: f64,
    pub mu: f64,
    /// The mix's loop rate when `mix_loops`; ignored otherwise.
    pub lambda_mix: f64,
    pub mix_loops: bool,
    /// Outputs averaged after the burn-in.
    pub outputs: u64,
    /// Burn-in length in mean delays (1/µ).
    pub burn_in_delays: f64,
    pub seed: u64,
}

/// What one point measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EntropyResult {
    pub lambda: f64,
    pub mu: f64,
    pub mix_loops: bool,
    pub lambda_mix: f64,
    /// Time-average of the packets held, after burn-in (Lemma 1: λ/µ).
    pub mean_pool: f64,
    pub expected_pool: f64,
    /// Mean over outputs after burn-in of the entropy of the output's origin, bits.
    pub entropy_bits: f64,
    pub outputs: u64,
    pub codec: &'static str,
}

/// Runs one point over codec `C`.
pub fn run<C: Codec>(cfg: &EntropyConfig) -> EntropyResult {
    let lambda_mix = if cfg.mix_loops { cfg.lambda_mix } else { 0.0 };
    let expected_in = cfg.lambda * (cfg.burn_in_delays / cfg.mu) + cfg.outputs as f64 * 1.5;
    let mut mix = MixHarness::<C>::new(HarnessConfig {
        mu: cfg.mu,
        lambda_mix,
        max_packets: (expected_in * (1.0 + lambda_mix / cfg.lambda) * 2.0) as usize,
        seed: cfg.seed,
    });
    let mut adversary = PoolAdversary::new(cfg.lambda, lambda_mix, cfg.mu);
    let mut arrivals = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x6172_7276);
    let burn_in_us = (cfg.burn_in_delays / cfg.mu * 1e6) as u64;
    let mut next_arrival = exp_us(&mut arrivals, cfg.lambda).unwrap_or(u64::MAX);
    let (mut index, mut measured, mut entropy_sum, mut measuring) = (0u64, 0u64, 0.0, false);
    while measured < cfg.outputs {
        if !measuring && mix.now_us() >= burn_in_us {
            measuring = true;
            mix.reset_pool_average();
        }
        match mix.step_before(next_arrival.saturating_sub(1)) {
            Some(Observed::LoopReturned) => adversary.input(),
            Some(Observed::Real(_)) => {
                let h = adversary.output();
                if measuring {
                    entropy_sum += h;
                    measured += 1;
                }
            }
            Some(Observed::LoopSent) => {
                adversary.output();
            }
            None => {
                mix.inject(next_arrival, index);
                adversary.input();
                index += 1;
                next_arrival += exp_us(&mut arrivals, cfg.lambda).unwrap_or(u64::MAX / 2);
            }
        }
    }
    EntropyResult {
        lambda: cfg.lambda,
        mu: cfg.mu,
        mix_loops: cfg.mix_loops,
        lambda_mix,
        mean_pool: mix.mean_pool(),
        expected_pool: cfg.lambda / cfg.mu,
        entropy_bits: entropy_sum / measured.max(1) as f64,
        outputs: measured,
        codec: C::NAME,
    }
}
