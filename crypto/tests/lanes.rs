//! The lane kernel against curve25519-dalek, byte for byte: random points and scalars,
//! and the edge cases (the identity, small scalars, the group order's neighbours,
//! non-canonical and negative encodings, bytes that are no point). On a CPU without
//! AVX-512 IFMA the kernel is the portable path and the test compares dalek with itself;
//! it says so.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use loopix_crypto::lanes::{Kernel, LANES, mul_encoded};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

fn reference(point: &[u8; 32], scalar: &Scalar) -> Option<[u8; 32]> {
    let p = CompressedRistretto(*point).decompress()?;
    (*point != [0u8; 32]).then(|| (p * scalar).compress().to_bytes())
}

fn check(points: &[[u8; 32]; LANES], scalars: &[Scalar; LANES]) {
    let got = mul_encoded(Kernel::detect(), points, scalars);
    for i in 0..LANES {
        assert_eq!(
            got[i],
            reference(&points[i], &scalars[i]),
            "lane {i}: point {} scalar {}",
            hex::encode(points[i]),
            hex::encode(scalars[i].to_bytes())
        );
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
fn the_kernel_is_named() {
    eprintln!("lane kernel on this CPU: {}", Kernel::detect().name());
}

#[test]
fn random_points_and_scalars_match_dalek() {
    let runs: usize = std::env::var("LANES_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..runs / LANES {
        let points = core::array::from_fn(|_| random_point(&mut rng));
        let scalars = core::array::from_fn(|_| random_scalar(&mut rng));
        check(&points, &scalars);
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
    for chunk in edge.chunks(LANES) {
        let scalars = core::array::from_fn(|i| chunk.get(i).copied().unwrap_or(Scalar::ONE));
        let points = core::array::from_fn(|_| random_point(&mut rng));
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
    for chunk in cases.chunks(LANES) {
        let points = core::array::from_fn(|i| chunk.get(i).copied().unwrap_or(good));
        let scalars = core::array::from_fn(|_| random_scalar(&mut rng));
        check(&points, &scalars);
    }
}
