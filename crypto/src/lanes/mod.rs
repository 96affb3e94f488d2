//! Public-key work of several packets at once, one packet per vector lane: decode the
//! group element, multiply it by a scalar, encode the product. A hop does this twice per
//! packet (the shared secret, then the blinding), and it is 80-90 % of the hop's cost.
//!
//! The kernel for CPUs with AVX-512 IFMA ([`ifma`]) runs eight packets in the lanes of
//! 512-bit registers, with its own field arithmetic; elsewhere [`mul_encoded`] falls back
//! to curve25519-dalek one packet at a time. Both give the same bytes for every input
//! (`tests/lanes.rs` checks it against dalek over random and edge-case inputs).
//!
//! Status: the kernel and its differential tests exist; the packet path does not use it
//! yet.

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;

#[cfg(target_arch = "x86_64")]
pub mod ifma;

/// Packets per batch.
pub const LANES: usize = 8;

/// Which implementation [`mul_encoded`] runs on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Eight lanes of AVX-512 IFMA.
    Ifma,
    /// curve25519-dalek, one packet at a time.
    Portable,
}

impl Kernel {
    /// The best this CPU runs (checked at run time, so one binary runs everywhere).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
        {
            return Self::Ifma;
        }
        Self::Portable
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
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Ifma if Kernel::detect() == Kernel::Ifma => {
            // SAFETY: the CPU has avx512f and avx512ifma (checked just above).
            unsafe { mul_encoded_ifma(points, scalars) }
        }
        _ => core::array::from_fn(|i| portable(&points[i], &scalars[i])),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_encoded_ifma(
    points: &[[u8; 32]; LANES],
    scalars: &[Scalar; LANES],
) -> [Option<[u8; 32]>; LANES] {
    let (ok, p) = ifma::Point8::decode(points);
    let bytes = scalars.map(|s| s.to_bytes());
    let out = p.mul(&bytes).encode();
    core::array::from_fn(|i| {
        let valid = ok & (1 << i) != 0 && points[i] != [0u8; 32];
        valid.then_some(out[i])
    })
}

fn portable(point: &[u8; 32], scalar: &Scalar) -> Option<[u8; 32]> {
    let p = CompressedRistretto(*point).decompress()?;
    (*point != [0u8; 32]).then(|| (p * scalar).compress().to_bytes())
}
