//! Starting a node's shards and talking to them: one glommio executor per shard, pinned
//! to a core, its socket bound in shard order into the steered group; stats and shutdown
//! over crossbeam channels, never on the packet path.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::clock::NetworkClock;
use crate::replay_journal::ReplayJournal;
use crate::shard::{Control, ShardReport, ShardSetup, Stray, run};
use crate::shard_core::ShardCore;
use crate::steering::bind_group;
use crate::stray_buffers::StrayBuffers;

/// Stray buffers per shard: enough for a steering misfire on half the traffic of a busy
/// shard between two turns of its owner's timer loop (10 ms); 2.4 MB of reserve a shard
/// at the default packet size, touched only when used.
const STRAY_BUFFERS_PER_SHARD: usize = 1024;

/// How a node's shards are laid out.
#[derive(Clone, Debug)]
pub struct NodeLayout {
    pub listen: SocketAddr,
    pub shards: usize,
    /// Pin shard `i` to CPU `cpus[i % cpus.len()]`; empty: leave placement to the OS.
    pub cpus: Vec<usize>,
    pub packet_len: usize,
    pub datagram_len: usize,
    pub recv_buffer_bytes: usize,
    /// Busy-poll this long before an idle shard sleeps (glommio's spin before park): on a
    /// dedicated core, timers and arrivals are then seen within microseconds instead of a
    /// wake-up's latency, at the price of that core's idle time. `None`: sleep at once.
    pub spin: Option<Duration>,
    /// Datagrams that waited in a shard's socket longer than this are shed unread, counted
    /// as `stale` (receive timestamps are turned on for it); `None`: never.
    pub max_socket_wait: Option<Duration>,
}

/// A running node.
pub struct RunningNode {
    controls: Vec<Sender<Control>>,
    reports: Receiver<ShardReport>,
    /// The newest report of each shard, once it has sent one.
    latest: Vec<Option<ShardReport>>,
    threads: Vec<ExecutorJoinHandle<()>>,
    pub local_addr: SocketAddr,
}

impl RunningNode {
    /// Binds the group and starts one shard per core made by `make_core(shard_index)`,
    /// with the replay journal it has restored its filters from, if it keeps one.
    pub fn start<C: ShardCore + Send + 'static>(
        layout: &NodeLayout,
        mut make_core: impl FnMut(usize) -> (C, Option<ReplayJournal>),
    ) -> io::Result<Self> {
        let sockets = bind_group(layout.listen, layout.shards, layout.recv_buffer_bytes)?;
        if layout.max_socket_wait.is_some() {
            for s in &sockets {
                crate::rx_timestamp::enable(s)?;
            }
        }
        let local_addr = sockets[0].local_addr()?;
        let clock = NetworkClock::start();
        let (report_tx, reports) = bounded(1024);
        let strays: Vec<_> = (0..layout.shards).map(|_| bounded::<Stray>(4096)).collect();
        let strays_out: Vec<Sender<Stray>> = strays.iter().map(|(tx, _)| tx.clone()).collect();
        let stray_buffers =
            StrayBuffers::new(STRAY_BUFFERS_PER_SHARD * layout.shards, layout.datagram_len);
        let mut controls = Vec::new();
        let mut threads = Vec::new();
        for (index, (socket, (_, strays_in))) in sockets.into_iter().zip(strays).enumerate() {
            let (control_tx, control) = unbounded();
            controls.push(control_tx);
            let (core, journal) = make_core(index);
            let setup = ShardSetup {
                index,
                shards: layout.shards,
                socket,
                core,
                clock,
                journal,
                packet_len: layout.packet_len,
                datagram_len: layout.datagram_len,
                control,
                reports: report_tx.clone(),
                strays_in,
                strays_out: strays_out.clone(),
                stray_buffers: stray_buffers.clone(),
                max_socket_wait: layout.max_socket_wait,
            };
            let placement = match layout.cpus.get(index % layout.cpus.len().max(1)) {
                Some(&cpu) => Placement::Fixed(cpu),
                None => Placement::Unbound,
            };
            let mut builder = LocalExecutorBuilder::new(placement);
            if let Some(spin) = layout.spin {
                builder = builder.spin_before_park(spin);
            }
            let handle = builder
                .name(&format!("loopix-shard-{index}"))
                .spawn(move || run(setup))
                .map_err(|e| io::Error::other(e.to_string()))?;
            threads.push(handle);
        }
        let latest = vec![None; layout.shards];
        Ok(Self {
            controls,
            reports,
            latest,
            threads,
            local_addr,
        })
    }

    /// The newest report of every shard that has reported (collecting what has arrived).
    pub fn reports(&mut self) -> Vec<ShardReport> {
        while let Ok(r) = self.reports.try_recv() {
            if let Some(latest) = self.latest.get_mut(r.shard) {
                *latest = Some(r);
            }
        }
        self.latest.iter().flatten().cloned().collect()
    }

    /// Waits up to `timeout` for every shard to report once more; returns the reports.
    pub fn fresh_reports(&mut self, timeout: Duration) -> Vec<ShardReport> {
        let deadline = Instant::now() + timeout;
        let mut seen = vec![false; self.latest.len()];
        while !seen.iter().all(|&s| s) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.reports.recv_timeout(left) {
                Ok(r) => {
                    if let Some(latest) = self.latest.get_mut(r.shard) {
                        seen[r.shard] = true;
                        *latest = Some(r);
                    }
                }
                Err(_) => break,
            }
        }
        self.latest.iter().flatten().cloned().collect()
    }

    /// Hands every shard a re-read topology and key seed (see [`Control::Reload`]).
    pub fn reload(
        &self,
        topology: &loopix_core::network::topology::Topology,
        seed: &loopix_crypto::EpochSeed,
    ) {
        for c in &self.controls {
            let _ = c.send(Control::Reload {
                topology: Box::new(topology.clone()),
                seed: seed.clone(),
            });
        }
    }

    /// Stops receiving, lets every shard send what its wheel holds (for at most `grace`),
    /// and waits for them; returns the final reports.
    pub fn shutdown(mut self, grace: Duration) -> Vec<ShardReport> {
        for c in &self.controls {
            let _ = c.send(Control::Shutdown { grace });
        }
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.reports()
    }
}

/// This process's resident memory now, bytes (Linux `/proc/self/statm`).
pub fn resident_bytes() -> io::Result<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other("/proc/self/statm: no resident field"))?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * usize::try_from(page).unwrap_or(4096))
}

/// What one shard's executor adds to the resident memory before its core does anything
/// (its io_uring rings and the IO memory it registers, its thread): measured by starting
/// one, as `--check` does, since it depends on the kernel and the runtime's defaults. An
/// error here is an error starting any shard (io_uring refused, memory lock limits).
pub fn executor_resident_bytes() -> io::Result<usize> {
    let before = resident_bytes()?;
    let during = LocalExecutorBuilder::new(Placement::Unbound)
        .name("loopix-check")
        .spawn(|| async {
            // A timer and a socket's receive, as a shard's first moments have: the
            // executor's rings and IO memory are set up by then.
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            let socket = glommio::net::UdpSocket::bind("127.0.0.1:0")?;
            let mut buf = [0u8; 64];
            let me = socket.local_addr()?;
            let _ = socket.send_to(&buf, me).await;
            let _ = glommio::timer::timeout(std::time::Duration::from_millis(1), async {
                socket.recv(&mut buf).await
            })
            .await;
            resident_bytes()
        })
        .map_err(|e| io::Error::other(format!("a shard's executor cannot start: {e}")))?
        .join()
        .map_err(|e| io::Error::other(format!("a shard's executor failed: {e}")))??;
    Ok(during.saturating_sub(before))
}
