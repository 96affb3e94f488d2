//! Preallocated packet buffers handed out by index, so the wheel and queues carry `u32`s
//! and nothing on the packet path allocates.

/// `capacity` buffers of `packet_len` bytes in one allocation, with a free list.
pub struct PacketPool {
    packet_len: usize,
    bytes: Box<[u8]>,
    free: Vec<u32>,
}

impl PacketPool {
    /// Allocates every buffer now, and touches every page of them, so the kernel maps the
    /// memory at start-up rather than under the first burst of traffic.
    pub fn new(capacity: u32, packet_len: usize) -> Self {
        let mut bytes = vec![0u8; capacity as usize * packet_len].into_boxed_slice();
        prefault(&mut bytes);
        Self {
            packet_len,
            bytes,
            free: (0..capacity).rev().collect(),
        }
    }

    /// A free buffer's index, or `None` when all are in use (overload).
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Returns a buffer to the pool.
    pub fn release(&mut self, index: u32) {
        debug_assert!(!self.free.contains(&index), "double release of {index}");
        self.free.push(index);
    }

    /// The buffer at `index`.
    pub fn get(&self, index: u32) -> &[u8] {
        let at = index as usize * self.packet_len;
        &self.bytes[at..at + self.packet_len]
    }

    /// The buffer at `index`, writable.
    pub fn get_mut(&mut self, index: u32) -> &mut [u8] {
        let at = index as usize * self.packet_len;
        &mut self.bytes[at..at + self.packet_len]
    }

    /// Buffers in use.
    pub fn in_use(&self) -> usize {
        self.bytes.len() / self.packet_len.max(1) - self.free.len()
    }

    /// Buffers in all.
    pub fn capacity(&self) -> usize {
        self.bytes.len() / self.packet_len.max(1)
    }
}

/// Writes one byte per 4 KiB page. Volatile, because the memory is known to be zero and a
/// plain store of zero could be optimised away, leaving the pages unmapped.
pub fn prefault(bytes: &mut [u8]) {
    for i in (0..bytes.len()).step_by(4096) {
        // SAFETY: `i` is in bounds, and the pointer comes from a live mutable slice.
        unsafe { std::ptr::write_volatile(bytes.as_mut_ptr().add(i), 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_buffer_once_until_released() {
        let mut p = PacketPool::new(2, 8);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_ne!(a, b);
        assert!(p.alloc().is_none());
        p.get_mut(a).fill(7);
        assert!(p.get(b).iter().all(|&x| x == 0));
        p.release(a);
        assert_eq!(p.in_use(), 1);
        assert_eq!(p.alloc(), Some(a));
    }
}
