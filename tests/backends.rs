//! End-to-end: a node where io_uring is refused, as in a container under its runtime's
//! default seccomp profile (Docker's and containerd's answer `io_uring_setup` with EPERM).
//! The test installs such a filter (rust-vmm's seccompiler) in the `loopix` process before
//! it execs; every process it starts inherits it.
//!
//! - `backend = "auto"` (the default) falls back to the portable backend, says why in the
//!   node's log, and a whole testnet delivers every message exactly once on it;
//! - `backend = "io_uring"` exits non-zero at once, naming the reason.

mod common;

use std::process::{Command, Stdio};

/// `loopix` with `args`, confined as a container's default seccomp profile would, its
/// backend left to its configuration.
fn confined(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopix"));
    cmd.args(args)
        .env_remove("LOOPIX_BACKEND")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::refuse_io_uring(&mut cmd);
    cmd
}

#[test]
fn where_io_uring_is_refused_a_network_runs_on_the_portable_backend_and_io_uring_alone_fails() {
    let dir = std::env::temp_dir().join(format!("loopix-e2e-backends-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_str().unwrap();
    let out = confined(&[
        "testnet",
        "--duration-s",
        "10",
        "--drain-s",
        "20",
        "--json",
        "--dir",
        dir_s,
    ])
    .output()
    .expect("loopix runs");
    let (summary, stderr) = common::delivered_once(&out, 3);
    let nodes = summary["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 8, "{summary:#}");
    for n in nodes {
        assert_eq!(n["backend"], "portable", "{n:#}\n{stderr}");
    }
    // Each node said why, once.
    let log = std::fs::read_to_string(dir.join("node-1.log")).expect("node 1's log");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("io_uring is not available"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].contains("EPERM") && said[0].contains("seccomp"),
        "{log}"
    );

    // The same node, told to use io_uring only: it refuses to start, saying why.
    let config = dir.join("node-1.toml");
    let started = std::time::Instant::now();
    let out = confined(&[
        "node",
        "--config",
        config.to_str().unwrap(),
        "--backend",
        "io_uring",
    ])
    .output()
    .expect("loopix runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("backend = \"io_uring\"") && stderr.contains("EPERM"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it fails at start, not after a wait"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
