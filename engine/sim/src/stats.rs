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

// The Erlang CDF and the quantile search live in the core, which sizes its ack timeouts
// with them.
pub use loopix_core::roles::rate::{erlang_cdf, quantile};

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
