//! The directory authorities and what nodes and clients do with them: node operators are
//! registered at an authority, their nodes upload signed epoch keys ahead of each epoch,
//! the authority publishes one signed [`document`] per epoch, and every node and client
//! follows the documents ([`follower`]), switching at each boundary without a restart.
//! All of it sans-IO: the HTTP server and fetches live in the runtime and tools.

pub mod authority;
pub mod document;
pub mod follower;
pub mod key_upload;
pub mod registry;
pub mod take;
