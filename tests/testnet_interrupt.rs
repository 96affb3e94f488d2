//! End-to-end: Ctrl-C on `loopix testnet` stops every node it started; none is left over.
//! A node that dies while the testnet runs stops the run, which fails saying which.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, loopix};

/// Pids of processes, other than `except`, whose command line mentions `needle`.
fn processes_mentioning(needle: &str, except: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Kills the testnet if the test fails half-way, so a failure leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A 60-second testnet in `dir`, once it says its network is up, and the rest of its stderr.
fn testnet_up(dir: &Dir) -> (Guard, impl Iterator<Item = String>) {
    let child = loopix()
        .args(["testnet", "--duration-s", "60", "--dir"])
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut testnet = Guard(child);
    let stderr = testnet.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    assert!(lines.any(|l| l.contains("network up")), "testnet came up");
    (testnet, lines)
}

#[test]
fn ctrl_c_leaves_no_node_behind() {
    let dir = Dir::new("interrupt");
    let needle = format!("{}/node-", dir.0.to_str().unwrap());
    // Its stderr stays open (kept) while it runs.
    let (mut testnet, _lines) = testnet_up(&dir);
    let pid = testnet.0.id();
    let running = processes_mentioning(&needle, pid);
    if running.len() != 8 {
        // Say which node is missing and what its log says, so a failure can be told apart
        // from a slow probe.
        let mut logs = String::new();
        for entry in std::fs::read_dir(&dir.0).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("node-") && name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                logs += &format!("\n{name}: {tail}");
            }
        }
        let cmdlines: Vec<String> = running
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
            .collect();
        panic!(
            "one process per node: {} running {cmdlines:?}; node logs:{logs}",
            running.len()
        );
    }
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while testnet.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "testnet did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        processes_mentioning(&needle, pid).is_empty(),
        "orphaned nodes left behind"
    );
}

#[test]
fn a_node_that_dies_fails_the_testnet_naming_it() {
    let dir = Dir::new("node-dies");
    let (mut testnet, lines) = testnet_up(&dir);
    let pid = testnet.0.id();
    // The provider dies as a crash would end it: no drain, no exit code of its own choice.
    let config = format!("{}/node-1000.toml", dir.0.to_str().unwrap());
    let provider = processes_mentioning(&config, pid);
    assert_eq!(provider.len(), 1, "one provider process: {provider:?}");
    // SAFETY: plain kill(2) of a process the testnet under test started.
    unsafe { libc::kill(provider[0] as i32, libc::SIGKILL) };
    let started = Instant::now();
    let rest: Vec<String> = lines.collect();
    let status = testnet.0.wait().unwrap();
    assert!(!status.success(), "{rest:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the run stopped at the death, not at its end"
    );
    let said = rest.join("\n");
    assert!(
        said.contains("node 1000 exited while the network ran"),
        "{said}"
    );
}
