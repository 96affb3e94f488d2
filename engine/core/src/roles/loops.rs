//! Tracks a node's own loop cover packets and how many come back: the (n-1)/blocking
//! attack signal. A loop counts once its grace period (longer than any honest round
//! trip) has passed; the fraction is taken over the most recent such loops.

use std::collections::VecDeque;

use crate::pipeline::latency_histogram::LatencyHistogram;

#[derive(Clone, Copy, Debug)]
struct Sent {
    nonce: u64,
    at_us: u64,
    /// The delays written into the loop's hops, µs.
    requested_us: u64,
    returned: bool,
}

/// How long a loop may take before it counts as lost: longer than any honest round trip
/// through every layer at the default rates (the sum of the hops' delays has a tail of a
/// few seconds at µ = 10), short enough that a blocking attack shows within seconds.
pub const LOOP_GRACE_US: u64 = 10_000_000;

/// A bounded record of recent loops.
pub struct LoopMonitor {
    sent: VecDeque<Sent>,
    window: usize,
    grace_us: u64,
    pub sent_total: u64,
    pub returned_total: u64,
    /// Round trip minus the delays the loop asked for, µs: what the path's routing,
    /// processing and links cost (the paper's latency overhead, Fig. 10).
    pub overhead: LatencyHistogram,
}

impl LoopMonitor {
    /// Judges the last `window` loops older than `grace_us`.
    pub fn new(window: usize, grace_us: u64) -> Self {
        Self {
            sent: VecDeque::with_capacity(window * 2),
            window,
            grace_us,
            sent_total: 0,
            returned_total: 0,
            overhead: LatencyHistogram::default(),
        }
    }

    /// Records a loop sent at `now_us` whose hops hold it `requested_us` in all.
    pub fn sent(&mut self, nonce: u64, now_us: u64, requested_us: u64) {
        if self.sent.len() >= self.window * 2 {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            nonce,
            at_us: now_us,
            requested_us,
            returned: false,
        });
        self.sent_total += 1;
    }

    /// Records a loop back at `now_us`; false if it is not one of ours (or came back
    /// twice).
    pub fn returned(&mut self, nonce: u64, now_us: u64) -> bool {
        match self
            .sent
            .iter_mut()
            .find(|s| s.nonce == nonce && !s.returned)
        {
            Some(s) => {
                s.returned = true;
                self.returned_total += 1;
                let trip = now_us.saturating_sub(s.at_us);
                self.overhead.record(trip.saturating_sub(s.requested_us));
                true
            }
            None => false,
        }
    }

    /// Fraction of the last `window` loops past their grace period that came back;
    /// `None` before any loop is old enough.
    pub fn return_fraction(&self, now_us: u64) -> Option<f64> {
        let judged = self
            .sent
            .iter()
            .rev()
            .filter(|s| s.at_us + self.grace_us <= now_us)
            .take(self.window);
        let (n, back) = judged.fold((0u32, 0u32), |(n, b), s| (n + 1, b + u32::from(s.returned)));
        (n > 0).then(|| f64::from(back) / f64::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_counts_only_loops_past_their_grace() {
        let mut m = LoopMonitor::new(10, 100);
        m.sent(1, 0, 30);
        m.sent(2, 0, 0);
        m.sent(3, 500, 0);
        assert!(m.returned(1, 70));
        assert!(!m.returned(1, 80), "twice");
        assert!(!m.returned(9, 80), "not ours");
        assert_eq!((m.overhead.count(), m.overhead.sum_us()), (1, 40));
        assert_eq!(m.return_fraction(50), None);
        assert_eq!(m.return_fraction(100), Some(0.5));
        assert_eq!(m.return_fraction(600), Some(1.0 / 3.0));
    }
}
