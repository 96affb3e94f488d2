//! `loopix sim params`: what a set of network parameters buys, before deploying them.
//!
//! Rates are per second. Every client packet (payload, loop, drop) crosses each mix layer
//! once and is held at the ingress provider, at one mix per layer and at the egress
//! provider: end-to-end latency is Gamma(layers + 2, µ) (the simulator's tests check this
//! shape). A mix's own loop is held once in every other layer and ends at its sender.

use loopix_core::formats::codec::Codec;
use serde::Serialize;

use super::mix_entropy::{self, EntropyConfig};
use crate::stats::{erlang_cdf, quantile};

#[derive(Clone, Copy, Debug)]
pub struct ParamsInput {
    pub clients: u32,
    pub layers: u8,
    pub mixes_per_layer: u32,
    pub mu: f64,
    pub lambda_payload: f64,
    pub lambda_loop: f64,
    pub lambda_drop: f64,
    pub lambda_mix: f64,
    pub packet_bytes: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ParamsReport {
    /// Packets per second into one mix that it holds (client traffic and other mixes'
    /// loops), spread evenly over a layer.
    pub mix_input_pps: f64,
    /// λ/µ: packets in one mix's pool on average (Lemma 1).
    pub expected_pool: f64,
    pub latency_mean_s: f64,
    pub latency_p99_s: f64,
    /// Packets each client sends per second, and the share of them that is cover when
    /// every payload slot carries a real message.
    pub client_pps: f64,
    pub client_cover_share: f64,
    pub client_bytes_per_s: f64,
    /// All packets the network carries per real payload packet (cover and mix loops).
    pub overhead_factor: f64,
    /// Entropy of one mix's output at `mix_input_pps`, with its own loops (from
    /// `mix-entropy`).
    pub mix_entropy_bits: f64,
    pub entropy_codec: &'static str,
}

/// Why the calculator refuses its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamsError(pub &'static str);

/// The figures for `p`; the entropy run goes over codec `C`.
pub fn calculate<C: Codec>(p: &ParamsInput) -> Result<ParamsReport, ParamsError> {
    if p.clients == 0 || p.layers == 0 || p.mixes_per_layer == 0 {
        return Err(ParamsError(
            "clients, layers and mixes per layer must be at least 1",
        ));
    }
    if p.mu.is_nan() || p.mu <= 0.0 {
        return Err(ParamsError("mu must be positive"));
    }
    let rates = [p.lambda_payload, p.lambda_loop, p.lambda_drop, p.lambda_mix];
    if rates.iter().any(|r| r.is_nan() || *r < 0.0) || p.lambda_payload == 0.0 {
        return Err(ParamsError("rates must be >= 0, and the payload rate > 0"));
    }
    let client_pps = p.lambda_payload + p.lambda_loop + p.lambda_drop;
    let (u, w, l) = (
        f64::from(p.clients),
        f64::from(p.mixes_per_layer),
        f64::from(p.layers),
    );
    let mix_input_pps = u * client_pps / w + (l - 1.0) * p.lambda_mix;
    let shape = u32::from(p.layers) + 2;
    let entropy = mix_entropy::run::<C>(&EntropyConfig {
        lambda: mix_input_pps,
        mu: p.mu,
        lambda_mix: p.lambda_mix,
        mix_loops: p.lambda_mix > 0.0,
        outputs: 20_000,
        burn_in_delays: 20.0,
        seed: p.seed,
    });
    Ok(ParamsReport {
        mix_input_pps,
        expected_pool: mix_input_pps / p.mu,
        latency_mean_s: f64::from(shape) / p.mu,
        latency_p99_s: quantile(erlang_cdf(shape, p.mu), 0.99),
        client_pps,
        client_cover_share: (p.lambda_loop + p.lambda_drop) / client_pps,
        client_bytes_per_s: client_pps * p.packet_bytes as f64,
        overhead_factor: (u * client_pps + l * w * p.lambda_mix) / (u * p.lambda_payload),
        mix_entropy_bits: entropy.entropy_bits,
        entropy_codec: entropy.codec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_core::formats::codec::Plaintext;

    fn input() -> ParamsInput {
        ParamsInput {
            clients: 100,
            layers: 3,
            mixes_per_layer: 2,
            mu: 2.0,
            lambda_payload: 1.0,
            lambda_loop: 0.5,
            lambda_drop: 0.5,
            lambda_mix: 1.0,
            packet_bytes: 2368,
            seed: 1,
        }
    }

    #[test]
    fn figures_follow_from_the_rates() {
        let r = calculate::<Plaintext>(&input()).unwrap();
        assert!((r.mix_input_pps - (100.0 * 2.0 / 2.0 + 2.0)).abs() < 1e-9);
        assert!((r.expected_pool - 51.0).abs() < 1e-9);
        assert!((r.latency_mean_s - 2.5).abs() < 1e-12);
        assert!((erlang_cdf(5, 2.0)(r.latency_p99_s) - 0.99).abs() < 1e-6);
        assert!((r.client_cover_share - 0.5).abs() < 1e-12);
        assert!((r.overhead_factor - 206.0 / 100.0).abs() < 1e-9);
        // A pool of ~51 spreads an output over more than 2^4 inputs.
        assert!(
            r.mix_entropy_bits > 4.0 && r.mix_entropy_bits < 10.0,
            "{r:?}"
        );
    }

    #[test]
    fn refuses_impossible_parameters() {
        assert!(calculate::<Plaintext>(&ParamsInput { mu: 0.0, ..input() }).is_err());
        assert!(
            calculate::<Plaintext>(&ParamsInput {
                clients: 0,
                ..input()
            })
            .is_err()
        );
        assert!(
            calculate::<Plaintext>(&ParamsInput {
                lambda_loop: -1.0,
                ..input()
            })
            .is_err()
        );
    }
}
