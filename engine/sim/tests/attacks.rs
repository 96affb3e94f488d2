//! Active attacks in virtual time: replays, tagging, strangers, blocking.

mod common;

use common::{S, client, drop_packet_at, hop_at, mix, mixes, provider, relay, sim};
use loopix_core::drops::DropReason;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::Topology;
use loopix_core::roles::inbox::InboxLimits;
use loopix_crypto::params::{ALPHA_LEN, HEADER_LEN};
use loopix_crypto::{Command, Hop, NodeId, Params, build};
use loopix_sim::{LinkModel, NetworkSpec, Sim, SimOptions, generate, seed_from_env};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// No cover traffic and no polling: every datagram in the network is the test's.
fn quiet() -> NetworkSpec {
    NetworkSpec {
        layers: 3,
        mixes_per_layer: 1,
        providers: 2,
        clients: 2,
        lambda_payload_per_s: 0.0,
        lambda_loop_per_s: 0.0,
        lambda_drop_per_s: 0.0,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s: 0.0,
        ..NetworkSpec::default()
    }
}

fn topology(spec: &NetworkSpec, seed: u64) -> Topology {
    generate(spec, seed).unwrap().topology
}

/// A hop under `id`'s key of epoch 0 (the simulations here start at time 0).
fn hop(t: &Topology, id: NodeId, command: Command) -> Hop {
    hop_at(t, id, 0, command)
}

/// Mix 1 -> mix 2 -> mix 3 -> provider 0 (drop).
fn drop_packet(spec: &NetworkSpec, t: &Topology, seed: u64) -> Vec<u8> {
    drop_packet_at(spec, t, 0, seed)
}

fn mix_drops(sim: &Sim, id: NodeId, reason: DropReason) -> u64 {
    sim.mix(id).unwrap().stats().hop.drops.get(reason)
}

#[test]
fn a_replayed_packet_is_forwarded_once_and_counted() {
    let seed = seed_from_env(10);
    let spec = quiet();
    let t = topology(&spec, seed);
    let mut sim = sim(
        &spec,
        seed,
        LinkModel {
            latency_us: 500,
            ..LinkModel::default()
        },
    );
    let p = drop_packet(&spec, &t, seed);
    let first = mix(&spec, 1, 0);
    sim.inject(provider(0), first, p.clone());
    sim.inject(provider(1), first, p);
    sim.run_until(5 * S);
    let m = sim.mix(first).unwrap().stats();
    assert_eq!((m.hop.received, m.sent), (2, 1), "seed {seed}: {m:?}");
    assert_eq!(mix_drops(&sim, first, DropReason::Replay), 1);
    assert_eq!(sim.mix(mix(&spec, 2, 0)).unwrap().stats().hop.received, 1);
    assert_eq!(
        sim.provider(provider(0))
            .unwrap()
            .stats()
            .drop_cover_absorbed,
        1
    );
}

#[test]
fn a_tagged_header_is_dropped_at_the_next_hop_and_never_forwarded() {
    let seed = seed_from_env(11);
    let spec = quiet();
    let t = topology(&spec, seed);
    let mut sim = sim(&spec, seed, LinkModel::default());
    let first = mix(&spec, 1, 0);
    for (i, bit) in [ALPHA_LEN * 8 + 3, 100 * 8, (HEADER_LEN - 1) * 8 + 7]
        .into_iter()
        .enumerate()
    {
        let mut p = drop_packet(&spec, &t, seed + i as u64);
        p[bit / 8] ^= 1 << (bit % 8);
        sim.inject(provider(0), first, p);
    }
    sim.run_until(5 * S);
    assert_eq!(mix_drops(&sim, first, DropReason::Mac), 3);
    assert_eq!(sim.mix(first).unwrap().stats().sent, 0, "seed {seed}");
}

#[test]
fn a_tagged_payload_reaches_the_recipient_and_is_caught_there() {
    let seed = seed_from_env(12);
    let spec = NetworkSpec {
        poll_rate_per_s: 5.0,
        ..quiet()
    };
    let t = topology(&spec, seed);
    let mut sim = sim(&spec, seed, LinkModel::default());
    let to = client(1);
    let path = [
        hop(&t, provider(0), relay(mix(&spec, 1, 0))),
        hop(&t, mix(&spec, 1, 0), relay(mix(&spec, 2, 0))),
        hop(&t, mix(&spec, 2, 0), relay(mix(&spec, 3, 0))),
        hop(&t, mix(&spec, 3, 0), relay(provider(1))),
        hop(
            &t,
            provider(1),
            Command::Deliver {
                client: to,
                delay_us: 1_000,
            },
        ),
        hop(&t, to, Command::Final),
    ];
    let params = Params::new(spec.payload_bytes).unwrap();
    let mut p = build(&params, &path, b"hi", &mut ChaCha20Rng::seed_from_u64(seed)).unwrap();
    p[HEADER_LEN + 40] ^= 0x01;
    // Bare packets reach a provider only over links from the last layer.
    sim.inject(mix(&spec, 3, 0), provider(0), p);
    sim.run_until(10 * S);
    let c = sim.client(to).unwrap().stats();
    assert_eq!(
        (c.tampered_received, c.delivered),
        (1, 0),
        "seed {seed}: {c:?}"
    );
}

#[test]
fn strangers_are_dropped_at_the_provider_and_counted() {
    let seed = seed_from_env(13);
    let spec = quiet();
    let t = topology(&spec, seed);
    let mut sim = sim(&spec, seed, LinkModel::default());
    sim.run_until(S);
    let before = sim.provider(provider(0)).unwrap().stats();
    let mut p = drop_packet(&spec, &t, seed);
    p.resize(p.len() + LINK_OVERHEAD, 0);
    // Link-sized datagrams from a sender nobody knows, and from a client's own address:
    // clients send only inside their sessions.
    sim.inject(NodeId(77_777), provider(0), p.clone());
    sim.inject(client(0), provider(0), p);
    sim.run_until(5 * S);
    let s = sim.provider(provider(0)).unwrap().stats();
    assert_eq!(
        s.hop.drops.get(DropReason::UnknownPeer),
        2,
        "seed {seed}: {:?}",
        s.hop.drops
    );
    assert_eq!(
        (s.sent, s.polls_answered),
        (before.sent, before.polls_answered)
    );
    assert_eq!(sim.log.lost + sim.log.undeliverable, 0);
}

/// An attacker who blocks everything to and from one mix stops the loops that cross it:
/// every mix outside its layer sees its loop-return fraction fall.
#[test]
fn blocking_a_mix_makes_the_others_loops_fail() {
    let seed = seed_from_env(14);
    let spec = NetworkSpec {
        layers: 3,
        mixes_per_layer: 2,
        providers: 2,
        clients: 2,
        mu_per_s: 20.0,
        lambda_payload_per_s: 0.0,
        lambda_loop_per_s: 0.0,
        lambda_drop_per_s: 0.0,
        lambda_mix_loop_per_s: 2.0,
        poll_rate_per_s: 0.0,
        ..NetworkSpec::default()
    };
    let mut sim = sim(
        &spec,
        seed,
        LinkModel {
            latency_us: 1_000,
            ..LinkModel::default()
        },
    );
    let victim = mix(&spec, 2, 0);
    let others: Vec<NodeId> = mixes(&spec)
        .into_iter()
        .filter(|m| m.0 != 3 && m.0 != 4)
        .collect();
    sim.run_until(110 * S);
    let before: Vec<f64> = others.iter().map(|&m| fraction(&sim, m)).collect();
    sim.link.blocked.insert(victim);
    sim.run_until(260 * S);
    for (m, b) in others.iter().zip(&before) {
        let after = fraction(&sim, *m);
        assert!(
            *b >= 0.95,
            "seed {seed}: mix {m:?} lost loops before the attack: {b}"
        );
        assert!(
            after < b - 0.25,
            "seed {seed}: mix {m:?}: {b:.2} -> {after:.2}"
        );
    }
}

fn fraction(sim: &Sim, m: NodeId) -> f64 {
    sim.mix(m)
        .unwrap()
        .loop_return_fraction(sim.now_us())
        .expect("loops old enough")
}

/// A batch through `Mix::handle_datagrams` ends exactly as the same datagrams one by one.
#[test]
fn a_batch_is_judged_like_single_datagrams() {
    use loopix_core::endpoint::Endpoint;
    use loopix_core::roles::RoleConfig;
    use loopix_core::roles::mix::Mix;

    let seed = seed_from_env(15);
    let spec = quiet();
    let id = mix(&spec, 1, 0);
    let make = || {
        let mut net = generate(&spec, seed).unwrap();
        let config = RoleConfig::node(
            id,
            net.keys.nodes.remove(&id).unwrap(),
            net.keys.sessions.remove(&id).unwrap(),
        )
        .seeded([1; 32])
        .limited(common::limits());
        Mix::<loopix_crypto::Processor>::new(&net.topology, config).unwrap()
    };
    let net = generate(&spec, seed).unwrap();
    let t = net.topology;
    let mut link = Links::new(&t, provider(0), &net.keys.sessions[&provider(0)], 0).unwrap();
    let mut sealed = |mut p: Vec<u8>| {
        p.resize(p.len() + LINK_OVERHEAD, 0);
        link.seal(0, id, &mut p).unwrap();
        p
    };
    let good: Vec<Vec<u8>> = (0..40)
        .map(|i| sealed(drop_packet(&spec, &t, seed + i)))
        .collect();
    // A packet changed on the wire after its trailer was made.
    let mut tagged = sealed(drop_packet(&spec, &t, seed + 100));
    tagged[ALPHA_LEN + 1] ^= 4;
    // The same packet again, under a fresh trailer: a replay the link lets through.
    let again = sealed(drop_packet(&spec, &t, seed));
    let from = t.node(provider(0)).unwrap().address;
    let mut datagrams: Vec<(std::net::SocketAddr, &[u8])> =
        good.iter().map(|g| (from, g.as_slice())).collect();
    datagrams.extend([
        (from, &again[..]),
        (from, &tagged),
        (from, b"short"),
        (from, &good[39]),
    ]);
    let (mut batched, mut single) = (make(), make());
    Endpoint::handle_datagrams(&mut batched, 0, &datagrams);
    for (from, d) in &datagrams {
        single.handle_datagram(0, *from, d);
    }
    // Packets arriving this fast may wait to fill a run of lanes: let the wait run out.
    let waited = loopix_core::pipeline::hop::DEFAULT_GATHER_US;
    for m in [&mut batched, &mut single] {
        assert!(m.poll_timeout().is_some_and(|t| t <= waited));
        m.handle_timeout(waited);
    }
    let (b, s) = (batched.stats().hop, single.stats().hop);
    assert_eq!(b.drops, s.drops);
    assert_eq!(b.received, s.received);
    // Each packet asked for no delay: all of them are due to leave now.
    let forwarded = |m: &mut Mix<loopix_crypto::Processor>| {
        let mut buf = vec![0u8; m.max_datagram_len()];
        let sent = std::iter::from_fn(|| m.poll_transmit(waited, &mut buf)).count();
        (sent, m.pool_size())
    };
    assert_eq!(forwarded(&mut batched), (40, 0));
    assert_eq!(forwarded(&mut single), (40, 0));
    // The tagged packet's trailer no longer verifies; good[39] again is a link replay;
    // `again` passes its link and is caught by the unwrap as a Sphinx replay.
    assert_eq!(b.drops.get(DropReason::Replay), 1);
    assert_eq!(b.drops.get(DropReason::LinkAuth), 1);
    assert_eq!(b.drops.get(DropReason::LinkReplay), 1);
    assert_eq!(b.drops.get(DropReason::Malformed), 1);
}

/// A sender asking a mix to hold its packet for ten minutes (to fill the mix's pool with a
/// few packets a second) is refused at once: beyond the network's delay horizon (20.7/µ s,
/// a delay an honest sender draws with probability 1e-9), dropped as `horizon`, never held.
#[test]
fn a_delay_beyond_the_horizon_is_dropped_and_never_held() {
    let seed = seed_from_env(16);
    let spec = quiet();
    let t = topology(&spec, seed);
    let horizon = t.network.delay_horizon_us();
    assert_eq!(horizon, 2_072_327, "20.7 / µ with µ = 10");
    let mut sim = sim(&spec, seed, LinkModel::default());
    let first = mix(&spec, 1, 0);
    let packet = |delay_us: u32, n: u64| {
        let path = [
            hop(
                &t,
                first,
                Command::Relay {
                    next: mix(&spec, 2, 0),
                    delay_us,
                },
            ),
            hop(&t, mix(&spec, 2, 0), relay(mix(&spec, 3, 0))),
            hop(&t, mix(&spec, 3, 0), relay(provider(0))),
            hop(&t, provider(0), Command::Drop),
        ];
        let params = Params::new(spec.payload_bytes).unwrap();
        build(&params, &path, b"", &mut ChaCha20Rng::seed_from_u64(n)).unwrap()
    };
    sim.inject(provider(0), first, packet(590_000_000, 1));
    sim.inject(provider(0), first, packet(horizon as u32, 2));
    sim.run_until(S);
    assert_eq!(
        mix_drops(&sim, first, DropReason::Horizon),
        1,
        "seed {seed}"
    );
    assert_eq!(
        sim.mix(first).unwrap().pool_size(),
        1,
        "only the honest one is held"
    );
    sim.run_until(5 * S);
    assert_eq!(sim.mix(first).unwrap().stats().sent, 1);
}

/// A client with its real key floods its provider with 500 packets at once: a burst of
/// its share passes (and fails to unwrap: junk), the rest is refused and counted as
/// `rate_limited` before any unwrapping; the other clients' messages still go through.
#[test]
fn a_client_sending_past_its_share_is_refused_and_counted() {
    use loopix_core::roles::client_quota::BURST;
    use loopix_core::session::initiator::Opened;
    use loopix_core::session::{ClientSession, FrameKind, FrameLayout};
    use loopix_crypto::SessionSecret;
    use loopix_sim::host_address;
    use rand_core::Rng;

    let seed = seed_from_env(17);
    let spec = NetworkSpec {
        layers: 2,
        mixes_per_layer: 1,
        providers: 1,
        clients: 3,
        lambda_payload_per_s: 2.0,
        lambda_loop_per_s: 0.0,
        lambda_drop_per_s: 0.0,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s: 2.0,
        ..NetworkSpec::default()
    };
    let net = generate(&spec, seed).unwrap();
    let key = net.keys.clients[&client(2)].clone();
    let provider_key = net.topology.node(provider(0)).unwrap().session_key.unwrap();
    let mut sim = sim(&spec, seed, LinkModel::default());
    sim.run_until(2 * S);

    // The flooder's own session, from an address of its own.
    let at = host_address(NodeId(66_670));
    sim.listen(at);
    let params = Params::new(spec.payload_bytes).unwrap();
    let layout = FrameLayout::new(&params, spec.poll_size);
    let mut session = ClientSession::new(SessionSecret::derive_from(&key), provider_key, layout);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut frame = vec![0u8; layout.frame_len()];
    session
        .write_initiation(sim.now_us(), &mut rng, &mut frame)
        .unwrap();
    sim.inject_from(at, provider(0), frame.clone());
    sim.run_until(2 * S + S / 10);
    let response = sim.log.captured.iter().find(|c| c.to == at).unwrap();
    let mut plain = vec![0u8; layout.plaintext_len()];
    assert!(matches!(
        session.open(sim.now_us(), &response.bytes, &mut plain),
        Opened::Established
    ));
    let drops = |sim: &Sim, r| sim.provider(provider(0)).unwrap().stats().hop.drops.get(r);
    // Junk fails its unwrap as a bad MAC, a bad group element, or (its phase bit set) a
    // key phase not in use.
    let unwrap_failures = |sim: &Sim| {
        drops(sim, DropReason::Mac)
            + drops(sim, DropReason::InvalidGroupElement)
            + drops(sim, DropReason::ExpiredKey)
    };
    let before = unwrap_failures(&sim);
    for _ in 0..500 {
        rng.fill_bytes(&mut plain);
        plain[0] = FrameKind::Packet as u8;
        session.seal(&plain, &mut frame).unwrap();
        sim.inject_from(at, provider(0), frame.clone());
    }
    sim.with_client(client(0), |c| c.send(client(1), b"still here"))
        .unwrap()
        .unwrap();
    sim.run_until(20 * S);
    let (limited, admitted) = (
        drops(&sim, DropReason::RateLimited),
        unwrap_failures(&sim) - before,
    );
    // The flooder shares its bucket with the real client 2 (the same key), whose own
    // packets may also be refused while the bucket refills.
    assert!(admitted <= BURST as u64, "seed {seed}: {admitted} admitted");
    assert!(
        limited + admitted >= 500,
        "seed {seed}: {limited} + {admitted}"
    );
    assert!(limited < 500 + 20, "seed {seed}: {limited}");
    assert_eq!(sim.client(client(1)).unwrap().stats().delivered, 1);
}

/// A packet from the last mix for `to`, stored by its provider `at` (no further hops).
fn delivery(spec: &NetworkSpec, t: &Topology, at: NodeId, to: NodeId, n: u64) -> Vec<u8> {
    let path = [
        hop(
            t,
            at,
            Command::Deliver {
                client: to,
                delay_us: 1_000,
            },
        ),
        hop(t, to, Command::Final),
    ];
    let params = Params::new(spec.payload_bytes).unwrap();
    build(&params, &path, b"flood", &mut ChaCha20Rng::seed_from_u64(n)).unwrap()
}

/// A sender floods an offline recipient's inbox to its bound, locking real messages out:
/// the lockout lasts only the inbox TTL. The flood expires unread (counted as
/// `inbox_expired`), and a message sent after it is stored again.
#[test]
fn a_flooded_inbox_is_locked_only_until_its_packets_expire() {
    let seed = seed_from_env(18);
    let spec = quiet();
    let net = generate(&spec, seed).unwrap();
    let t = net.topology.clone();
    let inbox = InboxLimits {
        per_client: 5,
        total: 1_000,
        ttl_us: 30 * S,
    };
    let options = SimOptions {
        inbox,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(net, seed, LinkModel::default(), common::limits(), options);
    let (last, to) = (mix(&spec, 3, 0), client(1));
    let delivery = |n| delivery(&spec, &t, provider(1), to, n);
    let p = |sim: &Sim| sim.provider(provider(1)).unwrap().stats();
    for n in 0..8 {
        sim.inject(last, provider(1), delivery(n));
    }
    sim.run_until(S);
    let s = p(&sim);
    assert_eq!(
        (s.stored, s.hop.drops.get(DropReason::InboxFull)),
        (5, 3),
        "seed {seed}"
    );
    sim.inject(last, provider(1), delivery(100));
    sim.run_until(10 * S);
    assert_eq!(
        p(&sim).hop.drops.get(DropReason::InboxFull),
        4,
        "still locked"
    );
    assert_eq!(p(&sim).hop.drops.get(DropReason::InboxExpired), 0);

    sim.run_until(33 * S);
    let s = p(&sim);
    assert_eq!(s.hop.drops.get(DropReason::InboxExpired), 5, "seed {seed}");
    assert_eq!(sim.provider(provider(1)).unwrap().inbox_len(to), 0);
    sim.inject(last, provider(1), delivery(101));
    sim.run_until(34 * S);
    let s = p(&sim);
    assert_eq!(
        (s.stored, sim.provider(provider(1)).unwrap().inbox_len(to)),
        (6, 1)
    );
    assert_eq!(s.hop.drops.get(DropReason::InboxFull), 4);
}

/// Flooding many recipients at once meets the store's own bound: past it every recipient
/// is refused, counted as `store_full` (apart from one full inbox), and nothing is stored.
#[test]
fn a_full_store_refuses_every_recipient_and_counts_it() {
    let seed = seed_from_env(19);
    let spec = NetworkSpec {
        clients: 4,
        ..quiet()
    };
    let net = generate(&spec, seed).unwrap();
    let t = net.topology.clone();
    let inbox = InboxLimits {
        per_client: 5,
        total: 6,
        ..InboxLimits::default()
    };
    let options = SimOptions {
        inbox,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(net, seed, LinkModel::default(), common::limits(), options);
    let last = mix(&spec, 3, 0);
    // Clients 1 and 3 are provider 1's (clients are spread round-robin).
    for n in 0..5 {
        sim.inject(
            last,
            provider(1),
            delivery(&spec, &t, provider(1), client(1), n),
        );
    }
    sim.run_until(S);
    for n in 10..13 {
        sim.inject(
            last,
            provider(1),
            delivery(&spec, &t, provider(1), client(3), n),
        );
    }
    sim.run_until(2 * S);
    let s = sim.provider(provider(1)).unwrap().stats();
    assert_eq!(
        (
            s.stored,
            s.hop.drops.get(DropReason::StoreFull),
            s.hop.drops.get(DropReason::InboxFull)
        ),
        (6, 2, 0),
        "seed {seed}"
    );
    assert_eq!(sim.provider(provider(1)).unwrap().inbox_total(), 6);
}
