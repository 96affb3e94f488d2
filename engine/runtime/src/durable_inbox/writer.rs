//! The store's writer: one thread per node that owns every write to the redb file. Shards
//! send it batches of stores and removals over a bounded queue; it commits whatever has
//! arrived from all shards in one transaction (group commit: one fsync for many batches),
//! then tells each shard which of its batches are durable. A commit that fails is tried
//! again, whole, until it succeeds; meanwhile the queue fills and shards refuse new stores
//! (`store_busy`) rather than wait: no shard ever waits on the disk.
//!
//! Tables: `inbox` maps (client, sequence) to id ‖ packet, oldest first per client; `ids`
//! maps (client, id) to its sequence, for reads and removals by id; `stored_at` maps the
//! sequence to (client, time stored), oldest first over all clients. Sequences are given
//! in the order packets are committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use loopix_core::pipeline::latency_histogram::LatencyHistogram;
use loopix_crypto::NodeId;
use redb::{Database, TableDefinition};

pub(super) const INBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inbox");
pub(super) const IDS: TableDefinition<(u64, u64), u64> = TableDefinition::new("ids");
pub(super) const STORED_AT: TableDefinition<u64, (u64, u64)> = TableDefinition::new("stored_at");

/// Batches one commit takes at most: bounds one transaction's size.
const MAX_GROUP: usize = 256;

/// The shortest time between two commits' starts: batches that come meanwhile wait and
/// go in one transaction, so a busy node makes a few hundred fsyncs a second, not one per
/// shard turn, and a packet becomes durable (and can be collected) within a few ms.
const COMMIT_EVERY: Duration = Duration::from_millis(5);

/// How long the writer waits before trying a failed commit again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// A packet to store: client, id, time stored (µs), bytes.
pub(super) type Store = (NodeId, u64, u64, Box<[u8]>);

/// One shard's writes since its last batch.
pub(super) struct Writes {
    pub shard: usize,
    /// The shard's number for this batch: batches of a shard are committed in order.
    pub batch: u64,
    pub stores: Vec<Store>,
    /// Packets acknowledged or expired: client, id.
    pub removes: Vec<(NodeId, u64)>,
}

impl Writes {
    pub(super) fn new(shard: usize, batch: u64) -> Self {
        Self {
            shard,
            batch,
            stores: Vec::new(),
            removes: Vec::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.stores.is_empty() && self.removes.is_empty()
    }
}

/// A shard's batch is durable; its stores come back (their packets, for the shard to keep
/// in memory for polls or reuse).
pub(super) struct Committed {
    pub batch: u64,
    pub stores: Vec<Store>,
}

/// What the writer did, for the metrics (read off the packet path).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions committed, and batches in them.
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    /// Packets written, and removed.
    pub stored: AtomicU64,
    pub removed: AtomicU64,
    /// Commits that failed (each tried again).
    pub failures: AtomicU64,
    /// How long each commit took, fsync included, µs.
    pub commit_us: Mutex<LatencyHistogram>,
    /// The longest commit, µs.
    pub commit_us_max: AtomicU64,
}

/// Injected into the writer (tests and demos): a slow or failing disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterFaults {
    /// Every commit takes this much longer.
    pub commit_delay: Duration,
    /// The first this many commits fail after writing, before they commit.
    pub fail_first: u32,
}

/// The writer thread. [`StoreWriter::join`] ends it once it has committed what the shards
/// sent.
pub struct StoreWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<StoreStats>,
}

impl StoreWriter {
    pub(super) fn start(
        db: Arc<Database>,
        writes: Receiver<Writes>,
        done: Vec<Sender<Committed>>,
        next_seq: u64,
        faults: WriterFaults,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(StoreStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("loopix-store".into())
            .spawn(move || run(&db, &writes, &done, next_seq, faults, &s, &halt))?;
        Ok(Self {
            thread: Some(thread),
            stop,
            stats,
        })
    }

    /// Once the shards have stopped (each handed over its last writes as it did): commits
    /// everything they sent, and ends the writer.
    pub fn join(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the writer waits for writes before it looks whether it is asked to stop.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Failed commits in a row after a stop is asked before the writer gives up (logging
/// what it could not write): a disk that fails for this long will not come back in time.
const RETRIES_WHEN_STOPPING: u32 = 50;

fn run(
    db: &Database,
    writes: &Receiver<Writes>,
    done: &[Sender<Committed>],
    mut next_seq: u64,
    mut faults: WriterFaults,
    stats: &StoreStats,
    stop: &AtomicBool,
) {
    let mut group: Vec<Writes> = Vec::new();
    let mut failed_while_stopping = 0;
    let mut last_commit: Option<Instant> = None;
    loop {
        if group.is_empty() {
            match writes.recv_timeout(IDLE_WAIT) {
                Ok(w) => group.push(w),
                // Asked to stop, and everything sent is committed.
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let wait = last_commit.map_or(Duration::ZERO, |at| {
            COMMIT_EVERY.saturating_sub(at.elapsed())
        });
        if !wait.is_zero() && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(wait);
        }
        while group.len() < MAX_GROUP {
            match writes.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        last_commit = Some(started);
        let fail = faults.fail_first > 0;
        faults.fail_first = faults.fail_first.saturating_sub(1);
        match commit(db, &group, next_seq, faults.commit_delay, fail) {
            Ok(()) => {
                let took = started.elapsed().as_micros() as u64;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .batches
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                if let Ok(mut h) = stats.commit_us.lock() {
                    h.record(took);
                }
                stats.commit_us_max.fetch_max(took, Ordering::Relaxed);
                for w in group.drain(..) {
                    next_seq += w.stores.len() as u64;
                    stats
                        .stored
                        .fetch_add(w.stores.len() as u64, Ordering::Relaxed);
                    stats
                        .removed
                        .fetch_add(w.removes.len() as u64, Ordering::Relaxed);
                    // A shard that has stopped no longer needs to know.
                    let _ = done[w.shard].send(Committed {
                        batch: w.batch,
                        stores: w.stores,
                    });
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "inbox commit failed; trying again");
                if stop.load(Ordering::SeqCst) {
                    failed_while_stopping += 1;
                    if failed_while_stopping >= RETRIES_WHEN_STOPPING {
                        let lost: usize = group.iter().map(|w| w.stores.len()).sum();
                        tracing::error!(
                            lost,
                            "stopping with the store failing: packets not written"
                        );
                        return;
                    }
                }
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }
}

/// Writes a group of batches in one transaction; `fail`: drop it uncommitted (a test's
/// failing disk).
fn commit(
    db: &Database,
    group: &[Writes],
    first_seq: u64,
    delay: Duration,
    fail: bool,
) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut inbox = tx.open_table(INBOX)?;
        let mut ids = tx.open_table(IDS)?;
        let mut stored_at = tx.open_table(STORED_AT)?;
        let mut seq = first_seq;
        let mut value = Vec::new();
        for w in group {
            for (client, id, at_us, packet) in &w.stores {
                value.clear();
                value.extend_from_slice(&id.to_le_bytes());
                value.extend_from_slice(packet);
                inbox.insert((client.0, seq), value.as_slice())?;
                ids.insert((client.0, *id), seq)?;
                stored_at.insert(seq, (client.0, *at_us))?;
                seq += 1;
            }
            for &(client, id) in &w.removes {
                let seq = ids.remove((client.0, id))?.map(|g| g.value());
                if let Some(seq) = seq {
                    inbox.remove((client.0, seq))?;
                    stored_at.remove(seq)?;
                }
            }
        }
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    if fail {
        // Dropped uncommitted: redb aborts the transaction.
        return Err(redb::Error::Corrupted("injected commit failure".into()));
    }
    tx.commit()?;
    Ok(())
}
