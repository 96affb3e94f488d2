//! One shard: a glommio executor pinned to a core, owning a steered socket and one core
//! object (its replay set, timing wheel, packet pool and RNG with it). Nothing it touches
//! on the packet path is shared or locked. Two tasks:
//!
//! - the receive loop awaits one datagram, drains what else is waiting with `recvmmsg`,
//!   hands the batch to the core and sends what the core emits with `sendmmsg`;
//! - the timer loop holds the shard's one glommio timer, re-armed to the core's next
//!   deadline (and woken early by the receive loop when that moves); it also handles the
//!   control channel, stray datagrams from other shards, and reports.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UdpSocket;
use glommio::timer::Timer;
use loopix_core::drops::DropReason;
use loopix_core::network::topology::Topology;
use loopix_crypto::{EpochSeed, NodeId};

use crate::batch_io::{BATCH, Batch};
use crate::clock::NetworkClock;
use crate::replay_journal::ReplayJournal;
use crate::rx_timestamp::now_ns;
use crate::shard_core::{RoleReport, ShardCore};
use crate::steering::owner_shard;
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
    /// The largest datagram the node receives or sends.
    pub datagram_len: usize,
    pub control: Receiver<Control>,
    pub reports: Sender<ShardReport>,
    pub strays_in: Receiver<Stray>,
    pub strays_out: Vec<Sender<Stray>>,
    /// The node's stray buffers, shared by every shard.
    pub stray_buffers: StrayBuffers,
    /// Datagrams that waited in the socket longer than this are shed unread (`stale`);
    /// `None`: never.
    pub max_socket_wait: Option<Duration>,
}

struct State<C> {
    index: usize,
    shards: usize,
    core: C,
    clock: NetworkClock,
    journal: Option<ReplayJournal>,
    /// The shard's socket, for the kernel's counters.
    fd: std::os::fd::RawFd,
    packet_len: usize,
    strays_out: Vec<Sender<Stray>>,
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
}

impl<C: ShardCore> State<C> {
    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Writes down what the core's replay filters recorded: called before anything that
    /// the same work released is sent, so every packet that leaves has its tag journaled.
    fn write_journal(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.write(&mut self.core);
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
            if self.is_stray(d) {
                self.forward_stray(from, d);
                continue;
            }
            items[n] = (from, d);
            n += 1;
        }
        let start = Instant::now();
        self.core.handle_datagrams(now, &items[..n]);
        self.receive_ns += start.elapsed().as_nanos() as u64;
        self.handed += n as u64;
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

    fn is_stray(&self, d: &[u8]) -> bool {
        self.shards > 1 && d.len() == self.packet_len && owner_shard(d, self.shards) != self.index
    }

    fn forward_stray(&mut self, from: SocketAddr, d: &[u8]) {
        let owner = owner_shard(d, self.shards);
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
        !out.is_empty()
    }

    fn report(&self, last: bool) -> ShardReport {
        ShardReport {
            shard: self.index,
            core: self.core.report(self.now_us()),
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

/// Sends everything the core has to send: `sendmmsg` first, awaited sends for any rest
/// (what the socket would not take at once). Every datagram the socket refuses is counted.
async fn flush<C: ShardCore>(st: &RefCell<State<C>>, socket: &UdpSocket, out: &mut Batch) {
    while st.borrow_mut().fill(out) {
        // An error here is retried datagram by datagram below, where it is counted.
        let mut sent = out.send_from(socket.as_raw_fd(), 0).unwrap_or(0);
        while sent < out.len() {
            let (d, to) = out.get(sent);
            let failed = match to {
                Some(to) => socket.send_to(d, to).await.is_err(),
                None => true,
            };
            st.borrow_mut().send_errors += u64::from(failed);
            sent += 1;
        }
    }
}

/// Runs the shard until a shutdown completes. Call inside a glommio executor.
pub async fn run<C: ShardCore + 'static>(setup: ShardSetup<C>) {
    // SAFETY: the fd comes from a socket this shard owns alone from here on.
    let socket = Rc::new(unsafe { UdpSocket::from_raw_fd(setup.socket.into_raw_fd()) });
    let st = Rc::new(RefCell::new(State {
        index: setup.index,
        shards: setup.shards,
        core: setup.core,
        clock: setup.clock,
        journal: setup.journal,
        fd: socket.as_raw_fd(),
        packet_len: setup.packet_len,
        strays_out: setup.strays_out,
        stray_buffers: setup.stray_buffers,
        strays_forwarded: 0,
        strays_dropped: 0,
        receive_ns: 0,
        handed: 0,
        max_socket_wait_ns: setup.max_socket_wait.map(|d| d.as_nanos() as u64),
        send_errors: 0,
        recv_errors: 0,
    }));
    let stopping = Rc::new(Cell::new(false));
    let (wake_tx, wake_rx) = local_channel::new_bounded(1);
    let len = setup.datagram_len;
    glommio::spawn_local(receive_loop(
        st.clone(),
        socket.clone(),
        wake_tx,
        stopping.clone(),
        len,
    ))
    .detach();
    let channels = (setup.control, setup.reports, setup.strays_in);
    timer_loop(st, socket, wake_rx, stopping, channels, len).await;
}

async fn receive_loop<C: ShardCore>(
    st: Rc<RefCell<State<C>>>,
    socket: Rc<UdpSocket>,
    wake: LocalSender<()>,
    stopping: Rc<Cell<bool>>,
    datagram_len: usize,
) {
    let (mut inb, mut out) = (Batch::new(datagram_len), Batch::new(datagram_len));
    loop {
        inb.clear();
        // What is waiting comes with the kernel's arrival times; only when nothing is does
        // the shard await the next datagram, which then arrived while it was idle (fresh).
        let waiting = inb.recv_waiting(socket.as_raw_fd()).unwrap_or_else(|_| {
            st.borrow_mut().recv_errors += 1;
            0
        });
        if waiting == 0 {
            match socket.recv_from(inb.next_buf()).await {
                Ok((n, from)) => inb.push_len(n, from),
                Err(_) => {
                    st.borrow_mut().recv_errors += 1;
                    continue;
                }
            }
            if inb.recv_waiting(socket.as_raw_fd()).is_err() {
                st.borrow_mut().recv_errors += 1;
            }
        }
        if stopping.get() {
            futures_lite::future::yield_now().await;
            continue;
        }
        st.borrow_mut().release_ahead_of(inb.len());
        flush(&st, &socket, &mut out).await;
        {
            let mut st = st.borrow_mut();
            st.receive(&inb);
            st.write_journal();
            // Whatever is due already (a zero or sub-slot delay) goes out with this batch
            // rather than waiting for the timer loop's next turn.
            let now = st.now_us();
            st.core.handle_timeout(now);
        }
        flush(&st, &socket, &mut out).await;
        let _ = wake.try_send(());
        // While datagrams keep arriving, recv_from completes without ever suspending; yield
        // so the timer loop still gets its turn to send what the wheel releases.
        futures_lite::future::yield_now().await;
    }
}

async fn timer_loop<C: ShardCore>(
    st: Rc<RefCell<State<C>>>,
    socket: Rc<UdpSocket>,
    wake: LocalReceiver<()>,
    stopping: Rc<Cell<bool>>,
    (control, reports, strays): (Receiver<Control>, Sender<ShardReport>, Receiver<Stray>),
    datagram_len: usize,
) {
    let mut out = Batch::new(datagram_len);
    let mut stray_batch = Batch::new(datagram_len);
    let mut timer = Timer::new(TICK);
    let mut last_report = Instant::now();
    let mut deadline: Option<Instant> = None;
    loop {
        take_strays(&st, &strays, &mut stray_batch);
        let now = st.borrow().now_us();
        st.borrow_mut().core.handle_timeout(now);
        st.borrow_mut().write_journal();
        flush(&st, &socket, &mut out).await;
        if let Err(e) = st.borrow_mut().core.flush_storage() {
            tracing::error!(error = %e, "inbox flush failed");
        }
        match control.try_recv() {
            Ok(Control::Reload { topology, seed }) => {
                let mut st = st.borrow_mut();
                if let Err(e) = st.core.reload(&topology, Some(seed)) {
                    tracing::error!(error = %e, "reload refused by the shard's core");
                }
                st.write_journal();
            }
            Ok(Control::Shutdown { grace }) => {
                stopping.set(true);
                deadline = Some(Instant::now() + grace);
            }
            Err(TryRecvError::Disconnected) if deadline.is_none() => {
                stopping.set(true);
                deadline = Some(Instant::now());
            }
            Err(_) => {}
        }
        if let Some(d) = deadline {
            let idle = st.borrow().core.held() == 0;
            if idle || Instant::now() >= d {
                let _ = reports.send(st.borrow().report(true));
                return;
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            let _ = reports.try_send(st.borrow().report(false));
            last_report = Instant::now();
        }
        let wait = st
            .borrow()
            .core
            .poll_timeout()
            .map(|t| t.saturating_sub(now));
        let wait = wait.map_or(TICK, Duration::from_micros).min(TICK);
        timer.reset(wait);
        futures_lite::future::or(
            async {
                (&mut timer).await;
            },
            async {
                wake.recv().await;
            },
        )
        .await;
    }
}

/// Processes datagrams other shards received for this one.
fn take_strays<C: ShardCore>(st: &RefCell<State<C>>, strays: &Receiver<Stray>, batch: &mut Batch) {
    loop {
        batch.clear();
        while !batch.is_full() {
            let Ok(s) = strays.try_recv() else { break };
            let n = s.bytes.len().min(batch.next_buf().len());
            batch.next_buf()[..n].copy_from_slice(&s.bytes[..n]);
            batch.push_len(n, s.from);
            st.borrow().stray_buffers.give_back(s.bytes);
        }
        if batch.is_empty() {
            return;
        }
        st.borrow_mut().receive(batch);
    }
}
