//! What the kernel knows about a shard's socket that the shard cannot see: datagrams it
//! dropped because the socket's receive buffer was full (the node was behind), and the
//! receive buffer it really got.
//!
//! Under overload the kernel drops datagrams before any counter of ours sees them; these
//! make that loss visible (`loopix_kernel_drops_total`), and a receive buffer silently
//! capped by `net.core.rmem_max` is logged at start.

use std::io;
use std::os::fd::RawFd;

/// `SO_MEMINFO` (Linux 4.6+): the socket's memory counters, `SK_MEMINFO_VARS` u32s. The
/// generic value; the `libc` crate does not export it for every target.
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

/// Datagrams the kernel has dropped at this socket since it was created (receive buffer
/// full, mostly); `None` where the kernel does not say.
pub fn kernel_drops(fd: RawFd) -> Option<u64> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (rc == 0 && len as usize >= (drops + 1) * 4).then(|| u64::from(info[drops]))
}

/// Asks for a receive buffer of `bytes`: beyond `net.core.rmem_max` if the process may
/// (`SO_RCVBUFFORCE`, with CAP_NET_ADMIN), else as much as the limit allows. Returns the
/// bytes of datagrams the buffer holds now (the kernel reports twice that, for its own
/// bookkeeping).
pub fn request_receive_buffer(socket: &socket2::Socket, bytes: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `want` is a c_int that outlives the call.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&want as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(socket.recv_buffer_size()? / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn datagrams_a_full_buffer_drops_are_counted() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let receiver = UdpSocket::from(s);
        assert_eq!(kernel_drops(receiver.as_raw_fd()), Some(0));
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        for _ in 0..200 {
            sender.send_to(&[7u8; 1200], to).unwrap();
        }
        // Nobody reads: most of the 240 kB did not fit.
        let drops = kernel_drops(receiver.as_raw_fd()).unwrap();
        assert!(drops > 100, "{drops} dropped");
    }

    #[test]
    fn the_buffer_actually_granted_is_reported() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let got = request_receive_buffer(&s, 1 << 20).unwrap();
        // Root may force it; otherwise rmem_max caps it. Either way it is what the kernel
        // says, never more than asked.
        assert!(got > 0 && got <= 1 << 20, "{got}");
    }
}
