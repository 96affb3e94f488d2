//! Criterion benches for the engine's data structures at production sizes: the timing
//! wheel with 1 M packets pending and a replay filter with 8 M tags.
//!
//! Run: `cargo bench -p loopix-benches --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loopix_core::pipeline::replay::ReplayFilter;
use loopix_core::pipeline::timing_wheel::{TimingWheel, WheelConfig};
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

/// Tags a filter is rated for, and how many it holds while timed: a 20-minute epoch at
/// ~12,000 packets/s, half way through (76 MB of table, far beyond the caches, as on a
/// node).
const RATED: usize = 16_000_000;
const HELD: usize = 8_000_000;

/// Inserting fresh tags into a replay filter that holds 8 M; refills (untimed) whenever it
/// nears its rated capacity, so every timed insert sees between 8 M and 16 M.
fn replay(c: &mut Criterion) {
    let mut filter = ReplayFilter::new(RATED, [7; 16]);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut tag = move || {
        let mut t = [0u8; 16];
        rng.fill_bytes(&mut t);
        ReplayTag(t)
    };
    let refill = |filter: &mut ReplayFilter, tag: &mut dyn FnMut() -> ReplayTag| {
        filter.reset([7; 16]);
        for _ in 0..HELD {
            filter.insert(&tag());
        }
    };
    refill(&mut filter, &mut tag);
    c.bench_function("replay/insert_fresh_at_8M_tags", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if filter.len() + 1 >= filter.rated_capacity() {
                    refill(&mut filter, &mut tag);
                }
                let t = tag();
                let start = Instant::now();
                black_box(filter.insert(&t));
                spent += start.elapsed();
            }
            spent
        })
    });
    c.bench_function("replay/detect_replay_at_8M_tags", |b| {
        let known = tag();
        filter.insert(&known);
        b.iter(|| black_box(filter.insert(black_box(&known))))
    });
}

criterion_group!(benches, wheel, replay);
criterion_main!(benches);
