//! Batched UDP I/O with recvmmsg/sendmmsg: one system call moves up to [`BATCH`] datagrams.
//! Buffers, iovecs and headers are allocated once per shard; nothing per datagram. On a
//! socket with receive timestamps on ([`crate::rx_timestamp`]), a received batch knows when
//! each datagram reached the socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

use crate::rx_timestamp::{ControlBuf, stamp};

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Preallocated buffers for one batch.
pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BATCH],
    addrs: Vec<SockAddr>,
    /// Control-message room per datagram, for its arrival time.
    controls: Vec<ControlBuf>,
    /// When each datagram reached the socket, ns since the epoch; 0: not known.
    arrived_ns: [u64; BATCH],
    count: usize,
}

impl Batch {
    /// A batch of [`BATCH`] buffers of `datagram_len` bytes.
    pub fn new(datagram_len: usize) -> Self {
        let any: SocketAddr = ([0, 0, 0, 0], 0).into();
        Self {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; datagram_len].into_boxed_slice())
                .collect(),
            lens: [0; BATCH],
            addrs: (0..BATCH).map(|_| SockAddr::from(any)).collect(),
            controls: vec![[0; 8]; BATCH],
            arrived_ns: [0; BATCH],
            count: 0,
        }
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// True if no more datagrams fit.
    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    /// Datagram `i` and its peer.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.bufs[i][..self.lens[i]], self.addrs[i].as_socket())
    }

    /// When datagram `i` reached the socket (ns since the epoch), if the kernel said.
    pub fn arrived_ns(&self, i: usize) -> Option<u64> {
        Some(self.arrived_ns[i]).filter(|&t| t > 0)
    }

    /// The buffer the next datagram goes into, to be committed with [`Batch::push_len`].
    pub fn next_buf(&mut self) -> &mut [u8] {
        &mut self.bufs[self.count]
    }

    /// Commits `len` bytes written into [`Batch::next_buf`], to or from `addr`.
    pub fn push_len(&mut self, len: usize, addr: SocketAddr) {
        self.arrived_ns[self.count] = 0;
        self.lens[self.count] = len;
        self.addrs[self.count] = SockAddr::from(addr);
        self.count += 1;
    }

    /// Receives as many datagrams as are waiting (without blocking) into the free part of
    /// the batch; returns how many.
    pub fn recv_waiting(&mut self, fd: RawFd) -> io::Result<usize> {
        let start = self.count;
        let n = BATCH - start;
        if n == 0 {
            return Ok(0);
        }
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let (b, a) = (&mut self.bufs[start + i], &self.addrs[start + i]);
            let storage_len = size_of::<libc::sockaddr_storage>() as u32;
            point(
                &mut hdr[i],
                &mut iov[i],
                (b.as_mut_ptr().cast(), b.len()),
                (a.as_ptr() as *mut _, storage_len),
            );
            let control = &mut self.controls[start + i];
            hdr[i].msg_hdr.msg_control = control.as_mut_ptr().cast();
            hdr[i].msg_hdr.msg_controllen = size_of_val(control);
        }
        // SAFETY: every header points at a live buffer and address of this batch.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let rc = count_or_would_block(rc)?;
        for (i, h) in hdr.iter().enumerate().take(rc) {
            self.lens[start + i] = h.msg_len as usize;
            // SAFETY: the kernel wrote a sockaddr of `msg_namelen` bytes there.
            unsafe { self.addrs[start + i].set_length(h.msg_hdr.msg_namelen) };
            self.arrived_ns[start + i] = stamp(&h.msg_hdr).unwrap_or(0);
        }
        self.count += rc;
        Ok(rc)
    }

    /// Sends datagrams `from..count` without blocking; returns how many went.
    pub fn send_from(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let n = self.count.saturating_sub(from);
        if n == 0 {
            return Ok(0);
        }
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let (j, a) = (from + i, &self.addrs[from + i]);
            let buf = (self.bufs[j].as_ptr() as *mut _, self.lens[j]);
            point(
                &mut hdr[i],
                &mut iov[i],
                buf,
                (a.as_ptr() as *mut _, a.len()),
            );
        }
        // SAFETY: every header points at a live buffer and address of this batch.
        let rc = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        count_or_would_block(rc)
    }
}

/// Points one message header at one buffer `(base, len)` and one address `(name, len)`.
fn point(
    hdr: &mut libc::mmsghdr,
    iov: &mut libc::iovec,
    (base, len): (*mut libc::c_void, usize),
    (name, name_len): (*mut libc::c_void, u32),
) {
    *iov = libc::iovec {
        iov_base: base,
        iov_len: len,
    };
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr.msg_hdr.msg_name = name;
    hdr.msg_hdr.msg_namelen = name_len;
}

/// A recvmmsg/sendmmsg result as a count; "would block" is zero datagrams, not an error.
fn count_or_would_block(rc: libc::c_int) -> io::Result<usize> {
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = Batch::new(64);
        for i in 0..10u8 {
            out.next_buf()[..3].copy_from_slice(&[i, i, i]);
            out.push_len(3, rx.local_addr().unwrap());
        }
        assert_eq!(out.send_from(tx.as_raw_fd(), 0).unwrap(), 10);
        let mut inb = Batch::new(64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while inb.len() < 10 && Instant::now() < deadline {
            inb.recv_waiting(rx.as_raw_fd()).unwrap();
        }
        assert_eq!(inb.len(), 10);
        for i in 0..10 {
            let (d, from) = inb.get(i);
            assert_eq!(d, &[i as u8; 3]);
            assert_eq!(from, Some(tx.local_addr().unwrap()));
            assert_eq!(inb.arrived_ns(i), None, "timestamps are off on this socket");
        }
    }

    /// The kernel turns timestamping on lazily, so the first datagrams after `enable` may be
    /// stamped when read; within a few rounds a batch must carry arrival times from before
    /// a 20 ms wait.
    #[test]
    fn a_batch_knows_how_long_its_datagrams_waited() {
        use crate::rx_timestamp::{enable, now_ns};
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        enable(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..50 {
            let before = now_ns();
            for _ in 0..3 {
                tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
            let mut inb = Batch::new(16);
            while inb.len() < 3 {
                inb.recv_waiting(rx.as_raw_fd()).unwrap();
            }
            let read = now_ns();
            let stamps: Vec<u64> = (0..3).filter_map(|i| inb.arrived_ns(i)).collect();
            assert_eq!(stamps.len(), 3, "every datagram stamped");
            assert!(stamps.iter().all(|&t| before <= t && t <= read));
            if stamps.iter().all(|&t| read - t >= 15_000_000) {
                return;
            }
        }
        panic!("no batch carried the kernel's arrival times");
    }
}
