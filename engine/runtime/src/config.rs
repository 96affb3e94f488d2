//! `node.toml`: what one `loopix node` process runs. Paths are relative to the file's own
//! directory. Every problem is reported with its field, e.g. `shards: must be in 1..=64`.
//!
//! ```toml
//! topology = "topology.toml"   # or a [directory] to fetch it from (below)
//! id = 1                       # this node's id in the topology
//! key_file = "node-1.key"      # from `loopix keygen --epochs` (mode 0600)
//! shards = 2                   # one pinned executor each
//! cpus = [0, 1]                # optional: shard i runs on cpus[i % len]
//! listen = "127.0.0.1:9001"    # optional: defaults to the topology's address
//! metrics = "127.0.0.1:9101"   # optional: Prometheus text on GET /metrics
//! grace_ms = 2000              # on SIGTERM: how long the wheel may still send
//! spin_us = 0                  # busy-poll this long before a shard sleeps (dedicated cores)
//! backend = "auto"             # "io_uring", "portable", or "auto": io_uring where the host
//!                              # allows it, else portable (saying why)
//! inbox_path = "inbox.redb"    # providers: the durable inbox store
//! replay_dir = "replay-1"      # replay journals (default: replay-<id> beside this file)
//! replay_sync_ms = 1000        # how often the journals are synced to disk
//!
//! [limits]                     # all optional
//! pool_packets = 65536         # packets held at once, per shard
//! max_packets_per_s = 40000    # most a shard can unwrap: sizes its replay filters
//!                              # (left out: measured on this CPU at start)
//! measure_unwrap_rate = true   # false: skip that 150 ms measurement (under a simulator's
//!                              # clock it measures nothing); max_packets_per_s then rules
//! journal_tags = 65536         # replay hashes a shard buffers between two writes
//! slot_us = 100                # timing wheel slot
//! gather_us = 1000             # longest a packet waits for others to fill a run of vector
//!                              # lanes (its delay counts from arrival; 0: never; <= 10000)
//! horizon_ms = 600000          # longest delay accepted
//! max_socket_wait_ms = 100     # datagrams that waited longer in the socket are shed (0: never)
//! inbox_per_client = 10000     # providers: packets kept per client
//! inbox_total = 1000000        # providers: packets kept in all (the disk: ~2.4 GB at 2 KB)
//! inbox_ttl_s = 604800         # providers: a packet no client collected is deleted after this
//! store_queue = 65536          # providers: packets a shard may have waiting for the store's
//!                              # writer; beyond it stores are refused (store_busy), never waited on
//! handshake_load_per_s = 500   # providers: handshakes a second (per shard) beyond which
//!                              # initiations from unproven addresses get a cookie first
//! handshake_per_source_per_s = 20  # providers, under load: handshakes a second per address
//!
//! [directory]                  # instead of `topology`: follow directory authorities
//! authorities = [{ address = "10.0.0.250:8000", key = "<64 hex digits>" }]
//! threshold = 2                # how many of them must have signed a document; left out,
//!                              # more than half of them. Half or fewer is refused unless
//! allow_minority_threshold = false  # is true: that many authorities could forge the network
//! wait_s = 600                 # at start: how long to wait for a document listing this node
//!
//! [faults]                     # tests and demos only: what a lossy, slow link would do
//! drop_fraction = 0.05         # share of outgoing datagrams dropped (counted)
//! extra_delay_ms = 20          # every other outgoing datagram held this much longer
//! max_held = 16384             # datagrams held at once; more are dropped (counted)
//! store_commit_delay_ms = 0    # providers: every store commit takes this much longer (a slow disk)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use loopix_core::network::topology::{NodeEntry, Role, Topology};
use loopix_core::pipeline::faults::FaultConfig;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::pipeline::timing_wheel::WheelConfig;
use loopix_core::pki::document::Threshold;
use loopix_core::pki::registry::parse_identity_key;
use loopix_core::pki::take::{Refused, network_changes};
use loopix_core::roles::inbox::InboxLimits;
use loopix_core::session::HandshakeLimits;
use loopix_crypto::{EpochSeed, NodeId};

use crate::directory_client::{AuthorityAddress, DirectoryConfig};
use serde::Deserialize;

/// A validated node configuration, with its topology loaded.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The file this was loaded from (reloads read it again).
    pub source: PathBuf,
    /// From the topology file, or the directory's current document.
    pub topology: Topology,
    /// The authorities the topology comes from, if not from a file.
    pub directory: Option<DirectoryConfig>,
    pub node: NodeEntry,
    pub key_file: PathBuf,
    pub shards: usize,
    pub cpus: Vec<usize>,
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub grace_ms: u64,
    /// How long an idle shard busy-polls its socket and timers before sleeping, µs.
    pub spin_us: u64,
    /// The I/O backend the shards run on.
    pub backend: crate::backend::Backend,
    pub inbox_path: Option<PathBuf>,
    /// Where each shard journals its replay filters.
    pub replay_dir: PathBuf,
    /// How often the journals are synced to disk, ms.
    pub replay_sync_ms: u64,
    /// The most packets a shard unwraps per second, which sizes its replay filters: as
    /// configured, or (`None`) to be measured at start ([`Self::size_replay_filters`]).
    pub max_packets_per_s: Option<u32>,
    /// What a shard unwraps per second on this CPU, as measured at start (0: not yet).
    pub measured_packets_per_s: u32,
    /// Whether to measure it at start: a simulator's clock (Shadow's, where computing
    /// takes no simulated time) makes the 150 ms measurement endless and meaningless.
    pub measure_unwrap_rate: bool,
    /// Datagrams that waited in a shard's socket longer than this are shed unread.
    pub max_socket_wait: Option<std::time::Duration>,
    pub limits: HopLimits,
    /// Providers: the inboxes' bounds.
    pub inbox: InboxLimits,
    /// Providers: how many handshakes they spend work on.
    pub handshakes: HandshakeLimits,
    /// Faults injected into the node's sending (tests and demos).
    pub faults: FaultConfig,
    /// Providers: packets a shard may have waiting for the store's writer.
    pub store_queue: usize,
    /// Providers: how much longer every store commit takes (a slow disk; tests and demos).
    pub store_commit_delay: std::time::Duration,
}

/// A configuration problem, naming the field.
pub type ConfigError = loopix_core::field_error::FieldError;

fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(field, problem)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    topology: Option<PathBuf>,
    directory: Option<RawDirectory>,
    id: u64,
    key_file: PathBuf,
    #[serde(default = "one")]
    shards: usize,
    #[serde(default)]
    cpus: Vec<usize>,
    listen: Option<String>,
    metrics: Option<String>,
    #[serde(default = "default_grace_ms")]
    grace_ms: u64,
    #[serde(default)]
    spin_us: u64,
    #[serde(default)]
    backend: crate::backend::Backend,
    inbox_path: Option<PathBuf>,
    replay_dir: Option<PathBuf>,
    #[serde(default = "default_replay_sync_ms")]
    replay_sync_ms: u64,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    faults: RawFaults,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    authorities: Vec<RawAuthority>,
    /// Absent: more than half of the authorities.
    threshold: Option<usize>,
    /// A threshold of half the authorities or fewer is refused unless this is set.
    #[serde(default)]
    allow_minority_threshold: bool,
    #[serde(default = "default_directory_wait_s")]
    wait_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    address: String,
    key: String,
}

/// Long enough for an authority to publish the next epoch's document with a node that
/// started late (at the default epochs, it publishes half an epoch ahead).
fn default_directory_wait_s() -> u64 {
    600
}

impl RawDirectory {
    fn validate(&self) -> Result<DirectoryConfig, ConfigError> {
        let authorities = self
            .authorities
            .iter()
            .enumerate()
            .map(|(i, a)| {
                crate::directory_client::check_host_port(&a.address)
                    .map_err(|e| err(&format!("directory.authorities[{i}].address"), e))?;
                Ok(AuthorityAddress {
                    address: a.address.clone(),
                    key: parse_identity_key(&format!("directory.authorities[{i}].key"), &a.key)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let threshold = Threshold::from_options(self.threshold, self.allow_minority_threshold);
        let mut config = DirectoryConfig::new(authorities, threshold)
            .map_err(|e| err("directory.threshold", e.to_string()))?;
        config.wait = std::time::Duration::from_secs(self.wait_s);
        Ok(config)
    }
}

/// What a configuration says of its node before any document: who it is, its key file, and
/// where it listens if it names the address (else the document's address for it).
pub struct Joining<'a> {
    pub id: NodeId,
    pub key_file: &'a Path,
    pub listen: Option<SocketAddr>,
    /// The CPUs and metrics address it names: checked on this host before anyone is
    /// asked anything.
    pub cpus: &'a [usize],
    pub metrics: Option<SocketAddr>,
}

/// Where a node's topology comes from when its configuration names a directory: given the
/// authorities and the node joining, it returns the current document's topology.
pub type FetchTopology<'a> =
    dyn FnMut(&DirectoryConfig, &Joining<'_>) -> Result<Topology, String> + 'a;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFaults {
    drop_fraction: f64,
    extra_delay_ms: u64,
    max_held: usize,
    store_commit_delay_ms: u64,
}

impl Default for RawFaults {
    fn default() -> Self {
        let d = FaultConfig::default();
        Self {
            drop_fraction: d.drop_fraction,
            extra_delay_ms: d.extra_delay_us / 1000,
            max_held: d.max_held,
            store_commit_delay_ms: 0,
        }
    }
}

/// The longest extra delay a fault may add: beyond it, it is an outage, not a slow link.
const MAX_FAULT_DELAY_MS: u64 = 60_000;

impl RawFaults {
    fn validate(&self) -> Result<FaultConfig, ConfigError> {
        if !(0.0..1.0).contains(&self.drop_fraction) {
            return Err(err("faults.drop_fraction", "must be in [0, 1)"));
        }
        if self.extra_delay_ms > MAX_FAULT_DELAY_MS {
            return Err(err(
                "faults.extra_delay_ms",
                format!("must be at most {MAX_FAULT_DELAY_MS}"),
            ));
        }
        if self.max_held == 0 {
            return Err(err("faults.max_held", "must be at least 1"));
        }
        if self.store_commit_delay_ms > MAX_FAULT_DELAY_MS {
            return Err(err(
                "faults.store_commit_delay_ms",
                format!("must be at most {MAX_FAULT_DELAY_MS}"),
            ));
        }
        Ok(FaultConfig {
            drop_fraction: self.drop_fraction,
            extra_delay_us: self.extra_delay_ms * 1000,
            max_held: self.max_held,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    pool_packets: u32,
    max_packets_per_s: Option<u32>,
    measure_unwrap_rate: bool,
    journal_tags: usize,
    slot_us: u64,
    gather_us: u64,
    horizon_ms: u64,
    max_socket_wait_ms: u64,
    inbox_per_client: usize,
    inbox_total: usize,
    inbox_ttl_s: u64,
    handshake_load_per_s: u32,
    handshake_per_source_per_s: u32,
    store_queue: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = HopLimits::default();
        Self {
            pool_packets: d.pool_packets,
            max_packets_per_s: None,
            measure_unwrap_rate: true,
            journal_tags: 65_536,
            slot_us: d.wheel.slot_us,
            gather_us: d.gather_us,
            horizon_ms: d.wheel.horizon_us / 1000,
            max_socket_wait_ms: DEFAULT_MAX_SOCKET_WAIT_MS,
            inbox_per_client: InboxLimits::default().per_client,
            inbox_total: InboxLimits::default().total,
            inbox_ttl_s: InboxLimits::default().ttl_us / 1_000_000,
            handshake_load_per_s: HandshakeLimits::default().load_per_s,
            handshake_per_source_per_s: HandshakeLimits::default().per_source_per_s,
            store_queue: DEFAULT_STORE_QUEUE,
        }
    }
}

/// A packet that waited this long in a socket has spent its hop's share of the delay
/// budget several times over (the mean delay a hop adds is 1/µ, 100 ms at µ = 10); an
/// honest load never queues it for more than a few milliseconds. Under overload the
/// receive buffer alone holds ~200 ms at a shard's floor: shedding at this bound keeps
/// the latency of what is forwarded bounded.
pub const DEFAULT_MAX_SOCKET_WAIT_MS: u64 = 100;

/// A shard's stores waiting for the writer: at a shard's whole floor rate of deliveries
/// (~25,000 packets/s), over two seconds of a stalled disk.
pub const DEFAULT_STORE_QUEUE: usize = 65_536;

/// The longest `limits.gather_us`: a hundredth of the mean delay of a fast network
/// (µ = 1,000/s). A packet whose delay is shorter than its wait leaves late.
pub const MAX_GATHER_US: u64 = 10_000;

fn one() -> usize {
    1
}

/// The rate replay filters are sized for when the measurement at start gives nothing
/// usable: a little above what one core unwraps at the crypto floor without vector lanes.
pub const DEFAULT_MAX_PACKETS_PER_S: u32 = 25_000;

fn default_replay_sync_ms() -> u64 {
    1_000
}

/// Longest busy-poll accepted: beyond it a shard would in effect never sleep anyway.
const MAX_SPIN_US: u64 = 100_000;

fn default_grace_ms() -> u64 {
    2_000
}

/// Most shards a node may run.
pub const MAX_SHARDS: usize = 64;

impl NodeConfig {
    /// Reads and validates `path` and the topology file it names (a configuration that
    /// names a directory instead is refused: see [`Self::load_with`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &mut |_, _| {
            Err("the topology comes from the directory: load with a fetch".into())
        })
    }

    /// Reads and validates `path`, taking the topology from its file or, if it names a
    /// directory, from `fetch`.
    pub fn load_with(path: &Path, fetch: &mut FetchTopology<'_>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Self::parse_with(&text, base, fetch)?;
        cfg.source = path.to_path_buf();
        Ok(cfg)
    }

    /// Validates `text`, resolving relative paths against `base` (a topology file only).
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, base, &mut |_, _| {
            Err("the topology comes from the directory: load with a fetch".into())
        })
    }

    fn parse_with(
        text: &str,
        base: &Path,
        fetch: &mut FetchTopology<'_>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = loopix_core::field_error::from_toml(text)?;
        let key_file = base.join(&raw.key_file);
        let configured_listen = raw
            .listen
            .as_deref()
            .map(|s| parse_addr("listen", s))
            .transpose()?;
        // Everything this file alone decides, before a topology is read or fetched.
        if !(1..=MAX_SHARDS).contains(&raw.shards) {
            return Err(err("shards", format!("must be in 1..={MAX_SHARDS}")));
        }
        if raw.spin_us > MAX_SPIN_US {
            return Err(err("spin_us", format!("must be at most {MAX_SPIN_US}")));
        }
        let metrics = raw
            .metrics
            .as_deref()
            .map(|s| parse_addr("metrics", s))
            .transpose()?;
        if raw.replay_sync_ms == 0 {
            return Err(err("replay_sync_ms", "must be at least 1"));
        }
        let faults = raw.faults.validate()?;
        let (topology, directory) = match (&raw.topology, &raw.directory) {
            (Some(file), None) => {
                let topology_path = base.join(file);
                let topology_text = std::fs::read_to_string(&topology_path)
                    .map_err(|e| err("topology", format!("{}: {e}", topology_path.display())))?;
                let topology = Topology::from_toml(&topology_text)
                    .map_err(|e| err("topology", format!("{}: {e}", topology_path.display())))?;
                (topology, None)
            }
            (None, Some(d)) => {
                let directory = d.validate()?;
                let joining = Joining {
                    id: NodeId(raw.id),
                    key_file: &key_file,
                    listen: configured_listen,
                    cpus: &raw.cpus,
                    metrics,
                };
                let topology = fetch(&directory, &joining).map_err(|e| err("directory", e))?;
                (topology, Some(directory))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "directory",
                    "name a topology file or a [directory], not both",
                ));
            }
            (None, None) => {
                return Err(err(
                    "topology",
                    "name a topology file, or a [directory] to fetch the topology from",
                ));
            }
        };
        let node = topology
            .node(NodeId(raw.id))
            .cloned()
            .ok_or_else(|| err("id", format!("{} is not a node of the topology", raw.id)))?;
        if raw.limits.store_queue == 0 {
            return Err(err("limits.store_queue", "must be at least 1"));
        }
        if node.role == Role::Provider && raw.inbox_path.is_none() {
            return Err(err("inbox_path", "a provider needs a durable inbox store"));
        }
        let listen = configured_listen.unwrap_or(node.address);
        let limits = raw.limits.validate(&topology)?;
        let replay_dir = raw
            .replay_dir
            .unwrap_or_else(|| PathBuf::from(format!("replay-{}", raw.id)));
        Ok(Self {
            source: PathBuf::new(),
            topology,
            directory,
            node,
            key_file,
            shards: raw.shards,
            cpus: raw.cpus,
            listen,
            metrics,
            grace_ms: raw.grace_ms,
            spin_us: raw.spin_us,
            backend: raw.backend,
            inbox_path: raw.inbox_path.map(|p| base.join(p)),
            replay_dir: base.join(replay_dir),
            replay_sync_ms: raw.replay_sync_ms,
            max_packets_per_s: raw.limits.max_packets_per_s,
            measured_packets_per_s: 0,
            measure_unwrap_rate: raw.limits.measure_unwrap_rate,
            max_socket_wait: (raw.limits.max_socket_wait_ms > 0)
                .then(|| std::time::Duration::from_millis(raw.limits.max_socket_wait_ms)),
            limits,
            inbox: InboxLimits {
                per_client: raw.limits.inbox_per_client,
                total: raw.limits.inbox_total,
                ttl_us: raw.limits.inbox_ttl_s.saturating_mul(1_000_000),
            },
            handshakes: HandshakeLimits {
                load_per_s: raw.limits.handshake_load_per_s,
                per_source_per_s: raw.limits.handshake_per_source_per_s,
                ..HandshakeLimits::default()
            },
            faults,
            store_queue: raw.limits.store_queue,
            store_commit_delay: std::time::Duration::from_millis(raw.faults.store_commit_delay_ms),
        })
    }
}

impl RawLimits {
    fn validate(&self, topology: &Topology) -> Result<HopLimits, ConfigError> {
        if self.pool_packets == 0 {
            return Err(err("limits.pool_packets", "must be at least 1"));
        }
        if self.max_packets_per_s == Some(0) {
            return Err(err("limits.max_packets_per_s", "must be at least 1"));
        }
        if self.inbox_per_client == 0 {
            return Err(err("limits.inbox_per_client", "must be at least 1"));
        }
        if self.inbox_total < self.inbox_per_client {
            return Err(err(
                "limits.inbox_total",
                "must be at least limits.inbox_per_client",
            ));
        }
        if self.inbox_ttl_s == 0 {
            return Err(err("limits.inbox_ttl_s", "must be at least 1"));
        }
        if self.handshake_per_source_per_s == 0 {
            return Err(err(
                "limits.handshake_per_source_per_s",
                "must be at least 1 (0 would refuse every client under load)",
            ));
        }
        if self.gather_us > MAX_GATHER_US {
            return Err(err(
                "limits.gather_us",
                format!(
                    "must be at most {MAX_GATHER_US}: a packet whose delay is shorter than \
                     its wait leaves late"
                ),
            ));
        }
        let wheel = WheelConfig {
            slot_us: self.slot_us,
            horizon_us: self.horizon_ms.saturating_mul(1000),
        };
        loopix_core::pipeline::timing_wheel::TimingWheel::new(wheel, 0)
            .map_err(|e| err("limits.slot_us", e.to_string()))?;
        Ok(HopLimits {
            pool_packets: self.pool_packets,
            // Until measured at start ([`NodeConfig::size_replay_filters`]).
            replay_tags: HopLimits::replay_tags_for(
                self.max_packets_per_s.unwrap_or(DEFAULT_MAX_PACKETS_PER_S),
                &topology.network.epochs,
            ),
            journal_tags: self.journal_tags,
            wheel,
            // The network's delay horizon applies too; the core takes the shorter.
            max_delay_us: wheel.horizon_us,
            gather_us: self.gather_us,
        })
    }
}

impl NodeConfig {
    /// Sizes the replay filters for the rate a shard unwraps on this CPU, `measured`
    /// packets/s (`crate::unwrap_rate::measure`), unless the configuration set one; the
    /// rate used. A configured rate below the measured one is kept, with a warning: its
    /// filters can fill before their key is retired, and fresh packets are then dropped.
    pub fn size_replay_filters(&mut self, measured: u32) -> (u32, Option<String>) {
        self.measured_packets_per_s = measured;
        let (rate, warning) = match self.max_packets_per_s {
            Some(r) if r < measured => (
                r,
                Some(format!(
                    "limits.max_packets_per_s = {r} is below what a shard unwraps on this CPU \
                     ({measured} packets/s measured): under full load its replay filters fill \
                     before their key is retired and fresh packets drop as replay_full; leave \
                     it out to size them from the measurement"
                )),
            ),
            Some(r) => (r, None),
            None if measured == 0 => (DEFAULT_MAX_PACKETS_PER_S, None),
            None => (measured, None),
        };
        self.limits.replay_tags = HopLimits::replay_tags_for(rate, &self.topology.network.epochs);
        (rate, warning)
    }

    /// The settings that differ in `fresh` (a re-read of this file) and that only a restart
    /// applies: a SIGHUP takes the topology's keys and clients and the key file, nothing else.
    pub fn needs_restart(&self, fresh: &NodeConfig) -> Vec<&'static str> {
        let (a, b) = (self, fresh);
        let node = [
            ("id", a.node.id != b.node.id),
            ("shards", a.shards != b.shards),
            ("cpus", a.cpus != b.cpus),
            ("listen", a.listen != b.listen),
            ("metrics", a.metrics != b.metrics),
            ("spin_us", a.spin_us != b.spin_us),
            ("backend", a.backend != b.backend),
            ("grace_ms", a.grace_ms != b.grace_ms),
            ("inbox_path", a.inbox_path != b.inbox_path),
            ("replay_dir", a.replay_dir != b.replay_dir),
            ("replay_sync_ms", a.replay_sync_ms != b.replay_sync_ms),
            (
                "limits",
                a.limits != b.limits || a.inbox != b.inbox || a.store_queue != b.store_queue,
            ),
            (
                "faults",
                a.faults != b.faults || a.store_commit_delay != b.store_commit_delay,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name));
        node.chain(network_changes(&a.topology.network, &b.topology.network))
            .collect()
    }
}

pub use loopix_core::pki::take::KeyCheck;

impl NodeConfig {
    /// Checks that `seed` gives every key the topology publishes for this node from the
    /// seed's epoch on, and that it still holds the keys in use at `now_us`.
    pub fn check_keys(&self, seed: &EpochSeed, now_us: u64) -> Result<KeyCheck, ConfigError> {
        loopix_core::pki::take::check_node_keys(&self.topology, &self.node, seed, now_us).map_err(
            |e| match e {
                Refused::EpochKey { .. } => {
                    err("key_file", format!("{}: {e}", self.key_file.display()))
                }
                e => err("key_file", e.to_string()),
            },
        )
    }
}

fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| err(field, format!("`{s}` is not an IP:port socket address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-mix topology next to a node.toml whose extra lines are `extra`.
    fn parse_with(extra: &str) -> Result<NodeConfig, ConfigError> {
        // A directory per call: the tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("loopix-config-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        use rand_core::SeedableRng;
        let hex = |seed: u8| -> String {
            let key = loopix_crypto::SecretKey::generate(&mut rand_chacha::ChaCha20Rng::from_seed(
                [seed; 32],
            ));
            key.public_key()
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let topology = format!(
            "[network]\nlayers = 1\nmu_per_s = 10.0\nlambda_payload_per_s = 1.0\nlambda_loop_per_s = 1.0\nlambda_drop_per_s = 1.0\nlambda_mix_loop_per_s = 1.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\n[[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"127.0.0.1:9\"\nfirst_epoch = 0\nepoch_keys = [\"{}\"]\n\n[[nodes]]\nid = 1000\nrole = \"provider\"\naddress = \"127.0.0.1:10\"\nfirst_epoch = 0\nepoch_keys = [\"{}\"]\nsession_key = \"{}\"\n",
            hex(7),
            hex(8),
            "cc".repeat(32)
        );
        std::fs::write(dir.join("t.toml"), topology).unwrap();
        parse_in(&dir, extra)
    }

    /// A node.toml of `extra` lines beside the topology `parse_with` wrote into `dir`.
    fn parse_in(dir: &Path, extra: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(
            &format!("topology = \"t.toml\"\nid = 1\nkey_file = \"k\"\n{extra}"),
            dir,
        )
    }

    #[test]
    fn a_directory_needs_a_majority_of_its_authorities_unless_a_minority_is_allowed() {
        let dir = std::env::temp_dir().join(format!("loopix-config-dir-{}", std::process::id()));
        let keys: Vec<String> = (0..3u8)
            .map(|i| {
                let k = loopix_crypto::IdentitySecret::from_bytes([i + 1; 32]);
                k.public()
                    .to_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        let parse = |extra: &str| {
            let list: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{{ address = \"127.0.0.1:{}\", key = \"{k}\" }}", 8000 + i))
                .collect();
            // The fetch says how many signatures the directory section asks for.
            let mut asked = None;
            let parsed = NodeConfig::parse_with(
                &format!(
                    "id = 1\nkey_file = \"k\"\n[directory]\nauthorities = [{}]\n{extra}",
                    list.join(", ")
                ),
                &dir,
                &mut |d, _| {
                    asked = Some(d.trust.threshold());
                    Err("not fetched in this test".into())
                },
            );
            match (parsed, asked) {
                (Err(_), Some(threshold)) => Ok(threshold),
                (Err(e), None) => Err(e),
                (Ok(_), _) => panic!("nothing was fetched"),
            }
        };
        assert_eq!(parse(""), Ok(2), "more than half by default");
        assert_eq!(parse("threshold = 3\n"), Ok(3));
        let e = parse("threshold = 1\n").unwrap_err();
        assert_eq!(e.field, "directory.threshold", "{e}");
        assert!(e.problem.contains("forged"), "{e}");
        assert_eq!(
            parse("threshold = 1\nallow_minority_threshold = true\n"),
            Ok(1)
        );
    }

    #[test]
    fn the_gather_window_defaults_to_the_cores_and_is_bounded() {
        let d = loopix_core::pipeline::hop::DEFAULT_GATHER_US;
        assert_eq!(parse_with("").unwrap().limits.gather_us, d);
        let off = parse_with("[limits]\ngather_us = 0\n").unwrap();
        assert_eq!(off.limits.gather_us, 0);
        let e = parse_with("[limits]\ngather_us = 10001\n").unwrap_err();
        assert!(e.to_string().starts_with("limits.gather_us:"), "{e}");
    }

    #[test]
    fn spin_is_optional_bounded_and_named_when_wrong() {
        assert_eq!(parse_with("").unwrap().spin_us, 0);
        assert_eq!(parse_with("spin_us = 500\n").unwrap().spin_us, 500);
        let e = parse_with("spin_us = 1000000\n").unwrap_err();
        assert!(e.to_string().starts_with("spin_us:"), "{e}");
    }

    #[test]
    fn the_store_has_a_bound_in_all_no_smaller_than_one_inbox() {
        assert_eq!(parse_with("").unwrap().inbox.total, 1_000_000);
        assert!(
            !parse_with("").unwrap().faults.is_on(),
            "no faults unless asked"
        );
        let faults = parse_with("[faults]\ndrop_fraction = 0.05\nextra_delay_ms = 20\n")
            .unwrap()
            .faults;
        assert_eq!(
            (faults.drop_fraction, faults.extra_delay_us),
            (0.05, 20_000)
        );
        for (toml, field) in [
            ("[faults]\ndrop_fraction = 1.0\n", "faults.drop_fraction:"),
            ("[faults]\ndrop_fraction = -0.1\n", "faults.drop_fraction:"),
            (
                "[faults]\nextra_delay_ms = 60001\n",
                "faults.extra_delay_ms:",
            ),
            ("[faults]\nmax_held = 0\n", "faults.max_held:"),
            (
                "[faults]\nstore_commit_delay_ms = 60001\n",
                "faults.store_commit_delay_ms:",
            ),
            ("[limits]\nstore_queue = 0\n", "limits.store_queue:"),
        ] {
            let e = parse_with(toml).unwrap_err();
            assert!(e.to_string().starts_with(field), "{toml}: {e}");
        }
        let wait = |toml: &str| parse_with(toml).unwrap().max_socket_wait;
        assert_eq!(wait(""), Some(std::time::Duration::from_millis(100)));
        assert_eq!(wait("[limits]\nmax_socket_wait_ms = 0\n"), None, "0: never");
        assert_eq!(parse_with("").unwrap().inbox.ttl_us, 604_800_000_000);
        let cfg = parse_with("[limits]\ninbox_ttl_s = 60\n").unwrap();
        assert_eq!(cfg.inbox.ttl_us, 60_000_000);
        let e = parse_with("[limits]\ninbox_ttl_s = 0\n").unwrap_err();
        assert!(e.to_string().starts_with("limits.inbox_ttl_s:"), "{e}");
        let cfg = parse_with("[limits]\ninbox_total = 50000\n").unwrap();
        assert_eq!(cfg.inbox.total, 50_000);
        let e = parse_with("[limits]\ninbox_per_client = 10\ninbox_total = 5\n").unwrap_err();
        assert!(e.to_string().starts_with("limits.inbox_total:"), "{e}");
    }

    #[test]
    fn a_reload_names_what_only_a_restart_applies() {
        let running = parse_with("shards = 2\n").unwrap();
        let dir = running.replay_dir.parent().unwrap();
        let same = parse_in(dir, "shards = 2\n").unwrap();
        assert!(running.needs_restart(&same).is_empty());
        let fresh = parse_in(
            dir,
            "shards = 1\nspin_us = 10\n[limits]\npool_packets = 5\n",
        )
        .unwrap();
        assert_eq!(
            running.needs_restart(&fresh),
            ["shards", "spin_us", "limits"]
        );
    }

    #[test]
    fn replay_filters_are_sized_from_the_top_rate_over_a_keys_lifetime() {
        let mut cfg = parse_with("[limits]\nmax_packets_per_s = 1000\n").unwrap();
        // Default epochs: 1,200 s and 60 s of grace either side.
        assert_eq!(cfg.limits.replay_tags, 1_000 * 1_320);
        // A configured rate stays, and one below what the shard can do is warned about.
        assert_eq!(cfg.size_replay_filters(800), (1_000, None));
        let (rate, warning) = cfg.size_replay_filters(40_000);
        assert_eq!(rate, 1_000);
        assert!(warning.unwrap().contains("40000 packets/s measured"));
        assert_eq!(cfg.limits.replay_tags, 1_000 * 1_320);
        // Left out: the measured rate sizes them.
        let mut measured = parse_with("").unwrap();
        assert_eq!(measured.size_replay_filters(40_000), (40_000, None));
        assert_eq!(measured.limits.replay_tags, 40_000 * 1_320);
        assert_eq!(
            measured.size_replay_filters(0).0,
            DEFAULT_MAX_PACKETS_PER_S,
            "no measurement"
        );
        assert!(cfg.replay_dir.ends_with("replay-1"));
        assert!(cfg.measure_unwrap_rate, "measured unless told not to");
        let unmeasured =
            parse_with("[limits]\nmax_packets_per_s = 500\nmeasure_unwrap_rate = false\n").unwrap();
        assert!(!unmeasured.measure_unwrap_rate);
        let e = parse_with("[limits]\nmax_packets_per_s = 0\n").unwrap_err();
        assert_eq!(e.field, "limits.max_packets_per_s");
        let e = parse_with("[limits]\nreplay_tags = 5\n").unwrap_err();
        assert!(
            e.problem.contains("replay_tags"),
            "the old knob is refused: {e}"
        );
    }
}
