//! The mix node core: a Poisson mix. Unwraps every packet (MAC, then replay check), holds
//! it for the delay its sender chose, forwards it; sends its own loop cover at rate λM
//! through the layers after it, a provider and the layers before it, back to itself, and
//! watches how many return.
//!
//! A node of S shards runs one mix per shard. Each sends λM/S loops, built so that they
//! come back to it (the kernel steers a datagram to a shard by its group element's first
//! bytes; [`crate::pipeline::steering`]): the node sends λM loops in all, and every loop that returns
//! meets the one monitor that knows it.

use std::net::SocketAddr;

use loopix_crypto::{Command, EpochSeed, NodeId, Params, Processor, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::drops::DropReason;
use crate::endpoint::{Endpoint, Transmit};
use crate::formats::codec::Codec;
use crate::formats::payload::{self, Content};
use crate::network::link::{LINK_OVERHEAD, Links};
use crate::network::node_addresses::NodeAddresses;
use crate::network::path_index::{HopOwner, PathIndex, requested_delay_us};
use crate::network::topology::{Role, Topology};
use crate::pipeline::hop::{BATCH, Due, HopEngine, HopStats};
use crate::pipeline::key_ring::EpochStats;
use crate::pipeline::latency_histogram::LatencyHistogram;
use crate::pipeline::steering::owner_shard;
use crate::roles::loops::LoopMonitor;
use crate::roles::rate::PoissonTimer;
use crate::roles::{BuildError, RoleConfig, links_for};

/// Counters of a mix.
#[derive(Clone, Copy, Debug, Default)]
pub struct MixStats {
    pub hop: HopStats,
    pub sent: u64,
    pub loops_sent: u64,
    pub loops_returned: u64,
    /// Loops due that could not be built (no key published for an epoch on their path, or
    /// no free buffer).
    pub loops_failed: u64,
    /// Round trip minus requested delays of the loops that came back, µs.
    pub loop_overhead: LatencyHistogram,
}

/// How long a mix that no adjacent node has reached yet waits before its first loop: a
/// node started with (or before) its network would otherwise count loops sent to peers
/// not yet listening as lost, and signal a blocking attack that is not there.
pub const LOOP_WARMUP_US: u64 = 5_000_000;

/// A mix node. See the module docs.
pub struct Mix<C: Codec = Processor> {
    me: HopOwner,
    layer: usize,
    params: Params,
    engine: HopEngine<C>,
    paths: PathIndex,
    addresses: NodeAddresses,
    links: Links,
    session_key: SessionSecret,
    shard: usize,
    shards: usize,
    rng: ChaCha20Rng,
    loop_timer: Option<PoissonTimer>,
    /// When this core first ran, and whether an adjacent node has reached it since: loops
    /// start once the network answers (see [`LOOP_WARMUP_US`]).
    started_us: Option<u64>,
    heard_from_network: bool,
    lambda_loop_per_s: f64,
    loops: LoopMonitor,
    path: Vec<loopix_crypto::Hop>,
    sent: u64,
    loops_failed: u64,
}

impl<C: Codec> Mix<C> {
    /// A mix as `topology` describes node `config.id` (see [`crate::roles::build`]).
    pub fn new(topology: &Topology, config: RoleConfig) -> Result<Self, BuildError> {
        let id = config.id;
        let node = topology.node(id).ok_or(BuildError::NotInTopology(id))?;
        let Role::Mix { layer } = node.role else {
            return Err(BuildError::WrongRole(id));
        };
        let (epoch_seed, session_key) = config.keys.into_node(id)?;
        let params = topology.network.params;
        let paths = PathIndex::new(topology);
        let me = paths.node(node.id).ok_or(BuildError::NotInTopology(id))?;
        let engine = HopEngine::new(
            epoch_seed,
            topology.network.epochs,
            params,
            config.limits.within(&topology.network),
            config.seed,
        )
        .map_err(BuildError::Wheel)?;
        let links = links_for::<C>(topology, id, &session_key, config.shard)?;
        Ok(Self {
            me,
            layer: usize::from(layer) - 1,
            params,
            engine,
            paths,
            addresses: NodeAddresses::new(topology),
            links,
            session_key,
            shard: config.shard,
            shards: config.shards,
            rng: ChaCha20Rng::from_seed(config.seed),
            loop_timer: None,
            started_us: None,
            heard_from_network: false,
            // The node sends λM loops in all, a share from each shard.
            lambda_loop_per_s: topology.network.lambda_mix_loop_per_s / config.shards as f64,
            loops: LoopMonitor::new(config.loop_window, config.loop_grace_us),
            path: Vec::with_capacity(loopix_crypto::MAX_HOPS),
            sent: 0,
            loops_failed: 0,
        })
    }

    /// Its links in: each node it takes datagrams from, and when one last verified.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Counters.
    pub fn stats(&self) -> MixStats {
        MixStats {
            hop: *self.engine.stats(),
            sent: self.sent,
            loops_sent: self.loops.sent_total,
            loops_returned: self.loops.returned_total,
            loops_failed: self.loops_failed,
            loop_overhead: self.loops.overhead,
        }
    }

    /// Takes a re-read topology (new epoch keys of other nodes) and key seed; a key in use
    /// that did not change keeps its replay filter (see [`HopEngine::replace_seed`]).
    pub fn reload(&mut self, topology: &Topology, epoch_seed: EpochSeed) {
        self.paths = PathIndex::new(topology);
        self.addresses = NodeAddresses::new(topology);
        match links_for::<C>(topology, self.me.id, &self.session_key, self.shard) {
            Ok(mut links) => {
                links.keep_heard(&self.links);
                self.links = links;
            }
            // The runtime checked the topology before handing it over; keep the old links.
            Err(e) => debug_assert!(false, "reload with unusable links: {e}"),
        }
        if let Some(me) = self.paths.node(self.me.id) {
            self.me = me;
        }
        self.engine.replace_seed(epoch_seed);
    }

    /// The keys in use, by phase, with their replay filters' state.
    pub fn epochs(&self) -> [Option<EpochStats>; 2] {
        self.engine.epochs()
    }

    /// The hop pipeline: keys in use, journal, restore.
    pub fn engine(&mut self) -> &mut HopEngine<C> {
        &mut self.engine
    }

    /// Whether loops may start by `now_us`: once an adjacent node has reached this mix,
    /// or [`LOOP_WARMUP_US`] after it started, whichever comes first.
    fn loops_may_start(&mut self, now_us: u64) -> bool {
        let started = *self.started_us.get_or_insert(now_us);
        self.heard_from_network || now_us >= started + LOOP_WARMUP_US
    }

    /// Packets held now: the Poisson mix's pool (λ/µ on average, by Lemma 1).
    pub fn pool_size(&self) -> usize {
        self.engine.pending()
    }

    /// Fraction of recent loops that came back (see [`LoopMonitor`]).
    pub fn loop_return_fraction(&self, now_us: u64) -> Option<f64> {
        self.loops.return_fraction(now_us)
    }

    /// Handles a batch of datagrams with their source addresses (as a receive batch brings
    /// them): each link checked, the packets unwrapped together through the crypto batch
    /// API.
    pub fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        for chunk in datagrams.chunks(BATCH) {
            let mut packets: [&[u8]; BATCH] = [&[]; BATCH];
            let mut n = 0;
            for &(from, d) in chunk {
                match self.open_link(now_us, from, d) {
                    Ok(packet) => {
                        packets[n] = packet;
                        n += 1;
                        self.heard_from_network = true;
                    }
                    Err(reason) => self.engine.refuse(reason),
                }
            }
            self.unwrap_batch(now_us, &packets[..n]);
        }
    }

    /// The packet in a datagram from `from`, if it came over an authenticated link.
    fn open_link<'a>(
        &mut self,
        now_us: u64,
        from: SocketAddr,
        d: &'a [u8],
    ) -> Result<&'a [u8], DropReason> {
        let packet_len = self.params.packet_len();
        if d.len() != packet_len + LINK_OVERHEAD {
            return Err(DropReason::Malformed);
        }
        let node = self
            .addresses
            .node_at(&from)
            .ok_or(DropReason::UnknownPeer)?;
        self.links.open(now_us, node, d)?;
        Ok(&d[..packet_len])
    }

    fn unwrap_batch(&mut self, now_us: u64, packets: &[&[u8]]) {
        let (params, loops, links) = (&self.params, &mut self.loops, &self.links);
        let route = |command| match command {
            Command::Relay { next, .. } if links.sends_to(next) => Ok(Due::Send(next)),
            Command::Relay { .. } => Err(DropReason::NotAdjacent),
            _ => Err(DropReason::UnexpectedCommand),
        };
        let on_end = |command, packet: &[u8]| match (
            command,
            params.payload(packet).and_then(payload::read),
        ) {
            (Command::LoopReturn, Some(Content::Loop { nonce }))
                if loops.returned(nonce, now_us) =>
            {
                Ok(())
            }
            _ => Err(DropReason::UnexpectedCommand),
        };
        self.engine.receive_batch(now_us, packets, route, on_end);
    }

    /// Readies the held packets due within `ahead_us` of now, at most half a slot (see
    /// [`HopEngine::release_ahead`]); unlike [`Endpoint::handle_timeout`] it fires no loop
    /// timer.
    pub fn release_ahead(&mut self, now_us: u64, ahead_us: u64) {
        self.engine.release_ahead(now_us, ahead_us);
    }

    fn send_loop(&mut self, now_us: u64) {
        let first =
            self.paths
                .mix_loop_path(&mut self.rng, now_us, self.me, self.layer, &mut self.path);
        let nonce = self.rng.next_u64();
        let mut body = [0u8; 16];
        payload::write_loop(&mut body, nonce);
        let (params, path, rng) = (&self.params, &self.path, &mut self.rng);
        let (shard, shards) = (self.shard, self.shards);
        // Built so that it comes back to this shard, which alone knows its nonce.
        let mine = |head: &[u8]| owner_shard(head, shards) == shard;
        let built = first.is_ok_and(|first| {
            self.engine.send_own(now_us, first, |buf| {
                let built = if shards > 1 {
                    C::build_into_steered(params, path, &body, rng, buf, &mine)
                } else {
                    C::build_into(params, path, &body, rng, buf)
                };
                built.is_ok()
            })
        });
        self.loops_failed += u64::from(!built);
        if built {
            self.loops
                .sent(nonce, now_us, requested_delay_us(&self.path));
        }
    }
}

impl<C: Codec> Endpoint for Mix<C> {
    fn id(&self) -> NodeId {
        self.me.id
    }

    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]) {
        Mix::handle_datagrams(self, now_us, &[(from, bytes)]);
    }

    fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        Mix::handle_datagrams(self, now_us, datagrams);
    }

    fn handle_timeout(&mut self, now_us: u64) {
        // Packets that waited to fill a run of lanes and are due now.
        self.unwrap_batch(now_us, &[]);
        self.engine.handle_timeout(now_us);
        if self.loop_timer.is_none() && !self.loops_may_start(now_us) {
            return;
        }
        let timer = self.loop_timer.get_or_insert_with(|| {
            PoissonTimer::start(&mut self.rng, self.lambda_loop_per_s, now_us)
        });
        let mut due = 0;
        while timer.fire(&mut self.rng, now_us) {
            due += 1;
        }
        for _ in 0..due {
            self.send_loop(now_us);
        }
    }

    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let (due, index) = self.engine.next_ready(now_us)?;
            let (Due::Send(to) | Due::Store(to)) = due;
            let Some(addr) = self.addresses.address(to) else {
                self.engine.release(index);
                self.engine.count_drop(DropReason::Unroutable);
                continue;
            };
            let packet = self.engine.packet(index);
            let len = packet.len() + LINK_OVERHEAD;
            buf[..packet.len()].copy_from_slice(packet);
            self.engine.release(index);
            if let Err(reason) = self.links.seal(now_us, to, &mut buf[..len]) {
                self.engine.count_drop(reason);
                continue;
            }
            self.sent += 1;
            return Some(Transmit { to: addr, len });
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        let loop_at = match &self.loop_timer {
            None => self.started_us.map_or(Some(0), |s| {
                Some(if self.heard_from_network {
                    0
                } else {
                    s + LOOP_WARMUP_US
                })
            }),
            Some(t) => t.next_us(),
        };
        [self.engine.poll_timeout(), loop_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn max_datagram_len(&self) -> usize {
        self.params.packet_len() + LINK_OVERHEAD
    }

    fn held(&self) -> usize {
        self.pool_size()
    }

    fn release_ahead(&mut self, now_us: u64, ahead_us: u64) {
        Mix::release_ahead(self, now_us, ahead_us);
    }

    crate::endpoint::node_driver_methods!();
}
