//! One shard: one thread pinned to a core, owning a steered socket and one core object
//! (its replay set, timing wheel, packet pool and RNG with it). Nothing it touches on the
//! packet path is shared or locked. Two backends drive it ([`crate::backend`]):
//!
//! - [`uring`]: a glommio executor (io_uring); a receive task awaits datagrams and a timer
//!   task holds the shard's one timer;
//! - [`portable`]: a plain thread that waits on its socket with `ppoll`, the core's next
//!   deadline as the timeout: for hosts where io_uring is not allowed.
//!
//! Both receive with `recvmmsg` and send with `sendmmsg`, and share everything else here:
//! the shard's state, what it does with a received batch, and its chores between batches
//! (datagrams other shards passed on, what fell due, the replay journal, the store's
//! commits, control messages, reports).

pub mod portable;
pub mod uring;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use loopix_core::drops::DropReason;
use loopix_core::endpoint::Handoff;
use loopix_core::network::topology::Topology;
use loopix_crypto::{EpochSeed, NodeId};

use crate::batch_io::{BATCH, Batch};
use crate::blocking::Watch;
use crate::clock::NetworkClock;
use crate::replay_journal::ReplayJournal;
use crate::rx_timestamp::now_ns;
use crate::shard_core::{RoleReport, ShardCore};
use crate::steering::{owner_shard, steered_shard};
use crate::stray_buffers::StrayBuffers;

/// The longest the timer loop sleeps: bounds how late control messages and strays are seen.
const TICK: Duration = Duration::from_millis(10);
/// How often a shard reports its counters.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Sent to a shard by the control thread.
#[derive(Clone, Debug)]
pub enum Control {
    /// Stop receiving; send what the wheel holds when it is due, for at most `grace`; exit.
    Shutdown { grace: Duration },
    /// Reload (SIGHUP): a re-read topology and key seed. Keys that did not change keep
    /// their replay filters.
    Reload {
        topology: Box<Topology>,
        seed: EpochSeed,
    },
}

/// A datagram that reached the wrong shard, on its way to its owner.
#[derive(Debug)]
pub struct Stray {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A shard's counters, sent to the control thread.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub shard: usize,
    pub core: RoleReport,
    /// Each node the shard takes datagrams from, and when one last verified (µs; 0:
    /// never): made once a report, never per packet.
    pub links_heard: Arc<[(NodeId, u64)]>,
    pub strays_forwarded: u64,
    /// Strays dropped: no free buffer, or the owner's queue full.
    pub strays_dropped: u64,
    /// The longest the shard waited on anything but the network (its store, its journal's
    /// writes), µs: what a slow disk would make it lose.
    pub max_block_us: Blocked,
    /// Nanoseconds the core spent on received batches (unwrap, replay check, hold): per
    /// packet, the engine's cost to set against `loopix speed`'s crypto floor. It is how a
    /// 25 % loss to stack placement was found (crypto/src/stack_position.rs).
    pub receive_ns: u64,
    /// Replay journal writes that failed (each logged).
    pub journal_errors: u64,
    /// Datagrams the kernel dropped at this shard's socket (receive buffer full): load the
    /// shard never saw.
    pub kernel_drops: u64,
    /// Sends and receives the socket refused (each a datagram not sent, or a receive that
    /// failed), by operation.
    pub send_errors: u64,
    pub recv_errors: u64,
    /// The last report, sent as the shard exits.
    pub last: bool,
}

/// The longest a shard waited on anything but the network, by what it waited on, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    /// A provider's store: handing writes to its writer, reading a packet for a poll.
    pub store: u64,
    /// The replay journal's writes (page-cache appends, which a disk busy writing those
    /// pages back can hold up).
    pub journal: u64,
}

/// Everything a shard starts with.
pub struct ShardSetup<C> {
    pub index: usize,
    pub shards: usize,
    pub socket: StdUdpSocket,
    pub core: C,
    /// The clock every shard of the node reads `now_us` from.
    pub clock: NetworkClock,
    /// Where the shard writes down its replay filters (already restored from).
    pub journal: Option<ReplayJournal>,
    /// Datagrams of exactly this length are Sphinx packets, steered by their first bytes.
    pub packet_len: usize,
    /// Datagrams of exactly this length are a provider's session frames, steered by their
    /// receiver index (0 for a mix: it takes none).
    pub frame_len: usize,
    /// The largest datagram the node receives or sends.
    pub datagram_len: usize,
    pub control: Receiver<Control>,
    pub reports: Sender<ShardReport>,
    pub strays_in: Receiver<Stray>,
    pub strays_out: Vec<Sender<Stray>>,
    /// Work other shards hand this one, and the way to each shard's
    /// ([`loopix_core::endpoint::Endpoint::poll_handoff`]).
    pub handoffs_in: Receiver<Handoff>,
    pub handoffs_out: Vec<Sender<Handoff>>,
    /// The node's stray buffers, shared by every shard.
    pub stray_buffers: StrayBuffers,
    /// Datagrams that waited in the socket longer than this are shed unread (`stale`);
    /// `None`: never.
    pub max_socket_wait: Option<Duration>,
}

pub(crate) struct State<C> {
    index: usize,
    shards: usize,
    core: C,
    clock: NetworkClock,
    journal: Option<ReplayJournal>,
    /// The shard's socket, for the kernel's counters.
    fd: std::os::fd::RawFd,
    packet_len: usize,
    frame_len: usize,
    strays_out: Vec<Sender<Stray>>,
    handoffs_in: Receiver<Handoff>,
    handoffs_out: Vec<Sender<Handoff>>,
    stray_buffers: StrayBuffers,
    strays_forwarded: u64,
    strays_dropped: u64,
    receive_ns: u64,
    /// Datagrams handed to the core, for the mean cost per datagram of `receive_ns`.
    handed: u64,
    /// See [`ShardSetup::max_socket_wait`], ns.
    max_socket_wait_ns: Option<u64>,
    send_errors: u64,
    recv_errors: u64,
    /// See [`ShardReport::max_block_us`], ns.
    max_block_ns: Blocked,
}

impl<C: ShardCore> State<C> {
    /// The state of a shard about to run, what it keeps for its chores, and its socket.
    fn new(setup: ShardSetup<C>) -> (Self, Chores, StdUdpSocket) {
        use std::os::fd::AsRawFd;
        let fd = setup.socket.as_raw_fd();
        let chores = Chores {
            control: setup.control,
            reports: setup.reports,
            strays: setup.strays_in,
            stray_batch: Batch::new(setup.datagram_len),
            last_report: Instant::now(),
            deadline: None,
        };
        let st = State {
            index: setup.index,
            shards: setup.shards,
            core: setup.core,
            clock: setup.clock,
            journal: setup.journal,
            fd,
            packet_len: setup.packet_len,
            frame_len: setup.frame_len,
            strays_out: setup.strays_out,
            handoffs_in: setup.handoffs_in,
            handoffs_out: setup.handoffs_out,
            stray_buffers: setup.stray_buffers,
            strays_forwarded: 0,
            strays_dropped: 0,
            receive_ns: 0,
            handed: 0,
            max_socket_wait_ns: setup.max_socket_wait.map(|d| d.as_nanos() as u64),
            send_errors: 0,
            recv_errors: 0,
            max_block_ns: Blocked::default(),
        };
        (st, chores, setup.socket)
    }

    /// A received batch: handed to the core, its journal records written, and whatever is
    /// due already (a zero or sub-slot delay) readied to go out with it rather than wait
    /// for the timer's next turn.
    fn take_batch(&mut self, batch: &Batch) {
        self.receive(batch);
        self.write_journal();
        let now = self.now_us();
        self.core.handle_timeout(now);
    }

    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Writes down what the core's replay filters recorded: called before anything that
    /// the same work released is sent, so every packet that leaves has its tag journaled.
    fn write_journal(&mut self) {
        if let Some(journal) = &mut self.journal {
            let watch = Watch::start();
            journal.write(&mut self.core);
            let ns = watch.waited_ns();
            self.max_block_ns.journal = self.max_block_ns.journal.max(ns);
        }
    }

    /// Takes the work other shards handed this one.
    fn take_handoffs(&mut self) {
        if self.handoffs_out.len() <= 1 {
            return;
        }
        let now = self.now_us();
        while let Ok(h) = self.handoffs_in.try_recv() {
            self.core.handle_handoff(now, h);
        }
    }

    /// Hands on the core's work for other shards; what finds a shard's queue full goes
    /// back to the core, which counts it (`handoff_full`).
    fn send_handoffs(&mut self) {
        while let Some((to, h)) = self.core.poll_handoff() {
            let Some(tx) = self.handoffs_out.get(to) else {
                self.core.handoff_refused(h);
                continue;
            };
            if let Err(e) = tx.try_send(h) {
                self.core.handoff_refused(e.into_inner());
            }
        }
    }

    /// Hands a received batch to the core, after shedding what waited too long in the
    /// socket and sending strays on to their owners.
    fn receive(&mut self, batch: &Batch) {
        let now = self.now_us();
        // The kernel stamps arrivals with the system clock; ages are read against it too.
        let shed_before_ns = self
            .max_socket_wait_ns
            .map_or(0, |max| now_ns().saturating_sub(max));
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut items: [(SocketAddr, &[u8]); BATCH] = [(unspecified, &[]); BATCH];
        let mut n = 0;
        for i in 0..batch.len() {
            let (d, from) = batch.get(i);
            let Some(from) = from else { continue };
            if batch.arrived_ns(i).is_some_and(|t| t < shed_before_ns) {
                self.core.count_refused(DropReason::Stale);
                continue;
            }
            if let Some(owner) = self.stray_owner(d) {
                self.forward_stray(owner, from, d);
                continue;
            }
            items[n] = (from, d);
            n += 1;
        }
        // Handshakes handed here before this batch: a session is in place before any
        // frame of it (its response left only once it was).
        self.take_handoffs();
        let start = Instant::now();
        self.core.handle_datagrams(now, &items[..n]);
        self.receive_ns += start.elapsed().as_nanos() as u64;
        self.handed += n as u64;
        self.send_handoffs();
    }

    /// Before unwrapping `n` datagrams: readies what falls due in the first half of the
    /// time that will take (the core caps it at half a wheel slot), so it leaves a little
    /// early rather than waiting the whole batch out.
    fn release_ahead_of(&mut self, n: usize) {
        let per_ns = self.receive_ns.checked_div(self.handed).unwrap_or(0);
        let ahead_us = per_ns * n as u64 / 2_000;
        if ahead_us > 0 {
            let now = self.now_us();
            self.core.release_ahead(now, ahead_us);
        }
    }

    /// The shard a datagram that reached this one belongs to, if another: a packet by
    /// its α, a session frame by its receiver index. (An initiation belongs to whichever
    /// shard the kernel's hash picked.)
    fn stray_owner(&self, d: &[u8]) -> Option<usize> {
        if self.shards <= 1 {
            return None;
        }
        let owner = if d.len() == self.packet_len {
            owner_shard(d, self.shards)
        } else if d.len() == self.frame_len {
            steered_shard(d, self.shards)?
        } else {
            return None;
        };
        (owner != self.index).then_some(owner)
    }

    fn forward_stray(&mut self, owner: usize, from: SocketAddr, d: &[u8]) {
        let Some(bytes) = self.stray_buffers.copy_of(d) else {
            self.strays_dropped += 1;
            return;
        };
        match self.strays_out[owner].try_send(Stray { from, bytes }) {
            Ok(()) => self.strays_forwarded += 1,
            Err(e) => {
                self.stray_buffers.give_back(e.into_inner().bytes);
                self.strays_dropped += 1;
            }
        }
    }

    /// Moves the core's transmits into `out`, up to one batch; false when it had none.
    fn fill(&mut self, out: &mut Batch) -> bool {
        let now = self.now_us();
        out.clear();
        while !out.is_full() {
            let Some(t) = self.core.poll_transmit(now, out.next_buf()) else {
                break;
            };
            out.push_len(t.len, t.to);
        }
        self.send_handoffs();
        !out.is_empty()
    }

    fn report(&self, last: bool) -> ShardReport {
        let core = self.core.report(self.now_us());
        ShardReport {
            shard: self.index,
            max_block_us: Blocked {
                store: (self.max_block_ns.store / 1_000).max(core.store_wait_us),
                journal: self.max_block_ns.journal / 1_000,
            },
            core,
            links_heard: self.core.links_heard().into(),
            strays_forwarded: self.strays_forwarded,
            strays_dropped: self.strays_dropped,
            receive_ns: self.receive_ns,
            journal_errors: self.journal.as_ref().map_or(0, |j| j.errors),
            kernel_drops: crate::socket_stats::kernel_drops(self.fd).unwrap_or(0),
            send_errors: self.send_errors,
            recv_errors: self.recv_errors,
            last,
        }
    }
}

/// Processes datagrams other shards received for this one.
fn take_strays<C: ShardCore>(st: &mut State<C>, strays: &Receiver<Stray>, batch: &mut Batch) {
    loop {
        batch.clear();
        while !batch.is_full() {
            let Ok(s) = strays.try_recv() else { break };
            let n = s.bytes.len().min(batch.next_buf().len());
            batch.next_buf()[..n].copy_from_slice(&s.bytes[..n]);
            batch.push_len(n, s.from);
            st.stray_buffers.give_back(s.bytes);
        }
        if batch.is_empty() {
            return;
        }
        st.receive(batch);
    }
}

/// Whether a shard goes on after its chores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    /// A shutdown completed (nothing held, or the grace ran out): the shard exits.
    Exit,
}

/// What a shard does between batches, on either backend.
pub(crate) struct Chores {
    control: Receiver<Control>,
    reports: Sender<ShardReport>,
    strays: Receiver<Stray>,
    stray_batch: Batch,
    last_report: Instant,
    /// Set once a shutdown is asked: when the shard must be gone by.
    deadline: Option<Instant>,
}

impl Chores {
    /// Before sending: datagrams other shards passed on, what fell due at `now`, and the
    /// journal records for both (written before anything they released leaves).
    fn before_send<C: ShardCore>(&mut self, st: &mut State<C>, now_us: u64) {
        st.take_handoffs();
        take_strays(st, &self.strays, &mut self.stray_batch);
        st.core.handle_timeout(now_us);
        st.write_journal();
    }

    /// After sending: the store's commit, control messages, the drain's end, reports.
    fn after_send<C: ShardCore>(&mut self, st: &mut State<C>) -> After {
        let watch = Watch::start();
        if let Err(e) = st.core.flush_storage() {
            tracing::error!(error = %e, "inbox flush failed");
        }
        let ns = watch.waited_ns();
        st.max_block_ns.store = st.max_block_ns.store.max(ns);
        match self.control.try_recv() {
            Ok(Control::Reload { topology, seed }) => {
                if let Err(e) = st.core.reload(&topology, Some(seed)) {
                    tracing::error!(error = %e, "reload refused by the shard's core");
                }
                st.write_journal();
            }
            Ok(Control::Shutdown { grace }) => {
                self.deadline = Some(Instant::now() + grace);
            }
            Err(TryRecvError::Disconnected) if self.deadline.is_none() => {
                self.deadline = Some(Instant::now());
            }
            Err(_) => {}
        }
        if let Some(d) = self.deadline
            && (st.core.held() == 0 || Instant::now() >= d)
        {
            let _ = self.reports.send(st.report(true));
            return After::Exit;
        }
        if self.last_report.elapsed() >= REPORT_EVERY {
            let _ = self.reports.try_send(st.report(false));
            self.last_report = Instant::now();
        }
        After::Continue
    }

    /// True once a shutdown is asked: the shard takes no new datagrams.
    fn stopping(&self) -> bool {
        self.deadline.is_some()
    }

    /// How long the shard may wait from `now_us` for a datagram: until the core's next
    /// deadline, and never more than [`TICK`] (control messages and strays are seen then).
    fn wait<C: ShardCore>(&self, st: &State<C>, now_us: u64) -> Duration {
        st.core
            .poll_timeout()
            .map_or(TICK, |t| Duration::from_micros(t.saturating_sub(now_us)))
            .min(TICK)
    }
}
