//! One UDP port for all shards: a SO_REUSEPORT group with a classic BPF program that picks
//! the socket from the first 4 bytes of the datagram (the first bytes of the packet's group
//! element, α; a session frame's receiver index). Every replay of a packet carries the same
//! α, so it reaches the same shard, and each shard's replay set only ever needs the tags of
//! its own packets. A datagram whose first 4 bytes are zero (a handshake initiation) gets
//! an index out of range from the program, and the kernel falls back to its hash of the
//! source address and port (see `loopix_core::pipeline::steering`).
//!
//! The kernel numbers a group's sockets in bind order, so the sockets are created here, on
//! one thread, in shard order, before any shard starts; closing one would renumber the rest,
//! so the group stays fixed for the life of the process.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// The shard a datagram belongs to: what the BPF program computes, `ld [0]; mod #n`
/// (a big-endian 32-bit load), so stray datagrams can be sent on to their owner. The core
/// owns the rule: a mix steers its own loops back to their shard by it.
pub use loopix_core::pipeline::steering::{owner_shard, steered_shard};

/// Binds `shards` sockets to `addr` as one steered SO_REUSEPORT group, index = shard. One
/// shard binds a plain socket: nothing to steer, and no group another process could join
/// (nor a socket option some stacks lack: Shadow's).
pub fn bind_group(
    addr: SocketAddr,
    shards: usize,
    recv_buffer_bytes: usize,
) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if shards > 1 {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        let granted = crate::socket_stats::request_receive_buffer(&s, recv_buffer_bytes)?;
        if granted < recv_buffer_bytes && sockets.is_empty() {
            tracing::warn!(
                asked = recv_buffer_bytes,
                granted,
                "receive buffer capped by net.core.rmem_max: raise it (sysctl) or run with \
                 CAP_NET_ADMIN, or bursts are dropped in the kernel (loopix_kernel_drops_total)"
            );
        }
        s.bind(&addr.into())?;
        // With port 0, the first bind picks the port and the others must share it.
        if let Some(local) = s.local_addr()?.as_socket() {
            addr = local;
        }
        sockets.push(UdpSocket::from(s));
    }
    if let Some(first) = sockets.first()
        && shards > 1
    {
        attach_steering(first, shards)?;
    }
    Ok(sockets)
}

/// Attaches `ld [0]; jeq #0 -> ret #-1; mod #shards; ret a` to the group (through any of
/// its sockets).
fn attach_steering(socket: &UdpSocket, shards: usize) -> io::Result<()> {
    let program = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // Zero: on to the last instruction (out of range: the kernel's hash decides).
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 2,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: shards as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut _,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    /// 200 keys x 10 sends each over loopback: every copy of a key lands on one socket,
    /// the socket the BPF arithmetic names, and both sockets get traffic.
    #[test]
    fn every_copy_of_a_key_reaches_the_same_socket() {
        let shards = 2;
        let group = bind_group("127.0.0.1:0".parse().unwrap(), shards, 1 << 22).unwrap();
        let to = group[0].local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (keys, copies) = (200u32, 10);
        let mut seen: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let mut buf = [0u8; 64];
        for round in 0..copies {
            // From 1: a zero first word goes by the source's hash (see below).
            for k in 1..=keys {
                let key = k.wrapping_mul(2_654_435_761).to_be_bytes();
                let mut d = [round as u8; 16];
                d[..4].copy_from_slice(&key);
                sender.send_to(&d, to).unwrap();
            }
            // Drain what arrived (bounded wait: loopback delivers within milliseconds).
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = 0;
            while got < keys && Instant::now() < deadline {
                for (i, s) in group.iter().enumerate() {
                    while let Ok((n, _)) = s.recv_from(&mut buf) {
                        assert_eq!(n, 16);
                        let key = u32::from_be_bytes(buf[..4].try_into().unwrap());
                        seen.entry(key).or_default().push(i);
                        got += 1;
                    }
                }
            }
            assert_eq!(got, keys, "round {round}: datagrams missing");
        }
        let mut per_socket = [0; 2];
        for (key, sockets) in &seen {
            assert_eq!(sockets.len(), copies);
            assert!(
                sockets.iter().all(|&s| s == sockets[0]),
                "key {key} split: {sockets:?}"
            );
            assert_eq!(sockets[0], owner_shard(&key.to_be_bytes(), shards));
            per_socket[sockets[0]] += 1;
        }
        assert!(per_socket.iter().all(|&n| n > 50), "{per_socket:?}");
    }

    /// Datagrams whose first 4 bytes are zero (initiations) from 64 source ports: each
    /// source always reaches one socket (a client's retry finds the shard that answered it),
    /// and the sources spread over both.
    #[test]
    fn zero_headed_datagrams_go_by_their_source() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2, 1 << 22).unwrap();
        let to = group[0].local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut seen: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        let mut buf = [0u8; 64];
        for round in 0..4u8 {
            for s in &senders {
                s.send_to(&[0, 0, 0, 0, round, 1, 2, 3], to).unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = 0;
            while got < senders.len() && Instant::now() < deadline {
                for (i, sock) in group.iter().enumerate() {
                    while let Ok((_, from)) = sock.recv_from(&mut buf) {
                        seen.entry(from.port()).or_default().push(i);
                        got += 1;
                    }
                }
            }
            assert_eq!(got, senders.len(), "round {round}: datagrams missing");
        }
        let mut per_socket = [0; 2];
        for (port, sockets) in &seen {
            assert!(
                sockets.iter().all(|&s| s == sockets[0]),
                "{port}: {sockets:?}"
            );
            per_socket[sockets[0]] += 1;
        }
        assert!(per_socket.iter().all(|&n| n > 8), "{per_socket:?}");
    }
}
