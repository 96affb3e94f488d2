//! Public-key work of several packets at once, one packet per vector lane: decode the
//! group element, multiply it by a scalar, encode the product. A hop does this twice per
//! packet (the shared secret, then the blinding), and it is 80-90 % of the hop's cost.
//!
//! Two kernels, each with its own field arithmetic under one curve implementation
//! (`curve.rs` over `field::FieldLanes`): eight lanes of AVX-512 IFMA (`ifma.rs`) and four
//! of AVX2 (`avx2.rs`), each also run two registers at a time (`pair.rs`: 16 and 8 lanes).
//! The portable path is curve25519-dalek, one packet at a time. Every kernel gives the
//! same bytes as dalek for every input (`tests/lanes.rs` checks each kernel this CPU runs,
//! over random and edge-case inputs; `tests.rs` the field arithmetic at its edges).
//! [`Kernel::best`] says which one runs by default, and why.
//!
//! [`crate::Processor`] sends runs of a batch through [`Points`]: each α decoded once,
//! multiplied by the node's key for the shared secrets, then by each packet's blinding
//! factor.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

use crate::primitives::{compress, decompress, mul};

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod calibrate;
#[cfg(target_arch = "x86_64")]
mod curve;
#[cfg(target_arch = "x86_64")]
mod field;
#[cfg(target_arch = "x86_64")]
mod ifma;
#[cfg(target_arch = "x86_64")]
mod pair;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

#[cfg(target_arch = "x86_64")]
use {avx2::F4, curve::Table, ifma::F8, pair::Pair};

/// The most packets in one run of any kernel.
pub const MAX_LANES: usize = 16;

/// An implementation of the batch's public-key work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Sixteen lanes of AVX-512 IFMA (two registers of eight).
    Ifma16,
    /// Eight lanes of AVX-512 IFMA.
    Ifma8,
    /// Eight lanes of AVX2 (two registers of four).
    Avx2x8,
    /// Four lanes of AVX2.
    Avx2x4,
    /// curve25519-dalek, one packet at a time.
    Portable,
}

/// The kernel this process chose ([`Kernel::detect`]).
static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();

/// Why a kernel named by a user cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelChoiceError {
    /// This CPU lacks the instructions it needs.
    NotOnThisCpu(Kernel),
    /// No kernel has this name.
    Unknown(String),
}

impl std::fmt::Display for KernelChoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOnThisCpu(k) => write!(f, "this CPU does not run {}", k.name()),
            Self::Unknown(name) => {
                let names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
                write!(f, "`{name}` is not a kernel ({})", names.join(", "))
            }
        }
    }
}

impl std::error::Error for KernelChoiceError {}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 5] = [
        Self::Ifma8,
        Self::Ifma16,
        Self::Avx2x8,
        Self::Avx2x4,
        Self::Portable,
    ];

    /// The kernel packets unwrap with in this process: the one [`Kernel::use_in_process`]
    /// chose, else the best this CPU runs (checked at run time, so one binary runs
    /// everywhere). Decided once per process; the crate reads no environment and prints
    /// nothing: a binary that lets its user choose reads the choice and passes it in.
    pub fn detect() -> Self {
        *CHOSEN.get_or_init(Self::best)
    }

    /// Makes `kernel` the one this process unwraps with; call it before any packet is
    /// processed. False if the choice was already made (another kernel stays in use).
    pub fn use_in_process(kernel: Kernel) -> bool {
        CHOSEN.set(kernel).is_ok() || Self::detect() == kernel
    }

    /// The kernel named `name` ([`Kernel::name`]), if this CPU runs it.
    pub fn named(name: &str) -> Result<Self, KernelChoiceError> {
        match Self::ALL.iter().find(|k| k.name() == name) {
            Some(k) if k.runs_here() => Ok(*k),
            Some(k) => Err(KernelChoiceError::NotOnThisCpu(*k)),
            None => Err(KernelChoiceError::Unknown(name.to_string())),
        }
    }

    /// The default on this CPU before any measurement: eight lanes of IFMA where it has
    /// them, else eight lanes of AVX2 where it has those, else one packet at a time. A
    /// process that calibrates ([`calibrate::calibrate`]) keeps it unless another kernel
    /// measures clearly faster on the CPU at hand.
    pub fn best() -> Self {
        if Self::Ifma8.runs_here() {
            Self::Ifma8
        } else if Self::Avx2x8.runs_here() {
            Self::Avx2x8
        } else {
            Self::Portable
        }
    }

    /// The kernels this CPU runs, the portable one last.
    pub fn available() -> impl Iterator<Item = Kernel> {
        Self::ALL.into_iter().filter(|k| k.runs_here())
    }

    /// Whether this CPU has the instructions the kernel needs.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Self::Ifma16 | Self::Ifma8 => has!("avx512f") && has!("avx512ifma"),
                Self::Avx2x8 | Self::Avx2x4 => has!("avx2"),
                Self::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Self::Portable
        }
    }

    /// Packets in one run (1: one at a time).
    pub fn lanes(self) -> usize {
        match self {
            Self::Ifma16 => 16,
            Self::Ifma8 | Self::Avx2x8 => 8,
            Self::Avx2x4 => 4,
            Self::Portable => 1,
        }
    }

    /// The fewest packets worth a run. A run costs the same however many of its lanes
    /// carry a packet: on IFMA a run of 8 costs what about 3 packets one at a time, a run
    /// of 16 about 6; on AVX2 a run of 8 about 6.2, a run of 4 about 3.3 (`loopix speed`:
    /// `lanes_*_decode_mul_encode` against `dalek_decode_mul_encode`, times the lanes);
    /// smaller groups take the one-at-a-time path.
    pub fn lanes_from(self) -> usize {
        match self {
            Self::Ifma8 => 4,
            Self::Ifma16 => 7,
            Self::Avx2x8 => 7,
            Self::Avx2x4 => 4,
            Self::Portable => usize::MAX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ifma16 => "avx512ifma-x16",
            Self::Ifma8 => "avx512ifma-x8",
            Self::Avx2x8 => "avx2-x8",
            Self::Avx2x4 => "avx2-x4",
            Self::Portable => "portable",
        }
    }
}

/// One run's decoded points, in the lanes of its kernel, as the table of their multiples
/// both multiplications read.
#[cfg(target_arch = "x86_64")]
enum Run {
    Ifma16(Table<Pair<F8>>),
    Ifma8(Table<F8>),
    Avx2x8(Table<Pair<F4>>),
    Avx2x4(Table<F4>),
}

/// A run of decoded points (only made where the CPU runs the kernel).
pub struct Points {
    #[cfg(target_arch = "x86_64")]
    run: Run,
    lanes: usize,
    /// Lanes holding a valid point other than the identity.
    valid: u32,
}

impl Points {
    /// Decodes `kernel.lanes()` encodings; `None` if this CPU does not run `kernel` or it
    /// is the portable one.
    pub fn decode(kernel: Kernel, encoded: &[[u8; 32]]) -> Option<Self> {
        assert_eq!(encoded.len(), kernel.lanes(), "one encoding per lane");
        if kernel == Kernel::Portable || !kernel.runs_here() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // The decoded points, wrapped as the kernel's run.
            fn run<P>((ok, points): (u32, P), wrap: fn(P) -> Run) -> (u32, Run) {
                (ok, wrap(points))
            }
            // SAFETY: the CPU has the kernel's instructions (checked above).
            let (ok, run) = unsafe {
                match kernel {
                    Kernel::Ifma16 => run(ifma::decode(encoded), Run::Ifma16),
                    Kernel::Ifma8 => run(ifma::decode(encoded), Run::Ifma8),
                    Kernel::Avx2x8 => run(avx2::decode(encoded), Run::Avx2x8),
                    Kernel::Avx2x4 => run(avx2::decode(encoded), Run::Avx2x4),
                    Kernel::Portable => unreachable!("refused above"),
                }
            };
            let mut valid = ok;
            for (i, e) in encoded.iter().enumerate() {
                if *e == [0u8; 32] {
                    valid &= !(1 << i);
                }
            }
            Some(Self {
                run,
                lanes: encoded.len(),
                valid,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Whether lane `i` decoded to a point other than the identity.
    pub fn valid(&self, i: usize) -> bool {
        self.valid & (1 << i) != 0
    }

    /// Each lane's point times its scalar, encoded into `out` (lanes that are not valid
    /// give the identity's product, to be ignored).
    pub fn mul_encode(&self, scalars: &[Scalar], out: &mut [[u8; 32]]) {
        assert!(scalars.len() == self.lanes && out.len() == self.lanes);
        let mut bytes = Zeroizing::new([[0u8; 32]; MAX_LANES]);
        for (b, s) in bytes.iter_mut().zip(scalars) {
            *b = s.to_bytes();
        }
        let bytes = &bytes[..self.lanes];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a Points exists only where the CPU runs its kernel.
        unsafe {
            match &self.run {
                Run::Ifma16(p) => ifma::mul_encode(p, bytes, out),
                Run::Ifma8(p) => ifma::mul_encode(p, bytes, out),
                Run::Avx2x8(p) => avx2::mul_encode(p, bytes, out),
                Run::Avx2x4(p) => avx2::mul_encode(p, bytes, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (bytes, out);
            unreachable!("no lane kernel on this architecture")
        }
    }
}

/// For each `i`: `points[i]` decoded as a Ristretto point, times `scalars[i]`, encoded,
/// into `out[i]`; `None` where the bytes are not the canonical encoding of a point, or
/// encode the identity (whose products everyone knows). Any length: runs of
/// `kernel.lanes()`, the last one padded with the base point.
pub fn mul_encoded(
    kernel: Kernel,
    points: &[[u8; 32]],
    scalars: &[Scalar],
    out: &mut [Option<[u8; 32]>],
) {
    assert!(points.len() == scalars.len() && points.len() == out.len());
    let lanes = kernel.lanes();
    for ((p, s), o) in points
        .chunks(lanes)
        .zip(scalars.chunks(lanes))
        .zip(out.chunks_mut(lanes))
    {
        let mut padded = [RISTRETTO_BASEPOINT_COMPRESSED.to_bytes(); MAX_LANES];
        padded[..p.len()].copy_from_slice(p);
        let mut scalars = [Scalar::ONE; MAX_LANES];
        scalars[..s.len()].copy_from_slice(s);
        match Points::decode(kernel, &padded[..lanes]) {
            Some(run) => {
                let mut products = [[0u8; 32]; MAX_LANES];
                run.mul_encode(&scalars[..lanes], &mut products[..lanes]);
                for (i, o) in o.iter_mut().enumerate() {
                    *o = run.valid(i).then_some(products[i]);
                }
            }
            // The path a packet takes one at a time (the identity refused by `decompress`).
            None => {
                for ((p, s), o) in p.iter().zip(s).zip(o.iter_mut()) {
                    *o = decompress(p).map(|p| compress(&mul(&p, s)));
                }
            }
        }
    }
}

/// `compress(point·x)` for each `x` in `scalars` into `out`, in lanes with `point` decoded
/// once for every run (a key shared by a batch, or the base point); false (nothing
/// written) where the kernel does not run or there are fewer scalars than are worth a
/// run. `point` is a valid, non-identity encoding.
pub fn mul_one_point(
    kernel: Kernel,
    point: &[u8; 32],
    scalars: &[Scalar],
    out: &mut [[u8; 32]],
) -> bool {
    let lanes = kernel.lanes();
    if scalars.len() < kernel.lanes_from() || out.len() < scalars.len() {
        return false;
    }
    let Some(points) = Points::decode(kernel, &[*point; MAX_LANES][..lanes]) else {
        return false;
    };
    for (x, out) in scalars.chunks(lanes).zip(out.chunks_mut(lanes)) {
        let mut padded = Zeroizing::new([Scalar::ONE; MAX_LANES]);
        padded[..x.len()].copy_from_slice(x);
        let mut products = Zeroizing::new([[0u8; 32]; MAX_LANES]);
        points.mul_encode(&padded[..lanes], &mut products[..lanes]);
        let n = x.len();
        out[..n].copy_from_slice(&products[..n]);
    }
    true
}

/// `compress(x·B)` for each `x` in `scalars` into `out`: in lanes (the base point decoded
/// once; a lane multiplication costs about half of dalek's fixed-base one on IFMA) where
/// the kernel runs and there are enough scalars, else as `(x/2)·B` doubled, at one field
/// inversion for them all (dalek's batched double-and-compress).
pub fn mul_base_encoded(kernel: Kernel, scalars: &[Scalar], out: &mut [[u8; 32]]) {
    let base = RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
    if mul_one_point(kernel, &base, scalars, out) {
        return;
    }
    let halves: Vec<RistrettoPoint> = scalars
        .iter()
        .map(|x| RistrettoPoint::mul_base(&(x * crate::keys::half())))
        .collect();
    for (o, c) in out
        .iter_mut()
        .zip(RistrettoPoint::double_and_compress_batch(&halves))
    {
        *o = c.to_bytes();
    }
}
