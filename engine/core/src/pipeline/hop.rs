//! The packet path shared by mixes and providers: take a datagram into a pooled buffer,
//! unwrap it in place under the key of its epoch with that epoch's replay check, hold it on
//! the timing wheel for the delay its sender chose, and queue it for sending when the wheel
//! fires.
//!
//! Keys change by themselves ([`crate::pipeline::key_ring`]): at most two in use, one per
//! key phase, each with its own replay filter; a packet's phase bit says which one it was
//! built for, so no packet is ever tried under two keys.
//!
//! Nothing here allocates after construction: buffers come from the [`PacketPool`], the
//! wheel and the ready queue carry pool indices, filters are reset in place, and every
//! drop is counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use loopix_crypto::{Command, EpochSeed, KeyPhase, NodeId, ProcessError, Processor};

use crate::drops::{DropCounts, DropReason};
use crate::formats::codec::Codec;
use crate::network::epoch::EpochSchedule;
use crate::pipeline::gather::{AREA, Gather};
use crate::pipeline::key_ring::{EpochStats, JournalRecord, KeyRing, RestoreError};
use crate::pipeline::latency_histogram::LatencyHistogram;
use crate::pipeline::packet_pool::PacketPool;
use crate::pipeline::replay::{FilterKey, ReplayFilter, Seen};
use crate::pipeline::timing_wheel::{InsertError, TimingWheel, WheelConfig, WheelConfigError};

/// Capacities of a hop's preallocated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopLimits {
    /// Packets held at once (in the wheel or waiting to be sent).
    pub pool_packets: u32,
    /// Tags each of the two replay filters (one per key in use) is rated for. A node sizes
    /// it with [`HopLimits::replay_tags_for`] from the most packets it can unwrap per
    /// second, so that no load can fill a filter while its key is in use.
    pub replay_tags: usize,
    /// Replay-filter hashes kept for the driver to persist between two
    /// [`HopEngine::drain_journal`] calls; 0 keeps no journal.
    pub journal_tags: usize,
    /// Slot width and horizon of the delay wheel.
    pub wheel: WheelConfig,
    /// The longest delay a packet may ask this hop for; longer: dropped as `horizon`.
    /// Mixes and providers set it to the network's delay horizon (see
    /// [`crate::network::topology::Network::delay_horizon_us`]) when that is shorter.
    pub max_delay_us: u64,
    /// The longest a received packet waits for others to fill a run of vector lanes
    /// ([`crate::pipeline::gather`]); 0: never.
    pub gather_us: u64,
}

impl Default for HopLimits {
    fn default() -> Self {
        Self {
            pool_packets: 65_536,
            replay_tags: 1 << 20,
            journal_tags: 0,
            wheel: WheelConfig::default(),
            max_delay_us: u64::MAX,
            gather_us: DEFAULT_GATHER_US,
        }
    }
}

/// How long a packet may wait to fill a run of lanes, by default: ten wheel slots, a
/// hundredth of a typical mean delay. At eight lanes a phase's traffic fills runs within
/// it from 8,000 packets/s on.
pub const DEFAULT_GATHER_US: u64 = 1_000;

impl HopLimits {
    /// These limits with the network's delay horizon applied (see
    /// [`crate::network::topology::Network::delay_horizon_us`]).
    pub fn within(self, network: &crate::network::topology::Network) -> Self {
        Self {
            max_delay_us: self.max_delay_us.min(network.delay_horizon_us()),
            ..self
        }
    }

    /// The tags a replay filter needs so that a hop unwrapping `max_packets_per_s` for
    /// a key's whole lifetime under `epochs` (its epoch and a grace either side) cannot
    /// fill it.
    pub fn replay_tags_for(max_packets_per_s: u32, epochs: &EpochSchedule) -> usize {
        let lifetime_s = epochs.key_lifetime_us().div_ceil(1_000_000);
        usize::try_from(u64::from(max_packets_per_s).saturating_mul(lifetime_s))
            .unwrap_or(usize::MAX)
    }
}

/// Where a held packet goes when its delay is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Send to a node (or, from a provider, to a client).
    Send(NodeId),
    /// Provider: store in this client's inbox.
    Store(NodeId),
}

/// Datagrams unwrapped together through
/// [`loopix_crypto::Processor::process_batch_unless_replayed`], at most.
pub const BATCH: usize = AREA;

/// A held packet's due time and its holding time so far, for delay accuracy.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    due: Option<Due>,
    requested_us: u64,
    since_us: u64,
}

/// Counters of one hop.
#[derive(Clone, Copy, Debug, Default)]
pub struct HopStats {
    pub received: u64,
    pub released: u64,
    /// Packets whose public-key work ran in vector lanes ([`Codec::lanes_taken`]): against
    /// `received`, how full the receive batches were.
    pub in_lanes: u64,
    pub drops: DropCounts,
    /// |actual hold - requested delay| of every released packet, µs: delay fidelity.
    pub delay_error: LatencyHistogram,
}

/// The shared hop pipeline. See the module docs.
pub struct HopEngine<C: Codec = Processor> {
    keys: KeyRing<C>,
    max_delay_us: u64,
    wheel: TimingWheel,
    pool: PacketPool,
    held: Box<[Held]>,
    ready: VecDeque<u32>,
    /// Packets the wheel has handed over up to one slot early, by exact due time: they
    /// leave when that time comes, so a release is not rounded up to a slot boundary.
    imminent: BinaryHeap<Reverse<(u64, u32)>>,
    /// Where packets are unwrapped, and wait to fill a run of lanes. The copy in costs
    /// ~0.1 µs per packet against ~50 µs of crypto, and keeps the batch call on one slice.
    gather: Gather,
    stats: HopStats,
}

/// The two largest parts of what a hop engine keeps resident from the start (every page
/// touched by [`HopEngine::new`]), for `--check` to name; the whole is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopMemory {
    /// The packet pool.
    pub pool: usize,
    /// Both epochs' replay filters.
    pub replay_filters: usize,
}

/// [`HopMemory`] for `limits` and `params`.
pub fn resident_memory(limits: &HopLimits, params: &loopix_crypto::Params) -> HopMemory {
    HopMemory {
        pool: limits.pool_packets as usize * params.packet_len(),
        replay_filters: 2 * ReplayFilter::bytes_for(limits.replay_tags),
    }
}

impl<C: Codec> HopEngine<C> {
    /// Allocates everything the hop will ever use. Keys come from `seed` as `schedule`
    /// brings their epochs into use; `rng_seed` seeds the replay filters' hash keys.
    pub fn new(
        seed: EpochSeed,
        schedule: EpochSchedule,
        params: loopix_crypto::Params,
        limits: HopLimits,
        rng_seed: [u8; 32],
    ) -> Result<Self, WheelConfigError> {
        let n = limits.pool_packets;
        Ok(Self {
            keys: KeyRing::new(
                seed,
                schedule,
                params,
                limits.replay_tags,
                limits.journal_tags,
                rng_seed,
            ),
            max_delay_us: limits.max_delay_us,
            wheel: TimingWheel::new(limits.wheel, n as usize)?,
            pool: PacketPool::new(n, params.packet_len()),
            held: vec![Held::default(); n as usize].into_boxed_slice(),
            ready: VecDeque::with_capacity(n as usize),
            imminent: BinaryHeap::with_capacity(n as usize),
            gather: Gather::new(params.packet_len(), limits.gather_us),
            stats: HopStats::default(),
        })
    }

    /// Brings the keys in use up to `now_us` ([`KeyRing::advance`]).
    pub fn advance(&mut self, now_us: u64) {
        self.keys.advance(now_us);
    }

    /// Refills epoch `epoch`'s filter from a journal written before a restart
    /// ([`KeyRing::restore`]).
    pub fn restore(
        &mut self,
        now_us: u64,
        epoch: u64,
        key: FilterKey,
        hashes: impl IntoIterator<Item = u64>,
    ) -> Result<usize, RestoreError> {
        self.keys.restore(now_us, epoch, key, hashes)
    }

    /// Takes a new seed (a key file re-read; [`KeyRing::replace_seed`]).
    pub fn replace_seed(&mut self, seed: EpochSeed) {
        self.keys.replace_seed(seed);
    }

    /// Hands the driver what it must persist ([`KeyRing::drain_journal`]).
    pub fn drain_journal(&mut self, write: impl FnMut(JournalRecord<'_>)) {
        self.keys.drain_journal(write);
    }

    /// The keys in use, by phase.
    pub fn epochs(&self) -> [Option<EpochStats>; 2] {
        self.keys.epochs()
    }

    /// The epoch timetable the engine follows.
    pub fn schedule(&self) -> &EpochSchedule {
        self.keys.schedule()
    }

    /// Takes `datagrams` in, and unwraps and holds, ends or drops each one, in batches of
    /// at most [`BATCH`]; returns how many were held. Packets that do not fill a run of
    /// lanes may wait for the next ones ([`crate::pipeline::gather`]): a role calls this
    /// again with no datagrams when [`Self::poll_timeout`] comes, and they are unwrapped
    /// then if no more came. `route` turns a relay/deliver command into where the packet
    /// goes, or a drop reason (e.g. a client that is not ours); `on_end` gets each packet
    /// whose path ends here (loop return, drop, final), already unwrapped.
    pub fn receive_batch(
        &mut self,
        now_us: u64,
        datagrams: &[&[u8]],
        mut route: impl FnMut(Command) -> Result<Due, DropReason>,
        mut on_end: impl FnMut(Command, &[u8]) -> Result<(), DropReason>,
    ) -> usize {
        let mut held = 0;
        if now_us >= self.keys.next_change_us() {
            // What waits is unwrapped under the keys it arrived under.
            for phase in [KeyPhase::Even, KeyPhase::Odd] {
                let n = self.gather.area(phase).len();
                held += self.unwrap_phase(now_us, phase, n, &mut route, &mut on_end);
            }
        }
        self.advance(now_us);
        let len = self.gather.packet_len();
        self.stats.received += datagrams.len() as u64;
        for d in datagrams {
            if d.len() != len {
                self.stats.drops.add(DropReason::Malformed);
                continue;
            }
            let phase = C::key_phase(d);
            if self.gather.area(phase).is_full() {
                held += self.unwrap_phase(now_us, phase, BATCH, &mut route, &mut on_end);
            }
            self.gather.push(phase, d, now_us);
        }
        for phase in [KeyPhase::Even, KeyPhase::Odd] {
            let run = self.keys.phases[phase.index()]
                .key
                .as_ref()
                .map_or(1, |(_, _, codec)| codec.lanes());
            let n = self.gather.ready(phase, run, now_us);
            held += self.unwrap_phase(now_us, phase, n, &mut route, &mut on_end);
        }
        held
    }

    /// Unwraps the first `n` packets waiting in `phase`'s area (all of them if fewer)
    /// under that phase's key, and lets them go from the area.
    fn unwrap_phase(
        &mut self,
        now_us: u64,
        phase: KeyPhase,
        n: usize,
        route: &mut impl FnMut(Command) -> Result<Due, DropReason>,
        on_end: &mut impl FnMut(Command, &[u8]) -> Result<(), DropReason>,
    ) -> usize {
        let n = n.min(self.gather.area(phase).len());
        if n == 0 {
            return 0;
        }
        let held = self.unwrap_front(now_us, phase, n, route, on_end);
        self.gather.area_mut(phase).take_front(n);
        held
    }

    /// Unwraps the first `n` packets of `phase`'s area (which keeps them).
    fn unwrap_front(
        &mut self,
        now_us: u64,
        phase: KeyPhase,
        n: usize,
        route: &mut impl FnMut(Command) -> Result<Due, DropReason>,
        on_end: &mut impl FnMut(Command, &[u8]) -> Result<(), DropReason>,
    ) -> usize {
        let range = 0..n;
        let state = &mut self.keys.phases[phase.index()];
        let Some((_, _, codec)) = &state.key else {
            self.stats.drops.add_n(DropReason::ExpiredKey, n as u64);
            return 0;
        };
        let mut full = [false; BATCH];
        let (mut refused, mut lost) = (0, 0);
        let (filter, journal, journal_tags) = (
            &mut state.filter,
            &mut state.journal,
            self.keys.journal_tags,
        );
        let area = self.gather.area_mut(phase);
        let bufs = &mut area.bufs[range.clone()];
        let results = &mut area.results[range.clone()];
        self.stats.in_lanes += codec.lanes_taken(range.len()) as u64;
        codec.unwrap_batch(bufs, results, |tag| {
            let (seen, hash) = filter.insert(tag);
            if seen == Seen::Fresh {
                if journal.len() < journal_tags {
                    journal.push(hash);
                } else if journal_tags > 0 {
                    lost += 1;
                }
                false
            } else {
                full[refused] = seen == Seen::Full;
                refused += 1;
                true
            }
        });
        state.stats.journal_lost += lost;
        let (mut held, mut replays) = (0, 0);
        for i in range {
            let result = self.gather.area(phase).results[i];
            let outcome = match result {
                Err(ProcessError::Replayed) => {
                    replays += 1;
                    Err(if full[replays - 1] {
                        DropReason::ReplayFull
                    } else {
                        DropReason::Replay
                    })
                }
                Err(e) => Err(DropReason::from(e)),
                Ok(p) if p.command.is_terminal() => {
                    on_end(p.command, &self.gather.area(phase).bufs[i])
                }
                Ok(p) => {
                    route(p.command).and_then(|due| self.hold(now_us, phase, i, p.command, due))
                }
            };
            match outcome {
                Ok(()) => held += usize::from(!result.is_ok_and(|p| p.command.is_terminal())),
                Err(reason) => {
                    let stats = &mut self.keys.phases[phase.index()].stats;
                    match reason {
                        DropReason::Replay => stats.replays += 1,
                        DropReason::ReplayFull => stats.full += 1,
                        _ => {}
                    }
                    self.stats.drops.add(reason)
                }
            }
        }
        held
    }

    /// Moves packet `staged` of `phase`'s area into the pool and onto the wheel, due its
    /// delay after it arrived.
    fn hold(
        &mut self,
        now_us: u64,
        phase: KeyPhase,
        staged: usize,
        command: Command,
        due: Due,
    ) -> Result<(), DropReason> {
        let delay_us = match command {
            Command::Relay { delay_us, .. } | Command::Deliver { delay_us, .. } => delay_us,
            _ => 0,
        };
        let requested_us = u64::from(delay_us);
        if requested_us > self.max_delay_us {
            return Err(DropReason::Horizon);
        }
        let index = self.pool.alloc().ok_or(DropReason::Overload)?;
        let area = self.gather.area(phase);
        let arrived_us = area.arrived_us(staged);
        self.pool.get_mut(index).copy_from_slice(&area.bufs[staged]);
        // One index early: the wheel rounds up to a index boundary, the imminent heap then
        // waits for the exact due time.
        let early = (arrived_us + requested_us).saturating_sub(self.wheel.config().slot_us);
        let inserted = self.wheel.insert(index, early, now_us);
        if let Err(e) = inserted {
            self.pool.release(index);
            return Err(match e {
                InsertError::BeyondHorizon => DropReason::Horizon,
                InsertError::IndexOutOfRange => DropReason::Overload,
            });
        }
        self.held[index as usize] = Held {
            due: Some(due),
            requested_us,
            since_us: arrived_us,
        };
        Ok(())
    }

    /// Counts a drop decided by the role (e.g. a session frame that did not authenticate).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// Counts `n` drops decided by the role at once (e.g. packets expired in an inbox).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.stats.drops.add_n(reason, n);
    }

    /// Counts a datagram received and refused before it reached the pipeline (e.g. its
    /// link did not authenticate), so received = handled + refused.
    pub fn refuse(&mut self, reason: DropReason) {
        self.stats.received += 1;
        self.stats.drops.add(reason);
    }

    /// Queues a packet the role built itself (a mix's loop) for sending now; `fill` writes
    /// it and says whether it could.
    pub fn send_own(
        &mut self,
        now_us: u64,
        to: NodeId,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> bool {
        let Some(index) = self.pool.alloc() else {
            self.stats.drops.add(DropReason::Overload);
            return false;
        };
        if !fill(self.pool.get_mut(index)) {
            self.pool.release(index);
            return false;
        }
        self.held[index as usize] = Held {
            due: Some(Due::Send(to)),
            requested_us: 0,
            since_us: now_us,
        };
        self.ready.push_back(index);
        true
    }

    /// Changes keys if their time has come, and moves every packet whose delay is over to
    /// the ready queue.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.advance(now_us);
        self.release_due_by(now_us);
    }

    /// Readies what falls due within `ahead_us` of now, ahead of time, but never more than
    /// half a wheel index ahead: the early side of the delay error stays within the index
    /// whatever the configured width. A shell about to spend `d` unwrapping a batch on the
    /// thread that sends asks for d/2, so those packets leave up to d/2 early instead of up
    /// to d late. The error is recorded when a packet is taken, against the time then.
    pub fn release_ahead(&mut self, now_us: u64, ahead_us: u64) {
        let most = self.wheel.config().slot_us / 2;
        self.release_due_by(now_us + ahead_us.min(most));
    }

    /// Moves every packet due by `horizon_us` to the ready queue.
    fn release_due_by(&mut self, horizon_us: u64) {
        let (held, imminent) = (&self.held, &mut self.imminent);
        self.wheel.poll(horizon_us, |index| {
            let h = held[index as usize];
            imminent.push(Reverse((h.since_us + h.requested_us, index)));
        });
        while let Some(&Reverse((due, index))) = self.imminent.peek() {
            if due > horizon_us {
                break;
            }
            self.imminent.pop();
            self.ready.push_back(index);
        }
    }

    /// The next ready packet: where it goes and its bytes, valid until [`Self::release`].
    pub fn next_ready(&mut self, now_us: u64) -> Option<(Due, u32)> {
        let index = self.ready.pop_front()?;
        let held = self.held[index as usize];
        let actual = now_us.saturating_sub(held.since_us);
        self.stats
            .delay_error
            .record(actual.abs_diff(held.requested_us));
        self.stats.released += 1;
        held.due.map(|d| (d, index))
    }

    /// The bytes at a pool index.
    pub fn packet(&self, index: u32) -> &[u8] {
        self.pool.get(index)
    }

    /// Gives a index back to the pool.
    pub fn release(&mut self, index: u32) {
        self.held[index as usize] = Held::default();
        self.pool.release(index);
    }

    /// When [`Self::handle_timeout`] has work next, or packets waiting to fill a run of
    /// lanes are due to be unwrapped ([`Self::receive_batch`] with no datagrams).
    pub fn poll_timeout(&self) -> Option<u64> {
        let next = self.imminent.peek().map(|Reverse((due, _))| *due);
        [
            self.wheel.next_deadline_us(),
            next,
            Some(self.keys.next_change_us()),
            self.gather.deadline_us(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True if packets wait to be sent.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Packets held on the wheel (the Poisson mix's pool), and those waiting to be
    /// unwrapped.
    pub fn pending(&self) -> usize {
        self.wheel.len() + self.imminent.len() + self.gather.len()
    }

    /// Counters.
    pub fn stats(&self) -> &HopStats {
        &self.stats
    }

    /// When [`Self::advance`] has work next (the next change of keys).
    pub fn next_key_change_us(&self) -> u64 {
        self.keys.next_change_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::{Hop, Params, SecretKey, build};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const S: u64 = 1_000_000;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    /// Epochs of 60 s from time 0, 5 s of grace.
    fn schedule() -> EpochSchedule {
        EpochSchedule::new(0, 60 * S, 5 * S).unwrap()
    }

    fn seed() -> EpochSeed {
        EpochSeed::generate(&mut rng(1), 0)
    }

    fn engine_with(limits: HopLimits) -> HopEngine {
        HopEngine::new(seed(), schedule(), Params::default(), limits, [7; 32]).expect("limits")
    }

    fn engine() -> HopEngine {
        engine_with(HopLimits {
            replay_tags: 1_000,
            ..Default::default()
        })
    }

    /// A packet this node relays to node 2 after `delay_us`, built under its key of
    /// `epoch`; random bytes come from `n`.
    fn packet(epoch: u64, delay_us: u32, n: u64) -> Vec<u8> {
        let mut rng = rng(100 + n);
        let key = seed().secret_key(epoch).unwrap().public_key();
        let next = SecretKey::generate(&mut rng).public_key();
        let mut first = Hop::new(
            key,
            Command::Relay {
                next: NodeId(2),
                delay_us,
            },
        );
        first.phase = KeyPhase::of_epoch(epoch);
        let path = [first, Hop::new(next, Command::Final)];
        build(&Params::default(), &path, b"x", &mut rng).expect("valid path")
    }

    fn route(c: Command) -> Result<Due, DropReason> {
        match c {
            Command::Relay { next, .. } => Ok(Due::Send(next)),
            _ => Err(DropReason::UnexpectedCommand),
        }
    }

    /// Offers `packet` at `now_us`: Ok if held, else the reason it was dropped.
    fn offer(engine: &mut HopEngine, now_us: u64, packet: &[u8]) -> Result<(), DropReason> {
        let before = engine.stats().drops;
        let held = engine.receive_batch(now_us, &[packet], route, |_, _| Ok(()));
        if held == 1 {
            return Ok(());
        }
        let after = engine.stats().drops;
        Err(DropReason::ALL
            .into_iter()
            .find(|r| after.get(*r) > before.get(*r))
            .expect("a drop was counted"))
    }

    /// An engine holding one packet for `delay_us`, received at time 0.
    fn holding_one(delay_us: u32) -> HopEngine {
        holding_one_with(delay_us, HopLimits::default())
    }

    fn holding_one_with(delay_us: u32, limits: HopLimits) -> HopEngine {
        let mut engine = engine_with(HopLimits {
            replay_tags: 1_000,
            ..limits
        });
        assert_eq!(offer(&mut engine, 0, &packet(0, delay_us, 0)), Ok(()));
        engine
    }

    #[test]
    fn a_packet_readied_ahead_of_its_time_records_how_early_it_left() {
        let mut engine = holding_one(5_000);
        engine.release_ahead(4_900, 50);
        assert!(!engine.has_ready(), "due at 5,000: not by 4,950");
        engine.release_ahead(4_940, 100);
        assert!(
            !engine.has_ready(),
            "at most half the 100 µs slot ahead: 4,990"
        );
        engine.release_ahead(4_970, 70);
        assert!(engine.has_ready(), "due by 5,020");
        let (due, index) = engine.next_ready(4_970).expect("ready");
        assert_eq!(due, Due::Send(NodeId(2)));
        engine.release(index);
        let error = engine.stats().delay_error;
        assert_eq!(error.count(), 1);
        // 30 µs early: recorded in the bucket that holds 30 µs.
        assert!(
            (30..=50).contains(&error.quantile_bound_us(1.0).unwrap()),
            "{error:?}"
        );
    }

    #[test]
    fn early_release_is_capped_at_half_the_configured_slot() {
        let limits = HopLimits {
            wheel: crate::pipeline::timing_wheel::WheelConfig {
                slot_us: 20,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut engine = holding_one_with(5_000, limits);
        engine.release_ahead(4_985, 50);
        assert!(!engine.has_ready(), "10 µs ahead at most: 4,995");
        engine.release_ahead(4_990, 50);
        assert!(engine.has_ready(), "due by 5,000");
    }

    #[test]
    fn a_delay_beyond_the_admission_horizon_is_dropped_before_it_takes_a_buffer() {
        let mut engine = engine_with(HopLimits {
            replay_tags: 1_000,
            max_delay_us: 1_000_000,
            ..Default::default()
        });
        assert_eq!(offer(&mut engine, S, &packet(0, 1_000_000, 20)), Ok(()));
        assert_eq!(
            offer(&mut engine, S, &packet(0, 1_000_001, 21)),
            Err(DropReason::Horizon)
        );
        assert_eq!(engine.pending(), 1);
    }

    #[test]
    fn handle_timeout_readies_only_what_is_due_now() {
        let mut engine = holding_one(5_000);
        engine.handle_timeout(4_999);
        assert!(!engine.has_ready());
        engine.handle_timeout(5_000);
        assert!(engine.has_ready());
    }

    #[test]
    fn keys_come_and_go_with_their_epochs_and_grace() {
        // Epoch 1 runs 60..120 s; its key is in use from 55 s to 125 s.
        let cases = [
            (0, 10 * S, Ok(())),
            (0, 64 * S, Ok(())),
            (0, 65 * S, Err(DropReason::ExpiredKey)),
            (1, 54 * S, Err(DropReason::ExpiredKey)),
            (1, 55 * S, Ok(())),
            (1, 124 * S, Ok(())),
            (1, 125 * S, Err(DropReason::ExpiredKey)),
            (2, 125 * S, Ok(())),
        ];
        for (i, (epoch, at, expected)) in cases.into_iter().enumerate() {
            let mut engine = engine();
            let got = offer(&mut engine, at, &packet(epoch, 0, i as u64));
            assert_eq!(got, expected, "epoch {epoch} key at {} s", at / S);
        }
    }

    #[test]
    fn the_keys_change_by_themselves_and_say_when() {
        let mut engine = engine();
        engine.handle_timeout(30 * S);
        let epochs = |e: &HopEngine| e.epochs().map(|s| s.map(|s| s.epoch));
        assert_eq!(epochs(&engine), [Some(0), None]);
        assert_eq!(
            engine.poll_timeout(),
            Some(55 * S),
            "epoch 1's key comes in"
        );
        engine.handle_timeout(55 * S);
        assert_eq!(epochs(&engine), [Some(0), Some(1)]);
        engine.handle_timeout(65 * S);
        assert_eq!(epochs(&engine), [None, Some(1)]);
        engine.handle_timeout(116 * S);
        assert_eq!(epochs(&engine), [Some(2), Some(1)]);
    }

    /// A replay is refused within its epoch, in the grace after it, and after the grace
    /// (when its key is gone; later, when the phase's key belongs to another epoch, the
    /// MAC fails under that key).
    #[test]
    fn a_replay_is_refused_in_its_epoch_in_the_grace_and_after() {
        let mut engine = engine();
        let p = packet(0, 0, 1);
        assert_eq!(offer(&mut engine, 10 * S, &p), Ok(()));
        assert_eq!(offer(&mut engine, 30 * S, &p), Err(DropReason::Replay));
        assert_eq!(offer(&mut engine, 62 * S, &p), Err(DropReason::Replay));
        assert_eq!(offer(&mut engine, 70 * S, &p), Err(DropReason::ExpiredKey));
        assert_eq!(offer(&mut engine, 130 * S, &p), Err(DropReason::Mac));
        let epoch0 = engine.epochs()[0].expect("epoch 2 uses the even phase");
        assert_eq!((epoch0.epoch, epoch0.replays), (2, 0));
    }

    #[test]
    fn a_flipped_phase_bit_meets_the_other_key_and_fails() {
        let mut engine = engine();
        let mut p = packet(0, 0, 2);
        p[31] ^= 0x80;
        assert_eq!(offer(&mut engine, 62 * S, &p), Err(DropReason::Mac));
        let mut engine = self::engine();
        assert_eq!(offer(&mut engine, 30 * S, &p), Err(DropReason::ExpiredKey));
    }

    #[test]
    fn a_batch_of_both_phases_is_judged_packet_by_packet() {
        let mut engine = engine();
        let (old, new) = (packet(0, 1_000, 3), packet(1, 1_000, 4));
        let batch: [&[u8]; 4] = [&new, &old, &old, &new];
        let held = engine.receive_batch(62 * S, &batch, route, |_, _| Ok(()));
        assert_eq!(held, 2);
        assert_eq!(engine.stats().drops.get(DropReason::Replay), 2);
        let [even, odd] = engine.epochs().map(|s| s.expect("both live"));
        assert_eq!(
            (even.tags, even.replays, odd.tags, odd.replays),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn a_journal_restores_the_filter_after_a_restart() {
        let limits = HopLimits {
            replay_tags: 1_000,
            journal_tags: 16,
            ..Default::default()
        };
        let mut first = engine_with(limits);
        let p = packet(0, 0, 5);
        assert_eq!(offer(&mut first, 10 * S, &p), Ok(()));
        let (mut key, mut hashes) = (None, Vec::new());
        first.drain_journal(|r| match r {
            JournalRecord::Opened { epoch: 0, key: k } => key = Some(k),
            JournalRecord::Tags {
                epoch: 0,
                hashes: h,
            } => hashes.extend_from_slice(h),
            other => panic!("{other:?}"),
        });
        assert_eq!(hashes.len(), 1);
        let key = key.expect("the epoch's journal was opened");

        let mut again = engine_with(limits);
        assert_eq!(
            again.restore(20 * S, 2, key, []),
            Err(RestoreError::NotInUse),
            "a stale journal is not loaded"
        );
        assert_eq!(again.restore(20 * S, 0, key, hashes.iter().copied()), Ok(1));
        assert_eq!(offer(&mut again, 20 * S, &p), Err(DropReason::Replay));
        assert_eq!(
            again.restore(20 * S, 0, key, []),
            Err(RestoreError::AlreadyStarted)
        );
        let mut none_recorded = true;
        again.drain_journal(|_| none_recorded = false);
        assert!(
            none_recorded,
            "a restored epoch's journal goes on as it was"
        );
    }

    #[test]
    fn packets_unwrapped_in_lanes_are_counted() {
        let mut engine = engine();
        let batch: Vec<Vec<u8>> = (0..9).map(|i| packet(0, 0, 30 + i)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|p| &p[..]).collect();
        engine.receive_batch(S, &refs[..1], route, |_, _| Ok(()));
        assert_eq!(
            engine.stats().in_lanes,
            0,
            "a lone packet never takes lanes"
        );
        engine.receive_batch(S, &refs[1..], route, |_, _| Ok(()));
        // Eight at once: in lanes exactly where this CPU's default kernel runs them.
        let key = seed().secret_key(0).unwrap();
        let expected = Processor::new(key, Params::default()).lanes_taken(8);
        assert_eq!(engine.stats().in_lanes, expected as u64);
        assert_eq!(engine.stats().received, 9);
    }

    #[test]
    fn the_journal_is_bounded_and_counts_what_it_could_not_keep() {
        let mut engine = engine_with(HopLimits {
            replay_tags: 1_000,
            journal_tags: 2,
            ..Default::default()
        });
        let batch: Vec<Vec<u8>> = (0..5).map(|i| packet(0, 0, 10 + i)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|p| &p[..]).collect();
        engine.receive_batch(S, &refs, route, |_, _| Ok(()));
        assert_eq!(engine.epochs()[0].unwrap().journal_lost, 3);
    }

    #[test]
    fn a_seed_re_read_unchanged_keeps_the_filter_and_a_new_one_resets_it() {
        let mut engine = engine();
        let p = packet(0, 0, 6);
        assert_eq!(offer(&mut engine, 10 * S, &p), Ok(()));
        engine.replace_seed(seed());
        assert_eq!(offer(&mut engine, 11 * S, &p), Err(DropReason::Replay));
        engine.replace_seed(EpochSeed::generate(&mut rng(99), 0));
        assert_eq!(engine.epochs()[0].unwrap().tags, 0);
        assert_eq!(offer(&mut engine, 12 * S, &p), Err(DropReason::Mac));
    }

    #[test]
    fn a_past_epochs_key_cannot_be_restored_once_the_seed_moved_on() {
        let mut engine = HopEngine::<Processor>::new(
            EpochSeed::generate(&mut rng(1), 3),
            schedule(),
            Params::default(),
            HopLimits::default(),
            [0; 32],
        )
        .unwrap();
        assert_eq!(
            engine.restore(125 * S, 2, [0; 16], []),
            Err(RestoreError::KeyGone)
        );
    }

    #[test]
    fn filters_are_sized_for_the_top_rate_over_a_keys_lifetime() {
        // 60 s epochs with 5 s of grace on each side: a key is used for 70 s.
        let tags = HopLimits::replay_tags_for(1_000, &schedule());
        assert_eq!(tags, 70_000);
        let mut engine = engine_with(HopLimits {
            replay_tags: tags,
            ..Default::default()
        });
        engine.handle_timeout(0);
        let epoch = engine.epochs()[0].unwrap();
        assert!(epoch.rated_tags >= 70_000);
        assert!(epoch.filter_bytes as f64 / 70_000.0 <= 4.8);
    }

    /// Packets in one run of this CPU's lanes (1: none).
    fn lanes() -> usize {
        Processor::new(seed().secret_key(0).unwrap(), Params::default()).lanes()
    }

    /// Offers each of `packets` alone, `gap_us` apart from `start_us`; how many were held.
    fn offer_each(
        engine: &mut HopEngine,
        start_us: u64,
        gap_us: u64,
        packets: &[Vec<u8>],
    ) -> usize {
        (0..packets.len())
            .map(|i| {
                let at = start_us + i as u64 * gap_us;
                engine.receive_batch(at, &[&packets[i]], route, |_, _| Ok(()))
            })
            .sum()
    }

    /// Fast traffic fills runs of lanes: a packet that does not complete one waits, at
    /// most the window, and its delay counts from its arrival, so it leaves on time.
    #[test]
    fn a_packet_waits_for_a_run_of_lanes_and_still_leaves_on_time() {
        let run = lanes();
        let mut engine = engine();
        // Two runs and one more, 10 µs apart, each asking for 5 ms.
        let packets: Vec<Vec<u8>> = (0..2 * run + 1)
            .map(|i| packet(0, 5_000, 40 + i as u64))
            .collect();
        let last_at = 2 * run as u64 * 10;
        let held = offer_each(&mut engine, S, 10, &packets);
        if run > 1 {
            let waiting = packets.len() - held;
            // The first run went one at a time (no history yet) or as a run; after the
            // traffic showed its rate, packets wait: whole runs go, a partial one waits.
            assert!(held < packets.len(), "some packets wait for company");
            assert!(
                engine.stats().in_lanes >= run as u64,
                "{:?}",
                engine.stats()
            );
            assert_eq!(engine.pending(), packets.len());
            let deadline = engine.poll_timeout().expect("a deadline for the waiting");
            assert!(deadline <= S + last_at + DEFAULT_GATHER_US);
            // Nothing new comes: at the deadline the rest is unwrapped.
            assert_eq!(
                engine.receive_batch(deadline - 1, &[], route, |_, _| Ok(())),
                0
            );
            assert_eq!(
                engine.receive_batch(deadline, &[], route, |_, _| Ok(())),
                waiting
            );
        } else {
            assert_eq!(held, packets.len(), "without lanes nothing waits");
        }
        assert_eq!(engine.stats().drops.total(), 0);
        // Every packet leaves 5 ms after it arrived, not after it was unwrapped.
        let mut left = 0;
        for i in 0..packets.len() as u64 {
            let due = S + i * 10 + 5_000;
            engine.handle_timeout(due);
            while let Some((_, index)) = engine.next_ready(due) {
                engine.release(index);
                left += 1;
            }
            assert_eq!(left as u64, i + 1, "one leaves at each due time");
        }
        let error = engine.stats().delay_error;
        assert!(error.quantile_bound_us(1.0).unwrap() <= 10, "{error:?}");
    }

    /// A packet whose delay is shorter than its wait leaves when it is unwrapped, and the
    /// lateness is recorded.
    #[test]
    fn a_delay_shorter_than_the_wait_is_late_by_the_wait_and_recorded() {
        let run = lanes();
        if run == 1 {
            return; // no lanes on this CPU: nothing ever waits (the test above)
        }
        let mut engine = engine();
        let packets: Vec<Vec<u8>> = (0..run + 1).map(|i| packet(0, 0, 60 + i as u64)).collect();
        // Until a run's worth has come the rate is unknown and nothing waits; from the
        // packet that shows it on, they wait.
        let held = offer_each(&mut engine, S, 1, &packets);
        assert_eq!(held, run - 1);
        let deadline = S + run as u64 - 1 + DEFAULT_GATHER_US;
        assert!(engine.poll_timeout().is_some_and(|t| t <= deadline));
        assert_eq!(
            engine.receive_batch(deadline - 1, &[], route, |_, _| Ok(())),
            0
        );
        assert_eq!(engine.receive_batch(deadline, &[], route, |_, _| Ok(())), 2);
        engine.handle_timeout(deadline);
        let mut late = 0;
        while let Some((_, index)) = engine.next_ready(deadline) {
            engine.release(index);
            late += 1;
        }
        assert_eq!(late, run + 1);
        let error = engine.stats().delay_error;
        assert!(
            error.quantile_bound_us(1.0).unwrap() >= DEFAULT_GATHER_US,
            "{error:?}"
        );
    }

    /// Packets waiting when their key is retired are unwrapped under it first.
    #[test]
    fn packets_waiting_when_their_key_goes_are_unwrapped_under_it() {
        let run = lanes();
        let mut engine = engine();
        // Epoch 0's key goes at 65 s; the packets arrive just before.
        let packets: Vec<Vec<u8>> = (0..run + 1)
            .map(|i| packet(0, 1_000, 80 + i as u64))
            .collect();
        let start = 65 * S - 100;
        let held = offer_each(&mut engine, start, 1, &packets);
        assert_eq!(
            engine.poll_timeout(),
            Some(65 * S),
            "the key change comes first"
        );
        let rest = engine.receive_batch(65 * S, &[], route, |_, _| Ok(()));
        assert_eq!(held + rest, packets.len());
        assert_eq!(engine.stats().drops.get(DropReason::ExpiredKey), 0);
        assert_eq!(engine.epochs()[0], None, "and then the key is gone");
    }
}
