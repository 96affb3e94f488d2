//! The io_uring backend: a shard as a glommio executor. Two tasks share the shard's state:
//!
//! - the receive loop awaits one datagram, drains what else is waiting with `recvmmsg`,
//!   hands the batch to the core and sends what the core emits with `sendmmsg`;
//! - the timer loop holds the shard's one glommio timer, re-armed to the core's next
//!   deadline (and woken early by the receive loop when that moves), and does the shard's
//!   chores ([`super::Chores`]).

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UdpSocket;
use glommio::timer::Timer;

use super::{After, Chores, ShardSetup, State, TICK};
use crate::batch_io::Batch;
use crate::shard_core::ShardCore;

/// Sends everything the core has to send: `sendmmsg` first, awaited sends for any rest
/// (what the socket would not take at once). Every datagram the socket refuses is counted.
async fn flush<C: ShardCore>(st: &RefCell<State<C>>, socket: &UdpSocket, out: &mut Batch) {
    while st.borrow_mut().fill(out) {
        // An error here is retried datagram by datagram below, where it is counted.
        let mut sent = out.send_from(socket.as_raw_fd(), 0).unwrap_or(0);
        while sent < out.len() {
            let (d, to) = out.get(sent);
            let failed = match to {
                Some(to) => socket.send_to(d, to).await.is_err(),
                None => true,
            };
            st.borrow_mut().send_errors += u64::from(failed);
            sent += 1;
        }
    }
}

/// Runs the shard until a shutdown completes. Call inside a glommio executor.
pub async fn run<C: ShardCore + 'static>(setup: ShardSetup<C>) {
    let len = setup.datagram_len;
    let (st, chores, socket) = State::new(setup);
    // SAFETY: the fd comes from a socket this shard owns alone from here on.
    let socket = Rc::new(unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) });
    let st = Rc::new(RefCell::new(st));
    let stopping = Rc::new(Cell::new(false));
    let (wake_tx, wake_rx) = local_channel::new_bounded(1);
    glommio::spawn_local(receive_loop(
        st.clone(),
        socket.clone(),
        wake_tx,
        stopping.clone(),
        len,
    ))
    .detach();
    timer_loop(st, socket, wake_rx, stopping, chores, len).await;
}

async fn receive_loop<C: ShardCore>(
    st: Rc<RefCell<State<C>>>,
    socket: Rc<UdpSocket>,
    wake: LocalSender<()>,
    stopping: Rc<Cell<bool>>,
    datagram_len: usize,
) {
    let (mut inb, mut out) = (Batch::new(datagram_len), Batch::new(datagram_len));
    loop {
        inb.clear();
        // What is waiting comes with the kernel's arrival times; only when nothing is does
        // the shard await the next datagram, which then arrived while it was idle (fresh).
        let waiting = inb.recv_waiting(socket.as_raw_fd()).unwrap_or_else(|_| {
            st.borrow_mut().recv_errors += 1;
            0
        });
        if waiting == 0 {
            match socket.recv_from(inb.next_buf()).await {
                Ok((n, from)) => inb.push_len(n, from),
                Err(_) => {
                    st.borrow_mut().recv_errors += 1;
                    continue;
                }
            }
            if inb.recv_waiting(socket.as_raw_fd()).is_err() {
                st.borrow_mut().recv_errors += 1;
            }
        }
        if stopping.get() {
            futures_lite::future::yield_now().await;
            continue;
        }
        st.borrow_mut().release_ahead_of(inb.len());
        flush(&st, &socket, &mut out).await;
        st.borrow_mut().take_batch(&inb);
        flush(&st, &socket, &mut out).await;
        let _ = wake.try_send(());
        // While datagrams keep arriving, recv_from completes without ever suspending; yield
        // so the timer loop still gets its turn to send what the wheel releases.
        futures_lite::future::yield_now().await;
    }
}

async fn timer_loop<C: ShardCore>(
    st: Rc<RefCell<State<C>>>,
    socket: Rc<UdpSocket>,
    wake: LocalReceiver<()>,
    stopping: Rc<Cell<bool>>,
    mut chores: Chores,
    datagram_len: usize,
) {
    let mut out = Batch::new(datagram_len);
    let mut timer = Timer::new(TICK);
    loop {
        let now = st.borrow().now_us();
        chores.before_send(&mut st.borrow_mut(), now);
        flush(&st, &socket, &mut out).await;
        let after = chores.after_send(&mut st.borrow_mut());
        stopping.set(chores.stopping());
        if after == After::Exit {
            return;
        }
        timer.reset(chores.wait(&st.borrow(), now));
        futures_lite::future::or(
            async {
                (&mut timer).await;
            },
            async {
                wake.recv().await;
            },
        )
        .await;
    }
}
