//! The thread-per-core shell around `loopix-core`: glommio shards, steered UDP sockets.

pub mod backend;
pub mod batch_io;
pub mod blocking;
pub mod client_driver;
pub mod client_host;
pub mod clock;
pub mod config;
pub mod delivered_log;
pub mod directory_client;
pub mod durable_inbox;
pub mod key_file;
pub mod node;
pub mod node_lock;
pub mod replay_journal;
pub mod rx_timestamp;
pub mod service;
pub mod shard;
pub mod shard_core;
pub mod socket_stats;
pub mod steering;
pub mod stray_buffers;
pub mod unwrap_rate;
