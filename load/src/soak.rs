//! `loopix soak`: open-loop load on one node across several key epochs, with replays.
//!
//! Like `loopix loadgen` it plays a topology node and sends distinct packets routed
//! target -> itself, each built (before the run) under the keys of the epoch its send time
//! falls in. A sample of them is sent again from another socket, the same bytes, at three
//! moments: a second later (within its epoch), in the grace after its epoch ends, and just
//! after the grace; every copy must be refused (the first two as replays, the last because
//! its key is gone). It counts per second of send time the packets sent and forwarded, and
//! any packet that comes back twice (a replay let through). `perf/soak.sh` runs it against a
//! node it kills and restarts mid-run.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use loopix_crypto::params::{HEADER_LEN, MAC_LEN};
use loopix_runtime::clock::NetworkClock;
use serde::Serialize;

use crate::attribution::{GeneratorCounts, LossBySide, own_kernel_drops, watch_node};
use crate::setup::{LoadNodes, Pool, Setup, build_pool};

/// Options of `loopix soak`.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    nodes: LoadNodes,
    /// Packets per second offered.
    #[arg(long)]
    rate: f64,
    /// Seconds of load.
    #[arg(long)]
    duration_s: f64,
    /// Packets of each epoch sent again (three times each).
    #[arg(long, default_value_t = 20)]
    replays_per_epoch: usize,
    /// Seconds between building the packets and the first send (the node settles).
    #[arg(long, default_value_t = 2)]
    settle_s: u64,
    /// The target's metrics address: its counters (scraped every second, added up
    /// across a restart) are reported beside the generator's, and every lost packet is put
    /// on a side.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Where a replayed copy was sent, relative to its packet's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Within,
    Grace,
    After,
}

/// What `loopix soak --json` prints.
#[derive(Serialize, Debug, Default)]
pub struct SoakReport {
    /// When the first packet was due, unix ms.
    pub start_unix_ms: u64,
    pub duration_s: f64,
    pub offered_pps: f64,
    pub forwarded_pps: f64,
    pub sent: u64,
    pub forwarded: u64,
    /// Over the whole run, restarts included (perf/soak.sh separates them).
    pub loss: f64,
    /// Packets sent and forwarded in each second of send time.
    pub sent_per_s: Vec<u64>,
    pub forwarded_per_s: Vec<u64>,
    pub epochs_crossed: u64,
    /// Replayed copies sent, in all and by when.
    pub replays_sent: u64,
    pub replays_within: u64,
    pub replays_grace: u64,
    pub replays_after: u64,
    /// Packets that came back more than once: a replay let through.
    pub replays_forwarded: u64,
    /// Every lost packet by side; the replays are refusals the generator asked for.
    pub loss_by_side: LossBySide,
}

/// Builds, runs and reports.
pub fn run(args: &SoakArgs) -> Result<(), String> {
    if !(args.rate > 0.0 && args.duration_s > 0.0) {
        return Err("--rate and --duration-s must be positive".into());
    }
    let setup = Setup::for_nodes(&args.nodes, 0)?;
    let clock = NetworkClock::start();
    let count = (args.rate * args.duration_s).ceil() as usize;
    let gap_us = 1e6 / args.rate;
    // The run starts once the packets are built: estimate that from a small batch.
    let probe = Instant::now();
    let probe_path = setup.path_at(clock.now_us())?;
    build_pool(&setup.params, &|_| probe_path, 256)?;
    let build_s = probe.elapsed().as_secs_f64() * count as f64 / 256.0;
    let start_us = clock.now_us() + ((build_s * 1.3 + args.settle_s as f64 + 1.0) * 1e6) as u64;
    let due_us = |i: usize| start_us + (i as f64 * gap_us) as u64;
    for epoch in setup.epochs.epoch_at(start_us)..=setup.epochs.epoch_at(due_us(count)) {
        setup.path_at(setup.epochs.start_of(epoch).max(start_us))?;
    }
    eprintln!("soak: building {count} packets ({build_s:.0} s estimated)");
    let mut pool = build_pool(
        &setup.params,
        &|i| {
            setup
                .path_at(due_us(i))
                .expect("every epoch's keys checked")
        },
        count,
    )?;
    let replays = plan_replays(&setup, args.replays_per_epoch, count, &due_us);
    let packet_len = setup.params.packet_len();
    let sealed_replays =
        seal_in_send_order(&mut pool.packets, &replays, &due_us, packet_len, |at, d| {
            setup.seal_owned(at, d)
        });
    let wait = start_us.saturating_sub(clock.now_us());
    eprintln!(
        "soak: {} replays planned; starting in {:.1} s; start_unix_ms={}",
        replays.len(),
        wait as f64 / 1e6,
        start_us / 1000
    );
    let report = blast(
        args,
        &setup,
        &clock,
        &pool,
        &replays,
        &sealed_replays,
        start_us,
    )?;
    if args.json {
        crate::json::print(&report)?;
    } else {
        println!(
            "offered {:.0} packets/s, forwarded {:.0}, loss {:.3} %; {} epochs crossed; {} replays sent, {} forwarded",
            report.offered_pps,
            report.forwarded_pps,
            report.loss * 100.0,
            report.epochs_crossed,
            report.replays_sent,
            report.replays_forwarded
        );
        println!("{}", report.loss_by_side.summary());
    }
    Ok(())
}

/// For each epoch the run starts packets in, the first `per_epoch` packets sent in it, each
/// replayed within the epoch (1 s after it was sent), in the grace after the epoch (half
/// way through it) and right after the grace (1 s on), where those fall in the run. Sorted
/// by time: (unix µs, packet, when).
fn plan_replays(
    setup: &Setup,
    per_epoch: usize,
    count: usize,
    due_us: &dyn Fn(usize) -> u64,
) -> Vec<(u64, usize, When)> {
    let (epochs, end) = (&setup.epochs, due_us(count));
    let mut plan = Vec::new();
    let mut taken: HashMap<u64, usize> = HashMap::new();
    for i in 0..count {
        let sent = due_us(i);
        let epoch = epochs.epoch_at(sent);
        let n = taken.entry(epoch).or_default();
        if *n >= per_epoch {
            continue;
        }
        *n += 1;
        let next = epochs.start_of(epoch + 1);
        let candidates = [
            (sent + 1_000_000, When::Within),
            (next + epochs.grace_us / 2, When::Grace),
            (next + epochs.grace_us + 1_000_000, When::After),
        ];
        for (at, when) in candidates {
            let fits = at < end && (when != When::Within || at < next);
            if fits {
                plan.push((at, i, when));
            }
        }
    }
    plan.sort_by_key(|&(at, i, _)| (at, i));
    plan
}

/// Seals every datagram of the run in the order it will be sent (replay `k` before pool
/// packet `i` when it is due by then, as the sender sends them): the link counters rise in
/// send order, as a real node's do. Sealing a replay later, with a counter past every
/// packet still to come, would move the node's link window past them all, and the node
/// would refuse the rest of the run as link replays: loss the generator made, blamed on the
/// node. Pool packets are sealed in place; returns the sealed replays, in plan order.
fn seal_in_send_order(
    packets: &mut [Vec<u8>],
    replays: &[(u64, usize, When)],
    due_us: &dyn Fn(usize) -> u64,
    packet_len: usize,
    mut seal: impl FnMut(u64, Vec<u8>) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let mut sealed = Vec::with_capacity(replays.len());
    for i in 0..=packets.len() {
        let due = if i < packets.len() {
            due_us(i)
        } else {
            u64::MAX
        };
        while let Some(&(at, j, _)) = replays.get(sealed.len())
            && at <= due
        {
            // The same packet under a fresh trailer (a replay is of a packet sent before).
            sealed.push(seal(at, packets[j][..packet_len].to_vec()));
        }
        if let Some(p) = packets.get_mut(i) {
            let raw = std::mem::take(p);
            *p = seal(due, raw);
        }
    }
    sealed
}

/// Sends the pool and the replays at their times while a thread counts what comes back.
fn blast(
    args: &SoakArgs,
    setup: &Setup,
    clock: &NetworkClock,
    pool: &Pool,
    replays: &[(u64, usize, When)],
    sealed_replays: &[Vec<u8>],
    start_us: u64,
) -> Result<SoakReport, String> {
    let seconds = args.duration_s.ceil() as usize + 1;
    let sent_at_s: Arc<Vec<AtomicU64>> = Arc::new(
        (0..pool.packets.len())
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let rx = setup.socket.try_clone().map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let gap_us = 1e6 / args.rate;
    let own_drops_before = own_kernel_drops([&setup.socket]);
    std::thread::scope(|s| {
        let receiver = {
            let (sent_at_s, done) = (Arc::clone(&sent_at_s), Arc::clone(&done));
            s.spawn(move || receive(&rx, pool, &sent_at_s, &done, seconds))
        };
        let watcher = args.metrics.map(|addr| {
            let done = Arc::clone(&done);
            s.spawn(move || watch_node(addr, Duration::from_secs(1), &done))
        });
        let mut report = SoakReport {
            start_unix_ms: start_us / 1000,
            duration_s: args.duration_s,
            sent_per_s: vec![0; seconds],
            ..SoakReport::default()
        };
        let mut next_replay = replays.iter().zip(sealed_replays).peekable();
        // Sends every replay due by `by_us`, in order.
        let mut replays_due = |by_us: u64, report: &mut SoakReport| {
            while let Some(&(&(at, _, when), again)) = next_replay.peek()
                && at <= by_us
            {
                next_replay.next();
                sleep_until(clock, at);
                // The same packet under a fresh link trailer, sealed in send order: the
                // link takes it, so the node's replay filter (or its key's expiry) is what
                // must refuse it.
                if setup.socket.send_to(again, setup.target).is_ok() {
                    report.replays_sent += 1;
                    *match when {
                        When::Within => &mut report.replays_within,
                        When::Grace => &mut report.replays_grace,
                        When::After => &mut report.replays_after,
                    } += 1;
                }
            }
        };
        let mut last_progress = Instant::now();
        for (i, p) in pool.packets.iter().enumerate() {
            let due = start_us + (i as f64 * gap_us) as u64;
            replays_due(due, &mut report);
            sleep_until(clock, due);
            let second = ((due - start_us) / 1_000_000) as usize;
            sent_at_s[i].store(second as u64, Ordering::Relaxed);
            if setup.socket.send_to(p, setup.target).is_ok() {
                report.sent += 1;
                report.sent_per_s[second.min(seconds - 1)] += 1;
            }
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                eprint!(
                    "\rsoak: {:>6.1} s, {} sent",
                    (due - start_us) as f64 / 1e6,
                    report.sent
                );
            }
        }
        replays_due(u64::MAX, &mut report);
        eprintln!();
        std::thread::sleep(Duration::from_secs(1));
        done.store(true, Ordering::SeqCst);
        let (forwarded_per_s, twice) = receiver
            .join()
            .map_err(|_| "receiver panicked".to_string())?;
        let node = watcher.and_then(|w| w.join().ok().flatten());
        report.forwarded = forwarded_per_s.iter().sum();
        report.forwarded_per_s = forwarded_per_s;
        report.replays_forwarded = twice;
        report.offered_pps = report.sent as f64 / args.duration_s;
        report.forwarded_pps = report.forwarded as f64 / args.duration_s;
        report.loss = 1.0 - report.forwarded as f64 / report.sent.max(1) as f64;
        let attempted = pool.packets.len() as u64;
        report.loss_by_side = LossBySide::attribute(
            attempted.saturating_sub(report.forwarded),
            GeneratorCounts {
                kernel_drops: own_kernel_drops([&setup.socket]).saturating_sub(own_drops_before),
                send_errors: attempted - report.sent,
            },
            node,
            report.replays_sent,
        );
        let end_us = start_us + (args.duration_s * 1e6) as u64;
        report.epochs_crossed = setup.epochs.epoch_at(end_us) - setup.epochs.epoch_at(start_us);
        Ok(report)
    })
}

fn sleep_until(clock: &NetworkClock, at_us: u64) {
    let ahead = at_us.saturating_sub(clock.now_us());
    if ahead > 200 {
        std::thread::sleep(Duration::from_micros(ahead));
    }
}

/// Counts first arrivals per second of send time, and second arrivals of any packet.
fn receive(
    rx: &UdpSocket,
    pool: &Pool,
    sent_at_s: &[AtomicU64],
    done: &AtomicBool,
    seconds: usize,
) -> (Vec<u64>, u64) {
    let mut per_s = vec![0u64; seconds];
    let mut seen = vec![false; pool.packets.len()];
    let mut twice = 0;
    let mut buf = vec![0u8; 65_536];
    while !done.load(Ordering::SeqCst) {
        let Ok((n, _)) = rx.recv_from(&mut buf) else {
            continue;
        };
        let Some(&i) = buf
            .get(HEADER_LEN - MAC_LEN..HEADER_LEN)
            .filter(|_| n >= HEADER_LEN)
            .and_then(|mac| pool.by_mac.get(<&[u8; MAC_LEN]>::try_from(mac).ok()?))
        else {
            continue;
        };
        let i = i as usize;
        if seen[i] {
            twice += 1;
            continue;
        }
        seen[i] = true;
        let second = sent_at_s[i].load(Ordering::Relaxed) as usize;
        if let Some(count) = per_s.get_mut(second) {
            *count += 1;
        }
    }
    (per_s, twice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_core::network::link::{LINK_OVERHEAD, Links};
    use loopix_crypto::NodeId;
    use loopix_sim::network::{NetworkSpec, generate};

    /// A run's datagrams, pool packets and replays, sealed by the soak as a provider's
    /// link to a layer-1 mix: the mix's link opens every pool packet in send order (none
    /// is a link replay), so what the node refuses is the replays alone, for what they are.
    #[test]
    fn every_datagram_is_sealed_in_send_order() {
        let spec = NetworkSpec {
            layers: 1,
            mixes_per_layer: 1,
            providers: 1,
            clients: 0,
            ..NetworkSpec::default()
        };
        let net = generate(&spec, 7).unwrap();
        let t = &net.topology;
        let (mix, provider) = (NodeId(1), t.providers().next().unwrap().id);
        let mut sender = Links::new(t, provider, &net.keys.sessions[&provider], 0).unwrap();
        let mut receiver = Links::new(t, mix, &net.keys.sessions[&mix], 0).unwrap();
        let packet_len = 64;
        let count = 5_000;
        let due = |i: usize| 1_000_000 + i as u64 * 100;
        let mut packets: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; packet_len]).collect();
        // Replays of early packets, due long before the run's end.
        let replays: Vec<(u64, usize, When)> = (0..20)
            .map(|k| (due(k * 10) + 50_000, k * 10, When::Within))
            .collect();
        let sealed = seal_in_send_order(&mut packets, &replays, &due, packet_len, |at, mut d| {
            d.resize(packet_len + LINK_OVERHEAD, 0);
            sender.seal(at, mix, &mut d).unwrap();
            d
        });
        assert_eq!(sealed.len(), replays.len());
        // Delivered in send order: every pool packet opens.
        let (mut next, mut refused) = (0, 0);
        for (i, p) in packets.iter().enumerate() {
            while next < replays.len() && replays[next].0 <= due(i) {
                let _ = receiver.open(replays[next].0, provider, &sealed[next]);
                next += 1;
            }
            refused += usize::from(receiver.open(due(i), provider, p).is_err());
        }
        assert_eq!(refused, 0, "pool packets refused by the link");
    }
}
