//! Two registers' worth of lanes as one element: every operation runs on both halves, two
//! independent chains of instructions the CPU overlaps (a run of 16 on IFMA, 8 on AVX2).

use super::field::FieldLanes;

#[derive(Clone, Copy)]
pub struct Pair<F>(F, F);

impl<F: FieldLanes> Pair<F> {
    /// The masks of the two halves.
    #[inline(always)]
    fn halves(mask: u32) -> (u32, u32) {
        let low = (1u32 << F::LANES) - 1;
        (mask & low, (mask >> F::LANES) & low)
    }

    #[inline(always)]
    fn join(low: u32, high: u32) -> u32 {
        low | (high << F::LANES)
    }
}

impl<F: FieldLanes> FieldLanes for Pair<F> {
    const LANES: usize = 2 * F::LANES;

    #[inline(always)]
    fn constant(limbs: [u64; 5]) -> Self {
        Self(F::constant(limbs), F::constant(limbs))
    }

    #[inline(always)]
    fn from_bytes(bytes: &[[u8; 32]]) -> Self {
        let (a, b) = bytes.split_at(F::LANES);
        Self(F::from_bytes(a), F::from_bytes(b))
    }

    #[inline(always)]
    fn to_bytes(self, out: &mut [[u8; 32]]) {
        let (a, b) = out.split_at_mut(F::LANES);
        self.0.to_bytes(a);
        self.1.to_bytes(b);
    }

    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(self.0.add(b.0), self.1.add(b.1))
    }

    #[inline(always)]
    fn add_lazy(self, b: Self) -> Self {
        Self(self.0.add_lazy(b.0), self.1.add_lazy(b.1))
    }

    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(self.0.sub(b.0), self.1.sub(b.1))
    }

    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(self.0.mul(b.0), self.1.mul(b.1))
    }

    #[inline(always)]
    fn square(self) -> Self {
        Self(self.0.square(), self.1.square())
    }

    #[inline(always)]
    fn eq(self, b: Self) -> u32 {
        Self::join(self.0.eq(b.0), self.1.eq(b.1))
    }

    #[inline(always)]
    fn is_negative(self) -> u32 {
        Self::join(self.0.is_negative(), self.1.is_negative())
    }

    #[inline(always)]
    fn select(self, b: Self, mask: u32) -> Self {
        let (low, high) = Self::halves(mask);
        Self(self.0.select(b.0, low), self.1.select(b.1, high))
    }

    #[inline(always)]
    fn digit_masks(digits: &[i8]) -> ([u32; 8], u32) {
        let (a, b) = digits.split_at(F::LANES);
        let ((hits_a, neg_a), (hits_b, neg_b)) = (F::digit_masks(a), F::digit_masks(b));
        (
            core::array::from_fn(|j| Self::join(hits_a[j], hits_b[j])),
            Self::join(neg_a, neg_b),
        )
    }
}
