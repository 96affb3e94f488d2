//! The client core. Three independent Poisson processes decide when it sends: payload at
//! λP (the next fragment from the FIFO send buffer, or drop cover if it is empty), loop
//! cover at λL (back to itself), drop cover at λD (discarded by a provider). So the wire
//! shows a Poisson stream at λP+λL+λD whatever the user does. It polls its provider at
//! its own Poisson rate, acknowledges what it got, and sorts what comes back into its own
//! loops, messages for it (reassembled from fragments) and dummies.

use std::collections::VecDeque;

use loopix_crypto::{Address, Command, Hop, Params, Processor, SecretKey};

use crate::codec::Codec;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::directory::{Directory, PathError, requested_delay_us};
use crate::endpoint::{Endpoint, Transmit};
use crate::loops::LoopMonitor;
use crate::payload::{self, Content, Reassembly};
use crate::rate::PoissonTimer;
use crate::topology::Topology;
use crate::wire::{self, ITEM_ID_LEN};

/// What a client needs to start.
pub struct ClientConfig {
    pub id: Address,
    pub key: SecretKey,
    /// Fragments the send buffer holds before [`Client::send`] refuses more.
    pub max_buffered_fragments: usize,
    /// Seeds every random choice the client makes.
    pub seed: [u8; 32],
}

/// Why a client could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    NotAClient(Address),
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownRecipient(Address),
    /// The buffer would exceed its bound; nothing was queued.
    BufferFull,
    /// More than 65,535 fragments.
    TooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownRecipient(a) => write!(f, "{} is not a client of the topology", a.0),
            Self::BufferFull => f.write_str("the send buffer is full"),
            Self::TooLong => f.write_str("the message needs more than 65,535 fragments"),
        }
    }
}

impl std::error::Error for SendError {}

/// Something the user of a client may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A fragment of message `msg_id` went on the wire.
    FragmentSent {
        msg_id: u64,
        index: u16,
        /// Fragments the message has.
        count: u16,
        at_us: u64,
    },
    /// A fragment of message `msg_id` arrived in poll answer item `item_id`.
    FragmentReceived {
        msg_id: u64,
        index: u16,
        item_id: u64,
        at_us: u64,
    },
    /// A whole message arrived for this client.
    Delivered {
        msg_id: u64,
        message: Vec<u8>,
        at_us: u64,
    },
}

/// Counters of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub sent_real: u64,
    pub sent_loop: u64,
    pub sent_drop: u64,
    pub polls: u64,
    pub items_received: u64,
    pub dummies_received: u64,
    /// Packets for this client whose payload failed its integrity check (tagging).
    pub tampered_received: u64,
    pub loops_returned: u64,
    pub delivered: u64,
    /// Packets that could not be built (no path: e.g. the topology lists no key for an
    /// epoch the path falls in); the send slot went out with the previous bytes.
    pub build_failed: u64,
    /// Fragments refused because their message would not fit the reassembly bound.
    pub fragments_refused: u64,
}

/// The most a client holds for messages it is still putting together: 2,000 default-size
/// fragments' worth.
const REASSEMBLY_BYTES: usize = 4 << 20;

#[derive(Clone, Copy, Debug)]
enum Emission {
    Payload,
    Loop,
    Drop,
    Poll,
}

struct Fragment {
    recipient: Address,
    msg_id: u64,
    index: u16,
    count: u16,
    data: Vec<u8>,
}

struct Timers {
    payload: PoissonTimer,
    loop_cover: PoissonTimer,
    drop_cover: PoissonTimer,
    poll: PoissonTimer,
}

/// A client. See the module docs.
pub struct Client<C: Codec = Processor> {
    id: Address,
    provider: Address,
    params: Params,
    processor: C,
    directory: Directory,
    rng: ChaCha20Rng,
    rates_per_s: [f64; 4],
    timers: Option<Timers>,
    buffer: VecDeque<Fragment>,
    max_buffered: usize,
    emissions: VecDeque<Emission>,
    pending_acks: VecDeque<u64>,
    poll_size: usize,
    reassembly: Reassembly,
    loops: LoopMonitor,
    events: VecDeque<ClientEvent>,
    path: Vec<Hop>,
    scratch: Vec<u8>,
    body: Vec<u8>,
    stats: ClientStats,
}

impl<C: Codec> Client<C> {
    /// A client as `topology` describes `config.id`.
    pub fn new(topology: &Topology, config: ClientConfig) -> Result<Self, ClientError> {
        let me = topology
            .client(config.id)
            .ok_or(ClientError::NotAClient(config.id))?;
        let n = &topology.network;
        Ok(Self {
            id: me.id,
            provider: me.provider,
            params: n.params,
            processor: C::new(config.key, n.params),
            directory: Directory::new(topology),
            rng: ChaCha20Rng::from_seed(config.seed),
            rates_per_s: [
                n.lambda_payload_per_s,
                n.lambda_loop_per_s,
                n.lambda_drop_per_s,
                n.poll_rate_per_s,
            ],
            timers: None,
            buffer: VecDeque::new(),
            max_buffered: config.max_buffered_fragments,
            emissions: VecDeque::new(),
            pending_acks: VecDeque::new(),
            poll_size: usize::from(n.poll_size),
            reassembly: Reassembly::new(1024, 4096, REASSEMBLY_BYTES),
            loops: LoopMonitor::new(256, 60_000_000),
            events: VecDeque::new(),
            path: Vec::with_capacity(loopix_crypto::MAX_HOPS),
            scratch: vec![0u8; n.params.packet_len()],
            body: vec![0u8; n.params.payload_bytes()],
            stats: ClientStats::default(),
        })
    }

    /// Queues `message` for `recipient`, split into fragments; returns its id.
    pub fn send(&mut self, recipient: Address, message: &[u8]) -> Result<u64, SendError> {
        if self.directory.client(recipient).is_none() {
            return Err(SendError::UnknownRecipient(recipient));
        }
        let cap = payload::fragment_capacity(self.params.payload_bytes());
        let count = message.len().div_ceil(cap).max(1);
        let count = u16::try_from(count).map_err(|_| SendError::TooLong)?;
        if self.buffer.len() + usize::from(count) > self.max_buffered {
            return Err(SendError::BufferFull);
        }
        let msg_id = self.rng.next_u64();
        let chunks = message
            .chunks(cap)
            .chain(message.is_empty().then_some(&[][..]));
        for (index, data) in chunks.enumerate() {
            let index = index as u16;
            self.buffer.push_back(Fragment {
                recipient,
                msg_id,
                index,
                count,
                data: data.to_vec(),
            });
        }
        Ok(msg_id)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            loops_returned: self.loops.returned_total,
            fragments_refused: self.reassembly.refused(),
            ..self.stats
        }
    }

    /// The provider this client polls and sends through.
    pub fn provider(&self) -> Address {
        self.provider
    }

    /// Fragments waiting in the send buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    fn start_timers(&mut self, now_us: u64) {
        if self.timers.is_some() {
            return;
        }
        let (rng, r) = (&mut self.rng, self.rates_per_s);
        self.timers = Some(Timers {
            payload: PoissonTimer::start(rng, r[0], now_us),
            loop_cover: PoissonTimer::start(rng, r[1], now_us),
            drop_cover: PoissonTimer::start(rng, r[2], now_us),
            poll: PoissonTimer::start(rng, r[3], now_us),
        });
        // Announce ourselves before anything else, so the provider knows where we are.
        self.emissions.push_back(Emission::Poll);
    }

    /// Writes the packet for `emission` into `buf`; returns its length.
    fn emit(&mut self, now_us: u64, emission: Emission, buf: &mut [u8]) -> usize {
        match emission {
            Emission::Poll => return self.write_poll(buf),
            Emission::Payload => match self.buffer.pop_front() {
                Some(f) => self.write_fragment(now_us, &f, buf),
                None => self.write_drop(now_us, buf),
            },
            Emission::Loop => self.write_loop(now_us, buf),
            Emission::Drop => self.write_drop(now_us, buf),
        }
        self.params.packet_len()
    }

    fn write_fragment(&mut self, now_us: u64, f: &Fragment, buf: &mut [u8]) {
        // The body buffer is lent out for the call and put back: no allocation per packet.
        let mut body = std::mem::take(&mut self.body);
        payload::write_fragment(&mut body, f.msg_id, f.index, f.count, &f.data);
        let (rng, path) = (&mut self.rng, &mut self.path);
        let ok = self.directory.client_path(
            rng,
            now_us,
            self.provider,
            f.recipient,
            Command::Final,
            path,
        );
        let built = self.build_on(ok, &body, buf);
        self.body = body;
        if built {
            self.stats.sent_real += 1;
            let (msg_id, index, count) = (f.msg_id, f.index, f.count);
            self.push_event(ClientEvent::FragmentSent {
                msg_id,
                index,
                count,
                at_us: now_us,
            });
        }
    }

    fn write_loop(&mut self, now_us: u64, buf: &mut [u8]) {
        let nonce = self.rng.next_u64();
        let mut body = [0u8; 16];
        payload::write_loop(&mut body, nonce);
        let (rng, path) = (&mut self.rng, &mut self.path);
        let ok = self.directory.client_path(
            rng,
            now_us,
            self.provider,
            self.id,
            Command::LoopReturn,
            path,
        );
        if self.build_on(ok, &body, buf) {
            self.loops
                .sent(nonce, now_us, requested_delay_us(&self.path));
            self.stats.sent_loop += 1;
        }
    }

    fn write_drop(&mut self, now_us: u64, buf: &mut [u8]) {
        let ok = self
            .directory
            .drop_path(&mut self.rng, now_us, self.provider, &mut self.path);
        if self.build_on(ok, &[], buf) {
            self.stats.sent_drop += 1;
        }
    }

    /// Builds along `self.path` when the path could be made; counts a failure (e.g. the
    /// topology has no key yet for an epoch the path falls in).
    fn build_on(&mut self, path: Result<Address, PathError>, body: &[u8], buf: &mut [u8]) -> bool {
        let out = &mut buf[..self.params.packet_len()];
        let built = path.is_ok()
            && C::build_into(&self.params, &self.path, body, &mut self.rng, out).is_ok();
        self.stats.build_failed += u64::from(!built);
        built
    }

    fn write_poll(&mut self, buf: &mut [u8]) -> usize {
        let mut acks = [0u64; crate::wire::MAX_POLL_SIZE as usize];
        let n = self.poll_size.min(acks.len());
        for a in acks.iter_mut().take(n) {
            *a = self
                .pending_acks
                .pop_front()
                .unwrap_or_else(|| self.rng.next_u64());
        }
        let len = wire::poll_request_len(n);
        wire::write_poll_request(&mut buf[..len], self.id, &acks[..n]);
        self.stats.polls += 1;
        len
    }

    /// Queues an event; beyond 4096 undrained events the oldest is discarded.
    fn push_event(&mut self, event: ClientEvent) {
        if self.events.len() >= 4096 {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn receive_item(&mut self, now_us: u64, item: &[u8]) {
        let Some((id, packet)) = wire::read_item(item) else {
            return;
        };
        if packet.len() != self.scratch.len() {
            return;
        }
        self.stats.items_received += 1;
        self.pending_acks.push_back(id);
        self.scratch.copy_from_slice(packet);
        let command = self
            .processor
            .unwrap(&mut self.scratch, |_| false)
            .map(|p| p.command);
        let content = self.params.payload(&self.scratch).and_then(payload::read);
        match (command, content) {
            (Ok(Command::LoopReturn), Some(Content::Loop { nonce })) => {
                self.loops.returned(nonce, now_us);
            }
            (
                Ok(Command::Final),
                Some(Content::Fragment {
                    msg_id,
                    index,
                    count,
                    data,
                }),
            ) => {
                let complete = self.reassembly.add(msg_id, index, count, data);
                let (at_us, item_id) = (now_us, id);
                self.push_event(ClientEvent::FragmentReceived {
                    msg_id,
                    index,
                    item_id,
                    at_us,
                });
                if let Some(message) = complete {
                    self.stats.delivered += 1;
                    self.push_event(ClientEvent::Delivered {
                        msg_id,
                        message,
                        at_us: now_us,
                    });
                }
            }
            (Err(loopix_crypto::ProcessError::PayloadTampered), _) => {
                self.stats.tampered_received += 1;
            }
            _ => self.stats.dummies_received += 1,
        }
    }
}

impl<C: Codec> Endpoint for Client<C> {
    fn id(&self) -> Address {
        self.id
    }

    fn handle_datagram(&mut self, now_us: u64, from: Address, bytes: &[u8]) {
        if from == self.provider {
            self.receive_item(now_us, bytes);
        }
    }

    fn handle_timeout(&mut self, now_us: u64) {
        self.start_timers(now_us);
        let (Some(t), rng) = (self.timers.as_mut(), &mut self.rng) else {
            return;
        };
        let timers = [
            (&mut t.payload, Emission::Payload),
            (&mut t.loop_cover, Emission::Loop),
            (&mut t.drop_cover, Emission::Drop),
            (&mut t.poll, Emission::Poll),
        ];
        for (timer, kind) in timers {
            while timer.fire(rng, now_us) {
                self.emissions.push_back(kind);
            }
        }
    }

    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        let emission = self.emissions.pop_front()?;
        let len = self.emit(now_us, emission, buf);
        Some(Transmit {
            to: self.provider,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<u64> {
        if !self.emissions.is_empty() {
            return Some(0);
        }
        let Some(t) = &self.timers else {
            return Some(0);
        };
        [t.payload, t.loop_cover, t.drop_cover, t.poll]
            .iter()
            .filter_map(|t| t.next_us())
            .min()
    }

    fn max_datagram_len(&self) -> usize {
        self.params
            .packet_len()
            .max(wire::poll_request_len(self.poll_size))
            + ITEM_ID_LEN
    }
}
