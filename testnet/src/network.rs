//! The network a run starts: keys, topology, configurations and directory authorities
//! written to a fresh directory, every mix and provider started as its own `loopix node`
//! process (optionally each in a network namespace of its own), watched while it runs and
//! scraped for its counters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use loopix_core::network::topology::{Role, Topology};
use loopix_core::pki::registry::registry_toml;
use loopix_crypto::{IdentitySecret, NodeId};
use loopix_runtime::directory_client::AuthorityAddress;
use loopix_sim::network::{Generated, NetworkSpec, generate_at};
use serde::Serialize;

/// The network `loopix testnet` and `loopix stress` start: its shape, rates, keys and
/// faults.
#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// The nodes' I/O backend: `auto` (io_uring where this host allows it, else portable,
    /// each node saying why), `io_uring`, or `portable`.
    #[arg(long, env = "LOOPIX_BACKEND", default_value = "auto")]
    pub backend: loopix_runtime::backend::Backend,
    /// Mix layers.
    #[arg(long, default_value_t = 3)]
    pub layers: u8,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 2)]
    pub mixes_per_layer: u32,
    /// Providers (the clients are spread over them).
    #[arg(long, default_value_t = 2)]
    pub providers: u32,
    /// Shards per node process, mixes and providers (a provider's clients each live on a
    /// home shard).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// µ: each hop's delay is Exp(µ), mean 1/µ seconds.
    #[arg(long, default_value_t = 20.0)]
    pub mu_per_s: f64,
    /// λP = λL = λD for every client.
    #[arg(long, default_value_t = 2.0)]
    pub lambda_per_s: f64,
    /// λM for every mix.
    #[arg(
        long = "lambda-mix-loop-per-s",
        alias = "mix-loop-per-s",
        default_value_t = 2.0
    )]
    pub mix_loop_per_s: f64,
    /// How often each client polls its provider.
    #[arg(long, default_value_t = 5.0)]
    pub poll_rate_per_s: f64,
    /// N: items in every poll answer.
    #[arg(long, default_value_t = 4)]
    pub poll_size: u16,
    /// Application bytes per packet.
    #[arg(long, default_value_t = loopix_crypto::DEFAULT_PAYLOAD_BYTES)]
    pub payload_bytes: usize,
    /// Where to put keys, configs, stores and logs (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Fault injection: every node drops this share of the datagrams it sends (each
    /// node's `[faults] drop_fraction`), as lossy links would; with `--netns`, every
    /// routed link drops it.
    #[arg(long, default_value_t = 0.0)]
    pub link_loss: f64,
    /// Fault injection: every node holds each datagram it sends this much longer; with
    /// `--netns`, every routed link delays each packet this much.
    #[arg(long, default_value_t = 0)]
    pub link_delay_ms: u64,
    /// Sends of one fragment before its message is given up: every fragment asks its
    /// recipient for an acknowledgement and is sent again until it comes (0: no acks).
    #[arg(long, default_value_t = DEFAULT_ACK_ATTEMPTS)]
    pub ack_attempts: u32,
    /// Run a directory authority (`loopix directory serve`): every node uploads its keys
    /// to it and takes each epoch's signed document from it, and so do the clients; no
    /// topology file is handed out.
    #[arg(long)]
    pub directory: bool,
    /// Run every node, the directory authority and the clients in network namespaces of
    /// their own (implies `--directory`), routed through a router namespace whose links
    /// carry `--link-delay-ms` and `--link-loss`. Needs root, iproute2 and /dev/net/tun.
    #[arg(long)]
    pub netns: bool,
    /// Directory authorities (with `--directory` or `--netns`): each signs every document
    /// and gathers the others' signatures, and nodes and clients require all of them.
    #[arg(long, default_value_t = 1)]
    pub authorities: usize,
    /// Key epoch length, s (the grace around a boundary is a third of it, at most 60 s):
    /// short epochs show nodes and clients switching keys and documents as they run.
    #[arg(long, default_value_t = 1200)]
    pub epoch_s: u64,
}

/// Enough for 5 % loss on every link and a mix down for a minute (the simulation's test);
/// the waits double up to 16 times the first, so the last attempt goes minutes later.
pub const DEFAULT_ACK_ATTEMPTS: u32 = 8;

impl NetworkArgs {
    /// Refuses options no network can run with.
    pub fn check(&self) -> Result<(), String> {
        if self.epoch_s == 0 {
            return Err("--epoch-s: must be at least 1".into());
        }
        if self.authorities == 0 {
            return Err("--authorities: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.link_loss) {
            return Err(format!("--link-loss: {} is not in [0, 1)", self.link_loss));
        }
        Ok(())
    }

    /// With `--directory` or `--netns`, the nodes and clients take the network from
    /// authorities.
    pub fn with_directory(&self) -> bool {
        self.directory || self.netns
    }
}

/// Where a network's nodes and authorities are.
pub(crate) enum Placement<'a> {
    /// Free ports on 127.0.0.1.
    Loopback,
    /// A host each, in network namespaces of this machine.
    Namespaces(&'a crate::netns::VirtualNet),
    /// A host each, at the address this names for a host (`node-<id>`, `directory-<i>`):
    /// hosts another program runs.
    Hosts(&'a dyn Fn(&str) -> Option<std::net::IpAddr>),
}

impl Placement<'_> {
    fn addr(&self, host: &str) -> Option<std::net::IpAddr> {
        match self {
            Self::Loopback => None,
            Self::Namespaces(n) => n.addr(host),
            Self::Hosts(f) => f(host),
        }
    }

    fn hosted(&self) -> bool {
        !matches!(self, Self::Loopback)
    }
}

/// A network started: its files and addresses, its node processes, and with `--netns` the
/// namespaces they run in.
pub(crate) struct Running {
    pub(crate) layout: Layout,
    pub(crate) nodes: Nodes,
    pub(crate) vnet: Option<crate::netns::VirtualNet>,
}

impl Running {
    /// A network started elsewhere: no processes to watch.
    pub(crate) fn attached(layout: Layout) -> Self {
        Self {
            layout,
            nodes: Nodes::none(),
            vnet: None,
        }
    }

    /// Writes a network for `clients` clients (keys published for `run_s` seconds and
    /// more), starts it and waits until every node is ready. With `--netns`, this thread
    /// moves into the clients' host.
    /// The keys of all clients but the first `run_here` (which this process runs) are
    /// written for others to use ([`CLIENT_KEY_DIR`]).
    pub(crate) fn start(
        args: &NetworkArgs,
        clients: u32,
        run_here: u32,
        run_s: f64,
    ) -> Result<Self, String> {
        let vnet = if args.netns {
            Some(virtual_net(args, clients)?)
        } else {
            None
        };
        let place = match &vnet {
            Some(n) => Placement::Namespaces(n),
            None => Placement::Loopback,
        };
        let layout = prepare(args, clients, run_here, run_s, &place)?;
        let mut nodes = Nodes::spawn(&layout)?;
        // With a directory, a node binds once a document lists it: every node's upload and
        // the authority's first document come first.
        let ready_limit = if layout.authorities.is_empty() {
            20
        } else {
            60
        };
        nodes.wait_ready(&layout, Duration::from_secs(ready_limit))?;
        Ok(Self {
            layout,
            nodes,
            vnet,
        })
    }
}

/// The testnet's `limits.max_socket_wait_ms` (a dedicated node's default is 100): a whole
/// network shares this machine's few cores, where a process may wait a scheduler tick or
/// more to run, so a node sheds only what waited a whole second.
const TESTNET_MAX_SOCKET_WAIT_MS: u64 = 1_000;

#[derive(Serialize, Debug, Default)]
pub struct NodeSummary {
    pub id: u64,
    pub role: String,
    /// The I/O backend it ran on (`io_uring` or `portable`), from its metrics.
    pub backend: Option<String>,
    pub packets_in: u64,
    pub packets_out: u64,
    pub drops: BTreeMap<String, u64>,
    pub exit_ok: bool,
    /// Mixes: their loops' round trip minus requested delays, summed, and how many.
    #[serde(skip)]
    pub loop_overhead_s_sum: f64,
    pub loops_back: u64,
    /// Mixes: mean loop overhead, ms (routing, processing and links of one trip through
    /// every layer and a provider).
    pub loop_overhead_ms: Option<f64>,
    /// Mixes: the share of recent loops that came back, the lowest over the node's shards
    /// (each judges the loops it sent; ~1 on a healthy network).
    pub loop_return_fraction: Option<f64>,
    /// Datagrams it dropped by fault injection (`--link-loss`, `--link-delay-ms`).
    pub fault_drops: u64,
    /// Times it was killed and started again (`--kill-mix-after-s`); its counters are
    /// the last process's.
    pub restarts: u64,
    /// With `--directory`: the epoch of the document it had in force at the end.
    pub document_epoch: Option<u64>,
    /// Mixes: loops that could not be built (no key published for an epoch a hop fell in:
    /// a mix that kept an old document once its keys ran out).
    pub loops_failed: u64,
    /// Neighbours it takes packets from that sent nothing that verified for a minute.
    pub links_silent: Option<u64>,
    /// With `--directory`: when it last fetched and took a document, unix s.
    pub last_fetch_s: Option<u64>,
    /// Providers: client sessions started on each shard (each on its client's home shard).
    pub sessions_by_shard: BTreeMap<usize, u64>,
}

pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    /// The network as generated; with a directory, nodes and clients never read it.
    pub(crate) topology: Topology,
    /// With `--directory`: the authorities' addresses and keys (`authority-<i>/`).
    pub(crate) authorities: Vec<AuthorityAddress>,
    /// With `--netns`: each host's namespace, by name (`node-<id>`, `directory`).
    pub(crate) hosts: BTreeMap<String, std::fs::File>,
    /// Where clients bind.
    pub(crate) client_bind: SocketAddr,
    pub(crate) node_addrs: BTreeMap<NodeId, SocketAddr>,
    pub(crate) metrics: BTreeMap<NodeId, SocketAddr>,
    pub(crate) client_keys: BTreeMap<NodeId, loopix_crypto::SecretKey>,
}

pub(crate) fn virtual_net(
    args: &NetworkArgs,
    clients: u32,
) -> Result<crate::netns::VirtualNet, String> {
    let mut hosts: Vec<String> = (0..args.authorities)
        .map(|i| format!("directory-{i}"))
        .collect();
    hosts.push("clients".into());
    hosts.extend(
        node_ids(&spec(args, clients, 0.0))
            .iter()
            .map(|id| format!("node-{}", id.0)),
    );
    let net = crate::netns::VirtualNet::create(
        &hosts,
        Duration::from_millis(args.link_delay_ms),
        args.link_loss,
    )?;
    let clients = net.handle("clients")?;
    crate::netns::enter(&clients).map_err(|e| format!("entering the clients' host: {e}"))?;
    Ok(net)
}

/// The network the arguments describe.
pub(crate) fn spec(args: &NetworkArgs, clients: u32, run_s: f64) -> NetworkSpec {
    NetworkSpec {
        layers: args.layers,
        mixes_per_layer: args.mixes_per_layer,
        providers: args.providers,
        clients,
        payload_bytes: args.payload_bytes,
        mu_per_s: args.mu_per_s,
        lambda_payload_per_s: args.lambda_per_s,
        lambda_loop_per_s: args.lambda_per_s,
        lambda_drop_per_s: args.lambda_per_s,
        lambda_mix_loop_per_s: args.mix_loop_per_s,
        poll_size: args.poll_size,
        poll_rate_per_s: args.poll_rate_per_s,
        // Epoch 0 starts now; keys are published for every epoch the run can reach.
        epoch_start_s: (unix_ms() / 1000) as u64,
        epoch_s: args.epoch_s,
        epoch_grace_s: testnet_grace_s(args.epoch_s),
        published_epochs: (run_s / args.epoch_s as f64) as u32 + 3,
        ..NetworkSpec::default()
    }
}

/// Picks addresses (free loopback ports, or the hosts of `net`), writes keys, topology
/// and node configs.
pub(crate) fn prepare(
    args: &NetworkArgs,
    clients: u32,
    run_here: u32,
    run_s: f64,
    place: &Placement<'_>,
) -> Result<Layout, String> {
    let net = match place {
        Placement::Namespaces(n) => Some(*n),
        _ => None,
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "loopix-testnet-{}-{}",
            std::process::id(),
            unix_ms()
        )),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // TCP ports chosen here stay bound until this returns: each is chosen once.
    let mut held_ports: Vec<TcpListener> = Vec::new();
    let spec = spec(args, clients, run_s);
    let node_count = (u64::from(args.layers) * u64::from(args.mixes_per_layer)
        + u64::from(args.providers)) as usize;
    let ids = node_ids(&spec);
    let host = |id: NodeId| {
        place
            .addr(&format!("node-{}", id.0))
            .ok_or_else(|| format!("no host for node {}", id.0))
    };
    let node_addrs: BTreeMap<NodeId, SocketAddr> = match place.hosted() {
        false => ids
            .iter()
            .copied()
            .zip(free_udp_ports(node_count)?)
            .collect(),
        true => ids
            .iter()
            .map(|&id| Ok((id, SocketAddr::new(host(id)?, 9000))))
            .collect::<Result<_, String>>()?,
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let Generated { topology, mut keys } =
        generate_at(&spec, u64::from_le_bytes(seed), |id| node_addrs[&id])
            .map_err(|e| format!("generated topology: {e}"))?;
    let toml = topology.to_toml();
    let mut identities = BTreeMap::new();
    let mut authorities = Vec::new();
    if args.directory || net.is_some() {
        for n in &topology.nodes {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut seed[..]).map_err(|e| e.to_string())?;
            identities.insert(n.id, IdentitySecret::from_bytes(*seed));
        }
        let publics = identities.iter().map(|(&id, k)| (id, k.public())).collect();
        let registry = registry_toml(&topology, &publics);
        for i in 0..args.authorities {
            let address = match place.addr(&format!("directory-{i}")) {
                Some(ip) => SocketAddr::new(ip, 8000),
                None => free_tcp_port(&mut held_ports)?,
            };
            authorities.push(prepare_authority(
                &dir.join(format!("authority-{i}")),
                &registry,
                address,
            )?);
        }
    } else {
        write(&dir.join("topology.toml"), &toml)?;
    }
    let topology_line = if authorities.is_empty() {
        "topology = \"topology.toml\"\n"
    } else {
        ""
    };
    let mut metrics = BTreeMap::new();
    for n in &topology.nodes {
        let seed = keys.nodes.remove(&n.id).ok_or("every node has a key")?;
        let session = keys.sessions.remove(&n.id).ok_or("every node has a key")?;
        let key_path = dir.join(format!("node-{}.key", n.id.0));
        let _ = std::fs::remove_file(&key_path);
        loopix_runtime::key_file::write_seed(&key_path, &seed, &session, identities.get(&n.id))
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let metrics_addr = match place.hosted() {
            true => SocketAddr::new(host(n.id)?, 9100),
            false => free_tcp_port(&mut held_ports)?,
        };
        metrics.insert(n.id, metrics_addr);
        let shards = args.shards;
        // A simulator's sockets (Shadow's) have no receive timestamps to shed by.
        let max_socket_wait_ms = match place {
            Placement::Hosts(_) => 0,
            _ => TESTNET_MAX_SOCKET_WAIT_MS,
        };
        let extra = match n.role {
            Role::Mix { .. } => String::new(),
            Role::Provider => format!("inbox_path = \"node-{}.redb\"\n", n.id.0),
        };
        let mut config = format!(
            "{topology_line}id = {}\nkey_file = \"node-{}.key\"\nshards = {shards}\nmetrics = \"{metrics_addr}\"\ngrace_ms = 1000\nbackend = \"{}\"\n{extra}[limits]\npool_packets = 16384\nmax_packets_per_s = 500\nmax_socket_wait_ms = {max_socket_wait_ms}\n",
            n.id.0, n.id.0, args.backend
        );
        if let Placement::Hosts(_) = place {
            // Hosts another program runs are a simulator's: its clock measures no CPU.
            config += "measure_unwrap_rate = false\n";
        }
        // With hosts, the links themselves are slow and lossy; on loopback the nodes are.
        if !place.hosted() && (args.link_loss > 0.0 || args.link_delay_ms > 0) {
            config += &format!(
                "\n[faults]\ndrop_fraction = {}\nextra_delay_ms = {}\n",
                args.link_loss, args.link_delay_ms
            );
        }
        if !authorities.is_empty() {
            let list: Vec<String> = authorities
                .iter()
                .map(|a| {
                    format!(
                        "{{ address = \"{}\", key = \"{}\" }}",
                        a.address,
                        hex::encode(a.key.to_bytes())
                    )
                })
                .collect();
            config += &format!(
                "\n[directory]\nauthorities = [{}]\nthreshold = {}\nwait_s = 60\n",
                list.join(", "),
                authorities.len()
            );
        }
        write(&dir.join(format!("node-{}.toml", n.id.0)), &config)?;
    }
    let mut hosts = BTreeMap::new();
    if let Some(net) = net {
        for id in &ids {
            let name = format!("node-{}", id.0);
            hosts.insert(name.clone(), net.handle(&name)?);
        }
        for i in 0..authorities.len() {
            let name = format!("directory-{i}");
            hosts.insert(name.clone(), net.handle(&name)?);
        }
    }
    write_attachable(&dir, keys.clients.iter().skip(run_here as usize), &metrics)?;
    let client_bind = if place.hosted() {
        "0.0.0.0:0"
    } else {
        "127.0.0.1:0"
    };
    Ok(Layout {
        dir,
        topology,
        authorities,
        hosts,
        client_bind: client_bind.parse().map_err(|_| "client bind address")?,
        node_addrs,
        metrics,
        client_keys: keys.clients,
    })
}

/// Where a network's client keys are (`client-<id>.key`, mode 0600), beside its
/// topology, and the file naming each node's metrics address: what `loopix stress
/// --attach` reads to load a network it did not start.
pub const CLIENT_KEY_DIR: &str = "clients";
pub const METRICS_FILE: &str = "metrics.toml";

/// Writes the keys of `clients` and every node's metrics address into `dir`.
fn write_attachable<'a>(
    dir: &Path,
    clients: impl Iterator<Item = (&'a NodeId, &'a loopix_crypto::SecretKey)>,
    metrics: &BTreeMap<NodeId, SocketAddr>,
) -> Result<(), String> {
    let keys = dir.join(CLIENT_KEY_DIR);
    std::fs::create_dir_all(&keys).map_err(|e| format!("{}: {e}", keys.display()))?;
    for (id, key) in clients {
        let path = keys.join(format!("client-{}.key", id.0));
        let _ = std::fs::remove_file(&path);
        loopix_runtime::key_file::write_client_key(&path, key)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut text = String::from("# Each node's metrics address, by node id.\n[metrics]\n");
    for (id, addr) in metrics {
        text += &format!("{} = \"{addr}\"\n", id.0);
    }
    write(&dir.join(METRICS_FILE), &text)
}

/// A network this process did not start, to load: its topology file, the clients whose
/// key files are in `keys_dir` (`client-<id>.key`), and the nodes' metrics addresses
/// (those given are scraped). Clients bind `bind`.
pub(crate) fn attach(
    topology_path: &Path,
    keys_dir: &Path,
    metrics: BTreeMap<NodeId, SocketAddr>,
    bind: SocketAddr,
) -> Result<Layout, String> {
    let text = std::fs::read_to_string(topology_path)
        .map_err(|e| format!("{}: {e}", topology_path.display()))?;
    let topology =
        Topology::from_toml(&text).map_err(|e| format!("{}: {e}", topology_path.display()))?;
    let mut client_keys = BTreeMap::new();
    for c in &topology.clients {
        let path = keys_dir.join(format!("client-{}.key", c.id.0));
        if path.exists() {
            let key = loopix_runtime::key_file::read_client_key(&path)?;
            if key.public_key() != c.public_key {
                return Err(format!(
                    "{}: not the key the topology lists for client {}",
                    path.display(),
                    c.id.0
                ));
            }
            client_keys.insert(c.id, key);
        }
    }
    if client_keys.is_empty() {
        return Err(format!(
            "{}: no key file (client-<id>.key) of any client of {}",
            keys_dir.display(),
            topology_path.display()
        ));
    }
    if let Some(id) = metrics.keys().find(|id| topology.node(**id).is_none()) {
        return Err(format!("--metrics: node {} is not in the topology", id.0));
    }
    Ok(Layout {
        dir: topology_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        node_addrs: topology.nodes.iter().map(|n| (n.id, n.address)).collect(),
        topology,
        authorities: Vec::new(),
        hosts: BTreeMap::new(),
        client_bind: bind,
        metrics,
        client_keys,
    })
}

/// The metrics addresses a network's [`METRICS_FILE`] names.
pub(crate) fn read_metrics_file(path: &Path) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[derive(serde::Deserialize)]
    struct File {
        metrics: BTreeMap<String, String>,
    }
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    file.metrics
        .iter()
        .map(|(id, addr)| {
            let id = id
                .parse()
                .map_err(|_| format!("{}: {id} is not a node id", path.display()))?;
            let addr = addr
                .parse()
                .map_err(|_| format!("{}: {addr} is not an address", path.display()))?;
            Ok((NodeId(id), addr))
        })
        .collect()
}

/// A third of an epoch, at most the topology default (60 s): less than half, as a
/// schedule needs, with room for the links and clocks of one machine.
fn testnet_grace_s(epoch_s: u64) -> u64 {
    (epoch_s / 3).min(60)
}

/// Makes an authority's key and registry (`registry`, the same at every authority) in
/// `adir`.
fn prepare_authority(
    adir: &Path,
    registry: &str,
    address: SocketAddr,
) -> Result<AuthorityAddress, String> {
    std::fs::create_dir_all(adir).map_err(|e| format!("{}: {e}", adir.display()))?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| e.to_string())?;
    let key = IdentitySecret::from_bytes(*seed);
    let key_path = adir.join("authority.key");
    let _ = std::fs::remove_file(&key_path);
    loopix_runtime::key_file::write_identity_key(&key_path, &key)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    write(&adir.join("registry.toml"), registry)?;
    Ok(AuthorityAddress {
        address: address.to_string(),
        key: key.public(),
    })
}

pub(crate) fn node_ids(spec: &NetworkSpec) -> Vec<NodeId> {
    let mixes = u64::from(spec.layers) * u64::from(spec.mixes_per_layer);
    let providers =
        (0..u64::from(spec.providers)).map(|p| NodeId(loopix_sim::network::FIRST_PROVIDER + p));
    (1..=mixes).map(NodeId).chain(providers).collect()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Ports the kernel hands out for port 0, released again for the nodes to bind.
fn free_udp_ports(n: usize) -> Result<Vec<SocketAddr>, String> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    sockets
        .iter()
        .map(|s| s.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// A free loopback TCP port, held (in `held`) until the caller drops the list, so the
/// kernel cannot hand the same port out twice while the network's ports are chosen (an
/// authority and a node's metrics once got the same one).
fn free_tcp_port(held: &mut Vec<TcpListener>) -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    held.push(l);
    Ok(addr)
}

pub(crate) fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The node processes; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Nodes {
    children: Vec<(NodeId, Child)>,
    /// With `--directory`: the authorities, stopped after the nodes.
    authorities: Vec<Child>,
    /// Times each node was killed and started again.
    restarts: BTreeMap<NodeId, u64>,
}

/// Starts `loopix node` for node `id` of `layout`, its log appended to `node-<id>.log`; the
/// child dies with this process.
fn spawn_node(layout: &Layout, id: NodeId) -> Result<Child, String> {
    let config = layout.dir.join(format!("node-{}.toml", id.0));
    spawn_loopix(
        &["node".as_ref(), "--config".as_ref(), config.as_os_str()],
        &layout.dir.join(format!("node-{}.log", id.0)),
        layout.hosts.get(&format!("node-{}", id.0)),
    )
    .map_err(|e| format!("starting node {}: {e}", id.0))
}

/// Starts `loopix <args>`, its stderr appended to `log`, in the network namespace `host`
/// opened if one is given; the child dies with this process.
fn spawn_loopix(
    args: &[&std::ffi::OsStr],
    log: &Path,
    host: Option<&std::fs::File>,
) -> Result<Child, String> {
    use std::os::fd::AsRawFd;
    let host_fd = host.map(AsRawFd::as_raw_fd);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(&exe);
    // Each node's configuration names its backend (`--backend`); the environment's choice
    // came in through that flag and must not override it a second time.
    cmd.args(args)
        .env_remove("LOOPIX_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl and setns are async-signal-safe; the child dies with this process,
    // and starts in its host's namespace (the fd stays open in the parent until then).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if let Some(fd) = host_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| e.to_string())
}

/// Starts directory authority `i` of `layout` (its peers: the others) and waits until it
/// answers.
fn spawn_authority(layout: &Layout, i: usize) -> Result<Child, String> {
    let a = &layout.authorities[i];
    let adir = layout.dir.join(format!("authority-{i}"));
    let log = layout.dir.join(format!("authority-{i}.log"));
    let peers: Vec<String> = layout
        .authorities
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, p)| format!("{}@{}", hex::encode(p.key.to_bytes()), p.address))
        .collect();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "directory".as_ref(),
        "serve".as_ref(),
        "--dir".as_ref(),
        adir.as_os_str(),
        "--listen".as_ref(),
        a.address.as_ref(),
        "--bootstrap-wait-s".as_ref(),
        "20".as_ref(),
    ];
    for p in &peers {
        args.push("--peer".as_ref());
        args.push(p.as_ref());
    }
    let mut child = spawn_loopix(&args, &log, layout.hosts.get(&format!("directory-{i}")))
        .map_err(|e| format!("starting directory authority {i}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&a.address).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "directory authority {i} exited: {status}; see {}",
                log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("directory authority {i} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Nodes {
    /// No processes (a network started elsewhere).
    pub(crate) fn none() -> Self {
        Self {
            children: Vec::new(),
            authorities: Vec::new(),
            restarts: BTreeMap::new(),
        }
    }

    /// Each node's process id.
    pub(crate) fn pids(&self) -> impl Iterator<Item = (NodeId, u32)> + '_ {
        self.children.iter().map(|(id, c)| (*id, c.id()))
    }

    pub(crate) fn spawn(layout: &Layout) -> Result<Self, String> {
        let mut nodes = Self {
            children: Vec::new(),
            authorities: Vec::new(),
            restarts: BTreeMap::new(),
        };
        for i in 0..layout.authorities.len() {
            nodes.authorities.push(spawn_authority(layout, i)?);
        }
        for id in layout.node_addrs.keys() {
            let child = spawn_node(layout, *id)?;
            nodes.children.push((*id, child));
        }
        Ok(nodes)
    }

    /// Kills node `id` (SIGKILL: whatever it held is lost) and starts it again on the same
    /// files at once; returns once it is ready again (`GET /ready` on its metrics port).
    pub(crate) fn restart(&mut self, layout: &Layout, id: NodeId) -> Result<(), String> {
        let Some((_, child)) = self.children.iter_mut().find(|(i, _)| *i == id) else {
            return Err(format!("node {} is not running", id.0));
        };
        child
            .kill()
            .map_err(|e| format!("killing node {}: {e}", id.0))?;
        child.wait().map_err(|e| format!("node {}: {e}", id.0))?;
        *child = spawn_node(layout, id)?;
        *self.restarts.entry(id).or_default() += 1;
        let addr = layout.metrics[&id];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !loopix_load::scrape::ready(addr) {
            if Instant::now() > deadline {
                return Err(format!("node {} did not come back", id.0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until every node says it is ready (`GET /ready` on its metrics port: every
    /// shard reporting; another process answering on the port does not count).
    pub(crate) fn wait_ready(&mut self, layout: &Layout, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for (id, addr) in &layout.metrics {
            while !loopix_load::scrape::ready(*addr) {
                if let Some((_, c)) = self.children.iter_mut().find(|(i, _)| i == id)
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Err(format!(
                        "node {} exited: {status}; see {}",
                        id.0,
                        layout.dir.join(format!("node-{}.log", id.0)).display()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} did not come up", id.0));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    pub(crate) fn scrape(&self, layout: &Layout) -> BTreeMap<NodeId, NodeSummary> {
        let mut out = BTreeMap::new();
        for n in &layout.topology.nodes {
            let role = match n.role {
                Role::Mix { layer } => format!("mix-{layer}"),
                Role::Provider => "provider".into(),
            };
            let mut s = NodeSummary {
                id: n.id.0,
                role,
                restarts: self.restarts.get(&n.id).copied().unwrap_or(0),
                ..Default::default()
            };
            if let Some(text) = layout
                .metrics
                .get(&n.id)
                .and_then(|a| loopix_load::scrape::scrape(*a))
            {
                fill_from_metrics(&mut s, &text);
            }
            out.insert(n.id, s);
        }
        out
    }

    /// SIGTERM to all, then waits (SIGKILL after 10 s); returns who exited cleanly.
    /// A node that has exited while the network runs (nothing here stopped it), and how.
    pub(crate) fn died(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(id, c)| {
            c.try_wait().ok().flatten().map(|status| {
                format!(
                    "node {} exited while the network ran ({status}; its log: node-{}.log)",
                    id.0, id.0
                )
            })
        })
    }

    pub(crate) fn stop(&mut self) -> BTreeSet<NodeId> {
        for (_, c) in &self.children {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ok = BTreeSet::new();
        for (id, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(status)) => {
                        if status.success() {
                            ok.insert(*id);
                        }
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.children.clear();
        for mut a in self.authorities.drain(..) {
            let _ = a.kill();
            let _ = a.wait();
        }
        ok
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums a node's shard metrics into its summary.
pub(crate) fn fill_from_metrics(s: &mut NodeSummary, text: &str) {
    use loopix_load::scrape::{label, samples};
    for (name, labels, raw) in samples(text) {
        let value = raw as u64;
        match name {
            "loopix_build_info" => s.backend = label(labels, "backend").map(str::to_string),
            "loopix_packets_in_total" => s.packets_in += value,
            "loopix_packets_out_total" => s.packets_out += value,
            "loopix_packets_dropped_total" if value > 0 => {
                let reason = label(labels, "reason").unwrap_or("?");
                *s.drops.entry(reason.to_string()).or_default() += value;
            }
            "loopix_loop_overhead_seconds_sum" => s.loop_overhead_s_sum = raw,
            "loopix_loop_overhead_seconds_count" => s.loops_back = value,
            "loopix_fault_drops_total" => s.fault_drops += value,
            "loopix_document_epoch" => s.document_epoch = Some(value),
            "loopix_loops_failed_total" => s.loops_failed += value,
            "loopix_handshakes_total" if label(labels, "answer") == Some("session") => {
                let shard = label(labels, "shard").and_then(|v| v.parse().ok());
                *s.sessions_by_shard.entry(shard.unwrap_or(0)).or_default() += value;
            }
            "loopix_links_silent" => s.links_silent = Some(value),
            "loopix_directory_last_fetch_timestamp_seconds" => s.last_fetch_s = Some(value),
            "loopix_loop_return_fraction" => {
                s.loop_return_fraction = Some(s.loop_return_fraction.map_or(raw, |f| f.min(raw)));
            }
            _ => {}
        }
    }
    s.loop_overhead_ms =
        (s.loops_back > 0).then(|| s.loop_overhead_s_sum * 1e3 / s.loops_back as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_takes_the_clients_whose_keys_are_there_and_refuses_a_wrong_key() {
        let dir = std::env::temp_dir().join(format!("loopix-attach-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = NetworkSpec {
            clients: 3,
            ..NetworkSpec::default()
        };
        let addr = |id: NodeId| SocketAddr::from(([127, 0, 0, 1], 9000 + id.0 as u16));
        let Generated { topology, keys } = generate_at(&spec, 1, addr).unwrap();
        write(&dir.join("topology.toml"), &topology.to_toml()).unwrap();
        let metrics: BTreeMap<NodeId, SocketAddr> =
            topology.nodes.iter().map(|n| (n.id, addr(n.id))).collect();
        // The first client runs elsewhere: only the other two keys are written.
        write_attachable(&dir, keys.clients.iter().skip(1), &metrics).unwrap();
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let keys_dir = dir.join(CLIENT_KEY_DIR);
        let read = read_metrics_file(&dir.join(METRICS_FILE)).unwrap();
        assert_eq!(read, metrics);
        let layout = attach(&dir.join("topology.toml"), &keys_dir, read, bind).unwrap();
        let ids: Vec<NodeId> = keys.clients.keys().copied().collect();
        assert_eq!(
            layout.client_keys.keys().copied().collect::<Vec<_>>(),
            ids[1..]
        );
        assert_eq!(layout.node_addrs.len(), topology.nodes.len());
        // A node the topology does not list cannot be scraped.
        let stray = BTreeMap::from([(NodeId(999_999), bind)]);
        assert!(attach(&dir.join("topology.toml"), &keys_dir, stray, bind).is_err());
        // Another client's key under this client's name is refused.
        let first = keys_dir.join(format!("client-{}.key", ids[0].0));
        loopix_runtime::key_file::write_client_key(&first, &keys.clients[&ids[2]]).unwrap();
        let Err(e) = attach(&dir.join("topology.toml"), &keys_dir, BTreeMap::new(), bind) else {
            panic!("another client's key was taken");
        };
        assert!(e.contains("not the key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
