//! Receiving with the kernel's arrival timestamp (SO_TIMESTAMPNS): how long a datagram
//! waited in its socket's receive queue before it was read.
//!
//! A shard sheds datagrams that waited longer than its bound unread (an overloaded node
//! works on fresh packets instead of ones whose delay budget is gone), and the load
//! generator times when a forwarded packet reached its socket, not when its receiver
//! thread next ran: on a small machine shared with the node, that thread's scheduling
//! delay would otherwise be charged to the node's hop.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Control-message room for one timestamp (a cmsg header and a timespec), 8-aligned.
pub type ControlBuf = [u64; 8];

/// Asks the kernel to timestamp every datagram `socket` receives.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, and a pointer to an int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wall-clock now, ns since the epoch: the clock the kernel stamps with.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}

/// Receives one datagram into `buf`: its length and its arrival time (ns since the epoch;
/// the time of the call if the kernel gave none).
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, u64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: ControlBuf = [0; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, stamp(&msg).unwrap_or_else(now_ns)))
}

/// The SCM_TIMESTAMPNS of a received message (ns since the epoch), if the kernel
/// attached one.
pub fn stamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within its length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel turns receive timestamping on lazily (a deferred static key), so the
    /// first datagrams after `enable` may be stamped when read; within a few tries one must
    /// carry its arrival time, well before the read 20 ms later.
    #[test]
    fn arrival_is_stamped_by_the_kernel_before_we_read() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 16];
        for _ in 0..50 {
            let before = now_ns();
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let (n, at) = recv(&rx, &mut buf).unwrap();
            let read = now_ns();
            assert_eq!(&buf[..n], b"hello");
            assert!(before <= at && at <= read, "{before} {at} {read}");
            if read - at >= 15_000_000 {
                return;
            }
        }
        panic!("no datagram carried a kernel arrival time");
    }
}
