//! Four packets at once on AVX2: each 256-bit register holds one limb of four field
//! elements, one per packet, in its four 64-bit lanes.
//!
//! AVX2 multiplies 32-bit halves of 64-bit lanes (`vpmuludq`: 32 × 32 → 64 bits), so field
//! elements mod p = 2^255 - 19 are ten limbs in radix 2^25.5: limb k holds 26 bits when k
//! is even and 25 when odd, at bit offset ⌈25.5·k⌉. A product of two odd limbs lands at
//! twice the weight of its column (25 + 25 bits past offsets summing to one bit short), so
//! one factor is doubled; products past 2^255 fold back times 19 (2^255 = 19 mod p). The
//! multiplication is the schoolbook one of the ref10 code (100 products), with its
//! interleaved carry chain.
//!
//! Invariant: every element leaving an operation has limbs < 2^26 + 2^18 (even) and
//! < 2^25 + 2^18 (odd), but for `add_lazy`, whose sums of two such (limbs < 2^27.01) go
//! only into `mul`, `square`, `sub` and `add`. Those take limbs < 2^27.01: then 19·g_j <
//! 2^31.3 and 2·f_i < 2^28.1 fit 32-bit operands, and a column of a product sums at most
//! ten terms below 2^28.1 · 2^31.3, under 2^62.7: no lane overflows. A sum's odd limbs
//! stay below 4p's (2^27 - 4), so `sub` takes it as either side.

use core::arch::x86_64::*;

use super::curve::{Point, Table};
use super::field::{FieldLanes, bytes_of, field_lanes_for, limbs51_of};

const LANES: usize = 4;

const MASK26: u64 = (1 << 26) - 1;
const MASK25: u64 = (1 << 25) - 1;

/// The kernel's entry: decodes `bytes` (four encodings per `F::LANES / 4` registers).
/// Callers must have checked that the CPU has avx2.
#[target_feature(enable = "avx2")]
pub fn decode<F: FieldLanes>(bytes: &[[u8; 32]]) -> (u32, Table<F>) {
    let (ok, points) = Point::decode(bytes);
    (ok, points.table())
}

/// The kernel's entry: each lane's point times its scalar, encoded into `out`.
/// Callers must have checked that the CPU has avx2.
#[target_feature(enable = "avx2")]
pub fn mul_encode<F: FieldLanes>(table: &Table<F>, scalars: &[[u8; 32]], out: &mut [[u8; 32]]) {
    table.mul(scalars).encode(out)
}

/// Four field elements.
#[derive(Clone, Copy)]
pub struct F4([__m256i; 10]);

/// `[e(0), ..., e(9)]` for an expression `e` of the limb index `k`, spelled out: a
/// closure through `array::map` or `from_fn` does not inline into target-feature code
/// (each became a call, with its operands through memory).
macro_rules! limbwise {
    (|$k:ident| $e:expr) => {
        limbwise!(@ $k, $e; 0 1 2 3 4 5 6 7 8 9)
    };
    (@ $k:ident, $e:expr; $($i:literal)*) => {
        [$({
            let $k = $i;
            $e
        }),*]
    };
}

/// Bits in limb `k`.
const fn width(k: usize) -> u32 {
    if k.is_multiple_of(2) { 26 } else { 25 }
}

/// Ten radix-2^25.5 limbs of an element given in five radix-2^51 limbs (51 = 26 + 25).
fn split(limbs51: &[u64; 5]) -> [u64; 10] {
    core::array::from_fn(|k| {
        let l = limbs51[k / 2];
        if k.is_multiple_of(2) {
            l & MASK26
        } else {
            l >> 26
        }
    })
}

#[target_feature(enable = "avx2")]
fn splat(x: u64) -> __m256i {
    _mm256_set1_epi64x(x as i64)
}

/// 19 · x for a limb (x < 2^32): one `vpmuludq`, written as the instruction itself. As an
/// intrinsic, the compiler sees that only the low 32 bits of the result are ever read
/// (it is a multiplication's operand), drops the implied 32-bit mask, and then expands
/// a full 64-bit multiplication: five instructions for one.
#[target_feature(enable = "avx2")]
fn limb_times19(x: __m256i) -> __m256i {
    let product: __m256i;
    // SAFETY: one vector instruction on registers; no memory, stack or flags touched.
    unsafe {
        core::arch::asm!(
            "vpmuludq {p}, {x}, {c}",
            p = lateout(ymm_reg) product,
            x = in(ymm_reg) x,
            c = in(ymm_reg) splat(19),
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    product
}

/// 19 · x for any x (a carry), by shifts and adds.
#[target_feature(enable = "avx2")]
fn times19(x: __m256i) -> __m256i {
    _mm256_add_epi64(
        _mm256_add_epi64(_mm256_slli_epi64::<4>(x), _mm256_slli_epi64::<1>(x)),
        x,
    )
}

/// (x mod 2^width(k), x >> width(k)).
#[target_feature(enable = "avx2")]
fn split_carry(x: __m256i, k: usize) -> (__m256i, __m256i) {
    if k.is_multiple_of(2) {
        (
            _mm256_and_si256(x, splat(MASK26)),
            _mm256_srli_epi64::<26>(x),
        )
    } else {
        (
            _mm256_and_si256(x, splat(MASK25)),
            _mm256_srli_epi64::<25>(x),
        )
    }
}

impl F4 {
    #[target_feature(enable = "avx2")]
    fn splat_limbs(limbs: [u64; 5]) -> Self {
        #[allow(clippy::redundant_closure)] // a target-feature fn is not an FnMut
        Self(split(&limbs).map(|l| splat(l)))
    }

    #[target_feature(enable = "avx2")]
    fn load(bytes: &[[u8; 32]]) -> Self {
        let limbs: [[u64; 10]; LANES] = core::array::from_fn(|i| split(&limbs51_of(&bytes[i])));
        Self(core::array::from_fn(|k| {
            let column: [u64; LANES] = core::array::from_fn(|i| limbs[i][k]);
            // SAFETY: an unaligned load of 32 bytes from an array of 4 u64.
            unsafe { _mm256_loadu_si256(column.as_ptr().cast()) }
        }))
    }

    #[target_feature(enable = "avx2")]
    fn store(self, out: &mut [[u8; 32]]) {
        let r = self.reduce();
        let mut columns = [[0u64; LANES]; 10];
        for (k, column) in columns.iter_mut().enumerate() {
            // SAFETY: an unaligned store of 32 bytes into an array of 4 u64.
            unsafe { _mm256_storeu_si256(column.as_mut_ptr().cast(), r.0[k]) };
        }
        for (i, o) in out.iter_mut().enumerate().take(LANES) {
            let limbs: [u64; 10] = core::array::from_fn(|k| columns[k][i]);
            *o = bytes_of(&limbs, width);
        }
    }

    /// Carries every limb's excess into the next at once (the top one's times 19 into the
    /// bottom): for limbs < 2^30, leaves limbs within the invariant.
    #[target_feature(enable = "avx2")]
    fn carry(r: [__m256i; 10]) -> Self {
        let parts: [(__m256i, __m256i); 10] = limbwise!(|k| split_carry(r[k], k));
        Self(limbwise!(|k| {
            let incoming = if k == 0 {
                times19(parts[9].1)
            } else {
                parts[k - 1].1
            };
            _mm256_add_epi64(parts[k].0, incoming)
        }))
    }

    #[target_feature(enable = "avx2")]
    fn add_(self, b: Self) -> Self {
        // Limbs < 2^27.01: one carry brings them back within the invariant.
        Self::carry(self.add_lazy_(b).0)
    }

    /// The limbs' sums, not carried (the module's invariant says where they may go).
    #[target_feature(enable = "avx2")]
    fn add_lazy_(self, b: Self) -> Self {
        Self(limbwise!(|k| _mm256_add_epi64(self.0[k], b.0[k])))
    }

    #[target_feature(enable = "avx2")]
    fn sub_(self, b: Self) -> Self {
        // a + 4p - b: 4p's limbs (2^28 - 76, then 2^27 - 4 and 2^28 - 4 alternating)
        // exceed any b limb, so no lane goes negative.
        Self::carry(limbwise!(|k| {
            let four_p = match k {
                0 => 4 * (MASK26 - 18),
                _ if k % 2 == 0 => 4 * MASK26,
                _ => 4 * MASK25,
            };
            _mm256_sub_epi64(_mm256_add_epi64(self.0[k], splat(four_p)), b.0[k])
        }))
    }

    #[target_feature(enable = "avx2")]
    #[inline(never)]
    fn mul_(self, b: Self) -> Self {
        let (f, g) = (self.0, b.0);
        // Products past 2^255 take 19·g_j; a product of two odd limbs sits one bit above
        // its column's weight, so f_i is doubled for it.
        let g19: [__m256i; 10] = limbwise!(|k| limb_times19(g[k]));
        // Row by row (f_i times every g_j, into the ten columns), spelled out (`row!`) so
        // that every index is a constant: ten accumulators and f_i live, the g_j read as
        // memory operands, which fits AVX2's sixteen registers.
        let mut h = [_mm256_setzero_si256(); 10];
        macro_rules! row {
            ($($i:literal)*) => {$(
                let fi = f[$i];
                let fi2 = _mm256_add_epi64(fi, fi);
                row!(@ $i, fi, fi2; 0 1 2 3 4 5 6 7 8 9);
            )*};
            (@ $i:literal, $fi:ident, $fi2:ident; $($k:literal)*) => {$(
                let j = ($k + 10 - $i) % 10;
                let fop = if $i % 2 == 1 && j % 2 == 1 { $fi2 } else { $fi };
                let gop = if $i > $k { g19[j] } else { g[j] };
                h[$k] = _mm256_add_epi64(h[$k], _mm256_mul_epu32(fop, gop));
            )*};
        }
        row!(0 1 2 3 4 5 6 7 8 9);
        Self::carry_chain(h)
    }

    #[target_feature(enable = "avx2")]
    #[inline(never)]
    #[allow(unused_comparisons)] // `0 <= j` in the first row, spelled out with the others
    fn square_(self) -> Self {
        // f_i·f_j and f_j·f_i are one product taken twice: 55 products instead of 100.
        let f = self.0;
        let f2: [__m256i; 10] = limbwise!(|k| _mm256_add_epi64(f[k], f[k]));
        let f4: [__m256i; 10] = limbwise!(|k| _mm256_add_epi64(f2[k], f2[k]));
        let f19: [__m256i; 10] = limbwise!(|k| limb_times19(f[k]));
        // Column k: the products f_i·f_j with i <= j and i + j = k mod 10, spelled out so
        // that every index is a constant.
        macro_rules! column {
            ($k:ident) => {{
                let mut acc = _mm256_setzero_si256();
                column!(acc, $k; 0 1 2 3 4 5 6 7 8 9);
                acc
            }};
            ($acc:ident, $k:ident; $($i:literal)*) => {$(
                let j = ($k + 10 - $i) % 10;
                if $i <= j {
                    // Twice for i ≠ j, twice again where both are odd: 1, 2 or 4 times.
                    let fi = match ($i == j, $i % 2 == 1 && j % 2 == 1) {
                        (true, false) => f[$i],
                        (false, true) => f4[$i],
                        _ => f2[$i],
                    };
                    let fj = if $i + j >= 10 { f19[j] } else { f[j] };
                    $acc = _mm256_add_epi64($acc, _mm256_mul_epu32(fi, fj));
                }
            )*};
        }
        Self::carry_chain(limbwise!(|k| column!(k)))
    }

    /// The ref10 carry order on a product's columns (each < 2^61): two chains interleaved,
    /// 0→1→2→3→4→5 and 4→5→6→7→8→9→0→1, leaving limbs within the invariant.
    #[target_feature(enable = "avx2")]
    fn carry_chain(mut h: [__m256i; 10]) -> Self {
        macro_rules! carry {
            ($($k:literal)*) => {$(
                let (low, c) = split_carry(h[$k], $k);
                h[$k] = low;
                if $k == 9 {
                    h[0] = _mm256_add_epi64(h[0], times19(c));
                } else {
                    h[($k + 1) % 10] = _mm256_add_epi64(h[($k + 1) % 10], c);
                }
            )*};
        }
        carry!(0 4 1 5 2 6 3 7 4 8 9 0);
        Self(h)
    }

    /// Every lane reduced mod p to limbs < 2^width (the canonical value).
    #[target_feature(enable = "avx2")]
    fn reduce(self) -> Self {
        let mut r = self.0;
        // Limbs < 2^width exactly first (the value then < 2^255), then q = 1 exactly when
        // the value is >= p: the carry out of value + 19.
        for _ in 0..2 {
            for k in 0..9 {
                let (low, c) = split_carry(r[k], k);
                r[k] = low;
                r[k + 1] = _mm256_add_epi64(r[k + 1], c);
            }
            let (low, c) = split_carry(r[9], 9);
            r[9] = low;
            r[0] = _mm256_add_epi64(r[0], times19(c));
        }
        let mut q = split_carry(_mm256_add_epi64(r[0], splat(19)), 0).1;
        for (k, limb) in r.iter().enumerate().skip(1) {
            q = split_carry(_mm256_add_epi64(*limb, q), k).1;
        }
        r[0] = _mm256_add_epi64(r[0], times19(q));
        for k in 0..9 {
            let (low, c) = split_carry(r[k], k);
            r[k] = low;
            r[k + 1] = _mm256_add_epi64(r[k + 1], c);
        }
        r[9] = split_carry(r[9], 9).0;
        Self(r)
    }

    /// The lanes of an all-ones-or-zero lane mask, as bits.
    #[target_feature(enable = "avx2")]
    fn bits(mask: __m256i) -> u32 {
        _mm256_movemask_pd(_mm256_castsi256_pd(mask)) as u32
    }

    #[target_feature(enable = "avx2")]
    fn is_zero(self) -> u32 {
        let r = self.reduce();
        let mut any = r.0[0];
        for limb in &r.0[1..] {
            any = _mm256_or_si256(any, *limb);
        }
        Self::bits(_mm256_cmpeq_epi64(any, _mm256_setzero_si256()))
    }

    #[target_feature(enable = "avx2")]
    fn is_odd(self) -> u32 {
        let low = _mm256_and_si256(self.reduce().0[0], splat(1));
        Self::bits(_mm256_cmpeq_epi64(low, splat(1)))
    }

    #[target_feature(enable = "avx2")]
    fn blend(self, b: Self, mask: u32) -> Self {
        // Bit i of `mask` spread over lane i.
        let lane_bits = _mm256_set_epi64x(8, 4, 2, 1);
        let m = _mm256_cmpeq_epi64(
            _mm256_and_si256(splat(u64::from(mask)), lane_bits),
            lane_bits,
        );
        Self(limbwise!(|k| _mm256_blendv_epi8(self.0[k], b.0[k], m)))
    }

    #[target_feature(enable = "avx2")]
    fn digits(digits: &[i8]) -> ([u32; 8], u32) {
        let d: [i64; LANES] = core::array::from_fn(|i| i64::from(digits[i]));
        // SAFETY: an unaligned load of 32 bytes from an array of 4 i64.
        let d = unsafe { _mm256_loadu_si256(d.as_ptr().cast()) };
        let negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), d);
        // |d| = (d ^ sign) - sign.
        let abs = _mm256_sub_epi64(_mm256_xor_si256(d, negative), negative);
        let hits =
            core::array::from_fn(|j| Self::bits(_mm256_cmpeq_epi64(abs, splat(j as u64 + 1))));
        (hits, Self::bits(negative))
    }
}

#[cfg(test)]
impl F4 {
    /// Every lane with these limbs (tests: limbs at the invariant's bound). Only where the
    /// CPU runs the kernel.
    pub fn raw(limbs: [u64; 10]) -> Self {
        // SAFETY: the tests call it only where the CPU runs the kernel.
        unsafe { Self(limbs.map(|l| splat(l))) }
    }
}

field_lanes_for!(F4, LANES, "avx2");
