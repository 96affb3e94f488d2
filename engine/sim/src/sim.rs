//! The discrete-event simulator: virtual time, one seed for everything, an event queue and
//! a link model, driving the real core objects exactly as the runtime will (events in,
//! polls out until empty, one timer per node re-armed to its next deadline).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use loopix_core::endpoint::{RoleEvent, Transmit};
use loopix_core::formats::codec::Codec;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::{EpochKeys, Topology};
use loopix_core::pipeline::hop::BATCH;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::pipeline::key_ring::JournalRecord;
use loopix_core::pipeline::replay::FilterKey;
use loopix_core::pki::take::take_document;
use loopix_core::roles::acks::AckConfig;
use loopix_core::roles::client::{Client, ClientEvent};
use loopix_core::roles::inbox::{InboxLimits, MemoryInbox};
use loopix_core::roles::mix::Mix;
use loopix_core::roles::provider::{Provider, ProviderEvent};
use loopix_core::roles::rate::{exp_us, uniform};
use loopix_core::roles::{AnyRole, RoleConfig, build, links_for};
use loopix_crypto::{EpochSeed, NodeId, Processor, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::committing_inbox::CommittingInbox;
use crate::network::Generated;

/// How datagrams travel: a fixed latency plus optional exponential jitter, independent
/// loss, and nodes whose traffic is blocked entirely (an (n-1)/blocking attacker).
#[derive(Clone, Debug, Default)]
pub struct LinkModel {
    pub latency_us: u64,
    pub jitter_mean_us: u64,
    pub loss: f64,
    pub blocked: BTreeSet<NodeId>,
}

/// Any role, as the simulator holds it (built by [`loopix_core::roles::build`], as
/// `loopix node` builds its cores).
pub type SimRole<C = Processor> = AnyRole<CommittingInbox, C>;

/// One datagram as the wire saw it, its ends named by the parties at those addresses
/// ([`UNKNOWN`] for an address nobody holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireRecord {
    pub at_us: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub len: usize,
    /// The packet's [`Codec::trace_id`]: the same on every hop (ground truth for
    /// experiments; `None` over Sphinx).
    pub trace: Option<u64>,
}

/// What the simulator observed.
#[derive(Default)]
pub struct Log {
    /// Every datagram sent, if [`Sim::record_wire`] is on.
    pub wire: Vec<WireRecord>,
    pub client_events: Vec<(NodeId, ClientEvent)>,
    pub provider_events: Vec<(NodeId, ProviderEvent)>,
    /// Datagrams the link lost (loss or blocking).
    pub lost: u64,
    /// Datagrams to an address nobody has.
    pub undeliverable: u64,
    /// Provider store commits that failed (each kept for the next flush).
    pub failed_commits: u64,
    /// Datagrams an attacker saw: those sent to its sockets ([`Sim::listen`]) and copies
    /// of those on links it taps ([`Sim::tap`]).
    pub captured: Vec<Captured>,
}

/// A datagram an attacker saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// How a [`WireRecord`] names an address nobody in the simulation holds.
pub const UNKNOWN: NodeId = NodeId(u64::MAX);

/// Where a party that is not a topology node (a client, an attacker) sends from:
/// 10.x.y.z:7000, from its id.
pub fn host_address(id: NodeId) -> SocketAddr {
    let b = (id.0 as u32).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, b[1], b[2], b[3]), 7000))
}

enum EventKind {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: NodeId,
    },
}

struct Event {
    at_us: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(o.at_us, o.seq))
    }
}

struct Hosted<C: Codec> {
    node: SimRole<C>,
    armed_us: Option<u64>,
}

/// The shard index of a test's injections ([`Sim::inject`]).
const INJECTOR_SHARD: usize = 127;

/// Steps a node may take at one instant before the simulator calls it a livelock.
const MAX_STEPS_PER_INSTANT: usize = 1_000_000;

/// The simulator. See the module docs.
pub struct Sim<C: Codec = Processor> {
    seed: u64,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Event>>,
    nodes: BTreeMap<NodeId, Hosted<C>>,
    /// Every party's address: topology nodes where the topology says, others by
    /// [`host_address`].
    addresses: BTreeMap<NodeId, SocketAddr>,
    by_address: BTreeMap<SocketAddr, NodeId>,
    listeners: BTreeSet<SocketAddr>,
    taps: BTreeSet<SocketAddr>,
    /// Each node's links, as a test's hand holds them ([`Sim::inject`]): a shard index of
    /// their own, so their counters never meet the node's.
    injectors: BTreeMap<NodeId, Links>,
    packet_len: usize,
    pub link: LinkModel,
    rng: ChaCha20Rng,
    buf: Vec<u8>,
    record_wire: bool,
    /// With `record_wire`: only datagrams from the parties this accepts.
    wire_from: Option<fn(NodeId) -> bool>,
    pub log: Log,
    /// What a node is rebuilt from when it restarts, and what it kept on disk.
    topology: Topology,
    recipes: BTreeMap<NodeId, Recipe>,
    disks: BTreeMap<NodeId, Disk>,
    limits: HopLimits,
    options: SimOptions,
    /// Whether journal records reach the disk (off only to show a test catches it).
    pub journal_writes: bool,
    /// The last datagrams delivered to each node, up to [`Sim::keep_recent`] of them.
    recent: BTreeMap<NodeId, VecDeque<(SocketAddr, Vec<u8>)>>,
    keep_recent: usize,
    /// How far each party's clock is from the simulation's, µs ([`Sim::set_clock_offset`]).
    clock_offsets: BTreeMap<NodeId, i64>,
}

/// A node's keys, as its key file holds them: what a restart builds it from again.
#[derive(Clone)]
struct Recipe {
    epoch_seed: EpochSeed,
    session_key: SessionSecret,
}

/// What a node keeps across a crash, as `loopix node` keeps it on disk: its replay journal
/// (each key in use: the filter's hash key and every hash recorded) and a provider's
/// inbox store. Nothing else survives.
#[derive(Default)]
struct Disk {
    journal: BTreeMap<u64, (FilterKey, Vec<u64>)>,
    inbox: Option<MemoryInbox>,
}

impl Sim {
    /// Every node and client of `net` over Sphinx, with all randomness derived from `seed`.
    pub fn new(net: Generated, seed: u64, link: LinkModel, limits: HopLimits) -> Self {
        Self::with_codec(net, seed, link, limits)
    }

    /// [`Sim::new`] with `options` for the providers' inboxes and the clients' acks.
    pub fn with_options(
        net: Generated,
        seed: u64,
        link: LinkModel,
        limits: HopLimits,
        options: SimOptions,
    ) -> Self {
        Self::build(net, seed, link, limits, options)
    }
}

/// What a simulation's roles are built with beyond the topology and the hop limits.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    /// Providers' inboxes.
    pub inbox: InboxLimits,
    /// Clients' acknowledgements and retransmission.
    pub acks: AckConfig,
    /// Share of a provider's store commits that fail (kept for the next flush, as the
    /// durable store does).
    pub commit_failure_rate: f64,
    /// What a node spends on each received packet, µs, as its shard measures it: before a
    /// batch of n, it releases what falls due within half of n times this, as a shard
    /// does, so that it leaves with the batch's sends (0: never early).
    pub cost_per_packet_us: u64,
}

/// Unless a test asks for others: inboxes roomier than a node's default (the simulated
/// clients poll at their own pace), and no acks.
impl Default for SimOptions {
    fn default() -> Self {
        Self {
            inbox: InboxLimits {
                per_client: 100_000,
                total: 10_000_000,
                ttl_us: loopix_core::roles::inbox::DEFAULT_INBOX_TTL_US,
            },
            acks: AckConfig::OFF,
            commit_failure_rate: 0.0,
            cost_per_packet_us: 0,
        }
    }
}

impl<C: Codec> Sim<C> {
    /// [`Sim::new`] over any packet codec (see [`loopix_core::formats::codec`]).
    pub fn with_codec(net: Generated, seed: u64, link: LinkModel, limits: HopLimits) -> Self {
        Self::build(net, seed, link, limits, SimOptions::default())
    }

    /// [`Sim::with_options`] over any packet codec.
    pub fn with_codec_options(
        net: Generated,
        seed: u64,
        link: LinkModel,
        limits: HopLimits,
        options: SimOptions,
    ) -> Self {
        Self::build(net, seed, link, limits, options)
    }

    fn build(
        net: Generated,
        seed: u64,
        link: LinkModel,
        limits: HopLimits,
        options: SimOptions,
    ) -> Self {
        let mut sim = Self {
            seed,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            addresses: BTreeMap::new(),
            by_address: BTreeMap::new(),
            listeners: BTreeSet::new(),
            taps: BTreeSet::new(),
            injectors: BTreeMap::new(),
            packet_len: net.topology.network.params.packet_len(),
            link,
            rng: ChaCha20Rng::seed_from_u64(seed),
            buf: Vec::new(),
            record_wire: false,
            wire_from: None,
            log: Log::default(),
            topology: net.topology.clone(),
            recipes: BTreeMap::new(),
            disks: BTreeMap::new(),
            limits,
            options,
            journal_writes: true,
            recent: BTreeMap::new(),
            keep_recent: 0,
            clock_offsets: BTreeMap::new(),
        };
        let Generated {
            topology, mut keys, ..
        } = net;
        for n in &topology.nodes {
            sim.addresses.insert(n.id, n.address);
            sim.by_address.insert(n.address, n.id);
        }
        for c in &topology.clients {
            sim.addresses.insert(c.id, host_address(c.id));
            sim.by_address.insert(host_address(c.id), c.id);
        }
        for n in &topology.nodes {
            let injector = keys
                .sessions
                .get(&n.id)
                .and_then(|k| links_for::<C>(&topology, n.id, k, INJECTOR_SHARD).ok());
            if let Some(links) = injector {
                sim.injectors.insert(n.id, links);
            }
        }
        for n in &topology.nodes {
            let Some(epoch_seed) = keys.nodes.remove(&n.id) else {
                continue;
            };
            let seed = sim.derive_seed();
            let Some(session_key) = keys.sessions.remove(&n.id) else {
                continue;
            };
            let recipe = Recipe {
                epoch_seed,
                session_key,
            };
            let store = sim.fresh_store();
            if let Ok(node) = sim.build_node(n.id, &recipe, seed, store) {
                sim.add(n.id, node);
                sim.recipes.insert(n.id, recipe);
            }
        }
        for c in &topology.clients {
            let Some(key) = keys.clients.remove(&c.id) else {
                continue;
            };
            let config = RoleConfig {
                acks: options.acks,
                ..RoleConfig::client(c.id, key).seeded(sim.derive_seed())
            };
            // Clients keep no store: the closure is never called.
            if let Ok(client) = build(&topology, config, || {
                CommittingInbox::new(InboxLimits::default(), 0.0, 0)
            }) {
                sim.add(c.id, client);
            }
        }
        let ids: Vec<NodeId> = sim.nodes.keys().copied().collect();
        for id in ids {
            sim.step(id);
        }
        sim
    }

    /// A node built as `loopix node` builds it, from its keys, with `inbox` as its store.
    fn build_node(
        &self,
        id: NodeId,
        recipe: &Recipe,
        seed: [u8; 32],
        inbox: CommittingInbox,
    ) -> Result<SimRole<C>, loopix_core::roles::BuildError> {
        let config = RoleConfig::node(id, recipe.epoch_seed.clone(), recipe.session_key.clone())
            .seeded(seed)
            .limited(self.limits)
            .inbox_ttl(self.options.inbox.ttl_us);
        build(&self.topology, config, || inbox)
    }

    /// Kills node `id` now, as SIGKILL would: everything it held in memory (its pool, its
    /// sessions, its links' windows) is gone; its disk stays. Datagrams to it are lost
    /// until it restarts. False if it is not a running node.
    pub fn crash(&mut self, id: NodeId) -> bool {
        if !self.recipes.contains_key(&id) {
            return false;
        }
        let Some(mut hosted) = self.nodes.remove(&id) else {
            return false;
        };
        if let AnyRole::Provider(p) = &mut hosted.node {
            let store = std::mem::replace(
                p.inbox(),
                CommittingInbox::new(InboxLimits::default(), 0.0, 0),
            );
            self.disks.entry(id).or_default().inbox = Some(store.into_committed());
        }
        true
    }

    /// Starts a crashed node again from its keys and its disk: its replay filters refilled
    /// from its journal (keys no longer in use are dropped, as the node deletes their
    /// files), a provider on its inbox store.
    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        if self.nodes.contains_key(&id) {
            return Err(format!("node {} is running", id.0));
        }
        let recipe = self
            .recipes
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("node {} was never a node here", id.0))?;
        let seed = self.derive_seed();
        let store_seed = self.rng.next_u64();
        let disk = self.disks.entry(id).or_default();
        let committed = disk
            .inbox
            .take()
            .unwrap_or_else(|| self.options.inbox.memory());
        let inbox = CommittingInbox::over(
            committed,
            self.options.inbox,
            self.options.commit_failure_rate,
            store_seed,
        );
        let journal = std::mem::take(&mut disk.journal);
        let mut node = self
            .build_node(id, &recipe, seed, inbox)
            .map_err(|e| e.to_string())?;
        let now = self.local_now(id);
        let mut kept = BTreeMap::new();
        for (epoch, (key, hashes)) in journal {
            let restored =
                node.endpoint()
                    .restore_journal(now, epoch, key, &mut hashes.iter().copied());
            if restored.is_ok() {
                kept.insert(epoch, (key, hashes));
            }
        }
        self.disks.entry(id).or_default().journal = kept;
        self.add(id, node);
        self.step(id);
        Ok(())
    }

    /// Runs party `id`'s clock `offset_us` ahead of the simulation's (behind if negative):
    /// every time it is handed and every deadline it asks for are on its own clock, as on
    /// a host whose clock disagrees with the others'.
    pub fn set_clock_offset(&mut self, id: NodeId, offset_us: i64) {
        self.clock_offsets.insert(id, offset_us);
    }

    /// Party `id`'s clock now.
    fn local_now(&self, id: NodeId) -> u64 {
        let offset = self.clock_offsets.get(&id).copied().unwrap_or(0);
        self.now_us.saturating_add_signed(offset)
    }

    /// The network's document as an authority would publish it, with every node's keys for
    /// epochs `first..=last` (from the keys each node holds).
    pub fn document(&self, first: u64, last: u64) -> Topology {
        let mut t = self.topology.clone();
        for n in &mut t.nodes {
            if let Some(r) = self.recipes.get(&n.id) {
                let keys = (first..=last)
                    .map_while(|e| r.epoch_seed.secret_key(e).map(|k| k.public_key()))
                    .collect();
                n.epoch_keys = EpochKeys::new(first, keys);
            }
        }
        t
    }

    /// Hands every running node and client a new network document at the current time, as
    /// following the authorities does: each node takes it only if the core's rule says so
    /// ([`loopix_core::pki::take::take_document`]), clients take it as it is. Nodes started
    /// later build from it. Returns who refused it and why.
    pub fn publish(&mut self, fresh: Topology) -> Vec<(NodeId, String)> {
        let mut refused = Vec::new();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let now = self.local_now(id);
            let verdict = match self.recipes.get(&id) {
                Some(r) => take_document(
                    &self.topology,
                    &fresh,
                    id,
                    &r.epoch_seed,
                    r.session_key.public(),
                    now,
                )
                .map(|_| Some(r.epoch_seed.clone()))
                .map_err(|e| e.to_string()),
                None => Ok(None),
            };
            let taken = verdict.and_then(|seed| {
                let hosted = self.nodes.get_mut(&id).ok_or("not running")?;
                hosted
                    .node
                    .endpoint()
                    .reload(&fresh, seed)
                    .map_err(|e| e.to_string())
            });
            match taken {
                Ok(()) => self.step(id),
                Err(e) => refused.push((id, e)),
            }
        }
        self.topology = fresh;
        refused
    }

    /// Whether node or client `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Keeps the last `n` datagrams delivered to every node (what an attacker on its link
    /// could replay): [`Sim::recent`].
    pub fn keep_recent(&mut self, n: usize) {
        self.keep_recent = n;
    }

    /// The last datagrams delivered to `id` (oldest first), with their sources.
    pub fn recent(&self, id: NodeId) -> impl Iterator<Item = &(SocketAddr, Vec<u8>)> + '_ {
        self.recent.get(&id).into_iter().flatten()
    }

    /// Writes what node `id`'s hop asks to persist to its disk, as its journal does.
    fn persist(&mut self, id: NodeId) {
        if !self.recipes.contains_key(&id) {
            return;
        }
        let Some(hosted) = self.nodes.get_mut(&id) else {
            return;
        };
        let disk = self.disks.entry(id).or_default();
        let writes = self.journal_writes;
        hosted
            .node
            .endpoint()
            .drain_journal(&mut |record| match record {
                JournalRecord::Opened { epoch, key } => {
                    disk.journal.insert(epoch, (key, Vec::new()));
                }
                JournalRecord::Tags { epoch, hashes } => {
                    if writes && let Some((_, kept)) = disk.journal.get_mut(&epoch) {
                        kept.extend_from_slice(hashes);
                    }
                }
                JournalRecord::Retired { epoch } => {
                    disk.journal.remove(&epoch);
                }
            });
    }

    /// A provider's store as the options make it, its failures drawn from this run's seed.
    fn fresh_store(&mut self) -> CommittingInbox {
        let seed = self.rng.next_u64();
        CommittingInbox::new(self.options.inbox, self.options.commit_failure_rate, seed)
    }

    fn derive_seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    fn add(&mut self, id: NodeId, mut node: SimRole<C>) {
        let len = node.endpoint().max_datagram_len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.nodes.insert(
            id,
            Hosted {
                node,
                armed_us: None,
            },
        );
    }

    /// The seed this run derives everything from; print it with any failure.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time now.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Keeps a [`WireRecord`] of every datagram from now on.
    pub fn record_wire(&mut self, on: bool) {
        self.record_wire = on;
        self.wire_from = None;
    }

    /// Keeps a [`WireRecord`] of every datagram sent by a party `from` accepts (a large
    /// run keeps only what it measures, e.g. the clients' departures).
    pub fn record_wire_from(&mut self, from: fn(NodeId) -> bool) {
        self.record_wire = true;
        self.wire_from = Some(from);
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&SimRole<C>> {
        self.nodes.get(&id).map(|s| &s.node)
    }

    /// A mix.
    pub fn mix(&self, id: NodeId) -> Option<&Mix<C>> {
        match self.node(id) {
            Some(AnyRole::Mix(m)) => Some(m),
            _ => None,
        }
    }

    /// A provider.
    pub fn provider(&self, id: NodeId) -> Option<&Provider<CommittingInbox, C>> {
        match self.node(id) {
            Some(AnyRole::Provider(p)) => Some(p),
            _ => None,
        }
    }

    /// A client.
    pub fn client(&self, id: NodeId) -> Option<&Client<C>> {
        match self.node(id) {
            Some(AnyRole::Client(c)) => Some(c),
            _ => None,
        }
    }

    /// Ids of every node and client, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// Lets `f` act on a client (e.g. queue a message), then lets the client react.
    pub fn with_client<T>(&mut self, id: NodeId, f: impl FnOnce(&mut Client<C>) -> T) -> Option<T> {
        let out = match self.nodes.get_mut(&id).map(|s| &mut s.node) {
            Some(AnyRole::Client(c)) => Some(f(c)),
            _ => None,
        };
        self.step(id);
        out
    }

    /// Where party `id` sends from and listens: its topology address, or for anyone
    /// else (clients, attackers) [`host_address`].
    pub fn address_of(&self, id: NodeId) -> SocketAddr {
        self.addresses
            .get(&id)
            .copied()
            .unwrap_or_else(|| host_address(id))
    }

    /// Puts a datagram on the wire from `from`'s address to `to` now, as a test would. A
    /// bare packet from a node goes over that node's link to `to` when it has one (as the
    /// node would send it); anything else goes as it is.
    pub fn inject(&mut self, from: NodeId, to: NodeId, mut bytes: Vec<u8>) {
        let now = self.now_us;
        if bytes.len() == self.packet_len
            && let Some(links) = self.injectors.get_mut(&from)
            && links.sends_to(to)
        {
            bytes.resize(self.packet_len + LINK_OVERHEAD, 0);
            if links.seal(now, to, &mut bytes).is_err() {
                bytes.truncate(self.packet_len);
            }
        }
        let from = self.address_of(from);
        self.inject_from(from, to, bytes);
    }

    /// Puts a datagram on the wire to `to` with any source address at all, as an
    /// attacker forging the source would.
    pub fn inject_from(&mut self, from: SocketAddr, to: NodeId, bytes: Vec<u8>) {
        let to = self.address_of(to);
        self.push(self.now_us, EventKind::Datagram { from, to, bytes });
    }

    /// An attacker's socket at `at`: every datagram sent to it from now on is kept in
    /// [`Log::captured`] rather than lost.
    pub fn listen(&mut self, at: SocketAddr) {
        self.listeners.insert(at);
    }

    /// An on-path attacker in front of `at`: a copy of every datagram delivered there from
    /// now on is kept in [`Log::captured`].
    pub fn tap(&mut self, at: SocketAddr) {
        self.taps.insert(at);
    }

    /// Runs every event up to and including `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse(e)) = self.queue.peek() {
            if e.at_us > until_us {
                break;
            }
            let Some(Reverse(e)) = self.queue.pop() else {
                break;
            };
            self.now_us = e.at_us;
            match e.kind {
                EventKind::Datagram { from, to, bytes } => {
                    // Arrivals at one node at one instant go in as one batch, as a shard's
                    // receive batch would bring them.
                    let mut batch = vec![(from, bytes)];
                    while batch.len() < BATCH
                        && let Some(Reverse(next)) = self.queue.peek()
                        && next.at_us == e.at_us
                        && matches!(&next.kind, EventKind::Datagram { to: t, .. } if *t == to)
                        && let Some(Reverse(Event {
                            kind: EventKind::Datagram { from, bytes, .. },
                            ..
                        })) = self.queue.pop()
                    {
                        batch.push((from, bytes));
                    }
                    self.deliver(to, batch);
                }
                EventKind::Timer { node } => {
                    let due = self.nodes.get(&node).and_then(|s| s.armed_us) == Some(e.at_us);
                    if due {
                        self.step(node);
                    }
                }
            }
        }
        self.now_us = self.now_us.max(until_us);
    }

    fn deliver(&mut self, to: SocketAddr, batch: Vec<(SocketAddr, Vec<u8>)>) {
        if self.listeners.contains(&to) || self.taps.contains(&to) {
            for (from, bytes) in &batch {
                self.log.captured.push(Captured {
                    from: *from,
                    to,
                    bytes: bytes.clone(),
                });
            }
        }
        if self.listeners.contains(&to) {
            return;
        }
        let id = self.by_address.get(&to).copied();
        if self.keep_recent > 0
            && let Some(id) = id
            && self.recipes.contains_key(&id)
            && self.nodes.contains_key(&id)
        {
            let kept = self.recent.entry(id).or_default();
            for d in &batch {
                if kept.len() == self.keep_recent {
                    kept.pop_front();
                }
                kept.push_back(d.clone());
            }
        }
        let datagrams: Vec<(SocketAddr, &[u8])> =
            batch.iter().map(|(f, b)| (*f, b.as_slice())).collect();
        let now = id.map_or(self.now_us, |id| self.local_now(id));
        let ahead_us = self.options.cost_per_packet_us * datagrams.len() as u64 / 2;
        match id.and_then(|id| self.nodes.get_mut(&id)) {
            Some(hosted) => {
                let ep = hosted.node.endpoint();
                if ahead_us > 0 {
                    ep.release_ahead(now, ahead_us);
                }
                ep.handle_datagrams(now, &datagrams);
            }
            None => {
                self.log.undeliverable += batch.len() as u64;
                return;
            }
        }
        if let Some(id) = id {
            self.step(id);
        }
    }

    /// Drains a node's transmits and events and re-arms its timer, handling every timeout
    /// that is already due.
    fn step(&mut self, id: NodeId) {
        let now = self.local_now(id);
        for _ in 0..MAX_STEPS_PER_INSTANT {
            let Some(hosted) = self.nodes.get_mut(&id) else {
                return;
            };
            let ep = hosted.node.endpoint();
            let mut sent = Vec::new();
            while let Some(t) = ep.poll_transmit(now, &mut self.buf) {
                sent.push((t, self.buf[..t.len].to_vec()));
            }
            if ep.flush_storage().is_err() {
                self.log.failed_commits += 1;
            }
            let next = ep.poll_timeout();
            self.drain_events(id);
            self.persist(id);
            for (t, bytes) in sent {
                self.route(id, t, bytes);
            }
            let Some(hosted) = self.nodes.get_mut(&id) else {
                return;
            };
            match next {
                Some(t) if t <= now => hosted.node.endpoint().handle_timeout(now),
                Some(t) => {
                    // Its clock's deadline, on the simulation's clock.
                    let at =
                        t.saturating_add_signed(-self.clock_offsets.get(&id).copied().unwrap_or(0));
                    if hosted.armed_us != Some(at) {
                        hosted.armed_us = Some(at);
                        self.push(at, EventKind::Timer { node: id });
                    }
                    return;
                }
                None => {
                    hosted.armed_us = None;
                    return;
                }
            }
        }
        panic!(
            "node {id:?} livelocked at {now} µs (simulation seed {})",
            self.seed
        );
    }

    fn drain_events(&mut self, id: NodeId) {
        let Some(hosted) = self.nodes.get_mut(&id) else {
            return;
        };
        while let Some(e) = hosted.node.endpoint().poll_event() {
            match e {
                RoleEvent::Client(e) => self.log.client_events.push((id, e)),
                RoleEvent::Provider(e) => self.log.provider_events.push((id, e)),
            }
        }
    }

    fn route(&mut self, from: NodeId, t: Transmit, bytes: Vec<u8>) {
        let to_id = self.by_address.get(&t.to).copied().unwrap_or(UNKNOWN);
        if self.record_wire && self.wire_from.is_none_or(|keep| keep(from)) {
            self.log.wire.push(WireRecord {
                at_us: self.now_us,
                from,
                to: to_id,
                len: t.len,
                trace: C::trace_id(&bytes),
            });
        }
        let blocked = self.link.blocked.contains(&from) || self.link.blocked.contains(&to_id);
        let lost = self.link.loss > 0.0 && uniform(&mut self.rng) < self.link.loss;
        if blocked || lost {
            self.log.lost += 1;
            return;
        }
        let jitter = exp_us(&mut self.rng, 1e6 / self.link.jitter_mean_us.max(1) as f64)
            .filter(|_| self.link.jitter_mean_us > 0)
            .unwrap_or(0);
        let at = self.now_us + self.link.latency_us + jitter;
        let from = self.address_of(from);
        self.push(
            at,
            EventKind::Datagram {
                from,
                to: t.to,
                bytes,
            },
        );
    }

    fn push(&mut self, at_us: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at_us,
            seq: self.seq,
            kind,
        }));
    }
}

/// A uniform draw in [0, 1).
/// The seed for a test run: `LOOPIX_SIM_SEED` if set, else `default`. Printed, so a failing
/// run's output names the seed that reproduces it.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var("LOOPIX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("simulation seed: {seed} (rerun with LOOPIX_SIM_SEED={seed})");
    seed
}
