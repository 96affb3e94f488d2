//! The two client-provider messages that are not Sphinx packets.
//!
//! ```text
//! poll request (client -> provider): "LXPR" | client u64 | N x ack id u64
//! poll answer item (provider -> client): id u64 | one packet
//! ```
//! Every request carries exactly N ids (the ids of the previous answer, dummies included,
//! or random ones), and every answer exactly N items, so neither size says anything about
//! the inbox.

use loopix_crypto::Address;

const MAGIC: &[u8; 4] = b"LXPR";
/// Largest N: a poll answer of N packets must stay a sane burst.
pub const MAX_POLL_SIZE: u16 = 256;
/// Bytes before the ack ids of a poll request.
pub const POLL_HEADER_LEN: usize = 12;
/// Bytes of an answer item's id prefix.
pub const ITEM_ID_LEN: usize = 8;

/// Length of a poll request with `n` ack ids.
pub fn poll_request_len(n: usize) -> usize {
    POLL_HEADER_LEN + 8 * n
}

/// Writes a poll request; `out` must be `poll_request_len(acks.len())` long.
pub fn write_poll_request(out: &mut [u8], client: Address, acks: &[u64]) {
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&client.0.to_le_bytes());
    for (chunk, id) in out[POLL_HEADER_LEN..].chunks_exact_mut(8).zip(acks) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
}

/// Parses a poll request of exactly `n` acks: the client and its ack ids.
pub fn read_poll_request(
    bytes: &[u8],
    n: usize,
) -> Option<(Address, impl Iterator<Item = u64> + '_)> {
    if bytes.len() != poll_request_len(n) || &bytes[..4] != MAGIC {
        return None;
    }
    let client = Address(u64::from_le_bytes(bytes[4..12].try_into().ok()?));
    let acks = bytes[POLL_HEADER_LEN..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
    Some((client, acks))
}

/// Splits an answer item into its id and packet.
pub fn read_item(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (id, packet) = bytes.split_first_chunk::<ITEM_ID_LEN>()?;
    Some((u64::from_le_bytes(*id), packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_request_round_trips_and_checks_length_and_magic() {
        let mut buf = vec![0u8; poll_request_len(3)];
        write_poll_request(&mut buf, Address(42), &[1, 2, 3]);
        let (c, acks) = read_poll_request(&buf, 3).unwrap();
        assert_eq!(c, Address(42));
        assert_eq!(acks.collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(read_poll_request(&buf, 2).is_none());
        buf[0] = b'X';
        assert!(read_poll_request(&buf, 3).is_none());
    }

    #[test]
    fn items_split_id_from_packet() {
        let mut item = 77u64.to_le_bytes().to_vec();
        item.extend_from_slice(b"packet");
        assert_eq!(read_item(&item), Some((77, &b"packet"[..])));
        assert_eq!(read_item(b"short"), None);
    }
}
