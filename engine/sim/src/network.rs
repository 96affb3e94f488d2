//! Generated networks: keys from a seed and a topology in the real TOML format, parsed by
//! the real loader, so every simulated network is one a node could load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use loopix_core::topology::{Topology, TopologyError};
use loopix_crypto::{Address, SecretKey};
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
        }
    }
}

/// Ids: mixes from 1, providers from 1,000, clients from 10,000.
pub const FIRST_PROVIDER: u64 = 1_000;
/// See [`FIRST_PROVIDER`].
pub const FIRST_CLIENT: u64 = 10_000;

/// A generated network: its topology and every party's secret key.
pub struct Generated {
    pub topology: Topology,
    pub secrets: BTreeMap<Address, SecretKey>,
}

/// Generates keys from `seed` and the topology `spec` describes. Clients are spread over
/// providers round-robin; node `id` listens on `127.0.0.1:(20000 + id)` (the simulator
/// never binds them).
pub fn generate(spec: &NetworkSpec, seed: u64) -> Result<Generated, TopologyError> {
    let (toml, secrets) = generate_toml(spec, seed, |id| format!("127.0.0.1:{}", 20_000 + id.0));
    Ok(Generated {
        topology: Topology::from_toml(&toml)?,
        secrets,
    })
}

/// [`generate`]'s TOML text and keys, with node addresses from `address_of`.
pub fn generate_toml(
    spec: &NetworkSpec,
    seed: u64,
    address_of: impl Fn(Address) -> String,
) -> (String, BTreeMap<Address, SecretKey>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut secrets = BTreeMap::new();
    let mut key = |id: u64| {
        let sk = SecretKey::generate(&mut rng);
        let pk = hex::encode(sk.public_key().to_bytes());
        secrets.insert(Address(id), sk);
        pk
    };
    let mut toml = network_section(spec);
    let mut id = 1;
    for layer in 1..=spec.layers {
        for _ in 0..spec.mixes_per_layer {
            let pk = key(id);
            let _ = write!(
                toml,
                "\n[[nodes]]\nid = {id}\nrole = \"mix\"\nlayer = {layer}\naddress = \"{}\"\npublic_key = \"{pk}\"\n",
                address_of(Address(id))
            );
            id += 1;
        }
    }
    for p in 0..u64::from(spec.providers) {
        let pid = FIRST_PROVIDER + p;
        let pk = key(pid);
        let _ = write!(
            toml,
            "\n[[nodes]]\nid = {pid}\nrole = \"provider\"\naddress = \"{}\"\npublic_key = \"{pk}\"\n",
            address_of(Address(pid))
        );
    }
    for c in 0..u64::from(spec.clients) {
        let provider = FIRST_PROVIDER + c % u64::from(spec.providers.max(1));
        let pk = key(FIRST_CLIENT + c);
        let _ = write!(
            toml,
            "\n[[clients]]\nid = {}\nprovider = {provider}\npublic_key = \"{pk}\"\n",
            FIRST_CLIENT + c
        );
    }
    (toml, secrets)
}

fn network_section(s: &NetworkSpec) -> String {
    format!(
        "[network]\npayload_bytes = {}\nlayers = {}\nmu_per_s = {:?}\nlambda_payload_per_s = {:?}\n\
         lambda_loop_per_s = {:?}\nlambda_drop_per_s = {:?}\nlambda_mix_loop_per_s = {:?}\n\
         poll_size = {}\npoll_rate_per_s = {:?}\n",
        s.payload_bytes,
        s.layers,
        s.mu_per_s,
        s.lambda_payload_per_s,
        s.lambda_loop_per_s,
        s.lambda_drop_per_s,
        s.lambda_mix_loop_per_s,
        s.poll_size,
        s.poll_rate_per_s
    )
}
