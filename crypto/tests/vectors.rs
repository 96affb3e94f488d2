//! Known-answer vectors: packets built from fixed seeds, and what every hop makes of them.
//! Any change to the byte layout, the key derivation or the way the RNG is consumed
//! changes these bytes. Regenerate deliberately with
//! `LOOPIX_WRITE_VECTORS=1 cargo test -p loopix-crypto --test vectors`, and say why in
//! the commit.

mod common;

use std::fmt::Write as _;

use common::{network, rng};
use loopix_crypto::{Command, KeyPhase, NodeId, Params, build};
use sha2::{Digest, Sha256};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/sphinx-v1.txt");

/// One vector per path shape: seed, hop count, last command, middle deliver or not. The
/// last one also gives its node hops odd key phases (every other one).
const CASES: [(u64, usize, Command, bool); 5] = [
    (1, 1, Command::Final, false),
    (2, 3, Command::LoopReturn, false),
    (3, 6, Command::Final, true),
    (4, 8, Command::Drop, false),
    (5, 5, Command::Final, false),
];
const PHASED: u64 = 5;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render() -> String {
    let params = Params::default();
    let mut out = String::from("# loopix Sphinx v1 known-answer vectors; see crypto/SPEC.md\n");
    for (seed, hops, last, deliver) in CASES {
        let (procs, mut path) = network(seed, hops, last);
        if deliver {
            path[hops - 2].command = Command::Deliver {
                client: NodeId(0xc11e47),
                delay_us: 77,
            };
        }
        if seed == PHASED {
            for (i, hop) in path[..hops - 1].iter_mut().enumerate() {
                hop.phase = KeyPhase::of_epoch(i as u64 + 1);
            }
        }
        let payload: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(seed as u8)).collect();
        let mut packet = build(&params, &path, &payload, &mut rng(seed + 1000)).unwrap();
        writeln!(out, "\n[vector seed={seed} hops={hops}]").unwrap();
        for (i, h) in path.iter().enumerate() {
            writeln!(out, "hop{i}.public_key {}", hex(&h.key.to_bytes())).unwrap();
            let command = match path.get(i + 1) {
                Some(next) => h.command.encode_routed(next.phase),
                None => h.command.encode(),
            };
            writeln!(out, "hop{i}.command {}", hex(&command)).unwrap();
        }
        writeln!(out, "packet {}", hex(&packet)).unwrap();
        for (i, proc) in procs.iter().enumerate() {
            let done = proc.process(&mut packet).unwrap();
            writeln!(out, "hop{i}.tag {}", hex(&done.tag.0)).unwrap();
            writeln!(
                out,
                "hop{i}.output_sha256 {}",
                hex(&Sha256::digest(&packet))
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn packets_and_hop_outputs_match_the_checked_in_vectors() {
    let now = render();
    if std::env::var_os("LOOPIX_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &now).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("vectors file is checked in");
    for (n, (a, b)) in stored.lines().zip(now.lines()).enumerate() {
        assert_eq!(a, b, "line {} of {PATH} differs", n + 1);
    }
    assert_eq!(stored.lines().count(), now.lines().count());
}
