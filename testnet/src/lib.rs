//! `loopix testnet`: a whole Loopix network on loopback, from nothing.
//!
//! Generates keys and a topology in a fresh directory, starts every mix and provider as
//! its own `loopix node` process, runs the clients (in this process, each with its own
//! socket, on a thread per core) exchanging real messages under cover traffic, and ends with a
//! summary: real messages sent, delivered, lost, duplicated; end-to-end latency; packets
//! and drops per node. Ctrl-C stops everything; child nodes also die with this process
//! (PR_SET_PDEATHSIG), so none is left behind. `loopix stress` runs the same network and
//! clients in steps of a sweep ([`stress`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use loopix_core::drops::DropReason;
use loopix_core::network::topology::Role;
use loopix_core::session::FrameLayout;
use serde::Serialize;

pub mod netns;
pub mod network;
pub mod stress;

use loopix_load::handshake_flood::{self, Flood, FloodAt, FloodSummary};
use network::{Layout, NetworkArgs, NodeSummary, Running};
use stress::population::{Plan, Population, drive};
use stress::traffic::Traffic;

/// Options of `loopix testnet`.
#[derive(Args, Debug, Clone)]
pub struct TestnetArgs {
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Clients, run in this process.
    #[arg(long, default_value_t = 10)]
    pub clients: u32,
    /// Clients registered beyond those run here: their keys are written to the network's
    /// directory (`clients/`) with everyone's, for `loopix stress --attach <dir>` or
    /// `loopix client` to run against this network while it runs.
    #[arg(long, default_value_t = 0)]
    pub spare_clients: u32,
    /// How long clients send real messages, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration_s: f64,
    /// How long to wait after that for the last messages to arrive, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub drain_s: f64,
    /// Mean seconds between one client's real messages.
    #[arg(long, default_value_t = 2.0)]
    pub message_interval_s: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Chaos: this many seconds into the traffic, kill the first layer-1 mix (SIGKILL:
    /// whatever it held is lost) and start it again at once.
    #[arg(long)]
    pub kill_mix_after_s: Option<f64>,
    /// Attack: while the clients run, send this many handshake-shaped junk frames a
    /// second (receiver index 0, random bytes, one frame length) at `--flood-at`.
    #[arg(long, default_value_t = 0)]
    pub flood_handshakes_per_s: u32,
    /// Where the flood goes: the first provider, or a closed port on its host (a control
    /// run that costs the machine the same sending).
    #[arg(long, value_enum, default_value_t = FloodAt::Provider)]
    pub flood_at: FloodAt,
}

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
    args.network.check()?;
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

fn run_network(args: &TestnetArgs, stop: &AtomicBool) -> Result<Summary, String> {
    let net = &args.network;
    let run_s = args.duration_s + args.drain_s;
    let Running {
        layout,
        mut nodes,
        vnet,
    } = Running::start(net, args.clients + args.spare_clients, args.clients, run_s)?;
    progress(&format!(
        "network up: {} nodes in {}",
        layout.node_addrs.len(),
        layout.dir.display()
    ));
    let plan = Plan {
        clients: args.clients as usize,
        // Both checked in `run` (finite, not negative).
        duration: Duration::from_secs_f64(args.duration_s),
        drain: Duration::from_secs_f64(args.drain_s),
        message_interval_s: args.message_interval_s,
        ack_attempts: net.ack_attempts,
        departures_per_client: 0,
    };
    let population = Population::start(&layout, &plan)?;
    let flood = start_flood(args, &layout)?;
    let mut traffic = Traffic::default();
    // `--kill-mix-after-s`: the first layer-1 mix, once.
    let mut kill = args.kill_mix_after_s.and_then(|s| {
        let mix = layout
            .topology
            .nodes
            .iter()
            .find(|n| n.role == Role::Mix { layer: 1 })?;
        Some((Duration::from_secs_f64(s), mix.id))
    });
    drive(
        &plan,
        &population.clients,
        &mut traffic,
        stop,
        &mut nodes,
        |nodes, since, _| {
            if let Some((at, mix)) = kill
                && since >= at
            {
                kill = None;
                match nodes.restart(&layout, mix) {
                    Ok(()) => progress(&format!("killed mix {} and started it again", mix.0)),
                    Err(e) => progress(&format!("chaos: {e}")),
                }
            }
        },
        &progress,
    );
    let flood = flood.map(Flood::stop);
    let node_stats = nodes.scrape(&layout);
    let lag = population.timer_lag();
    let switched = Arc::clone(&population.switched);
    let socket_errors = population.stop(&mut traffic);
    let exits = nodes.stop();
    let window_s = stress::late_window_s(&layout.topology.network);
    let j = traffic.judge(window_s, args.drain_s, net.ack_attempts > 0);
    let nodes: Vec<NodeSummary> = node_stats
        .into_iter()
        .map(|(id, mut s)| {
            s.exit_ok = exits.contains(&id);
            s
        })
        .collect();
    let loops: u64 = nodes.iter().map(|n| n.loops_back).sum();
    let overhead_s: f64 = nodes.iter().map(|n| n.loop_overhead_s_sum).sum();
    let pct = |p| stress::figures::percentile(&j.latencies_ms, p);
    Ok(Summary {
        sent_real: j.sent,
        delivered_real: j.delivered,
        lost_real: j.lost,
        in_flight_real: j.in_flight - j.unsent,
        unsent_real: j.unsent,
        stuck_real: j.stuck,
        node_died: traffic.node_died.clone(),
        late_window_s: window_s,
        duplicates: j.duplicates,
        misdelivered: j.misdelivered,
        latency_ms: Latency {
            p50: pct(0.5),
            p99: pct(0.99),
            max: pct(1.0),
        },
        loop_overhead_ms: (loops > 0).then(|| overhead_s * 1e3 / loops as f64),
        nodes,
        dir: layout.dir.display().to_string(),
        duration_s: args.duration_s,
        client_timer_lag_max_ms: lag.0 as f64 / 1e3,
        client_timers_late: lag.1,
        client_send_errors: socket_errors.0,
        client_recv_errors: socket_errors.1,
        acked_real: j.acked,
        gave_up_real: j.gave_up,
        retransmitted: j.retransmitted,
        acks_sent: j.acks_sent,
        acks_expired: j.acks_expired,
        packets_per_message: if j.sent == 0 {
            0.0
        } else {
            (j.fragments_sent + j.acks_sent) as f64 / j.sent as f64
        },
        documents_switched: switched.load(Ordering::SeqCst),
        epoch_s: net.epoch_s,
        links: vnet.as_ref().map(|n| LinksSummary {
            delay_ms: net.link_delay_ms,
            loss: net.link_loss,
            forwarded: n.stats.forwarded.load(Ordering::Relaxed),
            lost: n.stats.lost.load(Ordering::Relaxed),
            overflow: n.stats.overflow.load(Ordering::Relaxed),
            write_errors: n.stats.write_errors.load(Ordering::Relaxed),
            links_per_mix_loop: u64::from(net.layers) + 1,
        }),
        flood,
    })
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
    progress(&format!(
        "flooding {target} with {} handshake-shaped frames/s",
        args.flood_handshakes_per_s
    ));
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
fn progress(line: &str) {
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
