//! Packet geometry: the fixed header layout and the one network parameter (payload size).
//!
//! Every length a packet can have is derived here, so the processing and building code
//! never repeats an offset. The relations between the constants are checked at compile time.

use core::fmt;

/// Bytes of the group element α (a compressed Ristretto point).
pub const ALPHA_LEN: usize = 32;
/// Bytes of one hop's routing command (flag, reserved, delay, address).
pub const COMMAND_LEN: usize = 16;
/// Bytes of the truncated HMAC-SHA256 that guards a header.
pub const MAC_LEN: usize = 16;
/// Bytes one hop occupies in the routing information β: its command and the next hop's MAC.
pub const ROUTING_LEN: usize = COMMAND_LEN + MAC_LEN;
/// Longest path a packet can take. Every header has room for this many hops, whatever
/// the real path length, so the length never reveals the hop count.
pub const MAX_HOPS: usize = 8;
/// Bytes of the encrypted routing information β.
pub const BETA_LEN: usize = ROUTING_LEN * MAX_HOPS;
/// Bytes of the header: α, β and γ (the MAC over β).
pub const HEADER_LEN: usize = ALPHA_LEN + BETA_LEN + MAC_LEN;
/// Zero bytes prefixed to the payload before the sender's LIONESS layers; the recipient
/// checks them, and any change to the body anywhere turns them to noise.
pub const PAYLOAD_TAG_LEN: usize = 16;
/// Length of the LIONESS left half: one SHA-256 output.
pub const LIONESS_LEFT_LEN: usize = 32;
/// Default application bytes carried by one packet.
pub const DEFAULT_PAYLOAD_BYTES: usize = 2048;
/// Smallest payload accepted: LIONESS needs a right half at least as long as its left.
pub const MIN_PAYLOAD_BYTES: usize = LIONESS_LEFT_LEN;
/// Largest payload accepted: the packet must fit one UDP datagram (65,507 bytes over IPv4).
pub const MAX_PAYLOAD_BYTES: usize = 65_507 - HEADER_LEN - PAYLOAD_TAG_LEN;

const _: () = assert!(ROUTING_LEN == 32 && BETA_LEN == 256 && HEADER_LEN == 304);
const _: () = assert!(ALPHA_LEN >= 4, "steering reads the first 4 bytes of α");
const _: () = assert!(MIN_PAYLOAD_BYTES + PAYLOAD_TAG_LEN > LIONESS_LEFT_LEN);

/// The network's packet parameters. All parties of one network must agree on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    payload_bytes: usize,
}

/// A payload size outside `MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadSizeError {
    /// The rejected size.
    pub payload_bytes: usize,
}

impl fmt::Display for PayloadSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "payload size {} is outside {MIN_PAYLOAD_BYTES}..={MAX_PAYLOAD_BYTES} bytes",
            self.payload_bytes
        )
    }
}

impl std::error::Error for PayloadSizeError {}

impl Default for Params {
    fn default() -> Self {
        Self {
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        }
    }
}

impl Params {
    /// Parameters for packets carrying `payload_bytes` application bytes.
    pub fn new(payload_bytes: usize) -> Result<Self, PayloadSizeError> {
        if (MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_bytes) {
            Ok(Self { payload_bytes })
        } else {
            Err(PayloadSizeError { payload_bytes })
        }
    }

    /// Application bytes per packet.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Bytes of the LIONESS-encrypted body: the zero tag and the payload.
    pub fn body_len(&self) -> usize {
        PAYLOAD_TAG_LEN + self.payload_bytes
    }

    /// Bytes of a whole packet, identical at every hop.
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// The application payload of a packet that a final hop has processed in place.
    ///
    /// Returns `None` if `packet` is not a whole packet.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        if packet.len() != self.packet_len() {
            return None;
        }
        packet.get(HEADER_LEN + PAYLOAD_TAG_LEN..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_packet_is_header_tag_and_2048_bytes() {
        assert_eq!(Params::default().packet_len(), 304 + 16 + 2048);
    }

    #[test]
    fn payload_size_bounds_are_enforced() {
        assert!(Params::new(MIN_PAYLOAD_BYTES - 1).is_err());
        assert!(Params::new(MIN_PAYLOAD_BYTES).is_ok());
        assert!(Params::new(MAX_PAYLOAD_BYTES).is_ok());
        assert!(Params::new(MAX_PAYLOAD_BYTES + 1).is_err());
    }

    #[test]
    fn payload_view_needs_a_whole_packet() {
        let p = Params::default();
        assert!(p.payload(&[0u8; 10]).is_none());
        assert_eq!(
            p.payload(&vec![0u8; p.packet_len()]).map(<[u8]>::len),
            Some(2048)
        );
    }
}
