//! What a node or a client process does from start to stop, above the shards: load and
//! check the configuration, join the directory, start the shards, serve metrics, follow
//! new documents and reload on SIGHUP, and stop on a signal. The binary parses its
//! command line into these options and calls [`node::run`] or [`client::run`].

pub mod client;
pub mod metrics;
pub mod node;
