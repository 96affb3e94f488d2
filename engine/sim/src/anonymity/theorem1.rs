//! `loopix sim theorem1`: the observation o(n,k,l) of paper §4.1.3, run many times on a
//! real mix. n packets enter together; once n-k have left, l more enter; the next packet
//! out is classified as one of the first n or one of the later l. Theorem 1 says each of
//! the first n is that packet with probability k/(n(l+k)) and each later one with
//! 1/(l+k), whatever the arrival times, because the delays are memoryless.

use loopix_core::formats::codec::Codec;
use serde::Serialize;

use super::mix_harness::{HarnessConfig, MixHarness, Observed};

#[derive(Clone, Copy, Debug)]
pub struct Theorem1Config {
    pub n: u64,
    pub k: u64,
    pub l: u64,
    pub trials: u64,
    pub mu: f64,
    pub seed: u64,
}

/// Why a scenario cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError(pub &'static str);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Theorem1Config {
    pub fn check(&self) -> Result<(), ScenarioError> {
        if self.n == 0 || self.k == 0 || self.k > self.n {
            return Err(ScenarioError("need 0 < k <= n"));
        }
        if self.trials == 0 || self.mu.is_nan() || self.mu <= 0.0 {
            return Err(ScenarioError("need trials > 0 and mu > 0"));
        }
        Ok(())
    }
}

/// Per-message probabilities, measured and as the theorem gives them, with the standard
/// error of each estimate (binomial over trials, divided by the group size).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Theorem1Result {
    pub n: u64,
    pub k: u64,
    pub l: u64,
    pub trials: u64,
    pub mu: f64,
    pub p_first_empirical: f64,
    pub p_first_formula: f64,
    pub p_first_stderr: f64,
    pub p_later_empirical: f64,
    pub p_later_formula: f64,
    pub p_later_stderr: f64,
    pub codec: &'static str,
}

/// Runs the trials over codec `C`.
pub fn run<C: Codec>(cfg: &Theorem1Config) -> Result<Theorem1Result, ScenarioError> {
    cfg.check()?;
    let mut mix = MixHarness::<C>::new(HarnessConfig {
        mu: cfg.mu,
        lambda_mix: 0.0,
        max_packets: ((cfg.n + cfg.l) * cfg.trials) as usize,
        seed: cfg.seed,
    });
    let mut first_hits = 0u64;
    let mut next_index = 0u64;
    for _ in 0..cfg.trials {
        let base = next_index;
        let now = mix.now_us();
        for i in 0..cfg.n {
            mix.inject(now, base + i);
        }
        for _ in 0..cfg.n - cfg.k {
            mix.step();
        }
        let now = mix.now_us();
        for i in 0..cfg.l {
            mix.inject(now, base + cfg.n + i);
        }
        if let Some(Observed::Real(i)) = mix.step()
            && i < base + cfg.n
        {
            first_hits += 1;
        }
        while mix.step().is_some() {}
        next_index = base + cfg.n + cfg.l;
    }
    Ok(summarise::<C>(cfg, first_hits))
}

fn summarise<C: Codec>(cfg: &Theorem1Config, first_hits: u64) -> Theorem1Result {
    let (n, k, l, t) = (cfg.n as f64, cfg.k as f64, cfg.l as f64, cfg.trials as f64);
    let first = first_hits as f64 / t;
    let stderr = (first * (1.0 - first) / t).sqrt();
    let per = |group: f64, size: f64| if size > 0.0 { group / size } else { 0.0 };
    Theorem1Result {
        n: cfg.n,
        k: cfg.k,
        l: cfg.l,
        trials: cfg.trials,
        mu: cfg.mu,
        p_first_empirical: per(first, n),
        p_first_formula: k / (n * (l + k)),
        p_first_stderr: per(stderr, n),
        p_later_empirical: per(1.0 - first, l),
        p_later_formula: if cfg.l > 0 { 1.0 / (l + k) } else { 0.0 },
        p_later_stderr: per(stderr, l),
        codec: C::NAME,
    }
}
