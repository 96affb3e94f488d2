//! The provider's side: one table of sessions for all its clients. A client has at most
//! two (the current one and the one before its last rekey, for answers in flight), so the
//! table is bounded by the topology. Who a frame is from is decided here, from what
//! authenticates, never from its source address: the address is only where answers go,
//! taken from the last frame that authenticated (so a client may move, as in WireGuard).
//! See the [module docs](super).

use std::collections::HashMap;
use std::net::SocketAddr;

use loopix_crypto::{NodeId, SessionPublic, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::frame::{
    self, COOKIE_NONCE, FrameLayout, HEADER_LEN, INITIATION_LEN, MAC1_AT, MAC2_AT, Plain,
    RESPONSE_LEN, RESPONSE_NONCE, receiver_shard,
};
use super::handshake_guard::{Admission, Bucket, HandshakeGuard, HandshakeLimits};
use super::noise;
use super::transport::{Refusal, Transport};
use super::{MAX_CLOCK_SKEW_US, REJECT_AFTER_US};
use crate::drops::DropReason;
use crate::pipeline::steering::home_shard;

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Received<'a> {
    /// A valid handshake: the response frame, `len` bytes, is in the output buffer; send
    /// it to the frame's source.
    Response { len: usize },
    /// An initiation while under load without a valid mac2: a cookie frame, `len` bytes,
    /// is in the output buffer; send it to the frame's source.
    Cookie { len: usize },
    /// A plaintext from `client`, in session `index`.
    Plain {
        client: NodeId,
        index: u32,
        plain: Plain<'a>,
    },
    /// A valid handshake of a client whose home is another of the provider's shards
    /// ([`crate::pipeline::steering::home_shard`]): hand it there, to [`Sessions::take`].
    Handoff(Box<Accepted>),
    /// Refused, for this reason.
    Dropped(DropReason),
}

/// A handshake read and answered on the shard its initiation reached (the Diffie-Hellmans
/// are done there, so initiations spread over the shards), for the client's home shard to
/// take: what decides whether it is accepted (is it newer than the client's last, is the
/// client within its handshake allowance) is the client's state, and lives on its home.
pub struct Accepted {
    client: NodeId,
    key: SessionPublic,
    /// The initiation's timestamp.
    at_us: u64,
    /// The session's index here, one that steers to the client's home.
    index: u32,
    transport: Transport,
    from: SocketAddr,
    /// The response frame, to send once the session is taken.
    response: Box<[u8]>,
}

impl Accepted {
    /// Whose handshake it is.
    pub fn client(&self) -> NodeId {
        self.client
    }
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("client", &self.client)
            .field("index", &self.index)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

struct Session {
    client: NodeId,
    /// The static key its handshake proved: a client re-keyed in the topology keeps no
    /// session made under its old key.
    key: SessionPublic,
    transport: Transport,
    /// Where answers go: the source of the last frame that authenticated.
    peer: SocketAddr,
    since_us: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct ClientSessions {
    current: Option<u32>,
    previous: Option<u32>,
    /// The timestamp of the last handshake accepted: a handshake must be newer.
    last_handshake_us: Option<u64>,
    /// Its handshake allowance ([`HandshakeGuard::client_may_handshake`]).
    allowance: Bucket,
}

/// See the module docs.
pub struct Sessions {
    local: SessionSecret,
    layout: FrameLayout,
    /// Clients of this provider, by their session key.
    clients: HashMap<SessionPublic, NodeId>,
    by_client: HashMap<NodeId, ClientSessions>,
    by_index: HashMap<u32, Session>,
    guard: HandshakeGuard,
    /// Initiations that got as far as a Diffie-Hellman.
    computed: u64,
    rng: ChaCha20Rng,
    /// Which of the provider's shards holds this table, of how many.
    shard: usize,
    shards: usize,
}

impl Sessions {
    /// A provider with key `local`, serving `clients` (id and session key each).
    pub fn new(
        local: SessionSecret,
        layout: FrameLayout,
        clients: impl IntoIterator<Item = (NodeId, SessionPublic)>,
        seed: [u8; 32],
    ) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut guard_seed = [0u8; 32];
        rng.fill_bytes(&mut guard_seed);
        let keys = loopix_crypto::handshake_mac::HandshakeKeys::new(&local.public());
        let mut s = Self {
            local,
            layout,
            clients: HashMap::new(),
            by_client: HashMap::new(),
            by_index: HashMap::new(),
            guard: HandshakeGuard::new(
                keys,
                HandshakeLimits::default(),
                ChaCha20Rng::from_seed(guard_seed),
            ),
            computed: 0,
            rng,
            shard: 0,
            shards: 1,
        };
        s.set_clients(clients);
        s
    }

    /// The same with these handshake limits.
    pub fn with_limits(mut self, limits: HandshakeLimits) -> Self {
        self.guard.set_limits(limits);
        self
    }

    /// The table of shard `shard` of a provider running `shards`: it holds the sessions of
    /// the clients whose home it is, with indices that steer their frames here.
    pub fn on_shard(mut self, shard: usize, shards: usize) -> Self {
        self.shard = shard;
        self.shards = shards.max(1);
        self
    }

    /// Takes a new list of clients: sessions of clients no longer on it, or made under a
    /// key the list no longer gives them, end.
    pub fn set_clients(&mut self, clients: impl IntoIterator<Item = (NodeId, SessionPublic)>) {
        self.clients = clients.into_iter().map(|(id, key)| (key, id)).collect();
        let clients = &self.clients;
        self.by_index
            .retain(|_, s| clients.get(&s.key) == Some(&s.client));
        let served: std::collections::HashSet<NodeId> = clients.values().copied().collect();
        let by_index = &self.by_index;
        self.by_client.retain(|c, held| {
            held.current = held.current.filter(|i| by_index.contains_key(i));
            held.previous = held.previous.filter(|i| by_index.contains_key(i));
            served.contains(c)
        });
    }

    /// This provider's session key (its links derive from it too).
    pub fn key(&self) -> &SessionSecret {
        &self.local
    }

    /// This provider's session key, as the topology should list it.
    pub fn public(&self) -> SessionPublic {
        self.local.public()
    }

    /// Initiations that got as far as a Diffie-Hellman (valid mac1, admitted).
    pub fn handshakes_computed(&self) -> u64 {
        self.computed
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Whether `client` has a session up.
    pub fn is_up(&self, client: NodeId, now_us: u64) -> bool {
        let current = self.by_client.get(&client).and_then(|s| s.current);
        current
            .and_then(|i| self.by_index.get(&i))
            .is_some_and(|s| now_us.saturating_sub(s.since_us) < REJECT_AFTER_US)
    }

    /// Reads a frame from `from`. Plaintexts and handshake responses are written into
    /// `out` ([`FrameLayout::frame_len`] bytes at least).
    pub fn receive<'a>(
        &mut self,
        now_us: u64,
        from: SocketAddr,
        frame: &[u8],
        out: &'a mut [u8],
    ) -> Received<'a> {
        if frame.len() != self.layout.frame_len() || out.len() < frame.len() {
            return Received::Dropped(DropReason::Malformed);
        }
        let (Some(receiver), Some(nonce)) = (frame::receiver_index(frame), frame::nonce(frame))
        else {
            return Received::Dropped(DropReason::Malformed);
        };
        if receiver == 0 {
            return self.handshake(now_us, from, frame, out);
        }
        if nonce >= COOKIE_NONCE {
            return Received::Dropped(DropReason::Unauthenticated);
        }
        let plain_len = self.layout.plaintext_len();
        let Some(session) = self.by_index.get_mut(&receiver) else {
            return Received::Dropped(DropReason::Unauthenticated);
        };
        if now_us.saturating_sub(session.since_us) >= REJECT_AFTER_US {
            return Received::Dropped(DropReason::Unauthenticated);
        }
        match session.transport.open(nonce, frame, out, plain_len) {
            Ok(()) => {}
            Err(Refusal::Replay) => return Received::Dropped(DropReason::SessionReplay),
            Err(Refusal::Unauthenticated) => {
                return Received::Dropped(DropReason::Unauthenticated);
            }
        }
        session.peer = from;
        let client = session.client;
        match Plain::parse(&out[..plain_len]) {
            Some(plain) => Received::Plain {
                client,
                index: receiver,
                plain,
            },
            None => Received::Dropped(DropReason::Malformed),
        }
    }

    fn handshake<'a>(
        &mut self,
        now_us: u64,
        from: SocketAddr,
        frame: &[u8],
        out: &'a mut [u8],
    ) -> Received<'a> {
        let mac = |at: usize| -> [u8; 16] { frame[at..at + 16].try_into().unwrap_or_default() };
        let (mac1, mac2) = (mac(MAC1_AT), mac(MAC2_AT));
        if !self.guard.mac1_valid(&frame[..MAC1_AT], &mac1) {
            return Received::Dropped(DropReason::HandshakeMac);
        }
        match self
            .guard
            .admit(now_us, from, &frame[..MAC2_AT], &mac1, &mac2)
        {
            Admission::Compute => {}
            Admission::SourceOverLimit => {
                return Received::Dropped(DropReason::HandshakeRateLimited);
            }
            Admission::SendCookie(sealed) => {
                let len = self.layout.frame_len();
                let reply = &mut out[..len];
                self.rng.fill_bytes(reply);
                let initiator = u32::from_le_bytes(frame[4..8].try_into().unwrap_or_default());
                frame::write_header(reply, initiator, COOKIE_NONCE);
                reply[HEADER_LEN..HEADER_LEN + sealed.len()].copy_from_slice(&sealed);
                return Received::Cookie { len };
            }
        }
        self.guard.computed(now_us);
        self.computed += 1;
        let Ok(state) = noise::builder(&mut self.rng)
            .local_private_key(self.local.as_bytes())
            .and_then(|b| b.build_responder())
        else {
            return Received::Dropped(DropReason::Unauthenticated);
        };
        let mut state = state;
        let mut timestamp = [0u8; 8];
        let message = &frame[HEADER_LEN..HEADER_LEN + INITIATION_LEN];
        if state.read_message(message, &mut timestamp) != Ok(8) {
            return Received::Dropped(DropReason::Unauthenticated);
        }
        let key = state
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(SessionPublic);
        let Some((key, client)) = key.and_then(|k| Some((k, *self.clients.get(&k)?))) else {
            return Received::Dropped(DropReason::Unauthenticated);
        };
        let at_us = u64::from_le_bytes(timestamp);
        if at_us.abs_diff(now_us) > MAX_CLOCK_SKEW_US {
            return Received::Dropped(DropReason::SessionReplay);
        }
        let home = home_shard(client, self.shards);
        let peer_index = u32::from_le_bytes(frame[4..8].try_into().unwrap_or_default());
        let index = self.fresh_index(home);
        let len = self.layout.frame_len();
        let mut response = vec![0u8; len].into_boxed_slice();
        self.rng.fill_bytes(&mut response);
        frame::write_header(&mut response, peer_index, RESPONSE_NONCE);
        response[12..16].copy_from_slice(&index.to_le_bytes());
        let written = state.write_message(&[], &mut response[16..16 + RESPONSE_LEN]);
        let transport = written
            .ok()
            .and_then(|_| state.into_stateless_transport_mode().ok());
        let Some(transport) = transport else {
            return Received::Dropped(DropReason::Unauthenticated);
        };
        let accepted = Accepted {
            client,
            key,
            at_us,
            index,
            transport: Transport::new(transport, peer_index),
            from,
            response,
        };
        if home != self.shard {
            return Received::Handoff(Box::new(accepted));
        }
        match self.install(now_us, accepted) {
            Ok(response) => {
                out[..len].copy_from_slice(&response);
                Received::Response { len }
            }
            Err(reason) => Received::Dropped(reason),
        }
    }

    /// Takes a handshake another shard read for a client whose home this is
    /// ([`Received::Handoff`]): the response frame and where to send it, or why it was
    /// refused.
    pub fn take(
        &mut self,
        now_us: u64,
        accepted: Box<Accepted>,
    ) -> Result<(SocketAddr, Box<[u8]>), DropReason> {
        let from = accepted.from;
        self.install(now_us, *accepted).map(|r| (from, r))
    }

    /// Decides a handshake by its client's state, and makes its session the client's
    /// current one: the response frame to send.
    fn install(&mut self, now_us: u64, a: Accepted) -> Result<Box<[u8]>, DropReason> {
        if home_shard(a.client, self.shards) != self.shard
            || self.clients.get(&a.key) != Some(&a.client)
        {
            return Err(DropReason::Unauthenticated);
        }
        let held = self.by_client.get(&a.client).copied().unwrap_or_default();
        if held.last_handshake_us.is_some_and(|last| a.at_us <= last) {
            return Err(DropReason::SessionReplay);
        }
        if self.by_index.contains_key(&a.index) {
            // Another shard picked an index already in use here: one in 2^32 / sessions.
            return Err(DropReason::Overload);
        }
        let mut allowance = held.allowance;
        if !self.guard.client_may_handshake(&mut allowance, now_us) {
            if let Some(s) = self.by_client.get_mut(&a.client) {
                s.allowance = allowance;
            }
            return Err(DropReason::HandshakeRateLimited);
        }
        if let Some(old) = held.previous {
            self.by_index.remove(&old);
        }
        self.by_index.insert(
            a.index,
            Session {
                client: a.client,
                key: a.key,
                transport: a.transport,
                peer: a.from,
                since_us: now_us,
            },
        );
        self.by_client.insert(
            a.client,
            ClientSessions {
                current: Some(a.index),
                previous: held.current,
                last_handshake_us: Some(a.at_us),
                allowance,
            },
        );
        Ok(a.response)
    }

    /// A session index not in use here, whose frames steer to shard `home`.
    fn fresh_index(&mut self, home: usize) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if i != 0 && receiver_shard(i, self.shards) == home && !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    /// Seals `plain` ([`FrameLayout::plaintext_len`] bytes) for session `index` into
    /// `out`: where to send it and its length, or `None` if that session is gone.
    pub fn seal(
        &mut self,
        now_us: u64,
        index: u32,
        plain: &[u8],
        out: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let len = self.layout.frame_len();
        let session = self.by_index.get_mut(&index)?;
        if now_us.saturating_sub(session.since_us) >= REJECT_AFTER_US {
            return None;
        }
        let len = session.transport.seal(plain, out, len)?;
        Some((session.peer, len))
    }
}
