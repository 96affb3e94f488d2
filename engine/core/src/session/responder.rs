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
    RESPONSE_LEN, RESPONSE_NONCE,
};
use super::handshake_guard::{Admission, Bucket, HandshakeGuard, HandshakeLimits};
use super::noise;
use super::transport::{Refusal, Transport};
use super::{MAX_CLOCK_SKEW_US, REJECT_AFTER_US};
use crate::drops::DropReason;

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
    /// Refused, for this reason.
    Dropped(DropReason),
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
        };
        s.set_clients(clients);
        s
    }

    /// The same with these handshake limits.
    pub fn with_limits(mut self, limits: HandshakeLimits) -> Self {
        self.guard.set_limits(limits);
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
        let held = self.by_client.get(&client).copied().unwrap_or_default();
        let stale = held.last_handshake_us.is_some_and(|last| at_us <= last);
        if stale || at_us.abs_diff(now_us) > MAX_CLOCK_SKEW_US {
            return Received::Dropped(DropReason::SessionReplay);
        }
        let mut allowance = held.allowance;
        if !self.guard.client_may_handshake(&mut allowance, now_us) {
            if let Some(s) = self.by_client.get_mut(&client) {
                s.allowance = allowance;
            }
            return Received::Dropped(DropReason::HandshakeRateLimited);
        }
        let peer_index = u32::from_le_bytes(frame[4..8].try_into().unwrap_or_default());
        let index = self.fresh_index();
        let len = self.layout.frame_len();
        let response = &mut out[..len];
        self.rng.fill_bytes(response);
        frame::write_header(response, peer_index, RESPONSE_NONCE);
        response[12..16].copy_from_slice(&index.to_le_bytes());
        let written = state.write_message(&[], &mut response[16..16 + RESPONSE_LEN]);
        let transport = written
            .ok()
            .and_then(|_| state.into_stateless_transport_mode().ok());
        let Some(transport) = transport else {
            return Received::Dropped(DropReason::Unauthenticated);
        };
        if let Some(old) = held.previous {
            self.by_index.remove(&old);
        }
        self.by_index.insert(
            index,
            Session {
                client,
                key,
                transport: Transport::new(transport, peer_index),
                peer: from,
                since_us: now_us,
            },
        );
        self.by_client.insert(
            client,
            ClientSessions {
                current: Some(index),
                previous: held.current,
                last_handshake_us: Some(at_us),
                allowance,
            },
        );
        Received::Response { len }
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if i != 0 && !self.by_index.contains_key(&i) {
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
