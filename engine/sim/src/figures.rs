//! The statistics a run of a network reports, from either driver (`loopix stress` over
//! real processes, [`crate::scale`] in virtual time): latency percentiles and CDF, Jain's
//! fairness index, and a Kolmogorov-Smirnov test of the clients' departures against the
//! Poisson process they should be.

use serde::Serialize;

/// How long after leaving a message must have arrived to count as lost when missing, s:
/// four mean path delays ((layers + 2) / µ) and two poll intervals.
pub fn late_window_s(layers: u8, mu_per_s: f64, poll_rate_per_s: f64) -> f64 {
    4.0 * (f64::from(layers) + 2.0) / mu_per_s + 2.0 / poll_rate_per_s.max(1e-3)
}

/// The `p`-quantile (0..=1) of `sorted`, nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// The empirical CDF of `sorted` at `points` evenly spaced quantiles: (value, fraction at
/// or below it), the last point the maximum.
pub fn cdf(sorted: &[f64], points: usize) -> Vec<(f64, f64)> {
    if sorted.is_empty() || points == 0 {
        return Vec::new();
    }
    (1..=points)
        .map(|i| {
            let q = i as f64 / points as f64;
            (percentile(sorted, q), q)
        })
        .collect()
}

/// Jain's fairness index of `xs`: (Σx)² / (n Σx²), 1 when every share is equal, 1/n when
/// one takes everything. `None` for no shares or all zero.
pub fn jain(xs: &[f64]) -> Option<f64> {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    (squares > 0.0).then(|| sum * sum / (xs.len() as f64 * squares))
}

/// A Kolmogorov-Smirnov test of gaps against an exponential distribution.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// Gaps tested.
    pub n: usize,
    /// The largest distance between their empirical CDF and the exponential's.
    pub d: f64,
    /// The distance beyond which the test rejects at the 1 % level (1.628 / √n).
    pub critical_d: f64,
    /// Whether the gaps pass as exponential: `d <= critical_d`.
    pub poisson: bool,
}

/// Tests `gaps` (any unit) against Exp(`rate`) (per the same unit): a Poisson process's
/// gaps are exponential and independent, so a stream whose timers run late, bunch or are
/// clipped shows as a distance. `None` with no gaps or no rate.
pub fn ks_exponential(gaps: &mut [f64], rate: f64) -> Option<KsTest> {
    if gaps.is_empty() || rate <= 0.0 {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let n = gaps.len() as f64;
    let d = gaps
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = 1.0 - (-rate * x.max(0.0)).exp();
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    let critical_d = 1.628 / n.sqrt();
    Some(KsTest {
        n: gaps.len(),
        d,
        critical_d,
        poisson: d <= critical_d,
    })
}

/// The gaps between consecutive departures of each stream, µs, from the `skip`-th on (a
/// stream's first sends are its handshake, not its Poisson ticks), at most `cap` in all,
/// taken from every stream in turn so that each is represented.
pub fn gaps_us(streams: &[Vec<u64>], skip: usize, cap: usize) -> Vec<f64> {
    let per_stream: Vec<Vec<f64>> = streams
        .iter()
        .map(|s| {
            s.iter()
                .skip(skip)
                .zip(s.iter().skip(skip + 1))
                .map(|(a, b)| b.saturating_sub(*a) as f64)
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    let longest = per_stream.iter().map(Vec::len).max().unwrap_or(0);
    'fill: for i in 0..longest {
        for s in &per_stream {
            if out.len() >= cap {
                break 'fill;
            }
            if let Some(&g) = s.get(i) {
                out.push(g);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn percentiles_and_the_cdf_come_from_the_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let c = cdf(&v, 4);
        assert_eq!(c.len(), 4);
        assert_eq!(c[3], (100.0, 1.0));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn jain_is_one_for_equal_shares_and_one_over_n_for_one_taker() {
        assert_eq!(jain(&[0.5, 0.5, 0.5]), Some(1.0));
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]).unwrap() - 0.25).abs() < 1e-12);
        let uneven = jain(&[1.0, 0.5]).unwrap();
        assert!(uneven > 0.5 && uneven < 1.0);
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[0.0, 0.0]), None);
    }

    #[test]
    fn exponential_gaps_pass_and_regular_or_late_ones_fail() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let rate = 8.0; // per second, gaps in µs below
        let mut gaps: Vec<f64> = (0..20_000)
            .map(|_| loopix_core::roles::rate::exp_us(&mut rng, rate).unwrap() as f64)
            .collect();
        let ks = ks_exponential(&mut gaps, rate / 1e6).unwrap();
        assert!(ks.poisson, "{ks:?}");
        assert_eq!(ks.n, 20_000);
        // A clock: every gap the mean.
        let mut regular = vec![125_000.0; 1_000];
        assert!(!ks_exponential(&mut regular, rate / 1e6).unwrap().poisson);
        // Timers that fire 50 ms late whenever they fire: no gap under 50 ms.
        let mut late: Vec<f64> = gaps.iter().map(|g| g.max(50_000.0)).collect();
        let ks = ks_exponential(&mut late, rate / 1e6).unwrap();
        assert!(!ks.poisson && ks.d > 0.3, "{ks:?}");
        assert_eq!(ks_exponential(&mut [], 1.0), None);
    }

    #[test]
    fn gaps_skip_each_streams_start_and_take_from_every_stream_in_turn() {
        let streams = vec![vec![0, 100, 300, 600, 1000], vec![5, 10, 20]];
        assert_eq!(gaps_us(&streams, 1, 10), vec![200.0, 10.0, 300.0, 400.0]);
        assert_eq!(gaps_us(&streams, 1, 2), vec![200.0, 10.0]);
        assert!(gaps_us(&streams, 5, 10).is_empty());
    }
}
