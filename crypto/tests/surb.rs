//! Reply blocks along whole paths: the maker opens what the replier wrote, a change on the
//! way is caught, and a block is good for one reply.

mod common;

use common::{network, rng};
use loopix_crypto::params::HEADER_LEN;
use loopix_crypto::{BuildError, Command, Params, ProcessError, SURB_LEN, Surb, build_surb};
use proptest::prelude::*;

const REPLY: Command = Command::Reply { surb_id: 0xfeed };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any path length, any payload: every hop unwraps the reply like any packet, the last
    /// one says `Reply` with the block's id, and the maker reads the payload back.
    #[test]
    fn the_maker_opens_what_the_replier_wrote(
        hops in 1usize..=8,
        seed in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=2048),
    ) {
        let params = Params::default();
        let (procs, path) = network(seed, hops, REPLY);
        let (surb, opener) = build_surb(&path, &mut rng(seed ^ 7)).unwrap();
        prop_assert_eq!(opener.surb_id(), 0xfeed);
        let surb = Surb::from_bytes(&surb.to_bytes()).unwrap();
        let mut packet = vec![0u8; params.packet_len()];
        surb.write_reply(&params, &payload, &mut packet).unwrap();
        for (i, proc) in procs.iter().enumerate() {
            let out = proc.process(&mut packet).unwrap();
            prop_assert_eq!(out.command, path[i].command);
        }
        let got = opener.open(&params, &mut packet).unwrap();
        prop_assert_eq!(&got[..payload.len()], &payload[..]);
        prop_assert!(got[payload.len()..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_reply_changed_on_the_way_is_caught_by_the_maker() {
    let params = Params::default();
    let (procs, path) = network(3, 4, REPLY);
    let (surb, opener) = build_surb(&path, &mut rng(4)).unwrap();
    let mut packet = vec![0u8; params.packet_len()];
    surb.write_reply(&params, b"ack", &mut packet).unwrap();
    for (i, proc) in procs.iter().enumerate() {
        proc.process(&mut packet).unwrap();
        if i == 1 {
            packet[HEADER_LEN + 100] ^= 1; // a hop that tags the body
        }
    }
    assert_eq!(
        opener.open(&params, &mut packet).err(),
        Some(ProcessError::PayloadTampered)
    );
}

/// The header is fixed, so a second reply from the same block meets its first hop with
/// the same replay tag (and is dropped there); two blocks never share one.
#[test]
fn a_block_is_good_for_one_reply() {
    let params = Params::default();
    let (procs, path) = network(5, 3, REPLY);
    let (surb, _) = build_surb(&path, &mut rng(6)).unwrap();
    let (other, _) = build_surb(&path, &mut rng(7)).unwrap();
    let tag_at_first_hop = |s: &Surb, payload: &[u8]| {
        let mut packet = vec![0u8; params.packet_len()];
        s.write_reply(&params, payload, &mut packet).unwrap();
        procs[0].process(&mut packet).unwrap().tag
    };
    assert_eq!(
        tag_at_first_hop(&surb, b"one"),
        tag_at_first_hop(&surb, b"two")
    );
    assert_ne!(
        tag_at_first_hop(&surb, b"one"),
        tag_at_first_hop(&other, b"one")
    );
}

#[test]
fn blocks_end_in_a_reply_and_come_in_one_size() {
    let (_, path) = network(8, 3, Command::Final);
    assert_eq!(
        build_surb(&path, &mut rng(8)).err(),
        Some(BuildError::PathShape { hop: 2 })
    );
    let (_, path) = network(8, 3, REPLY);
    let (surb, _) = build_surb(&path, &mut rng(8)).unwrap();
    let bytes = surb.to_bytes();
    assert_eq!(bytes.len(), SURB_LEN);
    assert!(Surb::from_bytes(&bytes[1..]).is_none());
    assert!(Surb::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_none());
    let params = Params::default();
    let mut short = vec![0u8; params.packet_len() - 1];
    assert!(matches!(
        surb.write_reply(&params, b"", &mut short),
        Err(BuildError::BufferLength { .. })
    ));
}
