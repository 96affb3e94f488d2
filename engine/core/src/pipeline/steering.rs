//! Which of a node's shards a datagram reaches, and which shard a provider's client lives
//! on.
//!
//! The kernel steers each datagram to the socket of shard (first 4 bytes of the datagram,
//! big-endian) mod shards (the runtime's BPF program computes the same). For a Sphinx
//! packet these are the first bytes of its group element α: every replay of a packet
//! carries the same α, so it reaches the same shard; and a node that builds its own loops
//! so that they return with an α of its shard's gets them back there
//! ([`crate::formats::codec::Codec::build_into_steered`]). For a session frame they are the
//! receiver index, which the provider picks so that it names the shard holding the session
//! ([`crate::session::frame::receiver_shard`]). A datagram whose first 4 bytes are zero (a
//! handshake initiation, which has no receiver yet) is left to the kernel's hash of its
//! source address and port, so initiations spread over the shards and a client's retry
//! after a cookie reaches the shard that sent the cookie.

/// The shard of `shards` a datagram beginning with `head` belongs to by its content (0 for
/// fewer than 4 bytes or no shards).
pub fn owner_shard(head: &[u8], shards: usize) -> usize {
    match head.first_chunk::<4>() {
        Some(b) if shards > 0 => (u32::from_be_bytes(*b) % shards as u32) as usize,
        _ => 0,
    }
}

/// The shard the kernel steers a datagram beginning with `head` to, when its content
/// decides it: `None` when its first 4 bytes are zero (the kernel picks by the source's
/// hash, which no shard can check).
pub fn steered_shard(head: &[u8], shards: usize) -> Option<usize> {
    match head.first_chunk::<4>() {
        Some(&[0, 0, 0, 0]) => None,
        _ => Some(owner_shard(head, shards)),
    }
}

/// The shard of a provider running `shards` that is `client`'s home: where its inbox, its
/// quota and its sessions live. A function of the client's id and the shard count alone,
/// so every shard knows every client's home without asking, a re-handshake lands on the
/// same shard, and after a restart with another shard count every client has a home again
/// (its stored packets are loaded there; see the runtime's inbox store).
pub fn home_shard(client: loopix_crypto::NodeId, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // SplitMix64's finalizer: ids are often consecutive; their homes should not be.
    let mut z = client.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::NodeId;

    /// The arithmetic of the runtime's BPF program, `ld [0]; mod #n`; the runtime's tests
    /// check the kernel steers by it.
    #[test]
    fn the_first_four_bytes_big_endian_mod_shards() {
        assert_eq!(owner_shard(&[0, 0, 0, 5, 9], 2), 1);
        assert_eq!(owner_shard(&[0, 0, 1, 0], 3), 256 % 3);
        assert_eq!(owner_shard(&[1, 2], 4), 0, "short datagrams go to shard 0");
        assert_eq!(owner_shard(&[9, 9, 9, 9], 0), 0);
        assert_eq!(steered_shard(&[0, 0, 0, 0, 7], 2), None, "an initiation");
        assert_eq!(steered_shard(&[0, 0, 0, 5], 2), Some(1));
    }

    #[test]
    fn homes_spread_over_the_shards_and_one_shard_is_everyone_s_home() {
        for shards in [2, 3, 8] {
            let mut per = vec![0; shards];
            for id in 0..8_000 {
                let home = home_shard(NodeId(id), shards);
                assert_eq!(home, home_shard(NodeId(id), shards), "a function of the id");
                per[home] += 1;
            }
            let fair = 8_000 / shards;
            assert!(
                per.iter().all(|&n| n > fair * 8 / 10 && n < fair * 12 / 10),
                "{shards} shards: {per:?}"
            );
        }
        assert_eq!(home_shard(NodeId(12345), 1), 0);
    }
}
