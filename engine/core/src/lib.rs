//! The sans-IO core of loopix: every piece of Loopix behaviour as plain state machines and
//! data structures that take time and randomness from their driver. No sockets, clocks,
//! threads or ambient RNG in here; the glommio runtime and the simulator both drive it.
//!
//! - [`roles`]: the mix, the provider and the client, and how any of them is built;
//! - [`pipeline`]: the packet path every node runs (unwrap, replay filter, timing wheel);
//! - [`formats`]: the packet codec, payloads, poll answer items;
//! - [`network`]: the topology, paths, addresses, authenticated links, key epochs;
//! - [`session`]: a client's Noise session with its provider;
//! - [`pki`]: the directory authorities, their documents and key uploads;
//! - [`endpoint`]: the one surface every driver calls; [`drops`]: why a packet was dropped;
//!   [`field_error`]: configuration errors that name their field.

pub mod drops;
pub mod endpoint;
pub mod field_error;
pub mod formats;
pub mod network;
pub mod pipeline;
pub mod pki;
pub mod roles;
pub mod session;
