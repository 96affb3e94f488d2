//! Replay filters that survive a restart: each shard appends the hashes its filters record
//! to one file per key epoch, and reloads them at start.
//!
//! A file is `epoch-<e>.shard-<i>-of-<n>.tags` in the node's `replay_dir`: a 32-byte header
//! (`LXRJ0001`, the epoch as u64 LE, the filter's 16-byte hash key) and then one u64 LE per
//! recorded tag. A shard writes what its core recorded right after each received batch,
//! before anything that batch released is sent, so a packet that left the node always has
//! its tag in the page cache first: a killed process (SIGKILL, a crash, an OOM kill) loses
//! nothing. A separate thread syncs every file to disk every `replay_sync_ms` (default
//! 1000): a machine that loses power loses at most that much. A file goes when its key's
//! grace ends; a torn last entry (a crash mid-write) is ignored.
//!
//! Steering sends every copy of a packet to the same shard index only while the shard
//! count stays the same, so a shard reloads only files written under the same count. After
//! a change of `shards` the current epochs' older files are set aside (logged) and replays
//! from before the change are refused again only from the next epoch on.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use loopix_core::endpoint::Endpoint;
use loopix_core::pipeline::key_ring::JournalRecord;
use loopix_core::pipeline::replay::FilterKey;

const MAGIC: &[u8; 8] = b"LXRJ0001";
const HEADER_LEN: usize = 32;

/// One shard's journal files.
pub struct ReplayJournal {
    dir: PathBuf,
    shard: usize,
    shards: usize,
    files: BTreeMap<u64, Arc<File>>,
    syncer: Syncer,
    bytes: Vec<u8>,
    /// Writes that failed (each is logged): tags that a restart would not know.
    pub errors: u64,
}

/// What a start found on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub epochs: usize,
    pub tags: usize,
    /// Files of epochs whose keys are no longer in use (or gone): deleted.
    pub expired_files: usize,
    /// Files written under another shard count: set aside.
    pub set_aside: usize,
}

impl ReplayJournal {
    /// The journal of shard `shard` of `shards` in `dir` (created, mode 0700).
    pub fn open(dir: &Path, shard: usize, shards: usize, syncer: Syncer) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shard,
            shards,
            files: BTreeMap::new(),
            syncer,
            bytes: Vec::with_capacity(8 * 4096),
            errors: 0,
        })
    }

    fn name(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!(
            "epoch-{epoch}.shard-{}-of-{}.tags",
            self.shard, self.shards
        ))
    }

    /// Refills `engine`'s filters from this shard's files of the epochs in use at `now_us`
    /// (call before its first packet); deletes the files of other epochs.
    pub fn restore(
        &mut self,
        core: &mut (impl Endpoint + ?Sized),
        now_us: u64,
    ) -> std::io::Result<Restored> {
        let mut restored = Restored::default();
        let suffix = format!(".shard-{}-of-{}.tags", self.shard, self.shards);
        let other_count = format!(".shard-{}-of-", self.shard);
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(&suffix) {
                if name.contains(&other_count) && name.ends_with(".tags") {
                    let aside = path.with_extension("tags.set-aside");
                    tracing::warn!(file = %path.display(), "replay journal of another shard count set aside");
                    std::fs::rename(&path, aside)?;
                    restored.set_aside += 1;
                }
                continue;
            }
            let Some((epoch, key, hashes)) = read(&path)? else {
                tracing::warn!(file = %path.display(), "not a replay journal; ignored");
                continue;
            };
            match core.restore_journal(now_us, epoch, key, &mut hashes.iter().copied()) {
                Ok(n) => {
                    let file = Arc::new(OpenOptions::new().append(true).open(&path)?);
                    self.syncer.register(&file);
                    self.files.insert(epoch, file);
                    restored.epochs += 1;
                    restored.tags += n;
                }
                Err(_) => {
                    std::fs::remove_file(&path)?;
                    restored.expired_files += 1;
                }
            }
        }
        Ok(restored)
    }

    /// Writes down what `engine` recorded since the last call (see [`JournalRecord`]).
    pub fn write(&mut self, core: &mut (impl Endpoint + ?Sized)) {
        core.drain_journal(&mut |record| {
            let result = match record {
                JournalRecord::Opened { epoch, key } => self.create(epoch, key),
                JournalRecord::Tags { epoch, hashes } => self.append(epoch, hashes),
                JournalRecord::Retired { epoch } => self.remove(epoch),
            };
            if let Err(e) = result {
                self.errors += 1;
                tracing::error!(error = %e, dir = %self.dir.display(), "replay journal write failed");
            }
        });
    }

    fn create(&mut self, epoch: u64, key: FilterKey) -> std::io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&epoch.to_le_bytes());
        header[16..].copy_from_slice(&key);
        let mut file = File::create(self.name(epoch))?;
        file.write_all(&header)?;
        let file = Arc::new(file);
        self.syncer.register(&file);
        self.files.insert(epoch, file);
        Ok(())
    }

    fn append(&mut self, epoch: u64, hashes: &[u64]) -> std::io::Result<()> {
        let Some(file) = self.files.get(&epoch) else {
            return Err(std::io::Error::other(format!(
                "no journal open for epoch {epoch}"
            )));
        };
        self.bytes.clear();
        for h in hashes {
            self.bytes.extend_from_slice(&h.to_le_bytes());
        }
        (&**file).write_all(&self.bytes)
    }

    fn remove(&mut self, epoch: u64) -> std::io::Result<()> {
        self.files.remove(&epoch);
        match std::fs::remove_file(self.name(epoch)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reads a journal file: its epoch, hash key and hashes; `None` if it has no valid header.
fn read(path: &Path) -> std::io::Result<Option<(u64, FilterKey, Vec<u64>)>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Ok(None);
    }
    let epoch = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let key: FilterKey = bytes[16..32].try_into().expect("16 bytes");
    let hashes = bytes[HEADER_LEN..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(Some((epoch, key, hashes)))
}

/// Syncs every registered journal file to disk on a fixed period, off the shards' threads
/// (an fdatasync can take milliseconds). The files are shared with the shards that write
/// them; the lock is taken only to register a file or to take the list, never per packet.
#[derive(Clone)]
pub struct Syncer {
    files: Arc<Mutex<Vec<Weak<File>>>>,
}

/// Stops the sync thread (after one last sync) when dropped.
pub struct SyncThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// A syncer and its thread, syncing every `period`.
    pub fn start(period: Duration) -> std::io::Result<(Self, SyncThread)> {
        let files: Arc<Mutex<Vec<Weak<File>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (files.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("loopix-replay-sync".into())
            .spawn(move || {
                loop {
                    let stopping = s.load(Ordering::SeqCst);
                    sync_all(&f);
                    if stopping {
                        return;
                    }
                    std::thread::park_timeout(period);
                }
            })?;
        Ok((
            Self { files },
            SyncThread {
                stop,
                thread: Some(thread),
            },
        ))
    }

    fn register(&self, file: &Arc<File>) {
        if let Ok(mut files) = self.files.lock() {
            files.retain(|f| f.strong_count() > 0);
            files.push(Arc::downgrade(file));
        }
    }
}

fn sync_all(files: &Mutex<Vec<Weak<File>>>) {
    let live: Vec<Arc<File>> = match files.lock() {
        Ok(files) => files.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    for f in live {
        if let Err(e) = f.sync_data() {
            tracing::error!(error = %e, "replay journal sync failed");
        }
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
