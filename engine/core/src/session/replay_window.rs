//! Which nonces (counters) a session or a link has accepted: the highest so far and a
//! bitmap of the `64 x WORDS` before it (RFC 6479's sliding window, as WireGuard keeps
//! it). Datagrams may arrive out of order by up to the window; a nonce seen before, or
//! older than the window, is a replay. Marked only after the datagram authenticates, so
//! forged ones cannot move it.

/// Nonces behind the highest accepted one that a session tells apart.
pub const WINDOW: u64 = 1024;

/// See the module docs. `WORDS` x 64 nonces: 1024 for a session (its nonces count its
/// frames); a link's counters run with the sender's clock, so it keeps more.
#[derive(Clone, Debug)]
pub struct ReplayWindow<const WORDS: usize = 16> {
    /// One past the highest nonce accepted (0: none yet).
    next: u64,
    bits: [u64; WORDS],
}

impl<const WORDS: usize> Default for ReplayWindow<WORDS> {
    fn default() -> Self {
        Self {
            next: 0,
            bits: [0; WORDS],
        }
    }
}

impl<const WORDS: usize> ReplayWindow<WORDS> {
    /// Nonces behind the highest accepted one that are told apart.
    pub const WINDOW: u64 = 64 * WORDS as u64;

    /// Whether `nonce` may be new (check before decrypting).
    pub fn may_accept(&self, nonce: u64) -> bool {
        if nonce >= self.next {
            return true;
        }
        if self.next - nonce > Self::WINDOW {
            return false;
        }
        let (w, b) = Self::slot(nonce);
        self.bits[w] & (1 << b) == 0
    }

    /// Records `nonce` as accepted; false if it was not new (a replay).
    pub fn accept(&mut self, nonce: u64) -> bool {
        if !self.may_accept(nonce) {
            return false;
        }
        if nonce >= self.next {
            // Clear the slots the window slides over (at most all of them).
            let start = self.next.max(nonce.saturating_sub(Self::WINDOW - 1));
            if nonce - start >= Self::WINDOW {
                self.bits = [0; WORDS];
            } else {
                for n in start..=nonce {
                    let (w, b) = Self::slot(n);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.next = nonce + 1;
        }
        let (w, b) = Self::slot(nonce);
        self.bits[w] |= 1 << b;
        true
    }

    fn slot(nonce: u64) -> (usize, u32) {
        let i = nonce % Self::WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nonce_is_accepted_once_in_any_order_within_the_window() {
        let mut w: ReplayWindow = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5), "replay");
        assert!(w.accept(3), "late but in the window");
        assert!(!w.accept(3));
        assert!(w.accept(0));
        assert!(w.accept(5000));
        assert!(!w.accept(5), "older than the window");
        assert!(w.accept(5000 - WINDOW + 1), "the oldest still inside");
        assert!(!w.may_accept(5000 - WINDOW));
        assert!(!w.accept(5000));
    }

    #[test]
    fn sliding_forgets_the_slots_it_passes() {
        let mut w: ReplayWindow = ReplayWindow::default();
        for n in 0..WINDOW {
            assert!(w.accept(n));
        }
        // WINDOW reuses slot 0: it must read as new, and 0 as too old.
        assert!(w.accept(WINDOW));
        assert!(!w.may_accept(0));
        assert!(w.accept(WINDOW + 1));
        assert!(!w.accept(WINDOW));
    }

    #[test]
    fn a_model_agrees() {
        use std::collections::BTreeSet;
        let mut w: ReplayWindow = ReplayWindow::default();
        let mut seen = BTreeSet::new();
        let mut top = 0u64;
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (x >> 33) % 3000 + top.saturating_sub(1500);
            let model = !seen.contains(&n) && (seen.is_empty() || n > top || top - n < WINDOW);
            assert_eq!(w.accept(n), model, "nonce {n}, top {top}");
            if model {
                seen.insert(n);
                top = top.max(n);
            }
        }
    }
}
