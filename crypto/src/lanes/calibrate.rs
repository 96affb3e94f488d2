//! Which kernel a process unwraps with, chosen by measuring them on the CPU at hand. The
//! fastest kernel is not the same everywhere: on one AMD EPYC built as an AVX2-only CPU,
//! four lanes beat the eight that were the default there, a rule measured on one Xeon. So
//! each process times every kernel this CPU runs on a batch's public-key work (decode one
//! group element, two multiplications and encodings a packet, as a hop does) for a few
//! milliseconds at start, round-robin so that a drifting VM touches each alike, and keeps
//! the fastest. A default that is within [`MARGIN`] of the fastest stays, so that two
//! kernels of equal speed do not swap between starts on noise.

use std::time::Instant;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;

use super::{Kernel, MAX_LANES, Points};
use crate::primitives::{compress, decompress, mul};

/// How much faster than the default another kernel must measure to replace it.
pub const MARGIN: f64 = 0.03;

/// Rounds of the measurement; each times every kernel once on [`MAX_LANES`] packets.
const ROUNDS: usize = 9;

/// What the measurement found.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// The kernel the process uses.
    pub chosen: Kernel,
    /// Whether the kernel was fixed before the measurement (`LOOPIX_KERNEL` named it, or a
    /// kernel was already in use), rather than chosen by it.
    pub fixed_before: bool,
    /// Every kernel this CPU runs, with its median ns per packet.
    pub ns_per_packet: Vec<(Kernel, f64)>,
}

impl Calibration {
    /// How the kernel was chosen, as `loopix speed` and the start-up log say it:
    /// "measurement", or "fixed before" (`LOOPIX_KERNEL`).
    pub fn chosen_by(&self) -> &'static str {
        if self.fixed_before {
            "fixed before"
        } else {
            "measurement"
        }
    }
}

static CALIBRATION: std::sync::OnceLock<Calibration> = std::sync::OnceLock::new();

/// Measures every kernel this CPU runs (once per process; later calls return the first
/// result) and makes the fastest the process's kernel, unless one was chosen before
/// ([`Kernel::use_in_process`], as `LOOPIX_KERNEL` does): that one stays, and the
/// measurement is still reported. About 15 ms.
pub fn calibrate() -> &'static Calibration {
    CALIBRATION.get_or_init(|| {
        let ns_per_packet = measure();
        let fastest = choose(&ns_per_packet, Kernel::best());
        let fixed_before = !Kernel::use_in_process(fastest);
        Calibration {
            chosen: Kernel::detect(),
            fixed_before,
            ns_per_packet,
        }
    })
}

/// The calibration, if [`calibrate`] ran in this process.
pub fn calibration() -> Option<&'static Calibration> {
    CALIBRATION.get()
}

/// The fastest of `measured`, unless `default` is within [`MARGIN`] of it.
pub fn choose(measured: &[(Kernel, f64)], default: Kernel) -> Kernel {
    let Some(&(fastest, best_ns)) = measured
        .iter()
        .filter(|(_, ns)| ns.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
    else {
        return default;
    };
    match measured.iter().find(|(k, _)| *k == default) {
        Some(&(_, ns)) if ns <= best_ns * (1.0 + MARGIN) => default,
        _ => fastest,
    }
}

/// Median ns per packet of each kernel this CPU runs.
fn measure() -> Vec<(Kernel, f64)> {
    let kernels: Vec<Kernel> = Kernel::available().collect();
    // Fixed inputs: the measurement is of speed, not of secrets.
    let scalars: Vec<Scalar> = (1..=MAX_LANES as u64)
        .map(|i| Scalar::from(i).invert())
        .collect();
    let encoded: Vec<[u8; 32]> = scalars
        .iter()
        .map(|s| compress(&(RISTRETTO_BASEPOINT_POINT * s)))
        .collect();
    let mut samples = vec![Vec::with_capacity(ROUNDS); kernels.len()];
    // One unmeasured round first: the first touch of each kernel's code and tables.
    for round in 0..=ROUNDS {
        for (k, kernel) in kernels.iter().enumerate() {
            let start = Instant::now();
            hop_work(*kernel, &encoded, &scalars);
            let ns = start.elapsed().as_nanos() as f64 / MAX_LANES as f64;
            if round > 0 {
                samples[k].push(ns);
            }
        }
    }
    kernels
        .into_iter()
        .zip(samples)
        .map(|(k, mut s)| {
            s.sort_by(f64::total_cmp);
            (k, s[s.len() / 2])
        })
        .collect()
}

/// A batch's public-key work on `encoded.len()` packets with `kernel`: decode, then two
/// multiplications and encodings each (the shared secret, then the blinding).
fn hop_work(kernel: Kernel, encoded: &[[u8; 32]], scalars: &[Scalar]) {
    let lanes = kernel.lanes();
    let mut out = [[0u8; 32]; MAX_LANES];
    if kernel != Kernel::Portable {
        for (e, s) in encoded.chunks(lanes).zip(scalars.chunks(lanes)) {
            if let Some(points) = Points::decode(kernel, e) {
                points.mul_encode(s, &mut out[..lanes]);
                points.mul_encode(s, &mut out[..lanes]);
            }
            std::hint::black_box(&out);
        }
        return;
    }
    for (e, s) in encoded.iter().zip(scalars) {
        if let Some(p) = decompress(e) {
            std::hint::black_box(compress(&mul(&p, s)));
            std::hint::black_box(compress(&mul(&p, s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stays_unless_another_is_clearly_faster() {
        use Kernel::*;
        let m = [(Avx2x8, 100.0), (Avx2x4, 98.0), (Portable, 300.0)];
        assert_eq!(choose(&m, Avx2x8), Avx2x8, "within the margin");
        let m = [(Avx2x8, 100.0), (Avx2x4, 90.0), (Portable, 300.0)];
        assert_eq!(choose(&m, Avx2x8), Avx2x4, "clearly faster");
        let m = [(Ifma8, f64::NAN), (Portable, 300.0)];
        assert_eq!(
            choose(&m, Ifma8),
            Portable,
            "a kernel that did not measure is not chosen"
        );
        assert_eq!(choose(&[], Ifma8), Ifma8);
    }

    #[test]
    fn every_kernel_this_cpu_runs_is_measured_and_the_choice_is_one_of_them() {
        let c = calibrate();
        let measured: Vec<Kernel> = c.ns_per_packet.iter().map(|(k, _)| *k).collect();
        assert_eq!(measured, Kernel::available().collect::<Vec<_>>());
        assert!(c.ns_per_packet.iter().all(|(_, ns)| *ns > 0.0), "{c:?}");
        assert!(c.chosen.runs_here());
        assert_eq!(c.chosen, Kernel::detect());
        if !c.fixed_before {
            assert_eq!(c.chosen, choose(&c.ns_per_packet, Kernel::best()));
        }
    }
}
