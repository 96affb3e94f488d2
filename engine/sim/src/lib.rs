//! A deterministic discrete-event simulator for loopix: virtual time, one seed for
//! everything, a link model, and the real mix, provider and client cores. The same seed
//! gives the same run, event for event; tests print it so a failure can be replayed.

pub mod anonymity;
pub mod chaos;
pub mod committing_inbox;
pub mod figures;
pub mod network;
pub mod scale;
pub mod sim;
pub mod stats;

pub use network::{NetworkSpec, generate};
pub use sim::{
    Captured, LinkModel, Log, Sim, SimOptions, SimRole, WireRecord, host_address, seed_from_env,
};
