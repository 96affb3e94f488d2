//! The Poisson properties the paper's analysis rests on, checked in virtual time.

mod common;

use std::collections::BTreeMap;

use common::{S, client, mix, sim};
use loopix_core::roles::client::ClientEvent;
use loopix_core::roles::provider::ProviderEvent;
use loopix_sim::stats::{erlang_cdf, exp_cdf, ks_critical_0_001, ks_statistic};
use loopix_sim::{LinkModel, NetworkSpec, seed_from_env};

fn frame_len(spec: &NetworkSpec) -> usize {
    let params = loopix_crypto::Params::new(spec.payload_bytes).unwrap();
    loopix_core::session::FrameLayout::new(&params, spec.poll_size).frame_len()
}

/// What the wire shows of a client: one stream of equal session frames (packets and polls
/// alike), so its inter-send times are Exp(λP+λL+λD+poll rate), for a client with nothing
/// to say and one with a full buffer alike, and every frame has the same length.
#[test]
fn client_sends_are_poisson_whether_idle_or_busy() {
    let seed = seed_from_env(2);
    let spec = NetworkSpec {
        layers: 2,
        mixes_per_layer: 1,
        providers: 1,
        clients: 2,
        lambda_payload_per_s: 1.5,
        lambda_loop_per_s: 1.0,
        lambda_drop_per_s: 0.5,
        lambda_mix_loop_per_s: 0.0,
        poll_size: 8,
        poll_rate_per_s: 1.0,
        ..NetworkSpec::default()
    };
    let mut sim = sim(&spec, seed, LinkModel::default());
    sim.record_wire(true);
    let (idle, busy) = (client(0), client(1));
    let big = vec![7u8; 2_000 * 497];
    sim.with_client(busy, |c| c.send(idle, &big))
        .unwrap()
        .unwrap();
    sim.run_until(700 * S);
    let rate = spec.lambda_payload_per_s
        + spec.lambda_loop_per_s
        + spec.lambda_drop_per_s
        + spec.poll_rate_per_s;
    for who in [idle, busy] {
        let sent: Vec<_> = sim.log.wire.iter().filter(|w| w.from == who).collect();
        assert!(sent.iter().all(|w| w.len == frame_len(&spec)));
        // From the first frame after the handshake on.
        let times: Vec<u64> = sent.iter().skip(1).map(|w| w.at_us).collect();
        let mut gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64 / 1e6)
            .collect();
        let d = ks_statistic(&mut gaps, exp_cdf(rate));
        let crit = ks_critical_0_001(gaps.len());
        assert!(gaps.len() > 1_500, "{} sends", gaps.len());
        assert!(
            d < crit,
            "seed {seed}: client {who:?}: KS D = {d:.4} >= {crit:.4}"
        );
    }
    let s = sim.client(busy).unwrap().stats();
    assert!(
        s.sent_real > 900,
        "busy client sent {} real fragments",
        s.sent_real
    );
    assert_eq!(sim.client(idle).unwrap().stats().sent_real, 0);
}

/// Lemma 1: the mean number of messages in a Poisson mix is λ/µ.
#[test]
fn mix_pool_size_converges_to_lambda_over_mu() {
    let seed = seed_from_env(3);
    let spec = NetworkSpec {
        layers: 1,
        mixes_per_layer: 1,
        providers: 1,
        clients: 10,
        mu_per_s: 2.0,
        lambda_payload_per_s: 0.0,
        lambda_loop_per_s: 2.5,
        lambda_drop_per_s: 2.5,
        lambda_mix_loop_per_s: 0.0,
        poll_size: 8,
        poll_rate_per_s: 0.5,
        ..NetworkSpec::default()
    };
    let mut sim = sim(&spec, seed, LinkModel::default());
    let m = mix(&spec, 1, 0);
    sim.run_until(20 * S);
    let held = |sim: &loopix_sim::Sim| {
        let s = sim.mix(m).unwrap().stats();
        s.hop.received - s.hop.drops.total()
    };
    let held_before = held(&sim);
    let (mut sum, mut samples) = (0u64, 0u64);
    let window_us = 250 * S;
    let mut t = sim.now_us();
    let end = t + window_us;
    while t < end {
        t += 10_000;
        sim.run_until(t);
        sum += sim.mix(m).unwrap().pool_size() as u64;
        samples += 1;
    }
    let lambda = (held(&sim) - held_before) as f64 / (window_us as f64 / 1e6);
    let expected = lambda / spec.mu_per_s;
    let mean = sum as f64 / samples as f64;
    assert!(lambda > 40.0, "arrival rate {lambda}/s");
    let err = (mean - expected).abs() / expected;
    assert!(
        err < 0.05,
        "seed {seed}: mean pool {mean:.2}, λ/µ = {expected:.2} ({:.1} %)",
        err * 100.0
    );
}

/// With zero link latency, a message's time from its sender to its recipient's inbox is
/// the sum of one Exp(µ) delay per delaying hop: Gamma(layers + 2, µ).
#[test]
fn end_to_end_delay_is_gamma_hops_mu() {
    let seed = seed_from_env(4);
    let spec = NetworkSpec {
        layers: 3,
        mixes_per_layer: 2,
        providers: 2,
        clients: 4,
        mu_per_s: 10.0,
        lambda_payload_per_s: 2.0,
        lambda_loop_per_s: 0.1,
        lambda_drop_per_s: 0.1,
        lambda_mix_loop_per_s: 0.1,
        poll_size: 8,
        poll_rate_per_s: 2.0,
        ..NetworkSpec::default()
    };
    let mut sim = sim(&spec, seed, LinkModel::default());
    for c in 0..4 {
        for k in 0..700u32 {
            let to = client((c + 1 + u64::from(k) % 3) % 4);
            sim.with_client(client(c), |cl| cl.send(to, &k.to_le_bytes()))
                .unwrap()
                .unwrap();
        }
    }
    let horizon = 300 * S;
    sim.run_until(horizon + 30 * S);
    let mut sent_at = BTreeMap::new();
    let mut stored_at = BTreeMap::new();
    for (_, e) in &sim.log.provider_events {
        let ProviderEvent::Stored { id, at_us, .. } = e;
        stored_at.insert(*id, *at_us);
    }
    let mut delays = Vec::new();
    for (_, e) in &sim.log.client_events {
        match e {
            ClientEvent::FragmentSent { msg_id, at_us, .. } if *at_us < horizon => {
                sent_at.insert(*msg_id, *at_us);
            }
            ClientEvent::FragmentReceived {
                msg_id, item_id, ..
            } => {
                if let (Some(s), Some(r)) = (sent_at.get(msg_id), stored_at.get(item_id)) {
                    delays.push((r - s) as f64 / 1e6);
                }
            }
            _ => {}
        }
    }
    let kinds = sim.log.client_events.iter().fold([0; 4], |mut k, (_, e)| {
        k[match e {
            ClientEvent::FragmentSent { .. } | ClientEvent::PacketSent { .. } => 0,
            ClientEvent::FragmentReceived { .. } => 1,
            ClientEvent::Delivered { .. } => 2,
            _ => 3,
        }] += 1;
        k
    });
    assert!(
        delays.len() > 1_500,
        "{} delays; events {kinds:?}, stored {}",
        delays.len(),
        stored_at.len()
    );
    let hops = u32::from(spec.layers) + 2;
    let d = ks_statistic(&mut delays, erlang_cdf(hops, spec.mu_per_s));
    let crit = ks_critical_0_001(delays.len());
    assert!(
        d < crit,
        "seed {seed}: KS D = {d:.4} >= {crit:.4} against Gamma({hops}, µ)"
    );
    // And not just any distribution passes: one hop fewer is rejected.
    let d_wrong = ks_statistic(&mut delays, erlang_cdf(hops - 1, spec.mu_per_s));
    assert!(
        d_wrong > crit,
        "the test cannot tell Gamma({}) from Gamma({hops})",
        hops - 1
    );
}

/// Delay fidelity and loop overhead as a node reports them: every release at its requested
/// time (not rounded up to a wheel slot), and a mix loop's round trip minus its requested
/// delays equal to the links it crossed (one per hop, fixed latency).
#[test]
fn delays_are_kept_exactly_and_loop_overhead_is_the_links() {
    let seed = seed_from_env(5);
    let spec = NetworkSpec {
        lambda_mix_loop_per_s: 5.0,
        ..NetworkSpec::default()
    };
    let latency_us = 1_000;
    let link = LinkModel {
        latency_us,
        ..LinkModel::default()
    };
    let mut sim = sim(&spec, seed, link);
    sim.run_until(60 * S);
    // A mix loop crosses `layers + 1` links and is held by `layers` hops (the other
    // layers' mixes and a provider).
    let links = u64::from(spec.layers) + 1;
    let (lo, hi) = (links * latency_us, links * latency_us + 10);
    for l in 1..=spec.layers {
        let s = sim.mix(mix(&spec, l, 0)).unwrap().stats();
        let d = s.hop.delay_error;
        assert!(d.count() > 100, "seed {seed}");
        // Released at the exact due time (virtual time has no wake-up latency), not at
        // the slot boundary after it.
        assert!(
            d.quantile_bound_us(1.0).unwrap() <= 10,
            "seed {seed}: {d:?}"
        );
        let o = s.loop_overhead;
        assert!(o.count() > 100, "seed {seed}: {} loops back", o.count());
        let mean = o.mean_us().unwrap();
        assert!(
            (lo as f64..=hi as f64).contains(&mean),
            "seed {seed}: {mean} not in {lo}..{hi}"
        );
        assert!(
            o.quantile_bound_us(1.0).unwrap() <= 5_000,
            "seed {seed}: {o:?}"
        );
    }
}
