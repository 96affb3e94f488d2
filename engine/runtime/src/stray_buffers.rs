//! Buffers for datagrams that reach the wrong shard (the kernel's steering is a hash, and a
//! misfire must not cost the packet path an allocation). They are made once per node and
//! recycled through a bounded free list: a stray costs one copy, and when every buffer is
//! in flight the stray is dropped and counted instead of growing memory.

use crossbeam_channel::{Receiver, Sender, bounded};

/// The node's free list of stray buffers; clones share it.
#[derive(Clone, Debug)]
pub struct StrayBuffers {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
}

impl StrayBuffers {
    /// `count` buffers of `len` bytes each (reserved, not touched until used).
    pub fn new(count: usize, len: usize) -> Self {
        let (free_tx, free_rx) = bounded(count);
        for _ in 0..count {
            let _ = free_tx.try_send(Vec::with_capacity(len));
        }
        Self { free_tx, free_rx }
    }

    /// A free buffer holding a copy of `bytes` (at most the buffers' length, so no
    /// reallocation), or `None` when all are in flight.
    pub fn copy_of(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut buf = self.free_rx.try_recv().ok()?;
        buf.clear();
        let n = bytes.len().min(buf.capacity());
        buf.extend_from_slice(&bytes[..n]);
        Some(buf)
    }

    /// Returns a buffer taken with [`StrayBuffers::copy_of`] to the free list.
    pub fn give_back(&self, buf: Vec<u8>) {
        let _ = self.free_tx.try_send(buf);
    }

    /// Buffers free now.
    pub fn free(&self) -> usize {
        self.free_rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_not_reallocated_and_run_out_rather_than_grow() {
        let pool = StrayBuffers::new(2, 8);
        let a = pool.copy_of(b"abc").expect("free buffer");
        let b = pool.copy_of(b"0123456789").expect("free buffer");
        assert_eq!(
            (&a[..], &b[..]),
            (&b"abc"[..], &b"01234567"[..]),
            "cut to 8"
        );
        assert!(pool.copy_of(b"x").is_none(), "both in flight");
        let (ptr, capacity) = (a.as_ptr(), a.capacity());
        pool.give_back(a);
        let again = pool.copy_of(b"defgh").expect("returned");
        assert_eq!(&again[..], b"defgh");
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, capacity));
        pool.give_back(again);
        pool.give_back(b);
        assert_eq!(pool.free(), 2);
    }
}
