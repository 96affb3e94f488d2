//! The one shape every role has, so the runtime and the simulator drive mixes, providers
//! and clients alike: events in (`handle_*`), polls out (`poll_*`) until empty.
//!
//! Peers are socket addresses, opaque to the driver: it passes each datagram's source as
//! it came and sends each transmit where the core says. Who a datagram is from is the
//! core's decision, made from what authenticates (a client's session), never from an id
//! a datagram claims; node addresses come from the topology alone.

use std::net::SocketAddr;

use loopix_crypto::Address;

/// A datagram to send: `len` bytes written at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
}

/// Events in, polls out. Time is microseconds on the driver's clock; no role reads one.
pub trait Endpoint {
    /// This endpoint's id in the topology.
    fn id(&self) -> Address;
    /// A datagram from source address `from` arrived at `now_us`.
    fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, bytes: &[u8]);
    /// Datagrams that arrived together (a receive batch, or the simulator's arrivals at
    /// one instant), each with its source: how both drivers hand them in. A role that
    /// gains from batches (a mix unwraps them together) overrides it.
    fn handle_datagrams(&mut self, now_us: u64, datagrams: &[(SocketAddr, &[u8])]) {
        for &(from, bytes) in datagrams {
            self.handle_datagram(now_us, from, bytes);
        }
    }
    /// The driver's timer fired; do what is due at `now_us`.
    fn handle_timeout(&mut self, now_us: u64);
    /// The next datagram to send, written into `buf` (at least
    /// [`Endpoint::max_datagram_len`] bytes).
    #[must_use]
    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit>;
    /// When to call [`Endpoint::handle_timeout`] next.
    #[must_use]
    fn poll_timeout(&self) -> Option<u64>;
    /// Largest datagram this endpoint sends.
    fn max_datagram_len(&self) -> usize;
}
