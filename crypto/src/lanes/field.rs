//! What the curve code asks of a kernel: field elements mod p = 2^255 - 19, one per lane,
//! every operation on all lanes at once. Each kernel (`ifma.rs`, `avx2.rs`) keeps its own
//! limbs; the curve code (`curve.rs`) is written once over this trait.
//!
//! Contract of every implementation:
//! - An element leaving any operation is a valid operand of every operation (its limbs
//!   within the kernel's bound); values are reduced mod p only for encoding and comparison.
//! - Constant time: no branch, index or memory address depends on any lane's value.
//!   Masks are plain bit sets (lane `i` = bit `i`), made and used without branching.
//! - A value of an implementing type exists only inside a kernel entry point that runs
//!   after the CPU was found to have the kernel's instructions (`Kernel::runs_here`): the
//!   methods are safe functions around target-feature code and rely on that.

/// Field elements in lanes.
pub trait FieldLanes: Copy {
    /// Lanes per element.
    const LANES: usize;

    /// The same value in every lane, given as five radix-2^51 limbs (each < 2^51).
    fn constant(limbs: [u64; 5]) -> Self;

    /// Lane `i` holds `bytes[i]` read little-endian with the top bit ignored
    /// (`bytes.len() == LANES`).
    fn from_bytes(bytes: &[[u8; 32]]) -> Self;

    /// Each lane's canonical little-endian encoding into `out[i]` (`out.len() == LANES`).
    fn to_bytes(self, out: &mut [[u8; 32]]);

    fn add(self, b: Self) -> Self;

    /// `self + b` where the sum is only an operand of `mul`, `square`, `sub` or `add`
    /// (each of which brings limbs back within the bound), and `self` and `b` are outputs
    /// of operations other than this one: a kernel whose multiplication takes the larger
    /// limbs skips the carry `add` does ("lazy reduction").
    fn add_lazy(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn square(self) -> Self;

    /// Lanes where the two are equal mod p.
    fn eq(self, b: Self) -> u32;

    /// Lanes whose canonical value is odd ("negative" in RFC 9496).
    fn is_negative(self) -> u32;

    /// Lanes in `mask` take `b`, the others keep `self`.
    fn select(self, b: Self, mask: u32) -> Self;

    /// For one signed radix-16 digit per lane (in -8..=8): for each j in 1..=8 the lanes
    /// whose digit is ±j, and the lanes whose digit is negative.
    fn digit_masks(digits: &[i8]) -> ([u32; 8], u32);

    #[inline(always)]
    fn zero() -> Self {
        Self::constant([0; 5])
    }

    #[inline(always)]
    fn one() -> Self {
        Self::constant([1, 0, 0, 0, 0])
    }

    #[inline(always)]
    fn neg(self) -> Self {
        Self::zero().sub(self)
    }

    /// `-self` in the lanes of `mask`.
    #[inline(always)]
    fn negate_if(self, mask: u32) -> Self {
        self.select(self.neg(), mask)
    }

    /// |self|: the non-negative one of ±self.
    #[inline(always)]
    fn abs(self) -> Self {
        let neg = self.is_negative();
        self.negate_if(neg)
    }

    #[inline(always)]
    fn square_n(self, n: u32) -> Self {
        let mut x = self;
        for _ in 0..n {
            x = x.square();
        }
        x
    }

    /// self^((p-5)/8) = self^(2^252 - 3).
    #[inline(always)]
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
    #[inline(always)]
    fn sqrt_ratio_m1(u: Self, v: Self) -> (u32, Self) {
        let v3 = v.square().mul(v);
        let v7 = v3.square().mul(v);
        let mut r = u.mul(v3).mul(u.mul(v7).pow_p58());
        let check = v.mul(r.square());
        let sqrt_m1 = Self::constant(SQRT_M1);
        let neg_u = u.neg();
        let correct = check.eq(u);
        let flipped = check.eq(neg_u);
        let flipped_i = check.eq(neg_u.mul(sqrt_m1));
        r = r.select(r.mul(sqrt_m1), flipped | flipped_i);
        (correct | flipped, r.abs())
    }
}

/// `FieldLanes` for a kernel's element type `$t` of `$lanes` lanes: each method a safe
/// wrapper around the type's target-feature function of the same job (`splat_limbs`,
/// `load`, `store`, `add_`, `sub_`, `mul_`, `square_`, `is_zero`, `is_odd`, `blend`,
/// `digits`). Sound because a value of `$t` exists only inside the kernel's entry points,
/// which run only where the CPU has the kernel's instructions (`$features`, for the
/// reader: the entry points name them).
macro_rules! field_lanes_for {
    ($t:ty, $lanes:expr, $features:literal) => {
        // SAFETY of every `unsafe` below: see the macro's comment; `$features` present.
        impl FieldLanes for $t {
            const LANES: usize = $lanes;

            #[inline(always)]
            fn constant(limbs: [u64; 5]) -> Self {
                unsafe { Self::splat_limbs(limbs) }
            }

            #[inline(always)]
            fn from_bytes(bytes: &[[u8; 32]]) -> Self {
                unsafe { Self::load(bytes) }
            }

            #[inline(always)]
            fn to_bytes(self, out: &mut [[u8; 32]]) {
                unsafe { self.store(out) }
            }

            #[inline(always)]
            fn add(self, b: Self) -> Self {
                unsafe { self.add_(b) }
            }

            #[inline(always)]
            fn add_lazy(self, b: Self) -> Self {
                unsafe { self.add_lazy_(b) }
            }

            #[inline(always)]
            fn sub(self, b: Self) -> Self {
                unsafe { self.sub_(b) }
            }

            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                unsafe { self.mul_(b) }
            }

            #[inline(always)]
            fn square(self) -> Self {
                unsafe { self.square_() }
            }

            #[inline(always)]
            fn eq(self, b: Self) -> u32 {
                unsafe { self.sub_(b).is_zero() }
            }

            #[inline(always)]
            fn is_negative(self) -> u32 {
                unsafe { self.is_odd() }
            }

            #[inline(always)]
            fn select(self, b: Self, mask: u32) -> Self {
                unsafe { self.blend(b, mask) }
            }

            #[inline(always)]
            fn digit_masks(digits: &[i8]) -> ([u32; 8], u32) {
                unsafe { Self::digits(digits) }
            }
        }
    };
}
pub(crate) use field_lanes_for;

/// √-1 mod p, in radix-2^51 limbs.
pub const SQRT_M1: [u64; 5] = [
    0x61b274a0ea0b0,
    0xd5a5fc8f189d,
    0x7ef5e9cbd0c60,
    0x78595a6804c9e,
    0x2b8324804fc1d,
];

const MASK51: u64 = (1 << 51) - 1;

/// The five radix-2^51 limbs of 32 little-endian bytes (the top bit ignored).
pub fn limbs51_of(b: &[u8; 32]) -> [u64; 5] {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    [
        word(0) & MASK51,
        (word(6) >> 3) & MASK51,
        (word(12) >> 6) & MASK51,
        (word(19) >> 1) & MASK51,
        (word(24) >> 12) & MASK51,
    ]
}

/// 32 little-endian bytes of limbs of `widths` bits each (a canonical element's).
pub fn bytes_of(limbs: &[u64], widths: impl Fn(usize) -> u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut acc: u128 = 0;
    let mut bits = 0;
    let mut at = 0;
    for (k, &limb) in limbs.iter().enumerate() {
        acc |= u128::from(limb) << bits;
        bits += widths(k);
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
