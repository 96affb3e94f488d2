//! Prometheus text exposition of a node's shard reports, served on a loopback port by a
//! plain thread: off the packet path, reading the latest reports the control thread keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use crate::directory_client::DirectoryFreshness;
use crate::shard::ShardReport;
use loopix_core::drops::DropReason;
use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::topology::Role;
use loopix_core::pipeline::key_ring::EpochStats;
use loopix_core::pipeline::latency_histogram::LatencyHistogram;
use loopix_core::roles::provider::INBOX_DEPTH_BOUNDS;

/// What the metrics thread serves: the latest reports and figures derived from them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub reports: Vec<ShardReport>,
    /// The I/O backend the shards run on.
    pub backend: Option<crate::backend::Chosen>,
    /// Measured arrival rate of packets held on the wheels, per second.
    pub held_rate_per_s: f64,
    /// µ from the topology: the expected pool is `held_rate_per_s / mu_per_s` (Lemma 1).
    pub mu_per_s: f64,
    /// Shards the node runs (all of them, whether or not each has reported yet).
    pub shards: usize,
    /// The network's key epochs, and the node's clock when the reports were taken.
    pub epochs: Option<EpochSchedule>,
    pub now_us: u64,
    /// With a directory: the epoch of the network document in force.
    pub document_epoch: Option<u64>,
    /// The node's role: series of the other role are left out.
    pub role: Option<Role>,
    /// With a directory: how fresh what the node holds from it is.
    pub directory: Option<Arc<DirectoryFreshness>>,
    /// The last epoch for which the topology in force publishes this node's keys.
    pub keys_published_until: Option<u64>,
    /// Providers: what the store's writer did.
    pub store: Option<Arc<crate::durable_inbox::StoreStats>>,
}

/// A neighbour with no verified datagram for this long counts as silent.
pub const LINK_SILENT_AFTER_US: u64 = 60_000_000;

/// A snapshot older than this (the node's loop stopped refreshing it) is unhealthy.
const STALE_AFTER_US: u64 = 5_000_000;

/// What `/health` and `/ready` answer: the status code and the reason.
fn health(s: &Snapshot, now_us: u64, ready: bool) -> (u16, String) {
    if s.now_us == 0 {
        return (503, "starting: no shard has reported yet".into());
    }
    let age = now_us.saturating_sub(s.now_us);
    if age > STALE_AFTER_US {
        return (
            503,
            format!("the node's reports are {} s old", age / 1_000_000),
        );
    }
    if ready && s.reports.len() < s.shards {
        return (
            503,
            format!("{} of {} shards reporting", s.reports.len(), s.shards),
        );
    }
    (200, "ok".into())
}

/// `process_*` series (the Prometheus client conventions) from /proc/self: resident
/// memory, CPU time, open descriptors, start time.
fn process_metrics(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    let boot_s = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    let mut row = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    row(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        field(24).map(|p| p * page),
    );
    row(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, s.",
        field(14).zip(field(15)).map(|(u, k)| (u + k) / ticks),
    );
    row(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        fds.map(|n| n as f64),
    );
    row(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the unix epoch, s.",
        field(22).zip(boot_s).map(|(t, b)| b + t / ticks),
    );
}

/// Renders the Prometheus text format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        };
    let provider = s.role == Some(Role::Provider);
    let role = match s.role {
        Some(Role::Mix { .. }) => "mix",
        Some(Role::Provider) => "provider",
        None => "unknown",
    };
    family(
        "loopix_build_info",
        "gauge",
        "The build and how it runs here: version, the lane kernel this CPU chose, the I/O backend, the role.",
        &mut std::iter::once((
            format!(
                "version=\"{}\",kernel=\"{}\",backend=\"{}\",role=\"{role}\"",
                env!("CARGO_PKG_VERSION"),
                loopix_crypto::lanes::Kernel::detect().name(),
                s.backend.map_or("unknown".to_string(), |b| b.to_string())
            ),
            1.0,
        )),
    );
    if let Some(c) = loopix_crypto::lanes::calibrate::calibration() {
        family(
            "loopix_lane_kernel_seconds_per_packet",
            "gauge",
            "Each lane kernel this CPU runs, as measured at start: a batch's public-key work per packet (decode, two multiplications and encodings). The node unwraps with the fastest (chosen=\"true\"), unless LOOPIX_KERNEL named one.",
            &mut c.ns_per_packet.iter().map(|(k, ns)| {
                (
                    format!("kernel=\"{}\",chosen=\"{}\"", k.name(), *k == c.chosen),
                    ns / 1e9,
                )
            }),
        );
    }
    let shard = |r: &ShardReport| format!("shard=\"{}\"", r.shard);
    family(
        "loopix_shards",
        "gauge",
        "Shards this node runs.",
        &mut std::iter::once((String::new(), s.shards as f64)),
    );
    family(
        "loopix_packets_in_total",
        "counter",
        "Datagrams received.",
        &mut s.reports.iter().map(|r| (shard(r), r.core.received as f64)),
    );
    family(
        "loopix_packets_out_total",
        "counter",
        "Datagrams sent.",
        &mut s.reports.iter().map(|r| (shard(r), r.core.sent as f64)),
    );
    family(
        "loopix_packets_dropped_total",
        "counter",
        "Datagrams dropped, by reason.",
        &mut s.reports.iter().flat_map(|r| {
            DropReason::ALL.iter().map(move |&d| {
                (
                    format!("{},reason=\"{}\"", shard(r), d.name()),
                    r.core.drops.get(d) as f64,
                )
            })
        }),
    );
    family(
        "loopix_packets_in_lanes_total",
        "counter",
        "Packets whose public-key work ran in vector lanes, several at once (the rest one at a time): against loopix_packets_in_total, how full receive batches are.",
        &mut s.reports.iter().map(|r| (shard(r), r.core.in_lanes as f64)),
    );
    family(
        "loopix_packets_ended_total",
        "counter",
        "Packets whose path ended here (loops back, drop cover, stored).",
        &mut s.reports.iter().map(|r| (shard(r), r.core.ended as f64)),
    );
    family(
        "loopix_pool_packets",
        "gauge",
        "Packets held on the timing wheel (the Poisson mix pool, queue depth).",
        &mut s.reports.iter().map(|r| (shard(r), r.core.pending as f64)),
    );
    let total: u64 = s.reports.iter().map(|r| r.core.pending).sum();
    let expected = if s.mu_per_s > 0.0 {
        s.held_rate_per_s / s.mu_per_s
    } else {
        0.0
    };
    family(
        "loopix_pool_packets_node",
        "gauge",
        "Packets held on all shards' wheels.",
        &mut std::iter::once((String::new(), total as f64)),
    );
    family(
        "loopix_pool_packets_expected",
        "gauge",
        "lambda/mu from the measured arrival rate (Lemma 1).",
        &mut std::iter::once((String::new(), expected)),
    );
    // Mixes: NaN until the first loops are judged (present, so a dashboard shows the
    // shard, and no alert fires on a fraction of nothing).
    let mix = matches!(s.role, Some(Role::Mix { .. }));
    family(
        "loopix_loop_return_fraction",
        "gauge",
        "Share of this node's recent loops that came back (mixes; NaN until loops are judged).",
        &mut s
            .reports
            .iter()
            .filter_map(|r| match r.core.loop_return_fraction {
                Some(f) => Some((shard(r), f)),
                None if mix => Some((shard(r), f64::NAN)),
                None => None,
            }),
    );
    family(
        "loopix_loops_failed_total",
        "counter",
        "Mixes: loops that fell due but could not be built (no published key for an epoch on their path, or no free buffer).",
        &mut s
            .reports
            .iter()
            .map(|r| (shard(r), r.core.loops_failed as f64)),
    );
    // Providers' series only where there is a provider.
    if provider {
        family(
            "loopix_inbox_deepest_packets",
            "gauge",
            "Providers: the deepest client inbox (a client back after an absence drains it at \
             poll_size items a poll).",
            &mut s
                .reports
                .iter()
                .map(|r| (shard(r), r.core.inbox_deepest as f64)),
        );

        family(
            "loopix_inbox_packets",
            "gauge",
            "Providers: packets waiting in client inboxes (durable).",
            &mut s
                .reports
                .iter()
                .map(|r| (shard(r), r.core.inbox_packets as f64)),
        );
        family(
            "loopix_provider_sessions",
            "gauge",
            "Providers: client sessions held, on each client's home shard (a client's current \
             session and the one before its last rekey).",
            &mut s.reports.iter().map(|r| (shard(r), r.core.sessions as f64)),
        );
        family(
            "loopix_handshakes_total",
            "counter",
            "Providers: client handshake initiations answered, by how (`session`: a session \
             started; `cookie`: under load, a cookie for an address not yet proven). Refused ones \
             are drops (`handshake_mac`, `handshake_rate_limited`, `unauthenticated`).",
            &mut s.reports.iter().flat_map(|r| {
                [
                    (
                        format!("{},answer=\"session\"", shard(r)),
                        r.core.handshakes_answered as f64,
                    ),
                    (
                        format!("{},answer=\"cookie\"", shard(r)),
                        r.core.cookies_sent as f64,
                    ),
                ]
            }),
        );
    }
    family(
        "loopix_shard_max_block_seconds",
        "gauge",
        "The longest a shard slept waiting on anything but the network since it started, by \
         what it waited on (`store`: a provider's store; `journal`: the replay journal's \
         writes): a slow disk shows here before it costs packets.",
        &mut s.reports.iter().flat_map(|r| {
            [
                ("store", r.max_block_us.store),
                ("journal", r.max_block_us.journal),
            ]
            .map(|(cause, us)| (format!("{},cause=\"{cause}\"", shard(r)), us as f64 / 1e6))
        }),
    );
    family(
        "loopix_strays_forwarded_total",
        "counter",
        "Datagrams handed to their owner shard.",
        &mut s
            .reports
            .iter()
            .map(|r| (shard(r), r.strays_forwarded as f64)),
    );
    family(
        "loopix_strays_dropped_total",
        "counter",
        "Datagrams for another shard dropped: every stray buffer in flight, or the owner's queue full.",
        &mut s
            .reports
            .iter()
            .map(|r| (shard(r), r.strays_dropped as f64)),
    );
    family(
        "loopix_receive_seconds_total",
        "counter",
        "Time the core spent on received batches (unwrap, replay check, hold); over loopix_packets_in_total, the per-packet cost to compare with the crypto floor of loopix speed.",
        &mut s
            .reports
            .iter()
            .map(|r| (shard(r), r.receive_ns as f64 / 1e9)),
    );
    family(
        "loopix_kernel_drops_total",
        "counter",
        "Datagrams the kernel dropped at the shard's socket because its receive buffer was full: offered load the node never saw.",
        &mut s.reports.iter().map(|r| (shard(r), r.kernel_drops as f64)),
    );
    family(
        "loopix_fault_drops_total",
        "counter",
        "Outgoing datagrams dropped by fault injection ([faults] in node.toml), by kind: on purpose (dropped), or because max_held were held (overflow).",
        &mut s.reports.iter().flat_map(|r| {
            [
                (
                    format!("{},kind=\"dropped\"", shard(r)),
                    r.core.faults.dropped as f64,
                ),
                (
                    format!("{},kind=\"overflow\"", shard(r)),
                    r.core.faults.overflow as f64,
                ),
            ]
        }),
    );
    family(
        "loopix_socket_errors_total",
        "counter",
        "Sends and receives the shard's socket refused, by operation: each send a datagram that did not leave.",
        &mut s.reports.iter().flat_map(|r| {
            [
                (format!("{},op=\"send\"", shard(r)), r.send_errors as f64),
                (format!("{},op=\"recv\"", shard(r)), r.recv_errors as f64),
            ]
        }),
    );
    if let Some(epochs) = &s.epochs {
        family(
            "loopix_epoch",
            "gauge",
            "The key epoch now.",
            &mut std::iter::once((String::new(), epochs.epoch_at(s.now_us) as f64)),
        );
        family(
            "loopix_epoch_seconds_to_next",
            "gauge",
            "Seconds until the next key epoch starts.",
            &mut std::iter::once((String::new(), epochs.until_next_us(s.now_us) as f64 / 1e6)),
        );
    }
    let per_key = |pick: fn(&EpochStats) -> f64| {
        s.reports.iter().flat_map(move |r| {
            r.core
                .epochs
                .iter()
                .flatten()
                .map(move |e| (format!("{},epoch=\"{}\"", shard(r), e.epoch), pick(e)))
        })
    };
    family(
        "loopix_replay_filter_tags",
        "gauge",
        "Tags recorded in the replay filter of each key in use.",
        &mut per_key(|e| e.tags as f64),
    );
    family(
        "loopix_replay_filter_fill",
        "gauge",
        "Share of its rated capacity a key's replay filter holds (sized never to reach 1 under the configured top rate).",
        &mut per_key(|e| e.tags as f64 / e.rated_tags.max(1) as f64),
    );
    family(
        "loopix_replay_filter_rated_tags",
        "gauge",
        "Tags each key's replay filter is rated for (a shard's top rate over the key's lifetime).",
        &mut per_key(|e| e.rated_tags as f64),
    );
    family(
        "loopix_replay_filter_bytes",
        "gauge",
        "Memory of each key's replay filter.",
        &mut per_key(|e| e.filter_bytes as f64),
    );
    family(
        "loopix_replay_drops_total",
        "counter",
        "Replays dropped under each key in use.",
        &mut per_key(|e| e.replays as f64),
    );
    family(
        "loopix_replay_journal_lost_total",
        "counter",
        "Tags recorded under each key that the replay journal could not keep (not written in time): a restart would not know them.",
        &mut per_key(|e| e.journal_lost as f64),
    );
    family(
        "loopix_replay_journal_errors_total",
        "counter",
        "Replay journal writes that failed.",
        &mut s
            .reports
            .iter()
            .map(|r| (shard(r), r.journal_errors as f64)),
    );
    family(
        "loopix_document_epoch",
        "gauge",
        "The epoch of the directory's network document in force (none: a topology file).",
        &mut s
            .document_epoch
            .map(|e| (String::new(), e as f64))
            .into_iter(),
    );
    if let Some(epochs) = s.epochs {
        family(
            "loopix_document_valid_until_timestamp_seconds",
            "gauge",
            "When the epoch of the directory's document in force ends, unix s: past it, the node missed the next one.",
            &mut s
                .document_epoch
                .map(|e| (String::new(), (epochs.start_of(e + 1) / 1_000_000) as f64))
                .into_iter(),
        );
    }
    family(
        "loopix_keys_published_until_epoch",
        "gauge",
        "The last epoch for which the topology in force publishes this node's keys.",
        &mut s
            .keys_published_until
            .map(|e| (String::new(), e as f64))
            .into_iter(),
    );
    if let Some(d) = &s.directory {
        let seconds = |a: &std::sync::atomic::AtomicU64| {
            (a.load(std::sync::atomic::Ordering::Relaxed) / 1_000_000) as f64
        };
        family(
            "loopix_directory_last_fetch_timestamp_seconds",
            "gauge",
            "When a network document was last fetched and taken, unix s (0: never).",
            &mut std::iter::once((String::new(), seconds(&d.last_fetch_us))),
        );
        family(
            "loopix_directory_last_upload_timestamp_seconds",
            "gauge",
            "When an authority last took this node's keys, unix s (0: never).",
            &mut std::iter::once((String::new(), seconds(&d.last_upload_us))),
        );
        family(
            "loopix_directory_keys_uploaded_until_epoch",
            "gauge",
            "The last epoch the keys an authority took cover.",
            &mut std::iter::once((
                String::new(),
                d.keys_uploaded_until
                    .load(std::sync::atomic::Ordering::Relaxed) as f64,
            )),
        );
    }
    // Each neighbour's link in: the newest verified datagram any shard has seen from it.
    let mut heard: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &s.reports {
        for &(neighbour, at) in r.links_heard.iter() {
            let e = heard.entry(neighbour.0).or_default();
            *e = (*e).max(at);
        }
    }
    family(
        "loopix_link_last_heard_timestamp_seconds",
        "gauge",
        "When a datagram from each neighbour this node takes packets from last verified, unix s (0: never).",
        &mut heard.iter().map(|(neighbour, at)| {
            (
                format!("neighbour=\"{neighbour}\""),
                (at / 1_000_000) as f64,
            )
        }),
    );
    family(
        "loopix_links_silent",
        "gauge",
        "Neighbours this node takes packets from with no verified datagram in the last 60 s (or never).",
        &mut std::iter::once((
            String::new(),
            heard
                .values()
                .filter(|&&at| at + LINK_SILENT_AFTER_US < s.now_us || at == 0)
                .count() as f64,
        )),
    );
    let merged = |pick: fn(&ShardReport) -> &LatencyHistogram| {
        let mut h = LatencyHistogram::default();
        s.reports.iter().for_each(|r| h.merge(pick(r)));
        h
    };
    histogram(
        &mut out,
        "loopix_delay_error_seconds",
        "|actual hold - requested delay| of released packets (delay fidelity), all shards.",
        &merged(|r| &r.core.delay_error),
    );
    histogram(
        &mut out,
        "loopix_loop_overhead_seconds",
        "Mixes: loop round trip minus the delays it asked for (path overhead), all shards.",
        &merged(|r| &r.core.loop_overhead),
    );
    if provider {
        let _ = writeln!(
            out,
            "# HELP loopix_inbox_depth_clients Providers: clients by the packets waiting in their inbox.\n# TYPE loopix_inbox_depth_clients histogram"
        );
        let mut sum = [0u64; INBOX_DEPTH_BOUNDS.len() + 1];
        for r in &s.reports {
            for (total, n) in sum.iter_mut().zip(r.core.inbox_depths) {
                *total += n;
            }
        }
        for (i, n) in sum.iter().enumerate() {
            let le = INBOX_DEPTH_BOUNDS
                .get(i)
                .map_or("+Inf".to_string(), u64::to_string);
            let _ = writeln!(out, "loopix_inbox_depth_clients_bucket{{le=\"{le}\"}} {n}");
        }
        let packets: u64 = s.reports.iter().map(|r| r.core.inbox_packets).sum();
        let _ = writeln!(out, "loopix_inbox_depth_clients_sum {packets}");
        let _ = writeln!(
            out,
            "loopix_inbox_depth_clients_count {}",
            sum[INBOX_DEPTH_BOUNDS.len()]
        );
    }
    if let Some(store) = &s.store {
        store_metrics(&mut out, store);
    }
    process_metrics(&mut out);
    out
}

/// A provider's store writer: its commits (each one fsync), what they wrote, how long they
/// took.
fn store_metrics(out: &mut String, st: &crate::durable_inbox::StoreStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
        (
            "loopix_store_commits_total",
            "Providers: store transactions committed (one fsync each, for all shards' batches).",
            st.commits.load(Relaxed),
        ),
        (
            "loopix_store_batches_total",
            "Providers: shards' write batches committed (over commits: how many a commit groups).",
            st.batches.load(Relaxed),
        ),
        (
            "loopix_store_packets_written_total",
            "Providers: packets made durable in inboxes.",
            st.stored.load(Relaxed),
        ),
        (
            "loopix_store_packets_removed_total",
            "Providers: packets removed from the store (acknowledged or expired).",
            st.removed.load(Relaxed),
        ),
        (
            "loopix_store_commit_failures_total",
            "Providers: commits that failed and were tried again (each logged).",
            st.failures.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP loopix_store_commit_max_seconds Providers: the longest store commit.\n\
         # TYPE loopix_store_commit_max_seconds gauge\nloopix_store_commit_max_seconds {}",
        st.commit_us_max.load(Relaxed) as f64 / 1e6
    );
    let h = st.commit_us.lock().map(|h| *h).unwrap_or_default();
    histogram(
        out,
        "loopix_store_commit_seconds",
        "Providers: how long each store commit took, fsync included (off the packet path).",
        &h,
    );
}

/// One Prometheus histogram family from a [`LatencyHistogram`] (µs, exposed in seconds).
fn histogram(out: &mut String, name: &str, help: &str, h: &LatencyHistogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in h.cumulative() {
        let le = bound.map_or("+Inf".to_string(), |us| format!("{}", us as f64 / 1e6));
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum_us() as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count());
}

/// How long a scraper may take to send its whole request line, and to take the answer: a
/// deadline for the request, not per read, so a client trickling a byte at a time is cut
/// off as surely as a silent one.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The most of a request line read; a longer one is answered 404.
const MAX_REQUEST_LINE: usize = 1024;
/// Connections served at once (a thread each); beyond it a new one is closed at once, so
/// slow clients cost at most this many threads and cannot queue a scraper behind them.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `addr` from `shared`: an accepting thread, and a thread per
/// connection (at most [`MAX_CONNECTIONS`]), each bounded in time and size.
pub fn serve(addr: SocketAddr, shared: Arc<Mutex<Snapshot>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("loopix-metrics".into())
        .spawn(move || {
            use std::sync::atomic::Ordering;
            for stream in listener.incoming().flatten() {
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closed
                }
                let (shared, done) = (Arc::clone(&shared), Arc::clone(&active));
                let spawned = std::thread::Builder::new()
                    .name("loopix-metrics-conn".into())
                    .spawn(move || {
                        answer(stream, &shared);
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "metrics: no thread for a connection");
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(local)
}

/// Reads one request line by the deadline and answers it.
fn answer(mut stream: std::net::TcpStream, shared: &Mutex<Snapshot>) {
    let Some(line) = request_line(&mut stream) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let _ = match line.split_whitespace().nth(1) {
        Some(path @ ("/health" | "/ready")) => {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let (code, why) = shared.lock().map_or_else(
                |_| (500, "state poisoned".to_string()),
                |s| health(&s, now_us, path == "/ready"),
            );
            let status = if code == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            write!(
                stream,
                "HTTP/1.1 {code} {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}\n",
                why.len() + 1
            )
        }
        Some("/metrics") => {
            let b = render(&shared.lock().map(|s| s.clone()).unwrap_or_default());
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            )
        }
        _ => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
}

/// The request line (up to [`MAX_REQUEST_LINE`] bytes, or what came before the bound was
/// reached), if it came within [`REQUEST_TIMEOUT`] of the connection; `None` if not.
fn request_line(stream: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut buf = [0u8; MAX_REQUEST_LINE];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let line = buf[..len].split(|&b| b == b'\n').next().unwrap_or_default();
    Some(String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request);
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }

    fn unix_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    /// Every sample line: no empty label set, build and process series present, and a
    /// role's series only on that role.
    #[test]
    fn series_are_well_formed_and_only_the_roles_own() {
        let mut s = Snapshot {
            reports: vec![ShardReport::default()],
            shards: 1,
            role: Some(Role::Mix { layer: 1 }),
            ..Snapshot::default()
        };
        let mix = render(&s);
        assert!(!mix.contains("{}"), "an empty label set:\n{mix}");
        assert!(mix.contains("loopix_shards 1\n"), "{mix}");
        assert!(mix.contains("loopix_build_info{version=\""), "{mix}");
        assert!(mix.contains("role=\"mix\"} 1"), "{mix}");
        let rss = mix
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("resident memory");
        assert!(rss > 1e6, "{rss} bytes resident");
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(mix.contains(&format!("\n{name} ")), "{name}:\n{mix}");
        }
        assert!(
            !mix.contains("loopix_inbox_packets"),
            "a provider's series on a mix"
        );
        assert!(!mix.contains("loopix_handshakes_total"));
        s.role = Some(Role::Provider);
        let provider = render(&s);
        assert!(
            provider.contains("loopix_inbox_packets{shard=\"0\"} 0"),
            "{provider}"
        );
        assert!(provider.contains("loopix_handshakes_total{shard=\"0\",answer=\"cookie\"} 0"));
        // Clients by inbox depth: two clients, one with 3 packets waiting.
        let mut r = ShardReport::default();
        r.core.inbox_depths = [1, 1, 2, 2, 2, 2, 2, 2, 2];
        r.core.inbox_deepest = 3;
        r.core.inbox_packets = 3;
        s.reports = vec![r];
        let depths = render(&s);
        for line in [
            "loopix_inbox_deepest_packets{shard=\"0\"} 3",
            "loopix_inbox_depth_clients_bucket{le=\"0\"} 1",
            "loopix_inbox_depth_clients_bucket{le=\"4\"} 2",
            "loopix_inbox_depth_clients_bucket{le=\"+Inf\"} 2",
            "loopix_inbox_depth_clients_sum 3",
            "loopix_inbox_depth_clients_count 2",
        ] {
            assert!(depths.contains(&format!("{line}\n")), "{line}:\n{depths}");
        }
    }

    /// Each neighbour's link: the newest verified datagram any shard saw from it, and how
    /// many have been silent for a minute (or never sent); the directory's freshness.
    #[test]
    fn links_and_the_directory_say_how_fresh_they_are() {
        let now = 1_000 * 1_000_000;
        let shard = |i: usize, heard: Vec<(u64, u64)>| {
            let mut r = ShardReport {
                shard: i,
                ..ShardReport::default()
            };
            r.links_heard = heard
                .into_iter()
                .map(|(p, at)| (loopix_crypto::NodeId(p), at))
                .collect::<Vec<_>>()
                .into();
            r
        };
        let directory = Arc::new(DirectoryFreshness::default());
        directory
            .last_fetch_us
            .store(990 * 1_000_000, std::sync::atomic::Ordering::Relaxed);
        let s = Snapshot {
            // Neighbour 1 heard by shard 1 lately; 2 last 2 minutes ago; 3 never.
            reports: vec![
                shard(0, vec![(1, 900 * 1_000_000), (2, 880 * 1_000_000), (3, 0)]),
                shard(1, vec![(1, 995 * 1_000_000), (2, 870 * 1_000_000), (3, 0)]),
            ],
            shards: 2,
            role: Some(Role::Mix { layer: 2 }),
            now_us: now,
            epochs: Some(EpochSchedule::new(0, 100_000_000, 5_000_000).unwrap()),
            document_epoch: Some(9),
            directory: Some(directory),
            keys_published_until: Some(11),
            ..Snapshot::default()
        };
        let text = render(&s);
        for line in [
            "loopix_link_last_heard_timestamp_seconds{neighbour=\"1\"} 995",
            "loopix_link_last_heard_timestamp_seconds{neighbour=\"2\"} 880",
            "loopix_link_last_heard_timestamp_seconds{neighbour=\"3\"} 0",
            "loopix_links_silent 2",
            "loopix_directory_last_fetch_timestamp_seconds 990",
            "loopix_directory_last_upload_timestamp_seconds 0",
            "loopix_document_valid_until_timestamp_seconds 1000",
            "loopix_keys_published_until_epoch 11",
            // A mix whose loops are not judged yet: present, and no number.
            "loopix_loop_return_fraction{shard=\"1\"} NaN",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}:\n{text}");
        }
        let provider = render(&Snapshot {
            role: Some(Role::Provider),
            ..s
        });
        assert!(
            !provider.contains("loopix_loop_return_fraction{"),
            "{provider}"
        );
    }

    /// Every loopix and process series the shipped dashboard and alert rules query is one a
    /// node serves (a mix's and a provider's scrapes together).
    #[test]
    fn every_series_the_dashboard_and_the_alerts_use_is_served() {
        let used: std::collections::BTreeSet<String> = [
            include_str!("../../../../docs/monitoring/loopix-node-dashboard.json"),
            include_str!("../../../../docs/monitoring/alerts.yml"),
        ]
        .iter()
        .flat_map(|text| {
            let mut names = Vec::new();
            for prefix in ["loopix_", "process_"] {
                for (at, _) in text.match_indices(prefix) {
                    let name: String = text[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    names.push(name);
                }
            }
            names
        })
        .map(|n| base_name(&n).to_string())
        .collect();
        assert!(used.len() > 15, "{used:?}");
        let epoch = EpochStats {
            epoch: 3,
            tags: 10,
            rated_tags: 100,
            filter_bytes: 1000,
            ..EpochStats::default()
        };
        let mut report = ShardReport::default();
        report.core.loop_return_fraction = Some(1.0);
        report.core.epochs = [Some(epoch), None];
        report.links_heard = vec![(loopix_crypto::NodeId(7), unix_us())].into();
        let mut s = Snapshot {
            reports: vec![report],
            shards: 1,
            role: Some(Role::Mix { layer: 1 }),
            epochs: Some(EpochSchedule::new(0, 1_200_000_000, 60_000_000).unwrap()),
            now_us: unix_us(),
            document_epoch: Some(3),
            directory: Some(Arc::default()),
            keys_published_until: Some(4),
            ..Snapshot::default()
        };
        let mut scraped = render(&s);
        s.role = Some(Role::Provider);
        scraped += &render(&s);
        let served: std::collections::BTreeSet<&str> = scraped
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(base_name)
            .collect();
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| !served.contains(n.as_str()))
            .collect();
        assert!(missing.is_empty(), "queried but never served: {missing:?}");
    }

    /// A histogram's family name from one of its sample names.
    fn base_name(name: &str) -> &str {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
    }

    /// `/health`: the node's loop refreshes its reports; `/ready`: every shard reports.
    #[test]
    fn health_and_readiness_say_why_not() {
        let shared = Arc::new(Mutex::new(Snapshot {
            shards: 2,
            ..Snapshot::default()
        }));
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&shared)).unwrap();
        let ask = |path: &str| get(addr, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(ask("/health").starts_with("HTTP/1.1 503"), "no report yet");
        {
            let mut s = shared.lock().unwrap();
            s.reports = vec![ShardReport::default()];
            s.now_us = unix_us();
        }
        assert!(ask("/health").starts_with("HTTP/1.1 200"));
        let ready = ask("/ready");
        assert!(
            ready.starts_with("HTTP/1.1 503") && ready.contains("1 of 2 shards"),
            "{ready}"
        );
        shared.lock().unwrap().reports.push(ShardReport {
            shard: 1,
            ..ShardReport::default()
        });
        assert!(ask("/ready").starts_with("HTTP/1.1 200"));
        shared.lock().unwrap().now_us = unix_us() - 10 * STALE_AFTER_US;
        let stale = ask("/health");
        assert!(
            stale.starts_with("HTTP/1.1 503") && stale.contains("old"),
            "{stale}"
        );
        assert!(ask("/ready").starts_with("HTTP/1.1 503"));
    }

    /// A scraper that connects and says nothing, or sends an endless line, holds the
    /// endpoint for at most the timeout: the next scrape is still answered.
    #[test]
    fn silent_and_oversized_requests_cannot_hold_the_endpoint() {
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::default()).unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let answer = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        // A line with no end: read up to the bound, answered, closed (the answer itself may
        // be lost to the reset that closing on unread bytes sends).
        let _ = get(addr, &vec![b'A'; 1 << 20]);
        let start = Instant::now();
        assert!(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").contains("loopix_shards"));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }

    /// Slowloris: clients trickling their request a byte at a time, more of them than the
    /// endpoint serves at once. A scrape among them is still answered, and each trickler is
    /// cut off by the request deadline however steadily it sends.
    #[test]
    fn clients_trickling_their_request_cannot_hold_the_endpoint() {
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::default()).unwrap();
        let tricklers: Vec<_> = (0..2 * MAX_CONNECTIONS)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let start = Instant::now();
                    for b in b"GET /metrics HTTP/1.1" {
                        if s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    start.elapsed()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let mut answered = false;
        // The tricklers hold every connection for at most the deadline; a scrape gets one by then.
        while !answered && start.elapsed() < Duration::from_secs(3) {
            answered = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").contains("loopix_shards");
        }
        assert!(answered, "no answer in {:?}", start.elapsed());
        for t in tricklers {
            // 21 bytes at 200 ms would take 4.2 s: cut off (a write fails) well before.
            assert!(t.join().unwrap() < Duration::from_secs(3));
        }
    }
}
