//! The adversary's view of one Poisson mix as a pool (paper §3.3, appendix A).
//!
//! By the memoryless property every message in the mix is equally likely to leave next,
//! so an observer who sees all inputs and outputs can describe the mix by one
//! distribution `P` over the inputs it saw (where "a message now inside" came from) and a
//! mass (how many messages are inside). An output is a draw from `P`; it leaves `P`
//! unchanged and lowers the mass. An input with weight `w` makes
//! `P' = (mass·P + w·δ)/(mass + w)`, and because `δ` is new, the Shannon entropy updates
//! in O(1): `H(P') = a·H(P) + h(b)` with `b = w/(mass + w)`, `a = 1 - b` and `h` the
//! binary entropy. No per-message state is kept.
//!
//! Mix loop cover makes the adversary unsure which traffic is real: it knows the rates
//! (λ real in, λM loops out and back) but not which datagram is which. It weighs each
//! input by the chance it is real, `λ/(λ+λM)` (a returning loop never leaves again), and
//! each output by the chance it is a pool message rather than a fresh loop,
//! `µ·mass/(µ·mass + λM)`. The entropy reported for an output is `H(P)`: how uncertain
//! the adversary is about where it came from, if it is a real message. Without loops both
//! weights are 1 and this is the exact pool model.

/// See the module docs.
#[derive(Clone, Debug)]
pub struct PoolAdversary {
    mass: f64,
    entropy_bits: f64,
    input_weight: f64,
    loop_rate: f64,
    mu: f64,
}

impl PoolAdversary {
    /// An observer of a mix fed at `lambda` that sends its own loops at `lambda_mix`
    /// (0: none), with delays Exp(`mu`); all rates in the same unit.
    pub fn new(lambda: f64, lambda_mix: f64, mu: f64) -> Self {
        let loop_rate = lambda_mix.max(0.0);
        Self {
            mass: 0.0,
            entropy_bits: 0.0,
            input_weight: lambda / (lambda + loop_rate),
            loop_rate,
            mu,
        }
    }

    /// A datagram entered the mix.
    pub fn input(&mut self) {
        let w = self.input_weight;
        let b = w / (self.mass + w);
        self.entropy_bits = (1.0 - b) * self.entropy_bits + binary_entropy(b);
        self.mass += w;
    }

    /// A datagram left the mix; returns the entropy of its origin, in bits.
    pub fn output(&mut self) -> f64 {
        let pool_rate = self.mu * self.mass;
        let from_pool = if self.loop_rate > 0.0 {
            pool_rate / (pool_rate + self.loop_rate)
        } else {
            1.0
        };
        self.mass = (self.mass - from_pool).max(0.0);
        self.entropy_bits
    }

    /// The adversary's estimate of how many real messages are inside.
    pub fn mass(&self) -> f64 {
        self.mass
    }

    /// Entropy of `P` now, in bits.
    pub fn entropy_bits(&self) -> f64 {
        self.entropy_bits
    }
}

/// `-b·log2(b) - (1-b)·log2(1-b)`, 0 at the ends.
pub fn binary_entropy(b: f64) -> f64 {
    let term = |p: f64| if p > 0.0 { -p * p.log2() } else { 0.0 };
    term(b) + term(1.0 - b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The incremental update against the distribution written out by hand.
    #[test]
    fn matches_explicit_distributions() {
        let mut a = PoolAdversary::new(1.0, 0.0, 1.0);
        a.input();
        assert_eq!(a.entropy_bits(), 0.0);
        a.input();
        assert!((a.entropy_bits() - 1.0).abs() < 1e-12); // (1/2, 1/2)
        assert!((a.output() - 1.0).abs() < 1e-12);
        a.input(); // (1/4, 1/4, 1/2)
        assert!((a.entropy_bits() - 1.5).abs() < 1e-12);
        assert!((a.mass() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn n_fresh_inputs_give_log2_n() {
        let mut a = PoolAdversary::new(1.0, 0.0, 1.0);
        for _ in 0..64 {
            a.input();
        }
        assert!((a.entropy_bits() - 6.0).abs() < 1e-9);
    }

    /// At equal λ and pool size, loop cover (here λM = λ) spreads `P` over twice as
    /// many inputs: about one bit more.
    #[test]
    fn loops_add_entropy_at_equal_lambda() {
        let (mut plain, mut covered) = (
            PoolAdversary::new(1.0, 0.0, 0.1),
            PoolAdversary::new(1.0, 1.0, 0.1),
        );
        (0..10).for_each(|_| plain.input());
        (0..20).for_each(|_| covered.input());
        for _ in 0..1000 {
            plain.input();
            plain.output();
            covered.input();
            covered.input();
            covered.output();
            covered.output();
        }
        assert!((plain.mass() - 10.0).abs() < 1e-9);
        assert!((covered.mass() - 10.0).abs() < 1.0);
        let gain = covered.entropy_bits() - plain.entropy_bits();
        assert!((0.7..1.2).contains(&gain), "gain {gain}");
    }
}
