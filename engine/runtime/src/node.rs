//! Starting a node's shards and talking to them: one thread per shard, pinned to a core,
//! running the chosen backend (a glommio executor, or the portable loop), its socket bound
//! in shard order into the steered group; stats and shutdown over crossbeam channels,
//! never on the packet path. A shard that fails to start or stops on its own (a panic)
//! is reported ([`RunningNode::failed_shard`]): a node never runs on with dead shards.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use glommio::{LocalExecutorBuilder, Placement};

use crate::backend::Chosen;
use crate::clock::NetworkClock;
use crate::replay_journal::ReplayJournal;
use crate::shard::{Control, ShardReport, ShardSetup, Stray};
use crate::shard_core::ShardCore;
use crate::steering::bind_group;
use crate::stray_buffers::StrayBuffers;
use loopix_core::endpoint::Handoff;

/// Stray buffers per shard: enough for a steering misfire on half the traffic of a busy
/// shard between two turns of its owner's timer loop (10 ms); 2.4 MB of reserve a shard
/// at the default packet size, touched only when used.
const STRAY_BUFFERS_PER_SHARD: usize = 1024;

/// Work one shard may have waiting for another before more is refused (`handoff_full`):
/// a provider's packets to store and handshakes for clients whose home is elsewhere, for
/// up to a timer turn (10 ms) of a busy shard.
const HANDOFFS_PER_SHARD: usize = 4096;

/// How a node's shards are laid out.
#[derive(Clone, Debug)]
pub struct NodeLayout {
    pub listen: SocketAddr,
    pub shards: usize,
    /// Pin shard `i` to CPU `cpus[i % cpus.len()]`; empty: leave placement to the OS.
    pub cpus: Vec<usize>,
    pub packet_len: usize,
    /// A provider's session frames' length (0 for a mix).
    pub frame_len: usize,
    pub datagram_len: usize,
    pub recv_buffer_bytes: usize,
    /// Busy-poll this long before an idle shard sleeps (glommio's spin before park): on a
    /// dedicated core, timers and arrivals are then seen within microseconds instead of a
    /// wake-up's latency, at the price of that core's idle time. `None`: sleep at once.
    /// The io_uring backend's only.
    pub spin: Option<Duration>,
    /// The backend the shards run on.
    pub backend: Chosen,
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
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Each shard's end, as it ends: `Err` with the reason when it failed.
    exits: Receiver<(usize, Result<(), String>)>,
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
                crate::rx_timestamp::enable(s).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "receive timestamps (SO_TIMESTAMPNS), which \
                             limits.max_socket_wait_ms needs (0 turns shedding off): {e}"
                        ),
                    )
                })?;
            }
        }
        let local_addr = sockets[0].local_addr()?;
        let clock = NetworkClock::start();
        let (report_tx, reports) = bounded(1024);
        let strays: Vec<_> = (0..layout.shards).map(|_| bounded::<Stray>(4096)).collect();
        let strays_out: Vec<Sender<Stray>> = strays.iter().map(|(tx, _)| tx.clone()).collect();
        let handoffs: Vec<_> = (0..layout.shards)
            .map(|_| bounded::<Handoff>(HANDOFFS_PER_SHARD))
            .collect();
        let handoffs_out: Vec<Sender<Handoff>> =
            handoffs.iter().map(|(tx, _)| tx.clone()).collect();
        let mut handoffs_in = handoffs.into_iter().map(|(_, rx)| rx);
        let stray_buffers =
            StrayBuffers::new(STRAY_BUFFERS_PER_SHARD * layout.shards, layout.datagram_len);
        let mut controls = Vec::new();
        let mut threads = Vec::new();
        let (exit_tx, exits) = unbounded();
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
                frame_len: layout.frame_len,
                datagram_len: layout.datagram_len,
                control,
                reports: report_tx.clone(),
                strays_in,
                strays_out: strays_out.clone(),
                handoffs_in: handoffs_in.next().expect("one queue per shard"),
                handoffs_out: handoffs_out.clone(),
                stray_buffers: stray_buffers.clone(),
                max_socket_wait: layout.max_socket_wait,
            };
            let cpu = layout.cpus.get(index % layout.cpus.len().max(1)).copied();
            let (backend, spin, exit) = (layout.backend, layout.spin, exit_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loopix-shard-{index}"))
                .spawn(move || {
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_shard(backend, cpu, spin, setup)
                    }));
                    let outcome = match ran {
                        Ok(r) => r,
                        Err(panic) => Err(format!("panicked: {}", panic_text(&panic))),
                    };
                    let _ = exit.send((index, outcome));
                })?;
            threads.push(handle);
        }
        let latest = vec![None; layout.shards];
        Ok(Self {
            controls,
            reports,
            latest,
            threads,
            exits,
            local_addr,
        })
    }

    /// A shard that has ended while the node runs (it failed to start, or panicked), and
    /// why: the node cannot do its job and must stop. `None` while every shard runs.
    pub fn failed_shard(&self) -> Option<String> {
        self.exits
            .try_recv()
            .ok()
            .map(|(index, outcome)| match outcome {
                Err(why) => format!("shard {index}: {why}"),
                Ok(()) => format!("shard {index} stopped on its own"),
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

/// Runs one shard on this thread, on `backend`, pinned to `cpu` if given.
fn run_shard<C: ShardCore + 'static>(
    backend: Chosen,
    cpu: Option<usize>,
    spin: Option<Duration>,
    setup: ShardSetup<C>,
) -> Result<(), String> {
    match backend {
        Chosen::IoUring => {
            let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
            let mut builder = LocalExecutorBuilder::new(placement);
            if let Some(spin) = spin {
                builder = builder.spin_before_park(spin);
            }
            let executor = builder
                .make()
                .map_err(|e| format!("the io_uring executor cannot start: {e}"))?;
            executor.run(crate::shard::uring::run(setup));
        }
        Chosen::Portable => {
            if let Some(cpu) = cpu
                && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
            {
                return Err(format!("cannot pin the shard to CPU {cpu}"));
            }
            crate::shard::portable::run(setup);
        }
    }
    Ok(())
}

/// A panic's message, if it has one.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
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
    let during = std::thread::Builder::new()
        .name("loopix-check".into())
        .spawn(|| -> io::Result<usize> {
            // Made on this thread, so a refusal is an error to report, not a panic.
            let executor = LocalExecutorBuilder::new(Placement::Unbound)
                .make()
                .map_err(|e| io::Error::other(format!("a shard's executor cannot start: {e}")))?;
            executor.run(async {
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
        })?
        .join()
        .map_err(|_| io::Error::other("a shard's executor failed"))??;
    Ok(during.saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_core::RoleReport;
    use loopix_core::endpoint::{Endpoint, Transmit};
    use loopix_core::network::topology::Topology;
    use loopix_core::roles::BuildError;
    use loopix_crypto::{EpochSeed, NodeId};

    /// A core with a bug: the first datagram makes it panic.
    struct Crashing;

    impl Endpoint for Crashing {
        fn id(&self) -> NodeId {
            NodeId(1)
        }
        fn handle_datagram(&mut self, _: u64, _: SocketAddr, _: &[u8]) {
            panic!("a bug in the core");
        }
        fn handle_timeout(&mut self, _: u64) {}
        fn poll_transmit(&mut self, _: u64, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<u64> {
            None
        }
        fn max_datagram_len(&self) -> usize {
            64
        }
        fn reload(&mut self, _: &Topology, _: Option<EpochSeed>) -> Result<(), BuildError> {
            Ok(())
        }
    }

    impl ShardCore for Crashing {
        fn report(&self, _: u64) -> RoleReport {
            RoleReport::default()
        }
    }

    /// The backends this host runs: portable always, io_uring where allowed.
    fn backends() -> Vec<Chosen> {
        let mut all = vec![Chosen::Portable];
        if crate::backend::io_uring_allowed().is_ok() {
            all.push(Chosen::IoUring);
        }
        all
    }

    #[test]
    fn a_shard_that_panics_is_reported_with_its_reason_on_either_backend() {
        for backend in backends() {
            let layout = NodeLayout {
                listen: "127.0.0.1:0".parse().unwrap(),
                shards: 2,
                cpus: vec![],
                packet_len: 1_000,
                frame_len: 0,
                datagram_len: 64,
                recv_buffer_bytes: 1 << 20,
                spin: None,
                max_socket_wait: None,
                backend,
            };
            let node = RunningNode::start(&layout, |_| (Crashing, None)).unwrap();
            assert_eq!(node.failed_shard(), None, "{backend}: every shard runs");
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let failed = loop {
                // Any shard of the group may take it: each datagram finds one.
                probe.send_to(b"boom", node.local_addr).unwrap();
                if let Some(why) = node.failed_shard() {
                    break why;
                }
                assert!(
                    Instant::now() < deadline,
                    "{backend}: no shard failure seen"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(
                failed.contains("panicked: a bug in the core"),
                "{backend}: {failed}"
            );
            node.shutdown(Duration::ZERO);
        }
    }
}
