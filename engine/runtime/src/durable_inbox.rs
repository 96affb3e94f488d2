//! Provider inboxes on disk, in redb: a provider stopped, killed or restarted keeps every
//! packet it stored and no client acknowledged.
//!
//! Stores and acks are buffered and committed together by [`InboxStore::flush`], which the
//! shard calls every timer tick (at most 10 ms apart) and on shutdown: one fsync per tick,
//! not per packet. Polls read only committed packets, so nothing is handed out before it is
//! durable.
//!
//! Counts (`len`, `total`) are of committed packets only.
//!
//! Tables: `inbox` maps (client, sequence) to id ‖ packet, oldest first per client;
//! `ids` maps (client, id) to its sequence, for reads and acks by id; `stored_at` maps the
//! sequence to (client, time stored), oldest first over all clients, so expiry reads only
//! what it deletes. Sequences are given in the order packets are stored, so they are in
//! time order too (a system clock stepped back across a restart only delays expiry by the
//! step). A store written before `stored_at` existed has its packets stamped with the time
//! it is opened.

use std::collections::HashMap;
use std::path::Path;

use loopix_core::roles::inbox::{InboxStore, StoreRefused};
use loopix_crypto::NodeId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const INBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inbox");
const IDS: TableDefinition<(u64, u64), u64> = TableDefinition::new("ids");
const STORED_AT: TableDefinition<u64, (u64, u64)> = TableDefinition::new("stored_at");

/// Durable inboxes, each bounded to `max_per_client` packets, all to `max_total`.
pub struct DurableInbox {
    db: Database,
    /// Stores not yet committed: client, id, time stored, packet.
    stores: Vec<(NodeId, u64, u64, Box<[u8]>)>,
    acks: Vec<(NodeId, u64)>,
    counts: HashMap<NodeId, usize>,
    /// Committed packets in all (the sum of `counts`).
    total: usize,
    next_seq: u64,
    max_per_client: usize,
    max_total: usize,
    /// Tests: the next commit fails after writing, before it commits (a full disk, an I/O
    /// error), to show that nothing buffered is lost.
    #[cfg(test)]
    fail_next_commit: bool,
}

impl DurableInbox {
    /// Opens (or creates) the store at `path` at time `now_us` and counts what it holds.
    pub fn open(
        path: &Path,
        max_per_client: usize,
        max_total: usize,
        now_us: u64,
    ) -> Result<Self, redb::Error> {
        owner_only(path)?;
        let db = Database::create(path)?;
        let (mut counts, mut next_seq) = (HashMap::new(), 0);
        let tx = db.begin_write()?;
        {
            let inbox = tx.open_table(INBOX)?;
            tx.open_table(IDS)?;
            let mut stored_at = tx.open_table(STORED_AT)?;
            for entry in inbox.iter()? {
                let (key, _) = entry?;
                let (client, seq) = key.value();
                *counts.entry(NodeId(client)).or_default() += 1;
                next_seq = next_seq.max(seq + 1);
                if stored_at.get(seq)?.is_none() {
                    stored_at.insert(seq, (client, now_us))?;
                }
            }
        }
        tx.commit()?;
        let total = counts.values().sum();
        Ok(Self {
            db,
            stores: Vec::new(),
            acks: Vec::new(),
            counts,
            total,
            next_seq,
            max_per_client,
            max_total,
            #[cfg(test)]
            fail_next_commit: false,
        })
    }

    /// Writes the buffered stores and acks in one transaction. Only once it has committed
    /// are the buffers cleared and the counts moved: a commit that fails (a full disk, an
    /// I/O error) loses nothing, and the next flush tries the same again.
    fn commit(&mut self) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        let mut removed = Vec::new();
        {
            let mut inbox = tx.open_table(INBOX)?;
            let mut ids = tx.open_table(IDS)?;
            let mut stored_at = tx.open_table(STORED_AT)?;
            for (seq, (client, id, at_us, packet)) in (self.next_seq..).zip(&self.stores) {
                let mut value = Vec::with_capacity(8 + packet.len());
                value.extend_from_slice(&id.to_le_bytes());
                value.extend_from_slice(packet);
                inbox.insert((client.0, seq), value.as_slice())?;
                ids.insert((client.0, *id), seq)?;
                stored_at.insert(seq, (client.0, *at_us))?;
            }
            for &(client, id) in &self.acks {
                let seq = ids.remove((client.0, id))?.map(|g| g.value());
                if let Some(seq) = seq {
                    inbox.remove((client.0, seq))?;
                    stored_at.remove(seq)?;
                    removed.push(client);
                }
            }
        }
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_commit) {
            // Dropped uncommitted: redb aborts the transaction.
            return Err(redb::Error::Corrupted("injected commit failure".into()));
        }
        tx.commit()?;
        self.next_seq += self.stores.len() as u64;
        for (client, ..) in self.stores.drain(..) {
            *self.counts.entry(client).or_default() += 1;
            self.total += 1;
        }
        self.acks.clear();
        for client in removed {
            self.forget(client);
        }
        Ok(())
    }

    /// One committed packet of `client` is gone.
    fn forget(&mut self, client: NodeId) {
        if let Some(n) = self.counts.get_mut(&client) {
            *n = n.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Deletes up to `max` committed packets stored before `before_us`, in one transaction.
    fn expire_committed(&mut self, before_us: u64, max: usize) -> Result<usize, redb::Error> {
        let mut victims = Vec::new();
        {
            let tx = self.db.begin_read()?;
            for entry in tx.open_table(STORED_AT)?.iter()?.take(max) {
                let (seq, value) = entry?;
                let (client, at_us) = value.value();
                if at_us >= before_us {
                    break;
                }
                victims.push((seq.value(), NodeId(client)));
            }
        }
        if victims.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write()?;
        {
            let mut inbox = tx.open_table(INBOX)?;
            let mut ids = tx.open_table(IDS)?;
            let mut stored_at = tx.open_table(STORED_AT)?;
            for &(seq, client) in &victims {
                stored_at.remove(seq)?;
                let id = inbox
                    .remove((client.0, seq))?
                    .and_then(|v| v.value().first_chunk::<8>().copied());
                if let Some(id) = id {
                    ids.remove((client.0, u64::from_le_bytes(id)))?;
                    self.forget(client);
                }
            }
        }
        tx.commit()?;
        Ok(victims.len())
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

    fn is_committed(&self, client: NodeId, id: u64) -> bool {
        let lookup = || -> Result<bool, redb::Error> {
            let tx = self.db.begin_read()?;
            Ok(tx.open_table(IDS)?.get((client.0, id))?.is_some())
        };
        lookup().unwrap_or_else(|e| {
            tracing::error!(error = %e, "inbox read failed");
            false
        })
    }

    fn oldest_committed(
        &self,
        client: NodeId,
        max: usize,
        out: &mut Vec<u64>,
    ) -> Result<(), redb::Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INBOX)?;
        for entry in table.range((client.0, 0)..=(client.0, u64::MAX))?.take(max) {
            let (_, value) = entry?;
            if let Some(id) = value.value().first_chunk::<8>() {
                out.push(u64::from_le_bytes(*id));
            }
        }
        Ok(())
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

impl InboxStore for DurableInbox {
    fn store(
        &mut self,
        client: NodeId,
        id: u64,
        at_us: u64,
        packet: &[u8],
    ) -> Result<(), StoreRefused> {
        if self.total + self.stores.len() >= self.max_total {
            return Err(StoreRefused::StoreFull);
        }
        let buffered = self.stores.iter().filter(|s| s.0 == client).count();
        if self.len(client) + buffered >= self.max_per_client {
            return Err(StoreRefused::InboxFull);
        }
        self.stores.push((client, id, at_us, packet.into()));
        Ok(())
    }

    fn oldest(&self, client: NodeId, max: usize, out: &mut Vec<u64>) {
        if let Err(e) = self.oldest_committed(client, max, out) {
            tracing::error!(error = %e, "inbox read failed");
        }
    }

    fn read(&self, client: NodeId, id: u64, out: &mut [u8]) -> bool {
        match self.committed(client, id) {
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
        let buffered = self.stores.iter().any(|s| s.0 == client && s.1 == id);
        let known = buffered || self.is_committed(client, id);
        // Polls ack every id they got, dummies' random ones too: only real ones are queued.
        if known {
            self.acks.push((client, id));
        }
        known
    }

    fn expire(&mut self, stored_before_us: u64, max: usize) -> usize {
        self.expire_committed(stored_before_us, max)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "inbox expiry failed");
                0
            })
    }

    fn len(&self, client: NodeId) -> usize {
        self.counts.get(&client).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.total
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.stores.is_empty() && self.acks.is_empty() {
            return Ok(());
        }
        self.commit().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("loopix-inbox-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn the_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = temp("mode");
        drop(DurableInbox::open(&path, 10, 1_000, 0).unwrap());
        assert_eq!(mode(&path), 0o600, "a new store");
        // One left readable by others (made before, or by hand) is closed when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut s = DurableInbox::open(&path, 10, 1_000, 0).unwrap();
        assert_eq!(mode(&path), 0o600, "an existing store");
        s.store(NodeId(1), 1, 0, b"kept").unwrap();
        s.flush().unwrap();
        drop(s);
        assert_eq!(
            DurableInbox::open(&path, 10, 1_000, 0)
                .unwrap()
                .len(NodeId(1)),
            1
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn only_flushed_packets_are_handed_out_and_they_survive_reopening() {
        let path = temp("reopen");
        let c = NodeId(7);
        {
            let mut s = DurableInbox::open(&path, 10, 1_000, 0).unwrap();
            s.store(c, 100, 0, b"first").unwrap();
            let mut ids = Vec::new();
            s.oldest(c, 5, &mut ids);
            assert!(ids.is_empty(), "not durable yet, not handed out");
            s.flush().unwrap();
            s.store(c, 101, 0, b"secnd").unwrap();
            s.flush().unwrap();
            s.store(c, 102, 0, b"lost!").unwrap(); // never flushed: as if killed now
        }
        let mut s = DurableInbox::open(&path, 10, 1_000, 0).unwrap();
        assert_eq!(
            (s.len(c), s.total()),
            (2, 2),
            "counts rebuilt from the store"
        );
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![100, 101]);
        let mut buf = [0u8; 5];
        assert!(s.read(c, 101, &mut buf));
        assert_eq!(&buf, b"secnd");
        assert!(s.ack(c, 100));
        assert!(
            !s.ack(c, 999),
            "an id that was never stored is not acknowledged"
        );
        s.flush().unwrap();
        ids.clear();
        s.oldest(c, 5, &mut ids);
        assert_eq!((ids, s.len(c)), (vec![101], 1));
        std::fs::remove_file(&path).unwrap();
    }

    /// A commit that fails (a full disk, an I/O error) loses nothing and moves no count:
    /// what was buffered, stores and acks, is committed whole by the next flush.
    #[test]
    fn a_failed_commit_loses_nothing_and_the_next_flush_commits_it() {
        let path = temp("failed-commit");
        let c = NodeId(7);
        let mut s = DurableInbox::open(&path, 10, 1_000, 0).unwrap();
        s.store(c, 100, 0, b"first").unwrap();
        s.flush().unwrap();
        s.store(c, 101, 0, b"secnd").unwrap();
        assert!(s.ack(c, 100));
        s.fail_next_commit = true;
        assert!(s.flush().is_err());
        assert_eq!((s.len(c), s.total()), (1, 1), "counts as committed");
        let mut ids = Vec::new();
        s.oldest(c, 5, &mut ids);
        assert_eq!(ids, vec![100], "the failed transaction left nothing behind");
        s.flush().unwrap();
        ids.clear();
        s.oldest(c, 5, &mut ids);
        assert_eq!((ids, s.len(c), s.total()), (vec![101], 1, 1));
        drop(s);
        let s = DurableInbox::open(&path, 10, 1_000, 0).unwrap();
        assert_eq!((s.len(c), s.total()), (1, 1), "and so it is on disk");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_full_inbox_refuses_more() {
        let path = temp("full");
        let mut s = DurableInbox::open(&path, 2, 1_000, 0).unwrap();
        let c = NodeId(1);
        s.store(c, 1, 0, b"a").unwrap();
        s.store(c, 2, 0, b"b").unwrap();
        assert_eq!(s.store(c, 3, 0, b"c"), Err(StoreRefused::InboxFull));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_whole_store_is_bounded_and_the_bound_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("loopix-inbox-total-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inbox.redb");
        {
            let mut s = DurableInbox::open(&path, 10, 3, 0).unwrap();
            for c in 1..=3 {
                s.store(NodeId(c), c, 0, b"p").unwrap();
            }
            assert_eq!(s.store(NodeId(9), 9, 0, b"p"), Err(StoreRefused::StoreFull));
            s.flush().unwrap();
        }
        let mut s = DurableInbox::open(&path, 10, 3, 0).unwrap();
        assert_eq!(s.total(), 3);
        assert_eq!(s.store(NodeId(9), 9, 0, b"p"), Err(StoreRefused::StoreFull));
        assert!(s.ack(NodeId(2), 2));
        s.flush().unwrap();
        assert_eq!(s.total(), 2);
        assert!(s.store(NodeId(9), 9, 0, b"p").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn packets_expire_after_a_reopen_and_acks_of_expired_ones_are_harmless() {
        let path = temp("expire");
        let (a, b) = (NodeId(1), NodeId(2));
        {
            let mut s = DurableInbox::open(&path, 10, 100, 0).unwrap();
            s.store(a, 1, 100, b"p").unwrap();
            s.store(b, 2, 200, b"p").unwrap();
            s.store(a, 3, 300, b"p").unwrap();
            assert_eq!(s.expire(1_000, 10), 0, "nothing committed, nothing expires");
            s.flush().unwrap();
        }
        let mut s = DurableInbox::open(&path, 10, 100, 5_000).unwrap();
        assert_eq!(s.expire(100, 10), 0, "stored at the cutoff: kept");
        assert_eq!(s.expire(250, 1), 1, "at most `max` a call");
        assert!(s.ack(b, 2), "not expired yet");
        assert_eq!(s.expire(250, 10), 1);
        s.flush().unwrap();
        let mut ids = Vec::new();
        s.oldest(a, 10, &mut ids);
        s.oldest(b, 10, &mut ids);
        assert_eq!(ids, vec![3]);
        assert_eq!((s.total(), s.len(a), s.len(b)), (1, 1, 0));
        assert!(!s.ack(a, 1), "an expired packet is not acknowledged");
        let mut buf = [0u8; 1];
        assert!(!s.read(a, 1, &mut buf));
        drop(s);
        let s = DurableInbox::open(&path, 10, 100, 6_000).unwrap();
        assert_eq!(s.total(), 1, "the expiry was durable");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_store_from_before_expiry_gets_its_packets_stamped_when_opened() {
        let path = temp("legacy");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut inbox = tx.open_table(INBOX).unwrap();
                let mut ids = tx.open_table(IDS).unwrap();
                let mut value = 42u64.to_le_bytes().to_vec();
                value.extend_from_slice(b"old");
                inbox.insert((7, 0), value.as_slice()).unwrap();
                ids.insert((7, 42), 0).unwrap();
            }
            tx.commit().unwrap();
        }
        let mut s = DurableInbox::open(&path, 10, 100, 1_000).unwrap();
        assert_eq!(s.total(), 1);
        assert_eq!(s.expire(1_000, 10), 0, "stamped at the open, not at 0");
        assert_eq!(s.expire(1_001, 10), 1);
        assert_eq!(s.total(), 0);
        std::fs::remove_file(&path).unwrap();
    }
}
