//! Whole-network behaviour in virtual time: delivery, cover traffic, polling.

mod common;

use std::collections::BTreeMap;

use common::{S, client, mixes, provider, sim};
use loopix_core::drops::DropReason;
use loopix_core::formats::wire::ITEM_HEADER_LEN;
use loopix_core::roles::client::ClientEvent;
use loopix_core::session::FrameLayout;
use loopix_crypto::NodeId;
use loopix_crypto::Params;
use loopix_sim::{LinkModel, NetworkSpec, seed_from_env};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// 3 layers x 3 mixes, 2 providers, 50 clients, 10 simulated minutes.
#[test]
fn ten_minutes_of_a_full_network() {
    let seed = seed_from_env(1);
    let spec = NetworkSpec {
        clients: 50,
        lambda_payload_per_s: 0.2,
        lambda_loop_per_s: 0.2,
        lambda_drop_per_s: 0.2,
        lambda_mix_loop_per_s: 0.2,
        poll_size: 4,
        poll_rate_per_s: 0.5,
        ..NetworkSpec::default()
    };
    let link = LinkModel {
        latency_us: 2_000,
        jitter_mean_us: 500,
        ..LinkModel::default()
    };
    let mut sim = sim(&spec, seed, link);
    sim.record_wire(true);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut sent: BTreeMap<u64, (NodeId, Vec<u8>)> = BTreeMap::new();
    for round in 0..3u64 {
        sim.run_until((10 + round * 190) * S);
        for c in 0..u64::from(spec.clients) {
            let to = client((c + 1 + rng.next_u64() % 49) % 50);
            let mut message = vec![0u8; 1 + (rng.next_u64() % 1500) as usize];
            rng.fill_bytes(&mut message);
            let id = sim
                .with_client(client(c), |cl| cl.send(to, &message))
                .unwrap()
                .unwrap();
            sent.insert(id, (to, message));
        }
    }
    sim.run_until(600 * S);

    // Every real message delivered exactly once, to its recipient, intact.
    let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
    for (at, e) in &sim.log.client_events {
        if let ClientEvent::Delivered {
            msg_id, message, ..
        } = e
        {
            let (to, original) = sent.get(msg_id).expect("only sent messages are delivered");
            assert_eq!(
                at, to,
                "seed {seed}: message {msg_id} reached the wrong client"
            );
            assert_eq!(message, original, "seed {seed}: message {msg_id} altered");
            *delivered.entry(*msg_id).or_default() += 1;
        }
    }
    assert_eq!(delivered.len(), sent.len(), "seed {seed}: lost messages");
    assert!(
        delivered.values().all(|&n| n == 1),
        "seed {seed}: duplicates"
    );

    // Loops come back; drop cover is absorbed; nothing honest is dropped.
    let (mut loops_sent, mut loops_back, mut drops_sent) = (0, 0, 0);
    for c in 0..50 {
        let s = sim.client(client(c)).unwrap().stats();
        loops_sent += s.sent_loop;
        loops_back += s.loops_returned;
        drops_sent += s.sent_drop;
        assert_eq!(s.tampered_received, 0);
    }
    assert!(
        loops_back as f64 >= 0.97 * loops_sent as f64,
        "{loops_back}/{loops_sent}"
    );
    for m in mixes(&spec) {
        let s = sim.mix(m).unwrap().stats();
        assert!(s.loops_sent > 60, "mix {m:?} sent {} loops", s.loops_sent);
        assert!(
            s.loops_returned as f64 >= 0.95 * s.loops_sent as f64,
            "mix {m:?}: {s:?}"
        );
        assert_eq!(
            s.hop.drops.total(),
            0,
            "mix {m:?} dropped honest packets: {s:?}"
        );
    }
    let mut absorbed = 0;
    let mut answered = 0;
    let mut handshakes = 0;
    let mut held = 0;
    for p in 0..2 {
        held += sim.provider(provider(p)).unwrap().answers_held() as u64;
        let s = sim.provider(provider(p)).unwrap().stats();
        absorbed += s.drop_cover_absorbed;
        answered += s.polls_answered;
        handshakes += s.sessions_started;
        assert_eq!(s.hop.drops.total(), 0, "provider {p}: {:?}", s.hop.drops);
    }
    assert!(absorbed <= drops_sent && absorbed as f64 >= 0.98 * drops_sent as f64);

    // Every poll answer is exactly N items, and every datagram between a client and its
    // provider, either way, one frame of one size: handshakes, packets, polls, answers.
    let frame_len =
        FrameLayout::new(&Params::new(spec.payload_bytes).unwrap(), spec.poll_size).frame_len();
    assert!(frame_len > ITEM_HEADER_LEN + spec_packet_len(&spec));
    let is_client = |a: loopix_crypto::NodeId| a.0 >= 10_000;
    let items: Vec<_> = sim
        .log
        .wire
        .iter()
        .filter(|w| w.from.0 >= 1_000 && w.from.0 < 10_000 && is_client(w.to))
        .collect();
    assert!(items.iter().all(|w| w.len == frame_len));
    let uplink = sim.log.wire.iter().filter(|w| is_client(w.from));
    assert!(uplink.clone().count() > 10_000);
    assert!(uplink.clone().all(|w| w.len == frame_len));
    // (Answers to the last polls may still be held for their release time.)
    assert_eq!(
        items.len() as u64 + held,
        answered * u64::from(spec.poll_size) + handshakes
    );
    assert_eq!(
        handshakes,
        u64::from(spec.clients) * 5,
        "one session, rekeyed 4 times in 10 min"
    );
    assert!(answered > 10_000, "{answered} polls");
    assert_eq!(sim.log.undeliverable, 0);
    let _ = DropReason::ALL;
}

fn spec_packet_len(spec: &NetworkSpec) -> usize {
    loopix_crypto::Params::new(spec.payload_bytes)
        .unwrap()
        .packet_len()
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let spec = NetworkSpec {
        layers: 2,
        mixes_per_layer: 2,
        clients: 4,
        ..NetworkSpec::default()
    };
    let run = |seed| {
        let mut s = common::sim(
            &spec,
            seed,
            LinkModel {
                latency_us: 1_000,
                ..LinkModel::default()
            },
        );
        s.record_wire(true);
        s.with_client(client(0), |c| c.send(client(1), b"same"))
            .unwrap()
            .unwrap();
        s.run_until(20 * S);
        (s.log.wire.clone(), s.log.client_events.clone())
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert!(a.0.len() > 100);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

/// Cover is built ahead in batches: most of each batch goes out on later ticks, loops
/// built ahead still come back and drops are still absorbed, and with a key grace so short
/// that stashed packets outlive it, they are discarded (counted) rather than sent late
/// enough to meet a hop without their key: nothing is dropped anywhere.
#[test]
fn cover_built_ahead_in_batches_is_used_and_never_sent_stale() {
    let seed = seed_from_env(9);
    let run = |epoch_grace_s: u64, rate: f64| {
        let spec = NetworkSpec {
            clients: 10,
            lambda_payload_per_s: rate,
            lambda_loop_per_s: rate,
            lambda_drop_per_s: rate,
            poll_rate_per_s: 5.0,
            epoch_s: 60,
            epoch_grace_s,
            published_epochs: 10,
            ..NetworkSpec::default()
        };
        let mut sim = sim(&spec, seed, LinkModel::default());
        sim.run_until(150 * S);
        let (mut cover, mut batches, mut discarded, mut loops, mut back) = (0, 0, 0, 0, 0);
        for c in 0..u64::from(spec.clients) {
            let s = sim.client(client(c)).unwrap().stats();
            assert_eq!(s.build_failed, 0, "seed {seed}");
            cover += s.sent_loop + s.sent_drop;
            batches += s.cover_batches;
            discarded += s.cover_discarded;
            loops += s.sent_loop;
            back += s.loops_returned;
        }
        for m in mixes(&spec) {
            let s = sim.mix(m).unwrap().stats();
            assert_eq!(s.hop.drops.total(), 0, "seed {seed}: mix {m:?}: {s:?}");
        }
        for p in 0..u64::from(spec.providers) {
            let s = sim.provider(provider(p)).unwrap().stats();
            assert_eq!(s.hop.drops.total(), 0, "seed {seed}: provider {p}");
        }
        assert!(back as f64 >= 0.95 * loops as f64, "{back}/{loops}");
        (cover, batches, discarded)
    };
    // A 20 s grace: stashed packets may wait 5 s, and at 2 a second each batch is used.
    let (cover, batches, discarded) = run(20, 2.0);
    assert!(
        batches > 0 && cover >= 7 * batches,
        "{cover} sent from {batches} batches"
    );
    assert!(
        discarded <= batches,
        "{discarded} discarded of {batches} batches"
    );
    // A 2 s grace: packets may wait 0.5 s; at 0.5 a second most of each batch is too old.
    let (cover, batches, discarded) = run(2, 0.5);
    assert!(
        discarded > 2 * cover,
        "{discarded} discarded, {cover} sent ({batches} batches)"
    );
}

/// Every client of a network needs every other's key: indexes built from the same clients
/// share one table (else N clients hold N² entries), and an index of a topology whose
/// client changed its key builds a new table and paths to the new key.
#[test]
fn path_indexes_of_one_topology_share_the_client_table_and_never_a_stale_one() {
    use loopix_core::network::path_index::PathIndex;
    let spec = NetworkSpec {
        clients: 3,
        ..NetworkSpec::default()
    };
    let net = loopix_sim::generate(&spec, 1).unwrap();
    let a = PathIndex::new(&net.topology);
    let b = PathIndex::new(&net.topology);
    assert!(a.shares_clients_with(&b));
    let other = loopix_sim::generate(&spec, 2).unwrap();
    let mut changed = net.topology.clone();
    changed.clients[0].public_key = other.topology.clients[0].public_key;
    let c = PathIndex::new(&changed);
    assert!(
        !c.shares_clients_with(&a),
        "a changed key is never served from the old table"
    );
    let id = changed.clients[0].id;
    let hop = |index: &PathIndex| {
        let (owner, _) = index.client(id).unwrap();
        index
            .hop_at(owner, 0, loopix_crypto::Command::Final)
            .unwrap()
            .key
    };
    assert!(hop(&c) == changed.clients[0].public_key);
    assert!(hop(&a) == net.topology.clients[0].public_key);
    assert!(hop(&a) != hop(&c));
}
