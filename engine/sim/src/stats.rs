//! The statistics the simulation tests judge by: Kolmogorov-Smirnov against a known CDF,
//! and the exponential and Erlang (integer-shape Gamma) CDFs.

/// The KS statistic: the largest distance between the empirical CDF of `samples` and `cdf`.
pub fn ks_statistic(samples: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    samples.iter().enumerate().fold(0.0, |d: f64, (i, &x)| {
        let f = cdf(x);
        d.max(f - i as f64 / n).max((i as f64 + 1.0) / n - f)
    })
}

/// The KS critical value at significance 0.001 for `n` samples (asymptotic).
pub fn ks_critical_0_001(n: usize) -> f64 {
    1.949 / (n as f64).sqrt()
}

/// CDF of Exp(`rate`).
pub fn exp_cdf(rate: f64) -> impl Fn(f64) -> f64 {
    move |x| {
        if x <= 0.0 {
            0.0
        } else {
            1.0 - (-rate * x).exp()
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inverts_the_exponential() {
        let median = quantile(exp_cdf(2.0), 0.5);
        assert!((median - std::f64::consts::LN_2 / 2.0).abs() < 1e-8);
    }

    #[test]
    fn erlang_of_shape_one_is_exponential() {
        let (e, g) = (exp_cdf(2.0), erlang_cdf(1, 2.0));
        for x in [0.1, 0.5, 1.0, 3.0] {
            assert!((e(x) - g(x)).abs() < 1e-12);
        }
        assert!((erlang_cdf(3, 1.0)(2.0) - 0.323_323_583_8).abs() < 1e-9);
    }

    #[test]
    fn ks_tells_a_match_from_a_mismatch() {
        let mut uniform: Vec<f64> = (0..1000).map(|i| (i as f64 + 0.5) / 1000.0).collect();
        let d = ks_statistic(&mut uniform, |x| x.clamp(0.0, 1.0));
        assert!(d < ks_critical_0_001(1000));
        let d = ks_statistic(&mut uniform, |x| (x * x).clamp(0.0, 1.0));
        assert!(d > ks_critical_0_001(1000));
    }
}
