//! One process per node identity: a second `loopix node` with the same key would share the
//! port (SO_REUSEPORT lets it), take half the traffic and skew the first one's loop
//! statistics. The node takes an exclusive `flock` on a lock file beside its key file
//! before it binds anything, and holds it for its life; the kernel releases it however the
//! process ends, so a crash leaves nothing to clean up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    pub path: PathBuf,
}

impl NodeLock {
    /// Locks `<key_file>.lock` for node `id`, writing this process's pid into it; fails
    /// with who holds it when another process does.
    pub fn acquire(key_file: &Path, id: u64) -> Result<Self, String> {
        let mut name = key_file.as_os_str().to_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a valid open descriptor; flock has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(format!(
                "node {id} is already running (pid {}): {} is locked",
                holder.trim(),
                path.display()
            ));
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_key_fails_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("loopix-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("node.key");
        let first = NodeLock::acquire(&key, 7).unwrap();
        let e = NodeLock::acquire(&key, 7).unwrap_err();
        assert!(
            e.contains("node 7 is already running")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(
            NodeLock::acquire(&key, 7).is_ok(),
            "released with its holder"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
