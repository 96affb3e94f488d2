//! A client's record of the messages it delivered, kept across runs beside its key file,
//! so a copy that arrives in a later run (its sender resent it because the ack was lost,
//! and the provider kept it while the client was away) is not delivered a second time.
//!
//! One message id (16 hex digits) a line, appended and flushed to disk before the message
//! is handed to the user (a crash between the two loses the print, never makes a
//! duplicate). At open the file is read and rewritten with its newest `keep` ids only, and
//! again whenever it grows to twice that: the record is bounded like the client's own
//! memory of delivered messages. Mode 0600: which messages a client received is private.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// See the module docs.
pub struct DeliveredLog {
    path: PathBuf,
    file: File,
    keep: usize,
    /// The ids in the file, oldest first.
    ids: std::collections::VecDeque<u64>,
}

impl DeliveredLog {
    /// Opens (or creates) the record at `path`, keeping its newest `keep` ids; returns it
    /// and those ids, oldest first. A line that is not an id is an error (the file is not
    /// a record: refuse rather than forget what it held).
    pub fn open(path: &Path, keep: usize) -> Result<(Self, Vec<u64>), String> {
        let shown = |e: std::io::Error| format!("{}: {e}", path.display());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(shown(e)),
        };
        let mut ids = std::collections::VecDeque::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let id = u64::from_str_radix(line.trim(), 16)
                .map_err(|_| format!("{}: line {}: not a message id", path.display(), n + 1))?;
            ids.push_back(id);
        }
        while ids.len() > keep {
            ids.pop_front();
        }
        let file = rewrite(path, &ids).map_err(shown)?;
        let out: Vec<u64> = ids.iter().copied().collect();
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                keep,
                ids,
            },
            out,
        ))
    }

    /// Records that `msg_id` was delivered, on disk before it returns.
    pub fn record(&mut self, msg_id: u64) -> Result<(), String> {
        let shown = |e: std::io::Error| format!("{}: {e}", self.path.display());
        writeln!(self.file, "{msg_id:016x}")
            .and_then(|()| self.file.sync_data())
            .map_err(shown)?;
        self.ids.push_back(msg_id);
        if self.ids.len() >= 2 * self.keep.max(1) {
            while self.ids.len() > self.keep {
                self.ids.pop_front();
            }
            self.file = rewrite(&self.path, &self.ids).map_err(shown)?;
        }
        Ok(())
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `ids` to `path` through a file beside it (a crash leaves the old or the new),
/// mode 0600; returns the new file open for appending.
fn rewrite(path: &Path, ids: &std::collections::VecDeque<u64>) -> std::io::Result<File> {
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".next");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let text: String = ids.iter().map(|id| format!("{id:016x}\n")).collect();
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_record_survives_a_restart_stays_bounded_and_private() {
        let dir = std::env::temp_dir().join(format!("loopix-delivered-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alice.key.delivered");
        let (mut log, before) = DeliveredLog::open(&path, 3).unwrap();
        assert!(before.is_empty());
        for id in [1u64, 2, 0xdead_beef_0000_0001] {
            log.record(id).unwrap();
        }
        drop(log);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (mut log, again) = DeliveredLog::open(&path, 3).unwrap();
        assert_eq!(
            again,
            [1, 2, 0xdead_beef_0000_0001],
            "the next run knows them"
        );
        for id in 10..20 {
            log.record(id).unwrap();
        }
        drop(log);
        let (_, bounded) = DeliveredLog::open(&path, 3).unwrap();
        assert_eq!(bounded, [17, 18, 19], "the newest three");
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 3, "rewritten bounded");
        std::fs::write(&path, "not an id\n").unwrap();
        assert!(
            DeliveredLog::open(&path, 3).is_err(),
            "a file that is no record"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
