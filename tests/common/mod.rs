//! Helpers for end-to-end tests: a directory of keys and configs, node processes that are
//! killed when the test ends, metrics scraping.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn loopix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loopix"))
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("loopix-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// `loopix keygen --epochs 2 --first-epoch 0` into `file`: a node's seed. Returns the
    /// topology lines that publish its keys (epochs 0 and 1) and its key of epoch 0.
    pub fn node_keygen(&self, file: &str) -> (String, String) {
        let out = loopix()
            .args(["keygen", "--epochs", "2", "--first-epoch", "0", "--out"])
            .arg(self.path(file))
            .output()
            .unwrap();
        assert!(out.status.success());
        let lines = String::from_utf8(out.stdout).unwrap();
        let first = lines.split('"').nth(1).expect("a quoted key").to_string();
        (lines, first)
    }

    /// `loopix keygen` into `file`: a client's key; returns its topology lines
    /// (`public_key`, `session_key`).
    pub fn keygen(&self, file: &str) -> String {
        let out = loopix()
            .args(["keygen", "--out"])
            .arg(self.path(file))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unix time now, s: tests start epoch 0 here (`epoch_start`), so it outlasts them.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `loopix node` process, killed (SIGKILL) if still running when dropped.
pub struct NodeProcess(pub Child);

impl NodeProcess {
    pub fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = loopix()
            .arg("node")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    /// SIGTERM and wait; true if it exited 0 within 10 s.
    pub fn terminate(mut self) -> bool {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl NodeProcess {
    /// SIGKILL, as a crash or the OOM killer would, and wait for it to be gone.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGHUP: reload.
    pub fn hangup(&self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGHUP) };
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET /metrics, if the node answers.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The sum over shards of one metric (without reason labels).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum over shards of one metric's series with this label (e.g. `reason="mac"`).
pub fn metric_labelled(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits (at most `limit`) until `check` holds for the node's metrics; returns them.
pub fn wait_metrics(
    addr: SocketAddr,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(text) = scrape(addr)
            && check(&text)
        {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A Noise handshake to a provider whose session key is `provider`, under a fresh key of
/// an outsider's own: well-formed, stamped now, and from no client of the topology.
pub fn stranger_handshake(
    provider: loopix_crypto::SessionPublic,
    layout: loopix_core::session::FrameLayout,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Vec<u8> {
    let key = loopix_crypto::SessionSecret::generate(rng);
    let mut stranger = loopix_core::session::ClientSession::new(key, provider, layout);
    let mut handshake = vec![0u8; layout.frame_len()];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    stranger.write_initiation(now, rng, &mut handshake).unwrap();
    handshake
}

/// The summary a finished `loopix testnet --json` printed and its stderr, checked: the run
/// succeeded, at least `min_sent` real messages were sent, and every one was delivered
/// exactly once, none lost, none misdelivered. Panics with both otherwise.
pub fn delivered_once(out: &std::process::Output, min_sent: u64) -> (serde_json::Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary JSON: {e}\nstderr:\n{stderr}"));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v:#}"));
    assert!(out.status.success(), "{v:#}\n{stderr}");
    assert!(n("sent_real") >= min_sent, "{} sent: {v:#}", n("sent_real"));
    assert_eq!(n("delivered_real"), n("sent_real"), "{v:#}");
    assert_eq!(
        (n("lost_real"), n("duplicates"), n("misdelivered")),
        (0, 0, 0),
        "{v:#}"
    );
    (v, stderr)
}

/// Confines `cmd` as a container runtime's default seccomp profile does where it matters
/// to us: `io_uring_setup` answers EPERM, everything else is allowed. Installed in the
/// child before it execs (rust-vmm's seccompiler); what it starts inherits it.
pub fn refuse_io_uring(cmd: &mut Command) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    use std::os::unix::process::CommandExt;
    let arch: TargetArch = std::env::consts::ARCH.try_into().expect("a seccomp target");
    let filter = SeccompFilter::new(
        [(libc::SYS_io_uring_setup, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("the filter");
    let program: BpfProgram = filter.try_into().expect("it compiles");
    // SAFETY: apply_filter makes two system calls (prctl, seccomp) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
}
