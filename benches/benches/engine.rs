//! Criterion benches for the engine's data structures at production sizes: the timing
//! wheel with 1 M packets pending and the replay set with 1 M tags.
//!
//! Run: `cargo bench -p loopix-benches --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loopix_core::replay::ReplaySet;
use loopix_core::timing_wheel::{TimingWheel, WheelConfig};
use loopix_crypto::ReplayTag;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

const PENDING: u32 = 1_000_000;
/// Delays spread over 60 s, as Exp(µ) delays of a busy node would be.
const SPREAD_US: u64 = 60_000_000;

/// Each measured iteration fires one entry and re-inserts it with a fresh delay, so the
/// wheel stays at 1 M pending; slot advances are paid for by the entries they fire.
fn wheel(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut w = TimingWheel::new(WheelConfig::default(), PENDING as usize).expect("config");
    for i in 0..PENDING {
        w.insert(i, rng.next_u64() % SPREAD_US, 0)
            .expect("within horizon");
    }
    let mut now = 0u64;
    let mut fired = Vec::with_capacity(4096);
    c.bench_function("wheel/fire_and_reinsert_at_1M_pending", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let start = Instant::now();
                now += 100;
                w.poll(now, |i| fired.push(i));
                for &i in &fired {
                    let _ = w.insert(i, now + 1 + rng.next_u64() % SPREAD_US, now);
                }
                spent += start.elapsed();
                done += fired.len() as u64;
                fired.clear();
            }
            spent
        })
    });
    assert_eq!(w.len(), PENDING as usize);
}

/// Inserting fresh tags into a set that holds 1 M; refills (untimed) whenever the set
/// would fill up, so every timed insert sees between 1 M and its capacity.
fn replay(c: &mut Criterion) {
    let mut set = ReplaySet::new(1 << 21);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut tag = move || {
        let mut t = [0u8; 16];
        rng.fill_bytes(&mut t);
        ReplayTag(t)
    };
    let refill = |set: &mut ReplaySet, tag: &mut dyn FnMut() -> ReplayTag| {
        set.rotate(0);
        for _ in 0..1_000_000 {
            set.insert(tag());
        }
    };
    refill(&mut set, &mut tag);
    c.bench_function("replay/insert_fresh_at_1M_tags", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if set.len() + 1 >= set.capacity() {
                    refill(&mut set, &mut tag);
                }
                let t = tag();
                let start = Instant::now();
                black_box(set.insert(t));
                spent += start.elapsed();
            }
            spent
        })
    });
    c.bench_function("replay/detect_replay_at_1M_tags", |b| {
        let known = tag();
        set.insert(known);
        b.iter(|| black_box(set.insert(black_box(known))))
    });
}

criterion_group!(benches, wheel, replay);
criterion_main!(benches);
