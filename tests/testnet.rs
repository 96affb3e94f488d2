//! End-to-end: `loopix testnet` starts real `loopix node` processes on 127.0.0.1 and real
//! clients, and every real message arrives exactly once.
//!
//! Built and run as an integration test of the `loopix-tools` package (which owns the
//! binary), from this directory: see `tools/Cargo.toml`.

use std::process::Command;

#[test]
fn a_twenty_second_testnet_delivers_every_message_exactly_once() {
    let dir = std::env::temp_dir().join(format!("loopix-e2e-testnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--duration-s",
            "20",
            "--drain-s",
            "20",
            "--json",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("loopix runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary JSON: {e}\nstderr:\n{stderr}"));
    assert!(out.status.success(), "{v:#}\n{stderr}");
    let sent = v["sent_real"].as_u64().unwrap();
    assert!(
        sent >= 40,
        "10 clients for 20 s at one message per ~2 s: {sent}"
    );
    assert_eq!(v["delivered_real"].as_u64(), Some(sent));
    assert_eq!(
        (v["in_flight_real"].as_u64(), v["unsent_real"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (v["lost_real"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Mix loops came back, and their round trip beyond the requested delays (routing,
    // processing, loopback links) is positive and far below the mixing delays.
    let overhead = v["loop_overhead_ms"].as_f64().expect("mix loops returned");
    assert!(
        overhead > 0.0 && overhead < 50.0,
        "loop overhead {overhead} ms"
    );
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8, "3 layers x 2 mixes + 2 providers");
    for n in nodes {
        assert!(n["packets_in"].as_u64().unwrap() > 0, "{n}");
        assert_eq!(n["exit_ok"], true, "node exited 0 on SIGTERM: {n}");
        assert!(
            n["drops"].as_object().unwrap().is_empty(),
            "honest traffic dropped: {n}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
