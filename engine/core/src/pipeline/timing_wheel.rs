//! A hierarchical timing wheel for packet delays: O(1) insert and expiry, bounded memory.
//!
//! Six levels of 64 slots; level `l` slots span `64^l` ticks, so the next busy slot of a
//! level is one `trailing_zeros` on its occupancy bitmap (the layout of tokio's wheel).
//! Slots hold `u32` indices into the caller's preallocated packet pool, chained through
//! an index array of the same capacity: inserting and firing never allocate, and no
//! entry is ever cancelled (a held packet always leaves).
//!
//! Guarantees, tested against a `BTreeMap` model: an entry due at `t` never fires at a
//! `now < t`, and fires at the first poll with `now >= t + slot_us` at the latest (at most
//! one slot late). A due time beyond the configured horizon is refused, for the caller to
//! drop and count. The wheel never reads a clock: time comes in as `now_us`.

use core::fmt;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 6;
/// Ticks the whole wheel spans: `64^6 = 2^36`.
const WHEEL_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVELS);
/// No entry: ends a slot's chain.
const NIL: u32 = u32::MAX;

const _: () = assert!(SLOTS == 64, "occupancy bitmaps are u64");

/// Slot width and horizon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelConfig {
    /// Width of one slot (one tick), in microseconds. Default 100 µs.
    pub slot_us: u64,
    /// Longest delay accepted, in microseconds. Default 10 minutes.
    pub horizon_us: u64,
}

impl Default for WheelConfig {
    fn default() -> Self {
        Self {
            slot_us: 100,
            horizon_us: 600_000_000,
        }
    }
}

/// A configuration the wheel cannot honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WheelConfigError {
    /// `slot_us` must be at least 1.
    ZeroSlot,
    /// The horizon needs more than the wheel's `2^36` slots.
    HorizonTooLong { max_us: u64 },
    /// Indices are `u32` and `u32::MAX` is reserved.
    CapacityTooLarge,
}

impl fmt::Display for WheelConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSlot => f.write_str("slot_us must be at least 1"),
            Self::HorizonTooLong { max_us } => {
                write!(f, "horizon_us exceeds {max_us} at this slot width")
            }
            Self::CapacityTooLarge => f.write_str("capacity must be below 2^32 - 1 entries"),
        }
    }
}

impl std::error::Error for WheelConfigError {}

/// Why an entry was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The due time is further ahead than the horizon.
    BeyondHorizon,
    /// The index is not below the wheel's capacity.
    IndexOutOfRange,
}

#[derive(Clone, Copy)]
struct Level {
    /// Bit `s` set iff slot `s` holds a chain.
    occupied: u64,
    /// Head of each slot's chain, or [`NIL`].
    heads: [u32; SLOTS],
}

impl Level {
    const EMPTY: Self = Self {
        occupied: 0,
        heads: [NIL; SLOTS],
    };
}

/// The next slot to expire, and the tick it expires at.
#[derive(Clone, Copy, Debug)]
struct Expiration {
    level: usize,
    slot: usize,
    tick: u64,
}

/// The wheel. See the module docs.
pub struct TimingWheel {
    config: WheelConfig,
    /// Ticks fully processed: every entry due at or before this tick has fired.
    elapsed: u64,
    levels: [Level; LEVELS],
    /// Due tick of each entry, by index.
    due: Box<[u64]>,
    /// Next entry in the same slot, by index.
    next: Box<[u32]>,
    len: usize,
}

impl TimingWheel {
    /// A wheel for indices `0..capacity`, starting at time 0.
    pub fn new(config: WheelConfig, capacity: usize) -> Result<Self, WheelConfigError> {
        if config.slot_us == 0 {
            return Err(WheelConfigError::ZeroSlot);
        }
        let max_us = (WHEEL_TICKS - 1).saturating_mul(config.slot_us) - config.slot_us;
        if config.horizon_us > max_us {
            return Err(WheelConfigError::HorizonTooLong { max_us });
        }
        if capacity >= NIL as usize {
            return Err(WheelConfigError::CapacityTooLarge);
        }
        Ok(Self {
            config,
            elapsed: 0,
            levels: [Level::EMPTY; LEVELS],
            due: vec![0; capacity].into_boxed_slice(),
            next: vec![NIL; capacity].into_boxed_slice(),
            len: 0,
        })
    }

    /// The configuration the wheel was built with.
    pub fn config(&self) -> &WheelConfig {
        &self.config
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `index` to fire at `due_us`. `now_us` is the driver's current time; a due
    /// time in the past fires at the next poll. The caller must not insert an index that
    /// is already waiting.
    pub fn insert(&mut self, index: u32, due_us: u64, now_us: u64) -> Result<(), InsertError> {
        if index as usize >= self.due.len() {
            return Err(InsertError::IndexOutOfRange);
        }
        if due_us.saturating_sub(now_us) > self.config.horizon_us {
            return Err(InsertError::BeyondHorizon);
        }
        if self.len == 0 {
            // Nothing waits: the wheel may start from now. Drivers count time from an
            // arbitrary origin (unix time on a node), and the wheel spans only 2^36 ticks
            // from where it stands.
            self.elapsed = self.elapsed.max(now_us / self.config.slot_us);
        }
        // Rounding up is what keeps an entry from firing before its due time.
        let tick = due_us.div_ceil(self.config.slot_us).max(self.elapsed);
        self.due[index as usize] = tick;
        self.place(index);
        self.len += 1;
        Ok(())
    }

    /// Fires, through `fire`, every entry due at or before `now_us`, in due order across
    /// slots (entries of one slot fire together, in no particular order).
    pub fn poll(&mut self, now_us: u64, mut fire: impl FnMut(u32)) {
        let now_tick = now_us / self.config.slot_us;
        while let Some(exp) = self.next_expiration() {
            if exp.tick > now_tick {
                break;
            }
            self.elapsed = exp.tick;
            self.expire(exp, &mut fire);
        }
        self.elapsed = self.elapsed.max(now_tick);
    }

    /// When the driver should poll next: the earliest slot boundary with work (an entry
    /// due, or a coarse slot to cascade). `None` when empty.
    pub fn next_deadline_us(&self) -> Option<u64> {
        self.next_expiration()
            .map(|e| e.tick.saturating_mul(self.config.slot_us))
    }

    fn expire(&mut self, exp: Expiration, fire: &mut impl FnMut(u32)) {
        let level = &mut self.levels[exp.level];
        let mut head = level.heads[exp.slot];
        level.heads[exp.slot] = NIL;
        level.occupied &= !(1 << exp.slot);
        while head != NIL {
            let index = head;
            head = self.next[index as usize];
            if exp.level == 0 {
                self.len -= 1;
                fire(index);
            } else {
                self.place(index);
            }
        }
    }

    /// Links `index` into the slot its due tick belongs to, relative to `elapsed`.
    fn place(&mut self, index: u32) {
        let due = self.due[index as usize];
        let level = level_for(self.elapsed, due);
        let slot = ((due >> (SLOT_BITS as usize * level)) as usize) & (SLOTS - 1);
        let lvl = &mut self.levels[level];
        self.next[index as usize] = lvl.heads[slot];
        lvl.heads[slot] = index;
        lvl.occupied |= 1 << slot;
    }

    fn next_expiration(&self) -> Option<Expiration> {
        (0..LEVELS).find_map(|l| self.level_expiration(l))
    }

    /// The first busy slot of level `l` at or after `elapsed`, and the tick it starts at.
    fn level_expiration(&self, l: usize) -> Option<Expiration> {
        let occupied = self.levels[l].occupied;
        if occupied == 0 {
            return None;
        }
        let shift = SLOT_BITS as usize * l;
        let slot_ticks = 1u64 << shift;
        let level_ticks = slot_ticks << SLOT_BITS;
        let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
        let slot =
            (occupied.rotate_right(now_slot as u32).trailing_zeros() as usize + now_slot) % SLOTS;
        let mut tick = (self.elapsed & !(level_ticks - 1)) + slot as u64 * slot_ticks;
        if tick < self.elapsed && l > 0 {
            // Only the top level wraps: its slot belongs to the next rotation.
            tick += level_ticks;
        }
        Some(Expiration {
            level: l,
            slot,
            tick: tick.max(self.elapsed),
        })
    }
}

/// The level whose slots separate `elapsed` from `due`: the highest 6-bit digit in which
/// they differ. Due ticks past the top level's rotation are clamped to the top level.
fn level_for(elapsed: u64, due: u64) -> usize {
    let masked = (elapsed ^ due) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    (significant / SLOT_BITS as usize).min(LEVELS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_wheel_first_used_at_unix_time_fires_on_time() {
        let mut w = TimingWheel::new(WheelConfig::default(), 4).unwrap();
        let now = 1_795_885_245_846_445;
        w.insert(0, now + 5_000, now).unwrap();
        let mut fired = Vec::new();
        w.poll(now + 4_999, |i| fired.push(i));
        assert!(fired.is_empty());
        w.poll(now + 5_100, |i| fired.push(i));
        assert_eq!(fired, [0]);
    }

    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    fn wheel(slot_us: u64, capacity: usize) -> TimingWheel {
        wheel_with_horizon(slot_us, 3_600_000_000, capacity)
    }

    fn wheel_with_horizon(slot_us: u64, horizon_us: u64, capacity: usize) -> TimingWheel {
        let config = WheelConfig {
            slot_us,
            horizon_us,
        };
        TimingWheel::new(config, capacity).unwrap()
    }

    fn drain(w: &mut TimingWheel, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.poll(now, |i| out.push(i));
        out.sort();
        out
    }

    #[test]
    fn fires_at_its_slot_not_before() {
        let mut w = wheel(100, 4);
        w.insert(0, 1_050, 0).unwrap();
        assert!(drain(&mut w, 1_049).is_empty());
        assert!(
            drain(&mut w, 1_099).is_empty(),
            "due 1050 rounds up to the 1100 slot"
        );
        assert_eq!(drain(&mut w, 1_100), vec![0]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_due_fires_at_the_next_poll() {
        let mut w = wheel(100, 4);
        w.poll(10_000, |_| unreachable!());
        w.insert(1, 5_000, 10_000).unwrap();
        assert_eq!(drain(&mut w, 10_000), vec![1]);
    }

    #[test]
    fn beyond_horizon_and_bad_index_are_refused() {
        let config = WheelConfig {
            slot_us: 100,
            horizon_us: 1_000,
        };
        let mut w = TimingWheel::new(config, 2).unwrap();
        assert_eq!(w.insert(0, 1_001, 0), Err(InsertError::BeyondHorizon));
        assert_eq!(w.insert(0, 2_000, 1_000), Ok(()));
        assert_eq!(w.insert(2, 10, 0), Err(InsertError::IndexOutOfRange));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn bad_configs_are_refused() {
        let zero = WheelConfig {
            slot_us: 0,
            horizon_us: 1,
        };
        assert_eq!(
            TimingWheel::new(zero, 1).err(),
            Some(WheelConfigError::ZeroSlot)
        );
        let long = WheelConfig {
            slot_us: 1,
            horizon_us: WHEEL_TICKS,
        };
        assert!(matches!(
            TimingWheel::new(long, 1).err(),
            Some(WheelConfigError::HorizonTooLong { .. })
        ));
    }

    #[test]
    fn next_deadline_leads_to_the_entry_through_cascades() {
        let mut w = wheel(100, 1);
        let due = 123_456_789;
        w.insert(0, due, 0).unwrap();
        let mut fired_at = None;
        let mut now = 0;
        for _ in 0..20 {
            let Some(next) = w.next_deadline_us() else {
                break;
            };
            assert!(next >= now, "deadlines move forward");
            now = next;
            w.poll(now, |_| fired_at = Some(now));
        }
        let at = fired_at.expect("fired within a few cascades");
        assert!(at >= due && at < due + 100, "fired at {at}");
    }

    /// Random inserts and polls against a BTreeMap of due times: after every poll, the
    /// fired set is exactly the entries whose slot has started, so none fired early and
    /// none is more than one slot late.
    fn check_against_model(seed: u64, slot_us: u64, max_delay_us: u64, steps: usize) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let cap = 512;
        let mut w = wheel_with_horizon(slot_us, max_delay_us, cap);
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut free: Vec<u32> = (0..cap as u32).collect();
        let mut now = rng.next_u64() % (1 << 40);
        w.poll(now, |_| unreachable!());
        for _ in 0..steps {
            if rng.next_u32() % 3 != 0 {
                if let Some(i) = free.pop() {
                    let due = now + rng.next_u64() % max_delay_us;
                    w.insert(i, due, now).unwrap();
                    model.insert(i, due);
                }
            } else {
                now += rng.next_u64() % (max_delay_us / 4 + 1);
                let fired = drain(&mut w, now);
                for &i in &fired {
                    let due = model.remove(&i).expect("fired entry was waiting");
                    assert!(
                        due <= now,
                        "seed {seed}: {i} due {due} fired early at {now}"
                    );
                    free.push(i);
                }
                for (&i, &due) in &model {
                    assert!(
                        due + slot_us > now,
                        "seed {seed}: {i} due {due} late at {now}"
                    );
                }
                assert_eq!(w.len(), model.len());
            }
        }
    }

    #[test]
    fn matches_the_model_with_short_delays() {
        for seed in 0..20 {
            check_against_model(seed, 100, 50_000, 2_000);
        }
    }

    #[test]
    fn matches_the_model_across_cascades_and_wraps() {
        for seed in 100..120 {
            check_against_model(seed, 1, 40_000_000_000, 2_000);
        }
        for seed in 200..210 {
            check_against_model(seed, 100, 3_000_000_000, 2_000);
        }
    }
}
