//! `build_batch` on fuzzer-chosen batches, through each lane kernel this CPU runs: up to
//! 40 jobs whose path lengths, key phases and payload lengths come from the input, over
//! the keys of a fixed network; the batch must write exactly the packets and MACs one
//! `build_into_traced` per job writes from the same seed, and leave the RNG where they do.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loopix_crypto::lanes::Kernel;
use loopix_crypto::params::MAC_LEN;
use loopix_crypto::{
    BuildJob, Command, Hop, KeyPhase, MAX_HOPS, NodeId, Params, SecretKey, build_batch,
    build_into_traced,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Eight node keys and the packets' parameters.
fn keys() -> &'static (Params, Vec<SecretKey>) {
    static KEYS: OnceLock<(Params, Vec<SecretKey>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let keys = (0..8).map(|_| SecretKey::generate(&mut rng)).collect();
        (Params::new(48).expect("valid size"), keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let (params, keys) = keys();
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let kernels: Vec<Kernel> = Kernel::available().collect();
    let kernel = kernels[usize::from(head) % kernels.len()];
    // Three bytes a job: hops and first key, phases, payload length.
    let paths: Vec<Vec<Hop>> = rest
        .chunks_exact(3)
        .take(40)
        .map(|c| {
            let hops = 1 + usize::from(c[0]) % MAX_HOPS;
            (0..hops)
                .map(|i| {
                    let key = keys[(usize::from(c[0] >> 3) + i) % keys.len()].public_key();
                    let command = if i + 1 == hops {
                        Command::Final
                    } else {
                        Command::Relay {
                            next: NodeId(i as u64),
                            delay_us: 0,
                        }
                    };
                    let mut hop = Hop::new(key, command);
                    if c[1] & (1 << i) != 0 {
                        hop.phase = KeyPhase::Odd;
                    }
                    hop
                })
                .collect()
        })
        .collect();
    let payloads: Vec<Vec<u8>> = rest
        .chunks_exact(3)
        .take(40)
        .map(|c| vec![c[2]; usize::from(c[2]) % (params.payload_bytes() + 1)])
        .collect();
    let jobs: Vec<BuildJob<'_>> = paths
        .iter()
        .zip(&payloads)
        .map(|(p, d)| BuildJob {
            path: p,
            payload: d,
        })
        .collect();
    let seed = u64::from(head) * 0x9e37_79b9;
    let len = params.packet_len();

    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut expected = vec![vec![0u8; len]; jobs.len()];
    let expected_macs: Vec<[u8; MAC_LEN]> = jobs
        .iter()
        .zip(&mut expected)
        .map(|(j, out)| {
            build_into_traced(params, j.path, j.payload, &mut rng, out).expect("valid job")
        })
        .collect();
    let expected_next = rng.next_u64();

    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut got = vec![vec![0u8; len]; jobs.len()];
    let mut outs: Vec<&mut [u8]> = got.iter_mut().map(|b| &mut b[..]).collect();
    let mut macs = vec![[0u8; MAC_LEN]; jobs.len()];
    build_batch(params, kernel, &jobs, &mut rng, &mut outs, &mut macs).expect("valid jobs");
    assert!(got == expected, "{}: packets differ", kernel.name());
    assert_eq!(macs, expected_macs, "{}: MACs differ", kernel.name());
    assert_eq!(rng.next_u64(), expected_next, "{}: RNG state", kernel.name());
});
