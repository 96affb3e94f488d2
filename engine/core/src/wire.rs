//! What a client and its provider exchange inside their session ([`crate::session`]):
//!
//! ```text
//! packet (client -> provider): one Sphinx packet
//! poll   (client -> provider): N x ack id u64
//! item   (provider -> client): id u64 | one packet
//! ```
//! Every poll carries exactly N ids (the ids of the previous answer, dummies included, or
//! random ones), and every answer is exactly N items, so neither says anything about the
//! inbox; the session frame makes all of them one length on the wire.

/// Largest N: a poll answer of N packets must stay a sane burst.
pub const MAX_POLL_SIZE: u16 = 256;
/// Bytes of an answer item's id prefix.
pub const ITEM_ID_LEN: usize = 8;

/// Splits an answer item into its id and packet.
pub fn read_item(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (id, packet) = bytes.split_first_chunk::<ITEM_ID_LEN>()?;
    Some((u64::from_le_bytes(*id), packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_split_id_from_packet() {
        let mut item = 77u64.to_le_bytes().to_vec();
        item.extend_from_slice(b"packet");
        assert_eq!(read_item(&item), Some((77, &b"packet"[..])));
        assert_eq!(read_item(b"short"), None);
    }
}
