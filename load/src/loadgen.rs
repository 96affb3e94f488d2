//! `loopix loadgen`: open-loop load against one running node, measuring the hop.
//!
//! The load generator plays a node of the topology (`--as`): it binds that node's address,
//! prebuilds a pool of distinct packets whose first hop is the target and whose second hop
//! is itself (relay with zero delay, so what it measures is the node's processing, not a
//! mixing delay), then sends them at a constant or Poisson rate from a pinned thread. The
//! node forwards each one back; the generator recognises it by the MAC the second hop would
//! check (known from building, no key needed) and records the per-hop latency in an HDR
//! histogram. Every packet in the pool is sent once: a second copy would be a replay.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use loopix_crypto::params::{HEADER_LEN, MAC_LEN};
use loopix_runtime::clock::NetworkClock;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::attribution::{GeneratorCounts, LossBySide, node_counters, own_kernel_drops};
use crate::hostile::HostileCounts;
use crate::setup::{LoadNodes, Pool, Setup};

/// Options of `loopix loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    #[command(flatten)]
    nodes: LoadNodes,
    /// Packets per second offered.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Poisson arrivals instead of constant spacing.
    #[arg(long)]
    poisson: bool,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Pin the sending and receiving threads to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// The target's metrics address, to report its drop counters.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Pause between building the pool (which uses every core) and sending, ms.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Ramp the rate and report the highest with loss < 0.1 % and p99 within the bound
    /// (needs --metrics, to count the node's shards).
    #[arg(long)]
    find_capacity: bool,
    /// Capacity mode: the p99 per-hop latency a rate must stay within, µs.
    #[arg(long, default_value_t = 2_000.0)]
    p99_bound_us: f64,
    /// Capacity mode: runs per rate; a rate is judged on the median loss and median p99
    /// (single few-ms spikes of a shared machine otherwise decide a step).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Capacity mode: bisection steps between the last rate that passed and the first that
    /// failed; each halves the 15 % ramp step (2: capacity known to within ~4 %).
    #[arg(long, default_value_t = 2)]
    refine: usize,
    /// Hold each packet this long at the target (its delay field), µs. Latency is reported
    /// net of it; the node's delay fidelity is read from its metrics.
    #[arg(long, default_value_t = 0)]
    hold_us: u32,
    /// Send in bursts: a packet due less than this far ahead goes at once rather than after
    /// a sleep, so the sender wakes about once per quantum instead of once per packet
    /// (packets leave up to this much early; latency is still timed from each real send).
    /// 0 keeps exact spacing. On cores shared with the node a wake-up per packet costs the
    /// node: at 22 k packets/s on 2 shards, 300 µs cut the node's time per packet from 69
    /// to 52 µs and the generator's CPU from 0.37 to 0.21 cores.
    #[arg(long, default_value_t = 0)]
    send_quantum_us: u32,
    /// Send valid packets among replays, junk and packets asking for a 590 s hold (six in
    /// ten datagrams; see docs/performance.md, load generation): load the node must refuse.
    #[arg(long)]
    hostile: bool,
    /// After the load, go on with valid packets at this rate to time the node's recovery
    /// (0: no tail).
    #[arg(long, default_value_t = 0.0)]
    then_rate: f64,
    /// Seconds of the recovery tail (with --then-rate).
    #[arg(long, default_value_t = 3.0)]
    then_s: f64,
    /// The generator's receive buffer, bytes: bursts of forwarded packets must fit, or
    /// the loss is the generator's own (it is reported as such, under `loss_by_side`).
    #[arg(long, default_value_t = 8 << 20)]
    receive_buffer_bytes: usize,
    /// Fault injection, to test the loss attribution: the receiver starts reading this
    /// long after the load starts, as a generator that fell behind would.
    #[arg(long, default_value_t = 0, hide = true)]
    stall_receiver_ms: u64,
}

/// What `--find-capacity --json` prints.
#[derive(Serialize, Debug)]
pub struct CapacityReport {
    pub capacity_pps: f64,
    pub shards: usize,
    /// `loopix speed`'s per-hop floor, measured in this run.
    pub floor_ns: f64,
    pub floor_pps: f64,
    /// capacity_pps / (floor_pps x shards).
    pub efficiency: f64,
    pub p99_bound_us: f64,
    /// Bisection steps after the first failure (`--refine`).
    pub refine: usize,
    /// A first, unjudged run: a node's first ~100 ms of traffic after start stalls (see
    /// perf/README.md), which would otherwise fail the first step.
    pub warmup: Step,
    pub steps: Vec<Step>,
    /// The step at the capacity (the best that passed), if one did.
    pub at_capacity: Option<Step>,
}

/// One rate tried, `repeats` times: medians, and every run's p99.
#[derive(Serialize, Debug, Clone)]
pub struct Step {
    pub offered_pps: f64,
    pub forwarded_pps: f64,
    pub loss: f64,
    pub p99_us: f64,
    pub p99_us_runs: Vec<f64>,
    /// Median time the node spent unwrapping and holding a packet at this rate (its
    /// metrics), to set against the floor: batches grow with the load.
    pub node_receive_us_per_packet: Option<f64>,
    /// Median CPU time of the node's process (every thread) and of the generator's, per
    /// packet: on a VM whose pauses decide the latency bound, the node's CPU per packet
    /// is the figure that does not move with them.
    pub node_cpu_us_per_packet: Option<f64>,
    pub generator_cpu_us_per_packet: Option<f64>,
    pub passed: bool,
}

/// Largest loss a capacity step may show.
const CAPACITY_MAX_LOSS: f64 = 0.001;

/// What `--json` prints.
#[derive(Serialize, Debug)]
pub struct LoadReport {
    pub offered_pps: f64,
    pub sent: u64,
    pub forwarded: u64,
    pub forwarded_pps: f64,
    pub loss: f64,
    pub latency_us: Percentiles,
    pub duration_s: f64,
    pub poisson: bool,
    /// Every lost valid packet by side (the generator's, the node's, neither's), with the
    /// node's counters during the run if `--metrics` was given.
    pub loss_by_side: LossBySide,
    /// The hold each packet asked for at the target, µs (subtracted from the latency).
    pub hold_us: u32,
    /// `--send-quantum-us`: 0 for exact spacing.
    pub send_quantum_us: u32,
    /// How late the sender was against each packet's due time: a generator that could not
    /// keep pace sends bursts, and the node's queueing of them shows in the latency.
    pub send_lateness_us: Lateness,
    /// Delay fidelity at the target during the run, from its metrics: the histogram bound
    /// under which 99 % of |actual - requested hold| fell, µs (`null`: above 100 ms or no
    /// metrics).
    pub node_delay_error_p99_us: Option<f64>,
    /// The target's time on received batches per packet received during the run, µs (its
    /// `loopix_receive_seconds_total` over `loopix_packets_in_total`): the engine's cost
    /// per hop, to set against `floor_ns`.
    pub node_receive_us_per_packet: Option<f64>,
    /// The target process's CPU time (every thread) per packet it received during the
    /// run, µs (`process_cpu_seconds_total`, in clock ticks: meaningful over a second or
    /// more of load).
    pub node_cpu_us_per_packet: Option<f64>,
    /// The generator's own CPU time (sending and receiving, not building) per packet
    /// sent, µs.
    pub generator_cpu_us_per_packet: Option<f64>,
    /// The worst per-hop latency of the packets sent in each 100 ms of the run, µs: shows
    /// whether a tail is a stall at one moment or spread over the run.
    pub max_latency_us_per_window: Vec<f64>,
    /// `--hostile`: datagrams of each kind sent (the latency and loss above are the valid
    /// packets').
    pub hostile: Option<HostileCounts>,
    /// `--then-rate`: the recovery tail.
    pub tail: Option<TailReport>,
}

/// What the recovery tail after the load saw.
#[derive(Serialize, Debug)]
pub struct TailReport {
    pub rate_pps: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub forwarded: u64,
    pub latency_us: Percentiles,
    /// From the end of the load to the start of the first 100 ms window whose packets
    /// all came back within `--p99-bound-us` (the node's backlog is gone), ms; `null`:
    /// never within the tail.
    pub recovery_ms: Option<f64>,
    /// Windows after that one with a packet lost or over the bound (on a shared machine,
    /// its stalls).
    pub late_windows: usize,
}

/// The sender's lateness, µs.
#[derive(Serialize, Debug, Default)]
pub struct Lateness {
    pub p99: f64,
    pub max: f64,
}

/// What one open-loop run saw.
struct Blast {
    /// Datagrams sent, and of them the valid ones of the load and of the tail.
    sent: u64,
    valid_sent: u64,
    tail_sent: u64,
    /// Valid packets that came back, of the load and of the tail.
    forwarded: u64,
    tail_forwarded: u64,
    /// Per-hop latency, ns, of the load's packets and of the tail's.
    latency: Histogram<u64>,
    tail_latency: Histogram<u64>,
    /// By 100 ms window of send time: the worst latency, packets sent, packets forwarded.
    window_max: Vec<u64>,
    window_sent: Vec<u64>,
    window_forwarded: Vec<u64>,
    /// The window the tail's first packet went in (the load's end, however late the
    /// sender was).
    tail_window: Option<usize>,
    /// Send time minus due time, ns.
    lateness: Histogram<u64>,
}

/// Per-hop latency percentiles, µs.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Runs the load and prints the report.
pub fn run(args: &LoadgenArgs) -> Result<(), String> {
    if args.find_capacity {
        let report = find_capacity(args)?;
        if args.json {
            crate::json::print(&report)?;
        } else {
            println!(
                "capacity {:.0} packets/s on {} shard(s) (loss < 0.1 %, p99 <= {:.0} us); floor {:.0} packets/s per core; efficiency {:.2}",
                report.capacity_pps,
                report.shards,
                report.p99_bound_us,
                report.floor_pps,
                report.efficiency
            );
        }
        return Ok(());
    }
    let report = measure(args)?;
    if args.json {
        crate::json::print(&report)?;
    } else {
        println!(
            "offered {:.0} packets/s ({}), forwarded {:.0} packets/s, loss {:.3} %\nper-hop latency: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
            report.offered_pps,
            if report.poisson {
                "Poisson"
            } else {
                "constant"
            },
            report.forwarded_pps,
            report.loss * 100.0,
            report.latency_us.p50,
            report.latency_us.p99,
            report.latency_us.p999,
            report.latency_us.max
        );
        if let Some(us) = report.node_receive_us_per_packet {
            println!("node spent {us:.1} us per packet received (unwrap, replay check, hold)");
        }
        println!("{}", report.loss_by_side.summary());
    }
    Ok(())
}

impl Setup {
    fn new(args: &LoadgenArgs) -> Result<Self, String> {
        if !(args.rate > 0.0 && args.duration_s > 0.0) {
            return Err("--rate and --duration-s must be positive".into());
        }
        let setup = Self::for_nodes(&args.nodes, args.hold_us)?;
        socket2::SockRef::from(&setup.socket)
            .set_recv_buffer_size(args.receive_buffer_bytes)
            .map_err(|e| format!("--receive-buffer-bytes: {e}"))?;
        Ok(setup)
    }

    /// One run at `rate` for `duration_s`, with a fresh pool (a packet is never sent twice).
    fn step(&self, args: &LoadgenArgs, rate: f64, duration_s: f64) -> Result<LoadReport, String> {
        let count = (rate * duration_s).ceil() as usize;
        let tail_count = (args.then_rate * args.then_s).ceil() as usize;
        eprintln!("loadgen: building {count} packets for {rate:.0} packets/s");
        let now = NetworkClock::start().now_us();
        let hostile = if args.hostile { count } else { 0 };
        let pool = crate::hostile::pool(self, now, count + tail_count, hostile)?;
        // Building saturates every core; start the load on a quiet machine.
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        let before = args.metrics.and_then(crate::scrape::scrape);
        let own_drops_before = own_kernel_drops([&self.socket]);
        let own_cpu_before = crate::measure::process_cpu_s();
        let pace = Pace {
            rate,
            poisson: args.poisson,
            cpu: args.cpu,
            hold_ns: u64::from(args.hold_us) * 1_000,
            quantum_ns: f64::from(args.send_quantum_us) * 1e3,
            tail_from: count,
            tail_rate: args.then_rate,
            receiver_stall: Duration::from_millis(args.stall_receiver_ms),
        };
        let blast = blast(&pace, &self.socket, self.target, &pool)?;
        let generator_cpu_s = own_cpu_before
            .zip(crate::measure::process_cpu_s())
            .map(|(b, a)| a - b);
        let after = args.metrics.and_then(crate::scrape::scrape);
        let generator = GeneratorCounts {
            kernel_drops: own_kernel_drops([&self.socket]).saturating_sub(own_drops_before),
            send_errors: pool.packets.len() as u64 - blast.sent,
        };
        let hostile = args.hostile.then(|| HostileCounts::of_first(count));
        let loss_by_side = LossBySide::attribute(
            blast.valid_sent.saturating_sub(blast.forwarded),
            generator,
            node_counters(before.as_deref(), after.as_deref()),
            hostile.map_or(0, |h| h.refused()),
        );
        let (node_delay_error_p99_us, node_receive_us_per_packet, node_cpu_us_per_packet) =
            match (before, after) {
                (Some(b), Some(a)) => (
                    node_delay_error_p99_us(&b, &a),
                    node_receive_us_per_packet(&b, &a),
                    node_cpu_us_per_packet(&b, &a),
                ),
                _ => (None, None, None),
            };
        let (recovery_ms, late_windows) = recovery(&blast, args.p99_bound_us);
        let tail = (tail_count > 0).then(|| TailReport {
            rate_pps: args.then_rate,
            duration_s: args.then_s,
            sent: blast.tail_sent,
            forwarded: blast.tail_forwarded,
            latency_us: percentiles(&blast.tail_latency),
            recovery_ms,
            late_windows,
        });
        let sent = blast.sent.min(count as u64);
        Ok(LoadReport {
            offered_pps: sent as f64 / duration_s,
            sent,
            forwarded: blast.forwarded,
            forwarded_pps: blast.forwarded as f64 / duration_s,
            loss: if blast.valid_sent == 0 {
                0.0
            } else {
                1.0 - blast.forwarded as f64 / blast.valid_sent as f64
            },
            latency_us: percentiles(&blast.latency),
            duration_s,
            poisson: args.poisson,
            loss_by_side,
            hold_us: args.hold_us,
            send_quantum_us: args.send_quantum_us,
            node_delay_error_p99_us,
            node_receive_us_per_packet,
            node_cpu_us_per_packet,
            generator_cpu_us_per_packet: generator_cpu_s
                .map(|s| s * 1e6 / blast.sent.max(1) as f64),
            send_lateness_us: Lateness {
                p99: blast.lateness.value_at_quantile(0.99) as f64 / 1e3,
                max: blast.lateness.max() as f64 / 1e3,
            },
            max_latency_us_per_window: blast.window_max.iter().map(|&ns| ns as f64 / 1e3).collect(),
            hostile,
            tail,
        })
    }
}

/// Percentiles of a latency histogram of ns, in µs.
pub(crate) fn percentiles(hist: &Histogram<u64>) -> Percentiles {
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1e3;
    Percentiles {
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
        max: hist.max() as f64 / 1e3,
    }
}

/// See [`TailReport::recovery_ms`] and [`TailReport::late_windows`]: the windows from the
/// tail's first, judged on every packet they sent coming back within `bound_us`. The last
/// window, cut short by the end of the run, is not judged.
fn recovery(blast: &Blast, bound_us: f64) -> (Option<f64>, usize) {
    let Some(end) = blast.tail_window else {
        return (None, 0);
    };
    let (sent, forwarded, max) = (
        &blast.window_sent,
        &blast.window_forwarded,
        &blast.window_max,
    );
    recovery_of(end, sent, forwarded, max, bound_us)
}

/// [`recovery`] over per-window packets sent, forwarded and worst latency (ns).
fn recovery_of(
    end: usize,
    sent: &[u64],
    forwarded: &[u64],
    max_ns: &[u64],
    bound_us: f64,
) -> (Option<f64>, usize) {
    let at = |v: &[u64], w: usize| v.get(w).copied().unwrap_or(0);
    let good = |w: usize| at(forwarded, w) >= at(sent, w) && at(max_ns, w) as f64 / 1e3 <= bound_us;
    let last = sent.len().saturating_sub(1);
    let Some(first) = (end..last).find(|&w| good(w)) else {
        return (None, 0);
    };
    let late = (first..last).filter(|&w| !good(w)).count();
    let ms = (first - end) as f64 * WINDOW_NS as f64 / 1e6;
    (Some(ms), late)
}

/// The target's delay fidelity between two scrapes: the bound, µs, under which 99 % of
/// |actual - requested hold| fell; `None` if nothing was held or it lies above 100 ms.
fn node_delay_error_p99_us(before: &str, after: &str) -> Option<f64> {
    let name = "loopix_delay_error_seconds";
    let b = crate::scrape::buckets(before, name)?;
    let a = crate::scrape::buckets(after, name)?;
    crate::scrape::quantile_bound(&b, &a, 0.99)
        .filter(|s| s.is_finite())
        .map(|s| s * 1e6)
}

/// The middle value of `v` (the upper median of an even count); `None` when empty.
fn middle(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The target's receive time per packet received between two scrapes, µs.
pub(crate) fn node_receive_us_per_packet(before: &str, after: &str) -> Option<f64> {
    node_us_per_packet_in(before, after, "loopix_receive_seconds_total")
}

/// The target process's CPU time per packet it received between two scrapes, µs.
pub(crate) fn node_cpu_us_per_packet(before: &str, after: &str) -> Option<f64> {
    node_us_per_packet_in(before, after, "process_cpu_seconds_total")
}

/// The increase of the seconds counter `seconds` between two scrapes over the packets the
/// target received meanwhile, µs; `None` if it received none.
fn node_us_per_packet_in(before: &str, after: &str, seconds: &str) -> Option<f64> {
    use crate::scrape::sum;
    let delta = |name| Some(sum(after, name)? - sum(before, name)?);
    let packets = delta("loopix_packets_in_total")?;
    (packets > 0.0).then(|| delta(seconds).map(|s| s * 1e6 / packets))?
}

/// How the sender paces.
struct Pace {
    rate: f64,
    poisson: bool,
    cpu: Option<usize>,
    /// Subtracted from every latency: the hold the packets asked for.
    hold_ns: u64,
    /// Packets due within this of now go without a sleep (`--send-quantum-us`).
    quantum_ns: f64,
    /// Packets from this index on are the recovery tail, sent at `tail_rate`.
    tail_from: usize,
    tail_rate: f64,
    /// `--stall-receiver-ms`.
    receiver_stall: Duration,
}

/// Ramps the rate by 15 % from a quarter of the floor until a step fails, then bisects
/// between the last pass and the failure `--refine` times.
pub fn find_capacity(args: &LoadgenArgs) -> Result<CapacityReport, String> {
    let metrics = args
        .metrics
        .ok_or("--find-capacity needs --metrics, to count the node's shards")?;
    let shards = wait_for_shards(metrics).ok_or("the node's metrics report no shard")?;
    let setup = Setup::new(args)?;
    // A node that has just started may still be touching its memory; let it settle so the
    // floor is measured on a quiet machine, over enough rounds that one slow one is no median.
    std::thread::sleep(Duration::from_secs(1));
    let floor_ns = crate::speed::measure(&setup.params, 2, 15, Duration::from_millis(20)).floor_ns;
    let floor_pps = 1e9 / floor_ns;
    let mut steps = Vec::new();
    let try_rate = |rate: f64, steps: &mut Vec<Step>| -> Result<bool, String> {
        let mut runs = Vec::new();
        for _ in 0..args.repeats.max(1) {
            runs.push(setup.step(args, rate, args.duration_s)?);
            std::thread::sleep(Duration::from_millis(300)); // let the node drain
        }
        // At least one run, so every median exists; NaN would fail the step, not pass it.
        let median =
            |f: fn(&LoadReport) -> f64| middle(runs.iter().map(f).collect()).unwrap_or(f64::NAN);
        // The median of a figure only some runs measured (the node's, from its metrics).
        let measured =
            |f: fn(&LoadReport) -> Option<f64>| middle(runs.iter().filter_map(f).collect());
        let (loss, p99) = (median(|r| r.loss), median(|r| r.latency_us.p99));
        let passed = loss < CAPACITY_MAX_LOSS && p99 <= args.p99_bound_us;
        let p99_us_runs: Vec<f64> = runs.iter().map(|r| r.latency_us.p99).collect();
        eprintln!(
            "loadgen: {rate:.0}/s, median loss {:.3} %, median p99 {p99:.0} us (runs {p99_us_runs:.0?}): {}",
            loss * 100.0,
            if passed { "pass" } else { "fail" }
        );
        steps.push(Step {
            offered_pps: median(|r| r.offered_pps),
            forwarded_pps: median(|r| r.forwarded_pps),
            loss,
            p99_us: p99,
            p99_us_runs,
            node_receive_us_per_packet: measured(|r| r.node_receive_us_per_packet),
            node_cpu_us_per_packet: measured(|r| r.node_cpu_us_per_packet),
            generator_cpu_us_per_packet: measured(|r| r.generator_cpu_us_per_packet),
            passed,
        });
        Ok(passed)
    };
    let mut warmup = Vec::new();
    let _ = try_rate(0.1 * floor_pps * shards as f64, &mut warmup)?;
    let warmup = warmup.pop().ok_or("warm-up step ran")?;
    let best = search_capacity(floor_pps * shards as f64, args.refine, |rate| {
        try_rate(rate, &mut steps)
    })?;
    let at_capacity = steps
        .iter()
        .filter(|s| s.passed)
        .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
        .cloned();
    Ok(CapacityReport {
        capacity_pps: best,
        shards,
        floor_ns,
        floor_pps,
        efficiency: best / (floor_pps * shards as f64),
        p99_bound_us: args.p99_bound_us,
        refine: args.refine,
        warmup,
        steps,
        at_capacity,
    })
}

/// The highest rate `passes`, searched as every capacity tool here searches: from a quarter
/// of `floor_pps` (the crypto floor of every shard; halved until a rate passes, at most
/// four times) up by 15 % until a rate fails (or twice the floor passes), then `refine`
/// bisections between the last pass and the failure. 0 when no rate passes.
pub(crate) fn search_capacity(
    floor_pps: f64,
    refine: usize,
    mut passes: impl FnMut(f64) -> Result<bool, String>,
) -> Result<f64, String> {
    let mut rate = 0.25 * floor_pps;
    let top = 2.0 * floor_pps;
    // A first rate that fails is halved (up to four times) until one passes: a node far
    // from its floor still gets a figure, not a zero.
    let mut halvings = 0;
    while halvings < 4 && !passes(rate)? {
        rate /= 2.0;
        halvings += 1;
    }
    if halvings == 4 {
        return Ok(0.0);
    }
    let mut best = rate;
    rate *= 1.15;
    while rate <= top && passes(rate)? {
        best = rate;
        rate *= 1.15;
    }
    let mut failed = rate;
    for _ in 0..refine {
        if best == 0.0 || failed > top {
            break;
        }
        let mid = (best + failed) / 2.0;
        if passes(mid)? {
            best = mid;
        } else {
            failed = mid;
        }
    }
    Ok(best)
}

/// The node's shard count, once its shards have reported (a node that has just started
/// has not yet); gives up after 5 s.
pub(crate) fn wait_for_shards(metrics: SocketAddr) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(n) = crate::scrape::shards(metrics) {
            return Some(n);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets up, runs and measures one load run.
pub fn measure(args: &LoadgenArgs) -> Result<LoadReport, String> {
    Setup::new(args)?.step(args, args.rate, args.duration_s)
}

/// Sends the pool open-loop while a receiver thread times what comes back.
fn blast(
    pace: &Pace,
    socket: &UdpSocket,
    target: SocketAddr,
    pool: &Pool,
) -> Result<Blast, String> {
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..pool.packets.len()).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let rx = socket.try_clone().map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let epoch = Instant::now();
    let epoch_ns = loopix_runtime::rx_timestamp::now_ns();
    std::thread::scope(|s| {
        let receiver = {
            let (sent_at, done) = (Arc::clone(&sent_at), Arc::clone(&done));
            let cpu = pace.cpu;
            s.spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                receive(&rx, pool, &sent_at, &done, epoch_ns, pace)
            })
        };
        let (sent, lateness) = send(pace, socket, target, pool, &sent_at, epoch);
        // Let the last packets come back.
        std::thread::sleep(Duration::from_millis(500) + Duration::from_nanos(pace.hold_ns));
        done.store(true, Ordering::SeqCst);
        let r = receiver
            .join()
            .map_err(|_| "receiver panicked".to_string())?;
        // Only packets that can come back count as sent for loss and recovery.
        let (mut valid_sent, mut tail_sent) = (0, 0);
        let tail_window = sent_at
            .get(pace.tail_from)
            .map(|at| at.load(Ordering::Relaxed))
            .filter(|&at| at > 0)
            .map(|at| window_of(at, epoch_ns));
        let mut window_sent = vec![0; r.window_max.len()];
        for &i in pool.by_mac.values() {
            let at = sent_at[i as usize].load(Ordering::Relaxed);
            if at == 0 {
                continue;
            }
            if (i as usize) < pace.tail_from {
                valid_sent += 1;
            } else {
                tail_sent += 1;
            }
            let w = window_of(at, epoch_ns);
            if window_sent.len() <= w {
                window_sent.resize(w + 1, 0);
            }
            window_sent[w] += 1;
        }
        Ok(Blast {
            sent,
            valid_sent,
            tail_sent,
            forwarded: r.forwarded,
            tail_forwarded: r.tail_forwarded,
            latency: r.latency,
            tail_latency: r.tail_latency,
            window_max: r.window_max,
            window_sent,
            window_forwarded: r.window_forwarded,
            tail_window,
            lateness,
        })
    })
}

/// Sends each packet at its due time (open loop), sleeping in between: spinning would take
/// a whole core from the node on a small machine and show up as scheduler stalls in the
/// latency tail. Latency is timed from each packet's actual send, so late wake-ups do not
/// bias it.
fn send(
    args: &Pace,
    socket: &UdpSocket,
    target: SocketAddr,
    pool: &Pool,
    sent_at: &[AtomicU64],
    epoch: Instant,
) -> (u64, Histogram<u64>) {
    let mut lateness = latency_histogram();
    if let Some(cpu) = args.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut rng = ChaCha20Rng::seed_from_u64(epoch.elapsed().as_nanos() as u64);
    let mut due_ns = 0.0;
    let mut last_progress = Instant::now();
    let mut sent = 0;
    for (i, p) in pool.packets.iter().enumerate() {
        let gap_ns = 1e9
            / if i < args.tail_from {
                args.rate
            } else {
                args.tail_rate
            };
        due_ns += if args.poisson {
            -((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
                .max(1e-12)
                .ln()
                * gap_ns
        } else {
            gap_ns
        };
        let ahead_ns = due_ns - epoch.elapsed().as_nanos() as f64;
        if ahead_ns > args.quantum_ns {
            std::thread::sleep(Duration::from_nanos(ahead_ns as u64));
        }
        let late_ns = epoch.elapsed().as_nanos() as f64 - due_ns;
        let _ = lateness.record((late_ns.max(0.0) as u64).max(1));
        sent_at[i].store(loopix_runtime::rx_timestamp::now_ns(), Ordering::Relaxed);
        if socket.send_to(p, target).is_ok() {
            sent += 1;
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            eprint!(
                "\rloadgen: {:>5.1} s, {sent} sent",
                epoch.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "\rloadgen: {:>5.1} s, {sent} sent",
        epoch.elapsed().as_secs_f64()
    );
    (sent, lateness)
}

/// What the receiver thread saw.
struct Received {
    forwarded: u64,
    tail_forwarded: u64,
    latency: Histogram<u64>,
    tail_latency: Histogram<u64>,
    window_max: Vec<u64>,
    window_forwarded: Vec<u64>,
}

pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// The 100 ms window of send time `at_ns` (since the epoch) in a run begun at `epoch_ns`.
fn window_of(at_ns: u64, epoch_ns: u64) -> usize {
    (at_ns.saturating_sub(epoch_ns) / WINDOW_NS) as usize
}

fn receive(
    rx: &UdpSocket,
    pool: &Pool,
    sent_at: &[AtomicU64],
    done: &AtomicBool,
    epoch_ns: u64,
    pace: &Pace,
) -> Received {
    let mut r = Received {
        forwarded: 0,
        tail_forwarded: 0,
        latency: latency_histogram(),
        tail_latency: latency_histogram(),
        window_max: Vec::new(),
        window_forwarded: Vec::new(),
    };
    let mut seen = vec![false; pool.packets.len()];
    let mut buf = vec![0u8; 65_536];
    std::thread::sleep(pace.receiver_stall);
    while !done.load(Ordering::SeqCst) {
        let Ok((n, arrived_ns)) = loopix_runtime::rx_timestamp::recv(rx, &mut buf) else {
            continue;
        };
        let Some(mac) = buf
            .get(HEADER_LEN - MAC_LEN..HEADER_LEN)
            .filter(|_| n >= HEADER_LEN)
        else {
            continue;
        };
        let Some(&i) = pool
            .by_mac
            .get(<&[u8; MAC_LEN]>::try_from(mac).expect("MAC_LEN bytes"))
        else {
            continue;
        };
        let i = i as usize;
        if seen[i] {
            continue;
        }
        seen[i] = true;
        let sent = sent_at[i].load(Ordering::Relaxed);
        let latency = arrived_ns.saturating_sub(sent).saturating_sub(pace.hold_ns);
        let (count, hist) = if i < pace.tail_from {
            (&mut r.forwarded, &mut r.latency)
        } else {
            (&mut r.tail_forwarded, &mut r.tail_latency)
        };
        *count += 1;
        let _ = hist.record(latency.max(1));
        let w = window_of(sent, epoch_ns);
        if r.window_max.len() <= w {
            r.window_max.resize(w + 1, 0);
            r.window_forwarded.resize(w + 1, 0);
        }
        r.window_max[w] = r.window_max[w].max(latency);
        r.window_forwarded[w] += 1;
    }
    r
}

/// Width of the windows of `max_latency_us_per_window`, by send time.
const WINDOW_NS: u64 = 100_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a node whose true capacity is `cap`: the search lands within 5 % below it,
    /// from above a quarter of the floor and from below (halving first).
    #[test]
    fn the_capacity_search_lands_just_below_the_true_capacity() {
        for cap in [1_000.0, 3_000.0, 30_000.0] {
            let mut tried = Vec::new();
            let found = search_capacity(20_000.0, 3, |r| {
                tried.push(r);
                Ok(r <= cap)
            })
            .unwrap();
            assert!(
                found <= cap && found > 0.95 * cap,
                "{cap}: {found} ({tried:?})"
            );
        }
        assert_eq!(search_capacity(20_000.0, 2, |_| Ok(false)).unwrap(), 0.0);
    }

    #[test]
    fn recovery_is_the_first_clean_window_after_the_load_and_later_stalls_are_counted() {
        let ms = 1_000_000;
        // Windows 0-1 the load, 2.. the tail; the last one is cut short and not judged.
        let sent = [9, 9, 2, 2, 2, 2, 2, 1];
        let forwarded = [5, 5, 1, 2, 2, 2, 2, 0];
        let max = [90 * ms, 90 * ms, 50 * ms, 3 * ms, ms, 5 * ms, ms, 99 * ms];
        // Window 2 lost one, window 3 went over 2 ms: clean from window 4; window 5 a stall.
        assert_eq!(
            recovery_of(2, &sent, &forwarded, &max, 2_000.0),
            (Some(200.0), 1)
        );
        assert_eq!(recovery_of(2, &sent, &forwarded, &max, 100.0), (None, 0));
        assert_eq!(
            recovery_of(2, &sent, &forwarded, &max, 60_000.0),
            (Some(100.0), 0),
            "window 2 lost a packet"
        );
    }
}
