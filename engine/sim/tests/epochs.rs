//! Key epochs in virtual time: a network crosses several key changes under load without
//! losing an honest packet, and replays are refused before, across and after a change.

mod common;

use std::collections::BTreeMap;

use common::{S, client, drop_packet_at, mix, mixes, provider, sim};
use loopix_core::drops::DropReason;
use loopix_core::roles::client::ClientEvent;
use loopix_crypto::NodeId;
use loopix_sim::{LinkModel, NetworkSpec, Sim, seed_from_env};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// 3 layers x 2 mixes, 2 providers, 20 clients; epochs of 60 s with 2 s of grace, keys
/// published for 7 epochs. Hops hold packets 1 s on average, so a path takes longer than
/// the grace: only senders who build each hop for the epoch it falls in lose nothing.
fn spec() -> NetworkSpec {
    NetworkSpec {
        mixes_per_layer: 2,
        clients: 20,
        lambda_payload_per_s: 1.0,
        lambda_loop_per_s: 0.5,
        lambda_drop_per_s: 0.5,
        lambda_mix_loop_per_s: 1.0,
        poll_rate_per_s: 1.0,
        epoch_s: 60,
        mu_per_s: 1.0,
        epoch_grace_s: 2,
        published_epochs: 7,
        ..NetworkSpec::default()
    }
}

fn drops(sim: &Sim, id: NodeId, reason: DropReason) -> u64 {
    sim.mix(id).unwrap().stats().hop.drops.get(reason)
}

#[test]
fn five_epochs_under_load_lose_nothing_and_refuse_every_replay() {
    let seed = seed_from_env(21);
    let spec = spec();
    let link = LinkModel {
        latency_us: 2_000,
        jitter_mean_us: 1_000,
        ..LinkModel::default()
    };
    let mut sim = sim(&spec, seed, link);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut sent: BTreeMap<u64, NodeId> = BTreeMap::new();

    // The replay probe: one packet under epoch 1's key (60..120 s, in use 58..122 s), first
    // seen at 90 s, replayed in its epoch, in the grace after it, and after the grace.
    let topology = loopix_sim::generate(&spec, seed).unwrap().topology;
    let probe = drop_packet_at(&spec, &topology, 1, 7);
    let target = mix(&spec, 1, 0);
    let probe_times = [90, 100, 121, 130];

    // Three messages every 4 s for 300 s: five epochs, four boundaries.
    for second in 0..300u64 {
        sim.run_until(second * S);
        if probe_times.contains(&second) {
            sim.inject(provider(1), target, probe.clone());
        }
        if second % 4 == 2 {
            for _ in 0..3 {
                let from = client(rng.next_u64() % 20);
                let to = client(rng.next_u64() % 20);
                let id = sim
                    .with_client(from, |c| c.send(to, b"across the boundary"))
                    .unwrap()
                    .unwrap();
                sent.insert(id, to);
            }
        }
    }
    sim.run_until(330 * S);

    // Every message delivered once, to its recipient.
    let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
    for (at, e) in &sim.log.client_events {
        if let ClientEvent::Delivered { msg_id, .. } = e {
            assert_eq!(Some(at), sent.get(msg_id), "seed {seed}: misdelivered");
            *delivered.entry(*msg_id).or_default() += 1;
        }
    }
    assert_eq!(delivered.len(), sent.len(), "seed {seed}: lost messages");
    assert!(
        delivered.values().all(|&n| n == 1),
        "seed {seed}: duplicates"
    );

    // The keys moved on by themselves: epoch 5 is current at 330 s.
    let epochs = sim
        .mix(target)
        .unwrap()
        .epochs()
        .map(|e| e.map(|e| e.epoch));
    assert_eq!(epochs, [None, Some(5)]);

    // The probe: forwarded once (at 90 s); refused within its epoch (100 s), in the grace
    // of the next (121 s), and after its key was gone (130 s).
    assert_eq!(drops(&sim, target, DropReason::Replay), 2, "seed {seed}");
    assert_eq!(
        drops(&sim, target, DropReason::ExpiredKey),
        1,
        "seed {seed}"
    );

    // Nothing else was dropped anywhere, at any boundary; no client failed to build.
    for m in mixes(&spec) {
        let s = sim.mix(m).unwrap().stats();
        let probe_drops = if m == target { 3 } else { 0 };
        assert_eq!(
            s.hop.drops.total(),
            probe_drops,
            "seed {seed}: mix {m:?}: {s:?}"
        );
        assert_eq!(s.loops_failed, 0);
        assert!(
            s.loops_returned as f64 >= 0.95 * s.loops_sent as f64,
            "{s:?}"
        );
    }
    for p in 0..2 {
        let s = sim.provider(provider(p)).unwrap().stats();
        assert_eq!(
            s.hop.drops.total(),
            0,
            "seed {seed}: provider {p}: {:?}",
            s.hop.drops
        );
    }
    for c in 0..20 {
        assert_eq!(sim.client(client(c)).unwrap().stats().build_failed, 0);
    }
}
