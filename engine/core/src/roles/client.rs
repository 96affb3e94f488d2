//! The client core. Three independent Poisson processes decide when it sends: payload at
//! λP (the next fragment from the FIFO send buffer, or drop cover if it is empty), loop
//! cover at λL (back to itself), drop cover at λD (discarded by a provider). So the wire
//! shows a Poisson stream at λP+λL+λD whatever the user does. It polls its provider at
//! its own Poisson rate, acknowledges what it got, and sorts what comes back into its own
//! loops, messages for it (reassembled from fragments) and dummies.
//!
//! Everything it sends and receives travels in a session with its provider
//! ([`crate::session`]): one frame length both ways, so its uplink is one Poisson stream
//! of equal datagrams. Until a session is up, its send ticks pass unused; it renews the
//! session's keys on a cover tick, and starts a new session when polls go unanswered
//! (the provider restarted and forgot it).
//!
//! With acknowledgements on ([`crate::roles::acks`]), every fragment carries a single-use reply
//! block; its recipient sends a fixed-size ack back along it in its next payload or drop
//! tick (so acks change nothing on the wire: they take a tick a cover packet would have
//! used), and the sender sends a fragment again, as a fresh packet, until its ack comes or
//! it runs out of attempts (then the user hears `GaveUp`). The recipient delivers each
//! message once, however often its fragments arrive, and acks every copy.
//!
//! Cover packets are built ahead in batches ([`crate::roles::cover_stash`]): about half the
//! cost of building each as its tick comes, with the ticks, and so the wire, unchanged.

use std::collections::VecDeque;
use std::net::SocketAddr;

use loopix_crypto::{Command, Hop, KeyPhase, NodeId, Params, Processor, SURB_LEN, SessionSecret};

use crate::formats::codec::Codec;
use crate::roles::acks::{Fragment, Unacked, ack_timeout_us};
use crate::roles::cover_stash::{COVER_BATCH, CoverKind, CoverStash, Prebuilt};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::endpoint::{Endpoint, Transmit};
use crate::formats::payload::{self, Content, Reassembly};
use crate::formats::wire::{self, ITEM_HEADER_LEN};
use crate::network::path_index::{PathError, PathIndex, requested_delay_us};
use crate::network::topology::Topology;
use crate::roles::loops::LoopMonitor;
use crate::roles::rate::PoissonTimer;
use crate::roles::{BuildError, RoleConfig, RoleKeys};
use crate::session::initiator::{ClientSessionStats, HandshakeDue, Opened};
use crate::session::{ClientSession, FrameKind, FrameLayout};

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownRecipient(NodeId),
    /// The buffer would exceed its bound; nothing was queued.
    BufferFull,
    /// More than 65,535 fragments (or, for a reply, more than one packet's payload).
    TooLong,
    /// No path for a reply block could be made (no key published for its epoch).
    NoReplyPath,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownRecipient(a) => write!(f, "{} is not a client of the topology", a.0),
            Self::BufferFull => f.write_str("the send buffer is full"),
            Self::TooLong => f.write_str("the message needs more than 65,535 fragments"),
            Self::NoReplyPath => f.write_str("no path for a reply block could be made"),
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
    /// A packet went out in the frame sent at `at_us`, with this [`Codec::trace_id`]:
    /// ground truth for experiments over a codec that has trace ids (never over Sphinx,
    /// which has none, so a real client never emits it). `real`: a message fragment.
    PacketSent { trace: u64, real: bool, at_us: u64 },
    /// A whole message arrived for this client.
    Delivered {
        msg_id: u64,
        message: Vec<u8>,
        at_us: u64,
    },
    /// Every fragment of message `msg_id` was acknowledged by its recipient.
    Acked { msg_id: u64, at_us: u64 },
    /// Message `msg_id` (just delivered) carried reply blocks its sender can be answered
    /// through ([`Client::reply`]), without either learning where the other is.
    RepliesOffered {
        msg_id: u64,
        blocks: Vec<ReplyBlock>,
    },
    /// An answer to message `msg_id`, through one of the reply blocks it carried.
    ReplyReceived {
        msg_id: u64,
        message: Vec<u8>,
        at_us: u64,
    },
    /// A fragment of message `msg_id` ran out of attempts: the message is given up (its
    /// other fragments are no longer sent).
    GaveUp { msg_id: u64, at_us: u64 },
    /// The provider holds this many packets for the client beyond its last answer (said
    /// when the count changes): a backlog drains at N packets a poll.
    Backlog { waiting: u32, at_us: u64 },
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
    /// epoch the path falls in); the send tick went out as an idle frame (a fragment
    /// stays queued).
    pub build_failed: u64,
    /// Fragments refused because their message would not fit the reassembly bound.
    pub fragments_refused: u64,
    /// Send ticks that passed with no session up.
    pub skipped_no_session: u64,
    /// Datagrams from an address other than the provider's.
    pub foreign: u64,
    /// Packets the provider held for this client beyond its last answer.
    pub waiting_at_provider: u64,
    /// Sessions started because polls went unanswered.
    pub sessions_lost: u64,
    /// Items received and not yet acknowledged in a poll: the provider keeps them and a
    /// later run of this client receives them again.
    pub unacked_items: u64,
    /// Fragments acknowledged by their recipients.
    pub acked: u64,
    /// Fragments sent again because their ack did not come in time.
    pub retransmitted: u64,
    /// Messages given up (a fragment out of attempts).
    pub gave_up: u64,
    /// Acks this client sent for fragments it received.
    pub acks_sent: u64,
    /// Acks it could not send (its queue of reply blocks was full).
    pub acks_dropped: u64,
    /// Acks not sent because their reply block's first hop no longer holds the key the
    /// block was made under (the fragment waited past its epoch's grace: the recipient
    /// was offline, or polled late). The provider would only refuse them; the sender
    /// sends the fragment again with a fresh block.
    pub acks_expired: u64,
    /// Replies that matched no fragment waiting (an ack of an attempt already resent or
    /// given up), or did not open.
    pub acks_unmatched: u64,
    /// Fragments waiting for their ack now.
    pub awaiting_ack: u64,
    /// Items a poll brought again (already received; acknowledged again, not processed).
    pub items_repeated: u64,
    /// Answers sent through reply blocks, and received through this client's own.
    pub replies_sent: u64,
    pub replies_received: u64,
    /// Reply blocks whose keys were forgotten to make room for newer ones.
    pub reply_blocks_forgotten: u64,
    /// Batches of cover packets built ahead, and those packets never sent: too old, or
    /// the topology changed.
    pub cover_batches: u64,
    pub cover_discarded: u64,
    /// Delivered messages whose envelope did not parse (dropped, not delivered).
    pub malformed_messages: u64,
    pub session: ClientSessionStats,
}

/// Delivered messages a client remembers to refuse their copies (and a driver keeps
/// across runs, [`Client::delivered_ids`]).
pub const DELIVERED_REMEMBERED: usize = 4096;

/// Polls in a row with no answer before the client gives its session up.
const UNANSWERED_POLLS: u32 = 3;

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

/// Item ids remembered to spot repeats: many polls' worth.
const RECENT_ITEMS: usize = 4096;

/// The last `max` ids seen, in a set and in arrival order.
struct RecentIds {
    set: std::collections::HashSet<u64>,
    order: VecDeque<u64>,
    max: usize,
}

impl RecentIds {
    fn new(max: usize) -> Self {
        Self {
            set: std::collections::HashSet::with_capacity(max),
            order: VecDeque::with_capacity(max),
            max,
        }
    }

    /// Remembers `id`; false if it was remembered already.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        if self.order.len() >= self.max
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id);
        true
    }
}

/// The first byte of every message: nothing more, or reply blocks follow.
const ENVELOPE_PLAIN: u8 = 0;
const ENVELOPE_REPLIES: u8 = 1;

/// Answers queued by [`Client::reply`] before more are refused.
const MAX_APP_REPLIES: usize = 1024;

/// Reply blocks this client handed out and still keeps the keys of; beyond it the oldest
/// are forgotten (their answers would come too late to matter).
const MAX_REPLY_OPENERS: usize = 4096;

/// A reply block a message carried: opaque, good for one [`Client::reply`].
#[derive(Clone, PartialEq, Eq)]
pub struct ReplyBlock([u8; SURB_LEN]);

impl std::fmt::Debug for ReplyBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyBlock(..)")
    }
}

/// Reply blocks received and not yet used for an ack, before more are refused.
const MAX_ACK_REPLIES: usize = 1024;

/// An ack to send: the block to send it along, and the fragment it acknowledges.
struct AckReply {
    surb: [u8; SURB_LEN],
    msg_id: u64,
    index: u16,
}

struct Timers {
    payload: PoissonTimer,
    loop_cover: PoissonTimer,
    drop_cover: PoissonTimer,
    poll: PoissonTimer,
}

/// A client. See the module docs.
pub struct Client<C: Codec = Processor> {
    id: NodeId,
    provider: NodeId,
    provider_addr: SocketAddr,
    session: ClientSession,
    /// Session plaintexts, both ways.
    plain: Vec<u8>,
    polls_unanswered: u32,
    /// Whether the last payload tick carried a fragment (for [`ClientEvent::PacketSent`]).
    last_was_fragment: bool,
    params: Params,
    processor: C,
    paths: PathIndex,
    rng: ChaCha20Rng,
    rates_per_s: [f64; 4],
    timers: Option<Timers>,
    buffer: VecDeque<Fragment>,
    max_buffered: usize,
    emissions: VecDeque<Emission>,
    pending_acks: VecDeque<u64>,
    /// Ids of the items received lately, to spot one a poll brings again.
    seen_items: RecentIds,
    /// With acks on: attempts per fragment, and the fragments waiting for theirs.
    max_attempts: u32,
    unacked: Option<Unacked<C::SurbOpener>>,
    ack_replies: VecDeque<AckReply>,
    /// Answers to send along reply blocks (the application's), and the keys of the blocks
    /// this client handed out, by id, oldest first.
    app_replies: VecDeque<([u8; SURB_LEN], Vec<u8>)>,
    reply_openers: std::collections::HashMap<u64, (u64, C::SurbOpener)>,
    reply_order: VecDeque<u64>,
    /// Reply paths are built here.
    surb_path: Vec<Hop>,
    poll_size: usize,
    reassembly: Reassembly,
    loops: LoopMonitor,
    events: VecDeque<ClientEvent>,
    path: Vec<Hop>,
    /// Cover built ahead, and the paths of a batch being built.
    stash: Option<CoverStash>,
    batch_paths: Vec<Vec<Hop>>,
    scratch: Vec<u8>,
    body: Vec<u8>,
    stats: ClientStats,
}

impl<C: Codec> Client<C> {
    /// A client as `topology` describes `config.id`.
    pub fn new(topology: &Topology, config: RoleConfig) -> Result<Self, BuildError> {
        let me = topology
            .client(config.id)
            .ok_or(BuildError::NotInTopology(config.id))?;
        let RoleKeys::Client(key) = config.keys else {
            return Err(BuildError::WrongRole(config.id));
        };
        let n = &topology.network;
        let provider = topology
            .node(me.provider)
            .and_then(|p| Some((p.address, p.session_key?)))
            .ok_or(BuildError::NoProvider(me.provider))?;
        let layout = FrameLayout::new(&n.params, n.poll_size);
        let session_key = SessionSecret::derive_from(&key);
        // Acks need room for a reply block in a fragment and rates that bring them back.
        let acks_fit = payload::fragment_capacity(n.params.payload_bytes(), true) > 0;
        let unacked = ack_timeout_us(n)
            .filter(|_| acks_fit && config.acks.max_attempts > 0)
            .map(Unacked::new);
        Ok(Self {
            id: me.id,
            provider: me.provider,
            provider_addr: provider.0,
            session: ClientSession::new(session_key, provider.1, layout),
            plain: vec![0u8; layout.plaintext_len()],
            polls_unanswered: 0,
            last_was_fragment: false,
            params: n.params,
            processor: C::new(key, n.params),
            paths: PathIndex::new(topology),
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
            seen_items: RecentIds::new(RECENT_ITEMS),
            max_attempts: config.acks.max_attempts,
            unacked,
            ack_replies: VecDeque::new(),
            app_replies: VecDeque::new(),
            reply_openers: std::collections::HashMap::new(),
            reply_order: VecDeque::new(),
            surb_path: Vec::with_capacity(loopix_crypto::MAX_HOPS),
            poll_size: usize::from(n.poll_size),
            reassembly: Reassembly::new(1024, DELIVERED_REMEMBERED, REASSEMBLY_BYTES),
            loops: LoopMonitor::new(256, 60_000_000),
            events: VecDeque::new(),
            path: Vec::with_capacity(loopix_crypto::MAX_HOPS),
            stash: config
                .prebuild_cover
                .then(|| CoverStash::new(n.params.packet_len(), n.epochs.grace_us)),
            batch_paths: (0..COVER_BATCH)
                .map(|_| Vec::with_capacity(loopix_crypto::MAX_HOPS))
                .collect(),
            scratch: vec![0u8; n.params.packet_len()],
            body: vec![0u8; n.params.payload_bytes()],
            stats: ClientStats::default(),
        })
    }

    /// Takes a new topology (the next epoch's document): paths are built with its keys
    /// from now on; the session, the queues and the fragments awaiting acks stay. The
    /// client must still be at the same provider, under the same session key (moving is
    /// a restart); otherwise nothing changes.
    pub fn reload(&mut self, topology: &Topology) -> Result<(), BuildError> {
        let me = topology
            .client(self.id)
            .ok_or(BuildError::NotInTopology(self.id))?;
        let provider = topology
            .node(me.provider)
            .filter(|p| me.provider == self.provider && p.session_key.is_some())
            .ok_or(BuildError::NoProvider(me.provider))?;
        self.provider_addr = provider.address;
        self.paths = PathIndex::new(topology);
        if let Some(stash) = &mut self.stash {
            stash.clear(); // built along the old topology's paths and keys
        }
        Ok(())
    }

    /// Queues `message` for `recipient`, split into fragments; returns its id.
    pub fn send(&mut self, recipient: NodeId, message: &[u8]) -> Result<u64, SendError> {
        self.send_with_replies(0, recipient, message, 0)
    }

    /// [`Client::send`], with `blocks` reply blocks (made at `now_us`) the recipient can
    /// answer through without learning where this client is: each answer arrives as
    /// [`ClientEvent::ReplyReceived`]. A block is good for one answer, for as long as the
    /// keys of the epoch it was made in are in use.
    pub fn send_with_replies(
        &mut self,
        now_us: u64,
        recipient: NodeId,
        message: &[u8],
        blocks: u8,
    ) -> Result<u64, SendError> {
        if self.paths.client(recipient).is_none() {
            return Err(SendError::UnknownRecipient(recipient));
        }
        let msg_id = self.rng.next_u64();
        // The envelope: 0 | message, or 1 | n | n reply blocks | message.
        let mut envelope = Vec::with_capacity(2 + usize::from(blocks) * SURB_LEN + message.len());
        if blocks == 0 {
            envelope.push(ENVELOPE_PLAIN);
        } else {
            envelope.extend([ENVELOPE_REPLIES, blocks]);
            let mut openers = Vec::with_capacity(usize::from(blocks));
            for _ in 0..blocks {
                let (id, surb, opener) = self
                    .reply_block(now_us, recipient)
                    .ok_or(SendError::NoReplyPath)?;
                envelope.extend_from_slice(&surb);
                openers.push((id, opener));
            }
            for (id, opener) in openers {
                self.remember_opener(id, msg_id, opener);
            }
        }
        envelope.extend_from_slice(message);
        self.queue(recipient, msg_id, &envelope)?;
        Ok(msg_id)
    }

    /// Answers a message through one of the reply blocks it carried
    /// ([`ClientEvent::RepliesOffered`]): `data` goes in one packet, in the next payload
    /// tick, to whoever made the block.
    pub fn reply(&mut self, block: &ReplyBlock, data: &[u8]) -> Result<(), SendError> {
        if data.len() > self.params.payload_bytes() - payload::REPLY_HEADER_LEN {
            return Err(SendError::TooLong);
        }
        if self.app_replies.len() >= MAX_APP_REPLIES {
            return Err(SendError::BufferFull);
        }
        self.app_replies.push_back((block.0, data.to_vec()));
        Ok(())
    }

    fn remember_opener(&mut self, surb_id: u64, msg_id: u64, opener: C::SurbOpener) {
        if self.reply_openers.len() >= MAX_REPLY_OPENERS
            && let Some(old) = self.reply_order.pop_front()
        {
            self.reply_openers.remove(&old);
            self.stats.reply_blocks_forgotten += 1;
        }
        self.reply_order.push_back(surb_id);
        self.reply_openers.insert(surb_id, (msg_id, opener));
    }

    /// Splits `envelope` into fragments of message `msg_id` at the back of the buffer.
    fn queue(&mut self, recipient: NodeId, msg_id: u64, envelope: &[u8]) -> Result<(), SendError> {
        let cap = payload::fragment_capacity(self.params.payload_bytes(), self.unacked.is_some());
        let count = envelope.len().div_ceil(cap).max(1);
        let count = u16::try_from(count).map_err(|_| SendError::TooLong)?;
        let held = self.buffer.len() + self.unacked.as_ref().map_or(0, Unacked::len);
        if held + usize::from(count) > self.max_buffered {
            return Err(SendError::BufferFull);
        }
        for (index, data) in envelope.chunks(cap).enumerate() {
            self.buffer.push_back(Fragment {
                recipient,
                msg_id,
                index: index as u16,
                count,
                data: data.to_vec(),
                attempts: 0,
            });
        }
        Ok(())
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
            session: self.session.stats(),
            unacked_items: self.pending_acks.len() as u64,
            awaiting_ack: self.unacked.as_ref().map_or(0, |u| u.len() as u64),
            cover_discarded: self.stash.as_ref().map_or(0, |s| s.discarded),
            ..self.stats
        }
    }

    /// The provider this client polls and sends through.
    pub fn provider(&self) -> NodeId {
        self.provider
    }

    /// Whether it still owes its provider or its peers something: items to acknowledge in
    /// its next poll, acks of fragments it received, answers queued through reply blocks
    /// (a client stopping should let them go out first).
    pub fn acks_pending(&self) -> bool {
        !self.pending_acks.is_empty()
            || !self.ack_replies.is_empty()
            || !self.app_replies.is_empty()
    }

    /// The messages it delivered that it still remembers (a driver keeps them across runs
    /// and hands them back with [`Self::restore_delivered`]), oldest first.
    pub fn delivered_ids(&self) -> Vec<u64> {
        self.reassembly.delivered().collect()
    }

    /// Remembers messages an earlier run delivered: a copy of one (resent because its ack
    /// was lost) is acknowledged again but not delivered twice.
    pub fn restore_delivered(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.reassembly.remember_delivered(ids);
    }

    /// Takes back every fragment never sent, so a client that is stopping sends nothing
    /// new: what it reports as not sent can never leave afterwards. Returns the messages
    /// it touched (in queue order), each once; fragments already sent keep their resends.
    pub fn withhold_unsent(&mut self) -> Vec<u64> {
        let mut withheld: Vec<u64> = Vec::new();
        self.buffer.retain(|f| {
            if f.attempts > 0 {
                return true;
            }
            if !withheld.contains(&f.msg_id) {
                withheld.push(f.msg_id);
            }
            false
        });
        withheld
    }

    /// Fragments waiting in the send buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Whether fragments it sent still wait for their acks.
    pub fn awaiting_acks(&self) -> bool {
        self.unacked.as_ref().is_some_and(|u| !u.is_empty())
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
    }

    /// The next frame to send: a handshake when one is due, else the next emission
    /// sealed in the session. Returns its length.
    fn next_frame(&mut self, now_us: u64, buf: &mut [u8]) -> Option<usize> {
        if self.polls_unanswered >= UNANSWERED_POLLS {
            self.polls_unanswered = 0;
            self.stats.sessions_lost += 1;
            self.session.reset();
        }
        self.session.expire(now_us);
        if self.session.handshake_due(now_us) == HandshakeDue::Now {
            return self.session.write_initiation(now_us, &mut self.rng, buf);
        }
        while let Some(emission) = self.emissions.pop_front() {
            if !self.session.is_up(now_us) {
                self.stats.skipped_no_session += 1;
                continue;
            }
            let cover = matches!(emission, Emission::Loop | Emission::Drop);
            if cover && self.session.handshake_due(now_us) == HandshakeDue::OnCover {
                return self.session.write_initiation(now_us, &mut self.rng, buf);
            }
            let mut plain = std::mem::take(&mut self.plain);
            plain.fill(0);
            plain[0] = self.emit(now_us, emission, &mut plain[1..]) as u8;
            let sealed = self.session.seal(&plain, buf);
            self.plain = plain;
            return sealed;
        }
        None
    }

    /// Writes the body for `emission` into `body`; returns what it is.
    fn emit(&mut self, now_us: u64, emission: Emission, body: &mut [u8]) -> FrameKind {
        self.forget_expired_acks(now_us);
        let built = match emission {
            Emission::Poll => {
                self.write_poll(body);
                return FrameKind::Poll;
            }
            Emission::Payload | Emission::Drop if !self.ack_replies.is_empty() => {
                self.last_was_fragment = false;
                self.write_ack(body)
            }
            Emission::Payload if !self.app_replies.is_empty() => {
                self.last_was_fragment = false;
                self.write_app_reply(body)
            }
            Emission::Payload => {
                let fragment = self.buffer.pop_front();
                self.last_was_fragment = fragment.is_some();
                match fragment {
                    Some(f) => self.write_fragment(now_us, f, body),
                    None => self.write_drop(now_us, body),
                }
            }
            Emission::Loop => self.write_loop(now_us, body),
            Emission::Drop => self.write_drop(now_us, body),
        };
        if !built {
            return FrameKind::Idle;
        }
        if let Some(trace) = C::trace_id(&body[..self.params.packet_len()]) {
            let real = matches!(emission, Emission::Payload) && self.last_was_fragment;
            self.push_event(ClientEvent::PacketSent {
                trace,
                real,
                at_us: now_us,
            });
        }
        FrameKind::Packet
    }

    /// Builds `f`'s packet; a fragment that cannot be built goes back to the front of the
    /// buffer.
    fn write_fragment(&mut self, now_us: u64, mut f: Fragment, buf: &mut [u8]) -> bool {
        // With acks on: a fresh reply block for this attempt, under a fresh ack id.
        let block = match self.unacked.is_some() {
            true => match self.reply_block(now_us, f.recipient) {
                Some(block) => Some(block),
                None => {
                    self.stats.build_failed += 1;
                    self.buffer.push_front(f);
                    return false;
                }
            },
            false => None,
        };
        // The body buffer is lent out for the call and put back: no allocation per packet.
        let mut body = std::mem::take(&mut self.body);
        let surb = block.as_ref().map(|(_, surb, _)| surb);
        payload::write_fragment(&mut body, f.msg_id, f.index, f.count, surb, &f.data);
        let (rng, path) = (&mut self.rng, &mut self.path);
        let ok = self.paths.client_path(
            rng,
            now_us,
            self.provider,
            f.recipient,
            Command::Final,
            path,
        );
        let built = self.build_on(ok, &body, buf);
        self.body = body;
        if !built {
            self.buffer.push_front(f);
            return false;
        }
        self.stats.sent_real += 1;
        self.stats.retransmitted += u64::from(f.attempts > 0);
        f.attempts += 1;
        let (msg_id, index, count) = (f.msg_id, f.index, f.count);
        self.push_event(ClientEvent::FragmentSent {
            msg_id,
            index,
            count,
            at_us: now_us,
        });
        if let (Some(unacked), Some((ack_id, _, opener))) = (self.unacked.as_mut(), block) {
            unacked.insert(ack_id, f, opener, now_us);
        }
        true
    }

    /// A reply block from `recipient`'s provider back to this client, under a fresh ack
    /// id: (id, block, what opens the ack).
    fn reply_block(
        &mut self,
        now_us: u64,
        recipient: NodeId,
    ) -> Option<(u64, [u8; SURB_LEN], C::SurbOpener)> {
        let (_, their_provider) = self.paths.client(recipient)?;
        let ack_id = self.rng.next_u64();
        let (rng, path) = (&mut self.rng, &mut self.surb_path);
        let reply = Command::Reply { surb_id: ack_id };
        self.paths
            .client_path(rng, now_us, their_provider, self.id, reply, path)
            .ok()?;
        let (surb, opener) = C::build_surb(&self.surb_path, &mut self.rng).ok()?;
        Some((ack_id, surb, opener))
    }

    /// Drops the acks whose reply block's first hop (this client's provider) holds no key
    /// of the block's phase any more: sent, they would only be refused there.
    fn forget_expired_acks(&mut self, now_us: u64) {
        let before = self.ack_replies.len();
        let paths = &self.paths;
        self.ack_replies.retain(|r| {
            KeyPhase::of_packet(&r.surb).is_none_or(|phase| paths.phase_in_use(now_us, phase))
        });
        self.stats.acks_expired += (before - self.ack_replies.len()) as u64;
    }

    /// The next ack, along the reply block it came with.
    fn write_ack(&mut self, buf: &mut [u8]) -> bool {
        let Some(reply) = self.ack_replies.pop_front() else {
            return false;
        };
        let built = self.send_along(&reply.surb, buf, |body| {
            payload::write_ack(body, reply.msg_id, reply.index);
        });
        self.stats.acks_sent += u64::from(built);
        built
    }

    /// Writes a packet along reply block `surb` into `buf`, its body written by `fill`;
    /// counts a failure.
    fn send_along(&mut self, surb: &[u8], buf: &mut [u8], fill: impl FnOnce(&mut [u8])) -> bool {
        // The body buffer is lent out for the call and put back: no allocation per packet.
        let mut body = std::mem::take(&mut self.body);
        fill(&mut body);
        let out = &mut buf[..self.params.packet_len()];
        let built = C::write_reply(&self.params, surb, &body, out).is_ok();
        self.body = body;
        self.stats.build_failed += u64::from(!built);
        built
    }

    /// Opens a whole message's envelope: the message is delivered, and its reply blocks
    /// offered right after it.
    fn deliver(&mut self, now_us: u64, msg_id: u64, envelope: &[u8]) {
        let Some((message, blocks)) = open_envelope(envelope) else {
            self.stats.malformed_messages += 1;
            return;
        };
        self.stats.delivered += 1;
        self.push_event(ClientEvent::Delivered {
            msg_id,
            message: message.to_vec(),
            at_us: now_us,
        });
        if !blocks.is_empty() {
            self.push_event(ClientEvent::RepliesOffered { msg_id, blocks });
        }
    }

    /// The next application answer, along its reply block.
    fn write_app_reply(&mut self, buf: &mut [u8]) -> bool {
        let Some((surb, data)) = self.app_replies.pop_front() else {
            return false;
        };
        let built = self.send_along(&surb, buf, |body| payload::write_reply(body, &data));
        self.stats.replies_sent += u64::from(built);
        built
    }

    /// A packet came back along reply block `surb_id`: an application's answer to one of
    /// this client's messages, or an ack.
    fn receive_reply(&mut self, now_us: u64, surb_id: u64) {
        let Some((msg_id, opener)) = self.reply_openers.remove(&surb_id) else {
            return self.receive_ack(now_us, surb_id);
        };
        self.reply_order.retain(|&id| id != surb_id);
        let opened = C::open_reply(&self.params, &opener, &mut self.scratch);
        match opened.ok().and_then(payload::read) {
            Some(Content::Reply { data }) => {
                let message = data.to_vec();
                self.stats.replies_received += 1;
                self.push_event(ClientEvent::ReplyReceived {
                    msg_id,
                    message,
                    at_us: now_us,
                });
            }
            _ => self.stats.tampered_received += 1,
        }
    }

    /// An ack came back as a reply to block `ack_id`: the fragment it names is done.
    fn receive_ack(&mut self, now_us: u64, ack_id: u64) {
        let Some(unacked) = self.unacked.as_mut() else {
            self.stats.acks_unmatched += 1;
            return;
        };
        let Some(pending) = unacked.take(ack_id) else {
            self.stats.acks_unmatched += 1;
            return;
        };
        let f = &pending.fragment;
        let opened = C::open_reply(&self.params, &pending.opener, &mut self.scratch);
        let names_it = matches!(
            opened.ok().and_then(payload::read),
            Some(Content::Ack { msg_id, index }) if msg_id == f.msg_id && index == f.index
        );
        if !names_it {
            // Not this fragment's ack after all: it keeps waiting.
            unacked.put_back(ack_id, pending);
            self.stats.acks_unmatched += 1;
            return;
        }
        self.stats.acked += 1;
        let msg_id = f.msg_id;
        let more = unacked.has_message(msg_id) || self.buffer.iter().any(|b| b.msg_id == msg_id);
        if !more {
            self.push_event(ClientEvent::Acked {
                msg_id,
                at_us: now_us,
            });
        }
    }

    /// Fragments whose ack did not come in time go to the front of the buffer again (a
    /// fresh packet each time), or, out of attempts, their message is given up.
    fn resend_due(&mut self, now_us: u64) {
        while let Some(p) = self.unacked.as_mut().and_then(|u| u.pop_due(now_us)) {
            let f = p.fragment;
            if f.attempts < self.max_attempts {
                self.buffer.push_front(f);
                continue;
            }
            let msg_id = f.msg_id;
            if let Some(unacked) = self.unacked.as_mut() {
                unacked.forget_message(msg_id);
            }
            self.buffer.retain(|b| b.msg_id != msg_id);
            self.stats.gave_up += 1;
            self.push_event(ClientEvent::GaveUp {
                msg_id,
                at_us: now_us,
            });
        }
    }

    fn write_loop(&mut self, now_us: u64, buf: &mut [u8]) -> bool {
        if self.stash.is_some() {
            let Some((nonce, delay_us)) = self.write_prebuilt(CoverKind::Loop, now_us, buf) else {
                return false;
            };
            self.loops.sent(nonce, now_us, delay_us);
            self.stats.sent_loop += 1;
            return true;
        }
        let nonce = self.rng.next_u64();
        let mut body = [0u8; 16];
        payload::write_loop(&mut body, nonce);
        let (rng, path) = (&mut self.rng, &mut self.path);
        let ok = self.paths.client_path(
            rng,
            now_us,
            self.provider,
            self.id,
            Command::LoopReturn,
            path,
        );
        let built = self.build_on(ok, &body, buf);
        if built {
            self.loops
                .sent(nonce, now_us, requested_delay_us(&self.path));
            self.stats.sent_loop += 1;
        }
        built
    }

    fn write_drop(&mut self, now_us: u64, buf: &mut [u8]) -> bool {
        let built = if self.stash.is_some() {
            self.write_prebuilt(CoverKind::Drop, now_us, buf).is_some()
        } else {
            let ok = self
                .paths
                .drop_path(&mut self.rng, now_us, self.provider, &mut self.path);
            self.build_on(ok, &[], buf)
        };
        if built {
            self.stats.sent_drop += 1;
        }
        built
    }

    /// Writes a stashed cover packet of `kind` into `buf`, building a batch first if none
    /// is ready; returns the loop nonce its body carries and the delays its path asked for.
    fn write_prebuilt(
        &mut self,
        kind: CoverKind,
        now_us: u64,
        buf: &mut [u8],
    ) -> Option<(u64, u64)> {
        let ready = self.stash.as_mut()?.take(kind, now_us);
        let p = match ready {
            Some(p) => p,
            None => {
                self.build_cover_batch(kind, now_us);
                self.stash.as_mut()?.take(kind, now_us)?
            }
        };
        let len = self.params.packet_len();
        buf[..len].copy_from_slice(&p.bytes[..len]);
        let sent = (p.nonce, p.requested_delay_us);
        self.stash.as_mut()?.recycle(p.bytes);
        Some(sent)
    }

    /// Builds up to [`COVER_BATCH`] packets of `kind` together and stashes them; paths
    /// are drawn until one cannot be made (a failure counted when none could).
    fn build_cover_batch(&mut self, kind: CoverKind, now_us: u64) {
        let Some(stash) = self.stash.as_mut() else {
            return;
        };
        let mut nonces = [0u64; COVER_BATCH];
        let mut bodies = [[0u8; 16]; COVER_BATCH];
        let mut n = 0;
        for (i, path) in self.batch_paths.iter_mut().enumerate() {
            let ok = match kind {
                CoverKind::Drop => self
                    .paths
                    .drop_path(&mut self.rng, now_us, self.provider, path),
                CoverKind::Loop => {
                    nonces[i] = self.rng.next_u64();
                    payload::write_loop(&mut bodies[i], nonces[i]);
                    self.paths.client_path(
                        &mut self.rng,
                        now_us,
                        self.provider,
                        self.id,
                        Command::LoopReturn,
                        path,
                    )
                }
            };
            if ok.is_err() {
                break;
            }
            n += 1;
        }
        if n == 0 {
            self.stats.build_failed += 1;
            return;
        }
        let mut bufs: [Vec<u8>; COVER_BATCH] =
            std::array::from_fn(|i| if i < n { stash.buffer() } else { Vec::new() });
        let jobs: [loopix_crypto::BuildJob<'_>; COVER_BATCH] =
            std::array::from_fn(|i| loopix_crypto::BuildJob {
                path: &self.batch_paths[i],
                payload: match kind {
                    CoverKind::Drop => &[],
                    CoverKind::Loop => &bodies[i],
                },
            });
        let mut outs = bufs.each_mut().map(Vec::as_mut_slice);
        let built = C::build_batch_into(&self.params, &jobs[..n], &mut self.rng, &mut outs[..n]);
        for (i, bytes) in bufs.into_iter().enumerate().take(n) {
            if built.is_err() {
                stash.recycle(bytes);
                continue;
            }
            stash.keep(
                kind,
                Prebuilt {
                    bytes,
                    built_at_us: now_us,
                    nonce: nonces[i],
                    requested_delay_us: requested_delay_us(&self.batch_paths[i]),
                },
            );
        }
        self.stats.build_failed += u64::from(built.is_err());
        self.stats.cover_batches += u64::from(built.is_ok());
    }

    /// Builds along `self.path` when the path could be made; counts a failure (e.g. the
    /// topology has no key yet for an epoch the path falls in).
    fn build_on(&mut self, path: Result<NodeId, PathError>, body: &[u8], buf: &mut [u8]) -> bool {
        let out = &mut buf[..self.params.packet_len()];
        let built = path.is_ok()
            && C::build_into(&self.params, &self.path, body, &mut self.rng, out).is_ok();
        self.stats.build_failed += u64::from(!built);
        built
    }

    /// A poll's body: N ack ids (of the last answer's items, or random).
    fn write_poll(&mut self, body: &mut [u8]) {
        for chunk in body[..8 * self.poll_size].chunks_exact_mut(8) {
            let id = self
                .pending_acks
                .pop_front()
                .unwrap_or_else(|| self.rng.next_u64());
            chunk.copy_from_slice(&id.to_le_bytes());
        }
        self.polls_unanswered += 1;
        self.stats.polls += 1;
    }

    /// Queues an event; beyond 4096 undrained events the oldest is discarded.
    fn push_event(&mut self, event: ClientEvent) {
        if self.events.len() >= 4096 {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn receive_item(&mut self, now_us: u64, item: &[u8]) {
        let Some(wire::Item {
            id,
            waiting,
            packet,
        }) = wire::read_item(item)
        else {
            return;
        };
        if u64::from(waiting) != self.stats.waiting_at_provider {
            self.stats.waiting_at_provider = waiting.into();
            self.push_event(ClientEvent::Backlog {
                waiting,
                at_us: now_us,
            });
        }
        if packet.len() != self.scratch.len() {
            return;
        }
        self.stats.items_received += 1;
        self.pending_acks.push_back(id);
        // A poll can come back with items an earlier poll already brought (the provider
        // had not yet taken that poll's acks): acked again, not processed again (each
        // reply block is good for one ack; a second would be dropped as a replay).
        if !self.seen_items.insert(id) {
            self.stats.items_repeated += 1;
            return;
        }
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
            (Ok(Command::Reply { surb_id }), _) => self.receive_reply(now_us, surb_id),
            (
                Ok(Command::Final),
                Some(Content::Fragment {
                    msg_id,
                    index,
                    count,
                    surb,
                    data,
                }),
            ) => {
                // Every copy is acked, delivered or not: an ack may have been lost.
                if let Some(surb) = surb.and_then(|s| <[u8; SURB_LEN]>::try_from(s).ok()) {
                    if self.ack_replies.len() < MAX_ACK_REPLIES {
                        self.ack_replies.push_back(AckReply {
                            surb,
                            msg_id,
                            index,
                        });
                    } else {
                        self.stats.acks_dropped += 1;
                    }
                }
                let complete = self.reassembly.add(msg_id, index, count, data);
                let (at_us, item_id) = (now_us, id);
                self.push_event(ClientEvent::FragmentReceived {
                    msg_id,
                    index,
                    item_id,
                    at_us,
                });
                if let Some(envelope) = complete {
                    self.deliver(now_us, msg_id, &envelope);
                }
            }
            (Err(loopix_crypto::ProcessError::PayloadTampered), _) => {
                self.stats.tampered_received += 1;
            }
            _ => self.stats.dummies_received += 1,
        }
    }
}

/// A message and the reply blocks its envelope carried; `None` if it does not parse.
fn open_envelope(envelope: &[u8]) -> Option<(&[u8], Vec<ReplyBlock>)> {
    match envelope.split_first()? {
        (&ENVELOPE_PLAIN, message) => Some((message, Vec::new())),
        (&ENVELOPE_REPLIES, rest) => {
            let (&n, rest) = rest.split_first()?;
            let (blocks, message) = rest.split_at_checked(usize::from(n) * SURB_LEN)?;
            let blocks = blocks
                .chunks_exact(SURB_LEN)
                .filter_map(|b| <[u8; SURB_LEN]>::try_from(b).ok().map(ReplyBlock))
                .collect();
            Some((message, blocks))
        }
        _ => None,
    }
}

impl<C: Codec> Endpoint for Client<C> {
    fn id(&self) -> NodeId {
        self.id
    }

    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]) {
        if from != self.provider_addr {
            self.stats.foreign += 1;
            return;
        }
        let mut plain = std::mem::take(&mut self.plain);
        if let Opened::Plain(p) = self.session.open(now_us, bytes, &mut plain)
            && p.kind == FrameKind::Item
        {
            self.polls_unanswered = 0;
            let item = &p.body[..ITEM_HEADER_LEN + self.params.packet_len()];
            self.receive_item(now_us, item);
        }
        self.plain = plain;
    }

    fn handle_timeout(&mut self, now_us: u64) {
        self.start_timers(now_us);
        self.session.expire(now_us);
        self.resend_due(now_us);
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
        let len = self.next_frame(now_us, buf)?;
        Some(Transmit {
            to: self.provider_addr,
            len,
        })
    }

    fn poll_timeout(&self) -> Option<u64> {
        // Not started: its first timeout starts its streams.
        let Some(t) = &self.timers else {
            return Some(0);
        };
        let ack_due = self.unacked.as_ref().and_then(Unacked::next_due);
        [t.payload, t.loop_cover, t.drop_cover, t.poll]
            .iter()
            .filter_map(|t| t.next_us())
            .chain([self.session.next_deadline_us()])
            .chain(ack_due)
            .min()
    }

    fn max_datagram_len(&self) -> usize {
        self.plain.len() + crate::session::frame::HEADER_LEN + crate::session::frame::TAG_LEN
    }

    fn reload(
        &mut self,
        topology: &Topology,
        _seed: Option<loopix_crypto::EpochSeed>,
    ) -> Result<(), BuildError> {
        Client::reload(self, topology)
    }

    fn poll_event(&mut self) -> Option<crate::endpoint::RoleEvent> {
        Client::poll_event(self).map(crate::endpoint::RoleEvent::Client)
    }
}
