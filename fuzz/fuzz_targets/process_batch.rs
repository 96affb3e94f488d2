//! The batched packet path on attacker-chosen batches, through each lane kernel this CPU
//! runs (the first byte picks one): up to 32 packets, each the fuzzer's bytes or a valid
//! packet with them laid over a window; the batch must give exactly what one call per
//! packet gives (dalek), result for result and byte for byte, replays asked in order.
#![no_main]

mod input;

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loopix_crypto::lanes::Kernel;
use loopix_crypto::{
    Command, Hop, KeyPhase, NodeId, Params, ProcessError, Processor, SecretKey, build,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Fixture {
    /// The same key, one processor per kernel this CPU runs (the portable one last).
    processors: Vec<Processor>,
    /// Valid packets: relayed (to even and odd phases) and final.
    valid: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(43);
        let params = Params::new(64).expect("valid size");
        let a = SecretKey::generate(&mut rng);
        let b = SecretKey::generate(&mut rng);
        let relay = Command::Relay {
            next: NodeId(2),
            delay_us: 9,
        };
        let mut odd = Hop::new(b.public_key(), Command::Final);
        odd.phase = KeyPhase::Odd;
        let paths = [
            vec![
                Hop::new(a.public_key(), relay),
                Hop::new(b.public_key(), Command::Final),
            ],
            vec![Hop::new(a.public_key(), relay), odd],
            vec![Hop::new(a.public_key(), Command::Final)],
        ];
        let valid = (0..12)
            .map(|i| build(&params, &paths[i % 3], b"fuzz", &mut rng).expect("valid path"))
            .collect();
        let processors = Kernel::available()
            .map(|k| Processor::new(a.clone(), params).with_kernel(k))
            .collect();
        Fixture { processors, valid }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    // The first byte: how many packets and which kernel; then each packet's share of the
    // rest.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(count % 32) + 1;
    let processor = &fx.processors[usize::from(count / 32) % fx.processors.len()];
    let share = rest.len() / n;
    let mut batch: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let part = &rest[i * share..(i + 1) * share];
            input::from(part, &fx.valid[i % fx.valid.len()])
                .unwrap_or_else(|| fx.valid[i % fx.valid.len()].clone())
        })
        .collect();
    let mut singles = batch.clone();
    let mut seen = HashSet::new();
    let expected: Vec<_> = singles
        .iter_mut()
        .map(|p| processor.process_unless_replayed(p, |t| !seen.insert(*t)))
        .collect();
    let mut seen = HashSet::new();
    let mut results = vec![Err(ProcessError::MacMismatch); n];
    processor.process_batch_unless_replayed(&mut batch, &mut results, |t| !seen.insert(*t));
    assert_eq!(results, expected, "the batch differs from single calls");
    assert_eq!(
        batch, singles,
        "the batch's bytes differ from single calls'"
    );
});
