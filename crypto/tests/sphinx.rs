//! Behaviour of built and processed packets along whole paths.

mod common;

use common::{network, network_with, rng};
use loopix_crypto::params::{ALPHA_LEN, HEADER_LEN};
use loopix_crypto::{
    BuildError, Command, KeyPhase, NodeId, Params, ProcessError, Processed, Processor, SecretKey,
    build,
};
use proptest::prelude::*;

/// Processes `packet` at every hop, checking each command and the length and freshness
/// of every output; returns the last hop's result.
fn walk(procs: &[Processor], path: &[loopix_crypto::Hop], packet: &mut [u8]) -> Processed {
    let mut last = None;
    for (proc, hop) in procs.iter().zip(path) {
        let before = packet.to_vec();
        let out = proc.process(packet).expect("valid packet is accepted");
        assert_eq!(out.command, hop.command);
        assert_eq!(packet.len(), before.len());
        assert_ne!(&packet[..], &before[..]);
        last = Some(out);
    }
    last.expect("non-empty path")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn round_trip_on_every_path_length(
        hops in 1usize..=8,
        seed in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=2048),
    ) {
        let (procs, path) = network(seed, hops, Command::Final);
        let params = Params::default();
        let mut packet = build(&params, &path, &payload, &mut rng(seed ^ 1)).unwrap();
        prop_assert_eq!(packet.len(), params.packet_len());
        walk(&procs, &path, &mut packet);
        let got = params.payload(&packet).unwrap();
        prop_assert_eq!(&got[..payload.len()], &payload[..]);
        prop_assert!(got[payload.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn loop_and_drop_paths_end_as_built(hops in 1usize..=8, seed in any::<u64>()) {
        for last in [Command::LoopReturn, Command::Drop] {
            let (procs, path) = network(seed, hops, last);
            let mut packet = build(&Params::default(), &path, b"cover", &mut rng(seed)).unwrap();
            prop_assert_eq!(walk(&procs, &path, &mut packet).command, last);
        }
    }
}

#[test]
fn deliver_then_final_reaches_the_recipient() {
    let (procs, mut path) = network(7, 3, Command::Final);
    path[1].command = Command::Deliver {
        client: NodeId(42),
        delay_us: 5,
    };
    let mut packet = build(&Params::default(), &path, b"hello", &mut rng(8)).unwrap();
    walk(&procs, &path, &mut packet);
    assert_eq!(&Params::default().payload(&packet).unwrap()[..5], b"hello");
}

#[test]
fn every_flipped_header_bit_is_rejected_by_the_next_hop() {
    let (procs, path) = network(11, 3, Command::Final);
    let packet = build(&Params::default(), &path, b"x", &mut rng(12)).unwrap();
    // The top bit of α is the key phase, which picks the key and is not authenticated
    // itself: see `each_hop_reads_the_key_phase_its_sender_chose`.
    let phase_bit = ALPHA_LEN * 8 - 1;
    for bit in (0..HEADER_LEN * 8).filter(|&b| b != phase_bit) {
        let mut p = packet.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        let err = procs[0]
            .process(&mut p)
            .expect_err("tampered header must fail");
        let expected: &[ProcessError] = if bit < ALPHA_LEN * 8 {
            &[ProcessError::InvalidGroupElement, ProcessError::MacMismatch]
        } else {
            &[ProcessError::MacMismatch]
        };
        assert!(expected.contains(&err), "bit {bit}: {err:?}");
    }
}

#[test]
fn each_hop_reads_the_key_phase_its_sender_chose() {
    let (procs, mut path) = network(15, 4, Command::Final);
    let phases = [KeyPhase::Odd, KeyPhase::Odd, KeyPhase::Even, KeyPhase::Odd];
    for (hop, phase) in path.iter_mut().zip(phases) {
        hop.phase = phase;
    }
    let params = Params::default();
    let packet = build(&params, &path, b"phased", &mut rng(16)).unwrap();
    // Alone and in a batch, every hop finds its own phase in the α it receives.
    let mut single = packet.clone();
    let mut batch = vec![packet.clone(), packet.clone()];
    for (i, proc) in procs.iter().enumerate() {
        assert_eq!(KeyPhase::of_packet(&single), Some(phases[i]), "hop {i}");
        assert_eq!(KeyPhase::of_packet(&batch[1]), Some(phases[i]), "hop {i}");
        proc.process(&mut single).unwrap();
        let mut results = [Err(ProcessError::MacMismatch); 2];
        proc.process_batch(&mut batch, &mut results);
        assert!(results.iter().all(|r| r.is_ok()), "hop {i}: {results:?}");
    }
    assert_eq!(&params.payload(&single).unwrap()[..6], b"phased");
    assert_eq!(batch[0], single);
    // A flipped phase bit does not change the shared secret: the node picks its key by it,
    // so the packet meets the other epoch's key and fails there (engine tests show it).
    let mut flipped = packet.clone();
    flipped[ALPHA_LEN - 1] ^= 0x80;
    assert_eq!(KeyPhase::of_packet(&flipped), Some(KeyPhase::Even));
    assert!(procs[0].process(&mut flipped).is_ok());
}

#[test]
fn every_flipped_payload_bit_is_detected_by_the_recipient() {
    let params = Params::default();
    let (procs, path) = network(13, 2, Command::Final);
    let packet = build(&params, &path, b"payload", &mut rng(14)).unwrap();
    for bit in HEADER_LEN * 8..params.packet_len() * 8 {
        let mut p = packet.clone();
        p[bit / 8] ^= 1 << (bit % 8);
        procs[0]
            .process(&mut p)
            .expect("relay hop cannot see payload changes");
        assert_eq!(
            procs[1].process(&mut p),
            Err(ProcessError::PayloadTampered),
            "bit {bit}"
        );
    }
}

#[test]
fn a_flipped_payload_bit_mid_path_is_detected_at_the_end() {
    let params = Params::default();
    let (procs, path) = network(15, 6, Command::Final);
    let packet = build(&params, &path, b"payload", &mut rng(16)).unwrap();
    for bit in (HEADER_LEN * 8..params.packet_len() * 8).step_by(997) {
        let mut p = packet.clone();
        procs[0].process(&mut p).unwrap();
        procs[1].process(&mut p).unwrap();
        p[bit / 8] ^= 1 << (bit % 8);
        for proc in &procs[2..5] {
            proc.process(&mut p).unwrap();
        }
        assert_eq!(
            procs[5].process(&mut p),
            Err(ProcessError::PayloadTampered),
            "bit {bit}"
        );
    }
}

#[test]
fn same_packet_same_tag_different_packets_different_tags() {
    let (procs, path) = network(17, 3, Command::Final);
    let params = Params::default();
    let a = build(&params, &path, b"same", &mut rng(1)).unwrap();
    let b = build(&params, &path, b"same", &mut rng(2)).unwrap();
    let tag = |p: &Vec<u8>| procs[0].process(&mut p.clone()).unwrap().tag;
    assert_eq!(tag(&a), tag(&a));
    assert_ne!(tag(&a), tag(&b));
}

#[test]
fn replay_check_stops_before_the_packet_changes_hop() {
    let (procs, path) = network(19, 2, Command::Final);
    let packet = build(&Params::default(), &path, b"r", &mut rng(20)).unwrap();
    let mut first = packet.clone();
    let tag = procs[0].process(&mut first).unwrap().tag;
    let mut again = packet.clone();
    let result = procs[0].process_unless_replayed(&mut again, |t| *t == tag);
    assert_eq!(result, Err(ProcessError::Replayed));
}

#[test]
fn the_wrong_key_fails_with_a_mac_mismatch() {
    let (_, path) = network(21, 2, Command::Final);
    let packet = build(&Params::default(), &path, b"k", &mut rng(22)).unwrap();
    let stranger = Processor::new(SecretKey::generate(&mut rng(23)), Params::default());
    assert_eq!(
        stranger.process(&mut packet.clone()),
        Err(ProcessError::MacMismatch)
    );
}

#[test]
fn malformed_lengths_and_contents_are_typed_errors() {
    let (procs, _) = network(25, 1, Command::Final);
    let len = Params::default().packet_len();
    for n in [0, 1, 31, 32, HEADER_LEN, len - 1, len + 1, 2 * len] {
        let err = procs[0].process(&mut vec![0u8; n]).unwrap_err();
        assert_eq!(
            err,
            ProcessError::WrongLength {
                expected: len,
                got: n
            }
        );
    }
    assert_eq!(
        procs[0].process(&mut vec![0u8; len]),
        Err(ProcessError::InvalidGroupElement)
    );
    assert_eq!(
        procs[0].process(&mut vec![0xffu8; len]),
        Err(ProcessError::InvalidGroupElement)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_of_any_length_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let (procs, _) = network(27, 1, Command::Final);
        let mut b = bytes;
        prop_assert!(procs[0].process(&mut b).is_err());
    }

    #[test]
    fn random_header_behind_a_valid_alpha_is_rejected(
        seed in any::<u64>(),
        noise in proptest::collection::vec(any::<u8>(), 2064 + 256 + 16),
    ) {
        let (procs, path) = network(29, 1, Command::Final);
        let mut p = build(&Params::default(), &path, b"", &mut rng(seed)).unwrap();
        p[ALPHA_LEN..].copy_from_slice(&noise);
        prop_assert_eq!(procs[0].process(&mut p), Err(ProcessError::MacMismatch));
    }
}

#[test]
fn batch_gives_exactly_the_results_of_single_calls() {
    let params = Params::default();
    let (procs, path) = network(31, 3, Command::Final);
    let mut packets: Vec<Vec<u8>> = (0..12)
        .map(|i| build(&params, &path, &[i as u8; 9], &mut rng(i)).unwrap())
        .collect();
    packets[3][100] ^= 1;
    packets[7].truncate(10);
    packets[9] = packets[2].clone();
    let mut singles = packets.clone();
    let expected: Vec<_> = singles.iter_mut().map(|p| procs[0].process(p)).collect();
    let mut results = vec![Err(ProcessError::MacMismatch); packets.len()];
    assert_eq!(procs[0].process_batch(&mut packets, &mut results), 12);
    assert_eq!(results, expected);
    assert_eq!(packets, singles);
}

#[test]
fn invalid_paths_and_payloads_are_build_errors() {
    let params = Params::default();
    let (_, path) = network(33, 3, Command::Final);
    let r = &mut rng(1);
    assert_eq!(
        build(&params, &[], b"", r),
        Err(BuildError::PathLength { hops: 0 })
    );
    let (_, long) = network(33, 9, Command::Final);
    assert_eq!(
        build(&params, &long, b"", r),
        Err(BuildError::PathLength { hops: 9 })
    );
    let mut open_end = path.clone();
    open_end[2].command = Command::Relay {
        next: NodeId(1),
        delay_us: 0,
    };
    assert_eq!(
        build(&params, &open_end, b"", r),
        Err(BuildError::PathShape { hop: 2 })
    );
    let mut early_end = path.clone();
    early_end[0].command = Command::Drop;
    assert_eq!(
        build(&params, &early_end, b"", r),
        Err(BuildError::PathShape { hop: 0 })
    );
    let big = vec![0u8; 2049];
    assert_eq!(
        build(&params, &path, &big, r),
        Err(BuildError::PayloadTooLong {
            len: 2049,
            max: 2048
        })
    );
}

#[test]
fn header_bytes_do_not_reveal_path_length() {
    // After the first hop, a 2-hop and an 8-hop packet must both look like noise in β:
    // no run of zeros where unused slots would be.
    for hops in [2, 8] {
        let (procs, path) = network(35, hops, Command::Final);
        let mut p = build(&Params::default(), &path, b"", &mut rng(36)).unwrap();
        procs[0].process(&mut p).unwrap();
        let zeros = p[ALPHA_LEN..HEADER_LEN].iter().filter(|&&b| b == 0).count();
        assert!(zeros < 8, "{hops} hops: {zeros} zero bytes in the header");
    }
}

#[test]
fn the_payload_size_is_a_network_parameter() {
    let small = Params::new(64).unwrap();
    let (procs, path) = network_with(small, 37, 2, Command::Final);
    let mut p = build(&small, &path, b"tiny", &mut rng(38)).unwrap();
    assert_eq!(p.len(), HEADER_LEN + 16 + 64);
    walk(&procs, &path, &mut p);
    assert_eq!(&small.payload(&p).unwrap()[..4], b"tiny");
    let (default_procs, _) = network(37, 2, Command::Final);
    let mut q = build(&small, &path, b"tiny", &mut rng(38)).unwrap();
    let err = default_procs[0].process(&mut q).unwrap_err();
    assert!(matches!(err, ProcessError::WrongLength { .. }));
}

#[test]
fn dummies_have_a_valid_group_element_and_fail_only_at_the_mac() {
    let (procs, _) = network(39, 1, Command::Final);
    let mut p = vec![0u8; Params::default().packet_len()];
    let mut r = rng(40);
    for _ in 0..20 {
        loopix_crypto::fill_dummy(&mut r, &mut p);
        assert_eq!(
            procs[0].process(&mut p.clone()),
            Err(ProcessError::MacMismatch)
        );
    }
}

#[test]
fn the_traced_mac_is_what_the_first_hop_forwards_last_in_its_header() {
    let params = Params::default();
    let (procs, path) = network(41, 3, Command::Final);
    let mut p = vec![0u8; params.packet_len()];
    let mac = loopix_crypto::build_into_traced(&params, &path, b"t", &mut rng(42), &mut p).unwrap();
    procs[0].process(&mut p).unwrap();
    assert_eq!(&p[HEADER_LEN - 16..HEADER_LEN], &mac);
}

/// Batches long enough for the batched compressions, over several chunks and a short
/// tail, with relays, final hops, drops, bad packets and a replay check asked in order.
#[test]
fn batched_compression_matches_single_calls_across_chunks() {
    let params = Params::default();
    let (relays, relay_path) = network(41, 3, Command::Final);
    let (_, final_path) = network(41, 1, Command::Final);
    let (_, drop_path) = network(41, 1, Command::Drop);
    let mut packets: Vec<Vec<u8>> = (0..70u64)
        .map(|i| {
            let path = match i % 5 {
                0 => &final_path,
                1 => &drop_path,
                _ => &relay_path,
            };
            build(&params, path, &[i as u8; 5], &mut rng(100 + i)).unwrap()
        })
        .collect();
    packets[10][ALPHA_LEN + 3] ^= 1;
    packets[33][..ALPHA_LEN].fill(0xff);
    packets[50] = packets[49].clone();
    let mut singles = packets.clone();
    let mut seen = std::collections::HashSet::new();
    let expected: Vec<_> = singles
        .iter_mut()
        .map(|p| relays[0].process_unless_replayed(p, |t| !seen.insert(*t)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut results = vec![Err(ProcessError::MacMismatch); packets.len()];
    let n =
        relays[0].process_batch_unless_replayed(&mut packets, &mut results, |t| !seen.insert(*t));
    assert_eq!(n, 70);
    assert_eq!(results, expected);
    assert_eq!(results[50], Err(ProcessError::Replayed));
    let command = |i: usize| results[i].map(|p| p.command);
    assert_eq!(
        (command(0), command(1)),
        (Ok(Command::Final), Ok(Command::Drop))
    );
    assert!(matches!(command(2), Ok(Command::Relay { .. })));
    assert_eq!(packets, singles);
}

/// Batches of one to three packets (one alone goes the single way, two or more the batched
/// way), a bad one among them: the same results and buffers as single calls.
#[test]
fn small_batches_match_single_calls() {
    let params = Params::default();
    let (relays, path) = network(43, 3, Command::Final);
    for n in 1..=3u64 {
        let mut packets: Vec<Vec<u8>> = (0..n)
            .map(|i| build(&params, &path, &[i as u8; 3], &mut rng(200 + i)).unwrap())
            .collect();
        if n == 3 {
            packets[1][ALPHA_LEN + 1] ^= 1;
        }
        let mut singles = packets.clone();
        let expected: Vec<_> = singles.iter_mut().map(|p| relays[0].process(p)).collect();
        let mut results = vec![Err(ProcessError::MacMismatch); packets.len()];
        assert_eq!(
            relays[0].process_batch(&mut packets, &mut results),
            n as usize
        );
        assert_eq!(results, expected, "batch of {n}");
        assert_eq!(packets, singles, "batch of {n}");
        assert!(results[0].is_ok());
    }
}

/// A steered build: the packet reaching its last hop begins with bytes the sender chose
/// to accept (a node's shard of its own loops); it unwraps like any other packet; and an
/// accept nothing passes is an error, not a loop.
#[test]
fn a_steered_packet_reaches_its_last_hop_with_an_accepted_alpha() {
    use loopix_crypto::{MAX_STEER_TRIES, build_into_steered};
    let shard_of = |alpha: &[u8]| u32::from_be_bytes(alpha[..4].try_into().unwrap()) % 4;
    let params = Params::default();
    for seed in 0..8u64 {
        let (procs, path) = network(seed, 4, Command::LoopReturn);
        let want = (seed % 4) as u32;
        let mut packet = vec![0u8; params.packet_len()];
        build_into_steered(
            &params,
            &path,
            b"loop",
            &mut rng(seed),
            &mut packet,
            &|alpha| shard_of(alpha) == want,
        )
        .unwrap();
        for (i, proc) in procs.iter().enumerate() {
            if i == procs.len() - 1 {
                assert_eq!(shard_of(&packet[..ALPHA_LEN]), want, "seed {seed}");
            }
            proc.process(&mut packet).expect("a valid packet");
        }
    }
    let (_, path) = network(1, 2, Command::LoopReturn);
    let mut packet = vec![0u8; params.packet_len()];
    assert_eq!(
        build_into_steered(&params, &path, b"", &mut rng(1), &mut packet, &|_| false),
        Err(BuildError::Unsteerable {
            tries: MAX_STEER_TRIES
        })
    );
}
