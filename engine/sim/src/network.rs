//! Generated networks: keys from a seed and a topology in the real TOML format, parsed by
//! the real loader, so every simulated network is one a node could load.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::topology::{
    ClientEntry, EpochKeys, Network, NodeEntry, Role, Topology, TopologyError,
};
use loopix_crypto::{EpochSeed, NodeId, Params, SecretKey, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Shape and rates of a generated network.
#[derive(Clone, Copy, Debug)]
pub struct NetworkSpec {
    pub layers: u8,
    pub mixes_per_layer: u32,
    pub providers: u32,
    pub clients: u32,
    pub payload_bytes: usize,
    pub mu_per_s: f64,
    pub lambda_payload_per_s: f64,
    pub lambda_loop_per_s: f64,
    pub lambda_drop_per_s: f64,
    pub lambda_mix_loop_per_s: f64,
    pub poll_size: u16,
    pub poll_rate_per_s: f64,
    /// Key epochs: length, start (on the network's clock, s) and grace, as in the
    /// topology's `[network]`.
    pub epoch_s: u64,
    pub epoch_start_s: u64,
    pub epoch_grace_s: u64,
    /// The epochs each node publishes keys for: `first_epoch` and the next ones.
    pub first_epoch: u64,
    pub published_epochs: u32,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            layers: 3,
            mixes_per_layer: 3,
            providers: 2,
            clients: 10,
            payload_bytes: 512,
            mu_per_s: 10.0,
            lambda_payload_per_s: 0.5,
            lambda_loop_per_s: 0.5,
            lambda_drop_per_s: 0.5,
            lambda_mix_loop_per_s: 0.5,
            poll_size: 4,
            poll_rate_per_s: 1.0,
            epoch_s: 1200,
            epoch_start_s: 0,
            epoch_grace_s: 60,
            first_epoch: 0,
            published_epochs: 4,
        }
    }
}

/// Ids: mixes from 1, providers from 1,000, clients from 10,000.
pub const FIRST_PROVIDER: u64 = 1_000;
/// See [`FIRST_PROVIDER`].
pub const FIRST_CLIENT: u64 = 10_000;

/// A generated network: its topology and every party's secrets.
pub struct Generated {
    pub topology: Topology,
    pub keys: Keys,
}

/// Every party's secrets: each node's epoch seed and session key, each client's key (its
/// session key derives from it).
#[derive(Default)]
pub struct Keys {
    pub nodes: BTreeMap<NodeId, EpochSeed>,
    pub sessions: BTreeMap<NodeId, SessionSecret>,
    pub clients: BTreeMap<NodeId, SecretKey>,
}

/// Generates keys from `seed` and the topology `spec` describes. Clients are spread over
/// providers round-robin; node `id` listens on `127.0.0.1:(20000 + id)` (the simulator
/// never binds them).
pub fn generate(spec: &NetworkSpec, seed: u64) -> Result<Generated, TopologyError> {
    generate_at(spec, seed, |id| {
        SocketAddr::from(([127, 0, 0, 1], 20_000 + id.0 as u16))
    })
}

/// [`generate`] with node addresses from `address_of`. The topology is written by the
/// real writer ([`Topology::to_toml`]) and read back by the real loader, so every
/// generated network is one a node could load.
pub fn generate_at(
    spec: &NetworkSpec,
    seed: u64,
    address_of: impl Fn(NodeId) -> SocketAddr,
) -> Result<Generated, TopologyError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut keys = Keys::default();
    let mut nodes = Vec::new();
    let mut node = |id: NodeId, role: Role, rng: &mut ChaCha20Rng| {
        let seed = EpochSeed::generate(rng, spec.first_epoch);
        let session = SessionSecret::generate(rng);
        nodes.push(NodeEntry {
            id,
            role,
            address: address_of(id),
            epoch_keys: EpochKeys::derive(&seed, spec.first_epoch, spec.published_epochs),
            session_key: Some(session.public()),
        });
        keys.nodes.insert(id, seed);
        keys.sessions.insert(id, session);
    };
    let mut id = 1;
    for layer in 1..=spec.layers {
        for _ in 0..spec.mixes_per_layer {
            node(NodeId(id), Role::Mix { layer }, &mut rng);
            id += 1;
        }
    }
    for p in 0..u64::from(spec.providers) {
        node(NodeId(FIRST_PROVIDER + p), Role::Provider, &mut rng);
    }
    let mut clients = Vec::new();
    for c in 0..u64::from(spec.clients) {
        let key = SecretKey::generate(&mut rng);
        let id = NodeId(FIRST_CLIENT + c);
        clients.push(ClientEntry {
            id,
            provider: NodeId(FIRST_PROVIDER + c % u64::from(spec.providers.max(1))),
            public_key: key.public_key(),
            session_key: SessionSecret::derive_from(&key).public(),
        });
        keys.clients.insert(id, key);
    }
    let written = Topology {
        network: network(spec)?,
        nodes,
        clients,
    }
    .to_toml();
    Ok(Generated {
        topology: Topology::from_toml(&written)?,
        keys,
    })
}

fn network(s: &NetworkSpec) -> Result<Network, TopologyError> {
    let params = Params::new(s.payload_bytes)
        .map_err(|e| TopologyError::new("network.payload_bytes", e.to_string()))?;
    let epochs = EpochSchedule::from_secs(s.epoch_start_s, s.epoch_s, s.epoch_grace_s)
        .map_err(|e| TopologyError::new("network.epoch_s", format!("{e:?}")))?;
    Ok(Network {
        params,
        layers: s.layers,
        mu_per_s: s.mu_per_s,
        lambda_payload_per_s: s.lambda_payload_per_s,
        lambda_loop_per_s: s.lambda_loop_per_s,
        lambda_drop_per_s: s.lambda_drop_per_s,
        lambda_mix_loop_per_s: s.lambda_mix_loop_per_s,
        poll_size: s.poll_size,
        poll_rate_per_s: s.poll_rate_per_s,
        epochs,
    })
}
