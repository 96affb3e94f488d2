//! Acknowledgements and retransmission, the sender's side: every fragment sent with a reply
//! block waits here, under the id its ack will come back with, until the ack comes or its
//! time is up; then it is sent again as a fresh packet (new path, new header, new block:
//! never the same bytes twice), or, out of attempts, given up.
//!
//! How long to wait ([`ack_timeout_us`]): the fragment and its ack each cross a client's
//! provider, every layer and the other provider, so the mixing delays of both ways are the
//! sum of 2·(layers + 2) Exp(µ) draws, a Gamma(2·(layers + 2), µ); then the recipient's
//! poll picks the fragment up, a payload or drop tick of the recipient (rate λP + λD) sends
//! the ack, and the sender's poll picks the ack up. The wait is the sum of the p99 of each
//! of these (the p99 of a sum is smaller: the sum of p99s is a safe bound), plus a second
//! for links and processing. Attempt `a` (from 0) waits that times 2^min(a, 4), so a crash
//! longer than one timeout is ridden out by later attempts.

use std::collections::{BTreeMap, BTreeSet};

use loopix_crypto::NodeId;

use crate::network::topology::Network;
use crate::roles::rate::{erlang_cdf, quantile};

/// How a client asks for acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckConfig {
    /// Sends of one fragment before it is given up; 0: no acks (fragments carry no reply
    /// block, nothing is sent again).
    pub max_attempts: u32,
}

impl AckConfig {
    /// No acknowledgements.
    pub const OFF: Self = Self { max_attempts: 0 };
}

impl Default for AckConfig {
    fn default() -> Self {
        Self::OFF
    }
}

/// The slack for links and processing on top of the mixing and polling delays, µs.
const LINK_SLACK_US: f64 = 1e6;

/// The longest backoff factor: attempt `a` waits the timeout times 2^min(a, 4).
const MAX_BACKOFF_SHIFT: u32 = 4;

/// How long a fragment waits for its ack before it is sent again (see the module docs),
/// µs; `None` when the network's rates cannot bring an ack back (no polling, or no tick to
/// send it in).
pub fn ack_timeout_us(network: &Network) -> Option<u64> {
    let hops = 2 * (usize::from(network.layers) + 2);
    let tick_rate = network.lambda_payload_per_s + network.lambda_drop_per_s;
    if network.poll_rate_per_s <= 0.0 || tick_rate <= 0.0 || network.mu_per_s <= 0.0 {
        return None;
    }
    let p99_exp = |rate: f64| 100f64.ln() / rate * 1e6;
    let mixing = quantile(erlang_cdf(hops as u32, network.mu_per_s), 0.99) * 1e6;
    let waits = 2.0 * p99_exp(network.poll_rate_per_s) + p99_exp(tick_rate);
    Some((mixing + waits + LINK_SLACK_US).ceil() as u64)
}

/// A fragment of a message, as the client queues and resends it.
#[derive(Clone, Debug)]
pub struct Fragment {
    pub recipient: NodeId,
    pub msg_id: u64,
    pub index: u16,
    pub count: u16,
    pub data: Vec<u8>,
    /// Sends so far.
    pub attempts: u32,
}

/// A fragment waiting for its ack, with what opens the ack.
pub struct Pending<O> {
    pub fragment: Fragment,
    pub opener: O,
    pub due_us: u64,
}

/// The fragments waiting for acks, by ack id and by when they are due. Bounded by the
/// client's send buffer (the client counts them with it).
pub struct Unacked<O> {
    by_id: BTreeMap<u64, Pending<O>>,
    by_due: BTreeSet<(u64, u64)>,
    timeout_us: u64,
}

impl<O> Unacked<O> {
    /// Empty, waiting `timeout_us` for a first attempt's ack.
    pub fn new(timeout_us: u64) -> Self {
        Self {
            by_id: BTreeMap::new(),
            by_due: BTreeSet::new(),
            timeout_us,
        }
    }

    /// Fragments waiting.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How long attempt `attempts` (1 for the first send) waits for its ack, µs.
    pub fn wait_us(&self, attempts: u32) -> u64 {
        self.timeout_us << attempts.saturating_sub(1).min(MAX_BACKOFF_SHIFT)
    }

    /// `fragment` was just sent (its `attempts` counted) under `ack_id` at `now_us`.
    pub fn insert(&mut self, ack_id: u64, fragment: Fragment, opener: O, now_us: u64) {
        let due_us = now_us + self.wait_us(fragment.attempts);
        self.by_due.insert((due_us, ack_id));
        self.by_id.insert(
            ack_id,
            Pending {
                fragment,
                opener,
                due_us,
            },
        );
    }

    /// Puts back a fragment taken under `ack_id`, due when it was.
    pub fn put_back(&mut self, ack_id: u64, pending: Pending<O>) {
        self.by_due.insert((pending.due_us, ack_id));
        self.by_id.insert(ack_id, pending);
    }

    /// The fragment waiting under `ack_id`, no longer waiting.
    pub fn take(&mut self, ack_id: u64) -> Option<Pending<O>> {
        let p = self.by_id.remove(&ack_id)?;
        self.by_due.remove(&(p.due_us, ack_id));
        Some(p)
    }

    /// When the next fragment's wait is over.
    pub fn next_due(&self) -> Option<u64> {
        self.by_due.first().map(|&(due, _)| due)
    }

    /// A fragment whose wait is over at `now_us`, no longer waiting.
    pub fn pop_due(&mut self, now_us: u64) -> Option<Pending<O>> {
        let &(due, id) = self.by_due.first()?;
        if due > now_us {
            return None;
        }
        self.take(id)
    }

    /// Whether a fragment of `msg_id` still waits.
    pub fn has_message(&self, msg_id: u64) -> bool {
        self.by_id.values().any(|p| p.fragment.msg_id == msg_id)
    }

    /// Stops waiting for every fragment of `msg_id`; returns how many there were.
    pub fn forget_message(&mut self, msg_id: u64) -> usize {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, p)| p.fragment.msg_id == msg_id)
            .map(|(&id, _)| id)
            .collect();
        for id in &ids {
            self.take(*id);
        }
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_quantiles_match_known_values() {
        let p99 = |k, rate| quantile(erlang_cdf(k, rate), 0.99);
        // Exp(1): the p99 is ln 100. Gamma(10, 1): 18.7831 (tables); the rate scales it.
        assert!((p99(1, 1.0) - 100f64.ln()).abs() < 1e-6);
        assert!((p99(10, 1.0) - 18.7831).abs() < 1e-3);
        assert!((p99(10, 20.0) - 18.7831 / 20.0).abs() < 1e-4);
    }

    fn fragment(msg_id: u64, index: u16) -> Fragment {
        Fragment {
            recipient: NodeId(9),
            msg_id,
            index,
            count: 2,
            data: vec![index as u8],
            attempts: 1,
        }
    }

    #[test]
    fn fragments_fall_due_in_order_and_later_attempts_wait_longer() {
        let mut u = Unacked::new(100);
        u.insert(7, fragment(1, 0), (), 1_000);
        u.insert(8, fragment(1, 1), (), 1_050);
        let mut third = fragment(2, 0);
        third.attempts = 3;
        u.insert(9, third, (), 1_000);
        assert_eq!(u.wait_us(3), 400);
        assert_eq!(u.wait_us(9), 1_600, "backoff capped at 2^4");
        assert_eq!(u.next_due(), Some(1_100));
        assert!(u.pop_due(1_099).is_none());
        assert_eq!(u.pop_due(1_100).unwrap().fragment.index, 0);
        assert!(u.has_message(1) && u.has_message(2));
        assert_eq!(u.take(8).unwrap().fragment.index, 1);
        assert!(u.take(8).is_none(), "taken once");
        assert_eq!(u.forget_message(2), 1);
        assert!(u.is_empty() && u.next_due().is_none());
    }

    #[test]
    fn the_timeout_covers_both_ways_and_both_polls() {
        let network = Network {
            params: loopix_crypto::Params::default(),
            layers: 3,
            mu_per_s: 20.0,
            lambda_payload_per_s: 2.0,
            lambda_loop_per_s: 2.0,
            lambda_drop_per_s: 2.0,
            lambda_mix_loop_per_s: 0.0,
            poll_size: 4,
            poll_rate_per_s: 5.0,
            epochs: crate::network::epoch::EpochSchedule::new(0, 3_600_000_000, 60_000_000)
                .unwrap(),
        };
        let t = ack_timeout_us(&network).unwrap() as f64 / 1e6;
        // Gamma(10, 20) p99 0.94 s + 2 x 0.92 s (polls) + 1.15 s (tick) + 1 s.
        assert!((t - 4.93).abs() < 0.02, "{t}");
        let no_polls = Network {
            poll_rate_per_s: 0.0,
            ..network
        };
        assert_eq!(ack_timeout_us(&no_polls), None);
    }
}
