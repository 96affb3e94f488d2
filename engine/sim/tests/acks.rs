//! Acknowledgements and retransmission in virtual time: with 5 % of every link's datagrams
//! lost and one mix down for a minute, every message arrives exactly once and every sender
//! hears it acknowledged; with retransmission off, the same run loses messages.

mod common;

use std::collections::BTreeMap;

use common::{S, client, limits, mix};
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::ClientEvent;
use loopix_crypto::NodeId;
use loopix_sim::{LinkModel, NetworkSpec, Sim, SimOptions, generate, seed_from_env};

fn spec() -> NetworkSpec {
    NetworkSpec {
        layers: 2,
        mixes_per_layer: 2,
        providers: 2,
        clients: 4,
        lambda_payload_per_s: 2.0,
        lambda_loop_per_s: 0.5,
        lambda_drop_per_s: 1.0,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s: 2.0,
        mu_per_s: 10.0,
        ..NetworkSpec::default()
    }
}

/// What one run saw.
struct Run {
    sent: usize,
    /// Deliveries per (recipient, message).
    delivered: BTreeMap<(NodeId, Vec<u8>), usize>,
    acked: usize,
    gave_up: usize,
    retransmitted: u64,
}

/// 40 messages over the first 40 s between the four clients, 5 % loss on every link,
/// mix 1 of layer 1 blocked from 10 s to 70 s; run to 15 minutes.
fn run(seed: u64, acks: AckConfig) -> Run {
    let spec = spec();
    let net = generate(&spec, seed).unwrap();
    let link = LinkModel {
        latency_us: 1_000,
        loss: 0.05,
        ..LinkModel::default()
    };
    let options = SimOptions {
        acks,
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(net, seed, link, limits(), options);
    let mut sent = 0;
    for second in 0..40u64 {
        if second == 10 {
            sim.link.blocked.insert(mix(&spec, 1, 0));
        }
        let from = client(second % 4);
        let to = client((second + 1 + second / 4 % 3) % 4);
        let message = format!("message {second} from {} to {}", from.0, to.0);
        sim.with_client(from, |c| c.send(to, message.as_bytes()))
            .unwrap()
            .unwrap();
        sent += 1;
        sim.run_until((second + 1) * S);
    }
    sim.run_until(70 * S);
    sim.link.blocked.clear();
    sim.run_until(900 * S);
    let mut delivered = BTreeMap::new();
    let (mut acked, mut gave_up) = (0, 0);
    for (at, e) in &sim.log.client_events {
        match e {
            ClientEvent::Delivered { message, .. } => {
                *delivered.entry((*at, message.clone())).or_insert(0) += 1;
            }
            ClientEvent::Acked { .. } => acked += 1,
            ClientEvent::GaveUp { .. } => gave_up += 1,
            _ => {}
        }
    }
    let retransmitted = (0..4)
        .map(|i| sim.client(client(i)).unwrap().stats().retransmitted)
        .sum();
    let acks_sent: u64 = (0..4)
        .map(|i| sim.client(client(i)).unwrap().stats().acks_sent)
        .sum();
    eprintln!(
        "seed {seed}, max_attempts {}: {sent} sent, {} delivered, {acked} acked, {gave_up} \
         given up, {retransmitted} retransmitted, {acks_sent} acks sent, {} datagrams lost",
        acks.max_attempts,
        delivered.len(),
        sim.log.lost
    );
    Run {
        sent,
        delivered,
        acked,
        gave_up,
        retransmitted,
    }
}

#[test]
fn with_acks_every_message_arrives_exactly_once_despite_loss_and_a_crashed_mix() {
    let seed = seed_from_env(30);
    let r = run(seed, AckConfig { max_attempts: 10 });
    assert_eq!(
        r.delivered.len(),
        r.sent,
        "seed {seed}: every message arrived"
    );
    assert!(
        r.delivered.values().all(|&n| n == 1),
        "seed {seed}: exactly once: {:?}",
        r.delivered.values().filter(|&&n| n != 1).count()
    );
    assert_eq!(
        (r.acked, r.gave_up),
        (r.sent, 0),
        "seed {seed}: every sender heard"
    );
    assert!(
        r.retransmitted > 0,
        "seed {seed}: the loss cost retransmissions"
    );
}

#[test]
fn without_retransmission_the_same_run_loses_messages() {
    let seed = seed_from_env(30);
    let r = run(seed, AckConfig::OFF);
    assert!(
        r.delivered.len() < r.sent,
        "seed {seed}: {} of {} arrived",
        r.delivered.len(),
        r.sent
    );
    assert_eq!((r.acked, r.retransmitted), (0, 0));
}

/// Reply blocks for applications: alice sends bob a message with two blocks; bob answers
/// through one, and alice receives the answer as a reply to her message; a second answer
/// through the same block meets its first hop (bob's provider) as a replay and is dropped
/// there; the other block still carries one answer.
#[test]
fn a_recipient_answers_through_the_reply_blocks_a_message_carried_once_each() {
    use common::provider;
    use loopix_core::drops::DropReason;

    let seed = seed_from_env(31);
    let spec = NetworkSpec {
        lambda_mix_loop_per_s: 0.0,
        ..spec()
    };
    let net = generate(&spec, seed).unwrap();
    let mut sim = Sim::new(net, seed, LinkModel::default(), limits());
    let (alice, bob) = (client(0), client(1));
    sim.run_until(S);
    let now = sim.now_us();
    let sent = sim
        .with_client(alice, |c| c.send_with_replies(now, bob, b"ping", 2))
        .unwrap()
        .unwrap();
    sim.run_until(20 * S);
    let blocks = sim
        .log
        .client_events
        .iter()
        .find_map(|(at, e)| match e {
            ClientEvent::RepliesOffered { msg_id, blocks } if *at == bob && *msg_id == sent => {
                Some(blocks.clone())
            }
            _ => None,
        })
        .expect("bob was offered the blocks");
    assert_eq!(blocks.len(), 2);
    // Replays dropped at bob's provider.
    let replays = |sim: &Sim| {
        sim.provider(provider(1))
            .unwrap()
            .stats()
            .hop
            .drops
            .get(DropReason::Replay)
    };
    let replays_before = replays(&sim);
    for answer in [&b"pong"[..], b"pong again", b"other block"] {
        let block = if answer == b"other block" {
            &blocks[1]
        } else {
            &blocks[0]
        };
        sim.with_client(bob, |c| c.reply(block, answer))
            .unwrap()
            .unwrap();
        let until = sim.now_us() + 20 * S;
        sim.run_until(until);
    }
    let answers: Vec<Vec<u8>> = sim
        .log
        .client_events
        .iter()
        .filter_map(|(at, e)| match e {
            ClientEvent::ReplyReceived {
                msg_id, message, ..
            } if *at == alice => {
                assert_eq!(*msg_id, sent);
                Some(message.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![b"pong".to_vec(), b"other block".to_vec()],
        "seed {seed}"
    );
    assert_eq!(
        replays(&sim) - replays_before,
        1,
        "the reused block, at bob's provider"
    );
}

/// A client that stops takes back what it never sent: those messages never leave, and
/// what had already left still arrives (a stopping client reports the first as not sent,
/// and must not be proved wrong by a later delivery).
#[test]
fn messages_withheld_at_a_stop_never_leave() {
    let seed = seed_from_env(17);
    let spec = spec();
    let net = generate(&spec, seed).unwrap();
    let options = SimOptions {
        acks: AckConfig { max_attempts: 4 },
        ..SimOptions::default()
    };
    let mut sim = Sim::with_options(net, seed, LinkModel::default(), limits(), options);
    let (alice, bob) = (client(0), client(1));
    sim.with_client(alice, |c| c.send(bob, b"early"))
        .unwrap()
        .unwrap();
    sim.run_until(5 * S); // at 2 sends a second, long gone
    let mut late = Vec::new();
    let withheld = sim
        .with_client(alice, |c| {
            for i in 0..5 {
                late.push(c.send(bob, format!("late {i}").as_bytes()).unwrap());
            }
            c.withhold_unsent()
        })
        .unwrap();
    assert_eq!(
        withheld, late,
        "every late message, none sent yet, in queue order"
    );
    sim.run_until(120 * S);
    let delivered: Vec<&Vec<u8>> = sim
        .log
        .client_events
        .iter()
        .filter(|(at, _)| *at == bob)
        .filter_map(|(_, e)| match e {
            ClientEvent::Delivered { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [&b"early".to_vec()], "seed {seed}");
    let sent_late = sim.log.client_events.iter().any(|(at, e)| {
        *at == alice
            && matches!(e, ClientEvent::FragmentSent { msg_id, .. } if late.contains(msg_id))
    });
    assert!(!sent_late, "a withheld fragment left");
}
