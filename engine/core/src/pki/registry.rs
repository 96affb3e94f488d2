//! An authority's registry: the network's parameters and who may be in it, written by the
//! authority's operator (`loopix directory register` appends to it). A node is registered
//! with its role, its address and its identity key; only uploads signed by that key put
//! its epoch keys into a document. Clients are registered with their keys at their
//! provider.
//!
//! ```toml
//! [network]                 # as in a topology file
//! layers = 3
//! mu_per_s = 20.0
//! # ... the other network fields
//!
//! [[nodes]]
//! id = 1
//! role = "mix"
//! layer = 1
//! address = "10.0.0.1:9001"
//! identity_key = "<64 hex digits>"   # Ed25519: `loopix keygen` prints it
//!
//! [[clients]]               # as in a topology file
//! id = 1001
//! provider = 100
//! public_key = "<64 hex digits>"
//! session_key = "<64 hex digits>"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use loopix_crypto::{IdentityPublic, NodeId};
use serde::Deserialize;

use crate::network::topology::{
    ClientEntry, Network, RawClient, RawNetwork, Role, TopologyError, err, parse_address,
    parse_role,
};

/// A validated registry.
#[derive(Clone, Debug)]
pub struct Registry {
    pub network: Network,
    pub nodes: Vec<RegisteredNode>,
    pub clients: Vec<ClientEntry>,
}

/// A node its operator registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisteredNode {
    pub id: NodeId,
    pub role: Role,
    pub address: SocketAddr,
    pub identity: IdentityPublic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    network: RawNetwork,
    #[serde(default)]
    nodes: Vec<RawRegistered>,
    #[serde(default)]
    clients: Vec<RawClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistered {
    id: u64,
    role: String,
    layer: Option<u8>,
    address: String,
    identity_key: String,
}

/// Parses 64 hex digits into an identity (Ed25519) key.
pub fn parse_identity_key(field: &str, text: &str) -> Result<IdentityPublic, TopologyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| err(field, "must be 64 hex digits"))?;
    IdentityPublic::from_bytes(bytes).map_err(|e| err(field, e.to_string()))
}

/// The registry that lists `topology`'s network, nodes and clients, each node under its
/// identity key from `identities` (nodes without one are left out): how a test network
/// made from a topology registers everything at its authority.
pub fn registry_toml(
    topology: &crate::network::topology::Topology,
    identities: &BTreeMap<NodeId, IdentityPublic>,
) -> String {
    use std::fmt::Write;
    let text = topology.to_toml();
    let nodes_at = text.find("\n[[nodes]]").unwrap_or(text.len());
    let mut out = format!("{}\n", &text[..nodes_at]);
    for n in &topology.nodes {
        let Some(identity) = identities.get(&n.id) else {
            continue;
        };
        let (role, layer) = match n.role {
            Role::Mix { layer } => ("mix", format!("layer = {layer}\n")),
            Role::Provider => ("provider", String::new()),
        };
        let _ = write!(
            out,
            "\n[[nodes]]\nid = {}\nrole = \"{role}\"\n{layer}address = \"{}\"\nidentity_key = \"{}\"\n",
            n.id.0,
            n.address,
            hex::encode(identity.to_bytes())
        );
    }
    if let Some(at) = text.find("\n[[clients]]") {
        out.push_str(&text[at..]);
    }
    out
}

impl Registry {
    /// Parses and validates a registry file.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let raw: RawRegistry = crate::field_error::from_toml(text)?;
        let network = raw.network.validate()?;
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeMap::new();
        let mut identities = BTreeMap::new();
        let mut nodes = Vec::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            let node = RegisteredNode {
                id: NodeId(n.id),
                role: parse_role(&at, &n.role, n.layer, network.layers)?,
                address: parse_address(&format!("{at}.address"), &n.address)?,
                identity: parse_identity_key(&format!("{at}.identity_key"), &n.identity_key)?,
            };
            // What the document publishes is where others send: a wildcard or port 0 is
            // where a node listens, never where it can be reached.
            if node.address.ip().is_unspecified() || node.address.port() == 0 {
                return Err(err(
                    format!("{at}.address"),
                    format!(
                        "{} is not an address others can send to; give the node's reachable IP and port",
                        node.address
                    ),
                ));
            }
            if !ids.insert(node.id) {
                return Err(err(
                    format!("{at}.id"),
                    format!("id {} is used twice", n.id),
                ));
            }
            if let Some(j) = addresses.insert(node.address, i) {
                return Err(err(
                    format!("{at}.address"),
                    format!("{} is also nodes[{j}]'s address", node.address),
                ));
            }
            if let Some(j) = identities.insert(node.identity, i) {
                return Err(err(
                    format!("{at}.identity_key"),
                    format!("the same key as nodes[{j}]"),
                ));
            }
            nodes.push(node);
        }
        let mut clients = Vec::new();
        let (mut client_keys, mut session_keys) = (BTreeMap::new(), BTreeMap::new());
        for (i, c) in raw.clients.iter().enumerate() {
            let at = format!("clients[{i}]");
            let client = c.validate(&at)?;
            if let Some(j) = client_keys.insert(client.public_key.to_bytes(), i) {
                return Err(err(
                    format!("{at}.public_key"),
                    format!("the same key as clients[{j}]"),
                ));
            }
            if let Some(j) = session_keys.insert(client.session_key, i) {
                return Err(err(
                    format!("{at}.session_key"),
                    format!("the same key as clients[{j}]"),
                ));
            }
            if !ids.insert(client.id) {
                return Err(err(
                    format!("{at}.id"),
                    format!("id {} is used twice", client.id.0),
                ));
            }
            if !nodes
                .iter()
                .any(|n| n.id == client.provider && n.role == Role::Provider)
            {
                return Err(err(
                    format!("{at}.provider"),
                    format!("{} is not a registered provider", client.provider.0),
                ));
            }
            clients.push(client);
        }
        Ok(Self {
            network,
            nodes,
            clients,
        })
    }

    /// The registered node with this id.
    pub fn node(&self, id: NodeId) -> Option<&RegisteredNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use loopix_crypto::IdentitySecret;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// A registry of one mix per layer (ids 1, 2), one provider (100), one client (1000),
    /// and the nodes' identity secrets.
    pub(crate) fn sample() -> (String, BTreeMap<NodeId, IdentitySecret>) {
        let topology = crate::network::topology::Topology::from_toml(
            &crate::network::topology::tests::sample(),
        )
        .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let secrets: BTreeMap<_, _> = topology
            .nodes
            .iter()
            .map(|n| (n.id, IdentitySecret::generate(&mut rng)))
            .collect();
        let publics = secrets.iter().map(|(&id, k)| (id, k.public())).collect();
        (registry_toml(&topology, &publics), secrets)
    }

    #[test]
    fn a_registry_loads_and_its_errors_name_the_field() {
        let (text, secrets) = sample();
        let r = Registry::from_toml(&text).unwrap();
        assert_eq!(r.nodes.len(), 3);
        assert_eq!(
            r.node(NodeId(100)).unwrap().identity,
            secrets[&NodeId(100)].public()
        );
        assert_eq!(r.clients.len(), 1);
        let key1 = hex::encode(secrets[&NodeId(1)].public().to_bytes());
        let key2 = hex::encode(secrets[&NodeId(2)].public().to_bytes());
        for (from, to, field) in [
            (key1.as_str(), "abcd".to_string(), "nodes[0].identity_key"),
            (key2.as_str(), key1.clone(), "nodes[1].identity_key"),
            (
                "provider = 100",
                "provider = 1".to_string(),
                "clients[0].provider",
            ),
            ("layer = 2", "layer = 9".to_string(), "nodes[1].layer"),
            ("127.0.0.1:", "0.0.0.0:".to_string(), "nodes[0].address"),
        ] {
            let e = Registry::from_toml(&text.replacen(from, &to, 1)).unwrap_err();
            assert_eq!(e.field, field, "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn a_client_with_another_clients_keys_is_refused() {
        let (text, _) = sample();
        let at = text.find("[[clients]]").unwrap();
        let first = text[at..].to_string();
        let twin = first.replacen("id = 1000", "id = 1002", 1);
        assert_ne!(twin, first, "the sample's client is 1000");
        let e = Registry::from_toml(&format!("{text}\n{twin}")).unwrap_err();
        assert_eq!(e.field, "clients[1].public_key", "{e}");
        assert!(e.problem.contains("clients[0]"), "{e}");
    }
}
