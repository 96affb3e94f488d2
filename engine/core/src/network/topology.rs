//! The directory: network parameters and every node and client, loaded from TOML.
//!
//! All parties of a network load the same file. It is parsed once into typed values
//! ("parse, don't validate") and every problem is reported with the field it is in,
//! e.g. `nodes[3].layer: a mix's layer must be in 1..=3`.
//!
//! ```toml
//! [network]
//! payload_bytes = 2048
//! layers = 3
//! mu_per_s = 20.0              # µ: mean per-hop delay is 1/µ seconds
//! lambda_payload_per_s = 2.0   # λP, per client
//! lambda_loop_per_s = 2.0      # λL, per client
//! lambda_drop_per_s = 2.0      # λD, per client
//! lambda_mix_loop_per_s = 2.0  # λM, per mix
//! poll_size = 4                # N: packets in every poll answer
//! poll_rate_per_s = 1.0        # how often each client polls
//! epoch_s = 1200               # key epochs: length, seconds
//! epoch_start = 0              # unix time (s) at which epoch 0 starts
//! epoch_grace_s = 60           # a key is in use this long before and after its epoch
//!
//! [[nodes]]
//! id = 1
//! role = "mix"                 # or "provider" (which has no layer)
//! layer = 1
//! address = "127.0.0.1:9001"
//! first_epoch = 1474000        # the epoch of epoch_keys[0]; the rest follow in order
//! epoch_keys = ["<64 hex digits>", "<64 hex digits>"]
//! session_key = "<64 hex digits>"  # X25519, for client sessions (providers must have one)
//!
//! [[clients]]
//! id = 1001
//! provider = 100
//! public_key = "<64 hex digits>"   # its Sphinx key: packets for it are built to this
//! session_key = "<64 hex digits>"  # X25519: how it authenticates to its provider
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use loopix_crypto::{Command, EpochSeed, Hop, KeyPhase, NodeId, Params, PublicKey, SessionPublic};
use serde::Deserialize;

use crate::network::epoch::{EpochSchedule, ScheduleError};

/// A validated network description.
#[derive(Clone, Debug)]
pub struct Topology {
    pub network: Network,
    pub nodes: Vec<NodeEntry>,
    pub clients: Vec<ClientEntry>,
}

/// Network-wide parameters (rates per second; a rate of 0 turns that stream off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    pub params: Params,
    pub layers: u8,
    pub mu_per_s: f64,
    pub lambda_payload_per_s: f64,
    pub lambda_loop_per_s: f64,
    pub lambda_drop_per_s: f64,
    pub lambda_mix_loop_per_s: f64,
    pub poll_size: u16,
    pub poll_rate_per_s: f64,
    /// When each node key is in use.
    pub epochs: EpochSchedule,
}

/// The share of honest per-hop delays allowed to exceed [`Network::delay_horizon_us`].
pub const HONEST_DELAY_TAIL: f64 = 1e-9;

impl Network {
    /// The longest per-hop delay a node accepts: the delay an honest sender, drawing
    /// Exp(µ), exceeds with probability [`HONEST_DELAY_TAIL`] (20.7 / µ seconds). Senders
    /// never ask for more (their draws are capped there), so only a packet built to hold a
    /// node's memory for long asks for more, and it is dropped as `horizon`.
    pub fn delay_horizon_us(&self) -> u64 {
        (-HONEST_DELAY_TAIL.ln() / self.mu_per_s * 1e6).ceil() as u64
    }
}

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A mix in layer `1..=layers`.
    Mix { layer: u8 },
    /// A provider: the door in and out for its clients.
    Provider,
}

impl std::fmt::Display for Role {
    /// `mix, layer 2` or `provider`: how logs, status reports and `--check` name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mix { layer } => write!(f, "mix, layer {layer}"),
            Self::Provider => f.write_str("provider"),
        }
    }
}

/// One mix or provider.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub id: NodeId,
    pub role: Role,
    pub address: SocketAddr,
    /// The node's public key for each epoch it has published.
    pub epoch_keys: EpochKeys,
    /// The node's long-term X25519 key for client sessions (every provider has one).
    pub session_key: Option<SessionPublic>,
}

/// A node's public keys for consecutive epochs, published ahead so that senders can build
/// packets across a boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochKeys {
    first: u64,
    keys: Vec<PublicKey>,
}

impl EpochKeys {
    /// The public keys of `count` epochs from `first`, derived from `seed` (none before
    /// the seed's own epoch: those are gone).
    pub fn derive(seed: &EpochSeed, first: u64, count: u32) -> Self {
        let first = first.max(seed.epoch());
        let keys = (first..first + u64::from(count))
            .filter_map(|e| seed.secret_key(e))
            .map(|k| k.public_key())
            .collect();
        Self::new(first, keys)
    }

    /// Keys for epochs `first`, `first + 1`, ...
    pub fn new(first: u64, keys: Vec<PublicKey>) -> Self {
        Self { first, keys }
    }

    /// The key of `epoch`, if published.
    pub fn get(&self, epoch: u64) -> Option<PublicKey> {
        let i = usize::try_from(epoch.checked_sub(self.first)?).ok()?;
        self.keys.get(i).copied()
    }

    /// A path hop under the key of `epoch`, with that epoch's phase, if published.
    pub fn hop(&self, epoch: u64, command: Command) -> Option<Hop> {
        self.get(epoch).map(|key| Hop {
            key,
            phase: KeyPhase::of_epoch(epoch),
            command,
        })
    }

    /// The first epoch with a key.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Every published (epoch, key), in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, PublicKey)> + '_ {
        (self.first..).zip(self.keys.iter().copied())
    }
}

/// One client, registered at one provider.
#[derive(Clone, Copy, Debug)]
pub struct ClientEntry {
    pub id: NodeId,
    pub provider: NodeId,
    /// The key packets for this client are built to (its Sphinx key).
    pub public_key: PublicKey,
    /// The X25519 key it authenticates to its provider with.
    pub session_key: SessionPublic,
}

/// A topology problem, naming the field it is in.
pub type TopologyError = crate::field_error::FieldError;

pub(crate) fn err(field: impl Into<String>, problem: impl Into<String>) -> TopologyError {
    TopologyError::new(field, problem)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    network: RawNetwork,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    clients: Vec<RawClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(default = "default_payload_bytes")]
    payload_bytes: usize,
    layers: u8,
    mu_per_s: f64,
    lambda_payload_per_s: f64,
    lambda_loop_per_s: f64,
    lambda_drop_per_s: f64,
    lambda_mix_loop_per_s: f64,
    poll_size: u16,
    poll_rate_per_s: f64,
    #[serde(default = "default_epoch_s")]
    epoch_s: u64,
    #[serde(default)]
    epoch_start: u64,
    #[serde(default = "default_epoch_grace_s")]
    epoch_grace_s: u64,
}

/// `epoch_s` when a topology leaves it out. Twenty minutes, as Katzenpost: long enough that
/// the two keys live around a boundary are a small share of the time, short enough that a
/// seized key opens little.
pub const DEFAULT_EPOCH_S: u64 = 1200;

/// `epoch_grace_s` when a topology leaves it out. See [`crate::network::epoch`] for what
/// the grace must cover.
pub const DEFAULT_EPOCH_GRACE_S: u64 = 60;

fn default_epoch_s() -> u64 {
    DEFAULT_EPOCH_S
}

fn default_epoch_grace_s() -> u64 {
    DEFAULT_EPOCH_GRACE_S
}

fn default_payload_bytes() -> usize {
    loopix_crypto::DEFAULT_PAYLOAD_BYTES
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u64,
    role: String,
    layer: Option<u8>,
    address: String,
    first_epoch: u64,
    epoch_keys: Vec<String>,
    session_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    id: u64,
    provider: u64,
    public_key: String,
    session_key: String,
}

/// Most layers a path can cross: the path also needs two providers and the recipient.
pub const MAX_LAYERS: u8 = loopix_crypto::MAX_HOPS as u8 - 3;

impl Topology {
    /// Parses and validates a TOML directory.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let raw: RawTopology = crate::field_error::from_toml(text)?;
        let network = raw.network.validate()?;
        let nodes = raw
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| n.validate(&format!("nodes[{i}]"), network.layers))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = raw
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| c.validate(&format!("clients[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = Self {
            network,
            nodes,
            clients,
        };
        topology.check_references()?;
        Ok(topology)
    }

    /// Ids unique across nodes and clients, every client's provider a provider, every layer
    /// and at least one provider present.
    fn check_references(&self) -> Result<(), TopologyError> {
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeMap::new();
        let mut keys = BTreeMap::new();
        let mut sessions = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(k) = n.session_key
                && let Some(other) = sessions.insert(k, format!("nodes[{i}]"))
            {
                return Err(err(
                    format!("nodes[{i}].session_key"),
                    format!("the same key as {other}"),
                ));
            }
            if !ids.insert(n.id) {
                return Err(err(
                    format!("nodes[{i}].id"),
                    format!("id {} is used twice", n.id.0),
                ));
            }
            if let Some(j) = addresses.insert(n.address, i) {
                return Err(err(
                    format!("nodes[{i}].address"),
                    format!("{} is also nodes[{j}]'s address", n.address),
                ));
            }
            for (k, (_, key)) in n.epoch_keys.iter().enumerate() {
                if let Some(other) =
                    keys.insert(key.to_bytes(), format!("nodes[{i}].epoch_keys[{k}]"))
                {
                    return Err(err(
                        format!("nodes[{i}].epoch_keys[{k}]"),
                        format!("the same key as {other}"),
                    ));
                }
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(other) = keys.insert(c.public_key.to_bytes(), format!("clients[{i}]")) {
                return Err(err(
                    format!("clients[{i}].public_key"),
                    format!("the same key as {other}"),
                ));
            }
            if let Some(other) = sessions.insert(c.session_key, format!("clients[{i}]")) {
                return Err(err(
                    format!("clients[{i}].session_key"),
                    format!("the same key as {other}"),
                ));
            }
            if !ids.insert(c.id) {
                return Err(err(
                    format!("clients[{i}].id"),
                    format!("id {} is used twice", c.id.0),
                ));
            }
            if self.node(c.provider).map(|n| n.role) != Some(Role::Provider) {
                return Err(err(
                    format!("clients[{i}].provider"),
                    format!("{} is not a provider in this topology", c.provider.0),
                ));
            }
        }
        for layer in 1..=self.network.layers {
            if self.mixes_in_layer(layer).next().is_none() {
                return Err(err("nodes", format!("layer {layer} has no mix")));
            }
        }
        if self.providers().next().is_none() {
            return Err(err("nodes", "there is no provider"));
        }
        Ok(())
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The client with this id.
    pub fn client(&self, id: NodeId) -> Option<&ClientEntry> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// The mixes of one layer, in file order.
    pub fn mixes_in_layer(&self, layer: u8) -> impl Iterator<Item = &NodeEntry> {
        self.nodes
            .iter()
            .filter(move |n| n.role == Role::Mix { layer })
    }

    /// The providers, in file order.
    pub fn providers(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.iter().filter(|n| n.role == Role::Provider)
    }

    /// The clients registered at `provider`.
    pub fn clients_of(&self, provider: NodeId) -> impl Iterator<Item = &ClientEntry> {
        self.clients.iter().filter(move |c| c.provider == provider)
    }

    /// Every client's public key by id.
    pub fn client_keys(&self) -> BTreeMap<NodeId, PublicKey> {
        self.clients.iter().map(|c| (c.id, c.public_key)).collect()
    }
}

impl Topology {
    /// The topology in the TOML format [`Topology::from_toml`] reads: parsing the text
    /// gives this topology back. A directory authority writes its documents' bodies so,
    /// and every generated network (the testnet's, the simulator's) is written by it.
    pub fn to_toml(&self) -> String {
        use std::fmt::Write;
        let mut out = self.network.to_toml();
        for node in &self.nodes {
            let _ = write!(out, "\n[[nodes]]\nid = {}\n", node.id.0);
            match node.role {
                Role::Mix { layer } => {
                    let _ = write!(out, "role = \"mix\"\nlayer = {layer}\n");
                }
                Role::Provider => out.push_str("role = \"provider\"\n"),
            }
            let _ = writeln!(out, "address = \"{}\"", node.address);
            out.push_str(&node_keys_toml(&node.epoch_keys, node.session_key));
        }
        for c in &self.clients {
            let _ = write!(
                out,
                "\n[[clients]]\nid = {}\nprovider = {}\n{}",
                c.id.0,
                c.provider.0,
                client_keys_toml(&c.public_key, &c.session_key)
            );
        }
        out
    }
}

impl Network {
    /// The `[network]` section of [`Topology::to_toml`].
    pub fn to_toml(&self) -> String {
        const S: u64 = 1_000_000;
        format!(
            "[network]\npayload_bytes = {}\nlayers = {}\nmu_per_s = {:?}\n\
             lambda_payload_per_s = {:?}\nlambda_loop_per_s = {:?}\nlambda_drop_per_s = {:?}\n\
             lambda_mix_loop_per_s = {:?}\npoll_size = {}\npoll_rate_per_s = {:?}\n\
             epoch_s = {}\nepoch_start = {}\nepoch_grace_s = {}\n",
            self.params.payload_bytes(),
            self.layers,
            self.mu_per_s,
            self.lambda_payload_per_s,
            self.lambda_loop_per_s,
            self.lambda_drop_per_s,
            self.lambda_mix_loop_per_s,
            self.poll_size,
            self.poll_rate_per_s,
            self.epochs.length_us / S,
            self.epochs.start_us / S,
            self.epochs.grace_us / S,
        )
    }
}

/// A node's key lines (`first_epoch`, `epoch_keys`, and `session_key` if it has one), as
/// [`Topology::to_toml`] writes them and `loopix keygen` prints them to paste.
pub fn node_keys_toml(keys: &EpochKeys, session: Option<SessionPublic>) -> String {
    let hexed: Vec<String> = keys
        .iter()
        .map(|(_, k)| format!("\"{}\"", hex::encode(k.to_bytes())))
        .collect();
    let mut out = format!(
        "first_epoch = {}\nepoch_keys = [{}]\n",
        keys.first(),
        hexed.join(", ")
    );
    if let Some(k) = session {
        out += &format!("session_key = \"{}\"\n", hex::encode(k.0));
    }
    out
}

/// A client's key lines (`public_key`, `session_key`), as [`Topology::to_toml`] writes
/// them and `loopix keygen` prints them to paste.
pub fn client_keys_toml(public_key: &PublicKey, session_key: &SessionPublic) -> String {
    format!(
        "public_key = \"{}\"\nsession_key = \"{}\"\n",
        hex::encode(public_key.to_bytes()),
        hex::encode(session_key.0)
    )
}

impl RawNetwork {
    pub(crate) fn validate(&self) -> Result<Network, TopologyError> {
        let params = Params::new(self.payload_bytes)
            .map_err(|e| err("network.payload_bytes", e.to_string()))?;
        if !(1..=MAX_LAYERS).contains(&self.layers) {
            return Err(err(
                "network.layers",
                format!("must be in 1..={MAX_LAYERS}"),
            ));
        }
        positive("network.mu_per_s", self.mu_per_s)?;
        for (field, rate) in [
            ("network.lambda_payload_per_s", self.lambda_payload_per_s),
            ("network.lambda_loop_per_s", self.lambda_loop_per_s),
            ("network.lambda_drop_per_s", self.lambda_drop_per_s),
            ("network.lambda_mix_loop_per_s", self.lambda_mix_loop_per_s),
            ("network.poll_rate_per_s", self.poll_rate_per_s),
        ] {
            non_negative(field, rate)?;
        }
        if !(1..=crate::formats::wire::MAX_POLL_SIZE).contains(&self.poll_size) {
            let max = crate::formats::wire::MAX_POLL_SIZE;
            return Err(err("network.poll_size", format!("must be in 1..={max}")));
        }
        let epochs = EpochSchedule::from_secs(self.epoch_start, self.epoch_s, self.epoch_grace_s)
            .map_err(|e| match e {
            ScheduleError::TooShort => err("network.epoch_s", "must be at least 1"),
            ScheduleError::GraceTooLong => err(
                "network.epoch_grace_s",
                "must be less than half of network.epoch_s",
            ),
        })?;
        Ok(Network {
            epochs,
            params,
            layers: self.layers,
            mu_per_s: self.mu_per_s,
            lambda_payload_per_s: self.lambda_payload_per_s,
            lambda_loop_per_s: self.lambda_loop_per_s,
            lambda_drop_per_s: self.lambda_drop_per_s,
            lambda_mix_loop_per_s: self.lambda_mix_loop_per_s,
            poll_size: self.poll_size,
            poll_rate_per_s: self.poll_rate_per_s,
        })
    }
}

fn positive(field: &str, v: f64) -> Result<(), TopologyError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(err(field, "must be a positive number"))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), TopologyError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(err(field, "must be a number >= 0"))
    }
}

impl RawNode {
    fn validate(&self, at: &str, layers: u8) -> Result<NodeEntry, TopologyError> {
        let role = parse_role(at, &self.role, self.layer, layers)?;
        let address = parse_address(&format!("{at}.address"), &self.address)?;
        if self.epoch_keys.is_empty() {
            return Err(err(
                format!("{at}.epoch_keys"),
                "a node needs at least one epoch key",
            ));
        }
        let keys = self
            .epoch_keys
            .iter()
            .enumerate()
            .map(|(i, k)| parse_public_key(&format!("{at}.epoch_keys[{i}]"), k))
            .collect::<Result<Vec<_>, _>>()?;
        let session_key = self
            .session_key
            .as_deref()
            .map(|k| parse_session_key(&format!("{at}.session_key"), k))
            .transpose()?;
        if role == Role::Provider && session_key.is_none() {
            return Err(err(
                format!("{at}.session_key"),
                "a provider needs a session key: its clients authenticate to it",
            ));
        }
        Ok(NodeEntry {
            id: NodeId(self.id),
            role,
            address,
            epoch_keys: EpochKeys::new(self.first_epoch, keys),
            session_key,
        })
    }
}

impl RawClient {
    pub(crate) fn validate(&self, at: &str) -> Result<ClientEntry, TopologyError> {
        let public_key = parse_public_key(&format!("{at}.public_key"), &self.public_key)?;
        let session_key = parse_session_key(&format!("{at}.session_key"), &self.session_key)?;
        Ok(ClientEntry {
            id: NodeId(self.id),
            provider: NodeId(self.provider),
            public_key,
            session_key,
        })
    }
}

/// A node's role from its `role` and `layer` fields (`at` names the node).
pub(crate) fn parse_role(
    at: &str,
    role: &str,
    layer: Option<u8>,
    layers: u8,
) -> Result<Role, TopologyError> {
    match (role, layer) {
        ("mix", Some(layer)) if (1..=layers).contains(&layer) => Ok(Role::Mix { layer }),
        ("mix", Some(_)) => Err(err(
            format!("{at}.layer"),
            format!("must be in 1..={layers}"),
        )),
        ("mix", None) => Err(err(format!("{at}.layer"), "a mix needs a layer")),
        ("provider", None) => Ok(Role::Provider),
        ("provider", Some(_)) => Err(err(format!("{at}.layer"), "a provider has no layer")),
        (other, _) => Err(err(
            format!("{at}.role"),
            format!("`{other}` is not a role; use `mix` or `provider`"),
        )),
    }
}

/// An `IP:port` field.
pub(crate) fn parse_address(field: &str, text: &str) -> Result<SocketAddr, TopologyError> {
    text.parse()
        .map_err(|_| err(field, "not an IP:port socket address"))
}

/// Parses 64 hex digits into a session (X25519) key; a key of small order, with which no
/// secret can be agreed ([`SessionPublic::is_weak`]), is refused.
pub fn parse_session_key(field: &str, text: &str) -> Result<SessionPublic, TopologyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| err(field, "must be 64 hex digits"))?;
    let key = SessionPublic(bytes);
    if key.is_weak() {
        return Err(err(
            field,
            "a small-order X25519 key: no secret can be agreed with it",
        ));
    }
    Ok(key)
}

/// Parses 64 hex digits into a public key.
pub fn parse_public_key(field: &str, text: &str) -> Result<PublicKey, TopologyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| err(field, "must be 64 hex digits"))?;
    PublicKey::from_bytes(bytes).map_err(|_| err(field, "not a valid public key"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use loopix_crypto::SecretKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn key(seed: u64) -> String {
        let pk = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(seed)).public_key();
        hex::encode(pk.to_bytes())
    }

    pub(crate) fn sample() -> String {
        format!(
            r#"
[network]
layers = 2
mu_per_s = 10.0
lambda_payload_per_s = 1.0
lambda_loop_per_s = 1.0
lambda_drop_per_s = 1.0
lambda_mix_loop_per_s = 1.0
poll_size = 4
poll_rate_per_s = 2.0

[[nodes]]
id = 1
role = "mix"
layer = 1
address = "127.0.0.1:9001"
first_epoch = 0
epoch_keys = ["{}"]

[[nodes]]
id = 2
role = "mix"
layer = 2
address = "127.0.0.1:9002"
first_epoch = 0
epoch_keys = ["{}"]

[[nodes]]
id = 100
role = "provider"
address = "127.0.0.1:9100"
first_epoch = 5
epoch_keys = ["{}", "{}"]
session_key = "{}"

[[clients]]
id = 1000
provider = 100
public_key = "{}"
session_key = "{}"
"#,
            key(1),
            key(2),
            key(3),
            key(5),
            "aa".repeat(32),
            key(4),
            "bb".repeat(32)
        )
    }

    #[test]
    fn a_valid_file_loads() {
        let t = Topology::from_toml(&sample()).unwrap();
        assert_eq!(t.network.layers, 2);
        assert_eq!(t.network.params, Params::default());
        assert_eq!(t.mixes_in_layer(2).count(), 1);
        assert_eq!(t.clients_of(NodeId(100)).count(), 1);
        assert_eq!(t.client_keys().len(), 1);
        let provider = &t.node(NodeId(100)).unwrap().epoch_keys;
        assert_eq!(provider.get(4), None);
        assert_eq!(
            provider.get(6).map(|k| hex::encode(k.to_bytes())),
            Some(key(5))
        );
        assert_eq!(provider.get(7), None);
        assert_eq!(t.network.epochs.length_us, 1_200_000_000, "the default");
    }

    fn error_of(edit: impl Fn(String) -> String) -> TopologyError {
        Topology::from_toml(&edit(sample())).expect_err("invalid")
    }

    #[test]
    fn errors_name_the_offending_field() {
        let cases = [
            ("layers = 2", "layers = 0".to_string(), "network.layers"),
            (
                "mu_per_s = 10.0",
                "mu_per_s = -1.0".into(),
                "network.mu_per_s",
            ),
            ("poll_size = 4", "poll_size = 0".into(), "network.poll_size"),
            (
                "poll_size = 4",
                "poll_size = 257".into(),
                "network.poll_size",
            ),
            ("layer = 2", "layer = 3".into(), "nodes[1].layer"),
            (
                "role = \"provider\"",
                "role = \"relay\"".into(),
                "nodes[2].role",
            ),
            ("127.0.0.1:9002", "localhost".into(), "nodes[1].address"),
            (&key(3), "abcd".into(), "nodes[2].epoch_keys[0]"),
            (
                "poll_rate_per_s = 2.0",
                "poll_rate_per_s = 2.0\nepoch_s = 60\nepoch_grace_s = 30".into(),
                "network.epoch_grace_s",
            ),
            (
                "provider = 100",
                "provider = 1".into(),
                "clients[0].provider",
            ),
            ("id = 2\n", "id = 1\n".into(), "nodes[1].id"),
            (
                "127.0.0.1:9002",
                "127.0.0.1:9001".into(),
                "nodes[1].address",
            ),
            (&key(2), key(1), "nodes[1].epoch_keys[0]"),
            (&key(4), key(5), "clients[0].public_key"),
            (
                "layers = 2",
                "layers = 2\npayload_bytes = 1".into(),
                "network.payload_bytes",
            ),
        ];
        for (from, to, field) in cases {
            assert_eq!(
                error_of(|s| s.replacen(from, &to, 1)).field,
                field,
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_unknown_fields_say_where() {
        let e = error_of(|s| s.replace("poll_size = 4", "poll_size = 4\nspeed = 3"));
        assert!(e.problem.contains("speed"), "{e}");
        let e = error_of(|s| s.replace("[network]", "[network"));
        assert!(e.problem.contains("line"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named_by_its_path() {
        let e = error_of(|s| s.replacen("epoch_keys", "# epoch_keys", 1));
        assert_eq!(e.field, "nodes[0]", "{e}");
        assert!(e.problem.contains("missing field `epoch_keys`"), "{e}");
        let e = error_of(|s| s.replacen("epoch_keys", "epoch_keyz", 1));
        assert_eq!(e.field, "nodes[0].epoch_keyz", "{e}");
        assert!(e.problem.starts_with("unknown field `epoch_keyz`"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        let e = error_of(|s| s.replace("mu_per_s = 10.0\n", ""));
        assert_eq!(e.field, "network", "{e}");
        assert!(e.problem.contains("missing field `mu_per_s`"), "{e}");
    }

    #[test]
    fn a_topology_written_out_reads_back_the_same() {
        let t = Topology::from_toml(&sample()).unwrap();
        let again = Topology::from_toml(&t.to_toml()).unwrap();
        assert_eq!(again.to_toml(), t.to_toml());
        assert_eq!(again.network, t.network);
        assert_eq!(again.nodes.len(), 3);
        for (a, b) in again.nodes.iter().zip(&t.nodes) {
            assert_eq!((a.id, a.role, a.address), (b.id, b.role, b.address));
            assert_eq!(
                (&a.epoch_keys, a.session_key),
                (&b.epoch_keys, b.session_key)
            );
        }
        let (a, b) = (again.clients[0], t.clients[0]);
        assert_eq!(
            (a.id, a.provider, a.public_key, a.session_key),
            (b.id, b.provider, b.public_key, b.session_key)
        );
    }

    #[test]
    fn a_layer_without_a_mix_is_refused() {
        let e = error_of(|s| s.replace("layer = 2", "layer = 1"));
        assert_eq!(e.to_string(), "nodes: layer 2 has no mix");
    }

    #[test]
    fn session_keys_a_provider_lacks_or_two_parties_share_are_refused() {
        let e = error_of(|s| s.replacen(&format!("session_key = \"{}\"", "aa".repeat(32)), "", 1));
        assert_eq!(e.field, "nodes[2].session_key", "{e}");
        let e = error_of(|s| s.replace(&"bb".repeat(32), &"aa".repeat(32)));
        assert_eq!(e.field, "clients[0].session_key", "{e}");
        assert!(e.problem.contains("nodes[2]"), "{e}");
        let e = error_of(|s| s.replace(&"bb".repeat(32), "zz"));
        assert_eq!(e.field, "clients[0].session_key", "{e}");
    }

    #[test]
    fn a_small_order_session_key_is_refused() {
        // A node's and a client's session key of order 8 (and the zero point).
        let small = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
        let e = error_of(|s| s.replace(&"aa".repeat(32), small));
        assert_eq!(e.field, "nodes[2].session_key", "{e}");
        assert!(e.problem.contains("small-order"), "{e}");
        let e = error_of(|s| s.replace(&"bb".repeat(32), &"00".repeat(32)));
        assert_eq!(e.field, "clients[0].session_key", "{e}");
    }
}
