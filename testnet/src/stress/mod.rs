//! `loopix stress`: a whole network under load from many real clients, swept over client
//! counts and message rates.
//!
//! It starts a network as `loopix testnet` does (sized for the largest step), then runs
//! each step with a fresh set of clients (the client core: sessions, the λP, λL and λD
//! streams, polls, acks, real messages) sharing a thread per core, and reports what the
//! step did: every real message judged (sent = delivered + lost + in flight), end-to-end
//! latency percentiles and CDF, retransmissions, Jain's fairness of the clients' delivered
//! shares, how late the clients' timers fired and whether their departures pass as the
//! Poisson process they should be, every node's packets and drops over the step, each
//! mix's pool against λ/µ, and the CPU a client-second cost against the crypto floor.

pub use loopix_sim::figures;
pub(crate) mod population;
pub mod shadow;
pub(crate) mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use loopix_core::network::topology::Role;
use loopix_crypto::NodeId;
use serde::Serialize;

use crate::network::{self, Layout, NetworkArgs, NodeSummary, Nodes, Running};
use figures::{KsTest, cdf, gaps_us, jain, ks_exponential, percentile};
use loopix_core::network::topology::Network;
use population::{Plan, Population, drive};
use traffic::Judged;

/// Options of `loopix stress`.
#[derive(Args, Debug, Clone)]
pub struct StressArgs {
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Client counts to step through, comma-separated; each step starts that many fresh
    /// clients (the network is made with as many as the largest step).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
    pub clients: Vec<u32>,
    /// Mean seconds between one client's real messages, one value or several
    /// (comma-separated): every client count runs with each.
    #[arg(long, value_delimiter = ',', default_value = "2.0")]
    pub message_interval_s: Vec<f64>,
    /// How long each step gives its clients messages, s.
    #[arg(long, default_value_t = 30.0)]
    pub step_s: f64,
    /// How long each step waits after that for its last messages, s.
    #[arg(long, default_value_t = 20.0)]
    pub drain_s: f64,
    /// Departures kept per client for the Poisson test.
    #[arg(long, default_value_t = 512)]
    pub departures_per_client: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to write `stress.json` and the plots (default: the network's directory).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Load a network this command did not start, from the directory `loopix testnet
    /// --dir` wrote: its `topology.toml`, `clients/client-<id>.key` and `metrics.toml`
    /// (the network options above are then the topology's, not the flags').
    #[arg(long, conflicts_with_all = ["topology", "client_keys"])]
    pub attach: Option<PathBuf>,
    /// Load a network this command did not start: its topology file (with
    /// `--client-keys`).
    #[arg(long, requires = "client_keys")]
    pub topology: Option<PathBuf>,
    /// With `--topology`: a directory of the clients' key files, `client-<id>.key`; the
    /// clients whose keys are there are the ones the steps run.
    #[arg(long, requires = "topology")]
    pub client_keys: Option<PathBuf>,
    /// With `--topology`: a node's metrics address, as `<id>=<host:port>`, to scrape its
    /// counters and pool (repeat, or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Where the clients bind (a network on other hosts: an address those hosts reach).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: std::net::SocketAddr,
    /// Do not measure the crypto floor (under a simulator's clock it means nothing); the
    /// floor figures are then 0.
    #[arg(long)]
    pub skip_floor: bool,
    /// Write this network for Shadow instead of running it: the network in `<dir>/net`
    /// (every node on a host of its own) and `<dir>/shadow.yaml`, which runs every node
    /// and `--client-hosts` hosts of `loopix stress` (see perf/shadow/).
    #[arg(long)]
    pub write_shadow: Option<PathBuf>,
    /// With `--write-shadow`: hosts the clients are spread over, each a `loopix stress`.
    #[arg(long, default_value_t = 1)]
    pub client_hosts: u32,
    /// With `--write-shadow`: Shadow's seed (two runs with one seed run alike).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What `--json` prints.
#[derive(Serialize, Debug)]
pub struct StressReport {
    pub cpu_model: String,
    pub curve_backend: &'static str,
    pub lanes_kernel: &'static str,
    pub layers: u8,
    pub mixes_per_layer: u32,
    pub providers: u32,
    /// Shards per node process (a network this command started; else unknown).
    pub shards: Option<usize>,
    /// Whether this command started the network (its node processes' CPU is measured).
    pub started_network: bool,
    /// λP + λL + λD + the poll rate: the datagrams a second each client sends its provider.
    pub client_datagrams_per_s: f64,
    pub mu_per_s: f64,
    /// The crypto floor this machine measured at the start: building one packet of the
    /// network's path length, and one hop's unwrap, ns.
    pub build_ns: f64,
    pub hop_ns: f64,
    /// What one client-second costs in crypto at least: its λP + λL + λD packets' builds
    /// and each one's unwraps along its path (layers + 2 hops), ns.
    pub floor_ns_per_client_s: f64,
    /// Clients one core could carry at that floor.
    pub floor_clients_per_core: f64,
    pub steps: Vec<Step>,
    /// The network's directory (keys, configurations, node logs).
    pub dir: String,
    /// Where `stress.json` and the plots are.
    pub report_dir: String,
}

/// One step of the sweep.
#[derive(Serialize, Debug, Default)]
pub struct Step {
    pub clients: u32,
    pub message_interval_s: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub in_flight: u64,
    /// Of `in_flight`: never left their senders.
    pub unsent: u64,
    /// Delivered later than the late window (`late_window_s`) after they were given.
    pub late: u64,
    pub late_window_s: f64,
    pub duplicates: u64,
    pub misdelivered: u64,
    pub retransmitted: u64,
    pub gave_up: u64,
    pub latency_ms: StepLatency,
    /// (latency ms, share of delivered messages at or below it), 100 points.
    pub latency_cdf_ms: Vec<(f64, f64)>,
    /// Jain's index of the clients' delivered shares (delivered / sent of each sender).
    pub jain_fairness: Option<f64>,
    /// Client timers that fired over 50 ms late, and the latest, ms.
    pub client_timers_late: u64,
    pub client_timer_lag_max_ms: f64,
    pub client_send_errors: u64,
    pub client_recv_errors: u64,
    /// The clients' departures (gaps between datagrams to their providers, scaled by
    /// `client_datagrams_per_s`) tested against the exponential.
    pub poisson: Option<KsTest>,
    pub nodes: Vec<StepNode>,
    /// CPU the clients (this process) and the nodes used over the step, s, and the wall time.
    pub cpu_clients_s: f64,
    pub cpu_nodes_s: f64,
    pub wall_s: f64,
    /// Clients per core of CPU used (clients and nodes together; on a network this
    /// command did not start, the clients' alone), and its ratio to the floor's
    /// (`floor_clients_per_core`).
    pub clients_per_core: f64,
    pub over_floor: f64,
    /// A node that died during the step: the sweep stopped there.
    pub node_died: Option<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct StepLatency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One node over one step.
#[derive(Serialize, Debug, Default)]
pub struct StepNode {
    pub id: u64,
    pub role: String,
    pub packets_in: u64,
    pub packets_out: u64,
    pub drops: BTreeMap<String, u64>,
    /// Mixes: the packets its wheels held, and λ/µ from its measured arrival rate (what a
    /// Poisson mix holds on average, Lemma 1), each the mean of samples while sending.
    pub pool_packets: Option<f64>,
    pub pool_expected: Option<f64>,
    /// CPU its process used over the step, s.
    pub cpu_s: f64,
}

/// Starts the network, runs every step and returns the report (also written to
/// `stress.json` in the report directory).
pub fn run(args: &StressArgs) -> Result<StressReport, String> {
    args.network.check()?;
    for (flag, s) in [("--step-s", args.step_s), ("--drain-s", args.drain_s)] {
        if Duration::try_from_secs_f64(s).is_err() {
            return Err(format!("{flag}: {s} is not a number of seconds"));
        }
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        return Err("--clients: each step needs at least one client".into());
    }
    if args
        .message_interval_s
        .iter()
        .any(|&s| s.is_nan() || s <= 0.0)
    {
        return Err("--message-interval-s: each must be a positive number of seconds".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let largest = *args.clients.iter().max().unwrap_or(&1);
    let mut running = match attached(args)? {
        Some(layout) => Running::attached(layout),
        None => {
            let steps_n = args.clients.len() * args.message_interval_s.len();
            let run_s = steps_n as f64 * (args.step_s + args.drain_s + 15.0);
            Running::start(&args.network, largest, 0, run_s)?
        }
    };
    let started_network = running.nodes.pids().next().is_some();
    progress(&format!(
        "network {}: {} nodes, {} clients' keys, in {}",
        if started_network { "up" } else { "attached" },
        running.layout.node_addrs.len(),
        running.layout.client_keys.len(),
        running.layout.dir.display()
    ));
    let topology = &running.layout.topology;
    let network = &topology.network;
    let hops = usize::from(network.layers) + 2;
    let (build_ns, hop_ns, curve_backend, lanes_kernel) = if args.skip_floor {
        (0.0, 0.0, "not measured", "not measured")
    } else {
        progress("measuring the crypto floor");
        let speed =
            loopix_load::speed::measure(&network.params, hops, 3, Duration::from_millis(30));
        (
            speed.build_ns,
            speed.floor_ns,
            speed.curve_backend,
            speed.lanes_kernel,
        )
    };
    let packets_per_client_s =
        network.lambda_payload_per_s + network.lambda_loop_per_s + network.lambda_drop_per_s;
    let floor_ns_per_client_s = packets_per_client_s * (build_ns + hops as f64 * hop_ns);
    let mut report = StressReport {
        cpu_model: cpu_model(),
        curve_backend,
        lanes_kernel,
        layers: network.layers,
        mixes_per_layer: topology
            .nodes
            .iter()
            .filter(|n| n.role == Role::Mix { layer: 1 })
            .count() as u32,
        providers: topology.providers().count() as u32,
        shards: started_network.then_some(args.network.shards),
        started_network,
        client_datagrams_per_s: packets_per_client_s + network.poll_rate_per_s,
        mu_per_s: network.mu_per_s,
        build_ns,
        hop_ns,
        floor_ns_per_client_s,
        floor_clients_per_core: if floor_ns_per_client_s > 0.0 {
            1e9 / floor_ns_per_client_s
        } else {
            0.0
        },
        steps: Vec::new(),
        dir: running.layout.dir.display().to_string(),
        report_dir: String::new(),
    };
    if largest as usize > running.layout.client_keys.len() {
        return Err(format!(
            "--clients {largest}: the network has keys for {} clients",
            running.layout.client_keys.len()
        ));
    }
    'sweep: for &interval in &args.message_interval_s {
        for &clients in &args.clients {
            if stop.load(Ordering::SeqCst) {
                break 'sweep;
            }
            let plan = Plan {
                clients: clients as usize,
                duration: Duration::from_secs_f64(args.step_s),
                drain: Duration::from_secs_f64(args.drain_s),
                message_interval_s: interval,
                ack_attempts: args.network.ack_attempts,
                departures_per_client: args.departures_per_client,
            };
            progress(&format!(
                "step: {clients} clients, a message every {interval} s each, {} s",
                args.step_s
            ));
            let step = run_step(&mut running, &plan, &report, &stop)?;
            progress(&format!(
                "step done: {} sent, {} delivered, {} lost, {} in flight; p50 {:.0} ms, p99 {:.0} ms; \
                 {} timers late; {:.0} clients per core ({:.2}x the floor)",
                step.sent,
                step.delivered,
                step.lost,
                step.in_flight,
                step.latency_ms.p50,
                step.latency_ms.p99,
                step.client_timers_late,
                step.clients_per_core,
                step.over_floor
            ));
            let died = step.node_died.is_some();
            report.steps.push(step);
            if died {
                break 'sweep;
            }
        }
    }
    running.nodes.stop();
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| running.layout.dir.clone());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    report.report_dir = dir.display().to_string();
    let path = dir.join("stress.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(report)
}

/// One step: fresh clients, their messages, the drain, the figures.
fn run_step(
    running: &mut Running,
    plan: &Plan,
    report: &StressReport,
    stop: &AtomicBool,
) -> Result<Step, String> {
    let layout = &running.layout;
    let before = running.nodes.scrape(layout);
    let cpu_before = (process_cpu_s(), running.nodes.cpu_by_node());
    let wall = Instant::now();
    let population = Population::start(layout, plan)?;
    let mut traffic = traffic::Traffic::default();
    let mut pools: BTreeMap<NodeId, (f64, f64, u32)> = BTreeMap::new();
    // The pools from a quarter into the step, once they have filled.
    let mut next_pool = plan.duration / 4;
    drive(
        plan,
        &population.clients,
        &mut traffic,
        stop,
        &mut running.nodes,
        |_, since, sending| {
            if sending && since >= next_pool {
                next_pool = since + Duration::from_secs(2);
                sample_pools(layout, &mut pools);
            }
        },
        &|line| progress(line),
    );
    let lag = population.timer_lag();
    let socket_errors = population.stop(&mut traffic);
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_clients_s = process_cpu_s() - cpu_before.0;
    let cpu_by_node: BTreeMap<NodeId, f64> = running
        .nodes
        .cpu_by_node()
        .into_iter()
        .map(|(id, s)| (id, s - cpu_before.1.get(&id).copied().unwrap_or(0.0)))
        .collect();
    let cpu_nodes_s: f64 = cpu_by_node.values().sum();
    let after = running.nodes.scrape(layout);
    let window_s = late_window_s(&layout.topology.network);
    let acks = plan.ack_attempts > 0;
    let j: Judged = traffic.judge(window_s, plan.drain.as_secs_f64(), acks);
    let shares: Vec<f64> = j
        .per_sender
        .values()
        .map(|&(sent, delivered)| delivered as f64 / sent as f64)
        .collect();
    let mut gaps = gaps_us(&traffic.departures, 2, KS_GAPS);
    let cores_used = (cpu_clients_s + cpu_nodes_s) / wall_s.max(1e-9);
    // No CPU seen (a simulator's clock): no figure.
    let clients_per_core = if cores_used > 0.0 {
        plan.clients as f64 / cores_used
    } else {
        0.0
    };
    Ok(Step {
        clients: plan.clients as u32,
        message_interval_s: plan.message_interval_s,
        duration_s: plan.duration.as_secs_f64(),
        sent: j.sent,
        delivered: j.delivered,
        lost: j.lost,
        in_flight: j.in_flight,
        unsent: j.unsent,
        late: j.late,
        late_window_s: window_s,
        duplicates: j.duplicates,
        misdelivered: j.misdelivered,
        retransmitted: j.retransmitted,
        gave_up: j.gave_up,
        latency_ms: StepLatency {
            p50: percentile(&j.latencies_ms, 0.5),
            p90: percentile(&j.latencies_ms, 0.9),
            p99: percentile(&j.latencies_ms, 0.99),
            max: percentile(&j.latencies_ms, 1.0),
        },
        latency_cdf_ms: cdf(&j.latencies_ms, 100),
        jain_fairness: jain(&shares),
        client_timers_late: lag.1,
        client_timer_lag_max_ms: lag.0 as f64 / 1e3,
        client_send_errors: socket_errors.0,
        client_recv_errors: socket_errors.1,
        poisson: ks_exponential(&mut gaps, report.client_datagrams_per_s / 1e6),
        nodes: node_deltas(&before, &after, &pools, &cpu_by_node),
        cpu_clients_s,
        cpu_nodes_s,
        wall_s,
        clients_per_core,
        over_floor: if report.floor_clients_per_core > 0.0 {
            clients_per_core / report.floor_clients_per_core
        } else {
            0.0
        },
        node_died: traffic.node_died.clone(),
    })
}

/// Gaps the Poisson test takes, from every client in turn: the same for every step, so
/// that its power is too (it sees a distance of about 1.2 % at the 1 % level). With
/// hundreds of thousands it would reject the timers' millisecond granularity alone.
const KS_GAPS: usize = 20_000;

/// How long after leaving a message must have arrived ([`figures::late_window_s`]).
pub(crate) fn late_window_s(network: &Network) -> f64 {
    figures::late_window_s(network.layers, network.mu_per_s, network.poll_rate_per_s)
}

/// The network `--attach` or `--topology` names, if one does.
fn attached(args: &StressArgs) -> Result<Option<Layout>, String> {
    let (topology, keys, mut metrics) = match (&args.attach, &args.topology, &args.client_keys) {
        (Some(dir), _, _) => (
            dir.join("topology.toml"),
            dir.join(network::CLIENT_KEY_DIR),
            network::read_metrics_file(&dir.join(network::METRICS_FILE))?,
        ),
        (None, Some(topology), Some(keys)) => (topology.clone(), keys.clone(), BTreeMap::new()),
        _ => return Ok(None),
    };
    for m in &args.metrics {
        let (id, addr) = m
            .split_once('=')
            .ok_or_else(|| format!("--metrics {m}: give <id>=<host:port>"))?;
        let id = id
            .parse()
            .map_err(|_| format!("--metrics {m}: {id} is not a node id"))?;
        let addr = addr
            .parse()
            .map_err(|_| format!("--metrics {m}: {addr} is not an address"))?;
        metrics.insert(NodeId(id), addr);
    }
    network::attach(&topology, &keys, metrics, args.bind).map(Some)
}

/// Adds every mix's pool size and λ/µ now to `pools` (sums and a count).
fn sample_pools(layout: &Layout, pools: &mut BTreeMap<NodeId, (f64, f64, u32)>) {
    for n in &layout.topology.nodes {
        if !matches!(n.role, Role::Mix { .. }) {
            continue;
        }
        let Some(text) = layout
            .metrics
            .get(&n.id)
            .and_then(|a| loopix_load::scrape::scrape(*a))
        else {
            continue;
        };
        let held = loopix_load::scrape::sum(&text, "loopix_pool_packets_node");
        let expected = loopix_load::scrape::sum(&text, "loopix_pool_packets_expected");
        if let (Some(held), Some(expected)) = (held, expected) {
            let e = pools.entry(n.id).or_default();
            e.0 += held;
            e.1 += expected;
            e.2 += 1;
        }
    }
}

/// Every node's counters over the step (after minus before) and its mean pool.
fn node_deltas(
    before: &BTreeMap<NodeId, NodeSummary>,
    after: &BTreeMap<NodeId, NodeSummary>,
    pools: &BTreeMap<NodeId, (f64, f64, u32)>,
    cpu_s: &BTreeMap<NodeId, f64>,
) -> Vec<StepNode> {
    after
        .iter()
        .map(|(id, a)| {
            let b = before.get(id);
            let drops = a
                .drops
                .iter()
                .map(|(reason, &n)| {
                    let was = b.and_then(|b| b.drops.get(reason)).copied().unwrap_or(0);
                    (reason.clone(), n.saturating_sub(was))
                })
                .filter(|&(_, n)| n > 0)
                .collect();
            let pool = pools.get(id).filter(|p| p.2 > 0);
            StepNode {
                id: id.0,
                role: a.role.clone(),
                packets_in: a.packets_in.saturating_sub(b.map_or(0, |b| b.packets_in)),
                packets_out: a.packets_out.saturating_sub(b.map_or(0, |b| b.packets_out)),
                drops,
                pool_packets: pool.map(|p| p.0 / f64::from(p.2)),
                pool_expected: pool.map(|p| p.1 / f64::from(p.2)),
                cpu_s: cpu_s.get(id).copied().unwrap_or(0.0),
            }
        })
        .collect()
}

/// CPU this process has used, s (user and system).
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

/// The CPU's model name, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn progress(line: &str) {
    eprintln!("stress: {line}");
}

impl Nodes {
    /// CPU each node process has used, s (user and system, from /proc).
    pub(crate) fn cpu_by_node(&self) -> BTreeMap<NodeId, f64> {
        self.pids().map(|(id, pid)| (id, proc_cpu_s(pid))).collect()
    }
}

/// CPU process `pid` has used, s: fields 14 and 15 of /proc/<pid>/stat, in clock ticks.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}
