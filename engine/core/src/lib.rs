//! The sans-IO core of loopix: every piece of Loopix behaviour as plain state machines and
//! data structures that take time and randomness from their driver. No sockets, clocks,
//! threads or ambient RNG in here; the glommio runtime and the simulator both drive it.

pub mod acks;
pub mod answer_queue;
pub mod client;
pub mod client_quota;
pub mod codec;
pub mod directory;
pub mod drops;
pub mod endpoint;
pub mod epoch;
pub mod faults;
pub mod field_error;
pub mod hop;
pub mod inbox;
pub mod latency_histogram;
pub mod link;
pub mod loops;
pub mod mix;
pub mod node_addresses;
pub mod packet_pool;
pub mod payload;
pub mod pki;
pub mod provider;
pub mod rate;
pub mod replay;
pub mod role;
pub mod session;
pub mod steering;
pub mod timing_wheel;
pub mod topology;
pub mod wire;
