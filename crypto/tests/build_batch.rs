//! `build_batch` against `build_into_traced`, byte for byte: for each lane kernel this CPU
//! runs, batches of every size up to past two runs, paths of every length with either key
//! phase, payloads of every length, the packets and MACs a call per packet gives from the
//! same RNG, and the RNG left where it would be. A bad job is refused before anything is
//! drawn or written.

mod common;

use loopix_crypto::lanes::Kernel;
use loopix_crypto::params::MAC_LEN;
use loopix_crypto::{
    BuildError, BuildJob, Command, Hop, KeyPhase, MAX_HOPS, NodeId, Params, SecretKey, build_batch,
    build_into_traced,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// A path of `hops` hops under fresh keys, phases from `phases`' bits, ending in `Final`.
fn path(rng: &mut ChaCha20Rng, hops: usize, phases: u32) -> Vec<Hop> {
    (0..hops)
        .map(|i| {
            let command = if i + 1 == hops {
                Command::Final
            } else {
                Command::Relay {
                    next: NodeId(i as u64),
                    delay_us: i as u32,
                }
            };
            let mut hop = Hop::new(SecretKey::generate(rng).public_key(), command);
            if phases & (1 << i) != 0 {
                hop.phase = KeyPhase::Odd;
            }
            hop
        })
        .collect()
}

/// Builds `jobs` both ways from `seed` with `kernel` and asserts they agree.
fn agree(params: &Params, kernel: Kernel, jobs: &[BuildJob<'_>], seed: u64) {
    let len = params.packet_len();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut one_by_one = vec![vec![0u8; len]; jobs.len()];
    let expected_macs: Vec<[u8; MAC_LEN]> = jobs
        .iter()
        .zip(&mut one_by_one)
        .map(|(j, out)| build_into_traced(params, j.path, j.payload, &mut rng, out).unwrap())
        .collect();
    let expected_next = rng.next_u64();

    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut batch = vec![vec![0u8; len]; jobs.len()];
    let mut outs: Vec<&mut [u8]> = batch.iter_mut().map(|b| &mut b[..]).collect();
    let mut macs = vec![[0u8; MAC_LEN]; jobs.len()];
    build_batch(params, kernel, jobs, &mut rng, &mut outs, &mut macs).unwrap();
    for (i, (a, b)) in batch.iter().zip(&one_by_one).enumerate() {
        assert!(
            a == b,
            "{}: packet {i} of {} differs",
            kernel.name(),
            jobs.len()
        );
    }
    assert_eq!(macs, expected_macs, "{}", kernel.name());
    assert_eq!(
        rng.next_u64(),
        expected_next,
        "{}: RNG state",
        kernel.name()
    );
}

#[test]
fn every_size_and_path_length_gives_the_packets_of_one_at_a_time() {
    let params = Params::new(256).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let paths: Vec<Vec<Hop>> = (0..40)
        .map(|i| path(&mut rng, 1 + i % MAX_HOPS, i as u32 * 37))
        .collect();
    let payloads: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; (i * 7) % 200]).collect();
    let jobs: Vec<BuildJob<'_>> = paths
        .iter()
        .zip(&payloads)
        .map(|(p, d)| BuildJob {
            path: p,
            payload: d,
        })
        .collect();
    for kernel in Kernel::available() {
        for n in [0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 33, 40] {
            agree(&params, kernel, &jobs[..n], n as u64);
        }
        // One path for all: what a load generator builds.
        let same: Vec<BuildJob<'_>> = (0..24).map(|_| jobs[5]).collect();
        agree(&params, kernel, &same, 99);
    }
}

#[test]
fn a_bad_job_is_refused_before_anything_is_drawn_or_written() {
    let params = Params::new(64).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let good = path(&mut rng, 3, 0);
    let mut bad = good.clone();
    bad[0].command = Command::Final; // only the last hop may end the path
    let jobs = [
        BuildJob {
            path: &good,
            payload: b"a",
        },
        BuildJob {
            path: &bad,
            payload: b"b",
        },
    ];
    let mut bufs = vec![vec![7u8; params.packet_len()]; 2];
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let mut macs = [[0u8; MAC_LEN]; 2];
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let kernel = Kernel::detect();
    assert_eq!(
        build_batch(&params, kernel, &jobs, &mut rng, &mut outs, &mut macs),
        Err(BuildError::PathShape { hop: 0 })
    );
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 7)), "written");
    assert_eq!(
        rng.next_u64(),
        ChaCha20Rng::seed_from_u64(3).next_u64(),
        "drawn"
    );
    // One output buffer short.
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().take(1).map(|b| &mut b[..]).collect();
    let jobs = [jobs[0], jobs[0]];
    assert_eq!(
        build_batch(&params, kernel, &jobs, &mut rng, &mut outs, &mut macs),
        Err(BuildError::BatchLength {
            jobs: 2,
            outs: 1,
            macs: 2
        })
    );
    // A payload too long for the packets.
    let long = vec![0u8; params.payload_bytes() + 1];
    let jobs = [BuildJob {
        path: &good,
        payload: &long,
    }];
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().take(1).map(|b| &mut b[..]).collect();
    assert!(matches!(
        build_batch(&params, kernel, &jobs, &mut rng, &mut outs, &mut macs[..1]),
        Err(BuildError::PayloadTooLong { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random batches: sizes, path lengths, phases, payload lengths and seeds.
    #[test]
    fn random_batches_agree_with_one_at_a_time(
        seed in any::<u64>(),
        shapes in prop::collection::vec((1..=MAX_HOPS, any::<u32>(), 0usize..=64), 0..36),
    ) {
        let params = Params::new(64).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let paths: Vec<Vec<Hop>> = shapes.iter().map(|&(h, ph, _)| path(&mut rng, h, ph)).collect();
        let payloads: Vec<Vec<u8>> = shapes.iter().map(|&(_, _, n)| vec![0xa5; n]).collect();
        let jobs: Vec<BuildJob<'_>> = paths
            .iter()
            .zip(&payloads)
            .map(|(p, d)| BuildJob { path: p, payload: d })
            .collect();
        for kernel in Kernel::available() {
            agree(&params, kernel, &jobs, seed);
        }
    }
}
