//! `loopix sim network`: the paper's §4.3 experiment. A whole network (the node code in
//! the [`Sim`]) with `senders` clients; two of them, S0 and S1, are the challenge senders.
//! Every client queues one message per time unit (1 s of virtual time) to a random
//! client; S0 and S1 only after a burn-in in which the others communicate. A global
//! passive adversary watches every packet on the wire and keeps, for each mix and
//! provider, the pool model of [`super::pool_model`] extended to labels: the probability
//! that a message inside came from S0 and from S1. A packet from S0 carries (1, 0), one
//! from S1 (0, 1), one from any other client (0, 0); a node's output carries its pool's
//! mixture. For each packet a last-layer mix hands to a provider (where it leaves the mix
//! network for its receiver), the adversary reads off p0 and p1; for packets that
//! are S0's or S1's payload (the run's ground truth: the trace id of each packet a
//! challenger sent at the instant it logged a payload fragment) we report ε = |ln(p0/p1)| and whether the
//! adversary's guess (the larger of p0, p1) is right.
//!
//! The adversary counts every datagram of packet size as a pool message: it cannot tell
//! payload from cover, nor a delivery from a loop relayed through a provider. Poll traffic
//! between clients and providers is not mixed and is left out. Links have no latency, so
//! the wire log's order is the order of arrivals.

use std::collections::{BTreeMap, HashMap};

use loopix_core::formats::codec::Codec;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::roles::client::ClientEvent;
use loopix_core::session::FrameLayout;
use loopix_crypto::NodeId;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::network::{FIRST_CLIENT, FIRST_PROVIDER, NetworkSpec, generate};
use crate::sim::{LinkModel, Sim, WireRecord};

/// One experiment. Rates are per time unit (1 s of virtual time).
#[derive(Clone, Copy, Debug)]
pub struct NetworkConfig {
    pub layers: u8,
    pub mixes_per_layer: u32,
    pub providers: u32,
    pub senders: u32,
    pub mu: f64,
    pub lambda_payload: f64,
    /// Client loop, client drop and mix loop rate, each.
    pub cover: f64,
    pub burn_in_units: u64,
    pub measure_units: u64,
    pub seed: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            layers: 3,
            mixes_per_layer: 2,
            providers: 2,
            senders: 100,
            mu: 1.0,
            lambda_payload: 2.0,
            cover: 1.0,
            burn_in_units: 2500,
            measure_units: 500,
            seed: 1,
        }
    }
}

/// What one experiment measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NetworkResult {
    pub mu: f64,
    pub cover: f64,
    pub lambda_payload: f64,
    pub layers: u8,
    pub mixes_per_layer: u32,
    pub senders: u32,
    /// Challenge packets seen leaving the last layer after the burn-in.
    pub challenge_packets: u64,
    /// ε = |ln(p0/p1)| over those packets (0: the adversary cannot tell S0 from S1).
    pub epsilon_mean: f64,
    pub epsilon_median: f64,
    pub epsilon_p95: f64,
    /// Fraction of those packets the adversary attributes to the right sender.
    pub guess_accuracy: f64,
    /// 2 × accuracy − 1: 0 is a coin toss, 1 always right.
    pub advantage: f64,
    /// Sorted ε values, for plots (not in CSV).
    #[serde(skip)]
    pub epsilons: Vec<f64>,
    pub codec: &'static str,
}

/// Why an experiment cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkError(pub String);

/// The pool of one node as the adversary models it.
#[derive(Clone, Copy, Debug, Default)]
struct LabelPool {
    mass: f64,
    from: [f64; 2],
}

impl LabelPool {
    fn input(&mut self, label: [f64; 2]) {
        let m = self.mass;
        for (f, l) in self.from.iter_mut().zip(label) {
            *f = (m * *f + l) / (m + 1.0);
        }
        self.mass += 1.0;
    }

    fn output(&mut self) -> [f64; 2] {
        self.mass = (self.mass - 1.0).max(0.0);
        self.from
    }
}

/// The adversary and the ground truth, fed the wire log in order.
struct Observer {
    challengers: [NodeId; 2],
    last_layer: std::ops::RangeInclusive<u64>,
    packet_len: usize,
    pools: BTreeMap<NodeId, LabelPool>,
    origin: HashMap<u64, usize>,
    /// The packets each client sent at each instant (from its events, in this chunk):
    /// their trace ids and whether each was a message fragment. The wire shows only equal
    /// session frames, polls among them; this is the experiment's ground truth of which
    /// frames carry packets, so the adversary is as strong as one that could tell.
    packets_sent: HashMap<(NodeId, u64), Vec<(u64, bool)>>,
    frame_len: usize,
    measure_from_us: u64,
    signed: Vec<f64>,
}

impl Observer {
    fn is_client(a: NodeId) -> bool {
        a.0 >= FIRST_CLIENT
    }

    fn see(&mut self, r: &WireRecord) {
        if Self::is_client(r.to) {
            return;
        }
        let label = if Self::is_client(r.from) {
            if r.len != self.frame_len {
                return;
            }
            // A frame with no packet sent at its instant is a poll.
            let Some((trace, real)) = self
                .packets_sent
                .get_mut(&(r.from, r.at_us))
                .and_then(Vec::pop)
            else {
                return;
            };
            let which = self.challengers.iter().position(|&c| c == r.from);
            if let (Some(i), true) = (which, real) {
                self.origin.insert(trace, i);
            }
            let mut l = [0.0; 2];
            if let Some(i) = which {
                l[i] = 1.0;
            }
            l
        } else if r.len == self.packet_len {
            self.pools.entry(r.from).or_default().output()
        } else {
            return;
        };
        let leaving = self.last_layer.contains(&r.from.0) && r.to.0 >= FIRST_PROVIDER;
        if leaving && r.at_us >= self.measure_from_us {
            self.judge(r.trace, label);
        }
        self.pools.entry(r.to).or_default().input(label);
    }

    fn judge(&mut self, trace: Option<u64>, [p0, p1]: [f64; 2]) {
        let Some(&truth) = trace.and_then(|t| self.origin.get(&t)) else {
            return;
        };
        // A probability of exactly 0 happens only before any challenge packet could reach
        // a pool; bound the ratio rather than report infinity.
        const FLOOR: f64 = 1e-12;
        let (right, wrong) = if truth == 0 { (p0, p1) } else { (p1, p0) };
        self.signed.push((right.max(FLOOR) / wrong.max(FLOOR)).ln());
    }
}

/// Runs one experiment over codec `C`. Ground truth needs a codec with trace ids
/// ([`loopix_core::formats::codec::Plaintext`]); over Sphinx the run is the same but nothing can be
/// judged, so `challenge_packets` is 0.
pub fn run<C: Codec>(cfg: &NetworkConfig) -> Result<NetworkResult, NetworkError> {
    if cfg.senders < 3 {
        return Err(NetworkError("need at least 3 senders".into()));
    }
    let spec = NetworkSpec {
        layers: cfg.layers,
        mixes_per_layer: cfg.mixes_per_layer,
        providers: cfg.providers,
        clients: cfg.senders,
        payload_bytes: 64,
        mu_per_s: cfg.mu,
        lambda_payload_per_s: cfg.lambda_payload,
        lambda_loop_per_s: cfg.cover,
        lambda_drop_per_s: cfg.cover,
        lambda_mix_loop_per_s: cfg.cover,
        poll_size: 2,
        poll_rate_per_s: 0.5,
        // Keys published for every epoch the run crosses (a time unit is a second).
        published_epochs: ((cfg.burn_in_units + cfg.measure_units) / 1200 + 2) as u32,
        ..NetworkSpec::default()
    };
    let net = generate(&spec, cfg.seed).map_err(|e| NetworkError(e.to_string()))?;
    let net_params = net.topology.network.params;
    // What a node sends another: the packet and its link trailer.
    let packet_len = net_params.packet_len() + loopix_core::network::link::LINK_OVERHEAD;
    let units = cfg.burn_in_units + cfg.measure_units;
    let limits = HopLimits {
        pool_packets: 1 << 14,
        replay_tags: replay_capacity(cfg, units),
        ..HopLimits::default()
    };
    let mut sim = Sim::<C>::with_codec(net, cfg.seed, LinkModel::default(), limits);
    sim.record_wire(true);
    let first_last = u64::from(cfg.layers - 1) * u64::from(cfg.mixes_per_layer) + 1;
    let mut observer = Observer {
        challengers: [NodeId(FIRST_CLIENT), NodeId(FIRST_CLIENT + 1)],
        last_layer: first_last..=first_last + u64::from(cfg.mixes_per_layer) - 1,
        packet_len,
        frame_len: FrameLayout::new(&net_params, spec.poll_size).frame_len(),
        pools: BTreeMap::new(),
        origin: HashMap::new(),
        packets_sent: HashMap::new(),
        measure_from_us: cfg.burn_in_units * 1_000_000,
        signed: Vec::new(),
    };
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed ^ 0x6e65_7477);
    for unit in 0..units {
        let challengers_on = unit >= cfg.burn_in_units;
        for c in 0..u64::from(cfg.senders) {
            if c < 2 && !challengers_on {
                continue;
            }
            let to = other_client(&mut rng, c, cfg.senders);
            sim.with_client(NodeId(FIRST_CLIENT + c), |client| {
                let _ = client.send(to, b"m");
            });
        }
        sim.run_until((unit + 1) * 1_000_000);
        observer.packets_sent.clear();
        for (id, e) in sim.log.client_events.drain(..) {
            if let ClientEvent::PacketSent { trace, real, at_us } = e {
                observer
                    .packets_sent
                    .entry((id, at_us))
                    .or_default()
                    .push((trace, real));
            }
        }
        for r in std::mem::take(&mut sim.log.wire) {
            observer.see(&r);
        }
        sim.log.provider_events.clear();
    }
    Ok(summarise::<C>(cfg, observer.signed))
}

/// Tags a node must remember: every packet it may see in the run, with room to spare. A
/// provider sees its clients' packets going in and the packets delivered to them (and
/// drops ending there, and mix loops passing); a mix its layer's share of everything.
fn replay_capacity(cfg: &NetworkConfig, units: u64) -> usize {
    let client_rate = f64::from(cfg.senders) * (cfg.lambda_payload + 2.0 * cfg.cover);
    let mix_loops = f64::from(cfg.layers) * f64::from(cfg.mixes_per_layer) * cfg.cover;
    let provider = (2.0 * client_rate + mix_loops) / f64::from(cfg.providers.max(1));
    let mix = client_rate / f64::from(cfg.mixes_per_layer.max(1)) + mix_loops;
    (provider.max(mix) * units as f64 * 1.3) as usize + 4096
}

fn other_client(rng: &mut ChaCha20Rng, me: u64, clients: u32) -> NodeId {
    let n = u64::from(clients);
    let pick = (me + 1 + rng.next_u64() % (n - 1)) % n;
    NodeId(FIRST_CLIENT + pick)
}

fn summarise<C: Codec>(cfg: &NetworkConfig, signed: Vec<f64>) -> NetworkResult {
    let n = signed.len();
    let right = signed.iter().filter(|&&s| s > 0.0).count() as f64
        + 0.5 * signed.iter().filter(|&&s| s == 0.0).count() as f64;
    let mut eps: Vec<f64> = signed.iter().map(|s| s.abs()).collect();
    eps.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if eps.is_empty() {
            0.0
        } else {
            eps[((eps.len() - 1) as f64 * q).round() as usize]
        }
    };
    let accuracy = if n == 0 { 0.5 } else { right / n as f64 };
    NetworkResult {
        mu: cfg.mu,
        cover: cfg.cover,
        lambda_payload: cfg.lambda_payload,
        layers: cfg.layers,
        mixes_per_layer: cfg.mixes_per_layer,
        senders: cfg.senders,
        challenge_packets: n as u64,
        epsilon_mean: eps.iter().sum::<f64>() / n.max(1) as f64,
        epsilon_median: quantile(0.5),
        epsilon_p95: quantile(0.95),
        guess_accuracy: accuracy,
        advantage: 2.0 * accuracy - 1.0,
        epsilons: eps,
        codec: C::NAME,
    }
}
