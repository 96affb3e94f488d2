//! The operator guide's walk-through, run as written: every `sh` block of its
//! "Walk-through" section, in order, in one bash, with a folder and ports of the test's own
//! and this build's `loopix` first on the PATH. A guide whose commands stopped working fails
//! here, not in a new operator's hands.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

/// The `sh` blocks of the section headed `## Walk-through...`, in order.
fn walkthrough_blocks(guide: &str) -> Vec<String> {
    let start = guide
        .find("\n## Walk-through")
        .expect("the guide has a walk-through");
    let rest = &guide[start + 1..];
    let section = match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    };
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed block");
    blocks
}

/// A base port such that base+1..=base+3, base+100 (UDP) and base+101..=base+103,
/// base+200 (TCP) are all free now.
fn free_base() -> u16 {
    for _ in 0..200 {
        let mut draw = [0u8; 2];
        getrandom::fill(&mut draw).unwrap();
        let base = 20_000 + u16::from_le_bytes(draw) % 40_000;
        let udp = [1, 2, 3, 100]
            .iter()
            .all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        let tcp = [101, 102, 103, 200]
            .iter()
            .all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if udp && tcp {
            return base;
        }
    }
    panic!("no free ports");
}

/// Kills what the walk-through started if it did not get to its last step.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let pids = std::fs::read_dir(self.0)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|e| {
                let p = e.path();
                [p.join("pid"), p.with_extension("pid")]
            })
            .chain([self.0.join("authority.pid")]);
        for pid in pids {
            if let Some(pid) = std::fs::read_to_string(pid)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill(2) of a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn the_operator_guides_walkthrough_runs_as_written() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md"),
    )
    .unwrap();
    let blocks = walkthrough_blocks(&guide);
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    let dir = common::Dir::new("walkthrough");
    let walk = dir.path("walk");
    let _cleanup = Cleanup(&walk);
    let auth = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let bin = Path::new(env!("CARGO_BIN_EXE_loopix")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", blocks.concat());
    // Output to files, not pipes: a step that fails leaves the processes started before it
    // running (until `Cleanup`), and they would hold a pipe open, and the test, forever.
    let (out_path, err_path) = (dir.path("walk.stdout"), dir.path("walk.stderr"));
    let status = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env("WALK", &walk)
        .env("AUTH", &auth)
        .env("BASE", free_base().to_string())
        .env_remove("LOOPIX_LOG")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .expect("bash runs");
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let logs: String = ["authority.log", "node-1/log", "node-100/log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(walk.join(f)).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        status.success(),
        "the walk-through failed\n{stdout}\n{stderr}\n{logs}"
    );
    // Each node's check said where it stood before any node ran.
    assert_eq!(
        stdout
            .matches("ok: this host and this node's registration")
            .count(),
        4,
        "{stdout}"
    );
    // Bob got Alice's message, once.
    let bob = std::fs::read_to_string(walk.join("bob.json")).unwrap();
    let got: Vec<serde_json::Value> = bob
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 1, "{bob}");
    assert_eq!(got[0]["message"], "hello from the walk-through", "{bob}");
    assert!(
        stderr.contains("acknowledged"),
        "Alice saw her message acknowledged: {stderr}"
    );
}
