//! A running client as its owner sees it: commands in, outputs and events out, its health,
//! and a stop that lets its last acknowledgements leave. Clients are many and light, so
//! they need no executor: they run on the threads of a [`crate::client_host::ClientHost`],
//! which feeds each client core every datagram with its source (the core keeps only its
//! provider's that authenticate), fires its timers, sends what it emits where it says and
//! passes its events out over a channel.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use loopix_core::roles::client::{Client, ClientEvent, ClientStats, ReplyBlock};
use loopix_crypto::NodeId;

/// Asks a running client to do something.
#[derive(Debug)]
pub enum ClientCommand {
    /// Queue `message` for `to`, with `replies` reply blocks it can be answered through.
    Send {
        to: NodeId,
        message: Vec<u8>,
        replies: u8,
    },
    /// Answer through a reply block a received message carried.
    Reply {
        block: Box<ReplyBlock>,
        data: Vec<u8>,
    },
    /// Build paths from this topology from now on (the next epoch's document).
    Topology(Box<loopix_core::network::topology::Topology>),
}

/// What comes out of a running client.
#[derive(Debug)]
pub enum ClientOutput {
    Event(ClientEvent),
    /// A message was queued under this id (or refused).
    Queued(Result<u64, loopix_core::roles::client::SendError>),
    /// An answer through a reply block was refused (too long, or too many queued).
    ReplyRefused(loopix_core::roles::client::SendError),
    /// A new topology was refused (the client is no longer in it as it was).
    TopologyRefused(loopix_core::roles::BuildError),
    /// Stopping: these messages' fragments never sent were taken back (none of them will
    /// leave; a message some of whose fragments left will not arrive whole).
    Withheld(Vec<u64>),
    /// Stopping: when its datagrams left, µs on its host's clock (only from a host
    /// recording them: [`crate::client_host::ClientHost::recording_departures`]).
    Departures(Vec<u64>),
    /// Final counters, as the client stops.
    /// (Boxed: sent once, and the other outputs stay small.)
    Stopped(Box<ClientStats>),
}

/// A client running on a host's thread ([`crate::client_host::ClientHost`]).
pub struct RunningClient {
    pub id: NodeId,
    pub local_addr: SocketAddr,
    pub(crate) commands: Sender<ClientCommand>,
    pub output: Receiver<ClientOutput>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) health: Arc<DriverHealth>,
    /// Disconnected once the client has stopped.
    pub(crate) done: Receiver<()>,
}

/// What the driver saw go wrong around the client core. How late the client's timers
/// fired: a machine too busy to run its clients on time shows here first (their Poisson
/// streams and the latency figures bend with it). And what its socket refused: each send
/// error a frame that did not leave.
#[derive(Debug, Default)]
pub struct DriverHealth {
    /// The most a timer fired after its deadline, µs.
    pub max_us: AtomicU64,
    /// Timers that fired more than [`LATE`] after their deadline.
    pub late: AtomicU64,
    pub send_errors: AtomicU64,
    /// Receives that failed other than by timing out.
    pub recv_errors: AtomicU64,
}

impl DriverHealth {
    /// A timer due at `deadline_us` fired at `now_us`. A deadline of 0 means "now" (work
    /// queued), not a timer that fell behind.
    pub fn record(&self, deadline_us: u64, now_us: u64) {
        if deadline_us == 0 {
            return;
        }
        let late = now_us.saturating_sub(deadline_us);
        self.max_us.fetch_max(late, Ordering::Relaxed);
        if late > LATE.as_micros() as u64 {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A timer this late counts in [`DriverHealth::late`].
pub const LATE: Duration = Duration::from_millis(50);

impl RunningClient {
    /// Binds a socket on `bind` and starts `client` (it knows where its provider is) on a
    /// thread of its own: a host of one. Many clients: [`crate::client_host::ClientHost`].
    pub fn start(client: Client, bind: SocketAddr) -> io::Result<Self> {
        crate::client_host::ClientHost::new(1)?.start(client, bind)
    }

    /// Queues a message; the answer arrives on `output` as [`ClientOutput::Queued`].
    pub fn send(&self, to: NodeId, message: Vec<u8>) {
        self.send_with_replies(to, message, 0);
    }

    /// Queues a message with `replies` reply blocks; the answer arrives on `output` as
    /// [`ClientOutput::Queued`], answers through the blocks as
    /// [`ClientEvent::ReplyReceived`].
    pub fn send_with_replies(&self, to: NodeId, message: Vec<u8>, replies: u8) {
        let _ = self.commands.send(ClientCommand::Send {
            to,
            message,
            replies,
        });
    }

    /// Answers through `block` (from [`ClientEvent::RepliesOffered`]); a refusal arrives
    /// on `output` as [`ClientOutput::ReplyRefused`].
    pub fn reply(&self, block: ReplyBlock, data: Vec<u8>) {
        let _ = self.commands.send(ClientCommand::Reply {
            block: Box::new(block),
            data,
        });
    }

    /// Where commands to this client go, for a thread that is not its owner's (one that
    /// follows the directory, say).
    pub fn command_sender(&self) -> Sender<ClientCommand> {
        self.commands.clone()
    }

    /// How late its timers have fired so far: (the most, µs; how many beyond [`LATE`]).
    pub fn timer_lag(&self) -> (u64, u64) {
        (
            self.health.max_us.load(Ordering::Relaxed),
            self.health.late.load(Ordering::Relaxed),
        )
    }

    /// What its socket refused so far: (sends, receives).
    pub fn socket_errors(&self) -> (u64, u64) {
        (
            self.health.send_errors.load(Ordering::Relaxed),
            self.health.recv_errors.load(Ordering::Relaxed),
        )
    }

    /// Asks the client to stop (see [`Self::stop`]) without waiting: stopping many clients,
    /// ask them all first, so their last polls overlap.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the client once the items it received are acknowledged (its next poll, at
    /// most 5 s on) and returns then; its last output is [`ClientOutput::Stopped`], whose
    /// `unacked_items` says if some were not.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Nothing is ever sent: this returns when the host drops the client's end.
        let _ = self.done.recv();
    }
}

impl Drop for RunningClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hands every topology `sync` brings (one per epoch boundary) to each of `clients`,
/// counting them in `taken`, on the sync's own thread until the watch is dropped.
pub fn follow_directory(
    sync: crate::directory_client::DirectorySync,
    clients: &[RunningClient],
    taken: Arc<AtomicU64>,
) -> io::Result<crate::directory_client::DirectoryWatch> {
    let senders: Vec<_> = clients.iter().map(RunningClient::command_sender).collect();
    sync.spawn(move |topology| {
        taken.fetch_add(1, Ordering::SeqCst);
        for tx in &senders {
            let _ = tx.send(ClientCommand::Topology(Box::new(topology.clone())));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_timers_over_50_ms_late_and_keeps_the_worst() {
        let lag = DriverHealth::default();
        lag.record(1_000_000, 1_000_400);
        lag.record(0, 5_000_000); // queued work, not a late timer
        lag.record(2_000_000, 2_060_000);
        lag.record(3_000_000, 3_049_000);
        assert_eq!(lag.max_us.load(Ordering::Relaxed), 60_000);
        assert_eq!(lag.late.load(Ordering::Relaxed), 1);
    }
}
