//! Criterion benches for the Sphinx packet path: each primitive a hop uses, building a
//! packet for the default path, and processing one (and a batch). Processing rewrites the
//! packet in place, so every iteration gets a fresh copy made in untimed batched setup.
//!
//! Run: `cargo bench -p loopix-benches --bench sphinx`. The stack position group runs first
//! and calibrates, so every later group multiplies where a `loopix` command would.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use loopix_crypto::params::BETA_LEN;
use loopix_crypto::primitives::{aes_ctr_xor, compress, decompress, header_mac, mul};
use loopix_crypto::{
    Command, Hop, HopKeys, NodeId, Params, ProcessError, Processor, SecretKey, build, build_into,
    lioness,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const DEFAULT_PATH_HOPS: usize = 6;

fn path_and_first_hop(params: Params) -> (Vec<Hop>, Processor) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut keys: Vec<SecretKey> = (0..DEFAULT_PATH_HOPS)
        .map(|_| SecretKey::generate(&mut rng))
        .collect();
    let path = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Hop::new(
                k.public_key(),
                if i + 1 == DEFAULT_PATH_HOPS {
                    Command::Final
                } else {
                    Command::Relay {
                        next: NodeId(i as u64),
                        delay_us: 500,
                    }
                },
            )
        })
        .collect();
    (path, Processor::new(keys.swap_remove(0), params))
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitives");
    let scalar = Scalar::from_bytes_mod_order([5u8; 32]);
    let point = RistrettoPoint::mul_base(&scalar);
    let bytes = compress(&point);
    let keys = HopKeys::derive(&bytes);
    g.bench_function("ristretto_decompress", |b| {
        b.iter(|| decompress(black_box(&bytes)))
    });
    g.bench_function("ristretto_scalar_mul", |b| {
        b.iter(|| mul(black_box(&point), &scalar))
    });
    g.bench_function("ristretto_compress", |b| {
        b.iter(|| compress(black_box(&point)))
    });
    g.bench_function("kdf_sha256", |b| {
        b.iter(|| HopKeys::derive(black_box(&bytes)))
    });
    let beta = [1u8; BETA_LEN + 32];
    g.bench_function("header_mac", |b| {
        b.iter(|| header_mac(&[2; 32], black_box(&beta[..BETA_LEN])))
    });
    g.bench_function("header_stream_aes_ctr", |b| {
        let mut buf = beta;
        b.iter(|| aes_ctr_xor(&[3; 32], black_box(&mut buf)))
    });
    g.bench_function("lioness_decrypt_2064", |b| {
        let mut body = vec![0u8; Params::default().body_len()];
        b.iter(|| lioness::decrypt(keys.payload_key(), black_box(&mut body)))
    });
    let x_secret = x25519_dalek::StaticSecret::from([9u8; 32]);
    let x_public = x25519_dalek::PublicKey::from(&x_secret);
    g.bench_function("reference_x25519_dalek_ladder", |b| {
        b.iter(|| x_secret.diffie_hellman(black_box(&x_public)))
    });
    g.finish();
}

fn packet(c: &mut Criterion) {
    let params = Params::default();
    let (path, first) = path_and_first_hop(params);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut g = c.benchmark_group("packet");
    g.bench_function("build_6_hops", |b| {
        let mut out = vec![0u8; params.packet_len()];
        b.iter(|| build_into(&params, &path, b"bench", &mut rng, black_box(&mut out)))
    });
    let packet = build(&params, &path, b"bench", &mut rng).expect("valid path");
    g.bench_function("process_relay_hop", |b| {
        b.iter_batched_ref(
            || packet.clone(),
            |p| first.process(black_box(p)),
            BatchSize::SmallInput,
        )
    });
    // Small batches too: where batching starts to pay decides BATCHED_FROM (process.rs).
    for n in [2, 3, 4, 8, 32] {
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|_| build(&params, &path, b"bench", &mut rng).expect("valid"))
            .collect();
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function(format!("process_batch_{n}"), |b| {
            let mut results = vec![Err(ProcessError::MacMismatch); n];
            b.iter_batched_ref(
                || batch.clone(),
                |ps| first.process_batch(black_box(ps), &mut results),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The multiplication at the calibrated stack position and at the slowest one the
/// calibration sweep found (crypto/src/stack_position.rs).
fn stack_position(c: &mut Criterion) {
    let calibration = loopix_crypto::stack_position::calibrate();
    let (chosen, slowest) = (calibration.position, calibration.worst_position);
    let scalar = Scalar::from_bytes_mod_order([5u8; 32]);
    let point = RistrettoPoint::mul_base(&scalar);
    let mut g = c.benchmark_group("stack_position");
    for (name, position) in [("mul_at_calibrated", chosen), ("mul_at_slowest", slowest)] {
        g.bench_function(name, |b| {
            b.iter(|| loopix_crypto::stack_position::mul_at(position, black_box(&point), &scalar))
        });
    }
    g.finish();
}

criterion_group!(benches, stack_position, primitives, packet);
criterion_main!(benches);
