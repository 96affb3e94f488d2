//! The keys a node unwraps with, over their lifecycle: the engine follows the
//! [`EpochSchedule`] from the `now` it is given, derives each epoch's key from the node's
//! [`EpochSeed`] when the key comes into use, and drops it (the key is wiped) when its grace
//! ends. It holds at most two keys, one per [`KeyPhase`], each with its own
//! [`ReplayFilter`] and the journal that lets a restart refill it; a packet's phase bit says
//! which one it was built for, so no packet is ever tried under two keys. The packet path
//! that uses them is [`crate::pipeline::hop`].

use std::collections::VecDeque;

use loopix_crypto::{EpochSeed, KeyPhase, PublicKey, SecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::formats::codec::Codec;
use crate::network::epoch::EpochSchedule;
use crate::pipeline::replay::{FilterKey, ReplayFilter, Seen};

/// The state of one key in use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochStats {
    pub epoch: u64,
    /// Tags recorded in its replay filter, and how many the filter is rated for.
    pub tags: usize,
    pub rated_tags: usize,
    pub filter_bytes: usize,
    /// Packets dropped as replays under this key.
    pub replays: u64,
    /// Packets dropped because their filter buckets were full (see [`Seen::Full`]).
    pub full: u64,
    /// Tags recorded but not kept for the journal because it was not drained in time.
    pub journal_lost: u64,
}

/// What the driver must write down so that a restart keeps refusing replays.
#[derive(Debug, PartialEq, Eq)]
pub enum JournalRecord<'a> {
    /// A key came into use with an empty filter hashing under `key`: start its journal.
    Opened { epoch: u64, key: FilterKey },
    /// Hashes newly recorded under `epoch` (see [`ReplayFilter::hash`]): append them.
    Tags { epoch: u64, hashes: &'a [u64] },
    /// The key of `epoch` is no longer in use: its journal can go.
    Retired { epoch: u64 },
}

/// The lifecycle events of [`JournalRecord`], in order, until drained.
#[derive(Clone, Copy, Debug)]
enum JournalEvent {
    Opened(u64, FilterKey),
    Retired(u64),
}

/// Journal events kept before the oldest are forgotten (a change of keys makes at most
/// four; a driver drains them every loop).
const MAX_JOURNAL_EVENTS: usize = 16;

/// One key phase: the key in use for it, if any, and its replay filter.
pub(crate) struct EpochState<C> {
    /// The epoch, its key's public half and its unwrapping side.
    pub(crate) key: Option<(u64, PublicKey, C)>,
    pub(crate) filter: ReplayFilter,
    /// Hashes recorded since the journal was last drained.
    pub(crate) journal: Vec<u64>,
    pub(crate) stats: EpochStats,
}

/// Why journalled tags could not be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The node's seed has moved past this epoch: its key is gone, and so is every packet
    /// that could be replayed under it.
    KeyGone,
    /// Restoring is for before the first packet or timeout.
    AlreadyStarted,
    /// The epoch's key is not in use now (its grace is over, or a stale file).
    NotInUse,
}

/// The keys in use and their replay filters. See the module docs.
pub struct KeyRing<C> {
    params: loopix_crypto::Params,
    seed: EpochSeed,
    schedule: EpochSchedule,
    pub(crate) phases: [EpochState<C>; 2],
    /// When the keys in use change next; 0 before the first call.
    next_change_us: u64,
    /// Hashes a phase's journal keeps between two drains.
    pub(crate) journal_tags: usize,
    journal_events: VecDeque<JournalEvent>,
    /// Draws the replay filters' hash keys.
    rng: ChaCha20Rng,
}

impl<C: Codec> KeyRing<C> {
    /// Keys from `seed` as `schedule` brings their epochs into use, each with a filter of
    /// `replay_tags` and a journal of `journal_tags`; `rng_seed` seeds the filters' keys.
    pub fn new(
        seed: EpochSeed,
        schedule: EpochSchedule,
        params: loopix_crypto::Params,
        replay_tags: usize,
        journal_tags: usize,
        rng_seed: [u8; 32],
    ) -> Self {
        let empty = || EpochState {
            key: None,
            filter: ReplayFilter::new(replay_tags, [0; 16]),
            journal: Vec::with_capacity(journal_tags),
            stats: EpochStats::default(),
        };
        Self {
            params,
            seed,
            schedule,
            phases: [empty(), empty()],
            next_change_us: 0,
            journal_tags,
            journal_events: VecDeque::with_capacity(MAX_JOURNAL_EVENTS),
            rng: {
                // Its own stream, so the role can seed its own choices with the same seed.
                let mut rng = ChaCha20Rng::from_seed(rng_seed);
                rng.set_stream(1);
                rng
            },
        }
    }

    /// Brings the keys in use up to `now_us`: retires (and wipes) keys whose grace is over,
    /// derives the keys whose epochs have come into use, each with an empty filter, and
    /// moves the seed past every epoch no longer needed.
    pub fn advance(&mut self, now_us: u64) {
        if now_us < self.next_change_us {
            return;
        }
        self.next_change_us = self.schedule.next_change_us(now_us);
        let live = self.schedule.live(now_us);
        for (phase, want) in live.into_iter().enumerate() {
            let have = self.phases[phase].key.as_ref().map(|(e, _, _)| *e);
            if have == want {
                continue;
            }
            if let Some(old) = have {
                self.retire(phase, old);
            }
            if let Some(epoch) = want {
                self.install(phase, epoch);
            }
        }
        self.seed.advance_to(self.schedule.oldest_live(now_us));
    }

    fn retire(&mut self, phase: usize, epoch: u64) {
        let state = &mut self.phases[phase];
        state.key = None;
        state.journal.clear();
        self.push_journal_event(JournalEvent::Retired(epoch));
    }

    /// Puts `epoch`'s key in `phase` with an empty filter; if the seed cannot give the key
    /// (it has moved past it), the phase stays without one.
    fn install(&mut self, phase: usize, epoch: u64) {
        let Some(secret) = self.seed.secret_key(epoch) else {
            return;
        };
        let mut key = [0u8; 16];
        self.rng.fill_bytes(&mut key);
        self.put_key(phase, epoch, secret, key);
        self.push_journal_event(JournalEvent::Opened(epoch, key));
    }

    /// Puts `secret`, the key of `epoch`, in `phase`, with an empty filter hashing under
    /// `filter_key` and fresh counters.
    fn put_key(&mut self, phase: usize, epoch: u64, secret: SecretKey, filter_key: FilterKey) {
        let state = &mut self.phases[phase];
        state.key = Some((epoch, secret.public_key(), C::new(secret, self.params)));
        state.filter.reset(filter_key);
        state.journal.clear();
        state.stats = EpochStats {
            epoch,
            ..Default::default()
        };
    }

    fn push_journal_event(&mut self, event: JournalEvent) {
        if self.journal_tags == 0 {
            return;
        }
        if self.journal_events.len() == MAX_JOURNAL_EVENTS {
            self.journal_events.pop_front();
        }
        self.journal_events.push_back(event);
    }

    /// Refills epoch `epoch`'s filter from a journal (hash key and hashes) written before
    /// a restart, so the packets it recorded stay refused. Call before the first packet
    /// or timeout, for epochs in use at `now_us`; returns how many hashes were recorded.
    pub fn restore(
        &mut self,
        now_us: u64,
        epoch: u64,
        key: FilterKey,
        hashes: impl IntoIterator<Item = u64>,
    ) -> Result<usize, RestoreError> {
        if self.next_change_us != 0 {
            return Err(RestoreError::AlreadyStarted);
        }
        if !self.schedule.live(now_us).contains(&Some(epoch)) {
            return Err(RestoreError::NotInUse);
        }
        let secret = self.seed.secret_key(epoch).ok_or(RestoreError::KeyGone)?;
        let phase = KeyPhase::of_epoch(epoch).index();
        self.put_key(phase, epoch, secret, key);
        let state = &mut self.phases[phase];
        let mut restored = 0;
        for h in hashes {
            if state.filter.insert_hash(h) == Seen::Fresh {
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Takes a new seed (a key file re-read): a key in use whose epoch the new seed gives
    /// a different key for is replaced, with an empty filter; a key that did not change
    /// keeps its filter untouched.
    pub fn replace_seed(&mut self, seed: EpochSeed) {
        self.seed = seed;
        for phase in 0..2 {
            let Some((epoch, public, _)) = &self.phases[phase].key else {
                continue;
            };
            let epoch = *epoch;
            let same = self.seed.secret_key(epoch).map(|k| k.public_key()) == Some(*public);
            if !same {
                self.retire(phase, epoch);
                self.install(phase, epoch);
            }
        }
    }

    /// Hands the driver what it must persist (see [`JournalRecord`]), in order.
    pub fn drain_journal(&mut self, mut write: impl FnMut(JournalRecord<'_>)) {
        while let Some(event) = self.journal_events.pop_front() {
            write(match event {
                JournalEvent::Opened(epoch, key) => JournalRecord::Opened { epoch, key },
                JournalEvent::Retired(epoch) => JournalRecord::Retired { epoch },
            });
        }
        for state in &mut self.phases {
            if let Some((epoch, _, _)) = state.key
                && !state.journal.is_empty()
            {
                write(JournalRecord::Tags {
                    epoch,
                    hashes: &state.journal,
                });
            }
            state.journal.clear();
        }
    }

    /// The keys in use, by phase.
    pub fn epochs(&self) -> [Option<EpochStats>; 2] {
        self.phases.each_ref().map(|s| {
            s.key.as_ref().map(|_| EpochStats {
                tags: s.filter.len(),
                rated_tags: s.filter.rated_capacity(),
                filter_bytes: s.filter.bytes(),
                ..s.stats
            })
        })
    }

    /// The epoch timetable the engine follows.
    pub fn schedule(&self) -> &EpochSchedule {
        &self.schedule
    }

    /// When [`Self::advance`] has work next (the next change of keys).
    pub fn next_change_us(&self) -> u64 {
        self.next_change_us
    }
}
