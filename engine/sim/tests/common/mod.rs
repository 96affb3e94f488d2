//! Fixtures for the simulation tests.
#![allow(dead_code)]

use loopix_core::network::topology::Topology;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::pipeline::timing_wheel::WheelConfig;
use loopix_crypto::{Command, Hop, NodeId, Params, build};
use loopix_sim::network::{FIRST_CLIENT, FIRST_PROVIDER};
use loopix_sim::{LinkModel, NetworkSpec, Sim, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Smaller pools than a production node: the simulated load is light.
pub fn limits() -> HopLimits {
    HopLimits {
        pool_packets: 8_192,
        replay_tags: 1 << 17,
        wheel: WheelConfig {
            slot_us: 100,
            horizon_us: 600_000_000,
        },
        journal_tags: 0,
        max_delay_us: u64::MAX,
        gather_us: loopix_core::pipeline::hop::DEFAULT_GATHER_US,
    }
}

/// A simulator over a generated network.
pub fn sim(spec: &NetworkSpec, seed: u64, link: LinkModel) -> Sim {
    let net = generate(spec, seed).expect("generated topology is valid");
    Sim::new(net, seed, link, limits())
}

pub const S: u64 = 1_000_000;

pub fn client(i: u64) -> NodeId {
    NodeId(FIRST_CLIENT + i)
}

pub fn provider(i: u64) -> NodeId {
    NodeId(FIRST_PROVIDER + i)
}

/// Mix ids of a generated network: layer `l` (1-based), index `i`.
pub fn mix(spec: &NetworkSpec, layer: u8, i: u32) -> NodeId {
    NodeId(1 + u64::from(layer - 1) * u64::from(spec.mixes_per_layer) + u64::from(i))
}

/// All mix ids.
pub fn mixes(spec: &NetworkSpec) -> Vec<NodeId> {
    (1..=spec.layers)
        .flat_map(|l| (0..spec.mixes_per_layer).map(move |i| mix(spec, l, i)))
        .collect()
}

/// A hop under `id`'s key of `epoch` (a node's; a client's one key for any epoch).
pub fn hop_at(t: &Topology, id: NodeId, epoch: u64, command: Command) -> Hop {
    match t.node(id) {
        Some(n) => n
            .epoch_keys
            .hop(epoch, command)
            .expect("a published epoch key"),
        None => Hop::new(t.client(id).expect("in the topology").public_key, command),
    }
}

/// Relay to `next` after 1 ms.
pub fn relay(next: NodeId) -> Command {
    Command::Relay {
        next,
        delay_us: 1_000,
    }
}

/// Mix 1 -> mix 2 -> mix 3 -> provider 0 (drop), every hop under its key of `epoch`.
pub fn drop_packet_at(spec: &NetworkSpec, t: &Topology, epoch: u64, seed: u64) -> Vec<u8> {
    let path = [
        hop_at(t, mix(spec, 1, 0), epoch, relay(mix(spec, 2, 0))),
        hop_at(t, mix(spec, 2, 0), epoch, relay(mix(spec, 3, 0))),
        hop_at(t, mix(spec, 3, 0), epoch, relay(provider(0))),
        hop_at(t, provider(0), epoch, Command::Drop),
    ];
    let params = Params::new(spec.payload_bytes).unwrap();
    build(&params, &path, b"", &mut ChaCha20Rng::seed_from_u64(seed)).unwrap()
}
