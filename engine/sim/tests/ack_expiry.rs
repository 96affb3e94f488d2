//! A reply block is good for as long as its epoch's keys are in use. A recipient that comes
//! back after that (offline, or polling late) and finds a fragment whose ack block's key
//! is gone does not send the ack its provider would only refuse: it counts it as expired.
//! The sender, hearing nothing, sends the fragment again with a fresh block, and that ack
//! arrives. Every message still arrives once, and no node drops anything for an expired key.

mod common;

use common::{S, client, limits};
use loopix_core::drops::DropReason;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::ClientEvent;
use loopix_sim::{LinkModel, NetworkSpec, Sim, SimOptions, generate, seed_from_env};

#[test]
fn an_ack_whose_reply_block_expired_is_not_sent_and_the_message_still_arrives_once() {
    let seed = seed_from_env(44);
    // Epochs of 60 s with 2 s of grace; hops hold packets 100 ms on average.
    let spec = NetworkSpec {
        layers: 2,
        mixes_per_layer: 1,
        providers: 2,
        clients: 2,
        lambda_payload_per_s: 2.0,
        lambda_loop_per_s: 0.5,
        lambda_drop_per_s: 0.5,
        lambda_mix_loop_per_s: 0.0,
        poll_rate_per_s: 2.0,
        mu_per_s: 10.0,
        epoch_s: 60,
        epoch_grace_s: 2,
        published_epochs: 4,
        ..NetworkSpec::default()
    };
    let net = generate(&spec, seed).unwrap();
    let (from, to) = (client(0), client(1));
    let their_provider = net.topology.client(to).unwrap().provider;
    let options = SimOptions {
        acks: AckConfig { max_attempts: 10 },
        ..SimOptions::default()
    };
    let link = LinkModel {
        latency_us: 1_000,
        ..LinkModel::default()
    };
    let mut sim = Sim::with_options(net, seed, link, limits(), options);
    // The recipient goes offline at 50 s and comes back at 75 s, after epoch 0's grace
    // (which ends at 62 s); the message sent at 55 s, with a reply block of epoch 0, waits
    // in its provider's inbox.
    sim.run_until(50 * S);
    sim.link.blocked.insert(to);
    sim.run_until(55 * S);
    sim.with_client(from, |c| c.send(to, b"sent just before a key change"))
        .unwrap()
        .unwrap();
    sim.run_until(75 * S);
    sim.link.blocked.clear();
    sim.run_until(200 * S);

    let delivered = sim
        .log
        .client_events
        .iter()
        .filter(|(at, e)| *at == to && matches!(e, ClientEvent::Delivered { .. }))
        .count();
    let acked = sim
        .log
        .client_events
        .iter()
        .filter(|(at, e)| *at == from && matches!(e, ClientEvent::Acked { .. }))
        .count();
    assert_eq!((delivered, acked), (1, 1), "seed {seed}");
    let provider = sim.provider(their_provider).unwrap().stats();
    assert_eq!(
        provider.hop.drops.get(DropReason::ExpiredKey),
        0,
        "seed {seed}: {provider:?}"
    );
    let recipient = sim.client(to).unwrap().stats();
    assert!(
        recipient.acks_expired >= 1,
        "seed {seed}: the late ack was sent anyway: {recipient:?}"
    );
    assert!(recipient.acks_sent >= 1, "seed {seed}: {recipient:?}");
}
