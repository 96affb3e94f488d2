//! The provider core: its clients' door in and out.
//!
//! Clients talk to it only inside sessions ([`crate::session`]): a client is who its
//! session's handshake proved, never who a datagram says, and a datagram that does not
//! authenticate changes nothing and draws no answer. Bare packets are taken only from node
//! addresses of the topology.
//!
//! Ingress: packets from its registered clients (in their sessions), each client held to
//! twice its honest rate ([`crate::roles::client_quota`]), with per-client accounting, unwrapped
//! and held like at a mix, then sent into layer 1.
//! Egress: packets to deliver are held for their delay, then stored in the client's
//! bounded inbox, where it waits at most the inbox TTL; drop cover is absorbed; mix loops passing through are relayed. Every
//! poll is answered with exactly N items, padded with dummies that have a valid group
//! element and random bytes, so they look like stored packets. A stored packet leaves the
//! inbox only when the client acknowledges it in a later poll. Every answer is built when
//! its poll arrives and sent a fixed delay after it ([`crate::roles::answer_queue`]), so how long
//! an answer takes says nothing about what it holds.
//!
//! On many shards: each client has a home shard ([`home_shard`]) that holds its inbox,
//! its quota and its sessions, so nothing a client's packets, polls or answers touch is
//! shared between shards. Its session frames reach that shard because the session's index
//! steers there ([`crate::session::frame::receiver_shard`]). What reaches another shard
//! is handed over ([`Handoff`]): a packet to store whose delay ended on the shard its α
//! steered it to, and a handshake read on the shard its initiation reached.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use loopix_crypto::{Command, EpochSeed, NodeId, Params, Processor};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::drops::DropReason;
use crate::endpoint::{Endpoint, Transmit};
use crate::formats::codec::{Codec, DUMMY_HEAD_LEN};
use crate::formats::wire::{self, ITEM_HEADER_LEN};
use crate::network::link::{LINK_OVERHEAD, Links};
use crate::network::node_addresses::NodeAddresses;
use crate::network::topology::{Role, Topology};
use crate::pipeline::hop::{BATCH, Due, HopEngine, HopStats};
use crate::pipeline::key_ring::EpochStats;
use crate::pipeline::steering::home_shard;
use crate::roles::answer_queue::{AnswerQueue, POLL_ANSWER_DELAY_US};
use crate::roles::client_quota::{ClientQuota, Spend};
use crate::roles::inbox::{InboxStore, StoreRefused};
use crate::roles::{BuildError, RoleConfig, links_for};
use crate::session::responder::Accepted;
use crate::session::{FrameKind, FrameLayout, Received, Sessions};

/// Counters of a provider.
#[derive(Clone, Debug, Default)]
pub struct ProviderStats {
    pub hop: HopStats,
    pub sent: u64,
    pub stored: u64,
    pub drop_cover_absorbed: u64,
    pub polls_answered: u64,
    pub dummies_sent: u64,
    /// Handshakes answered (sessions started).
    pub sessions_started: u64,
    /// Initiations answered with a cookie (under load, from an address not yet proven).
    pub cookies_sent: u64,
    /// Answer items not sent: their session ended first (the client rekeyed long ago or
    /// stopped).
    pub answers_unsent: u64,
    /// Polls refused because the answers already held filled the answer queue.
    pub polls_refused: u64,
    /// Answer frames sent more than the answer delay after their release time (the
    /// provider was behind): their timing may reflect more than the poll's.
    pub answers_late: u64,
    /// Send ticks a client had nothing it could build for.
    pub idle_frames: u64,
    /// Packets accepted from each registered client.
    pub per_client_in: BTreeMap<NodeId, u64>,
}

/// Work one shard of a provider hands another ([`Endpoint::poll_handoff`]).
#[derive(Debug)]
pub enum Handoff {
    /// A packet to store in `client`'s inbox, its delay over.
    Deliver { client: NodeId, packet: Box<[u8]> },
    /// A handshake of a client whose home the receiving shard is.
    Session(Box<Accepted>),
}

/// Dummies' heads made at once: a Sphinx dummy's group element costs a scalar
/// multiplication and, made alone, a field inversion; made 32 at a time, one inversion
/// serves them all.
const DUMMY_BATCH: usize = 32;

/// Where a received packet is: in its datagram (from a node's link), or in its frame's
/// plaintext slot of the batch (from a client's session).
#[derive(Clone, Copy)]
enum Found {
    InDatagram,
    InPlain,
}

/// Where a client's packet starts in its frame's plaintext (after the kind byte).
const PACKET_AT: usize = 1;

/// Handoffs waiting for the driver before further ones are refused (`handoff_full`).
const MAX_HANDOFFS: usize = 4096;

/// Packet buffers kept for handoffs: deliveries handed to a shard come back out of it as
/// its own, so a steady exchange allocates nothing.
const SPARE_BUFFERS: usize = 1024;

/// Something the provider's driver may want to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A packet was stored in `client`'s inbox under `id`.
    Stored { client: NodeId, id: u64, at_us: u64 },
}

/// Events kept for the driver before the oldest are discarded.
const MAX_EVENTS: usize = 4096;

/// How often the inboxes are swept for expired packets, µs.
const EXPIRY_SWEEP_US: u64 = 1_000_000;

/// The most packets one sweep deletes (a durable store deletes them in one transaction),
/// so one sweep's work stays bounded; the rest go at the next.
const EXPIRY_BATCH: usize = 10_000;

/// Handshake responses waiting to be sent before further ones are refused (counted as
/// `overload`).
const MAX_RESPONSES: usize = 1024;

/// Upper bounds of the inbox-depth histogram's buckets ([`Provider::inbox_depths`]).
pub const INBOX_DEPTH_BOUNDS: [u64; 8] = [0, 1, 4, 16, 64, 256, 1024, 4096];

/// Polls whose answers the answer queue holds at once (times N frames).
const HELD_POLLS: usize = 256;

/// A provider. See the module docs.
pub struct Provider<S: InboxStore, C: Codec = Processor> {
    id: NodeId,
    /// Which of the node's shards this is (its link trailers name it), of how many.
    shard: usize,
    shards: usize,
    params: Params,
    engine: HopEngine<C>,
    inbox: S,
    inbox_ttl_us: u64,
    /// When the inboxes are next swept for expired packets.
    next_sweep_us: u64,
    clients: BTreeSet<NodeId>,
    addresses: NodeAddresses,
    links: Links,
    sessions: Sessions,
    quota: ClientQuota,
    layout: FrameLayout,
    /// A receive batch's session plaintexts (and handshake responses), a frame's length
    /// each.
    plains: Vec<u8>,
    /// An answer item's plaintext, built while the poll's own is still read.
    item_plain: Vec<u8>,
    /// Handshake responses to send, and where.
    responses: VecDeque<(SocketAddr, Box<[u8]>)>,
    poll_size: usize,
    answers: AnswerQueue,
    rng: ChaCha20Rng,
    scratch_ids: Vec<u64>,
    events: VecDeque<ProviderEvent>,
    /// Work for other shards, and which.
    handoffs: VecDeque<(usize, Handoff)>,
    spare: Vec<Box<[u8]>>,
    /// Dummies' heads made ahead ([`Codec::fill_dummy_heads`]), each used once.
    dummy_heads: Vec<[u8; DUMMY_HEAD_LEN]>,
    stats: ProviderStats,
}

impl<S: InboxStore, C: Codec> Provider<S, C> {
    /// A provider as `topology` describes node `config.id`, storing into `inbox`.
    pub fn new(topology: &Topology, config: RoleConfig, inbox: S) -> Result<Self, BuildError> {
        let id = config.id;
        let node = topology.node(id).ok_or(BuildError::NotInTopology(id))?;
        let (epoch_seed, session_key) = config.keys.into_node(id)?;
        if node.role != Role::Provider {
            return Err(BuildError::WrongRole(id));
        }
        if node.session_key != Some(session_key.public()) {
            return Err(BuildError::SessionKeyMismatch(id));
        }
        let params = topology.network.params;
        let poll_size = usize::from(topology.network.poll_size);
        let layout = FrameLayout::new(&params, topology.network.poll_size);
        let links = links_for::<C>(topology, id, &session_key, config.shard)?;
        let mut session_seed = config.seed;
        session_seed[31] ^= 0x5e;
        Ok(Self {
            id: config.id,
            shard: config.shard,
            shards: config.shards,
            params,
            engine: HopEngine::new(
                epoch_seed,
                topology.network.epochs,
                params,
                config.limits.within(&topology.network),
                config.seed,
            )
            .map_err(BuildError::Wheel)?,
            inbox,
            inbox_ttl_us: config.inbox_ttl_us,
            next_sweep_us: 0,
            clients: topology.clients_of(config.id).map(|c| c.id).collect(),
            addresses: NodeAddresses::new(topology),
            links,
            sessions: Sessions::new(
                session_key,
                layout,
                session_keys(topology, config.id),
                session_seed,
            )
            .with_limits(config.handshakes)
            .on_shard(config.shard, config.shards),
            quota: ClientQuota::new(&topology.network),
            layout,
            plains: vec![0u8; BATCH * layout.frame_len()],
            item_plain: vec![0u8; layout.plaintext_len()],
            responses: VecDeque::new(),
            poll_size,
            answers: AnswerQueue::new(poll_size * HELD_POLLS, layout.frame_len()),
            rng: ChaCha20Rng::from_seed(config.seed),
            scratch_ids: Vec::with_capacity(poll_size),
            events: VecDeque::with_capacity(MAX_EVENTS),
            handoffs: VecDeque::new(),
            spare: Vec::new(),
            dummy_heads: Vec::with_capacity(DUMMY_BATCH),
            stats: ProviderStats::default(),
        })
    }

    /// Its links in: each node it takes datagrams from, and when one last verified.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Counters.
    pub fn stats(&self) -> ProviderStats {
        ProviderStats {
            hop: *self.engine.stats(),
            ..self.stats.clone()
        }
    }

    /// The next event, if any. Bounded: undrained events beyond 4096 are discarded.
    pub fn poll_event(&mut self) -> Option<ProviderEvent> {
        self.events.pop_front()
    }

    /// Takes a re-read topology and key seed; see [`crate::roles::mix::Mix::reload`]. Clients
    /// added to the topology are served from now on, clients removed no longer.
    pub fn reload(&mut self, topology: &Topology, epoch_seed: EpochSeed) {
        self.clients = topology.clients_of(self.id).map(|c| c.id).collect();
        self.addresses = NodeAddresses::new(topology);
        match links_for::<C>(topology, self.id, self.sessions.key(), self.shard) {
            Ok(mut links) => {
                links.keep_heard(&self.links);
                self.links = links;
            }
            // The runtime checked the topology before handing it over; keep the old links.
            Err(e) => debug_assert!(false, "reload with unusable links: {e}"),
        }
        self.sessions.set_clients(session_keys(topology, self.id));
        let clients = &self.clients;
        self.quota.retain(|c| clients.contains(&c));
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

    /// Packets held on the wheel.
    pub fn pending(&self) -> usize {
        self.engine.pending()
    }

    /// Answer frames built and held until their release time.
    pub fn answers_held(&self) -> usize {
        self.answers.len()
    }

    /// Client sessions held.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The longest any store call waited on a disk, µs.
    pub fn store_wait_us(&self) -> u64 {
        self.inbox.longest_wait_us()
    }

    /// Packets waiting in `client`'s inbox.
    pub fn inbox_len(&self, client: NodeId) -> usize {
        self.inbox.len(client)
    }

    /// How many of its clients have each inbox depth: counts of clients whose inbox
    /// holds at most `INBOX_DEPTH_BOUNDS[i]` packets (cumulative, as a histogram's buckets),
    /// the last for any depth; and the deepest inbox. A client back after an absence drains
    /// its backlog at N items a poll: this is where an operator sees it waiting.
    pub fn inbox_depths(&self) -> ([u64; INBOX_DEPTH_BOUNDS.len() + 1], u64) {
        let mut buckets = [0u64; INBOX_DEPTH_BOUNDS.len() + 1];
        let mut deepest = 0;
        for &c in self.clients.iter().filter(|&&c| self.is_home(c)) {
            let n = self.inbox.len(c) as u64;
            deepest = deepest.max(n);
            for (b, &bound) in buckets.iter_mut().zip(INBOX_DEPTH_BOUNDS.iter()) {
                *b += u64::from(n <= bound);
            }
            buckets[INBOX_DEPTH_BOUNDS.len()] += 1;
        }
        (buckets, deepest)
    }

    /// Whether this shard is `client`'s home.
    fn is_home(&self, client: NodeId) -> bool {
        home_shard(client, self.shards) == self.shard
    }

    /// Packets waiting in all inboxes.
    pub fn inbox_total(&self) -> usize {
        self.inbox.total()
    }

    /// The inbox store (for the runtime to flush it).
    pub fn inbox(&mut self) -> &mut S {
        &mut self.inbox
    }

    /// Unwraps packets together (in vector lanes where the batch allows), each from a
    /// node's link or a client's session, and holds, stores or absorbs each.
    fn unwrap(&mut self, now_us: u64, packets: &[&[u8]]) {
        let (clients, stats, links) = (&self.clients, &mut self.stats, &self.links);
        let route = |command| match command {
            Command::Relay { next, .. } if links.sends_to(next) => Ok(Due::Send(next)),
            Command::Relay { .. } => Err(DropReason::NotAdjacent),
            Command::Deliver { client, .. } if clients.contains(&client) => Ok(Due::Store(client)),
            Command::Deliver { .. } => Err(DropReason::UnknownClient),
            _ => Err(DropReason::UnexpectedCommand),
        };
        let on_end = |command, _: &[u8]| match command {
            Command::Drop => {
                stats.drop_cover_absorbed += 1;
                Ok(())
            }
            _ => Err(DropReason::UnexpectedCommand),
        };
        self.engine.receive_batch(now_us, packets, route, on_end);
    }

    /// A session frame: a handshake, or a client's packet or poll, opened into `plain` (a
    /// frame's length). True when it is a client's packet, within its quota, left in
    /// `plain` to be unwrapped with its batch (its bytes from [`PACKET_AT`]).
    fn take_frame(
        &mut self,
        now_us: u64,
        from: SocketAddr,
        bytes: &[u8],
        plain: &mut [u8],
    ) -> bool {
        match self.sessions.receive(now_us, from, bytes, plain) {
            Received::Response { len } if self.responses.len() < MAX_RESPONSES => {
                self.responses.push_back((from, plain[..len].into()));
                self.stats.sessions_started += 1;
            }
            Received::Cookie { len } if self.responses.len() < MAX_RESPONSES => {
                self.responses.push_back((from, plain[..len].into()));
                self.stats.cookies_sent += 1;
            }
            Received::Response { .. } | Received::Cookie { .. } => {
                self.engine.count_drop(DropReason::Overload)
            }
            Received::Handoff(accepted) => {
                let home = home_shard(accepted.client(), self.shards);
                self.hand_off(home, Handoff::Session(accepted));
            }
            Received::Plain {
                client,
                index,
                plain,
            } => match plain.kind {
                FrameKind::Packet if !self.quota.allow(client, Spend::Packet, now_us) => {
                    self.engine.count_drop(DropReason::RateLimited);
                }
                FrameKind::Poll if !self.quota.allow(client, Spend::Poll, now_us) => {
                    self.engine.count_drop(DropReason::RateLimited);
                }
                FrameKind::Packet => {
                    *self.stats.per_client_in.entry(client).or_default() += 1;
                    return true;
                }
                FrameKind::Poll => self.handle_poll(now_us, client, index, plain.body),
                FrameKind::Idle => self.stats.idle_frames += 1,
                FrameKind::Item => self.engine.count_drop(DropReason::Malformed),
            },
            Received::Dropped(reason) => self.engine.count_drop(reason),
        }
        false
    }

    /// A poll from `client` in session `session`: its acks, then N answer items.
    fn handle_poll(&mut self, now_us: u64, client: NodeId, session: u32, body: &[u8]) {
        if self.answers.room() < self.poll_size {
            self.stats.polls_refused += 1;
            self.engine.count_drop(DropReason::Overload);
            return;
        }
        let acks = body[..8 * self.poll_size]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
        for id in acks {
            self.inbox.ack(client, id);
        }
        self.scratch_ids.clear();
        self.inbox
            .oldest(client, self.poll_size, &mut self.scratch_ids);
        let release_at_us = now_us + POLL_ANSWER_DELAY_US;
        // What the inbox holds beyond this answer: the client learns how long its backlog
        // will take to collect.
        let waiting = self
            .inbox
            .len(client)
            .saturating_sub(self.scratch_ids.len());
        let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        let mut plain = std::mem::take(&mut self.item_plain);
        for i in 0..self.poll_size {
            let id = self.scratch_ids.get(i).copied();
            self.write_answer_item(client, id, waiting, &mut plain);
            let Some((index, frame)) = self.answers.take() else {
                break; // room was checked for N above
            };
            match self.sessions.seal(now_us, session, &plain, frame) {
                Some((to, len)) => self.answers.hold(index, len, to, release_at_us),
                None => {
                    self.answers.give_back(index);
                    self.stats.answers_unsent += 1;
                }
            }
        }
        self.item_plain = plain;
        self.stats.polls_answered += 1;
    }

    /// Stores packets whose delay is over; returns the first packet to send, if any.
    fn next_send(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((due, index)) = self.engine.next_ready(now_us) {
            match due {
                Due::Send(to) => {
                    let Some(addr) = self.addresses.address(to) else {
                        self.engine.release(index);
                        self.engine.count_drop(DropReason::Unroutable);
                        continue;
                    };
                    let packet = self.engine.packet(index);
                    buf[..packet.len()].copy_from_slice(packet);
                    let len = packet.len() + LINK_OVERHEAD;
                    self.engine.release(index);
                    if let Err(reason) = self.links.seal(now_us, to, &mut buf[..len]) {
                        self.engine.count_drop(reason);
                        continue;
                    }
                    return Some(Transmit { to: addr, len });
                }
                Due::Store(client) if self.is_home(client) => {
                    let id = self.rng.next_u64();
                    let result = self
                        .inbox
                        .store(client, id, now_us, self.engine.packet(index));
                    self.engine.release(index);
                    self.stored(now_us, client, id, result);
                }
                Due::Store(client) => {
                    let mut packet = self
                        .spare
                        .pop()
                        .unwrap_or_else(|| vec![0u8; self.params.packet_len()].into());
                    packet.copy_from_slice(self.engine.packet(index));
                    self.engine.release(index);
                    let home = home_shard(client, self.shards);
                    self.hand_off(home, Handoff::Deliver { client, packet });
                }
            }
        }
        None
    }

    /// Counts what became of a packet given to `client`'s inbox under `id`.
    fn stored(&mut self, now_us: u64, client: NodeId, id: u64, result: Result<(), StoreRefused>) {
        match result {
            Ok(()) => {
                self.stats.stored += 1;
                if self.events.len() >= MAX_EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(ProviderEvent::Stored {
                    client,
                    id,
                    at_us: now_us,
                });
            }
            Err(StoreRefused::InboxFull) => self.engine.count_drop(DropReason::InboxFull),
            Err(StoreRefused::StoreFull) => self.engine.count_drop(DropReason::StoreFull),
            Err(StoreRefused::Busy) => self.engine.count_drop(DropReason::StoreBusy),
        }
    }

    /// Queues work for shard `to`, or drops it if too much is waiting.
    fn hand_off(&mut self, to: usize, handoff: Handoff) {
        if self.handoffs.len() < MAX_HANDOFFS {
            self.handoffs.push_back((to, handoff));
        } else {
            self.drop_handoff(handoff);
        }
    }

    /// Counts a handoff that found no room (`handoff_full`); a packet's buffer is kept.
    fn drop_handoff(&mut self, handoff: Handoff) {
        self.engine.count_drop(DropReason::HandoffFull);
        if let Handoff::Deliver { packet, .. } = handoff {
            self.keep_spare(packet);
        }
    }

    /// Keeps a packet buffer for a later handoff, if there is room.
    fn keep_spare(&mut self, packet: Box<[u8]>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(packet);
        }
    }

    /// Writes an answer item's plaintext: kind, id, the count still `waiting`, packet
    /// (`client`'s stored packet `id`, or a dummy).
    fn write_answer_item(
        &mut self,
        client: NodeId,
        id: Option<u64>,
        waiting: u32,
        plain: &mut [u8],
    ) {
        plain.fill(0);
        plain[0] = FrameKind::Item as u8;
        let len = ITEM_HEADER_LEN + self.params.packet_len();
        let (header, packet) = plain[1..1 + len].split_at_mut(ITEM_HEADER_LEN);
        let real = id.filter(|&id| self.inbox.read(client, id, packet));
        let id = match real {
            Some(id) => id,
            None => {
                self.fill_dummy(packet);
                self.stats.dummies_sent += 1;
                self.rng.next_u64()
            }
        };
        wire::write_item_header(header, id, waiting);
    }

    /// A dummy packet, from the dummies' heads made ahead in batches: each used once.
    fn fill_dummy(&mut self, packet: &mut [u8]) {
        if self.dummy_heads.is_empty() {
            self.dummy_heads.resize(DUMMY_BATCH, [0; DUMMY_HEAD_LEN]);
            C::fill_dummy_heads(&mut self.rng, &mut self.dummy_heads);
        }
        let head = self.dummy_heads.pop().unwrap_or_default();
        let n = head.len().min(packet.len());
        packet[..n].copy_from_slice(&head[..n]);
        self.rng.fill_bytes(&mut packet[n..]);
    }

    /// The next answer frame due.
    fn next_answer(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        let due = self.answers.next_release_us()?;
        let (to, len) = self.answers.release(now_us, buf)?;
        if now_us > due + POLL_ANSWER_DELAY_US {
            self.stats.answers_late += 1;
        }
        Some(Transmit { to, len })
    }
}

/// The session keys of `provider`'s clients.
fn session_keys(
    topology: &Topology,
    provider: NodeId,
) -> impl Iterator<Item = (NodeId, loopix_crypto::SessionPublic)> + '_ {
    topology.clients_of(provider).map(|c| (c.id, c.session_key))
}

impl<S: InboxStore, C: Codec> Endpoint for Provider<S, C> {
    fn id(&self) -> NodeId {
        self.id
    }

    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]) {
        self.handle_datagrams(now_us, &[(from, bytes)]);
    }

    /// A receive batch: links' packets and clients' packets (opened out of their frames
    /// into the batch's plaintexts) are unwrapped together; handshakes and polls are
    /// answered as they come.
    fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        let (packet_len, frame_len) = (self.params.packet_len(), self.layout.frame_len());
        let mut plains = std::mem::take(&mut self.plains);
        for chunk in datagrams.chunks(BATCH) {
            // Where each packet of the chunk is, if it has one to unwrap.
            let mut found = [None::<Found>; BATCH];
            for (i, &(from, bytes)) in chunk.iter().enumerate() {
                if bytes.len() == frame_len {
                    let slot = &mut plains[i * frame_len..(i + 1) * frame_len];
                    if self.take_frame(now_us, from, bytes, slot) {
                        found[i] = Some(Found::InPlain);
                    }
                } else if bytes.len() != packet_len + LINK_OVERHEAD {
                    self.engine.count_drop(DropReason::Malformed);
                } else {
                    let opened = match self.addresses.node_at(&from) {
                        Some(node) => self.links.open(now_us, node, bytes),
                        None => Err(DropReason::UnknownPeer),
                    };
                    match opened {
                        Ok(()) => found[i] = Some(Found::InDatagram),
                        Err(reason) => self.engine.refuse(reason),
                    }
                }
            }
            let mut packets: [&[u8]; BATCH] = [&[]; BATCH];
            let mut n = 0;
            for (i, &(_, bytes)) in chunk.iter().enumerate() {
                let packet = match found[i] {
                    Some(Found::InDatagram) => &bytes[..packet_len],
                    Some(Found::InPlain) => {
                        let at = i * frame_len + PACKET_AT;
                        &plains[at..at + packet_len]
                    }
                    None => continue,
                };
                packets[n] = packet;
                n += 1;
            }
            self.unwrap(now_us, &packets[..n]);
        }
        self.plains = plains;
    }

    fn handle_timeout(&mut self, now_us: u64) {
        // Packets that waited to fill a run of lanes and are due now.
        self.unwrap(now_us, &[]);
        self.engine.handle_timeout(now_us);
        if now_us >= self.next_sweep_us {
            self.next_sweep_us = now_us + EXPIRY_SWEEP_US;
            let cutoff = now_us.saturating_sub(self.inbox_ttl_us);
            let expired = self.inbox.expire(cutoff, EXPIRY_BATCH);
            self.engine
                .count_drops(DropReason::InboxExpired, expired as u64);
        }
    }

    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((to, response)) = self.responses.pop_front() {
            buf[..response.len()].copy_from_slice(&response);
            return Some(Transmit {
                to,
                len: response.len(),
            });
        }
        if let Some(t) = self.next_send(now_us, buf) {
            self.stats.sent += 1;
            return Some(t);
        }
        self.next_answer(now_us, buf)
    }

    fn poll_timeout(&self) -> Option<u64> {
        let wheel = self.engine.poll_timeout();
        let next = wheel.map_or(self.next_sweep_us, |t| t.min(self.next_sweep_us));
        Some(self.answers.next_release_us().map_or(next, |a| a.min(next)))
    }

    fn max_datagram_len(&self) -> usize {
        self.layout
            .frame_len()
            .max(self.params.packet_len() + LINK_OVERHEAD)
    }

    fn held(&self) -> usize {
        Provider::pending(self)
    }

    fn flush_storage(&mut self) -> Result<(), String> {
        self.inbox.flush()
    }

    fn poll_event(&mut self) -> Option<crate::endpoint::RoleEvent> {
        Provider::poll_event(self).map(crate::endpoint::RoleEvent::Provider)
    }

    fn poll_handoff(&mut self) -> Option<(usize, Handoff)> {
        self.handoffs.pop_front()
    }

    fn handle_handoff(&mut self, now_us: u64, handoff: Handoff) {
        match handoff {
            Handoff::Deliver { client, packet } => {
                if self.is_home(client) && packet.len() == self.params.packet_len() {
                    let id = self.rng.next_u64();
                    let result = self.inbox.store(client, id, now_us, &packet);
                    self.stored(now_us, client, id, result);
                } else {
                    self.engine.count_drop(DropReason::UnknownClient);
                }
                self.keep_spare(packet);
            }
            Handoff::Session(accepted) => match self.sessions.take(now_us, accepted) {
                Ok(response) if self.responses.len() < MAX_RESPONSES => {
                    self.responses.push_back(response);
                    self.stats.sessions_started += 1;
                }
                Ok(_) => self.engine.count_drop(DropReason::Overload),
                Err(reason) => self.engine.count_drop(reason),
            },
        }
    }

    fn handoff_refused(&mut self, handoff: Handoff) {
        self.drop_handoff(handoff);
    }

    crate::endpoint::node_driver_methods!();
}
