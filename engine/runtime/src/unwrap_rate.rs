//! How many packets a shard can unwrap a second on this CPU, with the kernel this process
//! chose: measured at start, because it differs between machines (a scalar backend, AVX2
//! lanes, IFMA lanes differ by 2x and more) and it sizes the replay filters. A filter sized
//! for fewer packets than the shard can unwrap fills before its key is retired, and every
//! fresh packet after that is dropped (`replay_full`).

use std::time::{Duration, Instant};

use loopix_crypto::{Command, Hop, NodeId, Params, ProcessError, Processor, SecretKey, build};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// How long the measurement runs.
const MEASURE: Duration = Duration::from_millis(150);
/// Packets a batch: what a shard's receive batches hold under load.
const BATCH: usize = 16;

/// Packets a second one core unwraps through the batched packet path (the replay check,
/// the wheel and the sockets not included: the filter must hold every tag the shard
/// could ever take); 0 if it could not be measured.
pub fn measure(params: &Params) -> u32 {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (key, next) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let path = [
        Hop::new(
            key.public_key(),
            Command::Relay {
                next: NodeId(2),
                delay_us: 0,
            },
        ),
        Hop::new(next.public_key(), Command::Final),
    ];
    let Ok(template) = build(params, &path, b"rate", &mut rng) else {
        return 0;
    };
    let processor = Processor::new(key, *params);
    let mut batch = vec![template.clone(); BATCH];
    let mut results = vec![Err(ProcessError::MacMismatch); BATCH];
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < MEASURE {
        for p in &mut batch {
            p.copy_from_slice(&template);
        }
        done += processor.process_batch(&mut batch, &mut results) as u64;
        if results.iter().any(Result::is_err) {
            return 0; // not the packet path's work: no figure
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    rate.min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_unwraps_some_packets_and_no_more_than_memory_could_copy() {
        let rate = measure(&Params::default());
        // Far from any machine's figure either way: a broken measurement gives 0 or a
        // rate no crypto could reach.
        assert!(rate > 100 && rate < 10_000_000, "{rate} packets/s");
    }
}
