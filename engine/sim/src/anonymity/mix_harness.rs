//! One real [`Mix`] in virtual time, for single-mix experiments: the harness plays the
//! senders (builds packets whose mix hop carries an Exp(µ) delay, as clients do) and the
//! provider after the mix (unwraps what the mix sends with the provider's key, and holds
//! the mix's loop cover for the delay written in it before handing it back). Everything
//! that decides timing inside the mix (unwrap, wheel, loop cover timer) is the node's code.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use loopix_core::endpoint::Endpoint;
use loopix_core::formats::codec::Codec;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::pipeline::timing_wheel::WheelConfig;
use loopix_core::roles::mix::Mix;
use loopix_core::roles::rate::exp_us;
use loopix_core::roles::{RoleConfig, links_for};
use loopix_crypto::{Command, Hop, NodeId, Params, PublicKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::network::{FIRST_PROVIDER, NetworkSpec, generate};

/// What the adversary sees happen at the mix, one datagram at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// One of the mix's own loops came back in.
    LoopReturned,
    /// A sender's packet left; its index as given to [`MixHarness::inject`].
    Real(u64),
    /// A loop the mix made itself left.
    LoopSent,
}

/// Parameters of a harness. Rates are per second of virtual time.
#[derive(Clone, Copy, Debug)]
pub struct HarnessConfig {
    pub mu: f64,
    /// The mix's own loop rate λM (0: no loops).
    pub lambda_mix: f64,
    /// Packets the mix's replay set must hold: every packet of the run.
    pub max_packets: usize,
    pub seed: u64,
}

/// See the module docs.
pub struct MixHarness<C: Codec> {
    mix: Mix<C>,
    mix_key: PublicKey,
    /// The network's delay horizon: the most a sender asks a hop to hold a packet.
    delay_horizon_us: u64,
    provider_key: PublicKey,
    provider_codec: C,
    params: Params,
    rng: ChaCha20Rng,
    mu: f64,
    now_us: u64,
    /// The mix's loops held at the provider: (due time, sequence number, bytes). The
    /// sequence number orders equal due times, so the bytes are never compared.
    returns: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    seq: u64,
    buf: Vec<u8>,
    /// Where the provider listens: the mix sends every packet there.
    provider_addr: std::net::SocketAddr,
    /// The provider's end of its link with the mix: what it sends the mix is sealed.
    provider_links: Links,
    pool_integral: f64,
    integral_from_us: u64,
}

const MIX: NodeId = NodeId(1);
/// The one epoch a run lives in (35,000 years): the mix's timer for the end of it is not
/// an event of the experiment, and "nothing pending" ignores it.
const EPOCH_S: u64 = 1 << 40;
const PROVIDER: NodeId = NodeId(FIRST_PROVIDER);

impl<C: Codec> MixHarness<C> {
    pub fn new(config: HarnessConfig) -> Self {
        let spec = NetworkSpec {
            layers: 1,
            mixes_per_layer: 1,
            providers: 1,
            clients: 1,
            payload_bytes: 64,
            mu_per_s: config.mu,
            lambda_mix_loop_per_s: config.lambda_mix,
            // One key for the whole run, however long: this harness is about mixing.
            epoch_s: EPOCH_S,
            epoch_grace_s: 0,
            published_epochs: 1,
            ..NetworkSpec::default()
        };
        let mut net = generate(&spec, config.seed).expect("a one-mix network is valid");
        let peer = |id| {
            net.topology
                .node(id)
                .and_then(|n| n.epoch_keys.get(0))
                .expect("generated")
        };
        let (mix_key, provider_key) = (peer(MIX), peer(PROVIDER));
        let provider_addr = net.topology.node(PROVIDER).expect("generated").address;
        let params = net.topology.network.params;
        let mut seeds = ChaCha20Rng::seed_from_u64(config.seed ^ 0x6d69_7868);
        let mut seed = [0u8; 32];
        seeds.fill_bytes(&mut seed);
        let limits = HopLimits {
            pool_packets: 1 << 16,
            replay_tags: config.max_packets.max(1024),
            // 100 µs slots against delays of ~1 s: the wheel's own rounding is 1e-4 of a
            // mean delay; finer slots only make the wheel walk more empty slots.
            wheel: WheelConfig {
                slot_us: 100,
                horizon_us: 1 << 34,
            },
            journal_tags: 0,
            max_delay_us: u64::MAX,
            gather_us: loopix_core::pipeline::hop::DEFAULT_GATHER_US,
        };
        let delay_horizon_us = net.topology.network.delay_horizon_us();
        let core = RoleConfig::node(
            MIX,
            net.keys.nodes.remove(&MIX).expect("generated"),
            net.keys.sessions.remove(&MIX).expect("generated"),
        );
        let core = RoleConfig {
            loop_window: 1,
            loop_grace_us: u64::MAX / 4,
            ..core.seeded(seed).limited(limits)
        };
        let mix = Mix::new(&net.topology, core).expect("node 1 is a mix");
        let provider_secret = net.keys.nodes[&PROVIDER].secret_key(0).expect("epoch 0");
        let provider_session = &net.keys.sessions[&PROVIDER];
        let provider_links = links_for::<C>(&net.topology, PROVIDER, provider_session, 0)
            .expect("the provider's links");
        Self {
            mix,
            mix_key,
            provider_key,
            provider_addr,
            delay_horizon_us,
            provider_codec: C::new(provider_secret, params),
            provider_links,
            params,
            rng: seeds,
            mu: config.mu,
            now_us: 0,
            returns: BinaryHeap::new(),
            seq: 0,
            buf: vec![0; params.packet_len() + LINK_OVERHEAD],
            pool_integral: 0.0,
            integral_from_us: 0,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Packets the mix holds now (its pool).
    pub fn pool_size(&self) -> usize {
        self.mix.pool_size()
    }

    /// Restarts the time-average of the pool size from now.
    pub fn reset_pool_average(&mut self) {
        self.pool_integral = 0.0;
        self.integral_from_us = self.now_us;
    }

    /// Time-average of the pool size since [`Self::reset_pool_average`].
    pub fn mean_pool(&self) -> f64 {
        let span = self.now_us.saturating_sub(self.integral_from_us);
        if span == 0 {
            return self.pool_size() as f64;
        }
        self.pool_integral / span as f64
    }

    fn advance_to(&mut self, t_us: u64) {
        let t = t_us.max(self.now_us);
        self.pool_integral += self.pool_size() as f64 * (t - self.now_us) as f64;
        self.now_us = t;
    }

    /// A sender's packet (index `index`, delay Exp(µ) at the mix) enters the mix at
    /// `at_us` (not before now).
    pub fn inject(&mut self, at_us: u64, index: u64) {
        self.advance_to(at_us);
        // Capped like every sender's draw (probability 1e-9), or the mix would drop it.
        let delay = exp_us(&mut self.rng, self.mu)
            .unwrap_or(0)
            .min(self.delay_horizon_us);
        let path = [
            Hop::new(
                self.mix_key,
                Command::Relay {
                    next: PROVIDER,
                    delay_us: delay.min(u64::from(u32::MAX)) as u32,
                },
            ),
            Hop::new(
                self.provider_key,
                Command::Deliver {
                    client: NodeId(index),
                    delay_us: 0,
                },
            ),
            Hop::new(self.provider_key, Command::Final),
        ];
        let len = self.params.packet_len();
        C::build_into(
            &self.params,
            &path,
            &[],
            &mut self.rng,
            &mut self.buf[..len],
        )
        .expect("a three-hop path is valid");
        self.send_to_mix();
    }

    /// Hands the packet in `buf` to the mix, over the provider's link.
    fn send_to_mix(&mut self) {
        self.provider_links
            .seal(self.now_us, MIX, &mut self.buf)
            .expect("the provider sends to layer 1");
        self.mix
            .handle_datagram(self.now_us, self.provider_addr, &self.buf);
    }

    /// When the next thing happens inside (a packet or loop due, a loop coming back);
    /// `None` when nothing ever will.
    pub fn next_event_us(&self) -> Option<u64> {
        let back = self.returns.peek().map(|Reverse((t, _, _))| *t);
        [self.mix.poll_timeout(), back]
            .into_iter()
            .flatten()
            .filter(|&t| t < EPOCH_S * 1_000_000)
            .min()
            .map(|t| t.max(self.now_us))
    }

    /// Runs to the next observable datagram and returns it; `None` if nothing is
    /// pending at all (possible only without loop cover).
    pub fn step(&mut self) -> Option<Observed> {
        self.step_before(u64::MAX)
    }

    /// [`Self::step`], but `None` (time left where it was, at most `limit_us`) when
    /// nothing observable happens up to `limit_us`: an arrival due then is not overtaken.
    pub fn step_before(&mut self, limit_us: u64) -> Option<Observed> {
        loop {
            if let Some(t) = self.mix.poll_transmit(self.now_us, &mut self.buf) {
                return Some(self.leave(t.to));
            }
            let t = self.next_event_us().filter(|&t| t <= limit_us)?;
            self.advance_to(t);
            if let Some(Reverse((due, _, _))) = self.returns.peek()
                && *due <= self.now_us
                && let Some(Reverse((_, _, bytes))) = self.returns.pop()
            {
                self.buf[..bytes.len()].copy_from_slice(&bytes);
                self.send_to_mix();
                return Some(Observed::LoopReturned);
            }
            self.mix.handle_timeout(self.now_us);
        }
    }

    /// A datagram the mix sent: a real packet (the provider hop delivers to its index) or
    /// the mix's loop (the provider hop relays it back after its delay).
    fn leave(&mut self, to: std::net::SocketAddr) -> Observed {
        debug_assert_eq!(to, self.provider_addr);
        let len = self.params.packet_len();
        match self.provider_codec.unwrap(&mut self.buf[..len], |_| false) {
            Ok(p) => match p.command {
                Command::Deliver { client, .. } => Observed::Real(client.0),
                Command::Relay { delay_us, .. } => {
                    self.seq += 1;
                    let due = self.now_us + u64::from(delay_us);
                    self.returns
                        .push(Reverse((due, self.seq, self.buf[..len].to_vec())));
                    Observed::LoopSent
                }
                _ => Observed::LoopSent,
            },
            Err(_) => Observed::LoopSent,
        }
    }
}
