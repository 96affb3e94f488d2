//! Which I/O backend a node's shards run on, chosen at start.
//!
//! `io_uring` (glommio) is the fast path; `portable` (a thread per shard on `ppoll`,
//! `recvmmsg` and `sendmmsg`) runs wherever a UDP socket does. `auto` asks the kernel for
//! an io_uring first and takes the portable backend when it is refused, saying why in one
//! log line: container runtimes' default seccomp profiles (Docker's and containerd's since
//! 2023, Kubernetes' RuntimeDefault) answer `io_uring_setup` with EPERM, a kernel built
//! without it answers ENOSYS, and `kernel.io_uring_disabled` turns it off host-wide.

use std::fmt;

use serde::Deserialize;

/// The backend a node's configuration asks for (`backend` in node.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// io_uring when this host allows it, else portable (saying why).
    #[default]
    Auto,
    /// io_uring or nothing: a host that refuses it is an error at start.
    IoUring,
    /// A thread per shard on `ppoll`, `recvmmsg` and `sendmmsg`.
    Portable,
}

/// The backend the shards run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    IoUring,
    Portable,
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IoUring => "io_uring",
            Self::Portable => "portable",
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::IoUring => "io_uring",
            Self::Portable => "portable",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" => Ok(Self::IoUring),
            "portable" => Ok(Self::Portable),
            _ => Err(format!("`{s}` is not a backend (auto, io_uring, portable)")),
        }
    }
}

/// What [`Backend::choose`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend: Chosen,
    /// For `auto` on the portable backend: why not io_uring.
    pub fallback: Option<String>,
    /// What one io_uring executor adds to the resident memory (started to see that one
    /// can start; `--check` reports it); 0 on the portable backend, whose shard is a thread.
    pub executor_bytes: usize,
}

impl Backend {
    /// The backend to run on. io_uring needs both the kernel's io_uring and an executor
    /// that starts on it (its rings' locked memory, say): one is started to see. `auto`
    /// without them falls back to portable, naming why; `io_uring` is an error naming it.
    pub fn choose(self) -> Result<Choice, String> {
        let portable = |fallback| Choice {
            backend: Chosen::Portable,
            fallback,
            executor_bytes: 0,
        };
        if self == Self::Portable {
            return Ok(portable(None));
        }
        let started = io_uring_allowed()
            .and_then(|()| crate::node::executor_resident_bytes().map_err(|e| e.to_string()));
        match (started, self) {
            (Ok(executor_bytes), _) => Ok(Choice {
                backend: Chosen::IoUring,
                fallback: None,
                executor_bytes,
            }),
            (Err(why), Self::Auto) => Ok(portable(Some(why))),
            (Err(why), _) => Err(format!("backend = \"io_uring\": {why}")),
        }
    }
}

/// Whether this process may make an io_uring: asks the kernel for a small one (and closes
/// it), and reads `kernel.io_uring_disabled` to name the reason when it says no.
pub fn io_uring_allowed() -> Result<(), String> {
    // struct io_uring_params: 120 bytes, zeroed asks for the defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the 120-byte params it is given.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: the fd was just returned to this process and is used nowhere else.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    Err(match (err.raw_os_error(), sysctl.as_deref()) {
        (Some(libc::EPERM), Some("2")) => {
            "io_uring is disabled on this host (sysctl kernel.io_uring_disabled = 2)".into()
        }
        (Some(libc::EPERM), Some("1")) => "io_uring is limited to a group this process is not in \
             (sysctl kernel.io_uring_disabled = 1, kernel.io_uring_group)"
            .into(),
        (Some(libc::EPERM), _) => "io_uring_setup is not permitted (EPERM): a seccomp filter \
             refuses it, as container runtimes' default profiles do"
            .into(),
        (Some(libc::ENOSYS), _) => {
            "this kernel has no io_uring (io_uring_setup: ENOSYS, or a seccomp filter answering so)"
                .into()
        }
        _ => format!("io_uring_setup failed: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_is_always_chosen_when_asked_and_auto_names_why_it_falls_back() {
        assert_eq!(
            Backend::Portable.choose().unwrap(),
            Choice {
                backend: Chosen::Portable,
                fallback: None,
                executor_bytes: 0
            }
        );
        let allowed = io_uring_allowed();
        let auto = Backend::Auto.choose().unwrap();
        match (&auto.backend, &auto.fallback) {
            (Chosen::IoUring, None) => assert!(allowed.is_ok()),
            (Chosen::Portable, Some(why)) => match &allowed {
                Err(refused) => assert_eq!(why, refused),
                Ok(()) => assert!(why.contains("executor cannot start"), "{why}"),
            },
            other => panic!("auto chose {other:?}"),
        }
        assert_eq!(
            Backend::IoUring.choose().is_ok(),
            auto.backend == Chosen::IoUring
        );
        assert_eq!("portable".parse(), Ok(Backend::Portable));
        assert!(
            "uring"
                .parse::<Backend>()
                .unwrap_err()
                .contains("auto, io_uring, portable")
        );
    }
}
