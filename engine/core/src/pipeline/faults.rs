//! Faults a node injects into its own sending, as a lossy or slow link would: a share of
//! its outgoing datagrams dropped, and every other one held an extra delay. For tests,
//! demos and chaos runs (`loopix testnet --link-loss`), never for a production network.
//!
//! [`Faulty`] wraps any [`Endpoint`], so what it does is the same wherever the core runs.
//! Held datagrams wait in a ring of buffers made once (`max_held` of them), so nothing is
//! allocated per packet; when the ring is full a datagram is dropped and counted apart.
//! The delay is one constant, so the ring stays in due order.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::endpoint::{Endpoint, Transmit};
use crate::roles::rate::uniform;

/// What to inject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// The share of outgoing datagrams dropped, in [0, 1).
    pub drop_fraction: f64,
    /// How long every other outgoing datagram is held before it leaves, µs.
    pub extra_delay_us: u64,
    /// Datagrams held at once (with a delay); more are dropped and counted as overflow.
    pub max_held: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            drop_fraction: 0.0,
            extra_delay_us: 0,
            max_held: 16_384,
        }
    }
}

impl FaultConfig {
    /// Whether this injects anything at all.
    pub fn is_on(&self) -> bool {
        self.drop_fraction > 0.0 || self.extra_delay_us > 0
    }
}

/// What was injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Outgoing datagrams dropped on purpose.
    pub dropped: u64,
    /// Outgoing datagrams held the extra delay.
    pub delayed: u64,
    /// Outgoing datagrams dropped because `max_held` were already held.
    pub overflow: u64,
}

/// An endpoint whose sending suffers the configured faults. See the module docs.
pub struct Faulty<E> {
    inner: E,
    config: FaultConfig,
    rng: ChaCha20Rng,
    /// Due time, destination and length of each held datagram, oldest first; the i-th
    /// lives in ring entry (`first` + i) mod `max_held`.
    held: VecDeque<(u64, SocketAddr, usize)>,
    first: usize,
    ring: Vec<u8>,
    entry_len: usize,
    stats: FaultStats,
}

impl<E: Endpoint> Faulty<E> {
    /// `inner`, suffering `config`, its random choices seeded by `seed`.
    pub fn new(inner: E, config: FaultConfig, seed: [u8; 32]) -> Self {
        let entry_len = inner.max_datagram_len();
        let entries = if config.extra_delay_us > 0 {
            config.max_held
        } else {
            0
        };
        Self {
            inner,
            config,
            rng: ChaCha20Rng::from_seed(seed),
            held: VecDeque::with_capacity(entries),
            first: 0,
            ring: vec![0; entries * entry_len],
            entry_len,
            stats: FaultStats::default(),
        }
    }

    /// The wrapped endpoint.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The wrapped endpoint.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// Datagrams held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn entry(&mut self, i: usize) -> &mut [u8] {
        let at = (self.first + i) % self.config.max_held * self.entry_len;
        &mut self.ring[at..at + self.entry_len]
    }

    /// Holds the datagram in `buf` (`t`) until `now_us` + the delay, if there is room.
    fn hold(&mut self, now_us: u64, t: Transmit, buf: &[u8]) {
        if self.held.len() >= self.config.max_held {
            self.stats.overflow += 1;
            return;
        }
        let i = self.held.len();
        self.entry(i)[..t.len].copy_from_slice(&buf[..t.len]);
        self.held
            .push_back((now_us + self.config.extra_delay_us, t.to, t.len));
        self.stats.delayed += 1;
    }
}

impl<E: Endpoint> Endpoint for Faulty<E> {
    fn id(&self) -> loopix_crypto::NodeId {
        self.inner.id()
    }

    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]) {
        self.inner.handle_datagram(now_us, from, bytes);
    }

    fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        self.inner.handle_datagrams(now_us, datagrams);
    }

    fn handle_timeout(&mut self, now_us: u64) {
        self.inner.handle_timeout(now_us);
    }

    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(&(due, to, len)) = self.held.front()
            && due <= now_us
        {
            buf[..len].copy_from_slice(&self.entry(0)[..len]);
            self.held.pop_front();
            self.first = (self.first + 1) % self.config.max_held;
            return Some(Transmit { to, len });
        }
        while let Some(t) = self.inner.poll_transmit(now_us, buf) {
            if self.config.drop_fraction > 0.0 && uniform(&mut self.rng) < self.config.drop_fraction
            {
                self.stats.dropped += 1;
                continue;
            }
            if self.config.extra_delay_us == 0 {
                return Some(t);
            }
            self.hold(now_us, t, buf);
        }
        None
    }

    fn poll_timeout(&self) -> Option<u64> {
        let held = self.held.front().map(|&(due, _, _)| due);
        match (self.inner.poll_timeout(), held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn max_datagram_len(&self) -> usize {
        self.inner.max_datagram_len()
    }

    fn held(&self) -> usize {
        self.inner.held() + Faulty::held(self)
    }

    crate::endpoint::forward_driver_methods!(self => self.inner, self.inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::NodeId;

    /// Emits `n` datagrams of one byte (its sequence number) whenever asked.
    struct Source {
        left: u8,
        next: u8,
    }

    impl Endpoint for Source {
        fn id(&self) -> NodeId {
            NodeId(1)
        }
        fn handle_datagram(&mut self, _: u64, _: SocketAddr, _: &[u8]) {}
        fn handle_timeout(&mut self, _: u64) {}
        fn poll_transmit(&mut self, _: u64, buf: &mut [u8]) -> Option<Transmit> {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            buf[0] = self.next;
            self.next = self.next.wrapping_add(1);
            Some(Transmit {
                to: "127.0.0.1:9".parse().unwrap(),
                len: 1,
            })
        }
        fn poll_timeout(&self) -> Option<u64> {
            None
        }
        fn max_datagram_len(&self) -> usize {
            1
        }
        fn reload(
            &mut self,
            _: &crate::network::topology::Topology,
            _: Option<loopix_crypto::EpochSeed>,
        ) -> Result<(), crate::roles::BuildError> {
            Err(crate::roles::BuildError::WrongRole(NodeId(1)))
        }
    }

    fn drain(f: &mut Faulty<Source>, now_us: u64) -> Vec<u8> {
        let mut buf = [0u8; 1];
        std::iter::from_fn(|| f.poll_transmit(now_us, &mut buf).map(|_| buf[0])).collect()
    }

    #[test]
    fn a_share_is_dropped_and_counted_the_rest_goes_in_order() {
        let config = FaultConfig {
            drop_fraction: 0.25,
            ..FaultConfig::default()
        };
        let mut f = Faulty::new(Source { left: 200, next: 0 }, config, [1; 32]);
        let out = drain(&mut f, 0);
        let dropped = f.stats().dropped;
        assert_eq!(out.len() as u64 + dropped, 200);
        assert!((25..=75).contains(&dropped), "{dropped} of 200 at 25 %");
        assert!(out.windows(2).all(|w| w[0] < w[1]), "order kept");
        let mut clean = Faulty::new(Source { left: 9, next: 0 }, FaultConfig::default(), [1; 32]);
        assert_eq!(drain(&mut clean, 0).len(), 9, "no faults, nothing changed");
    }

    #[test]
    fn every_datagram_is_held_the_delay_and_overflow_is_counted() {
        let config = FaultConfig {
            extra_delay_us: 1_000,
            max_held: 3,
            ..FaultConfig::default()
        };
        let mut f = Faulty::new(Source { left: 5, next: 10 }, config, [2; 32]);
        assert!(drain(&mut f, 100).is_empty(), "held, none out yet");
        assert_eq!((f.held(), f.stats().delayed, f.stats().overflow), (3, 3, 2));
        assert_eq!(f.poll_timeout(), Some(1_100));
        assert!(drain(&mut f, 1_099).is_empty());
        assert_eq!(drain(&mut f, 1_100), vec![10, 11, 12]);
        assert_eq!(f.held(), 0);
        // Two more, then three: the second batch starts in the ring's last entry and wraps.
        f.inner_mut().left = 1;
        assert!(drain(&mut f, 2_000).is_empty());
        assert_eq!(drain(&mut f, 3_000), vec![15]);
        f.inner_mut().left = 3;
        assert!(drain(&mut f, 4_000).is_empty());
        assert_eq!(
            drain(&mut f, 5_000),
            vec![16, 17, 18],
            "the ring wraps in order"
        );
        assert_eq!(f.stats().overflow, 2);
    }
}
