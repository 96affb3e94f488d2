//! The portable backend: a shard as one plain thread, for hosts where io_uring is not
//! allowed (container runtimes' default seccomp profiles, `kernel.io_uring_disabled`,
//! gVisor, simulators that run real binaries). One loop does what the io_uring backend's
//! two tasks do: wait on the socket with `ppoll` until a datagram comes or the core's next
//! deadline (at most [`super::TICK`]), drain what is waiting with `recvmmsg`, hand the batch to
//! the core, send with `sendmmsg`, then do the shard's chores ([`super::Chores`]). The
//! deadline has `ppoll`'s nanosecond resolution, finer than the wheel's slot.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::{After, ShardSetup, State};
use crate::batch_io::Batch;
use crate::shard_core::ShardCore;

/// Runs the shard on this thread until a shutdown completes.
pub fn run<C: ShardCore>(setup: ShardSetup<C>) {
    let len = setup.datagram_len;
    let (mut st, mut chores, socket) = State::new(setup);
    // Blocking sends: what `sendmmsg` could not take at once waits for room rather than
    // being dropped. Receives never block (`recvmmsg` with MSG_DONTWAIT after `ppoll`).
    if socket.set_nonblocking(false).is_err() {
        st.send_errors += 1;
    }
    let fd = socket.as_raw_fd();
    let (mut inb, mut out) = (Batch::new(len), Batch::new(len));
    let mut now = st.now_us();
    loop {
        match wait_readable(fd, chores.wait(&st, now)) {
            Ok(true) => {
                inb.clear();
                match inb.recv_waiting(fd) {
                    Ok(n) if n > 0 && !chores.stopping() => {
                        st.release_ahead_of(n);
                        flush(&mut st, &socket, &mut out);
                        // The chores below come at once: they ready what is due now,
                        // write the journal and send, for this batch too.
                        st.receive(&inb);
                    }
                    // Taken and dropped while draining, as the io_uring backend does.
                    Ok(_) => {}
                    Err(_) => st.recv_errors += 1,
                }
            }
            Ok(false) => {}
            Err(_) => st.recv_errors += 1,
        }
        now = st.now_us();
        chores.before_send(&mut st, now);
        flush(&mut st, &socket, &mut out);
        if chores.after_send(&mut st) == After::Exit {
            return;
        }
    }
}

/// Sends everything the core has to send: `sendmmsg` first, a blocking send each for any
/// rest. Every datagram the socket refuses is counted.
fn flush<C: ShardCore>(st: &mut State<C>, socket: &std::net::UdpSocket, out: &mut Batch) {
    while st.fill(out) {
        let mut sent = out.send_from(socket.as_raw_fd(), 0).unwrap_or(0);
        while sent < out.len() {
            let (d, to) = out.get(sent);
            let failed = match to {
                Some(to) => socket.send_to(d, to).is_err(),
                None => true,
            };
            st.send_errors += u64::from(failed);
            sent += 1;
        }
    }
}

/// Waits up to `timeout` for `fd` to have a datagram; false when the time ran out (or a
/// signal came first: the caller's loop comes round again).
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_ends_at_a_datagram_or_at_its_timeout() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!wait_readable(a.as_raw_fd(), Duration::from_micros(200)).unwrap());
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert!(wait_readable(a.as_raw_fd(), Duration::from_secs(5)).unwrap());
    }
}
