//! The packet path every node runs: unwrap in batches, refuse replays, hold each packet on
//! the timing wheel for the delay its sender chose, release it; the pool its buffers come
//! from, the histograms it keeps, the steering of replies to their shard, and the fault
//! injection a test wraps around its sending.

pub mod faults;
pub mod gather;
pub mod hop;
pub mod key_ring;
pub mod latency_histogram;
pub mod packet_pool;
pub mod replay;
pub mod steering;
pub mod timing_wheel;
