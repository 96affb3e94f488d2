//! What a client and its provider exchange inside their session ([`crate::session`]):
//!
//! ```text
//! packet (client -> provider): one Sphinx packet
//! poll   (client -> provider): N x ack id u64
//! item   (provider -> client): id u64 | waiting u32 | one packet
//! ```
//! Every poll carries exactly N ids (the ids of the previous answer, dummies included, or
//! random ones), and every answer is exactly N items, so neither says anything about the
//! inbox; the session frame makes all of them one length on the wire. `waiting` is what
//! the client's inbox holds beyond this answer, inside the session, so only the client
//! learns it: a recipient back after an absence knows how long its backlog will take.

/// Largest N: a poll answer of N packets must stay a sane burst.
pub const MAX_POLL_SIZE: u16 = 256;
/// Bytes of an answer item's id.
pub const ITEM_ID_LEN: usize = 8;
/// Bytes before an answer item's packet: its id and the count still waiting.
pub const ITEM_HEADER_LEN: usize = ITEM_ID_LEN + 4;

/// One answer item, read.
#[derive(Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub id: u64,
    /// Packets the client's inbox holds beyond this answer's.
    pub waiting: u32,
    pub packet: &'a [u8],
}

/// Writes an item's header into `out` (at least [`ITEM_HEADER_LEN`] bytes); the packet
/// follows it.
pub fn write_item_header(out: &mut [u8], id: u64, waiting: u32) {
    out[..ITEM_ID_LEN].copy_from_slice(&id.to_le_bytes());
    out[ITEM_ID_LEN..ITEM_HEADER_LEN].copy_from_slice(&waiting.to_le_bytes());
}

/// Splits an answer item into its id, waiting count and packet.
pub fn read_item(bytes: &[u8]) -> Option<Item<'_>> {
    let (id, rest) = bytes.split_first_chunk::<ITEM_ID_LEN>()?;
    let (waiting, packet) = rest.split_first_chunk::<4>()?;
    Some(Item {
        id: u64::from_le_bytes(*id),
        waiting: u32::from_le_bytes(*waiting),
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_split_id_and_waiting_from_packet() {
        let mut item = vec![0u8; ITEM_HEADER_LEN];
        write_item_header(&mut item, 77, 9);
        item.extend_from_slice(b"packet");
        assert_eq!(
            read_item(&item),
            Some(Item {
                id: 77,
                waiting: 9,
                packet: b"packet"
            })
        );
        assert_eq!(read_item(b"short"), None);
        assert_eq!(read_item(b"eightbyt"), None);
    }
}
