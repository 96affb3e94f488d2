//! One process per node identity: a second `loopix node` with the same key would share the
//! port (SO_REUSEPORT lets it), take half the traffic and skew the first one's loop
//! statistics. The node takes an exclusive `flock` on a lock file beside its key file, and
//! on one named by its id and public session key in the host's lock folder (so a copy of
//! its folder, under any name, finds it taken), before it uploads or binds anything, and
//! holds both for its life; the kernel releases them however the process ends, so a crash
//! leaves nothing to clean up. [`probe_listen`] refuses a listen port another process holds
//! (a different node, or one run by another user, whose lock this one cannot see).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    pub path: PathBuf,
    /// The host-wide lock of this identity, where the key file names one.
    _host: Option<File>,
    pub host_path: Option<PathBuf>,
}

/// The host's folder of node locks: systemd's `RuntimeDirectory=` where the unit sets
/// one, else the user's runtime folder, else one in the temporary folder per user.
pub fn host_lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LOOPIX_LOCK_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY")
        && let Some(first) = std::env::split_paths(&d).next()
    {
        return first;
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("loopix");
    }
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("loopix-{uid}"))
}

impl NodeLock {
    /// Locks `<key_file>.lock` for node `id`, and the host-wide lock of its identity,
    /// writing this process's pid into both; fails with who holds one when another
    /// process does.
    pub fn acquire(key_file: &Path, id: u64) -> Result<Self, String> {
        let mut name = key_file.as_os_str().to_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        // The identity: a copy of the key file has the same session key, whatever its
        // path. (A file without one is refused later; its own lock is all it gets.)
        let host_path = crate::key_file::read_node_keys(key_file)
            .ok()
            .and_then(|k| k.session)
            .map(|s| {
                let key: String = s.public().0[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                host_lock_dir().join(format!("node-{id}-{key}.lock"))
            });
        let host = match &host_path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                Some(lock_file(p, id)?)
            }
            None => None,
        };
        let file = lock_file(&path, id)?;
        Ok(Self {
            _file: file,
            path,
            _host: host,
            host_path,
        })
    }
}

/// Takes the exclusive lock of `path`, writing this process's pid into it.
fn lock_file(path: &Path, id: u64) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
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
    Ok(file)
}

/// Refuses `listen` if another process holds that UDP port: a socket bound there without
/// SO_REUSEPORT fails then, where the node's own sockets (which set it) would join the
/// other's group and split its traffic.
pub fn probe_listen(listen: std::net::SocketAddr) -> Result<(), String> {
    match std::net::UdpSocket::bind(listen) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "listen: {listen} is held by another process (another copy of this node, or another \
             node configured with this port)"
        )),
        Err(e) => Err(format!("listen: {listen}: {e}")),
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
