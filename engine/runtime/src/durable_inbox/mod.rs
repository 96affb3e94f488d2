//! Provider inboxes on disk, in redb: a provider stopped, killed or restarted keeps every
//! packet it stored and no client acknowledged, and no shard ever waits on the disk.
//!
//! Each shard holds the inboxes of the clients whose home it is
//! ([`loopix_core::pipeline::steering::home_shard`]) as a [`ShardInbox`]: in memory, the id
//! and time of every packet (not its bytes); on disk, everything. A store or an ack
//! changes the memory index at once and is queued for the node's one writer thread
//! ([`writer`]), which commits what all shards queued in one transaction and tells each
//! shard which of its batches are durable. A packet is handed out in a poll only once its
//! batch is durable, so a crash (SIGKILL) can lose only packets no client has seen; a
//! sender's acknowledgement (SURB-ACK) comes from its recipient, so such a loss is
//! retransmitted. A durable packet's bytes stay in the shard's memory too (up to
//! [`CACHED_PACKETS`] a shard), so a poll reads nothing from the file: a reader can wait on
//! redb's writer while it commits. Packets beyond that, and those loaded at start, are read
//! from the file.
//!
//! Bounds: per client; in all, split evenly over the shards (each holds `total / shards`);
//! and per shard, the packets queued for the writer but not yet durable (`store_queue`):
//! beyond it a store is refused as `store_busy` (a disk slower than the traffic), never
//! waited for.
//!
//! At open, what the file holds is loaded into the shards by each client's home for the
//! shard count the node runs now: a node restarted with another shard count finds every
//! client's packets on its new home shard.

mod writer;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use loopix_core::pipeline::steering::home_shard;
use loopix_core::roles::inbox::{InboxStore, StoreRefused};
use loopix_crypto::NodeId;
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::blocking::Watch;

use writer::{Committed, IDS, INBOX, STORED_AT, Writes};
pub use writer::{StoreStats, StoreWriter, WriterFaults};

/// A store's bounds and how its writer behaves.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub per_client: usize,
    /// Packets in all, over every shard.
    pub total: usize,
    /// Packets a shard may have queued for the writer and not yet durable.
    pub queue: usize,
    pub faults: WriterFaults,
}

/// Batches queued for the writer, per shard, before a shard keeps its writes to itself
/// until the next turn (its stores bounded by [`StoreOptions::queue`] meanwhile).
const QUEUED_BATCHES_PER_SHARD: usize = 64;

/// Durable packets a shard keeps in memory for polls (~40 MB at the default packet size).
pub const CACHED_PACKETS: usize = 16_384;

/// Packet buffers a shard keeps for reuse.
const SPARE_BUFFERS: usize = 4096;

/// How long a stopping shard waits for room to hand its last writes to the writer.
const LAST_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Opens (or creates) the store at `path` at time `now_us` for a node of `shards` shards:
/// the writer thread, and each shard's inboxes.
pub fn open(
    path: &Path,
    shards: usize,
    options: StoreOptions,
    now_us: u64,
) -> Result<(StoreWriter, Vec<ShardInbox>), redb::Error> {
    owner_only(path)?;
    let db = Arc::new(Database::create(path)?);
    let shards = shards.max(1);
    let mut loaded: Vec<HashMap<NodeId, VecDeque<Entry>>> = vec![HashMap::new(); shards];
    let mut next_seq = 0;
    let tx = db.begin_write()?;
    {
        let inbox = tx.open_table(INBOX)?;
        tx.open_table(IDS)?;
        let mut stored_at = tx.open_table(STORED_AT)?;
        for entry in inbox.iter()? {
            let (key, value) = entry?;
            let (client, seq) = key.value();
            next_seq = next_seq.max(seq + 1);
            let Some(id) = value
                .value()
                .first_chunk::<8>()
                .map(|b| u64::from_le_bytes(*b))
            else {
                continue;
            };
            // A store written before `stored_at` existed: stamped with the time it opens.
            let stamped = stored_at.get(seq)?.map(|g| g.value().1);
            let at_us = match stamped {
                Some(at) => at,
                None => {
                    stored_at.insert(seq, (client, now_us))?;
                    now_us
                }
            };
            let client = NodeId(client);
            loaded[home_shard(client, shards)]
                .entry(client)
                .or_default()
                .push_back(Entry {
                    id,
                    at_us,
                    batch: 0,
                    bytes: None,
                });
        }
    }
    tx.commit()?;
    let (to_writer, writes) = bounded(QUEUED_BATCHES_PER_SHARD * shards);
    let (done_tx, done_rx): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| bounded(QUEUED_BATCHES_PER_SHARD * shards + 1))
        .unzip();
    let writer = StoreWriter::start(db.clone(), writes, done_tx, next_seq, options.faults)
        .map_err(redb::Error::Io)?;
    let inboxes = loaded
        .into_iter()
        .zip(done_rx)
        .enumerate()
        .map(|(shard, (index, from_writer))| {
            let entries = index.values().map(VecDeque::len).sum();
            ShardInbox {
                db: db.clone(),
                shard,
                index,
                entries,
                committed_through: 0,
                pending: Writes::new(shard, 1),
                in_flight: VecDeque::new(),
                uncommitted: 0,
                to_writer: to_writer.clone(),
                from_writer,
                spare: Vec::new(),
                cached: 0,
                per_client: options.per_client,
                total: options.total.div_ceil(shards),
                queue: options.queue,
                longest_wait_ns: Cell::new(0),
                stopped: false,
            }
        })
        .collect();
    Ok((writer, inboxes))
}

/// A stored packet as a shard's memory holds it.
#[derive(Clone, Debug)]
struct Entry {
    id: u64,
    at_us: u64,
    /// The shard's batch it was written in (0: loaded from the file).
    batch: u64,
    /// Its bytes, once durable, if the shard keeps them ([`CACHED_PACKETS`]).
    bytes: Option<Box<[u8]>>,
}

/// The inboxes of one shard's clients. See the module docs.
pub struct ShardInbox {
    db: Arc<Database>,
    shard: usize,
    /// Each client's packets, oldest first: the durable ones first, then those not yet.
    index: HashMap<NodeId, VecDeque<Entry>>,
    /// Packets in `index`.
    entries: usize,
    /// Every batch up to this one is durable.
    committed_through: u64,
    /// Writes for the next batch.
    pending: Writes,
    /// Batches sent and not yet durable, with how many stores each holds.
    in_flight: VecDeque<(u64, usize)>,
    /// Stores not yet durable (pending and in flight).
    uncommitted: usize,
    to_writer: Sender<Writes>,
    from_writer: Receiver<Committed>,
    spare: Vec<Box<[u8]>>,
    /// Entries whose bytes are in memory.
    cached: usize,
    per_client: usize,
    /// This shard's share of the store's bound.
    total: usize,
    queue: usize,
    /// The longest a call waited on the file or the writer's queue, ns ([`Watch`]).
    longest_wait_ns: Cell<u64>,
    /// The writer is gone: nothing more can be made durable.
    stopped: bool,
}

impl ShardInbox {
    fn is_durable(&self, e: &Entry) -> bool {
        e.batch <= self.committed_through
    }

    /// Records how long a call that touched the file waited on it.
    fn waited(&self, watch: &Watch) {
        let ns = watch.waited_ns();
        if ns > self.longest_wait_ns.get() {
            self.longest_wait_ns.set(ns);
        }
    }

    /// Takes the writer's news: which batches are durable.
    fn take_commits(&mut self) {
        while let Ok(c) = self.from_writer.try_recv() {
            self.committed_through = self.committed_through.max(c.batch);
            while let Some(&(batch, stores)) = self.in_flight.front()
                && batch <= c.batch
            {
                self.uncommitted -= stores;
                self.in_flight.pop_front();
            }
            for (client, id, _, packet) in c.stores {
                let entry = match self.cached < CACHED_PACKETS {
                    true => self
                        .index
                        .get_mut(&client)
                        .and_then(|q| q.iter_mut().rev().find(|e| e.id == id)),
                    false => None,
                };
                match entry {
                    Some(e) => {
                        e.bytes = Some(packet);
                        self.cached += 1;
                    }
                    None => self.recycle(packet),
                }
            }
        }
    }

    /// Keeps a packet buffer for a later store, if there is room.
    fn recycle(&mut self, packet: Box<[u8]>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(packet);
        }
    }

    /// An entry leaves the index: its bytes, if kept, are freed for reuse.
    fn forget(&mut self, e: Entry) {
        if let Some(b) = e.bytes {
            self.cached -= 1;
            self.recycle(b);
        }
    }

    fn committed(&self, client: NodeId, id: u64) -> Result<Option<Vec<u8>>, redb::Error> {
        let tx = self.db.begin_read()?;
        let Some(seq) = tx.open_table(IDS)?.get((client.0, id))?.map(|g| g.value()) else {
            return Ok(None);
        };
        let value = tx
            .open_table(INBOX)?
            .get((client.0, seq))?
            .map(|g| g.value().to_vec());
        Ok(value)
    }
}

/// Makes the store file `path` readable and writable by its owner only (mode 0600),
/// creating it empty if missing: what clients are sent is theirs, sealed or not.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl InboxStore for ShardInbox {
    fn store(
        &mut self,
        client: NodeId,
        id: u64,
        at_us: u64,
        packet: &[u8],
    ) -> Result<(), StoreRefused> {
        if self.uncommitted >= self.queue || self.stopped {
            return Err(StoreRefused::Busy);
        }
        if self.entries >= self.total {
            return Err(StoreRefused::StoreFull);
        }
        let q = self.index.entry(client).or_default();
        if q.len() >= self.per_client {
            return Err(StoreRefused::InboxFull);
        }
        q.push_back(Entry {
            id,
            at_us,
            batch: self.pending.batch,
            bytes: None,
        });
        let mut buf = match self.spare.pop() {
            Some(b) if b.len() == packet.len() => b,
            _ => vec![0u8; packet.len()].into_boxed_slice(),
        };
        buf.copy_from_slice(packet);
        self.pending.stores.push((client, id, at_us, buf));
        self.entries += 1;
        self.uncommitted += 1;
        Ok(())
    }

    fn oldest(&self, client: NodeId, max: usize, out: &mut Vec<u64>) {
        if let Some(q) = self.index.get(&client) {
            let durable = q.iter().take_while(|e| self.is_durable(e));
            out.extend(durable.take(max).map(|e| e.id));
        }
    }

    fn read(&self, client: NodeId, id: u64, out: &mut [u8]) -> bool {
        let entry = self
            .index
            .get(&client)
            .and_then(|q| q.iter().find(|e| e.id == id))
            .filter(|e| self.is_durable(e));
        let Some(entry) = entry else {
            return false;
        };
        if let Some(bytes) = &entry.bytes {
            if bytes.len() != out.len() {
                return false;
            }
            out.copy_from_slice(bytes);
            return true;
        }
        let watch = Watch::start();
        let found = self.committed(client, id);
        self.waited(&watch);
        match found {
            Ok(Some(v)) if v.len() == 8 + out.len() => {
                out.copy_from_slice(&v[8..]);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "inbox read failed");
                false
            }
        }
    }

    fn ack(&mut self, client: NodeId, id: u64) -> bool {
        let Some(q) = self.index.get_mut(&client) else {
            return false;
        };
        let through = self.committed_through;
        // Polls ack every id they got, dummies' random ones too: only durable packets were
        // handed out, so only they can be acknowledged.
        let Some(at) = q.iter().position(|e| e.id == id && e.batch <= through) else {
            return false;
        };
        let removed = q.remove(at);
        if q.is_empty() {
            self.index.remove(&client);
        }
        if let Some(e) = removed {
            self.forget(e);
        }
        self.entries -= 1;
        self.pending.removes.push((client, id));
        true
    }

    fn expire(&mut self, stored_before_us: u64, max: usize) -> usize {
        let through = self.committed_through;
        let mut gone = Vec::new();
        for (&client, q) in &mut self.index {
            while gone.len() < max
                && q.front()
                    .is_some_and(|e| e.batch <= through && e.at_us < stored_before_us)
            {
                if let Some(e) = q.pop_front() {
                    self.pending.removes.push((client, e.id));
                    gone.push(e);
                }
            }
        }
        self.index.retain(|_, q| !q.is_empty());
        let removed = gone.len();
        // Their bytes, if kept in memory, are freed like an acknowledged packet's.
        for e in gone {
            self.forget(e);
        }
        self.entries -= removed;
        removed
    }

    fn len(&self, client: NodeId) -> usize {
        self.index.get(&client).map_or(0, |q| {
            let fresh = q.iter().rev().take_while(|e| !self.is_durable(e)).count();
            q.len() - fresh
        })
    }

    fn total(&self) -> usize {
        self.entries - self.uncommitted
    }

    /// Hands the writes since the last call to the writer (never waiting: if its queue is
    /// full they stay for the next call), and takes its news of what is durable.
    fn flush(&mut self) -> Result<(), String> {
        let watch = Watch::start();
        self.take_commits();
        if !self.pending.is_empty() {
            let next = Writes::new(self.shard, self.pending.batch + 1);
            let writes = std::mem::replace(&mut self.pending, next);
            let (batch, stores) = (writes.batch, writes.stores.len());
            match self.to_writer.try_send(writes) {
                Ok(()) => self.in_flight.push_back((batch, stores)),
                Err(TrySendError::Full(writes)) => self.pending = writes,
                Err(TrySendError::Disconnected(writes)) => {
                    self.pending = writes;
                    self.stopped = true;
                }
            }
        }
        self.waited(&watch);
        if self.stopped {
            return Err("the store's writer has stopped".into());
        }
        Ok(())
    }

    fn longest_wait_us(&self) -> u64 {
        self.longest_wait_ns.get() / 1_000
    }
}

/// A store dropped with writes not yet handed over (a shard's last turn found the
/// writer's queue full) hands them over now, waiting a little for room.
impl Drop for ShardInbox {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let writes = std::mem::replace(&mut self.pending, Writes::new(self.shard, 0));
        if self
            .to_writer
            .send_timeout(writes, LAST_WRITES_WAIT)
            .is_err()
        {
            tracing::error!(
                shard = self.shard,
                "the store's writer took no last writes: packets stored since the last \
                 commit are lost"
            );
        }
    }
}

#[cfg(test)]
mod tests;
