//! `loopix testnet --flood-handshakes-per-s N`: what an outsider with a fast link sends a
//! provider to make it spend its time on handshakes: datagrams shaped as initiations
//! (receiver index 0, random bytes, the network's one frame length), paced at N a second,
//! at the first provider, or with `--flood-at elsewhere` at a closed port on the same
//! host, the control run that costs the machine the same sending.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

/// How often the pacing loop sends a batch.
const TICK: Duration = Duration::from_millis(5);

/// Where the flood goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloodAt {
    /// The first provider.
    Provider,
    /// A closed port on the provider's host (the control run).
    Elsewhere,
}

/// What a flood did (in the testnet's summary).
#[derive(Serialize, Debug, Clone)]
pub struct FloodSummary {
    pub per_s: u32,
    pub at: FloodAt,
    pub target: String,
    /// Datagrams sent, and sends the socket refused (the kernel's buffer was full).
    pub sent: u64,
    pub send_errors: u64,
}

/// A flood running on a thread of its own until stopped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    per_s: u32,
    at: FloodAt,
    target: SocketAddr,
}

impl Flood {
    /// Starts sending `per_s` frames of `frame_len` bytes a second to `target`.
    pub fn start(
        target: SocketAddr,
        at: FloodAt,
        per_s: u32,
        frame_len: usize,
    ) -> Result<Self, String> {
        let bind = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(bind).map_err(|e| format!("flood socket: {e}"))?;
        let (stop, sent, errors) = (Arc::default(), Arc::default(), Arc::default());
        let thread = {
            let (stop, sent, errors): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
                (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&errors));
            std::thread::Builder::new()
                .name("loopix-flood".into())
                .spawn(move || {
                    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(per_s));
                    let mut frame = vec![0u8; frame_len];
                    let start = Instant::now();
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let due = (start.elapsed().as_secs_f64() * f64::from(per_s)) as u64;
                        while done < due {
                            rng.fill_bytes(&mut frame);
                            frame[..4].fill(0);
                            match socket.send_to(&frame, target) {
                                Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                            };
                            done += 1;
                        }
                        std::thread::sleep(TICK);
                    }
                })
                .map_err(|e| format!("flood thread: {e}"))?
        };
        Ok(Self {
            stop,
            sent,
            errors,
            thread: Some(thread),
            per_s,
            at,
            target,
        })
    }

    /// Stops the flood; what it sent.
    pub fn stop(mut self) -> FloodSummary {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        FloodSummary {
            per_s: self.per_s,
            at: self.at,
            target: self.target.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            send_errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A UDP port on `host` that nothing listens on (bound, then closed).
pub fn closed_port(host: std::net::IpAddr) -> Result<SocketAddr, String> {
    let s = UdpSocket::bind(SocketAddr::new(host, 0)).map_err(|e| format!("closed port: {e}"))?;
    s.local_addr().map_err(|e| format!("closed port: {e}"))
}
