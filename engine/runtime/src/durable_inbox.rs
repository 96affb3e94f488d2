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
//! `ids` maps (client, id) to its sequence, for reads and acks by id.

use std::collections::HashMap;
use std::path::Path;

use loopix_core::inbox::{InboxStore, StoreRefused};
use loopix_crypto::Address;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const INBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inbox");
const IDS: TableDefinition<(u64, u64), u64> = TableDefinition::new("ids");

/// Durable inboxes, each bounded to `max_per_client` packets, all to `max_total`.
pub struct DurableInbox {
    db: Database,
    stores: Vec<(Address, u64, Box<[u8]>)>,
    acks: Vec<(Address, u64)>,
    counts: HashMap<Address, usize>,
    /// Committed packets in all (the sum of `counts`).
    total: usize,
    next_seq: u64,
    max_per_client: usize,
    max_total: usize,
}

impl DurableInbox {
    /// Opens (or creates) the store at `path` and counts what it holds.
    pub fn open(path: &Path, max_per_client: usize, max_total: usize) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(INBOX)?;
        tx.open_table(IDS)?;
        tx.commit()?;
        let (mut counts, mut next_seq) = (HashMap::new(), 0);
        {
            let tx = db.begin_read()?;
            let table = tx.open_table(INBOX)?;
            for entry in table.iter()? {
                let (key, _) = entry?;
                let (client, seq) = key.value();
                *counts.entry(Address(client)).or_default() += 1;
                next_seq = next_seq.max(seq + 1);
            }
        }
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
        })
    }

    fn commit(&mut self) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        {
            let mut inbox = tx.open_table(INBOX)?;
            let mut ids = tx.open_table(IDS)?;
            for (client, id, packet) in self.stores.drain(..) {
                let mut value = Vec::with_capacity(8 + packet.len());
                value.extend_from_slice(&id.to_le_bytes());
                value.extend_from_slice(&packet);
                inbox.insert((client.0, self.next_seq), value.as_slice())?;
                ids.insert((client.0, id), self.next_seq)?;
                self.next_seq += 1;
                *self.counts.entry(client).or_default() += 1;
                self.total += 1;
            }
            for (client, id) in self.acks.drain(..) {
                let seq = ids.remove((client.0, id))?.map(|g| g.value());
                if let Some(seq) = seq {
                    inbox.remove((client.0, seq))?;
                    if let Some(n) = self.counts.get_mut(&client) {
                        *n = n.saturating_sub(1);
                    }
                    self.total = self.total.saturating_sub(1);
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn committed(&self, client: Address, id: u64) -> Result<Option<Vec<u8>>, redb::Error> {
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

    fn is_committed(&self, client: Address, id: u64) -> bool {
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
        client: Address,
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

impl InboxStore for DurableInbox {
    fn store(&mut self, client: Address, id: u64, packet: &[u8]) -> Result<(), StoreRefused> {
        if self.total + self.stores.len() >= self.max_total {
            return Err(StoreRefused::StoreFull);
        }
        let buffered = self.stores.iter().filter(|(c, _, _)| *c == client).count();
        if self.len(client) + buffered >= self.max_per_client {
            return Err(StoreRefused::InboxFull);
        }
        self.stores.push((client, id, packet.into()));
        Ok(())
    }

    fn oldest(&self, client: Address, max: usize, out: &mut Vec<u64>) {
        if let Err(e) = self.oldest_committed(client, max, out) {
            tracing::error!(error = %e, "inbox read failed");
        }
    }

    fn read(&self, client: Address, id: u64, out: &mut [u8]) -> bool {
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

    fn ack(&mut self, client: Address, id: u64) -> bool {
        let buffered = self.stores.iter().any(|(c, i, _)| *c == client && *i == id);
        let known = buffered || self.is_committed(client, id);
        // Polls ack every id they got, dummies' random ones too: only real ones are queued.
        if known {
            self.acks.push((client, id));
        }
        known
    }

    fn len(&self, client: Address) -> usize {
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
    fn only_flushed_packets_are_handed_out_and_they_survive_reopening() {
        let path = temp("reopen");
        let c = Address(7);
        {
            let mut s = DurableInbox::open(&path, 10, 1_000).unwrap();
            s.store(c, 100, b"first").unwrap();
            let mut ids = Vec::new();
            s.oldest(c, 5, &mut ids);
            assert!(ids.is_empty(), "not durable yet, not handed out");
            s.flush().unwrap();
            s.store(c, 101, b"secnd").unwrap();
            s.flush().unwrap();
            s.store(c, 102, b"lost!").unwrap(); // never flushed: as if killed now
        }
        let mut s = DurableInbox::open(&path, 10, 1_000).unwrap();
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

    #[test]
    fn a_full_inbox_refuses_more() {
        let path = temp("full");
        let mut s = DurableInbox::open(&path, 2, 1_000).unwrap();
        let c = Address(1);
        s.store(c, 1, b"a").unwrap();
        s.store(c, 2, b"b").unwrap();
        assert_eq!(s.store(c, 3, b"c"), Err(StoreRefused::InboxFull));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_whole_store_is_bounded_and_the_bound_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("loopix-inbox-total-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inbox.redb");
        {
            let mut s = DurableInbox::open(&path, 10, 3).unwrap();
            for c in 1..=3 {
                s.store(Address(c), c, b"p").unwrap();
            }
            assert_eq!(s.store(Address(9), 9, b"p"), Err(StoreRefused::StoreFull));
            s.flush().unwrap();
        }
        let mut s = DurableInbox::open(&path, 10, 3).unwrap();
        assert_eq!(s.total(), 3);
        assert_eq!(s.store(Address(9), 9, b"p"), Err(StoreRefused::StoreFull));
        assert!(s.ack(Address(2), 2));
        s.flush().unwrap();
        assert_eq!(s.total(), 2);
        assert!(s.store(Address(9), 9, b"p").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
