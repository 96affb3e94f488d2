//! Packet processing on attacker-chosen bytes: any length, any content, never a panic.
//! Half the inputs are spliced onto a valid packet so the fuzzer reaches past the
//! group-element and MAC checks.
#![no_main]

mod input;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loopix_crypto::{Command, Hop, NodeId, Params, Processor, SecretKey, build};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Fixture {
    processor: Processor,
    valid: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let params = Params::new(64).expect("valid size");
        let a = SecretKey::generate(&mut rng);
        let b = SecretKey::generate(&mut rng);
        let path = [
            Hop::new(
                a.public_key(),
                Command::Relay {
                    next: NodeId(2),
                    delay_us: 9,
                },
            ),
            Hop::new(b.public_key(), Command::Final),
        ];
        let valid = build(&params, &path, b"fuzz", &mut rng).expect("valid path");
        Fixture {
            processor: Processor::new(a, params),
            valid,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some(mut packet) = input::from(data, &fx.valid) else {
        return;
    };
    let _ = fx.processor.process(&mut packet);
});
