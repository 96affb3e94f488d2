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
//!
//! Constant time: no branch, index or memory address depends on any lane's data; selects
//! are mask blends over every candidate.

use core::arch::x86_64::*;

/// Lanes per register.
pub const LANES: usize = 8;

const MASK51: u64 = (1 << 51) - 1;

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
    pub fn splat(limbs: [u64; 5]) -> Self {
        #[allow(clippy::redundant_closure)] // a target-feature fn is not an FnMut
        Self(limbs.map(|l| splat(l)))
    }

    #[target_feature(enable = "avx512f")]
    pub fn zero() -> Self {
        Self::splat([0; 5])
    }

    #[target_feature(enable = "avx512f")]
    pub fn one() -> Self {
        Self::splat([1, 0, 0, 0, 0])
    }

    /// Lane `i` holds `limbs[i]` (each limb < 2^52).
    #[target_feature(enable = "avx512f")]
    pub fn from_lanes(limbs: &[[u64; 5]; LANES]) -> Self {
        let mut out = [_mm512_setzero_si512(); 5];
        for (k, reg) in out.iter_mut().enumerate() {
            let column: [u64; LANES] = core::array::from_fn(|i| limbs[i][k]);
            // SAFETY: an unaligned load of 64 bytes from an array of 8 u64.
            *reg = unsafe { _mm512_loadu_si512(column.as_ptr().cast()) };
        }
        Self(out)
    }

    /// Each lane's limbs.
    #[target_feature(enable = "avx512f")]
    pub fn to_lanes(self) -> [[u64; 5]; LANES] {
        let mut columns = [[0u64; LANES]; 5];
        for (k, column) in columns.iter_mut().enumerate() {
            // SAFETY: an unaligned store of 64 bytes into an array of 8 u64.
            unsafe { _mm512_storeu_si512(column.as_mut_ptr().cast(), self.0[k]) };
        }
        core::array::from_fn(|i| core::array::from_fn(|k| columns[k][i]))
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
    pub fn add(self, b: Self) -> Self {
        // Limbs < 2^53: one carry brings them back under 2^52.
        Self::carry(core::array::from_fn(|k| {
            _mm512_add_epi64(self.0[k], b.0[k])
        }))
    }

    #[target_feature(enable = "avx512f")]
    pub fn sub(self, b: Self) -> Self {
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

    #[target_feature(enable = "avx512f")]
    pub fn neg(self) -> Self {
        Self::zero().sub(self)
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn mul(self, b: Self) -> Self {
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
        // Column k = lo[k] + 2·hi[k] (< 2^57); columns 5..9 fold down times 19 (< 2^62).
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

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn square(self) -> Self {
        self.mul(self)
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn square_n(self, n: u32) -> Self {
        let mut x = self;
        for _ in 0..n {
            x = x.square();
        }
        x
    }

    /// Every lane reduced mod p to limbs < 2^51 (the canonical value).
    #[target_feature(enable = "avx512f")]
    pub fn reduce(self) -> Self {
        let m = splat(MASK51);
        let mut r = self.0;
        // q = 1 exactly when the value is >= p: the carry out of value + 19.
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

    /// Lanes where the two are equal mod p.
    #[target_feature(enable = "avx512f")]
    pub fn eq(self, b: Self) -> __mmask8 {
        let (x, y) = (self.reduce(), b.reduce());
        let mut mask: __mmask8 = 0xff;
        for k in 0..5 {
            mask &= _mm512_cmpeq_epi64_mask(x.0[k], y.0[k]);
        }
        mask
    }

    /// Lanes whose canonical value is odd ("negative" in RFC 9496).
    #[target_feature(enable = "avx512f")]
    pub fn is_negative(self) -> __mmask8 {
        _mm512_test_epi64_mask(self.reduce().0[0], splat(1))
    }

    /// Lanes in `mask` take `b`, the others keep `self`.
    #[target_feature(enable = "avx512f")]
    pub fn select(self, b: Self, mask: __mmask8) -> Self {
        Self(core::array::from_fn(|k| {
            _mm512_mask_blend_epi64(mask, self.0[k], b.0[k])
        }))
    }

    /// `-self` in the lanes of `mask`.
    #[target_feature(enable = "avx512f")]
    pub fn negate_if(self, mask: __mmask8) -> Self {
        self.select(self.neg(), mask)
    }

    /// |self|: the non-negative one of ±self.
    #[target_feature(enable = "avx512f")]
    pub fn abs(self) -> Self {
        let neg = self.is_negative();
        self.negate_if(neg)
    }

    /// self^((p-5)/8) = self^(2^252 - 3).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn pow_p58(self) -> Self {
        let x = self;
        let x2 = x.square();
        let x9 = x2.square_n(2).mul(x);
        let x11 = x9.mul(x2);
        let x_5 = x11.square().mul(x9); // 2^5 - 1
        let x_10 = x_5.square_n(5).mul(x_5);
        let x_20 = x_10.square_n(10).mul(x_10);
        let x_40 = x_20.square_n(20).mul(x_20);
        let x_50 = x_40.square_n(10).mul(x_10);
        let x_100 = x_50.square_n(50).mul(x_50);
        let x_200 = x_100.square_n(100).mul(x_100);
        let x_250 = x_200.square_n(50).mul(x_50);
        x_250.square_n(2).mul(x)
    }

    /// RFC 9496 SQRT_RATIO_M1(u, v): (lanes where u/v is a square, r) with r the
    /// non-negative square root of u/v, or of i·u/v where it is not a square.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn sqrt_ratio_m1(u: Self, v: Self) -> (__mmask8, Self) {
        let v3 = v.square().mul(v);
        let v7 = v3.square().mul(v);
        let mut r = u.mul(v3).mul(u.mul(v7).pow_p58());
        let check = v.mul(r.square());
        let sqrt_m1 = Self::splat(SQRT_M1);
        let neg_u = u.neg();
        let correct = check.eq(u);
        let flipped = check.eq(neg_u);
        let flipped_i = check.eq(neg_u.mul(sqrt_m1));
        r = r.select(r.mul(sqrt_m1), flipped | flipped_i);
        (correct | flipped, r.abs())
    }
}

const SQRT_M1: [u64; 5] = [
    0x61b274a0ea0b0,
    0xd5a5fc8f189d,
    0x7ef5e9cbd0c60,
    0x78595a6804c9e,
    0x2b8324804fc1d,
];
const EDWARDS_D: [u64; 5] = [
    0x34dca135978a3,
    0x1a8283b156ebd,
    0x5e7a26001c029,
    0x739c663a03cbb,
    0x52036cee2b6ff,
];
const EDWARDS_D2: [u64; 5] = [
    0x69b9426b2f159,
    0x35050762add7a,
    0x3cf44c0038052,
    0x6738cc7407977,
    0x2406d9dc56dff,
];
const INVSQRT_A_MINUS_D: [u64; 5] = [
    0xfdaa805d40ea,
    0x2eb482e57d339,
    0x7610274bc58,
    0x6510b613dc8ff,
    0x786c8905cfaff,
];

/// Eight points of the twisted Edwards curve -x² + y² = 1 + d·x²·y², in extended
/// coordinates (X : Y : Z : T) with x = X/Z, y = Y/Z, x·y = T/Z.
#[derive(Clone, Copy)]
pub struct Point8 {
    x: F8,
    y: F8,
    z: F8,
    t: F8,
}

/// A point ready to be added: (Y + X, Y - X, 2Z, 2d·T).
#[derive(Clone, Copy)]
struct Cached8 {
    y_plus_x: F8,
    y_minus_x: F8,
    z2: F8,
    t2d: F8,
}

impl Point8 {
    #[target_feature(enable = "avx512f")]
    pub fn identity() -> Self {
        Self {
            x: F8::zero(),
            y: F8::one(),
            z: F8::one(),
            t: F8::zero(),
        }
    }

    /// 2·self (dbl-2008-hwcd, a = -1).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn double(self) -> Self {
        let a = self.x.square();
        let b = self.y.square();
        let zz = self.z.square();
        let c = zz.add(zz);
        let h = a.add(b); // A + B
        let e = h.sub(self.x.add(self.y).square()); // A + B - (X + Y)² = -(2XY)
        let g = a.sub(b); // A - B
        let f = c.add(g); // 2Z² + A - B
        // With a = -1: E' = -e, G' = -g, F' = -f, H' = -h; the signs cancel in pairs.
        Self::from_efgh(e, f, g, h)
    }

    /// The point both formulas end in: (E·F : G·H : F·G : E·H).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn from_efgh(e: F8, f: F8, g: F8, h: F8) -> Self {
        Self {
            x: e.mul(f),
            y: g.mul(h),
            t: e.mul(h),
            z: f.mul(g),
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn cached(self) -> Cached8 {
        Cached8 {
            y_plus_x: self.y.add(self.x),
            y_minus_x: self.y.sub(self.x),
            z2: self.z.add(self.z),
            t2d: self.t.mul(F8::splat(EDWARDS_D2)),
        }
    }

    /// self + q (add-2008-hwcd-3, a = -1).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn add_cached(self, q: &Cached8) -> Self {
        let a = self.y.sub(self.x).mul(q.y_minus_x);
        let b = self.y.add(self.x).mul(q.y_plus_x);
        let c = self.t.mul(q.t2d);
        let d = self.z.mul(q.z2);
        let e = b.sub(a);
        let f = d.sub(c);
        let g = d.add(c);
        let h = b.add(a);
        Self::from_efgh(e, f, g, h)
    }

    /// Each lane's point times its scalar (canonical, < 2^253), in constant time: signed
    /// radix-16 digits, a table of 1..8 times the point, and for every digit a blend over
    /// all eight entries.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn mul(self, scalars: &[[u8; 32]; LANES]) -> Self {
        // The digits are the scalars': wiped when done.
        let digits: zeroize::Zeroizing<[[i8; 64]; LANES]> =
            zeroize::Zeroizing::new(core::array::from_fn(|i| radix16(&scalars[i])));
        let mut table = [self.cached(); 8];
        let mut multiple = self;
        for entry in table.iter_mut().skip(1) {
            multiple = multiple.add_cached(&self.cached());
            *entry = multiple.cached();
        }
        let mut acc = Point8::identity();
        for pos in (0..64).rev() {
            if pos != 63 {
                acc = acc.double().double().double().double();
            }
            let d: [i64; LANES] = core::array::from_fn(|i| i64::from(digits[i][pos]));
            // SAFETY: an unaligned load of 64 bytes from an array of 8 i64.
            let d = unsafe { _mm512_loadu_si512(d.as_ptr().cast()) };
            acc = acc.add_cached(&select(&table, d));
        }
        acc
    }

    /// RFC 9496 decoding of each lane's 32 bytes; the lanes that are not a canonical
    /// encoding of a point are cleared in the mask (and hold the identity).
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn decode(bytes: &[[u8; 32]; LANES]) -> (__mmask8, Self) {
        let mut canonical: __mmask8 = 0;
        for (i, b) in bytes.iter().enumerate() {
            // Public input: a plain comparison. Canonical: < p, and non-negative (even).
            if is_canonical(b) && b[0] & 1 == 0 {
                canonical |= 1 << i;
            }
        }
        let s = F8::from_lanes(&bytes.map(|b| limbs_of(&b)));
        let one = F8::one();
        let ss = s.square();
        let u1 = one.sub(ss);
        let u2 = one.add(ss);
        let u2_sqr = u2.square();
        let v = F8::splat(EDWARDS_D).mul(u1.square()).neg().sub(u2_sqr);
        let (was_square, invsqrt) = F8::sqrt_ratio_m1(one, v.mul(u2_sqr));
        let den_x = invsqrt.mul(u2);
        let den_y = invsqrt.mul(den_x).mul(v);
        let x = s.add(s).mul(den_x).abs();
        let y = u1.mul(den_y);
        let t = x.mul(y);
        let ok = canonical & was_square & !t.is_negative() & !y.eq(F8::zero());
        let p = Self { x, y, z: one, t };
        (ok, Self::identity().select(p, ok))
    }

    /// RFC 9496 encoding of each lane.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn encode(self) -> [[u8; 32]; LANES] {
        let (x0, y0, z0, t0) = (self.x, self.y, self.z, self.t);
        let u1 = z0.add(y0).mul(z0.sub(y0));
        let u2 = x0.mul(y0);
        let (_, invsqrt) = F8::sqrt_ratio_m1(F8::one(), u1.mul(u2.square()));
        let den1 = invsqrt.mul(u1);
        let den2 = invsqrt.mul(u2);
        let z_inv = den1.mul(den2).mul(t0);
        let sqrt_m1 = F8::splat(SQRT_M1);
        let ix0 = x0.mul(sqrt_m1);
        let iy0 = y0.mul(sqrt_m1);
        let enchanted = den1.mul(F8::splat(INVSQRT_A_MINUS_D));
        let rotate = t0.mul(z_inv).is_negative();
        let x = x0.select(iy0, rotate);
        let y = y0.select(ix0, rotate);
        let den_inv = den2.select(enchanted, rotate);
        let y = y.negate_if(x.mul(z_inv).is_negative());
        let s = den_inv.mul(z0.sub(y)).abs().reduce();
        s.to_lanes().map(|l| bytes_of(&l))
    }

    #[target_feature(enable = "avx512f")]
    fn select(self, b: Self, mask: __mmask8) -> Self {
        Self {
            x: self.x.select(b.x, mask),
            y: self.y.select(b.y, mask),
            z: self.z.select(b.z, mask),
            t: self.t.select(b.t, mask),
        }
    }
}

/// The table entry |d| (the identity for 0), negated where d < 0, for each lane's digit d
/// in -8..8: every entry is read for every lane.
#[target_feature(enable = "avx512f")]
fn select(table: &[Cached8; 8], d: __m512i) -> Cached8 {
    let negative = _mm512_cmplt_epi64_mask(d, _mm512_setzero_si512());
    let abs = _mm512_abs_epi64(d);
    let one = F8::one();
    let mut out = Cached8 {
        y_plus_x: one,
        y_minus_x: one,
        z2: F8::one().add(F8::one()),
        t2d: F8::zero(),
    };
    for (j, entry) in table.iter().enumerate() {
        let hit = _mm512_cmpeq_epi64_mask(abs, splat(j as u64 + 1));
        out.y_plus_x = out.y_plus_x.select(entry.y_plus_x, hit);
        out.y_minus_x = out.y_minus_x.select(entry.y_minus_x, hit);
        out.z2 = out.z2.select(entry.z2, hit);
        out.t2d = out.t2d.select(entry.t2d, hit);
    }
    // -(x, y) = (-x, y): Y + X and Y - X trade places and T changes sign.
    let swapped_plus = out.y_plus_x.select(out.y_minus_x, negative);
    let swapped_minus = out.y_minus_x.select(out.y_plus_x, negative);
    Cached8 {
        y_plus_x: swapped_plus,
        y_minus_x: swapped_minus,
        z2: out.z2,
        t2d: out.t2d.negate_if(negative),
    }
}

/// Signed radix-16 digits in -8..8 of a scalar below 2^255, least significant first,
/// without a branch on the scalar.
fn radix16(scalar: &[u8; 32]) -> [i8; 64] {
    let mut d = [0i8; 64];
    for i in 0..32 {
        d[2 * i] = (scalar[i] & 15) as i8;
        d[2 * i + 1] = ((scalar[i] >> 4) & 15) as i8;
    }
    for i in 0..63 {
        let carry = (d[i] + 8) >> 4;
        d[i] -= carry << 4;
        d[i + 1] += carry;
    }
    d
}

/// The five radix-2^51 limbs of 32 little-endian bytes (the top bit ignored).
fn limbs_of(b: &[u8; 32]) -> [u64; 5] {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    [
        word(0) & MASK51,
        (word(6) >> 3) & MASK51,
        (word(12) >> 6) & MASK51,
        (word(19) >> 1) & MASK51,
        (word(24) >> 12) & MASK51,
    ]
}

/// 32 little-endian bytes of a canonical element's limbs.
fn bytes_of(l: &[u64; 5]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut acc: u128 = 0;
    let mut bits = 0;
    let mut at = 0;
    for &limb in l {
        acc |= u128::from(limb) << bits;
        bits += 51;
        while bits >= 8 && at < 32 {
            out[at] = acc as u8;
            acc >>= 8;
            bits -= 8;
            at += 1;
        }
    }
    if at < 32 {
        out[at] = acc as u8;
    }
    out
}

/// Whether 32 bytes encode a value below p (the top bit clear included).
fn is_canonical(b: &[u8; 32]) -> bool {
    if b[31] & 0x80 != 0 {
        return false;
    }
    // >= p only if bytes 1..31 are all 0xff (top byte 0x7f) and byte 0 >= 0xed.
    !(b[31] == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed)
}
