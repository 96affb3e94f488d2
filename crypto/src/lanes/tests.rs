//! The kernels' field arithmetic against a slow reference mod p, at the field's boundary
//! values (0, 1, 18, 19, p - 1, p, p + 1, 2^255 - 1: non-canonical inputs included) and
//! at the largest limbs an operation may hand on (the invariant's bound), where an
//! overflowing lane or a missed carry would show. Curve-level checks against dalek are in
//! `tests/lanes.rs`.

use super::avx2::F4;
use super::field::FieldLanes;
use super::ifma::F8;
use super::pair::Pair;
use super::{Kernel, KernelChoiceError};

/// A 256-bit little-endian integer.
type U256 = [u64; 4];

/// A reference operation.
type Op = fn(&U256, &U256) -> U256;

const P: U256 = [
    0xffff_ffff_ffff_ffed,
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
];

/// `words` (little-endian, any length) mod p.
fn modp(words: &[u64]) -> U256 {
    let mut w: Vec<u64> = words.to_vec();
    // 2^256 = 38 mod p: fold the words above the fourth until none is left.
    while w.len() > 4 {
        let high: Vec<u64> = w.split_off(4);
        let mut carry = 0u128;
        for (i, word) in w.iter_mut().enumerate() {
            let add = u128::from(*high.get(i).unwrap_or(&0)) * 38;
            let s = u128::from(*word) + add + carry;
            *word = s as u64;
            carry = s >> 64;
        }
        for &h in high.iter().skip(4) {
            // More than 8 words never happens here; kept exact anyway.
            carry += u128::from(h) * 38;
        }
        while carry > 0 {
            w.push(carry as u64);
            carry >>= 64;
        }
    }
    w.resize(4, 0);
    let mut v: U256 = w.try_into().expect("four words");
    // 2^255 = 19 mod p, then at most one subtraction of p.
    for _ in 0..2 {
        let top = v[3] >> 63;
        v[3] &= (1 << 63) - 1;
        let mut carry = u128::from(top) * 19;
        for word in v.iter_mut() {
            let s = u128::from(*word) + carry;
            *word = s as u64;
            carry = s >> 64;
        }
    }
    if ge(&v, &P) { sub_words(&v, &P) } else { v }
}

fn ge(a: &U256, b: &U256) -> bool {
    for i in (0..4).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

fn sub_words(a: &U256, b: &U256) -> U256 {
    let mut out = [0u64; 4];
    let mut borrow = 0i128;
    for i in 0..4 {
        let d = i128::from(a[i]) - i128::from(b[i]) - borrow;
        out[i] = d as u64;
        borrow = i128::from(d < 0);
    }
    out
}

fn mul_ref(a: &U256, b: &U256) -> U256 {
    let mut prod = [0u64; 8];
    for i in 0..4 {
        let mut carry = 0u128;
        for j in 0..4 {
            let s = u128::from(prod[i + j]) + u128::from(a[i]) * u128::from(b[j]) + carry;
            prod[i + j] = s as u64;
            carry = s >> 64;
        }
        prod[i + 4] = carry as u64;
    }
    modp(&prod)
}

fn add_ref(a: &U256, b: &U256) -> U256 {
    let mut out = [0u64; 5];
    let mut carry = 0u128;
    for i in 0..4 {
        let s = u128::from(a[i]) + u128::from(b[i]) + carry;
        out[i] = s as u64;
        carry = s >> 64;
    }
    out[4] = carry as u64;
    modp(&out)
}

fn sub_ref(a: &U256, b: &U256) -> U256 {
    // a - b = a + (p - (b mod p)) mod p.
    add_ref(&modp(a), &sub_words(&P, &modp(b)))
}

fn bytes(v: &U256) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in v.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    out
}

fn words(b: &[u8; 32]) -> U256 {
    core::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()))
}

/// Values below 2^255 at the field's edges, canonical or not.
fn boundary() -> Vec<U256> {
    let p_plus = |k: u64| {
        let mut v = P;
        v[0] += k;
        v
    };
    let mut out = vec![
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [2, 0, 0, 0],
        [18, 0, 0, 0],
        [19, 0, 0, 0],
        [20, 0, 0, 0],
        sub_words(&P, &[2, 0, 0, 0]),
        sub_words(&P, &[1, 0, 0, 0]),
        P,
        p_plus(1),
        p_plus(17),
        p_plus(18), // 2^255 - 1
        [0, 0, 0, 1 << 62],
        [u64::MAX, u64::MAX, u64::MAX, (1 << 62) - 1],
        [(1 << 51) - 1, 0, 0, 0],
        [1 << 51, 0, 0, 0],
        [(1 << 26) - 1, 0, 0, 0],
        [1 << 26, 0, 0, 0],
    ];
    // Every limb of either radix all ones: the carries' worst path.
    out.push([0x5555_5555_5555_5555; 4]);
    out.push([
        0xaaaa_aaaa_aaaa_aaaa,
        0xaaaa_aaaa_aaaa_aaaa,
        0xaaaa_aaaa_aaaa_aaaa,
        0x2aaa_aaaa_aaaa_aaaa,
    ]);
    out
}

/// Every operation of `F` on every pair of boundary values, lane by lane.
fn check_boundary<F: FieldLanes>() {
    let values = boundary();
    let pairs: Vec<(U256, U256)> = values
        .iter()
        .flat_map(|a| values.iter().map(move |b| (*a, *b)))
        .collect();
    for chunk in pairs.chunks(F::LANES) {
        let mut a_bytes = vec![[0u8; 32]; F::LANES];
        let mut b_bytes = vec![[0u8; 32]; F::LANES];
        for (i, (a, b)) in chunk.iter().enumerate() {
            a_bytes[i] = bytes(a);
            b_bytes[i] = bytes(b);
        }
        let (a, b) = (F::from_bytes(&a_bytes), F::from_bytes(&b_bytes));
        let ops: [(&str, F, Op); 8] = [
            ("add", a.add(b), add_ref),
            ("add_lazy", a.add_lazy(b), add_ref),
            ("mul of a lazy sum", a.add_lazy(b).mul(a), |x, y| {
                mul_ref(&add_ref(x, y), x)
            }),
            ("square of a lazy sum", a.add_lazy(b).square(), |x, y| {
                let s = add_ref(x, y);
                mul_ref(&s, &s)
            }),
            ("sub", a.sub(b), sub_ref),
            ("mul", a.mul(b), mul_ref),
            ("square", a.square(), |x, _| mul_ref(x, x)),
            ("identity", a, |x, _| modp(x)),
        ];
        for (name, got, reference) in ops {
            let mut out = vec![[0u8; 32]; F::LANES];
            got.to_bytes(&mut out);
            for (i, (x, y)) in chunk.iter().enumerate() {
                assert_eq!(
                    words(&out[i]),
                    reference(x, y),
                    "{name} of {x:x?} and {y:x?}"
                );
            }
        }
        let eq = a.eq(b);
        let negative = a.is_negative();
        for (i, (x, y)) in chunk.iter().enumerate() {
            assert_eq!(eq >> i & 1 == 1, modp(x) == modp(y), "eq {x:x?} {y:x?}");
            assert_eq!(
                negative >> i & 1 == 1,
                modp(x)[0] & 1 == 1,
                "negative {x:x?}"
            );
        }
    }
}

/// Elements whose limbs are the largest an operation hands on, put through every
/// operation, twice (the outputs again as inputs).
fn check_largest<F: FieldLanes>(largest: F, value: U256) {
    let check = |name: &str, got: F, want: U256| {
        let mut out = vec![[0u8; 32]; F::LANES];
        got.to_bytes(&mut out);
        for o in &out {
            assert_eq!(words(o), want, "{name}");
        }
    };
    let x = largest;
    check("identity", x, modp(&value));
    check("add", x.add(x), add_ref(&value, &value));
    check("sub", x.sub(x), [0; 4]);
    check("sub from zero", F::zero().sub(x), sub_ref(&[0; 4], &value));
    check("mul", x.mul(x), mul_ref(&value, &value));
    check("square", x.square(), mul_ref(&value, &value));
    let sq = mul_ref(&value, &value);
    check("square of a square", x.square().square(), mul_ref(&sq, &sq));
    check("mul of sums", x.add(x).mul(x.sub(F::one())), {
        let s = add_ref(&value, &value);
        mul_ref(&s, &sub_ref(&value, &[1, 0, 0, 0]))
    });
    // Lazy sums of the largest limbs, into every operation that may take them.
    let s = x.add_lazy(x);
    let sum = add_ref(&value, &value);
    check("lazy sum", s, sum);
    check("lazy sum times lazy sum", s.mul(s), mul_ref(&sum, &sum));
    check("lazy sum squared", s.square(), mul_ref(&sum, &sum));
    check("lazy sum minus", s.sub(x), modp(&value));
    check("minus a lazy sum", x.sub(s), sub_ref(&value, &sum));
    check("lazy sum plus", s.add(x), add_ref(&sum, &value));
    check(
        "lazy sum's product, twice",
        s.mul(x).add_lazy(x).mul(s),
        mul_ref(&add_ref(&mul_ref(&sum, &value), &value), &sum),
    );
    assert_eq!(x.eq(x), (1u32 << F::LANES) - 1, "eq");
}

fn limbs_value(limbs: &[u64], offsets: impl Fn(usize) -> u32) -> U256 {
    let mut acc = [0u64; 5];
    for (k, &l) in limbs.iter().enumerate() {
        let (word, bit) = ((offsets(k) / 64) as usize, offsets(k) % 64);
        let wide = u128::from(l) << bit;
        let mut carry = 0u128;
        for (i, part) in [wide as u64, (wide >> 64) as u64].into_iter().enumerate() {
            let s = u128::from(acc[word + i]) + u128::from(part) + carry;
            acc[word + i] = s as u64;
            carry = s >> 64;
        }
        let mut at = word + 2;
        while carry > 0 {
            let s = u128::from(acc[at]) + carry;
            acc[at] = s as u64;
            carry = s >> 64;
            at += 1;
        }
    }
    modp(&acc)
}

fn runs(kernel: Kernel) -> bool {
    let runs = kernel.runs_here();
    if !runs {
        eprintln!("skipped: this CPU does not run {}", kernel.name());
    }
    runs
}

#[test]
fn ifma_field_at_the_boundaries() {
    if runs(Kernel::Ifma8) {
        check_boundary::<F8>();
        check_boundary::<Pair<F8>>();
    }
}

#[test]
fn avx2_field_at_the_boundaries() {
    if runs(Kernel::Avx2x4) {
        check_boundary::<F4>();
        check_boundary::<Pair<F4>>();
    }
}

#[test]
fn ifma_field_with_the_largest_limbs() {
    if runs(Kernel::Ifma8) {
        // The invariant: limbs < 2^52.
        let limbs = [(1u64 << 52) - 1; 5];
        check_largest(F8::raw(limbs), limbs_value(&limbs, |k| 51 * k as u32));
    }
}

#[test]
fn avx2_field_with_the_largest_limbs() {
    if runs(Kernel::Avx2x4) {
        // The invariant: limbs < 2^26 + 2^18 (even) and < 2^25 + 2^18 (odd).
        let limbs: [u64; 10] =
            core::array::from_fn(|k| if k % 2 == 0 { 1 << 26 } else { 1 << 25 } + (1 << 18) - 1);
        let offset = |k: usize| (25 * k + k.div_ceil(2)) as u32;
        check_largest(F4::raw(limbs), limbs_value(&limbs, offset));
    }
}

#[test]
fn the_reference_is_right() {
    // (p - 1)² = 1, 2^255 = 19, p = 0: a wrong reference would pass wrong kernels.
    let minus_one = sub_words(&P, &[1, 0, 0, 0]);
    assert_eq!(mul_ref(&minus_one, &minus_one), [1, 0, 0, 0]);
    assert_eq!(modp(&[0, 0, 0, 1 << 63]), [19, 0, 0, 0]);
    assert_eq!(modp(&P), [0; 4]);
    assert_eq!(sub_ref(&[0; 4], &[1, 0, 0, 0]), minus_one);
    assert_eq!(limbs_value(&[1, 1], |k| 255 * k as u32), [20, 0, 0, 0]);
}

#[test]
fn a_kernel_is_chosen_by_name_and_a_bad_name_is_an_error_not_a_print() {
    assert_eq!(Kernel::named("portable"), Ok(Kernel::Portable));
    assert!(matches!(
        Kernel::named("avx9000"),
        Err(KernelChoiceError::Unknown(name)) if name == "avx9000"
    ));
    for k in Kernel::ALL {
        match Kernel::named(k.name()) {
            Ok(found) => assert_eq!(found, k),
            Err(e) => assert_eq!(e, KernelChoiceError::NotOnThisCpu(k)),
        }
    }
}
