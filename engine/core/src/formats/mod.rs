//! Bytes on the wire and inside packets: the packet codec (Sphinx, or the stand-in for
//! experiments), the payload a packet carries (fragments, acks, loops) and the items a
//! provider answers polls with.

pub mod codec;
pub mod payload;
pub mod wire;
