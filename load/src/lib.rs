//! Load generation and measurement: what `loopix speed`, `loopix loadgen` (and its hostile
//! mix), `loopix soak` and the testnet's handshake flood do, and the scraping of a node's
//! metrics they report beside their own counts.
//!
//! Every generator plays a node of the topology (`setup`): it binds that node's address,
//! seals with that node's link keys, and sends prebuilt packets whose second hop is itself,
//! so what it measures is the target's processing.

pub mod attribution;
pub mod handshake_flood;
pub mod hostile;
pub mod json;
pub mod loadgen;
pub mod measure;
pub mod provider_load;
pub mod scrape;
pub mod setup;
pub mod soak;
pub mod speed;
