//! The network clock the cores run on: unix time in microseconds, because key epochs are
//! scheduled on it and every node and client must agree on which epoch it is.
//!
//! Read once from the system clock at start and carried forward by the monotonic clock, so
//! a step of the system clock while the node runs (an NTP correction) moves no packet's
//! delay and no timer; the node meets the corrected time at its next restart. Nodes and
//! clients are expected to keep their clocks within the topology's `epoch_grace_s` of each
//! other (NTP keeps them within milliseconds).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct NetworkClock {
    origin: Instant,
    unix_us_at_origin: u64,
}

impl NetworkClock {
    /// Reads the system clock now.
    pub fn start() -> Self {
        let unix_us_at_origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            origin: Instant::now(),
            unix_us_at_origin,
        }
    }

    /// Unix time now, µs.
    pub fn now_us(&self) -> u64 {
        self.unix_us_at_origin + self.origin.elapsed().as_micros() as u64
    }

    /// The instant at which this clock reads `at_us` (now, if that is past).
    pub fn instant_at(&self, at_us: u64) -> Instant {
        let from_origin = at_us.saturating_sub(self.unix_us_at_origin);
        let at = self.origin + std::time::Duration::from_micros(from_origin);
        at.max(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unix_time_and_never_goes_back() {
        let clock = NetworkClock::start();
        let a = clock.now_us();
        let b = clock.now_us();
        assert!(b >= a);
        // 2025-01-01 in µs: the clock is unix time, not time since start.
        assert!(a > 1_735_689_600_000_000, "{a}");
    }
}
