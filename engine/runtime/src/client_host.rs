//! Many clients on a few threads. A client is light: a few Poisson timers a second, a
//! datagram now and then. A thread each, as a machine with a few cores runs hundreds of
//! them, spends the machine on waking threads, and their timers fire late (the scheduler,
//! not the clients, decides the Poisson streams). A [`ClientHost`] runs clients on a fixed
//! set of threads instead: each thread waits on all its clients' sockets at once (epoll,
//! through `mio`) and on a heap of their next deadlines, and serves whichever is due.
//!
//! Each client keeps its own socket (a provider tells its clients apart by address and
//! session) and its own handle, a [`RunningClient`], as if it ran alone:
//! [`RunningClient::start`] is a host of one thread with one client.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, unbounded};
use loopix_core::endpoint::Endpoint;
use loopix_core::roles::client::Client;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::client_driver::{ClientCommand, ClientOutput, DriverHealth, RunningClient};
use crate::clock::NetworkClock;

/// The longest a host thread waits, so that commands, stops and new clients are seen
/// promptly.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// After a stop, how long a client keeps running for its next poll to acknowledge what it
/// received (polls keep their Poisson times: none is sent early for it).
const ACK_DRAIN: Duration = Duration::from_secs(5);
/// The largest datagram a client receives.
const MAX_DATAGRAM: usize = 65_536;

/// Threads for `clients` clients: one per core, and no more than there are clients.
pub fn host_threads(clients: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    clients.clamp(1, cores)
}

/// Threads that run clients, each serving many.
pub struct ClientHost {
    threads: Vec<Sender<Slot>>,
    next: usize,
    /// Departure times each client keeps (see [`Self::recording_departures`]).
    departures: usize,
}

impl ClientHost {
    /// `threads` threads (at least one), waiting for clients.
    pub fn new(threads: usize) -> io::Result<Self> {
        let threads = (0..threads.max(1))
            .map(|i| {
                let poll = Poll::new()?;
                let (joins, joined) = unbounded();
                std::thread::Builder::new()
                    .name(format!("loopix-clients-{i}"))
                    .spawn(move || Worker::new(poll).run(&joined))?;
                Ok(joins)
            })
            .collect::<io::Result<_>>()?;
        Ok(Self {
            threads,
            next: 0,
            departures: 0,
        })
    }

    /// Clients started from now on keep the times of their first `per_client` datagrams
    /// sent (µs on the host's clock) and hand them over as they stop
    /// ([`ClientOutput::Departures`]): what the wire saw of their Poisson streams, for a
    /// test of them. The room is taken once, as the client starts.
    pub fn recording_departures(mut self, per_client: usize) -> Self {
        self.departures = per_client;
        self
    }

    /// Binds a socket on `bind` and runs `client` (it knows where its provider is) on the
    /// next thread in turn.
    pub fn start(&mut self, client: Client, bind: SocketAddr) -> io::Result<RunningClient> {
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let (commands, command_rx) = unbounded();
        let (output_tx, output) = unbounded();
        let (done_tx, done) = bounded(0);
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(DriverHealth::default());
        let id = client.id();
        let slot = Slot {
            client,
            socket: UdpSocket::from_std(socket),
            commands: command_rx,
            output: output_tx,
            stop: Arc::clone(&stop),
            health: Arc::clone(&health),
            drain_until: None,
            armed: None,
            departures: Vec::with_capacity(self.departures),
            _done: done_tx,
        };
        let thread = &self.threads[self.next % self.threads.len()];
        self.next += 1;
        thread
            .send(slot)
            .map_err(|_| io::Error::other("the client host's thread has stopped"))?;
        Ok(RunningClient {
            id,
            local_addr,
            commands,
            output,
            stop,
            health,
            done,
        })
    }
}

/// A client and what its thread keeps for it.
struct Slot {
    client: Client,
    socket: UdpSocket,
    commands: Receiver<ClientCommand>,
    output: Sender<ClientOutput>,
    stop: Arc<AtomicBool>,
    health: Arc<DriverHealth>,
    /// Stopping: the client runs until its acks have left, or this time.
    drain_until: Option<Instant>,
    /// The deadline of this client's entry in the timer heap (others are stale).
    armed: Option<u64>,
    /// When its datagrams left, up to the capacity taken at the start.
    departures: Vec<u64>,
    /// Dropped when the client has stopped: what [`RunningClient::stop`] waits for.
    _done: Sender<()>,
}

/// One host thread: its clients, their sockets' readiness and their deadlines.
struct Worker {
    poll: Poll,
    events: Events,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    live: usize,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    clock: NetworkClock,
    datagram: Vec<u8>,
    /// The clients a wait found readable (kept, to allocate once).
    ready: Vec<usize>,
    next_scan: Instant,
}

impl Worker {
    fn new(poll: Poll) -> Self {
        Self {
            poll,
            events: Events::with_capacity(256),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BinaryHeap::new(),
            clock: NetworkClock::start(),
            datagram: vec![0; MAX_DATAGRAM],
            ready: Vec::new(),
            next_scan: Instant::now(),
        }
    }

    /// Serves clients until no more can come and every one has stopped.
    fn run(mut self, joins: &Receiver<Slot>) {
        loop {
            loop {
                match joins.try_recv() {
                    Ok(slot) => self.add(slot),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.live == 0 => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            if Instant::now() >= self.next_scan {
                self.scan();
                self.next_scan = Instant::now() + MAX_WAIT;
            }
            self.fire_due();
            let wait = self.next_scan.saturating_duration_since(Instant::now());
            let wait = self.timers.peek().map_or(wait, |Reverse((t, _))| {
                wait.min(Duration::from_micros(t.saturating_sub(self.clock.now_us())))
            });
            if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Nothing can be received on this thread: every client says so.
                    for slot in self.slots.iter().flatten() {
                        slot.health.recv_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(MAX_WAIT);
                }
                continue;
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.extend(self.events.iter().map(|e| e.token().0));
            for &i in &ready {
                self.receive(i);
            }
            self.ready = ready;
        }
    }

    fn add(&mut self, mut slot: Slot) {
        let i = self.free.pop().unwrap_or(self.slots.len());
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut slot.socket, Token(i), Interest::READABLE)
        {
            // A client that cannot be served stops at once, saying why in its counters.
            tracing::warn!(
                "client {}: cannot wait on its socket: {e}",
                slot.client.id().0
            );
            slot.health.recv_errors.fetch_add(1, Ordering::Relaxed);
            let _ = slot
                .output
                .send(ClientOutput::Stopped(Box::new(slot.client.stats())));
            if i < self.slots.len() {
                self.free.push(i); // a freed slot, still free; a new index was never taken
            }
            return;
        }
        if i == self.slots.len() {
            self.slots.push(Some(slot));
        } else {
            self.slots[i] = Some(slot);
        }
        self.live += 1;
        self.serve_commands(i);
    }

    /// Every client's commands and stop flag.
    fn scan(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                self.serve_commands(i);
            }
        }
    }

    fn serve_commands(&mut self, i: usize) {
        let now = self.clock.now_us();
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        if slot.stop.load(Ordering::SeqCst) {
            if slot.drain_until.is_none() {
                // Nothing new leaves once stopping: what is reported unsent stays unsent.
                let withheld = slot.client.withhold_unsent();
                if !withheld.is_empty() {
                    let _ = slot.output.send(ClientOutput::Withheld(withheld));
                }
                slot.drain_until = Some(Instant::now() + ACK_DRAIN);
            }
            let over = slot.drain_until.is_some_and(|t| Instant::now() >= t);
            if over || !slot.client.acks_pending() {
                return self.finish(i);
            }
        }
        while let Ok(command) = slot.commands.try_recv() {
            let out = match command {
                ClientCommand::Send {
                    to,
                    message,
                    replies,
                } => {
                    ClientOutput::Queued(slot.client.send_with_replies(now, to, &message, replies))
                }
                ClientCommand::Reply { block, data } => match slot.client.reply(&block, &data) {
                    Ok(()) => continue,
                    Err(e) => ClientOutput::ReplyRefused(e),
                },
                ClientCommand::Topology(topology) => match slot.client.reload(&topology) {
                    Ok(()) => continue,
                    Err(e) => ClientOutput::TopologyRefused(e),
                },
            };
            let _ = slot.output.send(out);
        }
        self.flush(i);
    }

    /// Fires every client whose deadline has come.
    fn fire_due(&mut self) {
        let now = self.clock.now_us();
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.armed != Some(t) {
                continue; // stale: the client's deadline moved
            }
            slot.armed = None;
            if let Some(due) = slot.client.poll_timeout().filter(|&d| d <= now) {
                slot.health.record(due, now);
                slot.client.handle_timeout(now);
            }
            self.flush(i);
        }
    }

    /// Takes in everything waiting at client `i`'s socket.
    fn receive(&mut self, i: usize) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        loop {
            match slot.socket.recv_from(&mut self.datagram) {
                Ok((n, from)) => {
                    let now = self.clock.now_us();
                    slot.client.handle_datagram(now, from, &self.datagram[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    slot.health.recv_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        self.flush(i);
    }

    /// Sends what client `i` emits, passes its events on, and re-arms its deadline; ends a
    /// stopping client whose acknowledgements have left.
    fn flush(&mut self, i: usize) {
        let now = self.clock.now_us();
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        while let Some(t) = slot.client.poll_transmit(now, &mut self.datagram) {
            if slot.socket.send_to(&self.datagram[..t.len], t.to).is_err() {
                slot.health.send_errors.fetch_add(1, Ordering::Relaxed);
            } else if slot.departures.len() < slot.departures.capacity() {
                slot.departures.push(now);
            }
        }
        while let Some(e) = slot.client.poll_event() {
            let _ = slot.output.send(ClientOutput::Event(e));
        }
        // Stopping: once a poll has carried the acknowledgements, leave before its answer
        // brings items that would go unacknowledged (they stay stored for the next run).
        if slot.drain_until.is_some() && !slot.client.acks_pending() {
            return self.finish(i);
        }
        let due = slot.client.poll_timeout();
        if due != slot.armed {
            slot.armed = due;
            if let Some(t) = due {
                self.timers.push(Reverse((t, i)));
            }
        }
        if self.timers.len() > 4 * self.live + 64 {
            self.rebuild_timers();
        }
    }

    /// The heap from the live deadlines alone, its stale entries gone.
    fn rebuild_timers(&mut self) {
        self.timers = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some(Reverse((s.as_ref()?.armed?, i))))
            .collect();
    }

    fn finish(&mut self, i: usize) {
        let Some(mut slot) = self.slots[i].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut slot.socket);
        if !slot.departures.is_empty() {
            let _ = slot.output.send(ClientOutput::Departures(std::mem::take(
                &mut slot.departures,
            )));
        }
        let _ = slot
            .output
            .send(ClientOutput::Stopped(Box::new(slot.client.stats())));
        self.free.push(i);
        self.live -= 1;
    }
}
