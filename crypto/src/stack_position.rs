//! Where on the stack the variable-base multiplication runs.
//!
//! dalek's IFMA multiplication ran about 25 % slower in one build of the node than the same
//! code in `loopix speed`, and a rebuild with unrelated code changed it again. The cause
//! was the position of its stack frame within the 4 KiB page: run at a 256-byte sweep of
//! stack offsets, one or two offsets out of sixteen cost ~11 µs more per packet, and padding
//! the node's call by a few hundred bytes brought it back to the floor. The profile puts the
//! loss in the table lookup's loads, which is what 4K aliasing looks like: a load whose low
//! 12 address bits match an earlier store's waits on it, and the lookup loads constants of
//! the binary right after stores to the stack.
//!
//! The page offset of the binary's constants is fixed per build, so the remedy is to pick
//! the frame's page offset rather than let call depth decide it: [`mul`] pads the stack so
//! that the multiplication always starts at one position modulo 4096, whatever the caller's
//! depth or thread, and [`calibrate`] measures it at every position (16-byte steps) once per
//! process and keeps the middle of the fastest stretch. Until that has run, [`mul`]
//! multiplies where it stands.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;

/// Page offsets of the stack, in bytes.
const PAGE: usize = 4096;
/// Coarse padding step; sixteen of them span a page.
const COARSE: usize = 256;
/// Fine padding step: the stack's alignment.
const FINE: usize = 16;
/// Positions a calibration tries.
pub const POSITIONS: usize = PAGE / FINE;
/// The chosen position, or [`UNSET`].
static TARGET: AtomicU16 = AtomicU16::new(UNSET);
const UNSET: u16 = u16::MAX;

/// Variable-base scalar multiplication at the calibrated stack position (where it stands
/// before [`calibrate`]).
pub fn mul(point: &RistrettoPoint, scalar: &Scalar) -> RistrettoPoint {
    match TARGET.load(Ordering::Relaxed) {
        UNSET => point * scalar,
        t => mul_at(usize::from(t), point, scalar),
    }
}

/// The multiplication at `position` (of [`POSITIONS`]). One function, never inlined, for
/// calibration, use and benches: where `run_at` measures the stack from depends on the
/// frame it is inlined into.
#[inline(never)]
pub fn mul_at(position: usize, point: &RistrettoPoint, scalar: &Scalar) -> RistrettoPoint {
    run_at(position, || point * scalar)
}

/// Runs `f` with the stack padded so that it starts at `position` (of [`POSITIONS`]) modulo
/// the page, plus a constant of the frame this is inlined into.
#[inline(always)]
fn run_at<R>(position: usize, f: impl FnOnce() -> R) -> R {
    let marker = 0u8;
    let here = black_box(&marker) as *const u8 as usize;
    let down = here.wrapping_sub(position * FINE) % PAGE;
    coarse(down / COARSE, down % COARSE / FINE, f)
}

/// Pads `N` bytes of stack, then runs `f`. Never inlined, so the padding is a frame.
#[inline(never)]
fn padded<const N: usize, R>(f: impl FnOnce() -> R) -> R {
    let pad = MaybeUninit::<[u8; N]>::uninit();
    black_box(&pad);
    let r = f();
    black_box(&pad);
    r
}

/// `padded::<k * step>(call)` for the `k` in `0..16` that `i` names.
macro_rules! pad_by {
    ($i:expr, $step:expr, $call:expr) => {
        match $i {
            0 => padded::<{ 0 * $step }, R>($call),
            1 => padded::<{ 1 * $step }, R>($call),
            2 => padded::<{ 2 * $step }, R>($call),
            3 => padded::<{ 3 * $step }, R>($call),
            4 => padded::<{ 4 * $step }, R>($call),
            5 => padded::<{ 5 * $step }, R>($call),
            6 => padded::<{ 6 * $step }, R>($call),
            7 => padded::<{ 7 * $step }, R>($call),
            8 => padded::<{ 8 * $step }, R>($call),
            9 => padded::<{ 9 * $step }, R>($call),
            10 => padded::<{ 10 * $step }, R>($call),
            11 => padded::<{ 11 * $step }, R>($call),
            12 => padded::<{ 12 * $step }, R>($call),
            13 => padded::<{ 13 * $step }, R>($call),
            14 => padded::<{ 14 * $step }, R>($call),
            _ => padded::<{ 15 * $step }, R>($call),
        }
    };
}

/// `i` coarse steps of padding, then `j` fine ones, then `f`.
fn coarse<R>(i: usize, j: usize, f: impl FnOnce() -> R) -> R {
    pad_by!(i, COARSE, || fine(j, f))
}

fn fine<R>(j: usize, f: impl FnOnce() -> R) -> R {
    pad_by!(j, FINE, f)
}

/// What a calibration found: the chosen position and the slowest one, and nanoseconds per
/// multiplication at each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    pub position: usize,
    pub chosen_ns: f64,
    pub worst_position: usize,
    pub worst_ns: f64,
}

/// Measures the multiplication at every position and keeps the middle of the fastest
/// stretch; once per process (later calls return the first answer). Takes ~30 ms.
pub fn calibrate() -> Calibration {
    static DONE: OnceLock<Calibration> = OnceLock::new();
    *DONE.get_or_init(|| {
        let ns = measure_positions(3);
        let c = choose(&ns);
        TARGET.store(c.position as u16, Ordering::Relaxed);
        c
    })
}

/// Nanoseconds per multiplication at each position: the fastest of `rounds` sweeps, so
/// that an interruption in one sweep does not condemn a position.
pub fn measure_positions(rounds: usize) -> Vec<f64> {
    let scalar = Scalar::from_bytes_mod_order([0x5a; 32]);
    let point = RistrettoPoint::mul_base(&Scalar::from(7u64));
    let mut best = vec![f64::INFINITY; POSITIONS];
    for _ in 0..rounds {
        for (p, b) in best.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..2 {
                black_box(mul_at(p, black_box(&point), black_box(&scalar)));
            }
            *b = b.min(start.elapsed().as_nanos() as f64 / 2.0);
        }
    }
    best
}

/// The position whose neighbourhood (three steps either side, around the page) is fastest
/// at its slowest: a margin for callers whose frames differ by a few bytes.
fn choose(ns: &[f64]) -> Calibration {
    let n = ns.len();
    let around = |p: usize| (0..7).map(|k| ns[(p + n + k - 3) % n]).fold(0.0, f64::max);
    let position = (0..n)
        .min_by(|&a, &b| around(a).total_cmp(&around(b)))
        .unwrap_or(0);
    let worst_position = (0..n).max_by(|&a, &b| ns[a].total_cmp(&ns[b])).unwrap_or(0);
    Calibration {
        position,
        chosen_ns: ns[position],
        worst_position,
        worst_ns: ns[worst_position],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_position_runs_the_closure_once_and_returns_its_value() {
        for p in 0..POSITIONS {
            let mut calls = 0;
            let r = run_at(p, || {
                calls += 1;
                p * 3
            });
            assert_eq!((r, calls), (p * 3, 1));
        }
    }

    /// Where a local of `f` lands, for one position; like `mul_at`, one non-inlined frame.
    #[inline(never)]
    fn landing(p: usize) -> usize {
        run_at(p, || {
            let local = 0u8;
            black_box(&local) as *const u8 as usize % PAGE
        })
    }

    #[test]
    fn position_p_is_p_steps_up_the_page_wherever_the_caller_stands() {
        let base = landing(0);
        for p in 0..POSITIONS {
            let up = (landing(p) + PAGE - base) % PAGE;
            assert!(
                up.abs_diff(p * FINE) < FINE,
                "position {p} landed {up} B up"
            );
            for deeper in [
                padded::<208, _>(|| landing(p)),
                padded::<1000, _>(|| landing(p)),
            ] {
                assert!(deeper.abs_diff(landing(p)) < FINE, "position {p}: {deeper}");
            }
        }
    }

    #[test]
    fn choice_takes_the_middle_of_the_fast_stretch() {
        let mut ns = vec![60.0; POSITIONS];
        for x in &mut ns[100..120] {
            *x = 47.0;
        }
        ns[40] = 40.0; // a lone fast position next to slow ones is not trusted
        ns[200] = 61.0;
        let c = choose(&ns);
        assert!((103..=116).contains(&c.position), "{c:?}");
        assert_eq!(
            (c.chosen_ns, c.worst_position, c.worst_ns),
            (47.0, 200, 61.0)
        );
    }

    #[test]
    fn calibration_sets_a_position_and_multiplication_is_unchanged() {
        let s = Scalar::from(12345u64);
        let pt = RistrettoPoint::mul_base(&Scalar::from(9u64));
        let before = pt * s;
        let c = calibrate();
        assert!(c.position < POSITIONS);
        assert!(c.chosen_ns <= c.worst_ns);
        assert_eq!(TARGET.load(Ordering::Relaxed) as usize, c.position);
        assert_eq!(mul(&pt, &s), before);
        assert_eq!(crate::primitives::mul(&pt, &s), before);
        assert_eq!(calibrate(), c, "once per process");
    }
}
