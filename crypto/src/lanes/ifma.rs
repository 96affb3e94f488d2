//! Eight packets at once on AVX-512 IFMA: each 512-bit register holds one limb of eight
//! field elements, one per packet, and every operation runs on all eight.
//!
//! Field elements mod p = 2^255 - 19 are five limbs in radix 2^51. IFMA multiplies the low
//! 52 bits of two lanes and adds either the low or the high 52 bits of the 104-bit product
//! to an accumulator (`vpmadd52luq` / `vpmadd52huq`), so an operand limb may be up to 52
//! bits: the sum of two reduced elements needs no carry before a multiplication. A high
//! half has weight 2^52 = 2 · 2^51 in radix 2^51, so high halves are accumulated apart and
//! doubled. 2^255 = 19 mod p folds the upper columns back.
//!
//! Invariant: every element leaving an operation has limbs < 2^52 (a valid multiplication
//! operand). Values are reduced mod p only for encoding and comparison.

use core::arch::x86_64::*;

use super::curve::{Point, Table};
use super::field::{FieldLanes, bytes_of, field_lanes_for, limbs51_of};

const LANES: usize = 8;

const MASK51: u64 = (1 << 51) - 1;

/// The kernel's entry: decodes `bytes` (eight encodings per `F::LANES / 8` registers).
/// Callers must have checked that the CPU has avx512f and avx512ifma.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn decode<F: FieldLanes>(bytes: &[[u8; 32]]) -> (u32, Table<F>) {
    let (ok, points) = Point::decode(bytes);
    (ok, points.table())
}

/// The kernel's entry: each lane's point times its scalar, encoded into `out`.
/// Callers must have checked that the CPU has avx512f and avx512ifma.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn mul_encode<F: FieldLanes>(table: &Table<F>, scalars: &[[u8; 32]], out: &mut [[u8; 32]]) {
    table.mul(scalars).encode(out)
}

/// Eight field elements.
#[derive(Clone, Copy)]
pub struct F8([__m512i; 5]);

#[target_feature(enable = "avx512f")]
fn splat(x: u64) -> __m512i {
    _mm512_set1_epi64(x as i64)
}

/// 19 · x, by shifts and adds.
#[target_feature(enable = "avx512f")]
fn times19(x: __m512i) -> __m512i {
    _mm512_add_epi64(
        _mm512_add_epi64(_mm512_slli_epi64::<4>(x), _mm512_slli_epi64::<1>(x)),
        x,
    )
}

impl F8 {
    #[target_feature(enable = "avx512f")]
    fn splat_limbs(limbs: [u64; 5]) -> Self {
        #[allow(clippy::redundant_closure)] // a target-feature fn is not an FnMut
        Self(limbs.map(|l| splat(l)))
    }

    #[target_feature(enable = "avx512f")]
    fn load(bytes: &[[u8; 32]]) -> Self {
        let limbs: [[u64; 5]; LANES] = core::array::from_fn(|i| limbs51_of(&bytes[i]));
        let mut out = [_mm512_setzero_si512(); 5];
        for (k, reg) in out.iter_mut().enumerate() {
            let column: [u64; LANES] = core::array::from_fn(|i| limbs[i][k]);
            // SAFETY: an unaligned load of 64 bytes from an array of 8 u64.
            *reg = unsafe { _mm512_loadu_si512(column.as_ptr().cast()) };
        }
        Self(out)
    }

    #[target_feature(enable = "avx512f")]
    fn store(self, out: &mut [[u8; 32]]) {
        let r = self.reduce();
        let mut columns = [[0u64; LANES]; 5];
        for (k, column) in columns.iter_mut().enumerate() {
            // SAFETY: an unaligned store of 64 bytes into an array of 8 u64.
            unsafe { _mm512_storeu_si512(column.as_mut_ptr().cast(), r.0[k]) };
        }
        for (i, o) in out.iter_mut().enumerate().take(LANES) {
            let limbs: [u64; 5] = core::array::from_fn(|k| columns[k][i]);
            *o = bytes_of(&limbs, |_| 51);
        }
    }

    /// Carries every limb's excess into the next at once (the top one's times 19 into the
    /// bottom): for limbs < 2^63, leaves limbs < 2^51 + 2^12 < 2^52.
    #[target_feature(enable = "avx512f")]
    fn carry(r: [__m512i; 5]) -> Self {
        let m = splat(MASK51);
        let c: [__m512i; 5] = r.map(|x| _mm512_srli_epi64::<51>(x));
        let low: [__m512i; 5] = r.map(|x| _mm512_and_si512(x, m));
        Self([
            _mm512_add_epi64(low[0], times19(c[4])),
            _mm512_add_epi64(low[1], c[0]),
            _mm512_add_epi64(low[2], c[1]),
            _mm512_add_epi64(low[3], c[2]),
            _mm512_add_epi64(low[4], c[3]),
        ])
    }

    #[target_feature(enable = "avx512f")]
    fn add_(self, b: Self) -> Self {
        // Limbs < 2^53: one carry brings them back under 2^52.
        Self::carry(core::array::from_fn(|k| {
            _mm512_add_epi64(self.0[k], b.0[k])
        }))
    }

    /// As `add_`: `vpmadd52` reads only 52 bits of each limb, so a sum cannot go unreduced.
    #[target_feature(enable = "avx512f")]
    fn add_lazy_(self, b: Self) -> Self {
        self.add_(b)
    }

    #[target_feature(enable = "avx512f")]
    fn sub_(self, b: Self) -> Self {
        // a + 4p - b: 4p's limbs exceed any b limb (< 2^52), so no lane goes negative.
        let four_p = [
            splat(4 * (MASK51 - 18)),
            splat(4 * MASK51),
            splat(4 * MASK51),
            splat(4 * MASK51),
            splat(4 * MASK51),
        ];
        Self::carry(core::array::from_fn(|k| {
            _mm512_sub_epi64(_mm512_add_epi64(self.0[k], four_p[k]), b.0[k])
        }))
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul_(self, b: Self) -> Self {
        let (a, b) = (self.0, b.0);
        let z = _mm512_setzero_si512();
        // lo[k]: low halves of a_i·b_j with i + j = k; hi[k]: high halves with i + j = k - 1.
        let mut lo = [z; 9];
        let mut hi = [z; 10];
        for i in 0..5 {
            for j in 0..5 {
                lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a[i], b[j]);
                hi[i + j + 1] = _mm512_madd52hi_epu64(hi[i + j + 1], a[i], b[j]);
            }
        }
        Self::fold(lo, hi)
    }

    /// `a·a` with each cross product `a_i·a_j` (i < j) taken once and the columns doubled
    /// before the squares `a_i·a_i` are added: 30 multiply-adds where [`Self::mul_`] takes
    /// 50. The operands are not doubled (a limb of a lazy sum may be near 2^52, and IFMA
    /// reads 52 bits of each); the columns are, and hold at most the 5 terms `mul_`'s do.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn square_(self) -> Self {
        let a = self.0;
        let z = _mm512_setzero_si512();
        let mut lo = [z; 9];
        let mut hi = [z; 10];
        for i in 0..5 {
            for j in i + 1..5 {
                lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a[i], a[j]);
                hi[i + j + 1] = _mm512_madd52hi_epu64(hi[i + j + 1], a[i], a[j]);
            }
        }
        // Only columns 1..=7 (low halves) and 2..=8 (high halves) hold cross products.
        // Indexed loops, not iterators over the arrays: with an iterator chain the columns
        // went through memory and the kernel ran 1.6x slower.
        #[allow(clippy::needless_range_loop)]
        for k in 1..=7 {
            lo[k] = _mm512_add_epi64(lo[k], lo[k]);
        }
        #[allow(clippy::needless_range_loop)]
        for k in 2..=8 {
            hi[k] = _mm512_add_epi64(hi[k], hi[k]);
        }
        for i in 0..5 {
            lo[2 * i] = _mm512_madd52lo_epu64(lo[2 * i], a[i], a[i]);
            hi[2 * i + 1] = _mm512_madd52hi_epu64(hi[2 * i + 1], a[i], a[i]);
        }
        Self::fold(lo, hi)
    }

    /// Column k = lo[k] + 2·hi[k] (< 2^57); columns 5..9 fold down times 19 (< 2^62).
    #[target_feature(enable = "avx512f")]
    fn fold(lo: [__m512i; 9], hi: [__m512i; 10]) -> Self {
        let z = _mm512_setzero_si512();
        let col = |k: usize| {
            let l = if k < 9 { lo[k] } else { z };
            _mm512_add_epi64(l, _mm512_slli_epi64::<1>(hi[k]))
        };
        let r: [__m512i; 5] = core::array::from_fn(|k| {
            let low = if k == 0 { lo[0] } else { col(k) };
            _mm512_add_epi64(low, times19(col(k + 5)))
        });
        Self::carry(r)
    }

    /// Every lane reduced mod p to limbs < 2^51 (the canonical value).
    #[target_feature(enable = "avx512f")]
    fn reduce(self) -> Self {
        let m = splat(MASK51);
        let mut r = self.0;
        // Limbs < 2^51 exactly first (the value then < 2^255), then q = 1 exactly when the
        // value is >= p: the carry out of value + 19.
        for _ in 0..2 {
            for k in 0..4 {
                r[k + 1] = _mm512_add_epi64(r[k + 1], _mm512_srli_epi64::<51>(r[k]));
                r[k] = _mm512_and_si512(r[k], m);
            }
            r[0] = _mm512_add_epi64(r[0], times19(_mm512_srli_epi64::<51>(r[4])));
            r[4] = _mm512_and_si512(r[4], m);
        }
        let mut q = _mm512_srli_epi64::<51>(_mm512_add_epi64(r[0], splat(19)));
        for limb in &r[1..] {
            q = _mm512_srli_epi64::<51>(_mm512_add_epi64(*limb, q));
        }
        r[0] = _mm512_add_epi64(r[0], times19(q));
        for k in 0..4 {
            let c = _mm512_srli_epi64::<51>(r[k]);
            r[k] = _mm512_and_si512(r[k], m);
            r[k + 1] = _mm512_add_epi64(r[k + 1], c);
        }
        r[4] = _mm512_and_si512(r[4], m);
        Self(r)
    }

    #[target_feature(enable = "avx512f")]
    fn is_zero(self) -> u32 {
        let r = self.reduce();
        let mut mask: __mmask8 = 0xff;
        for k in 0..5 {
            mask &= _mm512_cmpeq_epi64_mask(r.0[k], _mm512_setzero_si512());
        }
        u32::from(mask)
    }

    #[target_feature(enable = "avx512f")]
    fn is_odd(self) -> u32 {
        u32::from(_mm512_test_epi64_mask(self.reduce().0[0], splat(1)))
    }

    #[target_feature(enable = "avx512f")]
    fn blend(self, b: Self, mask: u32) -> Self {
        Self(core::array::from_fn(|k| {
            _mm512_mask_blend_epi64(mask as __mmask8, self.0[k], b.0[k])
        }))
    }

    #[target_feature(enable = "avx512f")]
    fn digits(digits: &[i8]) -> ([u32; 8], u32) {
        let d: [i64; LANES] = core::array::from_fn(|i| i64::from(digits[i]));
        // SAFETY: an unaligned load of 64 bytes from an array of 8 i64.
        let d = unsafe { _mm512_loadu_si512(d.as_ptr().cast()) };
        let negative = _mm512_cmplt_epi64_mask(d, _mm512_setzero_si512());
        let abs = _mm512_abs_epi64(d);
        let hits =
            core::array::from_fn(|j| u32::from(_mm512_cmpeq_epi64_mask(abs, splat(j as u64 + 1))));
        (hits, u32::from(negative))
    }
}

#[cfg(test)]
impl F8 {
    /// Every lane with these limbs (tests: limbs at the invariant's bound). Only where the
    /// CPU runs the kernel.
    pub fn raw(limbs: [u64; 5]) -> Self {
        // SAFETY: the tests call it only where the CPU runs the kernel.
        unsafe { Self::splat_limbs(limbs) }
    }
}

field_lanes_for!(F8, LANES, "avx512f,avx512ifma");
