//! The packet path shared by mixes and providers: take a datagram into a pooled buffer,
//! unwrap it in place with the replay check, hold it on the timing wheel for the delay
//! its sender chose, and queue it for sending when the wheel fires.
//!
//! Nothing here allocates after construction: buffers come from the [`PacketPool`], the
//! wheel and the ready queue carry pool indices, and every drop is counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use loopix_crypto::{Address, Command, ProcessError, Processed, Processor, SecretKey};

use crate::codec::Codec;
use crate::latency_histogram::LatencyHistogram;

use crate::drops::{DropCounts, DropReason};
use crate::packet_pool::PacketPool;
use crate::replay::{ReplaySet, Seen};
use crate::timing_wheel::{InsertError, TimingWheel, WheelConfig, WheelConfigError};

/// Capacities of a hop's preallocated state.
#[derive(Clone, Copy, Debug)]
pub struct HopLimits {
    /// Packets held at once (in the wheel or waiting to be sent).
    pub pool_packets: u32,
    /// Replay tags remembered in one key epoch.
    pub replay_tags: usize,
    /// Slot width and horizon of the delay wheel.
    pub wheel: WheelConfig,
}

impl Default for HopLimits {
    fn default() -> Self {
        Self {
            pool_packets: 65_536,
            replay_tags: 1 << 20,
            wheel: WheelConfig::default(),
        }
    }
}

/// Where a held packet goes when its delay is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Send to a node (or, from a provider, to a client).
    Send(Address),
    /// Provider: store in this client's inbox.
    Store(Address),
}

/// Datagrams unwrapped together through [`loopix_crypto::Processor::process_batch_unless_replayed`].
pub const BATCH: usize = 32;

/// Where a batch is unwrapped before its held packets move to pool slots. The copy costs
/// ~0.1 µs per packet against ~50 µs of crypto, and keeps the batch call on one slice.
struct Staging {
    bufs: Box<[Box<[u8]>]>,
    results: Box<[Result<Processed, ProcessError>]>,
}

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
    pub drops: DropCounts,
    /// |actual hold - requested delay| of every released packet, µs: delay fidelity.
    pub delay_error: LatencyHistogram,
}

/// The shared hop pipeline. See the module docs.
pub struct HopEngine<C: Codec = Processor> {
    processor: C,
    replay: ReplaySet,
    wheel: TimingWheel,
    pool: PacketPool,
    held: Box<[Held]>,
    ready: VecDeque<u32>,
    /// Packets the wheel has handed over up to one slot early, by exact due time: they
    /// leave when that time comes, so a release is not rounded up to a slot boundary.
    imminent: BinaryHeap<Reverse<(u64, u32)>>,
    staging: Staging,
    stats: HopStats,
}

impl<C: Codec> HopEngine<C> {
    /// Allocates everything the hop will ever use.
    pub fn new(
        key: SecretKey,
        params: loopix_crypto::Params,
        limits: HopLimits,
    ) -> Result<Self, WheelConfigError> {
        let n = limits.pool_packets;
        Ok(Self {
            processor: C::new(key, params),
            replay: ReplaySet::new(limits.replay_tags),
            wheel: TimingWheel::new(limits.wheel, n as usize)?,
            pool: PacketPool::new(n, params.packet_len()),
            held: vec![Held::default(); n as usize].into_boxed_slice(),
            ready: VecDeque::with_capacity(n as usize),
            imminent: BinaryHeap::with_capacity(n as usize),
            staging: Staging {
                bufs: (0..BATCH)
                    .map(|_| vec![0u8; params.packet_len()].into_boxed_slice())
                    .collect(),
                results: vec![Err(ProcessError::MacMismatch); BATCH].into_boxed_slice(),
            },
            stats: HopStats::default(),
        })
    }

    /// Unwraps `datagrams` in batches of [`BATCH`] and holds, ends or drops each one;
    /// returns how many were held. `route` turns a relay/deliver command into where the
    /// packet goes, or a drop reason (e.g. a client that is not ours); `on_end` gets each
    /// packet whose path ends here (loop return, drop, final), already unwrapped.
    pub fn receive_batch(
        &mut self,
        now_us: u64,
        datagrams: &[&[u8]],
        mut route: impl FnMut(Command) -> Result<Due, DropReason>,
        mut on_end: impl FnMut(Command, &[u8]) -> Result<(), DropReason>,
    ) -> usize {
        datagrams
            .chunks(BATCH)
            .map(|c| self.receive_chunk(now_us, c, &mut route, &mut on_end))
            .sum()
    }

    fn receive_chunk(
        &mut self,
        now_us: u64,
        datagrams: &[&[u8]],
        route: &mut impl FnMut(Command) -> Result<Due, DropReason>,
        on_end: &mut impl FnMut(Command, &[u8]) -> Result<(), DropReason>,
    ) -> usize {
        let n = self.stage(datagrams);
        let mut full = [false; BATCH];
        let mut refused = 0;
        let replay = &mut self.replay;
        let (bufs, results) = (&mut self.staging.bufs[..n], &mut self.staging.results[..n]);
        self.processor.unwrap_batch(bufs, results, |tag| {
            let seen = replay.insert(*tag);
            if seen != Seen::Fresh {
                full[refused] = seen == Seen::Full;
                refused += 1;
            }
            seen != Seen::Fresh
        });
        let (mut held, mut replays) = (0, 0);
        for i in 0..n {
            let outcome = match self.staging.results[i] {
                Err(ProcessError::Replayed) => {
                    replays += 1;
                    Err(if full[replays - 1] {
                        DropReason::Overload
                    } else {
                        DropReason::Replay
                    })
                }
                Err(e) => Err(DropReason::from(e)),
                Ok(p) if p.command.is_terminal() => on_end(p.command, &self.staging.bufs[i]),
                Ok(p) => route(p.command).and_then(|due| self.hold(now_us, i, p.command, due)),
            };
            match outcome {
                Ok(()) => {
                    held +=
                        usize::from(!self.staging.results[i].is_ok_and(|p| p.command.is_terminal()))
                }
                Err(reason) => self.stats.drops.add(reason),
            }
        }
        held
    }

    /// Copies well-sized datagrams into the staging buffers; counts the rest as malformed.
    fn stage(&mut self, datagrams: &[&[u8]]) -> usize {
        let mut n = 0;
        for d in datagrams {
            self.stats.received += 1;
            if d.len() == self.staging.bufs[n].len() {
                self.staging.bufs[n].copy_from_slice(d);
                n += 1;
            } else {
                self.stats.drops.add(DropReason::Malformed);
            }
        }
        n
    }

    /// Moves staged packet `staged` to a pool slot and onto the wheel.
    fn hold(
        &mut self,
        now_us: u64,
        staged: usize,
        command: Command,
        due: Due,
    ) -> Result<(), DropReason> {
        let delay_us = match command {
            Command::Relay { delay_us, .. } | Command::Deliver { delay_us, .. } => delay_us,
            _ => 0,
        };
        let requested_us = u64::from(delay_us);
        let slot = self.pool.alloc().ok_or(DropReason::Overload)?;
        self.pool
            .get_mut(slot)
            .copy_from_slice(&self.staging.bufs[staged]);
        // One slot early: the wheel rounds up to a slot boundary, the imminent heap then
        // waits for the exact due time.
        let early = (now_us + requested_us).saturating_sub(self.wheel.config().slot_us);
        let inserted = self.wheel.insert(slot, early, now_us);
        if let Err(e) = inserted {
            self.pool.release(slot);
            return Err(match e {
                InsertError::BeyondHorizon => DropReason::Horizon,
                InsertError::IndexOutOfRange => DropReason::Overload,
            });
        }
        self.held[slot as usize] = Held {
            due: Some(due),
            requested_us,
            since_us: now_us,
        };
        Ok(())
    }

    /// Counts a drop decided by the role (e.g. a poll from an unknown client).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drops.add(reason);
    }

    /// Queues a packet the role built itself (a mix's loop) for sending now.
    pub fn send_own(&mut self, now_us: u64, to: Address, fill: impl FnOnce(&mut [u8])) -> bool {
        let Some(slot) = self.pool.alloc() else {
            self.stats.drops.add(DropReason::Overload);
            return false;
        };
        fill(self.pool.get_mut(slot));
        self.held[slot as usize] = Held {
            due: Some(Due::Send(to)),
            requested_us: 0,
            since_us: now_us,
        };
        self.ready.push_back(slot);
        true
    }

    /// Moves every packet whose delay is over to the ready queue.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.release_due_by(now_us);
    }

    /// Readies what falls due within `ahead_us` of now, ahead of time, but never more than
    /// half a wheel slot ahead: the early side of the delay error stays within the slot
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
        self.wheel.poll(horizon_us, |slot| {
            let h = held[slot as usize];
            imminent.push(Reverse((h.since_us + h.requested_us, slot)));
        });
        while let Some(&Reverse((due, slot))) = self.imminent.peek() {
            if due > horizon_us {
                break;
            }
            self.imminent.pop();
            self.ready.push_back(slot);
        }
    }

    /// The next ready packet: where it goes and its bytes, valid until [`Self::release`].
    pub fn next_ready(&mut self, now_us: u64) -> Option<(Due, u32)> {
        let slot = self.ready.pop_front()?;
        let held = self.held[slot as usize];
        let actual = now_us.saturating_sub(held.since_us);
        self.stats
            .delay_error
            .record(actual.abs_diff(held.requested_us));
        self.stats.released += 1;
        held.due.map(|d| (d, slot))
    }

    /// The bytes in a pool slot.
    pub fn packet(&self, slot: u32) -> &[u8] {
        self.pool.get(slot)
    }

    /// Gives a slot back to the pool.
    pub fn release(&mut self, slot: u32) {
        self.held[slot as usize] = Held::default();
        self.pool.release(slot);
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let next = self.imminent.peek().map(|Reverse((due, _))| *due);
        [self.wheel.next_deadline_us(), next]
            .into_iter()
            .flatten()
            .min()
    }

    /// True if packets wait to be sent.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Packets held on the wheel (the Poisson mix's pool).
    pub fn pending(&self) -> usize {
        self.wheel.len() + self.imminent.len()
    }

    /// Counters.
    pub fn stats(&self) -> &HopStats {
        &self.stats
    }

    /// Starts a new key epoch: new key, empty replay set.
    pub fn rotate_key(&mut self, key: SecretKey, epoch: u64) {
        self.processor = C::new(key, *self.processor.params());
        self.replay.rotate(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::{Hop, Params, build};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// An engine holding one packet for `delay_us`, received at time 0.
    fn holding_one(delay_us: u32) -> HopEngine {
        holding_one_with(delay_us, HopLimits::default())
    }

    fn holding_one_with(delay_us: u32, limits: HopLimits) -> HopEngine {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (key, next) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
        let path = [
            Hop::new(
                key.public_key(),
                Command::Relay {
                    next: Address(2),
                    delay_us,
                },
            ),
            Hop::new(next.public_key(), Command::Final),
        ];
        let params = Params::default();
        let packet = build(&params, &path, b"x", &mut rng).expect("valid path");
        let mut engine = HopEngine::new(key, params, limits).expect("limits");
        let route = |c| match c {
            Command::Relay { next, .. } => Ok(Due::Send(next)),
            _ => Err(DropReason::UnexpectedCommand),
        };
        let held = engine.receive_batch(0, &[&packet], route, |_, _| Ok(()));
        assert_eq!(held, 1);
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
        let (due, slot) = engine.next_ready(4_970).expect("ready");
        assert_eq!(due, Due::Send(Address(2)));
        engine.release(slot);
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
            wheel: crate::timing_wheel::WheelConfig {
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
    fn handle_timeout_readies_only_what_is_due_now() {
        let mut engine = holding_one(5_000);
        engine.handle_timeout(4_999);
        assert!(!engine.has_ready());
        engine.handle_timeout(5_000);
        assert!(engine.has_ready());
    }
}
