//! The client's side of its session: starts handshakes, seals what it sends, opens what
//! its provider answers. See the [module docs](super).

use loopix_crypto::handshake_mac::{
    self, Cookie, HandshakeKeys, HandshakeMac, MAC_LEN, SEALED_COOKIE_LEN,
};
use loopix_crypto::{SessionPublic, SessionSecret};
use rand_core::Rng;
use snow::HandshakeState;

use super::frame::{
    self, COOKIE_NONCE, FrameLayout, HEADER_LEN, INITIATION_LEN, MAC1_AT, MAC2_AT, Plain,
    RESPONSE_LEN, RESPONSE_NONCE,
};
use super::handshake_guard::COOKIE_LIFETIME_US;
use super::noise;
use super::transport::Transport;
use super::{HANDSHAKE_RETRY_US, REJECT_AFTER_US, REKEY_AFTER_US};

/// What a frame from the provider turned out to be.
#[derive(Debug)]
pub enum Opened<'a> {
    /// The answer to our handshake: the session is up.
    Established,
    /// The provider is under load and sent a cookie for our address: the next
    /// initiation, due at once, carries it.
    CookieTaken,
    /// A plaintext from the provider.
    Plain(Plain<'a>),
    /// Not for us, forged, replayed, or for a session we no longer hold.
    Refused,
}

/// When the client should send a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeDue {
    /// Not now.
    No,
    /// Now: there is no session to send anything else in.
    Now,
    /// On the next cover tick: the session is due for new keys.
    OnCover,
}

struct Pending {
    state: HandshakeState,
    index: u32,
    /// Its mac1: a cookie reply is bound to it.
    mac1: HandshakeMac,
}

struct Link {
    transport: Transport,
    /// Our index: the provider's frames name it.
    index: u32,
    since_us: u64,
}

/// Counters of a client's session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientSessionStats {
    pub handshakes_sent: u64,
    pub established: u64,
    /// Cookie replies taken (the provider was under load).
    pub cookies: u64,
    /// Frames from the provider that did not open (forged, replayed, stale session).
    pub refused: u64,
}

/// See the module docs.
pub struct ClientSession {
    local: SessionSecret,
    provider: SessionPublic,
    macs: HandshakeKeys,
    /// The last cookie the provider sent, and when.
    cookie: Option<(Cookie, u64)>,
    layout: FrameLayout,
    pending: Option<Pending>,
    link: Option<Link>,
    /// The session before the last rekey: still opened, for answers already on their way.
    previous: Option<Link>,
    /// When the last handshake was tried (sent, or failed to be written).
    last_attempt_us: Option<u64>,
    stats: ClientSessionStats,
}

impl ClientSession {
    /// A client with key `local` talking to the provider whose session key is `provider`.
    pub fn new(local: SessionSecret, provider: SessionPublic, layout: FrameLayout) -> Self {
        Self {
            local,
            macs: HandshakeKeys::new(&provider),
            provider,
            cookie: None,
            layout,
            pending: None,
            link: None,
            previous: None,
            last_attempt_us: None,
            stats: ClientSessionStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ClientSessionStats {
        self.stats
    }

    /// Whether a session is up to send in at `now_us`.
    pub fn is_up(&self, now_us: u64) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| now_us.saturating_sub(l.since_us) < REJECT_AFTER_US)
    }

    /// Whether to send a handshake now, on a cover tick, or not at all.
    pub fn handshake_due(&self, now_us: u64) -> HandshakeDue {
        let retry_due = self
            .last_attempt_us
            .is_none_or(|t| now_us >= t + HANDSHAKE_RETRY_US);
        match &self.link {
            _ if !retry_due => HandshakeDue::No,
            _ if !self.is_up(now_us) => HandshakeDue::Now,
            Some(l) if now_us.saturating_sub(l.since_us) >= REKEY_AFTER_US => HandshakeDue::OnCover,
            _ => HandshakeDue::No,
        }
    }

    /// When the session needs the driver next: when it ends (its reject time), or with
    /// none up, when the next handshake may go out.
    pub fn next_deadline_us(&self) -> u64 {
        match &self.link {
            Some(l) => l.since_us + REJECT_AFTER_US,
            None => self.last_attempt_us.map_or(0, |t| t + HANDSHAKE_RETRY_US),
        }
    }

    /// Drops a session past its reject time (call before asking [`Self::handshake_due`]).
    pub fn expire(&mut self, now_us: u64) {
        if self.link.is_some() && !self.is_up(now_us) {
            self.previous = self.link.take();
        }
    }

    /// Forgets the session (e.g. the provider stopped answering): the next transmit is a
    /// handshake.
    pub fn reset(&mut self) {
        self.link = None;
        self.pending = None;
        self.last_attempt_us = None;
    }

    /// Writes a handshake initiation frame into `out`; returns its length. Its timestamp
    /// is `now_us` on the network clock.
    pub fn write_initiation<R: Rng + ?Sized>(
        &mut self,
        now_us: u64,
        rng: &mut R,
        out: &mut [u8],
    ) -> Option<usize> {
        self.last_attempt_us = Some(now_us);
        let len = self.layout.frame_len();
        let out = out.get_mut(..len)?;
        let mut state = noise::builder(rng)
            .local_private_key(self.local.as_bytes())
            .and_then(|b| b.remote_public_key(&self.provider.0))
            .and_then(|b| b.build_initiator())
            .ok()?;
        let index = rng.next_u32().max(1);
        rng.fill_bytes(out);
        out[..4].fill(0);
        out[4..8].copy_from_slice(&index.to_le_bytes());
        out[8..12].fill(0);
        let body = &mut out[HEADER_LEN..HEADER_LEN + INITIATION_LEN];
        let n = state.write_message(&now_us.to_le_bytes(), body).ok()?;
        debug_assert_eq!(n, INITIATION_LEN);
        let mac1 = self.macs.mac1(&out[..MAC1_AT]);
        out[MAC1_AT..MAC2_AT].copy_from_slice(&mac1);
        let cookie = self
            .cookie
            .filter(|(_, at)| now_us < at + COOKIE_LIFETIME_US)
            .map(|(c, _)| c);
        let mac2 = match cookie {
            Some(c) => handshake_mac::mac2(&c, &out[..MAC2_AT]),
            None => [0; MAC_LEN],
        };
        out[MAC2_AT..MAC2_AT + MAC_LEN].copy_from_slice(&mac2);
        self.pending = Some(Pending { state, index, mac1 });
        self.stats.handshakes_sent += 1;
        Some(len)
    }

    /// Seals a plaintext of [`FrameLayout::plaintext_len`] bytes into a frame in `out`;
    /// returns its length, or `None` with no session up.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Option<usize> {
        let len = self.layout.frame_len();
        self.link.as_mut()?.transport.seal(plain, out, len)
    }

    /// Opens a frame from the provider, writing any plaintext into `plain`.
    pub fn open<'a>(&mut self, now_us: u64, frame: &[u8], plain: &'a mut [u8]) -> Opened<'a> {
        let opened = self.try_open(now_us, frame, plain);
        if matches!(opened, Opened::Refused) {
            self.stats.refused += 1;
        }
        opened
    }

    fn try_open<'a>(&mut self, now_us: u64, frame: &[u8], plain: &'a mut [u8]) -> Opened<'a> {
        if frame.len() != self.layout.frame_len() {
            return Opened::Refused;
        }
        let (Some(receiver), Some(nonce)) = (frame::receiver_index(frame), frame::nonce(frame))
        else {
            return Opened::Refused;
        };
        if nonce == RESPONSE_NONCE {
            return self.finish_handshake(now_us, receiver, frame);
        }
        if nonce == COOKIE_NONCE {
            return self.take_cookie(now_us, receiver, frame);
        }
        let link = [self.link.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|l| l.index == receiver);
        let Some(link) = link else {
            return Opened::Refused;
        };
        let n = self.layout.plaintext_len();
        if link.transport.open(nonce, frame, plain, n).is_err() {
            return Opened::Refused;
        }
        match Plain::parse(&plain[..n]) {
            Some(p) => Opened::Plain(p),
            None => Opened::Refused,
        }
    }

    /// A cookie reply to our pending initiation: kept for the next one, which is due now.
    fn take_cookie<'a>(&mut self, now_us: u64, receiver: u32, frame: &[u8]) -> Opened<'a> {
        let Some(pending) = self.pending.as_ref().filter(|p| p.index == receiver) else {
            return Opened::Refused;
        };
        let sealed: Option<&[u8; SEALED_COOKIE_LEN]> = frame
            .get(HEADER_LEN..HEADER_LEN + SEALED_COOKIE_LEN)
            .and_then(|b| b.try_into().ok());
        let Some(cookie) = sealed.and_then(|s| self.macs.open_cookie(s, &pending.mac1)) else {
            return Opened::Refused;
        };
        self.cookie = Some((cookie, now_us));
        self.last_attempt_us = None;
        self.stats.cookies += 1;
        Opened::CookieTaken
    }

    fn finish_handshake<'a>(&mut self, now_us: u64, receiver: u32, frame: &[u8]) -> Opened<'a> {
        if self.pending.as_ref().is_none_or(|p| p.index != receiver) {
            return Opened::Refused;
        }
        let Some(mut pending) = self.pending.take() else {
            return Opened::Refused;
        };
        let peer_index = u32::from_le_bytes(frame[12..16].try_into().unwrap_or_default());
        let message = &frame[16..16 + RESPONSE_LEN];
        let read = pending.state.read_message(message, &mut []);
        if read.is_err() || !pending.state.is_handshake_finished() {
            // A forged answer (the handshake state is spent): the next transmit starts
            // over rather than wait for a retry.
            return Opened::Refused;
        }
        let Ok(transport) = pending.state.into_stateless_transport_mode() else {
            return Opened::Refused;
        };
        self.previous = self.link.take();
        self.link = Some(Link {
            transport: Transport::new(transport, peer_index),
            index: pending.index,
            since_us: now_us,
        });
        self.stats.established += 1;
        Opened::Established
    }
}
