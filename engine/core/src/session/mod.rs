//! Client sessions at the provider: a client proves who it is with its static key, and
//! everything between it and its provider (its packets, its polls, the answers) travels
//! encrypted and authenticated inside a session.
//!
//! The handshake is Noise IK (`Noise_IK_25519_ChaChaPoly_BLAKE2s`, by the `snow` crate):
//! the client knows its provider's static key from the topology and sends its own,
//! encrypted, in the first message with a timestamp; the provider answers only when that
//! key is one of its clients' and the timestamp is newer than the last it accepted from
//! that client (and within [`MAX_CLOCK_SKEW_US`] of its clock), so a replayed or forged
//! initiation draws nothing. Transport frames carry an explicit nonce, checked against a
//! sliding window ([`ReplayWindow`]) after decryption: the WireGuard transport.
//!
//! Every frame either way has one length ([`FrameLayout::frame_len`]), whatever it
//! carries: a handshake message, a packet, a poll, or a poll's answer item. So the
//! client's uplink is one Poisson stream of equal datagrams, every poll is answered with
//! exactly N equal datagrams, and an unauthenticated datagram never draws more bytes than
//! it carried (a handshake response is one frame, for one frame).
//!
//! A provider refuses junk initiations without a Diffie-Hellman, and under load answers
//! initiations from addresses not yet proven with a cookie first, as WireGuard does
//! ([`handshake_guard`]).

pub mod frame;
pub mod handshake_guard;
pub mod initiator;
mod noise;
pub mod replay_window;
pub mod responder;
#[cfg(test)]
mod tests;
mod transport;

pub use frame::{FrameKind, FrameLayout, Plain};
pub use handshake_guard::HandshakeLimits;
pub use initiator::ClientSession;
pub use replay_window::ReplayWindow;
pub use responder::{Received, Sessions};

/// A client starts a new handshake once its session is this old (on a cover slot).
pub const REKEY_AFTER_US: u64 = 120_000_000;
/// Either side refuses a session this old: a client that did not rekey starts over.
pub const REJECT_AFTER_US: u64 = 180_000_000;
/// A client sends its handshake again if no answer came in this long.
pub const HANDSHAKE_RETRY_US: u64 = 1_000_000;
/// The most a handshake's timestamp may differ from the provider's clock. It bounds how
/// old an initiation can be replayed after the provider restarts (forgetting the last
/// timestamps it accepted); clients need clocks this good anyway for epoch keys.
pub const MAX_CLOCK_SKEW_US: u64 = 120_000_000;
