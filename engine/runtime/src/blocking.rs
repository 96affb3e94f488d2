//! How long a shard's thread waited during a call (on a disk, a full pipe, a lock) rather
//! than computed or was preempted: the figure `loopix_shard_max_block_seconds` reports.
//! A call's wall time counts as a wait only if the thread gave up the CPU of its own
//! accord during it (the kernel's count of voluntary context switches moved); on a
//! machine whose cores the shards share with other work, a preempted call is slow without
//! having waited on anything, and counting it would blame the disk for the scheduler.

use std::time::Instant;

/// A call being watched.
pub struct Watch {
    started: Instant,
    voluntary: i64,
}

impl Watch {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            voluntary: voluntary_switches(),
        }
    }

    /// The call's wall time if the thread slept during it, else 0, ns.
    pub fn waited_ns(&self) -> u64 {
        if voluntary_switches() == self.voluntary {
            return 0;
        }
        self.started.elapsed().as_nanos() as u64
    }
}

/// This thread's voluntary context switches so far (0 where the kernel will not say).
fn voluntary_switches() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into memory we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call (and zeroed before it).
    unsafe { usage.assume_init() }.ru_nvcsw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sleep_is_a_wait_and_a_busy_loop_is_not() {
        let w = Watch::start();
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.waited_ns() >= 5_000_000);
        let w = Watch::start();
        let until = Instant::now() + Duration::from_millis(2);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        // A busy loop may be preempted (involuntarily), never a voluntary switch.
        assert_eq!(w.waited_ns(), 0);
    }
}
