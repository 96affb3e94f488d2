//! A simulator that breaks things: seeded runs of a small network in which nodes crash and
//! restart (keeping only what a real node keeps on disk: its keys, its replay journal, what
//! a provider's store committed), a provider's store commits fail now and then (5 %, kept
//! for the next flush), links partition and heal, and an attacker on a restarted mix's
//! link replays what it saw before the crash. Every run checks the invariants a user relies
//! on:
//!
//! - no message is delivered twice;
//! - no message is lost without its sender learning it: after the network heals, every
//!   message is delivered, or its sender gave it up;
//! - an acknowledged message was delivered;
//! - no replay is forwarded: every datagram replayed at a restarted mix is dropped as a
//!   replay (its journal refilled the filter), or under a key retired since;
//! - every drop is counted: each mix's counters add up (in = out - own loops + drops +
//!   held + own loops back);
//! - memory stays bounded: no pool holds more than its limit;
//! - every node takes every honest network document (one an epoch, published ahead of it,
//!   as an authority does: the first lists keys for two epochs only, so the network runs
//!   on only if each later one is taken).
//!
//! Every node's and client's clock is off the true time by up to [`ChaosConfig::clock_skew_s`]
//! either way, as on hosts whose clocks disagree within the tolerance the operator guide
//! asks for, and mixes release what falls due within half a batch's modelled cost early, as
//! their shards do.
//!
//! Runs use the stand-in codec ([`Plaintext`]): the same wire shape, replay tags and
//! commands, none of the cost, so a sweep of hundreds of seeds takes seconds. A failing
//! seed reproduces the run exactly.

use std::collections::{BTreeMap, BTreeSet};

use loopix_core::drops::DropReason;
use loopix_core::formats::codec::Plaintext;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::pipeline::timing_wheel::WheelConfig;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::ClientEvent;
use loopix_core::roles::rate::{exp_us, uniform};
use loopix_crypto::NodeId;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::network::{FIRST_CLIENT, NetworkSpec, generate};
use crate::sim::{LinkModel, Sim, SimOptions};

const S: u64 = 1_000_000;

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seconds of traffic and chaos; then the network heals and drains.
    pub chaos_s: u64,
    /// Seconds after the chaos for messages to arrive (acks, resends).
    pub drain_s: u64,
    /// Mean seconds between crashes (any mix or provider), and mean seconds a crashed node
    /// stays down.
    pub crash_every_s: f64,
    pub down_s: f64,
    /// Mean seconds between partitions (a node cut off from everyone), and their mean
    /// length.
    pub partition_every_s: f64,
    pub partition_s: f64,
    /// Datagrams an attacker replays at each restarted mix (the last ones it received
    /// before the crash).
    pub replays_per_restart: usize,
    /// Messages each client sends during the chaos.
    pub messages_per_client: usize,
    /// Each node's and client's clock is off the true time by up to this much either way
    /// (what the operator guide tolerates: clocks within a few seconds).
    pub clock_skew_s: f64,
    /// Off only to show that the sweep catches a node that skips its journal writes.
    pub journal_writes: bool,
    /// Off only to show that the network depends on each epoch's document.
    pub documents: bool,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            chaos_s: 60,
            drain_s: 400,
            crash_every_s: 8.0,
            down_s: 6.0,
            partition_every_s: 15.0,
            partition_s: 4.0,
            replays_per_restart: 8,
            messages_per_client: 5,
            clock_skew_s: 2.0,
            journal_writes: true,
            documents: true,
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub messages: usize,
    pub delivered: usize,
    pub gave_up: usize,
    pub crashes: usize,
    pub restarts: usize,
    pub partitions: usize,
    pub replays: usize,
    /// Network documents published (one an epoch).
    pub documents: usize,
    /// Provider store commits that failed (and were retried).
    pub failed_commits: u64,
}

impl RunStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RunStats) {
        self.messages += other.messages;
        self.delivered += other.delivered;
        self.gave_up += other.gave_up;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.partitions += other.partitions;
        self.replays += other.replays;
        self.documents += other.documents;
        self.failed_commits += other.failed_commits;
    }
}

/// An invariant a run broke, and what showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// The network a chaos run uses: two layers of two mixes, two providers, four clients,
/// with mix loops (so every link carries traffic) and acknowledgements.
pub fn spec() -> NetworkSpec {
    NetworkSpec {
        layers: 2,
        mixes_per_layer: 2,
        providers: 2,
        clients: 4,
        lambda_payload_per_s: 2.0,
        lambda_loop_per_s: 0.5,
        lambda_drop_per_s: 1.0,
        lambda_mix_loop_per_s: 0.5,
        poll_rate_per_s: 2.0,
        mu_per_s: 10.0,
        // Short epochs, so that every run crosses boundaries: keys change, old ones retire
        // after their grace, journals follow.
        epoch_s: 120,
        epoch_grace_s: 10,
        // The first document: epochs 0 and 1. The rest come as an authority publishes them.
        published_epochs: 2,
        ..NetworkSpec::default()
    }
}

/// Pools and filters for a light load; a journal, as a real node keeps.
pub fn limits() -> HopLimits {
    HopLimits {
        pool_packets: 4_096,
        replay_tags: 1 << 16,
        wheel: WheelConfig {
            slot_us: 100,
            horizon_us: 600 * S,
        },
        journal_tags: 4_096,
        max_delay_us: u64::MAX,
        gather_us: loopix_core::pipeline::hop::DEFAULT_GATHER_US,
    }
}

/// One run of `config` from `seed`: its statistics, or the first invariant it broke.
pub fn run(seed: u64, config: &ChaosConfig) -> Result<RunStats, (Violation, RunStats)> {
    let spec = spec();
    let net = generate(&spec, seed).map_err(|e| {
        (
            Violation {
                invariant: "setup",
                detail: e.to_string(),
            },
            RunStats::default(),
        )
    })?;
    let nodes: Vec<NodeId> = net.topology.nodes.iter().map(|n| n.id).collect();
    let mixes: BTreeSet<NodeId> = net
        .topology
        .nodes
        .iter()
        .filter(|n| matches!(n.role, loopix_core::network::topology::Role::Mix { .. }))
        .map(|n| n.id)
        .collect();
    let clients: Vec<NodeId> = (0..u64::from(spec.clients))
        .map(|i| NodeId(FIRST_CLIENT + i))
        .collect();
    let link = LinkModel {
        latency_us: 1_000,
        ..LinkModel::default()
    };
    let options = SimOptions {
        acks: AckConfig { max_attempts: 10 },
        // A hop's cost at the crypto floor: mixes release early as their shards do.
        cost_per_packet_us: 50,
        // Providers' store commits fail now and then (kept for the next flush).
        commit_failure_rate: 0.05,
        ..SimOptions::default()
    };
    let mut sim: Sim<Plaintext> = Sim::with_codec_options(net, seed, link, limits(), options);
    sim.journal_writes = config.journal_writes;
    sim.keep_recent(config.replays_per_restart);
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x00c4_a05e);
    let mut stats = RunStats::default();
    let skew_us = config.clock_skew_s * S as f64;
    for &id in nodes.iter().chain(&clients) {
        let offset = (uniform(&mut rng) * 2.0 - 1.0) * skew_us;
        sim.set_clock_offset(id, offset as i64);
    }

    // The plan: sends, crashes (each with its restart) and partitions, by time.
    #[derive(Debug)]
    enum Act {
        Send {
            from: NodeId,
            to: NodeId,
            n: usize,
        },
        Crash(NodeId),
        Restart(NodeId),
        Cut(NodeId),
        Heal(NodeId),
        /// The document for this epoch, published ahead of it.
        Publish(u64),
    }
    let mut plan: Vec<(u64, Act)> = Vec::new();
    let chaos_us = config.chaos_s * S;
    for (i, &from) in clients.iter().enumerate() {
        for n in 0..config.messages_per_client {
            let at = 2 * S + (uniform(&mut rng) * (chaos_us - 2 * S) as f64) as u64;
            let others: Vec<NodeId> = clients.iter().copied().filter(|&c| c != from).collect();
            let to = others[(rng.next_u32() as usize) % others.len()];
            plan.push((
                at,
                Act::Send {
                    from,
                    to,
                    n: i * 1000 + n,
                },
            ));
        }
    }
    // Crashes and partitions: each at Poisson times from 5 s, a random node, for a random
    // while (bounded), over before the chaos ends.
    let spells = [
        (config.crash_every_s, config.down_s, 30 * S, true),
        (config.partition_every_s, config.partition_s, 20 * S, false),
    ];
    for (every_s, lasting_s, longest_us, crash) in spells {
        let mut t = 5 * S;
        while let Some(gap) = exp_us(&mut rng, 1.0 / every_s) {
            t += gap;
            if t >= chaos_us {
                break;
            }
            let who = nodes[(rng.next_u32() as usize) % nodes.len()];
            let ends = (t + exp_us(&mut rng, 1.0 / lasting_s)
                .unwrap_or(S)
                .min(longest_us))
            .min(chaos_us);
            let (start, end) = if crash {
                (Act::Crash(who), Act::Restart(who))
            } else {
                (Act::Cut(who), Act::Heal(who))
            };
            plan.push((t, start));
            plan.push((ends, end));
        }
    }
    // Every epoch's document, half a minute before it starts, to the end of the drain.
    let epochs = sim.document(0, 1).network.epochs;
    let end_us = chaos_us + config.drain_s * S;
    // One more message from each client after the network healed, late enough to fall in
    // an epoch the first document has no keys for.
    for (i, &from) in clients.iter().enumerate() {
        let to = clients[(i + 1) % clients.len()];
        let at = end_us.saturating_sub(200 * S).max(chaos_us + S);
        plan.push((
            at,
            Act::Send {
                from,
                to,
                n: i * 1000 + 999,
            },
        ));
    }
    for e in 1.. {
        let at = epochs.start_of(e).saturating_sub(30 * S);
        if at >= end_us || !config.documents {
            break;
        }
        plan.push((at, Act::Publish(e)));
    }
    plan.sort_by_key(|(at, _)| *at);

    let mut sent: BTreeMap<(NodeId, u64), (NodeId, Vec<u8>)> = BTreeMap::new();
    let mut cut: BTreeMap<NodeId, usize> = BTreeMap::new();
    let violation = |invariant, detail: String| Violation { invariant, detail };
    let mut healed = false;
    for (at, act) in plan {
        if !healed && at > chaos_us {
            sim.run_until(chaos_us);
            heal(&mut sim, &nodes, &mut stats)
                .map_err(|e| (violation("restart", e), stats.clone()))?;
            healed = true;
        }
        sim.run_until(at);
        match act {
            Act::Publish(e) => {
                let refused = sim.publish(sim.document(e.saturating_sub(1), e + 1));
                stats.documents += 1;
                if let Some((id, why)) = refused.first() {
                    return Err((
                        violation(
                            "every node takes an honest document",
                            format!("node {} refused epoch {e}'s document: {why}", id.0),
                        ),
                        stats,
                    ));
                }
            }
            Act::Send { from, to, n } => {
                let message = format!("message {n} from {} to {}", from.0, to.0).into_bytes();
                if let Some(Ok(id)) = sim.with_client(from, |c| c.send(to, &message)) {
                    sent.insert((from, id), (to, message));
                    stats.messages += 1;
                }
            }
            Act::Crash(who) => {
                if sim.crash(who) {
                    stats.crashes += 1;
                }
            }
            Act::Restart(who) => {
                if sim.is_up(who) {
                    continue;
                }
                let replays: Vec<_> = if mixes.contains(&who) {
                    sim.recent(who).cloned().collect()
                } else {
                    Vec::new()
                };
                sim.restart(who)
                    .map_err(|e| (violation("restart", e), stats.clone()))?;
                stats.restarts += 1;
                if replays.is_empty() {
                    continue;
                }
                // An attacker on its link replays what it received before the crash: the
                // filter, refilled from the journal, must drop each as a replay.
                // Under a key retired since, a replay is refused as expired instead.
                let replay_drops = |sim: &Sim<Plaintext>| {
                    sim.mix(who).map_or(0, |m| {
                        let d = &m.stats().hop.drops;
                        d.get(DropReason::Replay) + d.get(DropReason::ExpiredKey)
                    })
                };
                let before = replay_drops(&sim);
                for (from, bytes) in &replays {
                    sim.inject_from(*from, who, bytes.clone());
                }
                sim.run_until(sim.now_us());
                let dropped = replay_drops(&sim) - before;
                stats.replays += replays.len();
                if dropped != replays.len() as u64 {
                    return Err((
                        violation(
                            "no replay forwarded",
                            format!(
                                "mix {} after a restart at {} s: {} of {} replayed datagrams \
                                 dropped as replays (or under a retired key)",
                                who.0,
                                sim.now_us() / S,
                                dropped,
                                replays.len()
                            ),
                        ),
                        stats,
                    ));
                }
            }
            Act::Cut(who) => {
                *cut.entry(who).or_default() += 1;
                sim.link.blocked.insert(who);
                stats.partitions += 1;
            }
            Act::Heal(who) => {
                let left = cut.entry(who).or_default();
                *left = left.saturating_sub(1);
                if *left == 0 {
                    sim.link.blocked.remove(&who);
                }
            }
        }
    }
    if !healed {
        sim.run_until(chaos_us);
        heal(&mut sim, &nodes, &mut stats).map_err(|e| (violation("restart", e), stats.clone()))?;
    }
    sim.run_until(end_us);

    // What the clients saw.
    let mut delivered: BTreeMap<(NodeId, Vec<u8>), usize> = BTreeMap::new();
    let mut acked = BTreeSet::new();
    let mut gave_up = BTreeSet::new();
    for (at, e) in &sim.log.client_events {
        match e {
            ClientEvent::Delivered { message, .. } => {
                *delivered.entry((*at, message.clone())).or_default() += 1;
            }
            ClientEvent::Acked { msg_id, .. } => {
                acked.insert((*at, *msg_id));
            }
            ClientEvent::GaveUp { msg_id, .. } => {
                gave_up.insert((*at, *msg_id));
            }
            _ => {}
        }
    }
    stats.delivered = delivered.len();
    stats.failed_commits = sim.log.failed_commits;
    stats.gave_up = gave_up.len();
    if let Some(((to, m), n)) = delivered.iter().find(|(_, n)| **n > 1) {
        return Err((
            violation(
                "no message delivered twice",
                format!(
                    "client {} got {:?} {n} times",
                    to.0,
                    String::from_utf8_lossy(m)
                ),
            ),
            stats,
        ));
    }
    for ((from, id), (to, message)) in &sent {
        let arrived = delivered.contains_key(&(*to, message.clone()));
        if acked.contains(&(*from, *id)) && !arrived {
            return Err((
                violation(
                    "an acknowledged message was delivered",
                    format!(
                        "client {}'s message {id:016x} acked, never delivered",
                        from.0
                    ),
                ),
                stats,
            ));
        }
        if !arrived && !gave_up.contains(&(*from, *id)) {
            return Err((
                violation(
                    "no message lost without its sender learning it",
                    format!(
                        "client {}'s message {id:016x} to {} neither delivered nor given up \
                         {} s after the network healed",
                        from.0, to.0, config.drain_s
                    ),
                ),
                stats,
            ));
        }
    }
    for &m in &mixes {
        let Some(mix) = sim.mix(m) else {
            continue;
        };
        let s = mix.stats();
        let held = mix.pool_size() as u64;
        let accounted = (s.sent - s.loops_sent) + s.hop.drops.total() + held + s.loops_returned;
        if s.hop.received != accounted {
            return Err((
                violation(
                    "every drop counted",
                    format!(
                        "mix {}: {} in, {} accounted for ({} out, {} own loops sent, {} \
                         dropped, {held} held, {} own loops back)",
                        m.0,
                        s.hop.received,
                        accounted,
                        s.sent,
                        s.loops_sent,
                        s.hop.drops.total(),
                        s.loops_returned
                    ),
                ),
                stats,
            ));
        }
        if held > u64::from(limits().pool_packets) {
            return Err((
                violation(
                    "bounded memory",
                    format!("mix {} holds {held} packets", m.0),
                ),
                stats,
            ));
        }
    }
    Ok(stats)
}

/// The network heals when the chaos ends: every link restored, every node up.
fn heal(sim: &mut Sim<Plaintext>, nodes: &[NodeId], stats: &mut RunStats) -> Result<(), String> {
    sim.link.blocked.clear();
    for &n in nodes {
        if !sim.is_up(n) {
            sim.restart(n)?;
            stats.restarts += 1;
        }
    }
    Ok(())
}

/// What a sweep of runs found.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    pub runs: usize,
    /// Each failing seed and the invariant it broke.
    pub failures: Vec<(u64, Violation)>,
    /// What the runs did, added up.
    pub totals: RunStats,
}

impl std::fmt::Display for Sweep {
    /// One line: what the runs did.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs: {} messages, {} delivered, {} given up; {} crashes, {} restarts, {} \
             partitions, {} replays at restarted mixes, {} documents, {} failed store commits",
            self.runs,
            self.totals.messages,
            self.totals.delivered,
            self.totals.gave_up,
            self.totals.crashes,
            self.totals.restarts,
            self.totals.partitions,
            self.totals.replays,
            self.totals.documents,
            self.totals.failed_commits
        )
    }
}

/// Runs seeds `first..first + runs`.
pub fn sweep(first: u64, runs: usize, config: &ChaosConfig) -> Sweep {
    let mut out = Sweep {
        runs,
        ..Sweep::default()
    };
    for seed in first..first + runs as u64 {
        let stats = match run(seed, config) {
            Ok(s) => s,
            Err((v, s)) => {
                out.failures.push((seed, v));
                s
            }
        };
        out.totals.add(&stats);
    }
    out
}
