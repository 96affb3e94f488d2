//! Exponential delays and Poisson processes, drawn from the caller's RNG.

use rand_core::Rng;

/// Microseconds per second, the unit conversion every rate goes through.
pub const US_PER_S: f64 = 1e6;

/// An Exp(`rate_per_s`) duration in microseconds; `None` when the rate is zero (the
/// process is off). Inverse-CDF sampling from 53 random bits, never `ln(0)`.
pub fn exp_us<R: Rng + ?Sized>(rng: &mut R, rate_per_s: f64) -> Option<u64> {
    if rate_per_s <= 0.0 {
        return None;
    }
    let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64; // (0, 1]
    Some((-u.ln() / rate_per_s * US_PER_S).round() as u64)
}

/// A uniform draw from [0, 1), from 53 random bits.
pub fn uniform<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// CDF of Gamma(`shape`, `rate`) for integer shape (Erlang): the sum of `shape` Exp(rate).
pub fn erlang_cdf(shape: u32, rate: f64) -> impl Fn(f64) -> f64 {
    move |x| {
        if x <= 0.0 {
            return 0.0;
        }
        let y = rate * x;
        let (mut term, mut sum) = (1.0, 1.0);
        for i in 1..shape {
            term *= y / f64::from(i);
            sum += term;
        }
        1.0 - (-y).exp() * sum
    }
}

/// The `q` quantile of an increasing `cdf` on [0, ∞), by bisection to 1e-9 relative.
pub fn quantile(cdf: impl Fn(f64) -> f64, q: f64) -> f64 {
    let mut hi = 1.0;
    while cdf(hi) < q && hi < 1e300 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    while hi - lo > 1e-9 * hi {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < q { lo = mid } else { hi = mid }
    }
    hi
}

/// The next event time of a Poisson process, re-armed each time it fires.
#[derive(Clone, Copy, Debug)]
pub struct PoissonTimer {
    rate_per_s: f64,
    next_us: Option<u64>,
}

impl PoissonTimer {
    /// A process at `rate_per_s` whose first event follows `now_us`.
    pub fn start<R: Rng + ?Sized>(rng: &mut R, rate_per_s: f64, now_us: u64) -> Self {
        let next_us = exp_us(rng, rate_per_s).map(|d| now_us + d);
        Self {
            rate_per_s,
            next_us,
        }
    }

    /// When it fires next (`None`: never).
    pub fn next_us(&self) -> Option<u64> {
        self.next_us
    }

    /// True, and re-armed from its own due time (so no drift accumulates), if due at
    /// `now_us`.
    pub fn fire<R: Rng + ?Sized>(&mut self, rng: &mut R, now_us: u64) -> bool {
        match self.next_us {
            Some(t) if t <= now_us => {
                self.next_us = exp_us(rng, self.rate_per_s).map(|d| t + d);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn mean_of_exponential_draws_is_one_over_rate() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let n = 100_000;
        let sum: u64 = (0..n).map(|_| exp_us(&mut rng, 50.0).unwrap()).sum();
        let mean_us = sum as f64 / n as f64;
        // 1/50 s = 20,000 µs; the standard error of the mean is 20,000/sqrt(n) = 63 µs.
        assert!((mean_us - 20_000.0).abs() < 5.0 * 63.0, "mean {mean_us}");
    }

    #[test]
    fn zero_rate_never_fires() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut t = PoissonTimer::start(&mut rng, 0.0, 0);
        assert_eq!(t.next_us(), None);
        assert!(!t.fire(&mut rng, u64::MAX));
    }

    #[test]
    fn timer_rearms_from_its_due_time() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut t = PoissonTimer::start(&mut rng, 10.0, 1_000);
        let first = t.next_us().unwrap();
        assert!(!t.fire(&mut rng, first - 1));
        assert!(t.fire(&mut rng, first + 5_000_000));
        assert!(t.next_us().unwrap() >= first);
    }
}
