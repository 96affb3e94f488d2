//! Public-key work of several packets at once, one packet per vector lane: decode the
//! group element, multiply it by a scalar, encode the product. A hop does this twice per
//! packet (the shared secret, then the blinding), and it is 80-90 % of the hop's cost.
//!
//! The kernel for CPUs with AVX-512 IFMA (`ifma.rs`) runs eight packets in the lanes of
//! 512-bit registers, with its own field arithmetic; elsewhere [`mul_encoded`] falls back
//! to curve25519-dalek one packet at a time. Both give the same bytes for every input
//! (`tests/lanes.rs` checks it against dalek over random and edge-case inputs).
//!
//! [`crate::Processor`] sends groups of [`LANES_FROM`] or more packets of a batch through
//! [`Points8`]: each α decoded once, multiplied by the node's key for the shared secrets,
//! then by each packet's blinding factor.

use curve25519_dalek::scalar::Scalar;

use crate::primitives::{compress, decompress, mul};

#[cfg(target_arch = "x86_64")]
mod ifma;

/// Packets per batch.
pub const LANES: usize = 8;

/// The fewest packets worth a lane run: eight lanes cost the same however many carry a
/// packet, about as much as three packets one at a time (`loopix speed`:
/// `lanes_decode_mul_encode_per_packet_x8` against `dalek_decode_mul_encode`). Smaller
/// groups take the one-at-a-time path.
pub const LANES_FROM: usize = 4;

/// Eight decoded points in the lanes of the kernel (only made where the CPU runs it).
pub struct Points8 {
    #[cfg(target_arch = "x86_64")]
    points: ifma::Point8,
    /// Lanes holding a valid point other than the identity.
    valid: u8,
}

impl Points8 {
    /// Decodes eight encodings; `None` if this CPU has no lane kernel.
    pub fn decode(encoded: &[[u8; 32]; LANES]) -> Option<Self> {
        if Kernel::detect() != Kernel::Ifma {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the CPU has avx512f and avx512ifma (detected above).
            let (ok, points) = unsafe { ifma::Point8::decode(encoded) };
            let mut valid = ok;
            for (i, e) in encoded.iter().enumerate() {
                if *e == [0u8; 32] {
                    valid &= !(1 << i);
                }
            }
            Some(Self { points, valid })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Whether lane `i` decoded to a point other than the identity.
    pub fn valid(&self, i: usize) -> bool {
        self.valid & (1 << i) != 0
    }

    /// Each lane's point times its scalar, encoded (lanes that are not valid give the
    /// identity's product, to be ignored).
    pub fn mul_encode(&self, scalars: &[Scalar; LANES]) -> [[u8; 32]; LANES] {
        #[cfg(target_arch = "x86_64")]
        {
            let bytes = zeroize::Zeroizing::new(scalars.map(|s| s.to_bytes()));
            // SAFETY: a Points8 exists only where the CPU runs the kernel.
            unsafe { self.points.mul(&bytes).encode() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = scalars;
            unreachable!("no lane kernel on this architecture")
        }
    }
}

/// Which implementation [`mul_encoded`] runs on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Eight lanes of AVX-512 IFMA.
    Ifma,
    /// curve25519-dalek, one packet at a time.
    Portable,
}

impl Kernel {
    /// The best this CPU runs (checked at run time, so one binary runs everywhere), unless
    /// the environment says `LOOPIX_KERNEL=portable` (to compare, or to rule the kernel
    /// out). Decided once per process.
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            if std::env::var("LOOPIX_KERNEL").is_ok_and(|v| v == "portable") {
                return Self::Portable;
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512ifma")
            {
                return Self::Ifma;
            }
            Self::Portable
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ifma => "avx512ifma-x8",
            Self::Portable => "portable",
        }
    }
}

/// For each lane: its 32 bytes decoded as a Ristretto point, times its scalar, encoded;
/// `None` where the bytes are not the canonical encoding of a point, or encode the
/// identity (whose products everyone knows).
pub fn mul_encoded(
    kernel: Kernel,
    points: &[[u8; 32]; LANES],
    scalars: &[Scalar; LANES],
) -> [Option<[u8; 32]>; LANES] {
    let lanes = (kernel == Kernel::Ifma)
        .then(|| Points8::decode(points))
        .flatten();
    match lanes {
        Some(p) => {
            let out = p.mul_encode(scalars);
            core::array::from_fn(|i| p.valid(i).then_some(out[i]))
        }
        // The path a packet takes one at a time (the identity refused by `decompress`).
        None => core::array::from_fn(|i| {
            decompress(&points[i]).map(|p| compress(&mul(&p, &scalars[i])))
        }),
    }
}
