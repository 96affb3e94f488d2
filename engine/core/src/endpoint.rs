//! The one shape every role has, so the runtime and the simulator drive mixes, providers
//! and clients alike: events in (`handle_*`), polls out (`poll_*`) until empty.
//!
//! Peers are socket addresses, opaque to the driver: it passes each datagram's source as
//! it came and sends each transmit where the core says. Who a datagram is from is the
//! core's decision, made from what authenticates (a client's session), never from an id
//! a datagram claims; node addresses come from the topology alone.

use std::net::SocketAddr;

use loopix_crypto::{EpochSeed, NodeId};

use crate::drops::DropReason;
use crate::network::topology::Topology;
use crate::pipeline::key_ring::{JournalRecord, RestoreError};
use crate::pipeline::replay::FilterKey;
use crate::roles::BuildError;
pub use crate::roles::provider::Handoff;

/// A datagram to send: `len` bytes written at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
}

/// Events in, polls out. Time is microseconds on the driver's clock; no role reads one.
pub trait Endpoint {
    /// This endpoint's id in the topology.
    fn id(&self) -> NodeId;
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
    /// [`Endpoint::max_datagram_len`] bytes). A driver calls it until `None` after every
    /// `handle_*` call: what a call made ready is sent then, never left for a timer.
    #[must_use]
    fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit>;
    /// When to call [`Endpoint::handle_timeout`] next: a deadline only. Datagrams waiting
    /// to be sent do not show here (the driver drains [`Endpoint::poll_transmit`]).
    #[must_use]
    fn poll_timeout(&self) -> Option<u64>;
    /// Largest datagram this endpoint sends.
    fn max_datagram_len(&self) -> usize;

    // What a node's driver does beyond events in and polls out. Every driver (the runtime's
    // shards, the simulator, the fuzz harnesses) goes through these, so none holds a role's
    // insides.

    /// Packets it holds to send later (a node's pool): what a shutdown waits for.
    fn held(&self) -> usize {
        0
    }
    /// Readies held packets due within `ahead_us` of `now_us`, so that they go out with
    /// the batch being sent rather than a timer turn later (a mix).
    fn release_ahead(&mut self, _now_us: u64, _ahead_us: u64) {}
    /// A datagram the driver dropped before handing it in (it waited too long in the
    /// socket): counted under `reason` with the role's own drops.
    fn count_refused(&mut self, _reason: DropReason) {}
    /// Makes what it stored durable (a provider's inboxes); the driver calls it every
    /// timer turn.
    fn flush_storage(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Hands the driver what it must write down so that a restart keeps refusing replays
    /// (a node's replay journal, see [`JournalRecord`]), in order.
    fn drain_journal(&mut self, _write: &mut dyn FnMut(JournalRecord<'_>)) {}
    /// Refills the replay filter of `epoch` from a journal written before a restart; call
    /// before the first packet or timeout. How many hashes it recorded.
    fn restore_journal(
        &mut self,
        _now_us: u64,
        _epoch: u64,
        _key: FilterKey,
        _hashes: &mut dyn Iterator<Item = u64>,
    ) -> Result<usize, RestoreError> {
        Err(RestoreError::NotInUse)
    }
    /// Takes a topology the node decided to take (a network document, or its file re-read
    /// on SIGHUP; see [`crate::pki::take`]) and, for a node, its key seed as its key file
    /// now holds it: keys that did not change keep their replay filters.
    fn reload(&mut self, topology: &Topology, seed: Option<EpochSeed>) -> Result<(), BuildError>;
    /// Each node it takes datagrams from, and when one of them last verified (µs; 0:
    /// never): whether its links in are alive.
    fn links_heard(&self) -> Vec<(NodeId, u64)> {
        Vec::new()
    }
    /// Work for another shard of the same node, and which: a multi-shard provider keeps a
    /// client's inbox and sessions on the client's home shard, so a packet to store or a
    /// handshake that reached another shard goes there. The driver passes each to
    /// [`Endpoint::handle_handoff`] of that shard, until `None`.
    fn poll_handoff(&mut self) -> Option<(usize, Handoff)> {
        None
    }
    /// Work another shard handed this one ([`Endpoint::poll_handoff`]), at `now_us`.
    fn handle_handoff(&mut self, _now_us: u64, _handoff: Handoff) {}
    /// Work from [`Endpoint::poll_handoff`] the driver could not hand on (the shard's
    /// queue was full): dropped and counted by the core, as its own drops are (not as a
    /// datagram received and refused: it was received once already).
    fn handoff_refused(&mut self, _handoff: Handoff) {}
    /// The next thing it tells its driver besides datagrams (a client's deliveries and
    /// acknowledgements, a provider's stored packets), until `None`.
    fn poll_event(&mut self) -> Option<RoleEvent> {
        None
    }
}

/// What a role tells its driver besides datagrams ([`Endpoint::poll_event`]).
#[derive(Clone, Debug)]
pub enum RoleEvent {
    Client(crate::roles::client::ClientEvent),
    Provider(crate::roles::provider::ProviderEvent),
}

/// The driver methods a node role (a mix, a provider) answers from its hop pipeline and its
/// links: one body for both.
macro_rules! node_driver_methods {
    () => {
        fn count_refused(&mut self, reason: crate::drops::DropReason) {
            self.engine().refuse(reason);
        }

        fn drain_journal(
            &mut self,
            write: &mut dyn FnMut(crate::pipeline::key_ring::JournalRecord<'_>),
        ) {
            self.engine().drain_journal(write);
        }

        fn restore_journal(
            &mut self,
            now_us: u64,
            epoch: u64,
            key: crate::pipeline::replay::FilterKey,
            hashes: &mut dyn Iterator<Item = u64>,
        ) -> Result<usize, crate::pipeline::key_ring::RestoreError> {
            self.engine().restore(now_us, epoch, key, hashes)
        }

        fn reload(
            &mut self,
            topology: &crate::network::topology::Topology,
            seed: Option<loopix_crypto::EpochSeed>,
        ) -> Result<(), crate::roles::BuildError> {
            let seed = seed.ok_or(crate::roles::BuildError::WrongRole(self.id()))?;
            Self::reload(self, topology, seed);
            Ok(())
        }

        fn links_heard(&self) -> Vec<(loopix_crypto::NodeId, u64)> {
            self.links().heard().collect()
        }
    };
}
pub(crate) use node_driver_methods;

/// The driver methods of an endpoint that wraps another, forwarded to it: `$inner` reaches
/// the wrapped endpoint mutably, `$inner_ref` immutably (both written with the caller's
/// `$this`). `held` is the wrapper's own to answer.
macro_rules! forward_driver_methods {
    ($this:ident => $inner:expr, $inner_ref:expr) => {
        fn release_ahead(&mut $this, now_us: u64, ahead_us: u64) {
            $inner.release_ahead(now_us, ahead_us);
        }

        fn count_refused(&mut $this, reason: crate::drops::DropReason) {
            $inner.count_refused(reason);
        }

        fn flush_storage(&mut $this) -> Result<(), String> {
            $inner.flush_storage()
        }

        fn drain_journal(&mut $this, write: &mut dyn FnMut(crate::pipeline::key_ring::JournalRecord<'_>)) {
            $inner.drain_journal(write);
        }

        fn restore_journal(
            &mut $this,
            now_us: u64,
            epoch: u64,
            key: crate::pipeline::replay::FilterKey,
            hashes: &mut dyn Iterator<Item = u64>,
        ) -> Result<usize, crate::pipeline::key_ring::RestoreError> {
            $inner.restore_journal(now_us, epoch, key, hashes)
        }

        fn reload(
            &mut $this,
            topology: &crate::network::topology::Topology,
            seed: Option<loopix_crypto::EpochSeed>,
        ) -> Result<(), crate::roles::BuildError> {
            $inner.reload(topology, seed)
        }

        fn links_heard(&$this) -> Vec<(loopix_crypto::NodeId, u64)> {
            $inner_ref.links_heard()
        }

        fn poll_event(&mut $this) -> Option<crate::endpoint::RoleEvent> {
            $inner.poll_event()
        }

        fn poll_handoff(&mut $this) -> Option<(usize, crate::endpoint::Handoff)> {
            $inner.poll_handoff()
        }

        fn handle_handoff(&mut $this, now_us: u64, handoff: crate::endpoint::Handoff) {
            $inner.handle_handoff(now_us, handoff);
        }

        fn handoff_refused(&mut $this, handoff: crate::endpoint::Handoff) {
            $inner.handoff_refused(handoff);
        }
    };
}
pub(crate) use forward_driver_methods;
