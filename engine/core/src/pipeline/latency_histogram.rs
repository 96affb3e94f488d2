//! A fixed-bucket latency histogram that is `Copy`: recorded on the packet path without
//! allocating, carried in a shard's report, merged across shards, and exposed as a
//! Prometheus histogram. The bounds suit both delay fidelity (how far a release is from
//! the requested time: the default wheel slot, 100 µs, is a bound, so "p99 within one
//! slot" is read off exactly) and loop overhead (milliseconds).

/// Upper bounds of the buckets, µs; a last bucket holds everything above.
pub const BOUNDS_US: [u64; 20] = [
    10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000,
    20_000, 50_000, 100_000,
];

/// See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one value, µs.
    pub fn record(&mut self, us: u64) {
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds `other`'s counts (another shard's).
    pub fn merge(&mut self, other: &Self) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c += o;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    pub fn mean_us(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us as f64 / n as f64)
    }

    /// The bound below which at least a fraction `q` of values fall: an upper bound of the
    /// `q` quantile. `None` when empty; `u64::MAX` when it lies above the last bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let need = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= need {
                return Some(BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// (upper bound µs, cumulative count) per bucket, the last with bound `None` (+Inf):
    /// the Prometheus `_bucket` series.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = BOUNDS_US
            .iter()
            .map(|&b| Some(b))
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().scan(0, |acc, c| {
            *acc += c;
            Some(*acc)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_their_bound_closes() {
        let mut h = LatencyHistogram::default();
        for us in [0, 10, 11, 100, 101, 1_000_000] {
            h.record(us);
        }
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c[0], (Some(10), 2));
        assert_eq!(c[1], (Some(25), 3));
        assert_eq!(c[4], (Some(100), 4));
        assert_eq!(c[5], (Some(150), 5));
        assert_eq!(*c.last().unwrap(), (None, 6));
        assert_eq!(h.sum_us(), 1_000_222);
    }

    #[test]
    fn quantile_bounds_and_merge() {
        let (mut a, mut b) = (LatencyHistogram::default(), LatencyHistogram::default());
        assert_eq!(a.quantile_bound_us(0.99), None);
        (0..99).for_each(|_| a.record(40));
        b.record(600);
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.quantile_bound_us(0.99), Some(50));
        assert_eq!(a.quantile_bound_us(1.0), Some(750));
        b.record(200_000);
        assert_eq!(b.quantile_bound_us(1.0), Some(u64::MAX));
    }
}
