//! The provider core: its clients' door in and out.
//!
//! Ingress: packets from its registered clients only (anyone else is dropped and counted),
//! with per-client accounting, unwrapped and held like at a mix, then sent into layer 1.
//! Egress: packets to deliver are held for their delay, then stored in the client's
//! bounded inbox; drop cover is absorbed; mix loops passing through are relayed. Every
//! poll is answered with exactly N items, padded with dummies that have a valid group
//! element and random bytes, so they look like stored packets. A stored packet leaves the
//! inbox only when the client acknowledges it in a later poll.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use loopix_crypto::{Address, Command, EpochSeed, Params, Processor};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::codec::Codec;
use crate::drops::DropReason;
use crate::endpoint::{Endpoint, Transmit};
use crate::hop::{Due, EpochStats, HopEngine, HopLimits, HopStats};
use crate::inbox::InboxStore;
use crate::timing_wheel::WheelConfigError;
use crate::topology::{Role, Topology};
use crate::wire::{self, ITEM_ID_LEN};

/// What a provider needs to start.
pub struct ProviderConfig {
    pub id: Address,
    /// Where the provider's key for every epoch comes from.
    pub epoch_seed: EpochSeed,
    pub limits: HopLimits,
    /// Seeds every random choice (inbox ids, dummies).
    pub seed: [u8; 32],
}

/// Why a provider could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderError {
    NotAProvider(Address),
    Wheel(WheelConfigError),
}

/// Counters of a provider.
#[derive(Clone, Debug, Default)]
pub struct ProviderStats {
    pub hop: HopStats,
    pub sent: u64,
    pub stored: u64,
    pub drop_cover_absorbed: u64,
    pub polls_answered: u64,
    pub dummies_sent: u64,
    /// Packets accepted from each registered client.
    pub per_client_in: BTreeMap<Address, u64>,
}

/// Something the provider's driver may want to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A packet was stored in `client`'s inbox under `id`.
    Stored {
        client: Address,
        id: u64,
        at_us: u64,
    },
}

/// Events kept for the driver before the oldest are discarded.
const MAX_EVENTS: usize = 4096;

/// One item of a poll answer still to send.
#[derive(Clone, Copy, Debug)]
struct AnswerItem {
    client: Address,
    /// A stored packet's id, or `None` for a dummy.
    id: Option<u64>,
}

/// A provider. See the module docs.
pub struct Provider<S: InboxStore, C: Codec = Processor> {
    id: Address,
    params: Params,
    engine: HopEngine<C>,
    inbox: S,
    clients: BTreeSet<Address>,
    nodes: BTreeSet<Address>,
    poll_size: usize,
    answers: VecDeque<AnswerItem>,
    rng: ChaCha20Rng,
    scratch_ids: Vec<u64>,
    events: VecDeque<ProviderEvent>,
    stats: ProviderStats,
}

impl<S: InboxStore, C: Codec> Provider<S, C> {
    /// A provider as `topology` describes node `config.id`, storing into `inbox`.
    pub fn new(
        topology: &Topology,
        config: ProviderConfig,
        inbox: S,
    ) -> Result<Self, ProviderError> {
        let node = topology
            .node(config.id)
            .ok_or(ProviderError::NotAProvider(config.id))?;
        if node.role != Role::Provider {
            return Err(ProviderError::NotAProvider(config.id));
        }
        let params = topology.network.params;
        let poll_size = usize::from(topology.network.poll_size);
        Ok(Self {
            id: config.id,
            params,
            engine: HopEngine::new(
                config.epoch_seed,
                topology.network.epochs,
                params,
                config.limits.within(&topology.network),
                config.seed,
            )
            .map_err(ProviderError::Wheel)?,
            inbox,
            clients: topology.clients_of(config.id).map(|c| c.id).collect(),
            nodes: topology.nodes.iter().map(|n| n.id).collect(),
            poll_size,
            answers: VecDeque::with_capacity(poll_size * 64),
            rng: ChaCha20Rng::from_seed(config.seed),
            scratch_ids: Vec::with_capacity(poll_size),
            events: VecDeque::with_capacity(MAX_EVENTS),
            stats: ProviderStats::default(),
        })
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

    /// Takes a re-read topology and key seed; see [`crate::mix::Mix::reload`]. Clients
    /// added to the topology are served from now on, clients removed no longer.
    pub fn reload(&mut self, topology: &Topology, epoch_seed: EpochSeed) {
        self.clients = topology.clients_of(self.id).map(|c| c.id).collect();
        self.nodes = topology.nodes.iter().map(|n| n.id).collect();
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

    /// The client a datagram, if it is a well-formed poll request, says it is from.
    pub fn poll_client(&self, bytes: &[u8]) -> Option<Address> {
        wire::read_poll_request(bytes, self.poll_size).map(|(client, _)| client)
    }

    /// Packets waiting in `client`'s inbox.
    pub fn inbox_len(&self, client: Address) -> usize {
        self.inbox.len(client)
    }

    /// Packets waiting in all inboxes.
    pub fn inbox_total(&self) -> usize {
        self.inbox.total()
    }

    /// The inbox store (for the runtime to flush it).
    pub fn inbox(&mut self) -> &mut S {
        &mut self.inbox
    }

    fn handle_packet(&mut self, now_us: u64, from: Address, bytes: &[u8]) {
        let from_client = self.clients.contains(&from);
        if !from_client && !self.nodes.contains(&from) {
            self.engine.count_drop(DropReason::UnknownClient);
            return;
        }
        let (clients, stats) = (&self.clients, &mut self.stats);
        let route = |command| match command {
            Command::Relay { next, .. } => Ok(Due::Send(next)),
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
        let held = self.engine.receive_batch(now_us, &[bytes], route, on_end);
        if from_client && held > 0 {
            *self.stats.per_client_in.entry(from).or_default() += 1;
        }
    }

    fn handle_poll(&mut self, from: Address, bytes: &[u8]) {
        let Some((client, acks)) = wire::read_poll_request(bytes, self.poll_size) else {
            self.engine.count_drop(DropReason::Malformed);
            return;
        };
        if client != from || !self.clients.contains(&client) {
            self.engine.count_drop(DropReason::UnknownClient);
            return;
        }
        for id in acks {
            self.inbox.ack(client, id);
        }
        self.scratch_ids.clear();
        self.inbox
            .oldest(client, self.poll_size, &mut self.scratch_ids);
        for i in 0..self.poll_size {
            let id = self.scratch_ids.get(i).copied();
            self.answers.push_back(AnswerItem { client, id });
        }
        self.stats.polls_answered += 1;
    }

    /// Stores packets whose delay is over; returns the first packet to send, if any.
    fn next_send(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((due, slot)) = self.engine.next_ready(now_us) {
            match due {
                Due::Send(to) => {
                    let packet = self.engine.packet(slot);
                    buf[..packet.len()].copy_from_slice(packet);
                    let len = packet.len();
                    self.engine.release(slot);
                    return Some(Transmit { to, len });
                }
                Due::Store(client) => self.store(now_us, client, slot),
            }
        }
        None
    }

    fn store(&mut self, now_us: u64, client: Address, slot: u32) {
        let id = self.rng.next_u64();
        match self.inbox.store(client, id, self.engine.packet(slot)) {
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
            Err(_) => self.engine.count_drop(DropReason::InboxFull),
        }
        self.engine.release(slot);
    }

    fn write_answer_item(&mut self, item: AnswerItem, buf: &mut [u8]) -> usize {
        let len = ITEM_ID_LEN + self.params.packet_len();
        let (id_bytes, packet) = buf[..len].split_at_mut(ITEM_ID_LEN);
        let real = item
            .id
            .filter(|&id| self.inbox.read(item.client, id, packet));
        let id = match real {
            Some(id) => id,
            None => {
                C::fill_dummy(&mut self.rng, packet);
                self.stats.dummies_sent += 1;
                self.rng.next_u64()
            }
        };
        id_bytes.copy_from_slice(&id.to_le_bytes());
        len
    }
}

impl<S: InboxStore, C: Codec> Endpoint for Provider<S, C> {
    fn id(&self) -> Address {
        self.id
    }

    fn handle_datagram(&mut self, now_us: u64, from: Address, bytes: &[u8]) {
        if bytes.len() == self.params.packet_len() {
            self.handle_packet(now_us, from, bytes);
        } else {
            self.handle_poll(from, bytes);
        }
    }

    fn handle_timeout(&mut self, now_us: u64) {
        self.engine.handle_timeout(now_us);
    }

    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.next_send(now_us, buf) {
            self.stats.sent += 1;
            return Some(t);
        }
        let item = self.answers.pop_front()?;
        let len = self.write_answer_item(item, buf);
        Some(Transmit {
            to: item.client,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<u64> {
        if self.engine.has_ready() || !self.answers.is_empty() {
            return Some(0);
        }
        self.engine.poll_timeout()
    }

    fn max_datagram_len(&self) -> usize {
        ITEM_ID_LEN + self.params.packet_len()
    }
}
