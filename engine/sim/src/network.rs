//! Generated networks: keys from a seed and a topology in the real TOML format, parsed by
//! the real loader, so every simulated network is one a node could load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use loopix_core::network::topology::{Topology, TopologyError};
use loopix_crypto::{EpochSeed, NodeId, SecretKey, SessionSecret};
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
    let (toml, keys) = generate_toml(spec, seed, |id| format!("127.0.0.1:{}", 20_000 + id.0));
    Ok(Generated {
        topology: Topology::from_toml(&toml)?,
        keys,
    })
}

/// [`generate`]'s TOML text and keys, with node addresses from `address_of`.
pub fn generate_toml(
    spec: &NetworkSpec,
    seed: u64,
    address_of: impl Fn(NodeId) -> String,
) -> (String, Keys) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut keys = Keys::default();
    let mut node_keys = |id: u64, rng: &mut ChaCha20Rng| {
        let seed = EpochSeed::generate(rng, spec.first_epoch);
        let session = SessionSecret::generate(rng);
        let line = format!(
            "{}session_key = \"{}\"\n",
            epoch_keys_toml(&seed, spec.first_epoch, spec.published_epochs),
            hex::encode(session.public().0)
        );
        keys.nodes.insert(NodeId(id), seed);
        keys.sessions.insert(NodeId(id), session);
        line
    };
    let mut clients = BTreeMap::new();
    let mut key = |id: u64, rng: &mut ChaCha20Rng| {
        let sk = SecretKey::generate(rng);
        let line = client_keys_toml(&sk);
        clients.insert(NodeId(id), sk);
        line
    };
    let mut toml = network_section(spec);
    let mut id = 1;
    for layer in 1..=spec.layers {
        for _ in 0..spec.mixes_per_layer {
            let keys = node_keys(id, &mut rng);
            let _ = write!(
                toml,
                "\n[[nodes]]\nid = {id}\nrole = \"mix\"\nlayer = {layer}\naddress = \"{}\"\n{keys}",
                address_of(NodeId(id))
            );
            id += 1;
        }
    }
    for p in 0..u64::from(spec.providers) {
        let pid = FIRST_PROVIDER + p;
        let keys = node_keys(pid, &mut rng);
        let _ = write!(
            toml,
            "\n[[nodes]]\nid = {pid}\nrole = \"provider\"\naddress = \"{}\"\n{keys}",
            address_of(NodeId(pid))
        );
    }
    for c in 0..u64::from(spec.clients) {
        let provider = FIRST_PROVIDER + c % u64::from(spec.providers.max(1));
        let keys = key(FIRST_CLIENT + c, &mut rng);
        let _ = write!(
            toml,
            "\n[[clients]]\nid = {}\nprovider = {provider}\n{keys}",
            FIRST_CLIENT + c
        );
    }
    keys.clients = clients;
    (toml, keys)
}

/// The topology lines of a client's keys: its Sphinx key and its session key.
pub fn client_keys_toml(key: &SecretKey) -> String {
    format!(
        "public_key = \"{}\"\nsession_key = \"{}\"\n",
        hex::encode(key.public_key().to_bytes()),
        hex::encode(SessionSecret::derive_from(key).public().0)
    )
}

/// The topology lines that publish `count` epoch keys from `first` (`first_epoch` and
/// `epoch_keys`), derived from `seed`.
pub fn epoch_keys_toml(seed: &EpochSeed, first: u64, count: u32) -> String {
    let keys: Vec<String> = (first..first + u64::from(count))
        .filter_map(|e| seed.secret_key(e))
        .map(|k| format!("\"{}\"", hex::encode(k.public_key().to_bytes())))
        .collect();
    format!(
        "first_epoch = {first}\nepoch_keys = [{}]\n",
        keys.join(", ")
    )
}

fn network_section(s: &NetworkSpec) -> String {
    format!(
        "[network]\npayload_bytes = {}\nlayers = {}\nmu_per_s = {:?}\nlambda_payload_per_s = {:?}\n\
         lambda_loop_per_s = {:?}\nlambda_drop_per_s = {:?}\nlambda_mix_loop_per_s = {:?}\n\
         poll_size = {}\npoll_rate_per_s = {:?}\nepoch_s = {}\nepoch_start = {}\nepoch_grace_s = {}\n",
        s.payload_bytes,
        s.layers,
        s.mu_per_s,
        s.lambda_payload_per_s,
        s.lambda_loop_per_s,
        s.lambda_drop_per_s,
        s.lambda_mix_loop_per_s,
        s.poll_size,
        s.poll_rate_per_s,
        s.epoch_s,
        s.epoch_start_s,
        s.epoch_grace_s
    )
}
