//! What a shard needs from a core beyond [`Endpoint`] (whose batch receive it shares with
//! the simulator): a report for the metrics, its pool, storage, reloads and journal.

use loopix_core::drops::DropCounts;
use loopix_core::endpoint::Endpoint;
use loopix_core::pipeline::faults::{FaultStats, Faulty};
use loopix_core::pipeline::key_ring::EpochStats;
use loopix_core::roles::AnyRole;
use loopix_core::roles::inbox::InboxStore;
use loopix_core::roles::mix::Mix;
use loopix_core::roles::provider::INBOX_DEPTH_BOUNDS;
use loopix_core::roles::provider::Provider;

use loopix_core::pipeline::latency_histogram::LatencyHistogram;

/// A core's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleReport {
    pub received: u64,
    /// Of those, unwrapped in vector lanes.
    pub in_lanes: u64,
    pub sent: u64,
    pub drops: DropCounts,
    /// Packets held on the wheel.
    pub pending: u64,
    /// Packets whose path ended here (loop returns, drop cover, stored).
    pub ended: u64,
    /// Mix loops: share of recent loops that returned.
    pub loop_return_fraction: Option<f64>,
    /// |actual hold - requested delay| of released packets, µs.
    pub delay_error: LatencyHistogram,
    /// Mixes: round trip minus requested delays of returned loops, µs.
    pub loop_overhead: LatencyHistogram,
    pub released: u64,
    /// Providers: packets waiting in inboxes.
    pub inbox_packets: u64,
    /// Providers: clients by inbox depth (cumulative buckets, see
    /// `loopix_core::roles::provider::INBOX_DEPTH_BOUNDS`, the last for any depth), and the
    /// deepest inbox.
    pub inbox_depths: [u64; INBOX_DEPTH_BOUNDS.len() + 1],
    pub inbox_deepest: u64,
    /// Providers: handshakes answered, and initiations answered with a cookie (under load).
    pub handshakes_answered: u64,
    pub cookies_sent: u64,
    /// The keys in use, by phase, and their replay filters.
    pub epochs: [Option<EpochStats>; 2],
    /// Mixes: loops that fell due but could not be built (no published key for an epoch
    /// on their path, or no free buffer).
    pub loops_failed: u64,
    /// Faults injected into the core's sending (`[faults]` in node.toml).
    pub faults: FaultStats,
    /// Providers: client sessions held (those of the clients whose home this shard is).
    pub sessions: u64,
    /// Providers: the longest a store call waited on the disk, µs.
    pub store_wait_us: u64,
}

/// A core a shard can drive: the core's whole driver surface ([`Endpoint`]) and its
/// counters in the runtime's report.
pub trait ShardCore: Endpoint {
    /// Counters now.
    fn report(&self, now_us: u64) -> RoleReport;
}

impl ShardCore for Mix {
    fn report(&self, now_us: u64) -> RoleReport {
        let s = self.stats();
        RoleReport {
            received: s.hop.received,
            in_lanes: s.hop.in_lanes,
            sent: s.sent,
            drops: s.hop.drops,
            pending: Endpoint::held(self) as u64,
            ended: s.loops_returned,
            loop_return_fraction: self.loop_return_fraction(now_us),
            delay_error: s.hop.delay_error,
            loop_overhead: s.loop_overhead,
            released: s.hop.released,
            inbox_packets: 0,
            inbox_depths: [0; INBOX_DEPTH_BOUNDS.len() + 1],
            inbox_deepest: 0,
            handshakes_answered: 0,
            cookies_sent: 0,
            epochs: self.epochs(),
            loops_failed: s.loops_failed,
            faults: FaultStats::default(),
            sessions: 0,
            store_wait_us: 0,
        }
    }
}

impl<S: InboxStore> ShardCore for Provider<S> {
    fn report(&self, _now_us: u64) -> RoleReport {
        let s = self.stats();
        let (depths, deepest) = self.inbox_depths();
        RoleReport {
            received: s.hop.received,
            in_lanes: s.hop.in_lanes,
            sent: s.sent,
            drops: s.hop.drops,
            pending: Endpoint::held(self) as u64,
            ended: s.drop_cover_absorbed + s.stored,
            loop_return_fraction: None,
            delay_error: s.hop.delay_error,
            loop_overhead: LatencyHistogram::default(),
            released: s.hop.released,
            inbox_packets: self.inbox_total() as u64,
            inbox_depths: depths,
            inbox_deepest: deepest,
            handshakes_answered: s.sessions_started,
            cookies_sent: s.cookies_sent,
            epochs: self.epochs(),
            loops_failed: 0,
            faults: FaultStats::default(),
            sessions: self.sessions() as u64,
            store_wait_us: self.store_wait_us(),
        }
    }
}

/// A core whose sending suffers injected faults: what it held counts as pending, so a
/// shutdown lets it out.
impl<C: ShardCore> ShardCore for Faulty<C> {
    fn report(&self, now_us: u64) -> RoleReport {
        let inner = self.inner().report(now_us);
        RoleReport {
            faults: self.stats(),
            pending: inner.pending + self.held() as u64,
            ..inner
        }
    }
}

/// Any role as [`loopix_core::roles::build`] makes it: the report of the role it is.
impl<S: InboxStore> ShardCore for AnyRole<S> {
    fn report(&self, now_us: u64) -> RoleReport {
        match self {
            AnyRole::Mix(m) => m.report(now_us),
            AnyRole::Provider(p) => p.report(now_us),
            // Clients are not shards' cores; nothing to count.
            AnyRole::Client(_) => RoleReport::default(),
        }
    }
}
