//! Hosts for `loopix testnet --netns`: one network namespace per node, one for the
//! directory authority and one for the clients (where the testnet's own threads work
//! too), each joined by a veth pair to a router namespace that forwards between them.
//! Every datagram between two hosts is routed through the router, so it crosses real
//! interfaces and a routing decision, as between machines.
//!
//! Links: the router sends everything it forwards through a delay line, a TUN device
//! whose other end is a thread of this process: it holds each packet `delay` and drops a
//! share `loss` of them, then hands it back to the router, which sends it on to its
//! destination (policy routing: what comes in from a host goes to the TUN device, what
//! comes back from it goes out by the main table). So every link between two hosts has
//! the delay and the loss asked for. A delay line rather than the kernel's netem, which
//! many kernels (this project's CI machines among them) are built without; TUN is
//! everywhere.
//!
//! Addresses are 10.77.<host>.2 (the host) and .1 (the router's side), in namespaces this
//! process made: nothing is added to the namespace it started in, and nothing is sent
//! anywhere else. Everything is removed when the value is dropped (Ctrl-C included, as
//! the testnet stops by returning); namespaces a killed testnet left behind are removed
//! by the next one.

use std::collections::VecDeque;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// The router's TUN device.
const DELAY_DEVICE: &str = "lpxdelay";
/// Packets the delay line holds at once; more are dropped and counted.
const MAX_HELD: usize = 65_536;

/// What the delay line did.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub forwarded: AtomicU64,
    /// Dropped on purpose (`--link-loss`).
    pub lost: AtomicU64,
    /// Dropped because `MAX_HELD` were held.
    pub overflow: AtomicU64,
    /// Handed back to the router and refused by it.
    pub write_errors: AtomicU64,
}

/// The namespaces, links and delay line of one testnet.
pub struct VirtualNet {
    prefix: String,
    hosts: Vec<String>,
    stop: Arc<AtomicBool>,
    line: Option<JoinHandle<()>>,
    pub stats: Arc<LinkStats>,
}

/// Why the hosts could not be made.
fn need(what: &str) -> String {
    format!("--netns needs {what}")
}

impl VirtualNet {
    /// Makes a router and one namespace per name in `hosts`, links each to the router,
    /// and starts the delay line.
    pub fn create(hosts: &[String], delay: Duration, loss: f64) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(need("root (it creates network namespaces and links)"));
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err(need("iproute2's `ip` on the PATH"));
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err(need("/dev/net/tun (its links' delay line is a TUN device)"));
        }
        if hosts.len() > 250 {
            return Err(format!("--netns: {} hosts; at most 250", hosts.len()));
        }
        remove_stale();
        let prefix = format!("lpx-{}-", std::process::id());
        let mut net = Self {
            prefix,
            hosts: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            line: None,
            stats: Arc::new(LinkStats::default()),
        };
        let router = net.ns("router");
        ip(&["netns", "add", &router])?;
        net.hosts.push("router".into());
        for key in ["ip_forward", "conf/all/rp_filter", "conf/default/rp_filter"] {
            let value = if key == "ip_forward" { "1" } else { "0" };
            sysctl(&router, &format!("net/ipv4/{key}"), value)?;
        }
        ip(&["-n", &router, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &router,
            "tuntap",
            "add",
            "dev",
            DELAY_DEVICE,
            "mode",
            "tun",
        ])?;
        ip(&["-n", &router, "link", "set", DELAY_DEVICE, "up"])?;
        sysctl(
            &router,
            &format!("net/ipv4/conf/{DELAY_DEVICE}/rp_filter"),
            "0",
        )?;
        ip(&[
            "-n",
            &router,
            "route",
            "add",
            "default",
            "dev",
            DELAY_DEVICE,
            "table",
            "100",
        ])?;
        for (i, name) in hosts.iter().enumerate() {
            let ns = net.ns(name);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(name.clone());
            let subnet = i + 1;
            let (rif, host_if) = (format!("r{subnet}"), "eth0");
            ip(&[
                "-n", &router, "link", "add", &rif, "type", "veth", "peer", "name", host_if,
                "netns", &ns,
            ])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("10.77.{subnet}.1/24"),
                "dev",
                &rif,
            ])?;
            ip(&["-n", &router, "link", "set", &rif, "up"])?;
            ip(&["-n", &router, "rule", "add", "iif", &rif, "lookup", "100"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.{subnet}.2/24"),
                "dev",
                host_if,
            ])?;
            ip(&["-n", &ns, "link", "set", host_if, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{subnet}.1"),
            ])?;
        }
        let tun = open_tun(&net.path("router"))?;
        let (stop, stats) = (Arc::clone(&net.stop), Arc::clone(&net.stats));
        let seed = {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).map_err(|e| e.to_string())?;
            s
        };
        net.line = Some(
            std::thread::Builder::new()
                .name("loopix-delay-line".into())
                .spawn(move || delay_line(&tun, delay, loss, seed, &stop, &stats))
                .map_err(|e| e.to_string())?,
        );
        Ok(net)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn path(&self, name: &str) -> String {
        format!("/var/run/netns/{}", self.ns(name))
    }

    /// The address of host `name` (as given to [`Self::create`]).
    pub fn addr(&self, name: &str) -> Option<IpAddr> {
        let i = self.hosts.iter().skip(1).position(|h| h == name)?;
        Some(IpAddr::V4(Ipv4Addr::new(10, 77, i as u8 + 1, 2)))
    }

    /// An open handle on host `name`'s namespace, for [`enter`] (in a child before it
    /// runs, or in a thread).
    pub fn handle(&self, name: &str) -> Result<File, String> {
        File::open(self.path(name)).map_err(|e| format!("namespace {}: {e}", self.ns(name)))
    }
}

/// Moves the calling thread into the namespace `handle` opened.
pub fn enter(handle: &File) -> std::io::Result<()> {
    // SAFETY: setns on an fd we hold open; it changes only this thread's namespace.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for VirtualNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.line.take() {
            let _ = t.join();
        }
        // Deleting a namespace deletes the links in it, and their peers with them.
        for h in self.hosts.iter().rev() {
            let _ = ip(&["netns", "del", &self.ns(h)]);
        }
    }
}

/// Removes namespaces of testnets whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("lpx-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Gone, or a zombie not yet reaped (its state after the name in parentheses).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false);
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .map_err(|e| format!("sysctl {key} in {ns}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sysctl {key} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Opens the router's TUN device from inside its namespace (on a short-lived thread, so
/// this one stays where it is).
fn open_tun(router: &str) -> Result<OwnedFd, String> {
    let router = router.to_string();
    std::thread::spawn(move || -> Result<OwnedFd, String> {
        let handle = File::open(&router).map_err(|e| format!("{router}: {e}"))?;
        enter(&handle).map_err(|e| format!("entering {router}: {e}"))?;
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| format!("/dev/net/tun: {e}"))?;
        // struct ifreq: the name (16 bytes) then the flags; 40 bytes in all.
        let mut ifreq = [0u8; 40];
        ifreq[..DELAY_DEVICE.len()].copy_from_slice(DELAY_DEVICE.as_bytes());
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
        ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifreq` is laid out as.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) } != 0 {
            return Err(format!("TUNSETIFF: {}", std::io::Error::last_os_error()));
        }
        let fd = tun.as_raw_fd();
        std::mem::forget(tun);
        // SAFETY: the fd was just opened and its File forgotten: this is its only owner.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .join()
    .map_err(|_| "the TUN thread panicked".to_string())?
}

/// Holds every packet the router hands over `delay`, drops a share `loss`, hands the rest
/// back in order.
fn delay_line(
    tun: &OwnedFd,
    delay: Duration,
    loss: f64,
    seed: [u8; 32],
    stop: &AtomicBool,
    stats: &LinkStats,
) {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let wait_ms = held.front().map_or(50, |(due, _)| {
            due.saturating_duration_since(Instant::now())
                .as_millis()
                .min(50) as i32
        });
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if ready > 0 && pfd.revents & libc::POLLIN != 0 {
            // SAFETY: reading into a buffer we own, at most its length.
            let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let packet = buf[..n as usize].to_vec();
                if loss > 0.0 && (rng.next_u64() as f64 / u64::MAX as f64) < loss {
                    stats.lost.fetch_add(1, Ordering::Relaxed);
                } else if held.len() >= MAX_HELD {
                    stats.overflow.fetch_add(1, Ordering::Relaxed);
                } else {
                    held.push_back((Instant::now() + delay, packet));
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let Some((_, packet)) = held.pop_front() else {
                break;
            };
            // SAFETY: writing a buffer we own, its length.
            let n = unsafe { libc::write(tun.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
            if n == packet.len() as isize {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
