//! Who can pass as whom, in virtual time: an outsider without keys, on the path or off it,
//! forging source addresses, replaying what it saw, claiming ids the way polls once could.
//! It must draw nothing, change no inbox and move no session.

mod common;

use common::{S, client, mix, provider, sim};
use loopix_core::drops::DropReason;
use loopix_core::session::{ClientSession, FrameLayout};
use loopix_crypto::{NodeId, Params, SessionSecret};
use loopix_sim::{Captured, LinkModel, NetworkSpec, Sim, host_address, seed_from_env};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// One provider, two clients, no cover: every packet is a message the test sent.
fn spec(poll_rate_per_s: f64) -> NetworkSpec {
    NetworkSpec {
        layers: 2,
        mixes_per_layer: 1,
        providers: 1,
        clients: 2,
        lambda_payload_per_s: 5.0,
        lambda_loop_per_s: 0.0,
        lambda_drop_per_s: 0.0,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s,
        ..NetworkSpec::default()
    }
}

fn layout(spec: &NetworkSpec) -> FrameLayout {
    FrameLayout::new(&Params::new(spec.payload_bytes).unwrap(), spec.poll_size)
}

fn drops(sim: &Sim, reason: DropReason) -> u64 {
    sim.provider(provider(0))
        .unwrap()
        .stats()
        .hop
        .drops
        .get(reason)
}

/// Frames a client sent its provider, as a tap in front of the provider saw them.
fn frames_of(sim: &Sim, who: NodeId) -> Vec<Vec<u8>> {
    let from = host_address(who);
    sim.log
        .captured
        .iter()
        .filter(|c| c.from == from)
        .map(|c| c.bytes.clone())
        .collect()
}

fn drawn_by(sim: &Sim, attacker: std::net::SocketAddr) -> Vec<&Captured> {
    sim.log
        .captured
        .iter()
        .filter(|c| c.to == attacker)
        .collect()
}

/// The polls of the old wire format, which named the client in the clear: claiming a
/// client, a mix and a made-up id, sent from the attacker and with forged sources (the
/// client's own address and the mix's).
#[test]
fn an_outsider_without_keys_draws_nothing_and_changes_no_inbox() {
    let seed = seed_from_env(40);
    let spec = spec(0.0); // Bob never polls: his inbox only grows.
    let mut sim = sim(&spec, seed, LinkModel::default());
    let provider_addr = sim.address_of(provider(0));
    let attacker = host_address(NodeId(66_666));
    sim.tap(provider_addr);
    sim.listen(attacker);
    let (alice, bob, mix1) = (client(0), client(1), mix(&spec, 1, 0));
    for i in 0..3 {
        sim.with_client(alice, |c| c.send(bob, format!("m{i}").as_bytes()))
            .unwrap()
            .unwrap();
    }
    sim.run_until(10 * S);
    let inbox = |sim: &Sim| sim.provider(provider(0)).unwrap().inbox_len(bob);
    assert_eq!(inbox(&sim), 3, "seed {seed}");
    let before = sim.provider(provider(0)).unwrap().stats();
    let seen = frames_of(&sim, alice);
    assert!(seen.len() > 3, "a handshake and Alice's packets");

    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    sim.record_wire(true);
    let sources = [attacker, sim.address_of(bob), sim.address_of(mix1)];
    // malformed, session_replay, unauthenticated, handshake_mac
    let mut expect = [0u64; 4];
    for claimed in [bob, mix1, NodeId(424_242)] {
        let mut poll = b"LXPR".to_vec();
        poll.extend_from_slice(&claimed.0.to_le_bytes());
        poll.extend_from_slice(&[0u8; 32]);
        for from in sources {
            sim.inject_from(from, provider(0), poll.clone());
            expect[0] += 1;
        }
    }
    for frame in &seen {
        for from in sources {
            sim.inject_from(from, provider(0), frame.clone());
            expect[1] += 1;
        }
    }
    let layout = layout(&spec);
    for i in 0..40u32 {
        let mut frame = vec![0u8; layout.frame_len()];
        rng.fill_bytes(&mut frame);
        if i % 2 == 0 {
            frame[..4].fill(0); // a would-be handshake: refused by its mac1, without a DH
            expect[3] += 1;
        } else {
            expect[2] += 1;
        }
        sim.inject_from(attacker, provider(0), frame);
    }
    let provider_key = sim
        .provider(provider(0))
        .map(|_| generated_provider_key(&spec, seed))
        .unwrap();
    let mut stranger = ClientSession::new(SessionSecret::generate(&mut rng), provider_key, layout);
    let mut handshake = vec![0u8; layout.frame_len()];
    stranger
        .write_initiation(sim.now_us(), &mut rng, &mut handshake)
        .unwrap();
    sim.inject_from(attacker, provider(0), handshake);
    expect[2] += 1;
    sim.run_until(15 * S);

    assert!(drawn_by(&sim, attacker).is_empty(), "seed {seed}");
    assert_eq!(inbox(&sim), 3, "Bob's inbox is untouched");
    let after = sim.provider(provider(0)).unwrap().stats();
    assert_eq!(
        (after.polls_answered, after.sessions_started),
        (before.polls_answered, before.sessions_started),
        "nothing answered, no session started"
    );
    let to_clients = sim
        .log
        .wire
        .iter()
        .filter(|w| w.from == provider(0) && w.to.0 >= 10_000)
        .count();
    assert_eq!(to_clients, 0, "not a datagram to a forged source either");
    let got = [
        drops(&sim, DropReason::Malformed),
        drops(&sim, DropReason::SessionReplay),
        drops(&sim, DropReason::Unauthenticated),
        drops(&sim, DropReason::HandshakeMac),
    ];
    assert_eq!(
        got, expect,
        "seed {seed}: every attempt counted under its reason"
    );

    // Alice's session was not moved by her frames replayed from elsewhere: her next
    // message still reaches Bob's inbox through the mixes.
    sim.with_client(alice, |c| c.send(bob, b"after"))
        .unwrap()
        .unwrap();
    sim.run_until(25 * S);
    assert_eq!(inbox(&sim), 4, "seed {seed}");
}

/// A tap in front of the provider replays a client's polls from its own address: nothing
/// comes back to it, and the client keeps getting its answers where it is.
#[test]
fn a_replayed_poll_draws_no_answer_and_moves_no_session() {
    let seed = seed_from_env(41);
    let spec = spec(4.0);
    let mut sim = sim(&spec, seed, LinkModel::default());
    let attacker = host_address(NodeId(66_667));
    sim.tap(sim.address_of(provider(0)));
    sim.listen(attacker);
    sim.run_until(5 * S);
    let polls = frames_of(&sim, client(1));
    assert!(polls.len() > 10, "{} frames", polls.len());
    let answered = sim.provider(provider(0)).unwrap().stats().polls_answered;
    for p in &polls {
        sim.inject_from(attacker, provider(0), p.clone());
    }
    sim.run_until(6 * S);
    assert!(drawn_by(&sim, attacker).is_empty(), "seed {seed}");
    assert_eq!(
        drops(&sim, DropReason::SessionReplay),
        polls.len() as u64,
        "seed {seed}"
    );
    let stats = sim.provider(provider(0)).unwrap().stats();
    assert!(stats.polls_answered > answered, "real polls still answered");
    sim.with_client(client(0), |c| c.send(client(1), b"still here"))
        .unwrap()
        .unwrap();
    sim.run_until(20 * S);
    assert_eq!(
        sim.client(client(1)).unwrap().stats().delivered,
        1,
        "seed {seed}"
    );
}

/// The provider's session key as the generated topology publishes it.
fn generated_provider_key(spec: &NetworkSpec, seed: u64) -> loopix_crypto::SessionPublic {
    let net = loopix_sim::generate(spec, seed).unwrap();
    net.topology
        .node(provider(0))
        .and_then(|n| n.session_key)
        .unwrap()
}

/// A tap in front of a layer-1 mix replays what its provider sent it, from the provider's
/// own address (a forged source) and from elsewhere: the link refuses every copy before
/// any unwrapping, and nothing more leaves the mix.
#[test]
fn a_replayed_link_datagram_is_dropped_before_the_unwrap() {
    let seed = seed_from_env(42);
    let spec = spec(1.0);
    let mut sim = sim(&spec, seed, LinkModel::default());
    let target = mix(&spec, 1, 0);
    let target_addr = sim.address_of(target);
    sim.tap(target_addr);
    sim.with_client(client(0), |c| c.send(client(1), b"once"))
        .unwrap()
        .unwrap();
    sim.run_until(5 * S);
    let from_provider = sim.address_of(provider(0));
    let seen: Vec<Vec<u8>> = sim
        .log
        .captured
        .iter()
        .filter(|c| c.from == from_provider)
        .map(|c| c.bytes.clone())
        .collect();
    assert!(!seen.is_empty(), "seed {seed}");
    let stats = |sim: &Sim| sim.mix(target).unwrap().stats();
    let before = stats(&sim);
    for d in &seen {
        sim.inject_from(from_provider, target, d.clone());
        sim.inject_from(host_address(NodeId(66_668)), target, d.clone());
    }
    sim.run_until(10 * S);
    let after = stats(&sim);
    let n = seen.len() as u64;
    assert_eq!(
        (
            after.hop.drops.get(DropReason::LinkReplay),
            after.hop.drops.get(DropReason::UnknownPeer),
            after.hop.drops.get(DropReason::Replay),
        ),
        (n, n, 0),
        "seed {seed}: refused at the link, never unwrapped"
    );
    // The mix's own traffic went on; none of the copies was forwarded.
    assert_eq!(
        after.hop.released - before.hop.released,
        after.sent - before.sent
    );
    assert_eq!(sim.client(client(1)).unwrap().stats().delivered, 1);
}
