//! Key epochs: when each node key is in use, decided from the driver's `now` alone.
//!
//! Epoch `e` covers `[start + e·length, start + (e+1)·length)` on the network's clock (unix
//! time in microseconds on a real network; virtual time in the simulator). A node holds the
//! key of epoch `e` from `grace` before that interval to `grace` after it, so at any time it
//! holds the current epoch's key and, near a boundary, one neighbour's: the previous one
//! for packets still in flight, or the next one for senders whose clocks run a little
//! ahead. The two have different parities ([`KeyPhase`]), which is what lets a packet say
//! which key it was built for in one bit. A validated schedule has `grace < length / 2`.
//!
//! How long the grace must be: a sender builds each hop under the key of the epoch in
//! which that hop will *unwrap* it, reckoning from its own clock plus the delays it chose
//! for the earlier hops (see [`crate::network::path_index`]). Those delays are kept exactly, so a hop
//! sees the packet later than the sender reckoned only by the links crossed so far, the
//! queues on them and the sender's clock error, never by the delays. `grace` bounds that
//! lateness (and the same error ahead of time); it does not need to cover the delay
//! horizon. The default, 60 s, allows clocks 30 s apart and 30 s of links and queues.

use loopix_crypto::KeyPhase;

/// The epoch timetable of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochSchedule {
    /// When epoch 0 starts, µs on the network's clock.
    pub start_us: u64,
    /// How long each epoch lasts, µs.
    pub length_us: u64,
    /// How long a key stays in use before and after its epoch, µs.
    pub grace_us: u64,
}

/// Why a schedule cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// Epochs must last at least a second.
    TooShort,
    /// The grace must be shorter than half an epoch, or three keys would overlap.
    GraceTooLong,
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooShort => "epochs must last at least a second",
            Self::GraceTooLong => "the grace must be less than half an epoch",
        })
    }
}

impl EpochSchedule {
    /// A schedule, if its grace leaves at most two keys in use at once.
    pub fn new(start_us: u64, length_us: u64, grace_us: u64) -> Result<Self, ScheduleError> {
        if length_us < 1_000_000 {
            return Err(ScheduleError::TooShort);
        }
        if grace_us.saturating_mul(2) >= length_us {
            return Err(ScheduleError::GraceTooLong);
        }
        Ok(Self {
            start_us,
            length_us,
            grace_us,
        })
    }

    /// [`Self::new`] from whole seconds, as topologies, directories and the command line
    /// give a schedule.
    pub fn from_secs(start_s: u64, length_s: u64, grace_s: u64) -> Result<Self, ScheduleError> {
        const S: u64 = 1_000_000;
        Self::new(
            start_s.saturating_mul(S),
            length_s.saturating_mul(S),
            grace_s.saturating_mul(S),
        )
    }

    /// The epoch `now_us` falls in (epoch 0 before the start).
    pub fn epoch_at(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.start_us) / self.length_us
    }

    /// When epoch `epoch` starts.
    pub fn start_of(&self, epoch: u64) -> u64 {
        self.start_us
            .saturating_add(epoch.saturating_mul(self.length_us))
    }

    /// How long until the next epoch starts.
    pub fn until_next_us(&self, now_us: u64) -> u64 {
        self.start_of(self.epoch_at(now_us) + 1)
            .saturating_sub(now_us)
    }

    /// The epochs whose keys are in use at `now_us`, by phase: the current one and, within
    /// the grace of a boundary, the neighbour across it.
    pub fn live(&self, now_us: u64) -> [Option<u64>; 2] {
        let current = self.epoch_at(now_us);
        let mut live = [None; 2];
        live[KeyPhase::of_epoch(current).index()] = Some(current);
        let neighbour = if now_us < self.start_of(current).saturating_add(self.grace_us) {
            current.checked_sub(1)
        } else if now_us.saturating_add(self.grace_us) >= self.start_of(current + 1) {
            Some(current + 1)
        } else {
            None
        };
        if let Some(n) = neighbour {
            live[KeyPhase::of_epoch(n).index()] = Some(n);
        }
        live
    }

    /// The earliest epoch whose key is in use at `now_us`: every earlier key may be deleted.
    pub fn oldest_live(&self, now_us: u64) -> u64 {
        let [a, b] = self.live(now_us);
        a.into_iter().chain(b).min().unwrap_or(0)
    }

    /// The next time after `now_us` at which [`Self::live`] changes.
    pub fn next_change_us(&self, now_us: u64) -> u64 {
        let current = self.epoch_at(now_us);
        let next = self.start_of(current + 1);
        [
            self.start_of(current).saturating_add(self.grace_us),
            next.saturating_sub(self.grace_us),
            next,
        ]
        .into_iter()
        .filter(|&t| t > now_us)
        .min()
        .unwrap_or(next)
    }

    /// How long one key is in use: its epoch and a grace on either side. A replay filter
    /// sized for a shard's top rate over this span cannot fill.
    pub fn key_lifetime_us(&self) -> u64 {
        self.length_us + 2 * self.grace_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn schedule() -> EpochSchedule {
        EpochSchedule::new(100 * S, 60 * S, 5 * S).unwrap()
    }

    #[test]
    fn epochs_follow_the_timetable() {
        let s = schedule();
        assert_eq!(s.epoch_at(0), 0);
        assert_eq!(s.epoch_at(159 * S), 0);
        assert_eq!(s.epoch_at(160 * S), 1);
        assert_eq!(s.start_of(2), 220 * S);
        assert_eq!(s.until_next_us(200 * S), 20 * S);
        assert_eq!(s.key_lifetime_us(), 70 * S);
    }

    #[test]
    fn keys_overlap_only_within_the_grace_and_never_share_a_phase() {
        let s = schedule();
        // Epoch 1 runs 160..220 s: epoch 0 is still live until 165, epoch 2 from 215.
        assert_eq!(s.live(162 * S), [Some(0), Some(1)]);
        assert_eq!(s.live(165 * S), [None, Some(1)]);
        assert_eq!(s.live(214 * S), [None, Some(1)]);
        assert_eq!(s.live(215 * S), [Some(2), Some(1)]);
        assert_eq!(s.live(220 * S), [Some(2), Some(1)]);
        assert_eq!(s.live(225 * S), [Some(2), None]);
        assert_eq!(s.oldest_live(162 * S), 0);
        assert_eq!(s.oldest_live(170 * S), 1);
        for t in (0..400).map(|i| i * S) {
            let live = s.live(t);
            let next = s.next_change_us(t);
            assert!(next > t);
            // Nothing changes before the announced time.
            assert_eq!(s.live(next - 1), live, "at {t}");
        }
    }

    #[test]
    fn a_grace_of_half_an_epoch_is_refused() {
        assert_eq!(
            EpochSchedule::new(0, 60 * S, 30 * S),
            Err(ScheduleError::GraceTooLong)
        );
        assert_eq!(EpochSchedule::new(0, 1000, 0), Err(ScheduleError::TooShort));
    }
}
