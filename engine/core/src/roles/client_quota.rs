//! How fast a provider lets each of its clients send: a token bucket per client for
//! packets and one for polls, filled at twice the rate the topology gives an honest client
//! (λP + λL + λD for packets, the poll rate for polls), holding at most [`BURST`] tokens.
//! An honest client's Poisson stream almost never empties it (over one second at λ = 6/s it
//! would take 33 sends where 6 are expected); a client sending faster, to fill the mixes'
//! pools or other clients' inboxes or to draw N answers per poll, is refused past its
//! share, and each refusal is counted (`rate_limited`). Only authenticated clients get a
//! bucket, so the table is bounded by the topology.

use std::collections::HashMap;

use loopix_crypto::NodeId;

use crate::network::topology::Network;

/// How many times its honest rate a client may send, sustained.
pub const TOLERANCE: f64 = 2.0;
/// Tokens a bucket holds at most: the burst a client may send at once.
pub const BURST: f64 = 20.0;

/// What a client is sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    Packet,
    Poll,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_us: u64,
}

impl Bucket {
    fn full(now_us: u64) -> Self {
        Self {
            tokens: BURST,
            at_us: now_us,
        }
    }

    fn take(&mut self, now_us: u64, rate_per_s: f64) -> bool {
        let elapsed_s = now_us.saturating_sub(self.at_us) as f64 / 1e6;
        self.tokens = (self.tokens + elapsed_s * rate_per_s).min(BURST);
        self.at_us = self.at_us.max(now_us);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The provider's buckets. See the module docs.
#[derive(Debug)]
pub struct ClientQuota {
    packet_rate_per_s: f64,
    poll_rate_per_s: f64,
    buckets: HashMap<(NodeId, bool), Bucket>,
}

impl ClientQuota {
    /// Quotas for clients of `network`.
    pub fn new(network: &Network) -> Self {
        let honest =
            network.lambda_payload_per_s + network.lambda_loop_per_s + network.lambda_drop_per_s;
        Self {
            packet_rate_per_s: TOLERANCE * honest,
            poll_rate_per_s: TOLERANCE * network.poll_rate_per_s,
            buckets: HashMap::new(),
        }
    }

    /// Whether `client` may send one more of `what` at `now_us` (and takes its token).
    pub fn allow(&mut self, client: NodeId, what: Spend, now_us: u64) -> bool {
        let rate = match what {
            Spend::Packet => self.packet_rate_per_s,
            Spend::Poll => self.poll_rate_per_s,
        };
        self.buckets
            .entry((client, what == Spend::Poll))
            .or_insert_with(|| Bucket::full(now_us))
            .take(now_us, rate)
    }

    /// Forgets clients no longer served.
    pub fn retain(&mut self, served: impl Fn(NodeId) -> bool) {
        self.buckets.retain(|(c, _), _| served(*c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::epoch::EpochSchedule;

    fn network(lambda: f64, poll: f64) -> Network {
        Network {
            params: loopix_crypto::Params::default(),
            layers: 1,
            mu_per_s: 10.0,
            lambda_payload_per_s: lambda,
            lambda_loop_per_s: 0.0,
            lambda_drop_per_s: 0.0,
            lambda_mix_loop_per_s: 0.0,
            poll_size: 4,
            poll_rate_per_s: poll,
            epochs: EpochSchedule::new(0, 1_200_000_000, 60_000_000).unwrap(),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut q = ClientQuota::new(&network(5.0, 1.0));
        let c = NodeId(7);
        let passed = (0..100)
            .filter(|_| q.allow(c, Spend::Packet, 1_000_000))
            .count();
        assert_eq!(
            passed, BURST as usize,
            "a burst, then nothing at the same instant"
        );
        // One second later: twice the honest rate of tokens, no more.
        let later = (0..100)
            .filter(|_| q.allow(c, Spend::Packet, 2_000_000))
            .count();
        assert_eq!(later, 10);
        // Polls have their own bucket; other clients theirs.
        assert!(q.allow(c, Spend::Poll, 2_000_000));
        assert!(q.allow(NodeId(8), Spend::Packet, 2_000_000));
    }

    #[test]
    fn an_honest_poisson_sender_is_never_refused() {
        use crate::roles::rate::exp_us;
        use rand_chacha::ChaCha20Rng;
        use rand_core::SeedableRng;
        let lambda = 6.0;
        let mut q = ClientQuota::new(&network(lambda, 1.0));
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut t = 0u64;
        // An hour of sends at λ.
        for _ in 0..(3600.0 * lambda) as usize {
            t += exp_us(&mut rng, lambda).unwrap();
            assert!(q.allow(NodeId(1), Spend::Packet, t), "refused at {t} µs");
        }
    }
}
