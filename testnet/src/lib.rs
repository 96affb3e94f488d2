//! `loopix testnet`: a whole Loopix network on loopback, from nothing.
//!
//! Generates keys and a topology in a fresh directory, starts every mix and provider as
//! its own `loopix node` process, runs the clients (in this process, each with its own
//! socket, on a thread per core) exchanging real messages under cover traffic, and ends with a
//! summary: real messages sent, delivered, lost, duplicated; end-to-end latency; packets
//! and drops per node. Ctrl-C stops everything; child nodes also die with this process
//! (PR_SET_PDEATHSIG), so none is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use loopix_core::drops::DropReason;
use loopix_core::network::topology::{Role, Topology};
use loopix_core::pki::document::Threshold;
use loopix_core::pki::registry::registry_toml;
use loopix_core::roles::RoleConfig;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::{Client, ClientEvent};
use loopix_core::session::FrameLayout;
use loopix_crypto::{IdentitySecret, NodeId};
use loopix_runtime::client_driver::{ClientOutput, RunningClient, follow_directory};
use loopix_runtime::client_host::{ClientHost, host_threads};
use loopix_runtime::directory_client::{
    AuthorityAddress, DirectoryConfig, DirectorySync, DirectoryWatch,
};
use loopix_sim::network::{Generated, NetworkSpec, generate_at};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

pub mod netns;

use loopix_load::handshake_flood::{self, Flood, FloodAt, FloodSummary};

/// The testnet's `limits.max_socket_wait_ms` (a dedicated node's default is 100): a whole
/// network shares this machine's few cores, where a process may wait a scheduler tick or
/// more to run, so a node sheds only what waited a whole second.
const TESTNET_MAX_SOCKET_WAIT_MS: u64 = 1_000;

/// Options of `loopix testnet`.
#[derive(Args, Debug, Clone)]
pub struct TestnetArgs {
    /// The nodes' I/O backend: `auto` (io_uring where this host allows it, else portable,
    /// each node saying why), `io_uring`, or `portable`.
    #[arg(long, env = "LOOPIX_BACKEND", default_value = "auto")]
    backend: loopix_runtime::backend::Backend,
    /// Mix layers.
    #[arg(long, default_value_t = 3)]
    layers: u8,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 2)]
    mixes_per_layer: u32,
    /// Providers (the clients are spread over them).
    #[arg(long, default_value_t = 2)]
    providers: u32,
    /// Clients, run in this process.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// How long clients send real messages, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// How long to wait after that for the last messages to arrive, in seconds.
    #[arg(long, default_value_t = 20.0)]
    drain_s: f64,
    /// Mean seconds between one client's real messages.
    #[arg(long, default_value_t = 2.0)]
    message_interval_s: f64,
    /// Shards per node process, mixes and providers (a provider's clients each live on a
    /// home shard).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// µ: each hop's delay is Exp(µ), mean 1/µ seconds.
    #[arg(long, default_value_t = 20.0)]
    mu_per_s: f64,
    /// λP = λL = λD for every client.
    #[arg(long, default_value_t = 2.0)]
    lambda_per_s: f64,
    /// λM for every mix.
    #[arg(
        long = "lambda-mix-loop-per-s",
        alias = "mix-loop-per-s",
        default_value_t = 2.0
    )]
    mix_loop_per_s: f64,
    /// How often each client polls its provider.
    #[arg(long, default_value_t = 5.0)]
    poll_rate_per_s: f64,
    /// N: items in every poll answer.
    #[arg(long, default_value_t = 4)]
    poll_size: u16,
    /// Application bytes per packet.
    #[arg(long, default_value_t = loopix_crypto::DEFAULT_PAYLOAD_BYTES)]
    payload_bytes: usize,
    /// Where to put keys, configs, stores and logs (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Fault injection: every node drops this share of the datagrams it sends (each
    /// node's `[faults] drop_fraction`), as lossy links would; with `--netns`, every
    /// routed link drops it.
    #[arg(long, default_value_t = 0.0)]
    link_loss: f64,
    /// Fault injection: every node holds each datagram it sends this much longer; with
    /// `--netns`, every routed link delays each packet this much.
    #[arg(long, default_value_t = 0)]
    link_delay_ms: u64,
    /// Chaos: this many seconds into the traffic, kill the first layer-1 mix (SIGKILL:
    /// whatever it held is lost) and start it again at once.
    #[arg(long)]
    kill_mix_after_s: Option<f64>,
    /// Sends of one fragment before its message is given up: every fragment asks its
    /// recipient for an acknowledgement and is sent again until it comes (0: no acks).
    #[arg(long, default_value_t = DEFAULT_ACK_ATTEMPTS)]
    ack_attempts: u32,
    /// Run a directory authority (`loopix directory serve`): every node uploads its keys
    /// to it and takes each epoch's signed document from it, and so do the clients; no
    /// topology file is handed out.
    #[arg(long)]
    directory: bool,
    /// Run every node, the directory authority and the clients in network namespaces of
    /// their own (implies `--directory`), routed through a router namespace whose links
    /// carry `--link-delay-ms` and `--link-loss`. Needs root, iproute2 and /dev/net/tun.
    #[arg(long)]
    netns: bool,
    /// Directory authorities (with `--directory` or `--netns`): each signs every document
    /// and gathers the others' signatures, and nodes and clients require all of them.
    #[arg(long, default_value_t = 1)]
    authorities: usize,
    /// Key epoch length, s (the grace around a boundary is a third of it, at most 60 s):
    /// short epochs show nodes and clients switching keys and documents as they run.
    #[arg(long, default_value_t = 1200)]
    epoch_s: u64,
    /// Attack: while the clients run, send this many handshake-shaped junk frames a
    /// second (receiver index 0, random bytes, one frame length) at `--flood-at`.
    #[arg(long, default_value_t = 0)]
    flood_handshakes_per_s: u32,
    /// Where the flood goes: the first provider, or a closed port on its host (a control
    /// run that costs the machine the same sending).
    #[arg(long, value_enum, default_value_t = FloodAt::Provider)]
    flood_at: FloodAt,
}

/// Enough for 5 % loss on every link and a mix down for a minute (the simulation's test);
/// the waits double up to 16 times the first, so the last attempt goes minutes later.
const DEFAULT_ACK_ATTEMPTS: u32 = 8;

/// The end-of-run summary (`--json` prints it).
#[derive(Serialize, Debug)]
pub struct Summary {
    pub sent_real: u64,
    pub delivered_real: u64,
    /// Left their senders in time to arrive before the end, and never did.
    pub lost_real: u64,
    /// Left their senders too late to be judged: within `late_window_s` of the end.
    pub in_flight_real: u64,
    /// Never (completely) left their senders: given too late in the run to leave, or the
    /// clients could not keep up.
    pub unsent_real: u64,
    /// Of those, messages given long enough before the end to have left (more than the
    /// drain and the late window before it): stuck at their senders (no session with
    /// their provider, or a network that does not run). The run fails on any.
    pub stuck_real: u64,
    /// A node that exited while the network ran; the run stopped there and fails.
    pub node_died: Option<String>,
    /// How long before the end a message must have left to count as lost when missing:
    /// four mean path delays ((layers + 2) / µ) and two poll intervals.
    pub late_window_s: f64,
    pub duplicates: u64,
    pub misdelivered: u64,
    pub latency_ms: Latency,
    /// Mean over every returned mix loop of its overhead, ms (see [`NodeSummary`]).
    pub loop_overhead_ms: Option<f64>,
    pub nodes: Vec<NodeSummary>,
    pub dir: String,
    pub duration_s: f64,
    /// The most any client's timer fired after its deadline, ms, and how many fired over
    /// 50 ms late: the clients could not run on time (the machine is saturated), so their
    /// sending and the latency figures bent with it.
    pub client_timer_lag_max_ms: f64,
    pub client_timers_late: u64,
    /// Frames the clients' sockets refused to send, and receives that failed.
    pub client_send_errors: u64,
    pub client_recv_errors: u64,
    /// With acks: messages whose senders heard every fragment acknowledged, and messages
    /// given up (a fragment out of attempts: these count as lost).
    pub acked_real: u64,
    pub gave_up_real: u64,
    /// Fragment packets sent again because their ack was late, and acks the clients sent.
    pub retransmitted: u64,
    pub acks_sent: u64,
    /// Acks not sent because their reply block's key was gone by then (the fragment
    /// waited past its epoch's grace): the sender sent the fragment again instead.
    pub acks_expired: u64,
    /// What one real message cost in packets on the wire: its fragments' sends (first and
    /// again) and the acks of what arrived, over the messages sent. Acks and resends take
    /// payload and drop ticks, so the wire's rate is unchanged; this is how many of those
    /// ticks a message used.
    pub packets_per_message: f64,
    /// With `--directory`: network documents the clients took after the first (one at
    /// each epoch boundary crossed).
    pub documents_switched: u64,
    pub epoch_s: u64,
    /// With `--netns`: what the links between the hosts did.
    pub links: Option<LinksSummary>,
    /// With `--flood-handshakes-per-s`: what the flood sent.
    pub flood: Option<FloodSummary>,
}

/// The routed links of `--netns`.
#[derive(Serialize, Debug, Default)]
pub struct LinksSummary {
    pub delay_ms: u64,
    pub loss: f64,
    /// Packets carried, dropped on purpose, and dropped for a full delay line or refused.
    pub forwarded: u64,
    pub lost: u64,
    pub overflow: u64,
    pub write_errors: u64,
    /// Links a mix loop crosses (every layer and a provider, and back): its overhead is at
    /// least this many delays.
    pub links_per_mix_loop: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

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

/// Runs the network and prints the summary. Fails if any real message was lost or
/// delivered twice, so `loopix testnet` doubles as a smoke test.
pub fn run(args: &TestnetArgs) -> Result<(), String> {
    for (flag, s) in [
        ("--duration-s", args.duration_s),
        ("--drain-s", args.drain_s),
    ] {
        if Duration::try_from_secs_f64(s).is_err() {
            return Err(format!("{flag}: {s} is not a number of seconds"));
        }
    }
    if args.epoch_s == 0 {
        return Err("--epoch-s: must be at least 1".into());
    }
    if args.authorities == 0 {
        return Err("--authorities: must be at least 1".into());
    }
    if !(0.0..1.0).contains(&args.link_loss) {
        return Err(format!("--link-loss: {} is not in [0, 1)", args.link_loss));
    }
    if let Some(s) = args.kill_mix_after_s
        && Duration::try_from_secs_f64(s).is_err()
    {
        return Err(format!(
            "--kill-mix-after-s: {s} is not a number of seconds"
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let summary = run_network(args, &stop)?;
    if args.json {
        loopix_load::json::print(&summary)?;
    } else {
        print_summary(&summary);
    }
    if let Some(why) = &summary.node_died {
        return Err(why.clone());
    }
    let unclean: Vec<String> = summary
        .nodes
        .iter()
        .filter(|n| !n.exit_ok)
        .map(|n| n.id.to_string())
        .collect();
    if !unclean.is_empty() {
        return Err(format!(
            "node(s) {} did not stop cleanly (see their logs)",
            unclean.join(", ")
        ));
    }
    if summary.stuck_real > 0 {
        return Err(format!(
            "{} real messages never left their senders though given more than {:.0} s before \
             the end (no session with their provider, or a network that does not run)",
            summary.stuck_real,
            args.drain_s + summary.late_window_s
        ));
    }
    if summary.lost_real > 0 || summary.duplicates > 0 || summary.misdelivered > 0 {
        return Err(format!(
            "{} lost, {} duplicated, {} misdelivered real messages",
            summary.lost_real, summary.duplicates, summary.misdelivered
        ));
    }
    Ok(())
}

struct Layout {
    dir: PathBuf,
    /// The network as generated; with a directory, nodes and clients never read it.
    topology: Topology,
    /// With `--directory`: the authorities' addresses and keys (`authority-<i>/`).
    authorities: Vec<AuthorityAddress>,
    /// With `--netns`: each host's namespace, by name (`node-<id>`, `directory`).
    hosts: BTreeMap<String, std::fs::File>,
    /// Where clients bind.
    client_bind: SocketAddr,
    node_addrs: BTreeMap<NodeId, SocketAddr>,
    metrics: BTreeMap<NodeId, SocketAddr>,
    client_keys: BTreeMap<NodeId, loopix_crypto::SecretKey>,
}

fn run_network(args: &TestnetArgs, stop: &AtomicBool) -> Result<Summary, String> {
    let net = if args.netns {
        Some(virtual_net(args)?)
    } else {
        None
    };
    let layout = prepare(args, net.as_ref())?;
    let mut nodes = Nodes::spawn(&layout)?;
    // With a directory, a node binds once a document lists it: every node's upload and
    // the authority's first document come first.
    let ready_limit = if layout.authorities.is_empty() {
        20
    } else {
        60
    };
    nodes.wait_ready(&layout, Duration::from_secs(ready_limit))?;
    progress(
        args,
        &format!(
            "network up: {} nodes in {}",
            layout.node_addrs.len(),
            layout.dir.display()
        ),
    );
    let (mut clients, watch, switched) = start_clients(args, &layout)?;
    let flood = start_flood(args, &layout)?;
    let mut traffic = Traffic::default();
    drive(args, &layout, &mut nodes, &mut clients, &mut traffic, stop);
    let flood = flood.map(Flood::stop);
    let node_stats = nodes.scrape(&layout);
    let lag = clients
        .iter()
        .map(RunningClient::timer_lag)
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1 + b.1));
    for c in &clients {
        c.request_stop();
    }
    let socket_errors = clients
        .iter()
        .map(RunningClient::socket_errors)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    for c in &mut clients {
        c.stop();
        collect(c, &mut traffic);
    }
    drop(watch);
    let exits = nodes.stop();
    let mut summary = traffic.summary(args, &layout, node_stats, exits);
    summary.documents_switched = switched.load(Ordering::SeqCst);
    summary.flood = flood;
    summary.links = net.as_ref().map(|n| LinksSummary {
        delay_ms: args.link_delay_ms,
        loss: args.link_loss,
        forwarded: n.stats.forwarded.load(Ordering::Relaxed),
        lost: n.stats.lost.load(Ordering::Relaxed),
        overflow: n.stats.overflow.load(Ordering::Relaxed),
        write_errors: n.stats.write_errors.load(Ordering::Relaxed),
        links_per_mix_loop: u64::from(args.layers) + 1,
    });
    summary.client_timer_lag_max_ms = lag.0 as f64 / 1e3;
    summary.client_timers_late = lag.1;
    (summary.client_send_errors, summary.client_recv_errors) = socket_errors;
    Ok(summary)
}

/// `--flood-handshakes-per-s`: the flood, started.
fn start_flood(args: &TestnetArgs, layout: &Layout) -> Result<Option<Flood>, String> {
    if args.flood_handshakes_per_s == 0 {
        return Ok(None);
    }
    let provider = layout
        .topology
        .providers()
        .next()
        .ok_or("no provider to flood")?;
    let address = layout.node_addrs[&provider.id];
    let target = match args.flood_at {
        FloodAt::Provider => address,
        FloodAt::Elsewhere => handshake_flood::closed_port(address.ip())?,
    };
    let network = &layout.topology.network;
    let frame_len = FrameLayout::new(&network.params, network.poll_size).frame_len();
    progress(
        args,
        &format!(
            "flooding {target} with {} handshake-shaped frames/s",
            args.flood_handshakes_per_s
        ),
    );
    Flood::start(
        target,
        args.flood_at,
        args.flood_handshakes_per_s,
        frame_len,
    )
    .map(Some)
}

/// The namespaces of `--netns`: a host for every node, the directory and the clients;
/// this thread moves into the clients' host, so everything the testnet itself does (the
/// clients, fetches, scrapes) crosses the routed links too.
fn virtual_net(args: &TestnetArgs) -> Result<crate::netns::VirtualNet, String> {
    let mut hosts: Vec<String> = (0..args.authorities)
        .map(|i| format!("directory-{i}"))
        .collect();
    hosts.push("clients".into());
    hosts.extend(
        node_ids(&spec(args))
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
fn spec(args: &TestnetArgs) -> NetworkSpec {
    NetworkSpec {
        layers: args.layers,
        mixes_per_layer: args.mixes_per_layer,
        providers: args.providers,
        clients: args.clients,
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
        published_epochs: ((args.duration_s + args.drain_s) / args.epoch_s as f64) as u32 + 3,
        ..NetworkSpec::default()
    }
}

/// Picks addresses (free loopback ports, or the hosts of `net`), writes keys, topology
/// and node configs.
fn prepare(args: &TestnetArgs, net: Option<&crate::netns::VirtualNet>) -> Result<Layout, String> {
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
    let spec = spec(args);
    let node_count = (u64::from(args.layers) * u64::from(args.mixes_per_layer)
        + u64::from(args.providers)) as usize;
    let ids = node_ids(&spec);
    let host = |id: NodeId| {
        net.and_then(|n| n.addr(&format!("node-{}", id.0)))
            .ok_or_else(|| format!("no host for node {}", id.0))
    };
    let node_addrs: BTreeMap<NodeId, SocketAddr> = match net {
        None => ids
            .iter()
            .copied()
            .zip(free_udp_ports(node_count)?)
            .collect(),
        Some(_) => ids
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
            let address = match net.and_then(|n| n.addr(&format!("directory-{i}"))) {
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
        let metrics_addr = match net {
            Some(_) => SocketAddr::new(host(n.id)?, 9100),
            None => free_tcp_port(&mut held_ports)?,
        };
        metrics.insert(n.id, metrics_addr);
        let shards = args.shards;
        let extra = match n.role {
            Role::Mix { .. } => String::new(),
            Role::Provider => format!("inbox_path = \"node-{}.redb\"\n", n.id.0),
        };
        let mut config = format!(
            "{topology_line}id = {}\nkey_file = \"node-{}.key\"\nshards = {shards}\nmetrics = \"{metrics_addr}\"\ngrace_ms = 1000\nbackend = \"{}\"\n{extra}[limits]\npool_packets = 16384\nmax_packets_per_s = 500\nmax_socket_wait_ms = {TESTNET_MAX_SOCKET_WAIT_MS}\n",
            n.id.0, n.id.0, args.backend
        );
        // With hosts, the links themselves are slow and lossy; on loopback the nodes are.
        if net.is_none() && (args.link_loss > 0.0 || args.link_delay_ms > 0) {
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
    let client_bind = if net.is_some() {
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

fn node_ids(spec: &NetworkSpec) -> Vec<NodeId> {
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

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The node processes; stopped (SIGTERM, then SIGKILL) when dropped.
struct Nodes {
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
    fn spawn(layout: &Layout) -> Result<Self, String> {
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
    fn restart(&mut self, layout: &Layout, id: NodeId) -> Result<(), String> {
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
    fn wait_ready(&mut self, layout: &Layout, limit: Duration) -> Result<(), String> {
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

    fn scrape(&self, layout: &Layout) -> BTreeMap<NodeId, NodeSummary> {
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
    fn died(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(id, c)| {
            c.try_wait().ok().flatten().map(|status| {
                format!(
                    "node {} exited while the network ran ({status}; its log: node-{}.log)",
                    id.0, id.0
                )
            })
        })
    }

    fn stop(&mut self) -> BTreeSet<NodeId> {
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
fn fill_from_metrics(s: &mut NodeSummary, text: &str) {
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

/// What [`start_clients`] started: the clients, and with a directory the thread that
/// hands them each new document and how many it has handed over.
type StartedClients = (Vec<RunningClient>, Option<DirectoryWatch>, Arc<AtomicU64>);

fn start_clients(args: &TestnetArgs, layout: &Layout) -> Result<StartedClients, String> {
    // With a directory, the clients build paths from its documents only.
    let (topology, sync) = match layout.authorities.len() {
        0 => (layout.topology.clone(), None),
        all => {
            let config = DirectoryConfig::new(layout.authorities.clone(), Threshold::AtLeast(all))
                .map_err(|e| e.to_string())?;
            let mut sync = DirectorySync::new(config, None);
            let topology =
                sync.wait_for(Duration::from_secs(60), &AtomicBool::new(false), |_| Ok(()))?;
            (topology, Some(sync))
        }
    };
    let mut out = Vec::new();
    // The clients share a thread per core, not one each.
    let mut host =
        ClientHost::new(host_threads(layout.client_keys.len())).map_err(|e| e.to_string())?;
    for (id, key) in &layout.client_keys {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
        let config = RoleConfig {
            max_buffered_fragments: 10_000,
            acks: AckConfig {
                max_attempts: args.ack_attempts,
            },
            ..RoleConfig::client(*id, key.clone()).seeded(seed)
        };
        let client = Client::new(&topology, config).map_err(|e| e.to_string())?;
        let running = host
            .start(client, layout.client_bind)
            .map_err(|e| e.to_string())?;
        out.push(running);
    }
    let switched = Arc::new(AtomicU64::new(0));
    let watch = sync
        .map(|sync| follow_directory(sync, &out, Arc::clone(&switched)))
        .transpose()
        .map_err(|e| format!("directory thread: {e}"))?;
    Ok((out, watch, switched))
}

/// Real messages in flight and what became of them.
#[derive(Default)]
struct Traffic {
    /// Queued messages: sender, recipient, queue time, content.
    sent: BTreeMap<u64, (NodeId, NodeId, Instant, Vec<u8>)>,
    delivered: BTreeMap<u64, u32>,
    misdelivered: u64,
    latencies_ms: Vec<f64>,
    pending_queue: BTreeMap<NodeId, Vec<(NodeId, Instant, Vec<u8>)>>,
    /// Fragments of each message that have left their sender, and when the last did.
    left: BTreeMap<u64, (u16, u16, Instant)>,
    /// When the run stopped waiting for deliveries.
    ended: Option<Instant>,
    /// A node that died while the network ran: the run stops there.
    node_died: Option<String>,
    /// Messages their senders heard acknowledged, and gave up.
    acked: BTreeSet<u64>,
    gave_up: BTreeSet<u64>,
    /// From the clients' final counters.
    fragments_sent: u64,
    retransmitted: u64,
    acks_sent: u64,
    acks_expired: u64,
}

fn drive(
    args: &TestnetArgs,
    layout: &Layout,
    nodes: &mut Nodes,
    clients: &mut [RunningClient],
    t: &mut Traffic,
    stop: &AtomicBool,
) {
    let mut rng = ChaCha20Rng::seed_from_u64(unix_ms() as u64);
    let ids: Vec<NodeId> = clients.iter().map(|c| c.id).collect();
    let start = Instant::now();
    // `--kill-mix-after-s`: the first layer-1 mix, once.
    let mut kill = args.kill_mix_after_s.and_then(|s| {
        let mix = layout
            .topology
            .nodes
            .iter()
            .find(|n| n.role == Role::Mix { layer: 1 })?;
        Some((start + Duration::from_secs_f64(s), mix.id))
    });
    // Both checked in `run` (finite, not negative).
    let send_until = start + Duration::from_secs_f64(args.duration_s);
    let drain_until = send_until + Duration::from_secs_f64(args.drain_s);
    let mut next_send: Vec<Instant> = ids
        .iter()
        .map(|_| start + exp(&mut rng, args.message_interval_s))
        .collect();
    let mut last_progress = start;
    let mut last_death_check = start;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let settled = t.delivered.len() == t.sent.len()
            && (args.ack_attempts == 0 || t.acked.len() + t.gave_up.len() >= t.sent.len());
        if now >= drain_until || (now >= send_until && settled) {
            break;
        }
        if now.duration_since(last_death_check) >= Duration::from_millis(100) {
            last_death_check = now;
            if let Some(why) = nodes.died() {
                progress(args, &why);
                t.node_died = Some(why);
                break;
            }
        }
        if let Some((at, mix)) = kill
            && now >= at
        {
            kill = None;
            match nodes.restart(layout, mix) {
                Ok(()) => progress(args, &format!("killed mix {} and started it again", mix.0)),
                Err(e) => progress(args, &format!("chaos: {e}")),
            }
        }
        for (i, c) in clients.iter().enumerate() {
            if now < send_until && now >= next_send[i] {
                let to =
                    ids[(i + 1 + (rng.next_u64() as usize % (ids.len() - 1).max(1))) % ids.len()];
                n += 1;
                let message = format!("message {n} from {} to {}", c.id.0, to.0).into_bytes();
                t.pending_queue
                    .entry(c.id)
                    .or_default()
                    .push((to, now, message.clone()));
                c.send(to, message);
                next_send[i] = now + exp(&mut rng, args.message_interval_s);
            }
        }
        for c in clients.iter() {
            collect(c, t);
        }
        if now.duration_since(last_progress) >= Duration::from_secs(5) {
            last_progress = now;
            let phase = if now < send_until {
                "sending"
            } else {
                "draining"
            };
            progress(
                args,
                &format!(
                    "{:>4.0} s {phase}: {} real messages sent, {} delivered",
                    now.duration_since(start).as_secs_f64(),
                    t.sent.len(),
                    t.delivered.len()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    t.ended = Some(Instant::now());
    let _ = layout;
}

/// Takes a client's outputs: queue answers and deliveries.
fn collect(c: &RunningClient, t: &mut Traffic) {
    while let Ok(out) = c.output.try_recv() {
        match out {
            ClientOutput::Queued(Ok(msg_id)) => {
                let q = t.pending_queue.entry(c.id).or_default();
                if !q.is_empty() {
                    let (to, at, content) = q.remove(0);
                    t.sent.insert(msg_id, (c.id, to, at, content));
                }
            }
            ClientOutput::Queued(Err(_)) => {
                t.pending_queue.entry(c.id).or_default().remove(0);
            }
            ClientOutput::Event(ClientEvent::FragmentSent { msg_id, count, .. }) => {
                let entry = t.left.entry(msg_id).or_insert((0, count, Instant::now()));
                entry.0 += 1;
                entry.2 = Instant::now();
            }
            ClientOutput::Event(ClientEvent::Delivered {
                msg_id, message, ..
            }) => match t.sent.get(&msg_id) {
                Some((_, to, at, content)) if *to == c.id && *content == message => {
                    if t.delivered.insert(msg_id, 1).is_none() {
                        t.latencies_ms.push(at.elapsed().as_secs_f64() * 1e3);
                    } else if let Some(n) = t.delivered.get_mut(&msg_id) {
                        *n += 1;
                    }
                }
                _ => t.misdelivered += 1,
            },
            ClientOutput::Event(ClientEvent::Acked { msg_id, .. }) => {
                t.acked.insert(msg_id);
            }
            ClientOutput::Event(ClientEvent::GaveUp { msg_id, .. }) => {
                t.gave_up.insert(msg_id);
            }
            ClientOutput::Stopped(stats) => {
                t.fragments_sent += stats.sent_real;
                t.retransmitted += stats.retransmitted;
                t.acks_sent += stats.acks_sent;
                t.acks_expired += stats.acks_expired;
            }
            _ => {}
        }
    }
}

impl Traffic {
    fn summary(
        mut self,
        args: &TestnetArgs,
        layout: &Layout,
        nodes: BTreeMap<NodeId, NodeSummary>,
        exits: BTreeSet<NodeId>,
    ) -> Summary {
        self.latencies_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let v = &self.latencies_ms;
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize]
            }
        };
        let nodes: Vec<NodeSummary> = nodes
            .into_iter()
            .map(|(id, mut s)| {
                s.exit_ok = exits.contains(&id);
                s
            })
            .collect();
        let loops: u64 = nodes.iter().map(|n| n.loops_back).sum();
        let overhead_s: f64 = nodes.iter().map(|n| n.loop_overhead_s_sum).sum();
        let sent = self.sent.len() as u64;
        let delivered = self.delivered.len() as u64;
        let window_s = 4.0 * (f64::from(args.layers) + 2.0) / args.mu_per_s
            + 2.0 / args.poll_rate_per_s.max(1e-3);
        let ended = self.ended.unwrap_or_else(Instant::now);
        let missing = self
            .sent
            .keys()
            .filter(|id| !self.delivered.contains_key(id));
        // With acks a sender knows: a missing message it has not given up is still being
        // sent again (in flight), one it gave up is lost.
        let (in_flight, unsent, gave_up) = if args.ack_attempts > 0 {
            let (given_up, retrying): (Vec<&u64>, Vec<&u64>) =
                missing.partition(|id| self.gave_up.contains(id));
            let (_, unsent) = late_or_unsent(retrying.iter().copied(), &self.left, ended, window_s);
            let in_flight = retrying.len() as u64 - unsent;
            (in_flight, unsent, given_up.len() as u64)
        } else {
            let (in_flight, unsent) = late_or_unsent(missing, &self.left, ended, window_s);
            (in_flight, unsent, 0)
        };
        // Unsent and given more than the drain and the late window before the end.
        let stuck = self
            .sent
            .iter()
            .filter(|(id, (_, _, queued, _))| {
                !self.delivered.contains_key(id)
                    && left_whole(&self.left, id).is_none()
                    && ended.duration_since(*queued).as_secs_f64() > args.drain_s + window_s
            })
            .count() as u64;
        Summary {
            sent_real: sent,
            delivered_real: delivered,
            lost_real: sent - delivered - in_flight - unsent,
            in_flight_real: in_flight,
            unsent_real: unsent,
            stuck_real: stuck,
            node_died: self.node_died.clone(),
            late_window_s: window_s,
            duplicates: self.delivered.values().map(|&n| u64::from(n - 1)).sum(),
            misdelivered: self.misdelivered,
            latency_ms: Latency {
                p50: pct(0.5),
                p99: pct(0.99),
                max: pct(1.0),
            },
            loop_overhead_ms: (loops > 0).then(|| overhead_s * 1e3 / loops as f64),
            nodes,
            dir: layout.dir.display().to_string(),
            duration_s: args.duration_s,
            client_timer_lag_max_ms: 0.0,
            client_timers_late: 0,
            client_send_errors: 0,
            client_recv_errors: 0,
            acked_real: self.acked.len() as u64,
            gave_up_real: gave_up,
            retransmitted: self.retransmitted,
            acks_sent: self.acks_sent,
            acks_expired: self.acks_expired,
            packets_per_message: if sent == 0 {
                0.0
            } else {
                (self.fragments_sent + self.acks_sent) as f64 / sent as f64
            },
            documents_switched: 0,
            epoch_s: args.epoch_s,
            links: None,
            flood: None,
        }
    }
}

/// Of the messages never delivered: how many left their senders (every fragment) less
/// than `window_s` before `ended` (still in flight), and how many never left.
fn late_or_unsent<'a>(
    missing: impl Iterator<Item = &'a u64>,
    left: &BTreeMap<u64, (u16, u16, Instant)>,
    ended: Instant,
    window_s: f64,
) -> (u64, u64) {
    let (mut in_flight, mut unsent) = (0, 0);
    for id in missing {
        match left_whole(left, id) {
            Some(last) => {
                in_flight += u64::from(ended.duration_since(last).as_secs_f64() < window_s);
            }
            None => unsent += 1,
        }
    }
    (in_flight, unsent)
}

/// When the last fragment of message `id` left its sender, if every one has.
fn left_whole(left: &BTreeMap<u64, (u16, u16, Instant)>, id: &u64) -> Option<Instant> {
    left.get(id)
        .and_then(|&(n, count, last)| (n >= count).then_some(last))
}

fn exp(rng: &mut ChaCha20Rng, mean_s: f64) -> Duration {
    let us = loopix_core::roles::rate::exp_us(rng, 1.0 / mean_s.max(1e-6)).unwrap_or(0);
    Duration::from_micros(us)
}

fn progress(args: &TestnetArgs, line: &str) {
    let _ = args;
    eprintln!("testnet: {line}");
}

fn print_summary(s: &Summary) {
    println!(
        "loopix testnet: {} s of traffic, files in {}",
        s.duration_s, s.dir
    );
    println!(
        "real messages: {} sent, {} delivered, {} lost, {} duplicated, {} misdelivered",
        s.sent_real, s.delivered_real, s.lost_real, s.duplicates, s.misdelivered
    );
    if let Some(f) = &s.flood {
        let refused: u64 = s
            .nodes
            .iter()
            .filter_map(|n| n.drops.get(DropReason::HandshakeMac.name()))
            .sum();
        println!(
            "flood: {} handshake-shaped frames to {} ({:?}), {} refused by mac1 without a DH",
            f.sent, f.target, f.at, refused
        );
    }
    if s.acked_real + s.gave_up_real + s.retransmitted + s.acks_sent > 0 {
        println!(
            "acks: {} messages acknowledged, {} given up; {} fragments sent again, {} acks sent; \
             {:.2} packets per message",
            s.acked_real, s.gave_up_real, s.retransmitted, s.acks_sent, s.packets_per_message
        );
    }
    if let Some(epoch) = s.nodes.iter().filter_map(|n| n.document_epoch).min() {
        println!(
            "directory: clients took {} new documents ({} s epochs); every node at epoch {epoch} or later",
            s.documents_switched, s.epoch_s
        );
    }
    if let Some(l) = &s.links {
        println!(
            "links: {} ms, {:.1} % loss; {} packets carried, {} lost, {} overflowed",
            l.delay_ms,
            l.loss * 100.0,
            l.forwarded,
            l.lost,
            l.overflow + l.write_errors
        );
    }
    if s.in_flight_real + s.unsent_real > 0 {
        println!(
            "not judged: {} still in flight (left their senders less than {:.1} s before the end), \
             {} never left their senders (the clients fell behind: the machine is saturated, \
             or the drain was too short)",
            s.in_flight_real, s.late_window_s, s.unsent_real
        );
    }
    if s.client_send_errors + s.client_recv_errors > 0 {
        println!(
            "client sockets refused {} sends and {} receives",
            s.client_send_errors, s.client_recv_errors
        );
    }
    if s.client_timers_late > 0 {
        println!(
            "the machine is saturated: client timers fired up to {:.0} ms late ({} over 50 ms); \
             the clients' sending and the latencies below bent with it (fewer clients, or a \
             bigger machine)",
            s.client_timer_lag_max_ms, s.client_timers_late
        );
    }
    println!(
        "end-to-end latency (queued -> delivered): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max
    );
    if let Some(ms) = s.loop_overhead_ms {
        println!("mix loop overhead (round trip minus requested delays): mean {ms:.2} ms");
    }
    let mut backends: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &s.nodes {
        *backends
            .entry(n.backend.as_deref().unwrap_or("unknown"))
            .or_default() += 1;
    }
    let backends: Vec<String> = backends
        .iter()
        .map(|(b, n)| format!("{n} on {b}"))
        .collect();
    println!("I/O backends: {}", backends.join(", "));
    println!(
        "\n{:>6} {:<9} {:>10} {:>10}  drops",
        "node", "role", "in", "out"
    );
    for n in &s.nodes {
        let drops: Vec<String> = n.drops.iter().map(|(r, c)| format!("{r}={c}")).collect();
        let exit = if n.exit_ok {
            ""
        } else {
            "  (did not exit cleanly)"
        };
        println!(
            "{:>6} {:<9} {:>10} {:>10}  {}{exit}",
            n.id,
            n.role,
            n.packets_in,
            n.packets_out,
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(" ")
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_messages_are_told_apart_by_when_they_left() {
        let end = Instant::now() + Duration::from_secs(100);
        let left = BTreeMap::from([
            (1, (2, 2, end - Duration::from_secs(30))), // left long ago: lost
            (2, (1, 1, end - Duration::from_secs(1))),  // left just before the end: late
            (3, (1, 2, end - Duration::from_secs(50))), // a fragment never left: unsent
        ]);
        let missing = [1u64, 2, 3, 4]; // 4: nothing left at all
        assert_eq!(late_or_unsent(missing.iter(), &left, end, 5.0), (1, 2));
    }
}
