//! Fixtures for the simulation tests.
#![allow(dead_code)]

use loopix_core::hop::HopLimits;
use loopix_core::timing_wheel::WheelConfig;
use loopix_crypto::Address;
use loopix_sim::network::{FIRST_CLIENT, FIRST_PROVIDER};
use loopix_sim::{LinkModel, NetworkSpec, Sim, generate};

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
    }
}

/// A simulator over a generated network.
pub fn sim(spec: &NetworkSpec, seed: u64, link: LinkModel) -> Sim {
    let net = generate(spec, seed).expect("generated topology is valid");
    Sim::new(net, seed, link, limits())
}

pub const S: u64 = 1_000_000;

pub fn client(i: u64) -> Address {
    Address(FIRST_CLIENT + i)
}

pub fn provider(i: u64) -> Address {
    Address(FIRST_PROVIDER + i)
}

/// Mix ids of a generated network: layer `l` (1-based), index `i`.
pub fn mix(spec: &NetworkSpec, layer: u8, i: u32) -> Address {
    Address(1 + u64::from(layer - 1) * u64::from(spec.mixes_per_layer) + u64::from(i))
}

/// All mix ids.
pub fn mixes(spec: &NetworkSpec) -> Vec<Address> {
    (1..=spec.layers)
        .flat_map(|l| (0..spec.mixes_per_layer).map(move |i| mix(spec, l, i)))
        .collect()
}
