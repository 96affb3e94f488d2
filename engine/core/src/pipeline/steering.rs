//! Which of a node's shards a datagram reaches: the kernel steers each datagram to the
//! socket of shard (first 4 bytes of the datagram, big-endian) mod shards, the first bytes
//! of the packet's group element α (the runtime's BPF program computes the same). Every
//! replay of a packet carries the same α, so it reaches the same shard; and a node that
//! builds its own loops so that they return with an α of its shard's gets them back there
//! ([`crate::formats::codec::Codec::build_into_steered`]).

/// The shard of `shards` a datagram beginning with `head` reaches (0 for fewer than 4
/// bytes or no shards).
pub fn owner_shard(head: &[u8], shards: usize) -> usize {
    match head.first_chunk::<4>() {
        Some(b) if shards > 0 => (u32::from_be_bytes(*b) % shards as u32) as usize,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arithmetic of the runtime's BPF program, `ld [0]; mod #n`; the runtime's tests
    /// check the kernel steers by it.
    #[test]
    fn the_first_four_bytes_big_endian_mod_shards() {
        assert_eq!(owner_shard(&[0, 0, 0, 5, 9], 2), 1);
        assert_eq!(owner_shard(&[0, 0, 1, 0], 3), 256 % 3);
        assert_eq!(owner_shard(&[1, 2], 4), 0, "short datagrams go to shard 0");
        assert_eq!(owner_shard(&[9, 9, 9, 9], 0), 0);
    }
}
