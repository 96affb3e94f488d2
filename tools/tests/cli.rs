//! The `loopix` binary as a user runs it.

use std::process::Command;

fn loopix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(args)
        .output()
        .expect("loopix runs")
}

#[test]
fn speed_json_has_the_documented_fields() {
    let out = loopix(&[
        "speed",
        "--json",
        "--rounds",
        "1",
        "--round-ms",
        "1",
        "--payload-bytes",
        "64",
        "--hops",
        "2",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in ["floor_ns", "process_ns", "build_ns"] {
        assert!(
            v[field].as_f64().is_some_and(|ns| ns > 0.0),
            "{field}: {}",
            v[field]
        );
    }
    assert_eq!(v["hops"], 2);
    assert_eq!(v["packet_bytes"], 304 + 16 + 64);
    let prims = v["primitives"].as_object().expect("primitives map");
    assert!(prims.contains_key("ristretto_scalar_mul") && prims.contains_key("lioness_decrypt"));
}

#[test]
fn speed_table_names_floor_and_process() {
    let out = loopix(&[
        "speed",
        "--rounds",
        "1",
        "--round-ms",
        "1",
        "--payload-bytes",
        "64",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("per-hop crypto floor") && text.contains("per-hop process (real)"));
}

#[test]
fn bad_options_are_reported_not_panicked() {
    let out = loopix(&["speed", "--payload-bytes", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("payload size 5"));
    let out = loopix(&["speed", "--hops", "9"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}
