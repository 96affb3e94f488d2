//! The container image's pieces, without a container engine (none runs on the machines
//! these tests run on): its entrypoint, and the compose file's network run as plain
//! processes. `container/prepare.sh` writes the network's folder on a loopback /24 instead
//! of the compose network's, and each `run/<name>.sh` it writes (what each compose service
//! runs) is started through `container/entrypoint.sh`, confined as the container runtime's
//! default seccomp profile confines the image: io_uring is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn container_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../container")
        .join(name)
}

/// The entrypoint, running this build's `loopix`.
fn entrypoint() -> Command {
    let mut cmd = Command::new(container_file("entrypoint.sh"));
    cmd.env("LOOPIX_BIN", env!("CARGO_BIN_EXE_loopix"))
        .env_remove("LOOPIX_BACKEND");
    cmd
}

#[test]
fn the_entrypoint_says_what_is_missing_and_otherwise_becomes_loopix() {
    let out = entrypoint()
        .args(["node", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/node.toml: no such file (mount the node's directory"),
        "{stderr}"
    );
    let out = entrypoint().args(["node"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("give --config"), "{stderr}");
    // Anything else is loopix itself, with its own exit code.
    let out = entrypoint().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("loopix "));
    let out = entrypoint().args(["keygen", "--bogus"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap's usage error, from loopix"
    );
}

/// The processes of the compose network, stopped with SIGTERM (as `compose down` stops
/// them) when the test ends; each must then exit 0.
struct Services(Vec<(String, Child)>);

impl Services {
    fn start(&mut self, out: &Path, name: &str) {
        let log = std::fs::File::create(out.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(out.join("run").join(format!("{name}.sh")))
            .env("LOOPIX_BIN", env!("CARGO_BIN_EXE_loopix"))
            .env_remove("LOOPIX_BACKEND")
            .stdout(Stdio::piped())
            .stderr(log);
        common::refuse_io_uring(&mut cmd);
        self.0.push((name.to_string(), cmd.spawn().unwrap()));
    }

    /// SIGTERM to every process; how each exited.
    fn stop(&mut self) -> Vec<(String, bool)> {
        for (_, c) in &self.0 {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        self.0
            .drain(..)
            .map(|(name, mut c)| (name, c.wait().map(|s| s.success()).unwrap_or(false)))
            .collect()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_compose_network_delivers_a_message_on_the_portable_backend() {
    let dir = common::Dir::new("container");
    let out = dir.path("net");
    // A /24 of the loopback network no other test uses: every 127.x.y.z is this host.
    let net = "127.0.89";
    let prepared = Command::new("sh")
        .arg(container_file("prepare.sh"))
        .arg(&out)
        .env("NET", net)
        .env("LOOPIX_BIN", env!("CARGO_BIN_EXE_loopix"))
        .env("LOOPIX_ENTRYPOINT", container_file("entrypoint.sh"))
        .output()
        .unwrap();
    assert!(
        prepared.status.success(),
        "{}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    let mut services = Services(Vec::new());
    for name in ["authority", "node-1", "node-2", "node-3", "node-100"] {
        services.start(&out, name);
    }
    let mut bob = Services(Vec::new());
    bob.start(&out, "bob");
    let alice = Command::new("sh")
        .arg(out.join("run/alice.sh"))
        .env("LOOPIX_BIN", env!("CARGO_BIN_EXE_loopix"))
        .env_remove("LOOPIX_BACKEND")
        .output()
        .unwrap();
    let logs = || {
        ["authority", "node-1", "node-100", "bob"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(out.join(format!("{n}.log"))).unwrap_or_default();
                format!("--- {n}\n{log}")
            })
            .collect::<String>()
    };
    assert!(
        alice.status.success(),
        "alice: {}\n{}",
        String::from_utf8_lossy(&alice.stderr),
        logs()
    );
    assert!(String::from_utf8_lossy(&alice.stderr).contains("acknowledged"));
    // Bob stops by himself once he has the message.
    let (_, mut bob_child) = bob.0.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while bob_child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "bob never got it\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let bob_out = bob_child.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&bob_out.stdout);
    assert!(got.contains("hello from a container"), "{got}\n{}", logs());
    // Every node ran on the portable backend and said why.
    for id in [1, 2, 3, 100] {
        let log = std::fs::read_to_string(out.join(format!("node-{id}.log"))).unwrap();
        assert!(
            log.contains("io_uring is not available, running on the portable backend"),
            "node {id}: {log}"
        );
    }
    for (name, ok) in services.stop() {
        assert!(ok, "{name} did not exit 0 on SIGTERM\n{}", logs());
    }
}
