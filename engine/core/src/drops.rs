//! Why a node dropped a packet, and how many times. Every drop is counted under one reason.

use loopix_crypto::ProcessError;

/// A drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not a packet (wrong length) nor a message the role understands.
    Malformed,
    /// α is not a group element.
    InvalidGroupElement,
    /// Header MAC mismatch: tampered, or not for this node.
    Mac,
    /// MAC fine but unknown routing command.
    MalformedCommand,
    /// Seen before under this key.
    Replay,
    /// Not seen, but the replay filter had no room for its tag (the shard unwrapped more
    /// than the filter was sized for).
    ReplayFull,
    /// Built for a key phase the node holds no key for: an epoch whose grace is over, or
    /// that has not begun.
    ExpiredKey,
    /// A command this role does not carry out (e.g. deliver at a mix).
    UnexpectedCommand,
    /// A final hop found the payload tampered with.
    PayloadTampered,
    /// No free packet buffer.
    Overload,
    /// The delay is beyond the timing wheel's horizon.
    Horizon,
    /// From, or to, a client this provider does not serve.
    UnknownClient,
    /// The recipient's inbox is full.
    InboxFull,
    /// A session frame or handshake that did not authenticate, or for no session held.
    Unauthenticated,
    /// A session frame or handshake seen before (or a handshake not newer than the last).
    SessionReplay,
    /// A packet from an address that is no node of the topology.
    UnknownPeer,
    /// To a next hop the topology does not list.
    Unroutable,
    /// From, or to, a node that is not adjacent in the stratified topology (a mix takes
    /// packets only from the layer before it and sends only to the one after).
    NotAdjacent,
    /// A link datagram whose tag does not verify: a forged source, a modified datagram, or
    /// a key epoch not in use.
    LinkAuth,
    /// A link datagram whose counter was seen before.
    LinkReplay,
    /// A client sending faster than its share (see `client_quota`).
    RateLimited,
    /// The provider's whole store is at its bound.
    StoreFull,
    /// Stored, but not collected by its client within the provider's inbox TTL.
    InboxExpired,
    /// Waited in the node's socket longer than its bound before it was read: shed unread,
    /// so an overloaded node spends its time on packets that can still be on time.
    Stale,
    /// A handshake initiation whose mac1 is wrong (junk, or not for this provider):
    /// refused without any Diffie-Hellman.
    HandshakeMac,
    /// A handshake beyond its source address's allowance (under load) or its client's
    /// (one per interval).
    HandshakeRateLimited,
    /// Work for another shard of the node (a provider's packet or handshake for a client
    /// whose home is there) that found that shard's queue full.
    HandoffFull,
    /// A packet to store that found the provider's store writer behind by more than its
    /// queue holds (a slow disk): refused rather than wait on it.
    StoreBusy,
}

impl DropReason {
    /// Every reason, in a fixed order (the metrics order).
    pub const ALL: [DropReason; 28] = [
        Self::Malformed,
        Self::InvalidGroupElement,
        Self::Mac,
        Self::MalformedCommand,
        Self::Replay,
        Self::ReplayFull,
        Self::ExpiredKey,
        Self::UnexpectedCommand,
        Self::PayloadTampered,
        Self::Overload,
        Self::Horizon,
        Self::UnknownClient,
        Self::InboxFull,
        Self::Unauthenticated,
        Self::SessionReplay,
        Self::UnknownPeer,
        Self::Unroutable,
        Self::NotAdjacent,
        Self::LinkAuth,
        Self::LinkReplay,
        Self::RateLimited,
        Self::StoreFull,
        Self::InboxExpired,
        Self::Stale,
        Self::HandshakeMac,
        Self::HandshakeRateLimited,
        Self::HandoffFull,
        Self::StoreBusy,
    ];

    /// A short stable name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidGroupElement => "invalid_group_element",
            Self::Mac => "mac",
            Self::MalformedCommand => "malformed_command",
            Self::Replay => "replay",
            Self::ReplayFull => "replay_full",
            Self::ExpiredKey => "expired_key",
            Self::UnexpectedCommand => "unexpected_command",
            Self::PayloadTampered => "payload_tampered",
            Self::Overload => "overload",
            Self::Horizon => "horizon",
            Self::UnknownClient => "unknown_client",
            Self::InboxFull => "inbox_full",
            Self::Unauthenticated => "unauthenticated",
            Self::SessionReplay => "session_replay",
            Self::UnknownPeer => "unknown_peer",
            Self::Unroutable => "unroutable",
            Self::NotAdjacent => "not_adjacent",
            Self::LinkAuth => "link_auth",
            Self::LinkReplay => "link_replay",
            Self::RateLimited => "rate_limited",
            Self::StoreFull => "store_full",
            Self::InboxExpired => "inbox_expired",
            Self::Stale => "stale",
            Self::HandshakeMac => "handshake_mac",
            Self::HandshakeRateLimited => "handshake_rate_limited",
            Self::HandoffFull => "handoff_full",
            Self::StoreBusy => "store_busy",
        }
    }
}

impl From<ProcessError> for DropReason {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::WrongLength { .. } => Self::Malformed,
            ProcessError::InvalidGroupElement => Self::InvalidGroupElement,
            ProcessError::MacMismatch => Self::Mac,
            ProcessError::MalformedCommand => Self::MalformedCommand,
            ProcessError::Replayed => Self::Replay,
            ProcessError::PayloadTampered => Self::PayloadTampered,
        }
    }
}

/// One counter per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.add_n(reason, 1);
    }

    /// Counts `n` drops for one reason.
    pub fn add_n(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// Drops for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Drops for every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        let mut c = DropCounts::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            for _ in 0..=i {
                c.add(*r);
            }
        }
        assert!(c.iter().enumerate().all(|(i, (_, n))| n == i as u64 + 1));
        assert_eq!(c.total(), (1..=DropReason::ALL.len() as u64).sum::<u64>());
    }
}
