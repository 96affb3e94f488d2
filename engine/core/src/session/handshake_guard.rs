//! What a provider decides about an initiation before it spends a Diffie-Hellman on it,
//! and how many it spends: the WireGuard scheme (see `loopix_crypto::handshake_mac`).
//!
//! 1. mac1 must be valid, or the frame is refused (`handshake_mac`): junk costs one BLAKE2s.
//! 2. While the provider is **under load** (more than [`HandshakeLimits::load_per_s`]
//!    handshakes computed in the last second), an initiation must carry a valid mac2, the
//!    proof that its sender receives at its source address; without one it is answered
//!    with a cookie for that address (one frame for one frame) and nothing more. With one,
//!    its source address must be within its allowance ([`HandshakeLimits::per_source_per_s`],
//!    a token bucket), or it is refused (`handshake_rate_limited`).
//! 3. Once the handshake shows which client sent it, a client past its own allowance (a
//!    burst of [`PER_CLIENT_BURST`], then one a [`HandshakeLimits::per_client_interval_us`])
//!    is refused (`handshake_rate_limited`) before the provider answers: a registered client
//!    cannot make it churn sessions, and an honest one (a session at start, a new one after
//!    a reload or a lost answer, a rekey every two minutes) never meets the bound.
//!
//! Everything here is bounded: the per-source buckets are a fixed table indexed by a keyed
//! hash of the address (two addresses may share a bucket, which only makes their allowance
//! stricter; the key keeps senders from choosing to).

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use loopix_crypto::handshake_mac::{self, Cookie, HandshakeMac};
use rand_chacha::ChaCha20Rng;
use rand_core::Rng;
use siphasher::sip::SipHasher13;
use zeroize::Zeroizing;

/// A provider changes its cookie secret this often; a client holds a cookie no longer.
pub const COOKIE_LIFETIME_US: u64 = 120_000_000;

/// Buckets of the per-source table.
const SOURCE_BUCKETS: usize = 4096;

/// Handshakes a client may complete at once before its interval applies.
pub const PER_CLIENT_BURST: f32 = 4.0;

/// How many handshakes a provider spends work on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandshakeLimits {
    /// Handshakes computed per second (per shard) beyond which the provider is under load.
    pub load_per_s: u32,
    /// Under load: handshakes per second one source address may start (its bucket holds
    /// this many, refilled at this rate).
    pub per_source_per_s: u32,
    /// After a burst of [`PER_CLIENT_BURST`], one handshake a client may complete per
    /// this long.
    pub per_client_interval_us: u64,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            load_per_s: 500,
            per_source_per_s: 20,
            // A client's retry interval: retries after lost answers always go through, a
            // flood of fresh initiations does not.
            per_client_interval_us: super::HANDSHAKE_RETRY_US,
        }
    }
}

/// What to do with an initiation whose mac1 is valid.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Compute the handshake.
    Compute,
    /// Under load without a valid mac2: answer with this (sealed) cookie.
    SendCookie([u8; handshake_mac::SEALED_COOKIE_LEN]),
    /// Under load, and the source is over its allowance.
    SourceOverLimit,
}

/// A token bucket: `tokens` at `at_us`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    tokens: f32,
    /// When it was last drawn on; `None`: never (it is full).
    at_us: Option<u64>,
}

impl Bucket {
    /// Takes a token if there is one, refilling at `per_s` up to `burst` first.
    pub fn take(&mut self, now_us: u64, per_s: f32, burst: f32) -> bool {
        let elapsed_s = self
            .at_us
            .map_or(f32::INFINITY, |t| now_us.saturating_sub(t) as f32 / 1e6);
        self.tokens = (self.tokens + elapsed_s * per_s).min(burst);
        self.at_us = Some(now_us);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// See the module docs.
pub struct HandshakeGuard {
    keys: handshake_mac::HandshakeKeys,
    limits: HandshakeLimits,
    secret: Zeroizing<[u8; 32]>,
    previous_secret: Zeroizing<[u8; 32]>,
    secret_since_us: Option<u64>,
    /// Handshakes computed in the current second and the one before it.
    window_start_us: u64,
    this_window: u32,
    last_window: u32,
    sources: Box<[Bucket]>,
    source_key: (u64, u64),
    rng: ChaCha20Rng,
}

impl HandshakeGuard {
    /// The guard of the provider whose public session key gives `keys`.
    pub fn new(
        keys: handshake_mac::HandshakeKeys,
        limits: HandshakeLimits,
        mut rng: ChaCha20Rng,
    ) -> Self {
        let source_key = (rng.next_u64(), rng.next_u64());
        Self {
            keys,
            limits,
            secret: Zeroizing::new([0; 32]),
            previous_secret: Zeroizing::new([0; 32]),
            secret_since_us: None,
            window_start_us: 0,
            this_window: 0,
            last_window: 0,
            sources: vec![Bucket::default(); SOURCE_BUCKETS].into_boxed_slice(),
            source_key,
            rng,
        }
    }

    /// Takes these limits from now on (a provider sets its configured ones once, at start).
    pub fn set_limits(&mut self, limits: HandshakeLimits) {
        self.limits = limits;
    }

    /// Whether a client whose allowance is `bucket` may complete a handshake now.
    pub fn client_may_handshake(&self, bucket: &mut Bucket, now_us: u64) -> bool {
        let interval_s = self.limits.per_client_interval_us as f32 / 1e6;
        let per_s = if interval_s > 0.0 {
            1.0 / interval_s
        } else {
            f32::INFINITY
        };
        bucket.take(now_us, per_s, PER_CLIENT_BURST)
    }

    /// Whether `initiation`'s mac1 is valid (the frame bytes before it, checked against it).
    pub fn mac1_valid(&self, before: &[u8], mac1: &HandshakeMac) -> bool {
        self.keys.mac1_valid(before, mac1)
    }

    /// Decides on an initiation from `from` whose mac1 is valid: `before_mac2` is the frame
    /// up to its mac2, `mac2` the field itself.
    pub fn admit(
        &mut self,
        now_us: u64,
        from: SocketAddr,
        before_mac2: &[u8],
        mac1: &HandshakeMac,
        mac2: &HandshakeMac,
    ) -> Admission {
        self.rotate(now_us);
        if !self.under_load(now_us) {
            return Admission::Compute;
        }
        let source = address_bytes(from);
        let proven = [&self.secret, &self.previous_secret].into_iter().any(|s| {
            let cookie = handshake_mac::cookie(s, &source.0[..source.1]);
            handshake_mac::ct_eq(&handshake_mac::mac2(&cookie, before_mac2), mac2)
        });
        if !proven {
            let cookie: Cookie = handshake_mac::cookie(&self.secret, &source.0[..source.1]);
            let mut nonce = [0u8; 24];
            self.rng.fill_bytes(&mut nonce);
            return Admission::SendCookie(self.keys.seal_cookie(&nonce, &cookie, mac1));
        }
        if !self.take_source_token(now_us, from.ip()) {
            return Admission::SourceOverLimit;
        }
        Admission::Compute
    }

    /// Counts a handshake computed at `now_us` (the load measure).
    pub fn computed(&mut self, now_us: u64) {
        self.advance(now_us);
        self.this_window = self.this_window.saturating_add(1);
    }

    /// Whether more handshakes than the limit were computed in the last second.
    pub fn under_load(&mut self, now_us: u64) -> bool {
        self.advance(now_us);
        // The last whole second, weighted by how much of it the sliding second still covers.
        let into = now_us.saturating_sub(self.window_start_us) as f64 / 1e6;
        let recent = f64::from(self.this_window) + f64::from(self.last_window) * (1.0 - into);
        recent > f64::from(self.limits.load_per_s)
    }

    fn advance(&mut self, now_us: u64) {
        let elapsed = now_us.saturating_sub(self.window_start_us);
        if elapsed >= 2_000_000 {
            self.last_window = 0;
            self.this_window = 0;
            self.window_start_us = now_us;
        } else if elapsed >= 1_000_000 {
            self.last_window = self.this_window;
            self.this_window = 0;
            self.window_start_us += 1_000_000;
        }
    }

    fn rotate(&mut self, now_us: u64) {
        let due = self
            .secret_since_us
            .is_none_or(|t| now_us >= t + COOKIE_LIFETIME_US);
        if due {
            self.previous_secret = self.secret.clone();
            self.rng.fill_bytes(&mut self.secret[..]);
            self.secret_since_us = Some(now_us);
        }
    }

    fn take_source_token(&mut self, now_us: u64, ip: IpAddr) -> bool {
        let mut h = SipHasher13::new_with_keys(self.source_key.0, self.source_key.1);
        match ip {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        let b = &mut self.sources[(h.finish() % SOURCE_BUCKETS as u64) as usize];
        let rate = self.limits.per_source_per_s as f32;
        b.take(now_us, rate, rate)
    }
}

/// A source address as bytes (IP and port): what a cookie is bound to.
fn address_bytes(from: SocketAddr) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let ip_len = match from.ip() {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            out[..16].copy_from_slice(&a.octets());
            16
        }
    };
    out[ip_len..ip_len + 2].copy_from_slice(&from.port().to_be_bytes());
    (out, ip_len + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::SessionSecret;
    use rand_core::SeedableRng;

    const S: u64 = 1_000_000;

    fn guard(limits: HandshakeLimits) -> HandshakeGuard {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = SessionSecret::generate(&mut rng).public();
        HandshakeGuard::new(handshake_mac::HandshakeKeys::new(&key), limits, rng)
    }

    fn limits(load_per_s: u32, per_source_per_s: u32) -> HandshakeLimits {
        HandshakeLimits {
            load_per_s,
            per_source_per_s,
            ..HandshakeLimits::default()
        }
    }

    #[test]
    fn the_load_is_the_last_seconds_handshakes() {
        let mut g = guard(limits(10, 5));
        let t0 = 100 * S;
        for i in 0..10 {
            g.computed(t0 + i * 10_000);
        }
        assert!(!g.under_load(t0 + 200_000), "10 is not more than 10");
        g.computed(t0 + 200_000);
        assert!(g.under_load(t0 + 300_000));
        // Half a second into the next: half of the last second's 11 still count.
        assert!(!g.under_load(t0 + 1_500_000));
        assert!(!g.under_load(t0 + 3 * S), "quiet again");
    }

    #[test]
    fn under_load_an_initiation_needs_the_cookie_of_its_own_address() {
        let mut g = guard(limits(0, 100));
        let now = 10 * S;
        let (me, spoofed): (SocketAddr, SocketAddr) = (
            "192.0.2.1:4000".parse().unwrap(),
            "192.0.2.9:4000".parse().unwrap(),
        );
        let before = [5u8; 140];
        let mac1: HandshakeMac = before[124..140].try_into().unwrap();
        g.computed(now);
        let Admission::SendCookie(sealed) = g.admit(now, me, &before, &mac1, &[0; 16]) else {
            panic!("under load, no mac2: a cookie")
        };
        let cookie = g
            .keys
            .open_cookie(&sealed, &mac1)
            .expect("sealed for this mac1");
        let mac2 = handshake_mac::mac2(&cookie, &before);
        assert_eq!(g.admit(now, me, &before, &mac1, &mac2), Admission::Compute);
        // The same mac2 from another address proves nothing there.
        assert!(matches!(
            g.admit(now, spoofed, &before, &mac1, &mac2),
            Admission::SendCookie(_)
        ));
        // A cookie outlives one rotation of the secret, not two.
        assert_eq!(
            g.admit(now + COOKIE_LIFETIME_US, me, &before, &mac1, &mac2),
            Admission::Compute
        );
        g.computed(now + 2 * COOKIE_LIFETIME_US);
        assert!(matches!(
            g.admit(now + 2 * COOKIE_LIFETIME_US, me, &before, &mac1, &mac2),
            Admission::SendCookie(_)
        ));
    }

    #[test]
    fn under_load_a_proven_source_is_held_to_its_allowance_and_not_loaded_otherwise() {
        let mut g = guard(limits(0, 3));
        let now = 10 * S;
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let before = [5u8; 140];
        let mac1: HandshakeMac = before[124..140].try_into().unwrap();
        g.computed(now);
        let Admission::SendCookie(sealed) = g.admit(now, from, &before, &mac1, &[0; 16]) else {
            panic!()
        };
        let mac2 = handshake_mac::mac2(&g.keys.open_cookie(&sealed, &mac1).unwrap(), &before);
        let admitted = (0..10)
            .filter(|_| g.admit(now, from, &before, &mac1, &mac2) == Admission::Compute)
            .count();
        assert_eq!(admitted, 3, "the bucket holds 3");
        assert_eq!(
            g.admit(now + S / 2, from, &before, &mac1, &mac2),
            Admission::Compute,
            "one more half a second later"
        );
        assert_eq!(
            g.admit(now + S / 2, from, &before, &mac1, &mac2),
            Admission::SourceOverLimit
        );
        // Not under load: no cookie, no allowance.
        let mut quiet = guard(limits(1000, 3));
        for _ in 0..10 {
            assert_eq!(
                quiet.admit(now, from, &before, &mac1, &[0; 16]),
                Admission::Compute
            );
        }
    }
}
