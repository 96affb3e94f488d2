//! Ristretto points in lanes, written once over [`FieldLanes`]: RFC 9496 decoding and
//! encoding, and constant-time scalar multiplication, on the twisted Edwards curve
//! -x² + y² = 1 + d·x²·y² in extended coordinates.
//!
//! Every function here is `#[inline(always)]`: a kernel's entry point (a function with
//! its target features) takes the whole computation in, so the field operations inline
//! into code built for the kernel's instructions.

use zeroize::Zeroizing;

use super::MAX_LANES;
use super::field::{FieldLanes, SQRT_M1};

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

/// One point per lane, (X : Y : Z : T) with x = X/Z, y = Y/Z, x·y = T/Z.
#[derive(Clone, Copy)]
pub struct Point<F> {
    x: F,
    y: F,
    z: F,
    t: F,
}

/// A point ready to be added: (Y + X, Y - X, 2Z, 2d·T).
#[derive(Clone, Copy)]
struct Cached<F> {
    y_plus_x: F,
    y_minus_x: F,
    z2: F,
    t2d: F,
}

impl<F: FieldLanes> Point<F> {
    #[inline(always)]
    pub fn identity() -> Self {
        Self {
            x: F::zero(),
            y: F::one(),
            z: F::one(),
            t: F::zero(),
        }
    }

    /// 2^n·self (dbl-2008-hwcd, a = -1, n times). A doubling does not read T, so only the
    /// last one computes it: one multiplication fewer for each of the others.
    #[inline(always)]
    fn double_n(self, n: u32) -> Self {
        let mut p = self;
        for round in 1..=n {
            let a = p.x.square();
            let b = p.y.square();
            let zz = p.z.square();
            let c = zz.add_lazy(zz);
            let h = a.add_lazy(b); // A + B
            let e = h.sub(p.x.add_lazy(p.y).square()); // A + B - (X + Y)² = -(2XY)
            let g = a.sub(b); // A - B
            let f = c.add(g); // 2Z² + A - B
            // With a = -1: E' = -e, G' = -g, F' = -f, H' = -h; the signs cancel in pairs.
            p = Self::from_efgh(e, f, g, h, round == n, p.t);
        }
        p
    }

    /// The point both formulas end in: (E·F : G·H : F·G : E·H). T = E·H only `with_t`;
    /// else `stale_t` is kept, for a doubling next (which does not read T): one
    /// multiplication fewer. (`with_t` is public: the loop position, never a secret.)
    #[inline(always)]
    fn from_efgh(e: F, f: F, g: F, h: F, with_t: bool, stale_t: F) -> Self {
        Self {
            x: e.mul(f),
            y: g.mul(h),
            t: if with_t { e.mul(h) } else { stale_t },
            z: f.mul(g),
        }
    }

    #[inline(always)]
    fn cached(self) -> Cached<F> {
        Cached {
            y_plus_x: self.y.add_lazy(self.x),
            y_minus_x: self.y.sub(self.x),
            z2: self.z.add_lazy(self.z),
            t2d: self.t.mul(F::constant(EDWARDS_D2)),
        }
    }

    /// self + q (add-2008-hwcd-3, a = -1); T computed only `with_t` (see `from_efgh`).
    #[inline(always)]
    fn add_cached(self, q: &Cached<F>, with_t: bool) -> Self {
        let a = self.y.sub(self.x).mul(q.y_minus_x);
        let b = self.y.add_lazy(self.x).mul(q.y_plus_x);
        let c = self.t.mul(q.t2d);
        let d = self.z.mul(q.z2);
        let e = b.sub(a);
        let f = d.sub(c);
        let g = d.add_lazy(c);
        let h = b.add_lazy(a);
        Self::from_efgh(e, f, g, h, with_t, self.t)
    }

    /// 1..8 times each lane's point, ready to be added: what a multiplication reads, so
    /// that two multiplications of the same points (a hop's shared secret and blinding)
    /// build it once.
    #[inline(always)]
    pub fn table(self) -> Table<F> {
        let base = self.cached();
        let mut entries = [base; 8];
        let mut multiple = self;
        for entry in entries.iter_mut().skip(1) {
            multiple = multiple.add_cached(&base, true);
            *entry = multiple.cached();
        }
        Table(entries)
    }

    /// RFC 9496 decoding of each lane's 32 bytes: the lanes holding the canonical encoding
    /// of a point (the identity's included), and the points (the identity elsewhere).
    #[inline(always)]
    pub fn decode(bytes: &[[u8; 32]]) -> (u32, Self) {
        debug_assert_eq!(bytes.len(), F::LANES);
        let mut canonical = 0u32;
        for (i, b) in bytes.iter().enumerate() {
            // Public input: a plain comparison. Canonical: < p, and non-negative (even).
            if is_canonical(b) && b[0] & 1 == 0 {
                canonical |= 1 << i;
            }
        }
        let s = F::from_bytes(bytes);
        let one = F::one();
        let ss = s.square();
        let u1 = one.sub(ss);
        let u2 = one.add_lazy(ss);
        let u2_sqr = u2.square();
        let v = F::constant(EDWARDS_D).mul(u1.square()).neg().sub(u2_sqr);
        let (was_square, invsqrt) = F::sqrt_ratio_m1(one, v.mul(u2_sqr));
        let den_x = invsqrt.mul(u2);
        let den_y = invsqrt.mul(den_x).mul(v);
        let x = s.add_lazy(s).mul(den_x).abs();
        let y = u1.mul(den_y);
        let t = x.mul(y);
        let ok = canonical & was_square & !t.is_negative() & !y.eq(F::zero());
        let p = Self { x, y, z: one, t };
        (ok, Self::identity().select(p, ok))
    }

    /// RFC 9496 encoding of each lane into `out[i]`.
    #[inline(always)]
    pub fn encode(self, out: &mut [[u8; 32]]) {
        let (x0, y0, z0, t0) = (self.x, self.y, self.z, self.t);
        let u1 = z0.add_lazy(y0).mul(z0.sub(y0));
        let u2 = x0.mul(y0);
        let (_, invsqrt) = F::sqrt_ratio_m1(F::one(), u1.mul(u2.square()));
        let den1 = invsqrt.mul(u1);
        let den2 = invsqrt.mul(u2);
        let z_inv = den1.mul(den2).mul(t0);
        let sqrt_m1 = F::constant(SQRT_M1);
        let ix0 = x0.mul(sqrt_m1);
        let iy0 = y0.mul(sqrt_m1);
        let enchanted = den1.mul(F::constant(INVSQRT_A_MINUS_D));
        let rotate = t0.mul(z_inv).is_negative();
        let x = x0.select(iy0, rotate);
        let y = y0.select(ix0, rotate);
        let den_inv = den2.select(enchanted, rotate);
        let y = y.negate_if(x.mul(z_inv).is_negative());
        den_inv.mul(z0.sub(y)).abs().to_bytes(out);
    }

    #[inline(always)]
    fn select(self, b: Self, mask: u32) -> Self {
        Self {
            x: self.x.select(b.x, mask),
            y: self.y.select(b.y, mask),
            z: self.z.select(b.z, mask),
            t: self.t.select(b.t, mask),
        }
    }
}

/// 1·P..8·P for each lane's point P (`Point::table`).
///
/// Page-aligned: the multiplication reads the table while it stores its temporaries on the
/// stack, and where a table read and a recent store lay at the same offset within a page
/// the CPU held the read back (4K aliasing): the AVX2 kernel's speed then varied by up to
/// a fifth with where the process's stack happened to start.
#[derive(Clone, Copy)]
#[repr(align(4096))]
pub struct Table<F>([Cached<F>; 8]);

impl<F: FieldLanes> Table<F> {
    /// Each lane's point times its scalar (`scalars[i]` canonical, < 2^253), in constant
    /// time: signed radix-16 digits, and for every digit four doublings and the addition of
    /// the entry it picks, read as a blend over all eight (`select`). T is computed only
    /// where something reads it: by the last of four doublings (for the addition) and by
    /// the last addition (for the encoding).
    #[inline(always)]
    pub fn mul(&self, scalars: &[[u8; 32]]) -> Point<F> {
        debug_assert_eq!(scalars.len(), F::LANES);
        // The digits are the scalars': wiped when done.
        let mut digits = Zeroizing::new([[0i8; 64]; MAX_LANES]);
        for (d, s) in digits.iter_mut().zip(scalars) {
            *d = radix16(s);
        }
        let mut column = Zeroizing::new([0i8; MAX_LANES]);
        let mut acc = Point::identity();
        for pos in (0..64).rev() {
            if pos != 63 {
                acc = acc.double_n(4);
            }
            for (c, d) in column.iter_mut().zip(digits.iter()) {
                *c = d[pos];
            }
            acc = acc.add_cached(&select(&self.0, &column[..F::LANES]), pos == 0);
        }
        acc
    }
}

/// The table entry |d| (the identity for 0), negated where d < 0, for each lane's digit d
/// in -8..8: every entry is read for every lane.
#[inline(always)]
fn select<F: FieldLanes>(table: &[Cached<F>; 8], digits: &[i8]) -> Cached<F> {
    let (hits, negative) = F::digit_masks(digits);
    let one = F::one();
    let mut out = Cached {
        y_plus_x: one,
        y_minus_x: one,
        z2: one.add(one),
        t2d: F::zero(),
    };
    for (entry, &hit) in table.iter().zip(&hits) {
        out.y_plus_x = out.y_plus_x.select(entry.y_plus_x, hit);
        out.y_minus_x = out.y_minus_x.select(entry.y_minus_x, hit);
        out.z2 = out.z2.select(entry.z2, hit);
        out.t2d = out.t2d.select(entry.t2d, hit);
    }
    // -(x, y) = (-x, y): Y + X and Y - X trade places and T changes sign.
    Cached {
        y_plus_x: out.y_plus_x.select(out.y_minus_x, negative),
        y_minus_x: out.y_minus_x.select(out.y_plus_x, negative),
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

/// Whether 32 bytes encode a value below p (the top bit clear included).
fn is_canonical(b: &[u8; 32]) -> bool {
    if b[31] & 0x80 != 0 {
        return false;
    }
    // >= p only if bytes 1..31 are all 0xff (top byte 0x7f) and byte 0 >= 0xed.
    !(b[31] == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed)
}
