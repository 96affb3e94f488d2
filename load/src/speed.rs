//! `loopix speed`: what one core of this machine can do, like `openssl speed`.
//!
//! Measures, in one run, each primitive a hop uses, their sum (the per-hop crypto
//! floor), the real per-hop processing time and the time to build a packet for the
//! default Loopix path. Operators size hardware from `process_ns`; performance work
//! tracks `process_ns / floor_ns`, which only means something within one run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Args;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use loopix_core::network::link::LINK_OVERHEAD;
use loopix_crypto::lanes::{Kernel, MAX_LANES, mul_encoded};
use loopix_crypto::params::{BETA_LEN, ROUTING_LEN};
use loopix_crypto::primitives::{aes_ctr_xor, compress, decompress, header_mac, mul};
use loopix_crypto::{
    Command, Hop, HopKeys, LINK_TAG_LEN, LinkSecret, NodeId, Params, Processor, SecretKey,
    SessionSecret, lioness,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::measure::{Case, run_round_robin};

/// Hops of the default Loopix path: ingress provider, three mix layers, egress provider,
/// recipient client.
pub const DEFAULT_PATH_HOPS: usize = 6;

/// Options of `loopix speed`.
#[derive(Args, Debug)]
pub struct SpeedArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Measurement rounds per case (the median round is reported).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Target length of one round, in milliseconds.
    #[arg(long, default_value_t = 20)]
    round_ms: u64,
    /// Application bytes per packet (the network's payload size).
    #[arg(long, default_value_t = loopix_crypto::DEFAULT_PAYLOAD_BYTES)]
    payload_bytes: usize,
    /// Hops of the path whose build time is measured.
    #[arg(long, default_value_t = DEFAULT_PATH_HOPS as u8,
          value_parser = clap::value_parser!(u8).range(1..=8))]
    hops: u8,
}

/// What `--json` prints.
#[derive(Serialize, Debug)]
pub struct SpeedReport {
    pub floor_ns: f64,
    pub process_ns: f64,
    pub build_ns: f64,
    /// Building packets along the same path with `build_batch` in batches of 4, 8, 16
    /// and 32, ns per packet; the best, and its ratio to `build_ns`.
    pub build_batch_ns: BTreeMap<&'static str, f64>,
    pub build_batch_ns_per_packet: f64,
    pub build_batch_over_build: f64,
    pub process_over_floor: f64,
    pub packets_per_sec_per_core: f64,
    pub floor_packets_per_sec_per_core: f64,
    pub hops: usize,
    pub packet_bytes: usize,
    pub payload_bytes: usize,
    /// Each primitive one hop uses, ns per call; `floor_ns` is their weighted sum.
    pub primitives: BTreeMap<&'static str, f64>,
    /// How often one hop calls each primitive.
    pub calls_per_hop: BTreeMap<&'static str, u32>,
    /// Alternatives measured for comparison, not used by the packet path.
    pub reference: BTreeMap<&'static str, f64>,
    /// Link authentication per hop: the tag checked on the way in and the one written on
    /// the way out (two ChaCha20-Poly1305 tags over a packet and its trailer), ns.
    pub link_ns: f64,
    /// `link_ns / floor_ns`: what authenticated links add to a hop's crypto.
    pub link_over_floor: f64,
    pub curve_backend: &'static str,
    /// The lane kernel this CPU runs (`loopix_crypto::lanes`); `batch_kernel` is the same.
    pub lanes_kernel: &'static str,
    pub batch_kernel: &'static str,
    /// The start-up measurement the lane kernel was chosen by (every kernel this CPU runs,
    /// ns per packet of a batch's public-key work), and how it was chosen: "measurement",
    /// or "fixed before" (`LOOPIX_KERNEL`).
    pub kernel_measured_ns: BTreeMap<&'static str, f64>,
    pub kernel_chosen_by: &'static str,
    /// Real processing through `process_batch` in batches of 4, 8 and 16, ns per packet.
    pub batch_ns: BTreeMap<&'static str, f64>,
    /// The best of them, and its ratio to the floor.
    pub batch_ns_per_packet: f64,
    pub batch_over_floor: f64,
    pub rounds: usize,
    /// The stack position the multiplication runs at (`stack_position::calibrate`), and its
    /// cost there and at the slowest position, ns.
    pub mul_stack_position: usize,
    pub mul_ns_at_position: f64,
    pub mul_ns_worst_position: f64,
}

/// Batch sizes measured through `process_batch`.
const BATCH_SIZES: [(&str, usize); 3] = [
    ("process_batch_4", 4),
    ("process_batch_8", 8),
    ("process_batch_16", 16),
];

/// Batch sizes measured through `build_batch`.
const BUILD_BATCH_SIZES: [(&str, usize); 4] = [
    ("build_batch_4", 4),
    ("build_batch_8", 8),
    ("build_batch_16", 16),
    ("build_batch_32", 32),
];

/// The primitives of one relay hop, and how many times it calls each.
const FLOOR: [(&str, u32); 7] = [
    ("ristretto_decompress", 1),
    ("ristretto_scalar_mul", 2),
    ("ristretto_compress", 2),
    ("kdf_sha256", 1),
    ("header_mac_hmac_sha256", 1),
    ("header_stream_aes_ctr", 1),
    ("lioness_decrypt", 1),
];

/// Runs the measurement and prints it.
pub fn run(args: &SpeedArgs) -> Result<(), String> {
    let params = Params::new(args.payload_bytes).map_err(|e| e.to_string())?;
    let report = measure(
        &params,
        usize::from(args.hops),
        args.rounds.max(1),
        Duration::from_millis(args.round_ms),
    );
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_table(&mut out, &report)
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// Measures every case round-robin and assembles the report.
pub fn measure(params: &Params, hops: usize, rounds: usize, round: Duration) -> SpeedReport {
    let stack = loopix_crypto::stack_position::calibrate();
    let calibration = loopix_crypto::lanes::calibrate::calibrate();
    let fx = Fixture::new(params, hops);
    let mut cases = primitive_cases(&fx);
    let n_floor = cases.len();
    cases.extend(reference_cases(&fx));
    let n_ref = cases.len();
    cases.push(process_case(&fx));
    cases.push(build_case(&fx));
    cases.push(link_case(&fx));
    let n_batch = cases.len();
    for (name, k) in BATCH_SIZES {
        cases.push(batch_case(&fx, name, k));
    }
    let n_build_batch = cases.len();
    for (name, k) in BUILD_BATCH_SIZES {
        cases.push(build_batch_case(&fx, name, k));
    }
    run_round_robin(&mut cases, rounds, round);
    let batch_ns = medians(&cases[n_batch..n_build_batch]);
    let build_batch_ns = medians(&cases[n_build_batch..]);
    let build_batch_ns_per_packet = fastest(&build_batch_ns);
    let build_ns = cases[n_ref + 1].median_ns();
    let batch_ns_per_packet = fastest(&batch_ns);

    let primitives = medians(&cases[..n_floor]);
    let floor_ns = FLOOR
        .iter()
        .map(|(name, calls)| primitives[name] * f64::from(*calls))
        .sum();
    let process_ns = cases[n_ref].median_ns();
    let link_ns = 2.0 * cases[n_ref + 2].median_ns();
    SpeedReport {
        floor_ns,
        process_ns,
        build_ns,
        build_batch_ns,
        build_batch_ns_per_packet,
        build_batch_over_build: build_batch_ns_per_packet / build_ns,
        process_over_floor: process_ns / floor_ns,
        packets_per_sec_per_core: 1e9 / process_ns,
        floor_packets_per_sec_per_core: 1e9 / floor_ns,
        hops,
        packet_bytes: params.packet_len(),
        payload_bytes: params.payload_bytes(),
        primitives,
        calls_per_hop: FLOOR.iter().copied().collect(),
        reference: medians(&cases[n_floor..n_ref]),
        link_ns,
        link_over_floor: link_ns / floor_ns,
        curve_backend: curve_backend(),
        lanes_kernel: Kernel::detect().name(),
        batch_kernel: fx.processor.kernel().name(),
        kernel_measured_ns: calibration
            .ns_per_packet
            .iter()
            .map(|(k, ns)| (k.name(), *ns))
            .collect(),
        kernel_chosen_by: calibration.chosen_by(),
        batch_over_floor: batch_ns_per_packet / floor_ns,
        batch_ns,
        batch_ns_per_packet,
        rounds,
        mul_stack_position: stack.position,
        mul_ns_at_position: stack.chosen_ns,
        mul_ns_worst_position: stack.worst_ns,
    }
}

/// Each case's median, ns per operation, by name.
fn medians(cases: &[Case<'_>]) -> BTreeMap<&'static str, f64> {
    cases.iter().map(|c| (c.name, c.median_ns())).collect()
}

/// The lowest of `ns` (a batch size's best).
fn fastest(ns: &BTreeMap<&'static str, f64>) -> f64 {
    ns.values().copied().fold(f64::INFINITY, f64::min)
}

/// Inputs shared by the cases: a node key, a point, a packet pool, a path.
struct Fixture {
    params: Params,
    path: Vec<Hop>,
    processor: Processor,
    /// Fresh packets addressed to `processor`, restored before every round.
    pool: Vec<Vec<u8>>,
    point: RistrettoPoint,
    scalar: Scalar,
}

/// Packets in the processing pool: distinct, so no cache holds one packet's answer.
const POOL_PACKETS: usize = 32;

impl Fixture {
    fn new(params: &Params, hops: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
        let secrets: Vec<SecretKey> = (0..hops).map(|_| SecretKey::generate(&mut rng)).collect();
        let path: Vec<Hop> = secrets
            .iter()
            .enumerate()
            .map(|(i, sk)| Hop::new(sk.public_key(), hop_command(i, hops)))
            .collect();
        let pool = (0..POOL_PACKETS)
            .map(|_| loopix_crypto::build(params, &path, b"speed", &mut rng).expect("valid path"))
            .collect();
        let scalar = Scalar::from_bytes_mod_order([7u8; 32]);
        let mut secrets = secrets;
        Self {
            params: *params,
            path,
            processor: Processor::new(secrets.swap_remove(0), *params),
            pool,
            point: RistrettoPoint::mul_base(&scalar),
            scalar,
        }
    }
}

/// Relay through every hop but the last, which receives: the first hop always does the
/// full relay work (two multiplications, blinding, payload layer).
fn hop_command(i: usize, hops: usize) -> Command {
    if i + 1 == hops {
        Command::Final
    } else {
        Command::Relay {
            next: NodeId(i as u64 + 1),
            delay_us: 1000,
        }
    }
}

fn primitive_cases(fx: &Fixture) -> Vec<Case<'_>> {
    let alpha = compress(&fx.point);
    let keys = HopKeys::derive(&alpha);
    let mut beta = [0u8; BETA_LEN + ROUTING_LEN];
    let mut body = vec![0u8; fx.params.body_len()];
    let mac_key = [3u8; 32];
    let stream_key = [4u8; 32];
    vec![
        Case::simple("ristretto_decompress", move || {
            black_box(decompress(black_box(&alpha)));
        }),
        Case::simple("ristretto_scalar_mul", || {
            black_box(mul(black_box(&fx.point), black_box(&fx.scalar)));
        }),
        Case::simple("ristretto_compress", || {
            black_box(compress(black_box(&fx.point)));
        }),
        Case::simple("kdf_sha256", move || {
            black_box(HopKeys::derive(black_box(&alpha)));
        }),
        Case::simple("header_mac_hmac_sha256", move || {
            black_box(header_mac(&mac_key, black_box(&beta[..BETA_LEN])));
        }),
        Case::simple("header_stream_aes_ctr", move || {
            aes_ctr_xor(&stream_key, black_box(&mut beta[..]));
        }),
        Case::simple("lioness_decrypt", move || {
            lioness::decrypt(keys.payload_key(), black_box(&mut body[..]));
        }),
    ]
}

fn reference_cases(fx: &Fixture) -> Vec<Case<'_>> {
    let x_secret = x25519_dalek::StaticSecret::from([9u8; 32]);
    let x_public = x25519_dalek::PublicKey::from(&x_secret);
    // Sixteen distinct points and scalars, one per lane.
    let points: [[u8; 32]; MAX_LANES] =
        core::array::from_fn(|i| compress(&(fx.point * Scalar::from(i as u64 + 2))));
    let scalars: [Scalar; MAX_LANES] = core::array::from_fn(|i| fx.scalar + Scalar::from(i as u64));
    // Per packet: decode, multiply, encode, in a full run of each lane kernel this CPU
    // runs, and one at a time with dalek, in the same run.
    let mut cases: Vec<Case<'_>> = Kernel::available()
        .map(|kernel| {
            let k = kernel.lanes();
            let mut out = [None; MAX_LANES];
            Case::simple(lane_row(kernel), move || {
                mul_encoded(
                    kernel,
                    black_box(&points[..k]),
                    black_box(&scalars[..k]),
                    &mut out[..k],
                );
                black_box(&out);
            })
            .per_call(k)
        })
        .collect();
    cases.extend([
        Case::simple("x25519_dalek_montgomery_ladder", move || {
            black_box(x_secret.diffie_hellman(black_box(&x_public)));
        }),
        Case::simple("ristretto_fixed_base_mul", || {
            black_box(RistrettoPoint::mul_base(black_box(&fx.scalar)));
        }),
    ]);
    cases
}

/// The `reference` row of a kernel's decode, multiply and encode, per packet.
fn lane_row(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Ifma16 => "lanes_avx512ifma_x16_decode_mul_encode",
        Kernel::Ifma8 => "lanes_avx512ifma_x8_decode_mul_encode",
        Kernel::Avx2x8 => "lanes_avx2_x8_decode_mul_encode",
        Kernel::Avx2x4 => "lanes_avx2_x4_decode_mul_encode",
        Kernel::Portable => "dalek_decode_mul_encode",
    }
}

/// Real processing in batches of `k` (`Processor::process_batch`, what a shard calls on a
/// receive batch), per packet: through the lane kernel where the CPU runs it.
fn batch_case<'a>(fx: &'a Fixture, name: &'static str, k: usize) -> Case<'a> {
    let mut work = fx.pool.clone();
    let mut results = vec![Err(loopix_crypto::ProcessError::MacMismatch); k];
    Case::with_setup(name, move |n| {
        let mut spent = Duration::ZERO;
        let mut done = 0;
        while done < n {
            for (w, p) in work.iter_mut().zip(&fx.pool) {
                w.copy_from_slice(p);
            }
            // Whole batches of k from the pool of distinct packets.
            let batches = ((n - done) as usize).div_ceil(k).min(POOL_PACKETS / k);
            let start = Instant::now();
            for b in 0..batches {
                let chunk = &mut work[b * k..(b + 1) * k];
                black_box(fx.processor.process_batch(black_box(chunk), &mut results));
            }
            spent += start.elapsed();
            done += batches as u64;
        }
        spent
    })
    .per_call(k)
}

/// Real processing of a relay hop, on a pool of distinct packets refilled (untimed)
/// before each pass, since processing rewrites a packet in place.
fn process_case(fx: &Fixture) -> Case<'_> {
    let mut work = fx.pool.clone();
    Case::with_setup("process", move |n| {
        let mut spent = Duration::ZERO;
        let mut done = 0;
        while done < n {
            for (w, p) in work.iter_mut().zip(&fx.pool) {
                w.copy_from_slice(p);
            }
            let batch = (n - done).min(POOL_PACKETS as u64) as usize;
            let start = Instant::now();
            for w in &mut work[..batch] {
                let _ = black_box(fx.processor.process(black_box(w)));
            }
            spent += start.elapsed();
            done += batch as u64;
        }
        spent
    })
}

/// One link tag over a packet and its trailer (what a node checks for every datagram it
/// takes from another node, and writes on every one it sends).
fn link_case(fx: &Fixture) -> Case<'_> {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (a, b) = (
        SessionSecret::generate(&mut rng),
        SessionSecret::generate(&mut rng),
    );
    let key = LinkSecret::agree(&a, &b.public())
        .expect("fresh keys")
        .key(0, NodeId(1), NodeId(2));
    let datagram = vec![5u8; fx.params.packet_len() + LINK_OVERHEAD - LINK_TAG_LEN];
    Case::simple("link_tag_chacha20poly1305", move || {
        black_box(key.tag(7, 0, black_box(&datagram)));
    })
}

fn build_case(fx: &Fixture) -> Case<'_> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut out = vec![0u8; fx.params.packet_len()];
    Case::simple("build", move || {
        let r = loopix_crypto::build_into(&fx.params, &fx.path, b"speed", &mut rng, &mut out);
        let _ = black_box(r);
    })
}

/// `k` packets along the fixture's path at once, in the lanes of this CPU's kernel.
fn build_batch_case<'a>(fx: &'a Fixture, name: &'static str, k: usize) -> Case<'a> {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut bufs = vec![vec![0u8; fx.params.packet_len()]; k];
    let mut macs = vec![[0u8; loopix_crypto::params::MAC_LEN]; k];
    let jobs = vec![
        loopix_crypto::BuildJob {
            path: &fx.path,
            payload: b"speed",
        };
        k
    ];
    let kernel = fx.processor.kernel();
    Case::simple(name, move || {
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let r =
            loopix_crypto::build_batch(&fx.params, kernel, &jobs, &mut rng, &mut outs, &mut macs);
        let _ = black_box(r);
    })
    .per_call(k)
}

/// Which curve25519-dalek backend this binary uses on this CPU, and how it got it:
/// compiled in for the build host's CPU, or picked at run time by dalek.
fn curve_backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if cfg!(all(
            target_feature = "avx512ifma",
            target_feature = "avx512vl"
        )) {
            return "avx512ifma (compiled for this CPU)";
        }
        if cfg!(curve25519_dalek_backend = "avx512") && has!("avx512ifma") && has!("avx512vl") {
            return "avx512ifma (picked at run time)";
        }
        if has!("avx2") {
            return "avx2 (picked at run time)";
        }
    }
    "serial"
}

fn print_table(out: &mut impl Write, r: &SpeedReport) -> io::Result<()> {
    writeln!(
        out,
        "loopix speed: {} B packets ({} B payload), curve backend {}, lane kernel {}, {} rounds (median)\n",
        r.packet_bytes, r.payload_bytes, r.curve_backend, r.lanes_kernel, r.rounds
    )?;
    writeln!(
        out,
        "{:<34} {:>12} {:>8} {:>12}",
        "primitive (one hop)", "ns/call", "calls", "ops/s"
    )?;
    for (name, calls) in FLOOR {
        let ns = r.primitives[name];
        writeln!(out, "{name:<34} {ns:>12.0} {calls:>8} {:>12.0}", 1e9 / ns)?;
    }
    writeln!(
        out,
        "\n{:<34} {:>12} {:>8} {:>12}",
        "reference (not on the hop path)", "ns/call", "", "ops/s"
    )?;
    for (name, ns) in &r.reference {
        writeln!(out, "{name:<34} {ns:>12.0} {:>8} {:>12.0}", "", 1e9 / ns)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<34} {:>12.0} ns  {:>10.0} packets/s/core",
        "per-hop crypto floor", r.floor_ns, r.floor_packets_per_sec_per_core
    )?;
    writeln!(
        out,
        "{:<34} {:>12.0} ns  {:>10.0} packets/s/core",
        "per-hop process (real)", r.process_ns, r.packets_per_sec_per_core
    )?;
    writeln!(
        out,
        "{:<34} {:>12.3}",
        "process / floor", r.process_over_floor
    )?;
    for (name, ns) in &r.batch_ns {
        writeln!(
            out,
            "{:<34} {:>12.0} ns  {:>10.0} packets/s/core  ({} kernel)",
            format!("{name} (per packet)"),
            ns,
            1e9 / ns,
            r.batch_kernel
        )?;
    }
    writeln!(
        out,
        "{:<34} {:>12.3}",
        "best batch / floor", r.batch_over_floor
    )?;
    let measured: Vec<String> = r
        .kernel_measured_ns
        .iter()
        .map(|(k, ns)| format!("{k} {ns:.0}"))
        .collect();
    writeln!(
        out,
        "{:<34} {} (by {}; measured at start, ns per packet: {})",
        "lane kernel",
        r.batch_kernel,
        r.kernel_chosen_by,
        measured.join(", ")
    )?;
    writeln!(
        out,
        "{:<34} {:>12.0} ns  ({:.1} % of the floor: 2 Poly1305 tags)",
        "link authentication per hop",
        r.link_ns,
        100.0 * r.link_over_floor
    )?;
    writeln!(
        out,
        "{:<34} {:>12.0} ns  ({} hops)",
        "build one packet", r.build_ns, r.hops
    )?;
    for (name, ns) in &r.build_batch_ns {
        writeln!(
            out,
            "{:<34} {:>12.0} ns  ({:.2} of one at a time, {} kernel)",
            format!("{name} (per packet)"),
            ns,
            ns / r.build_ns,
            r.batch_kernel
        )?;
    }
    writeln!(
        out,
        "{:<34} {:>12.0} ns  (stack position {}; {:.0} ns at the slowest)",
        "scalar mul, calibration sweep",
        r.mul_ns_at_position,
        r.mul_stack_position,
        r.mul_ns_worst_position
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopix_crypto::params::HEADER_LEN;

    #[test]
    fn report_has_every_floor_primitive_and_sums_them() {
        let r = measure(&Params::new(64).unwrap(), 2, 1, Duration::from_micros(50));
        assert_eq!(r.primitives.len(), FLOOR.len());
        let sum: f64 = FLOOR
            .iter()
            .map(|(n, c)| r.primitives[n] * f64::from(*c))
            .sum();
        assert!((sum - r.floor_ns).abs() < 1e-6);
        assert!(r.process_ns > 0.0 && r.build_ns > 0.0 && r.link_ns > 0.0);
        assert!((r.link_over_floor - r.link_ns / r.floor_ns).abs() < 1e-9);
        assert_eq!(r.packet_bytes, HEADER_LEN + 16 + 64);
    }

    #[test]
    fn the_pool_packets_are_accepted_by_the_processor() {
        let fx = Fixture::new(&Params::default(), DEFAULT_PATH_HOPS);
        for p in &fx.pool {
            let out = fx.processor.process(&mut p.clone()).expect("valid");
            assert!(matches!(out.command, Command::Relay { .. }));
        }
    }
}
