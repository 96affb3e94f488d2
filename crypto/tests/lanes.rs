//! Every lane kernel this CPU runs against curve25519-dalek, byte for byte: random points
//! and scalars, and the edge cases (the identity, small scalars, the group order's
//! neighbours, non-canonical and negative encodings, bytes that are no point); and batches
//! through each kernel against single unwraps. A CPU without a kernel's instructions skips
//! that kernel and says so.

mod common;

use common::{network, rng};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use loopix_crypto::lanes::{Kernel, mul_encoded};
use loopix_crypto::params::ALPHA_LEN;
use loopix_crypto::{Command, KeyPhase, Params, ProcessError, build};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

fn reference(point: &[u8; 32], scalar: &Scalar) -> Option<[u8; 32]> {
    let p = CompressedRistretto(*point).decompress()?;
    (*point != [0u8; 32]).then(|| (p * scalar).compress().to_bytes())
}

/// Each kernel this CPU runs (the portable one included), on every lane of `points`.
fn check(points: &[[u8; 32]], scalars: &[Scalar]) {
    let expected: Vec<_> = points
        .iter()
        .zip(scalars)
        .map(|(p, s)| reference(p, s))
        .collect();
    for kernel in Kernel::available() {
        let mut got = vec![None; points.len()];
        mul_encoded(kernel, points, scalars, &mut got);
        for i in 0..points.len() {
            assert_eq!(
                got[i],
                expected[i],
                "{}, lane {i}: point {} scalar {}",
                kernel.name(),
                hex::encode(points[i]),
                hex::encode(scalars[i].to_bytes())
            );
        }
    }
}

fn random_scalar(rng: &mut ChaCha20Rng) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn random_point(rng: &mut ChaCha20Rng) -> [u8; 32] {
    (RISTRETTO_BASEPOINT_POINT * random_scalar(rng))
        .compress()
        .to_bytes()
}

#[test]
fn the_kernels_are_named() {
    let run: Vec<_> = Kernel::available().map(Kernel::name).collect();
    let skipped: Vec<_> = Kernel::ALL
        .iter()
        .filter(|k| !k.runs_here())
        .map(|k| k.name())
        .collect();
    eprintln!(
        "lane kernels on this CPU: {} (default {}); not run here: {skipped:?}",
        run.join(", "),
        Kernel::best().name()
    );
    assert_eq!(Kernel::available().last(), Some(Kernel::Portable));
}

/// `LANES_RUNS` random inputs per kernel (2,000 by default; 10^6 for the full
/// differential run, see crypto/SPEC.md).
#[test]
fn random_points_and_scalars_match_dalek() {
    let runs: usize = std::env::var("LANES_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut done = 0;
    while done < runs {
        let n = (runs - done).min(1_024);
        let points: Vec<_> = (0..n).map(|_| random_point(&mut rng)).collect();
        let scalars: Vec<_> = (0..n).map(|_| random_scalar(&mut rng)).collect();
        check(&points, &scalars);
        done += n;
    }
}

#[test]
fn edge_case_scalars_match_dalek() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let minus_one = -Scalar::ONE;
    let edge = [
        Scalar::ZERO,
        Scalar::ONE,
        Scalar::from(2u8),
        Scalar::from(7u8),
        Scalar::from(8u8),
        Scalar::from(15u8),
        Scalar::from(16u8),
        minus_one,
        minus_one - Scalar::ONE,
        Scalar::from(u64::MAX),
        Scalar::from_bytes_mod_order([0x88; 32]),
        Scalar::from_bytes_mod_order([0x77; 32]),
        Scalar::from_bytes_mod_order([0xff; 32]),
    ];
    // Each edge scalar in every lane position of the widest run.
    for shift in 0..16 {
        let scalars: Vec<_> = (0..edge.len() + shift)
            .map(|i| edge[(i + shift) % edge.len()])
            .collect();
        let points: Vec<_> = scalars.iter().map(|_| random_point(&mut rng)).collect();
        check(&points, &scalars);
    }
}

#[test]
fn bad_and_edge_encodings_are_refused_like_dalek() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let good = random_point(&mut rng);
    let mut p_bytes = [0xffu8; 32];
    p_bytes[0] = 0xed;
    p_bytes[31] = 0x7f;
    let mut p_plus_2 = p_bytes;
    p_plus_2[0] = 0xef;
    let mut negative = good;
    negative[0] |= 1;
    let mut top_bit = good;
    top_bit[31] |= 0x80;
    let small: Vec<[u8; 32]> = (0u8..16)
        .map(|k| {
            let mut b = [0u8; 32];
            b[0] = 2 * k;
            b
        })
        .collect();
    let mut cases = vec![
        [0u8; 32], // the identity: refused
        p_bytes,   // p itself (non-canonical zero)
        p_plus_2,
        negative,
        top_bit,
        [0xff; 32],
        (RistrettoPoint::default()).compress().to_bytes(),
    ];
    cases.extend(small);
    for _ in 0..40 {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        b[0] &= 0xfe;
        b[31] &= 0x7f;
        cases.push(b); // mostly not points
    }
    cases.push(good);
    // Each case in every lane position of the widest run, between good points.
    for shift in 0..16 {
        let mut points = vec![good; shift];
        points.extend(&cases);
        let scalars: Vec<_> = points.iter().map(|_| random_scalar(&mut rng)).collect();
        check(&points, &scalars);
    }
}

/// `lanes_taken` names the packets `process_batch` runs in lanes: runs of the kernel's
/// width holding at least its threshold.
#[test]
fn lanes_taken_counts_full_enough_runs() {
    let (relays, _) = network(7, 1, Command::Final);
    let mut proc = relays.into_iter().next().unwrap();
    let cases: [(Kernel, &[(usize, usize)]); 4] = [
        // Runs of 8 from 4 packets: 11 = 8 + 3 (the 3 one at a time).
        (
            Kernel::Ifma8,
            &[
                (1, 0),
                (3, 0),
                (4, 4),
                (8, 8),
                (11, 8),
                (12, 12),
                (16, 16),
                (19, 16),
            ],
        ),
        // Runs of 8 from 7: 14 = 8 + 6 (the 6 one at a time), 15 = 8 + 7.
        (Kernel::Avx2x8, &[(6, 0), (7, 7), (8, 8), (14, 8), (15, 15)]),
        // Runs of 4, full ones only.
        (Kernel::Avx2x4, &[(3, 0), (4, 4), (7, 4), (8, 8), (10, 8)]),
        (Kernel::Portable, &[(1, 0), (8, 0), (32, 0)]),
    ];
    for (kernel, expected) in cases {
        if !kernel.runs_here() {
            eprintln!("skipped: this CPU does not run {}", kernel.name());
            continue;
        }
        proc = proc.with_kernel(kernel);
        for &(n, taken) in expected {
            assert_eq!(
                proc.lanes_taken(n),
                taken,
                "{} with {n} packets",
                kernel.name()
            );
        }
    }
}

/// What can be in a shard's receive batch.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Relay,
    /// Relayed to a hop under an odd epoch's key: the re-blinded α carries the mark.
    RelayOdd,
    Final,
    Drop,
    /// α not a point.
    BadAlpha,
    /// α the identity.
    Identity,
    /// A header bit flipped: the MAC fails.
    Tampered,
    /// Too short.
    Short,
    /// The same bytes as the packet before it: a replay.
    Replay,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Relay),
        2 => Just(Kind::RelayOdd),
        1 => Just(Kind::Final),
        1 => Just(Kind::Drop),
        1 => Just(Kind::BadAlpha),
        1 => Just(Kind::Identity),
        1 => Just(Kind::Tampered),
        1 => Just(Kind::Short),
        1 => Just(Kind::Replay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A batch through each lane kernel gives, byte for byte and result for result, what
    /// one call per packet gives (dalek), whatever mix of packets it holds and however
    /// long it is (full runs, padded runs, small tails); replays are asked in order.
    #[test]
    fn a_batch_equals_its_single_unwraps(kinds in proptest::collection::vec(kind(), 1..40), seed in any::<u64>()) {
        let params = Params::default();
        let (relays, relay_path) = network(51, 3, Command::Final);
        let mut odd_path = relay_path.clone();
        odd_path[1].phase = KeyPhase::Odd;
        let (_, final_path) = network(51, 1, Command::Final);
        let (_, drop_path) = network(51, 1, Command::Drop);
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for (i, k) in kinds.iter().enumerate() {
            let fresh = |path| build(&params, path, &[i as u8; 3], &mut rng(seed ^ ((i as u64 + 1) << 20))).unwrap();
            let p = match k {
                Kind::Relay => fresh(&relay_path),
                Kind::RelayOdd => fresh(&odd_path),
                Kind::Final => fresh(&final_path),
                Kind::Drop => fresh(&drop_path),
                Kind::BadAlpha => { let mut p = fresh(&relay_path); p[..ALPHA_LEN].fill(0x5a); p }
                Kind::Identity => { let mut p = fresh(&relay_path); p[..ALPHA_LEN].fill(0); p }
                Kind::Tampered => { let mut p = fresh(&relay_path); p[ALPHA_LEN + 7] ^= 4; p }
                Kind::Short => { let mut p = fresh(&relay_path); p.truncate(100); p }
                Kind::Replay => packets.last().cloned().unwrap_or_else(|| fresh(&relay_path)),
            };
            packets.push(p);
        }
        let mut proc = relays.into_iter().next().unwrap();
        let mut singles = packets.clone();
        let mut seen = std::collections::HashSet::new();
        let expected: Vec<_> = singles
            .iter_mut()
            .map(|p| proc.process_unless_replayed(p, |t| !seen.insert(*t)))
            .collect();
        for kernel in Kernel::available() {
            proc = proc.with_kernel(kernel);
            let mut batch = packets.clone();
            let mut seen = std::collections::HashSet::new();
            let mut results = vec![Err(ProcessError::MacMismatch); batch.len()];
            proc.process_batch_unless_replayed(&mut batch, &mut results, |t| !seen.insert(*t));
            prop_assert_eq!(&results, &expected, "{}", kernel.name());
            prop_assert_eq!(&batch, &singles, "{}", kernel.name());
        }
    }
}
