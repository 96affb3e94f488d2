//! The three roles of a Loopix network, each a sans-IO state machine behind one
//! [`crate::endpoint::Endpoint`]: the mix, the provider and the client, what only they use
//! (a mix's loops, a client's acknowledgements, a provider's inboxes, answer queue and
//! quotas, the Poisson rates cover traffic runs on), and one way to build any of them.
//!
//! One way to build any role: a [`RoleConfig`] (who, with which keys, within which limits)
//! and the topology say everything, and [`build`] returns the mix, provider or client the
//! topology makes of that id. `loopix node`, the clients, the simulator and the anonymity
//! harness all build their cores here, so a setting means the same everywhere.

pub mod acks;
pub mod answer_queue;
pub mod client;
pub mod client_quota;
pub mod cover_stash;
pub mod inbox;
pub mod loops;
pub mod mix;
pub mod provider;
pub mod rate;

use std::net::SocketAddr;

use loopix_crypto::{EpochSeed, NodeId, Processor, SecretKey, SessionSecret};

use crate::endpoint::{Endpoint, Transmit};
use crate::formats::codec::Codec;
use crate::network::link::{LinkError, Links};
use crate::network::topology::{Role, Topology};
use crate::pipeline::hop::HopLimits;
use crate::pipeline::timing_wheel::WheelConfigError;
use crate::roles::acks::AckConfig;
use crate::roles::client::Client;
use crate::roles::inbox::InboxStore;
use crate::roles::mix::Mix;
use crate::roles::provider::Provider;
use crate::session::HandshakeLimits;

/// The secrets a role holds.
pub enum RoleKeys {
    /// A node: its epoch seed (a Sphinx key per epoch) and its session key (links, and a
    /// provider's client sessions).
    Node {
        epoch_seed: EpochSeed,
        session_key: SessionSecret,
    },
    /// A client: its Sphinx key (its session key derives from it).
    Client(SecretKey),
}

impl RoleKeys {
    /// A node's keys, or `WrongRole(id)` for a client's.
    pub fn into_node(self, id: NodeId) -> Result<(EpochSeed, SessionSecret), BuildError> {
        match self {
            RoleKeys::Node {
                epoch_seed,
                session_key,
            } => Ok((epoch_seed, session_key)),
            RoleKeys::Client(_) => Err(BuildError::WrongRole(id)),
        }
    }
}

/// What any core needs besides the topology.
pub struct RoleConfig {
    pub id: NodeId,
    pub keys: RoleKeys,
    /// Seeds every random choice the core makes.
    pub seed: [u8; 32],
    /// Nodes: pools, replay filters, wheel.
    pub limits: HopLimits,
    /// Nodes: which of the node's shards this core is (in its link trailers), and how many
    /// the node runs (a mix's shards share its loop rate, each steering its own loops back
    /// to itself).
    pub shard: usize,
    pub shards: usize,
    /// Mixes: loops judged for the return fraction, and how long one may take before it
    /// counts as lost, µs.
    pub loop_window: usize,
    pub loop_grace_us: u64,
    /// Clients: fragments the send buffer holds before `send` refuses more (those waiting
    /// for their ack count too).
    pub max_buffered_fragments: usize,
    /// Clients: acknowledgements and retransmission ([`crate::roles::acks`]).
    pub acks: AckConfig,
    /// Clients: build cover packets ahead in batches ([`crate::roles::cover_stash`]);
    /// off, each is built as its tick comes.
    pub prebuild_cover: bool,
    /// Providers: how long a packet waits in an inbox for its client before it is deleted
    /// unread (counted as `inbox_expired`), µs.
    pub inbox_ttl_us: u64,
    /// Providers: how many handshakes they spend work on ([`HandshakeLimits`]).
    pub handshakes: HandshakeLimits,
}

impl RoleConfig {
    /// Node `id` with these keys and the default limits, on shard 0.
    pub fn node(id: NodeId, epoch_seed: EpochSeed, session_key: SessionSecret) -> Self {
        Self::with_keys(
            id,
            RoleKeys::Node {
                epoch_seed,
                session_key,
            },
        )
    }

    /// Client `id` with its key.
    pub fn client(id: NodeId, key: SecretKey) -> Self {
        Self::with_keys(id, RoleKeys::Client(key))
    }

    fn with_keys(id: NodeId, keys: RoleKeys) -> Self {
        Self {
            id,
            keys,
            seed: [0; 32],
            limits: HopLimits::default(),
            shard: 0,
            shards: 1,
            loop_window: 200,
            loop_grace_us: crate::roles::loops::LOOP_GRACE_US,
            max_buffered_fragments: 100_000,
            acks: AckConfig::OFF,
            prebuild_cover: true,
            inbox_ttl_us: crate::roles::inbox::DEFAULT_INBOX_TTL_US,
            handshakes: HandshakeLimits::default(),
        }
    }

    /// The same, with these handshake limits (providers).
    pub fn handshake_limits(self, handshakes: HandshakeLimits) -> Self {
        Self { handshakes, ..self }
    }

    /// The same, with every random choice seeded from `seed`.
    pub fn seeded(self, seed: [u8; 32]) -> Self {
        Self { seed, ..self }
    }

    /// The same, within `limits`.
    pub fn limited(self, limits: HopLimits) -> Self {
        Self { limits, ..self }
    }

    /// The same, keeping inbox packets for at most `inbox_ttl_us`.
    pub fn inbox_ttl(self, inbox_ttl_us: u64) -> Self {
        Self {
            inbox_ttl_us,
            ..self
        }
    }

    /// The same, as shard `shard` of a node running `shards`.
    pub fn on_shard(self, shard: usize, shards: usize) -> Self {
        Self {
            shard,
            shards: shards.max(1),
            ..self
        }
    }
}

/// Why a core could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// No node or client of the topology has this id.
    NotInTopology(NodeId),
    /// The id is another role's than the one asked for, or the keys are another role's.
    WrongRole(NodeId),
    /// The client's provider is not a provider of the topology with a session key.
    NoProvider(NodeId),
    /// The topology lists another session key for this node than the one it holds.
    SessionKeyMismatch(NodeId),
    Wheel(WheelConfigError),
    Link(LinkError),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInTopology(a) => write!(f, "{} is not in the topology", a.0),
            Self::WrongRole(a) => write!(f, "{} has another role, or keys for another", a.0),
            Self::NoProvider(a) => {
                write!(
                    f,
                    "{} is not a provider of the topology with a session key",
                    a.0
                )
            }
            Self::SessionKeyMismatch(a) => write!(
                f,
                "the topology's session_key for node {} is not the public half of its key",
                a.0
            ),
            Self::Wheel(e) => write!(f, "timing wheel: {e:?}"),
            Self::Link(e) => write!(f, "links: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Node `id`'s links (holding `key`, from `shard`) as codec `C` wants them: tagged, or
/// under a simulation's stand-in codec framed only (see [`Codec::AUTHENTICATES_LINKS`]).
pub fn links_for<C: Codec>(
    topology: &Topology,
    id: NodeId,
    key: &SessionSecret,
    shard: usize,
) -> Result<Links, BuildError> {
    let links = Links::new(topology, id, key, shard).map_err(BuildError::Link)?;
    Ok(if C::AUTHENTICATES_LINKS {
        links
    } else {
        links.unauthenticated()
    })
}

/// Any role, built by [`build`].
pub enum AnyRole<S: InboxStore, C: Codec = Processor> {
    Mix(Box<Mix<C>>),
    Provider(Box<Provider<S, C>>),
    Client(Box<Client<C>>),
}

/// The role the topology gives `config.id`, built from `config` (a provider stores into
/// the inbox `inbox` makes).
pub fn build<S: InboxStore, C: Codec>(
    topology: &Topology,
    config: RoleConfig,
    inbox: impl FnOnce() -> S,
) -> Result<AnyRole<S, C>, BuildError> {
    let id = config.id;
    if topology.client(id).is_some() {
        return Client::new(topology, config).map(|c| AnyRole::Client(Box::new(c)));
    }
    match topology.node(id).map(|n| n.role) {
        Some(Role::Mix { .. }) => Mix::new(topology, config).map(|m| AnyRole::Mix(Box::new(m))),
        Some(Role::Provider) => {
            Provider::new(topology, config, inbox()).map(|p| AnyRole::Provider(Box::new(p)))
        }
        None => Err(BuildError::NotInTopology(id)),
    }
}

impl<S: InboxStore, C: Codec> AnyRole<S, C> {
    /// The role as an endpoint.
    pub fn endpoint(&mut self) -> &mut dyn Endpoint {
        match self {
            AnyRole::Mix(m) => m.as_mut(),
            AnyRole::Provider(p) => p.as_mut(),
            AnyRole::Client(c) => c.as_mut(),
        }
    }

    fn endpoint_ref(&self) -> &dyn Endpoint {
        match self {
            AnyRole::Mix(m) => m.as_ref(),
            AnyRole::Provider(p) => p.as_ref(),
            AnyRole::Client(c) => c.as_ref(),
        }
    }
}

impl<S: InboxStore, C: Codec> Endpoint for AnyRole<S, C> {
    fn id(&self) -> NodeId {
        self.endpoint_ref().id()
    }
    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]) {
        self.endpoint().handle_datagram(now_us, from, bytes);
    }
    fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        self.endpoint().handle_datagrams(now_us, datagrams);
    }
    fn handle_timeout(&mut self, now_us: u64) {
        self.endpoint().handle_timeout(now_us);
    }
    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        self.endpoint().poll_transmit(now_us, buf)
    }
    fn poll_timeout(&self) -> Option<u64> {
        self.endpoint_ref().poll_timeout()
    }
    fn max_datagram_len(&self) -> usize {
        self.endpoint_ref().max_datagram_len()
    }

    fn held(&self) -> usize {
        self.endpoint_ref().held()
    }

    crate::endpoint::forward_driver_methods!(self => self.endpoint(), self.endpoint_ref());
}
