//! Which nonces (counters) a session or a link has accepted: the highest so far and a
//! bitmap of those before it, kept in 64-bit blocks as RFC 6479 does (and WireGuard):
//! moving forward clears whole blocks, at most all of them, never bit by bit, so a jump
//! costs the same however far it goes. Datagrams may arrive out of order by up to
//! [`ReplayWindow::WINDOW`]; a nonce seen before, or older than that, is a replay. Marked
//! only after the datagram authenticates, so forged ones cannot move it.

/// See the module docs. `WORDS` blocks of 64 nonces, one of them the one being filled: a
/// session keeps 16 (its nonces count its frames); a link's counters run with the sender's
/// clock in µs, so it keeps more.
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
    /// Nonces behind the highest accepted one that are still told apart.
    pub const WINDOW: u64 = 64 * (WORDS as u64 - 1);

    /// Whether `nonce` may be new (check before authenticating).
    pub fn may_accept(&self, nonce: u64) -> bool {
        if nonce >= self.next {
            return true;
        }
        if self.next - 1 - nonce >= Self::WINDOW {
            return false;
        }
        let (w, b) = Self::position(nonce);
        self.bits[w] & (1 << b) == 0
    }

    /// Records `nonce` as accepted; false if it was not new (a replay).
    pub fn accept(&mut self, nonce: u64) -> bool {
        if !self.may_accept(nonce) {
            return false;
        }
        if nonce >= self.next {
            let new_block = nonce / 64;
            match self.next.checked_sub(1).map(|top| top / 64) {
                None => self.bits = [0; WORDS],
                Some(old_block) => {
                    let blocks = (new_block - old_block).min(WORDS as u64);
                    for i in 1..=blocks {
                        self.bits[((old_block + i) % WORDS as u64) as usize] = 0;
                    }
                }
            }
            self.next = nonce + 1;
        }
        let (w, b) = Self::position(nonce);
        self.bits[w] |= 1 << b;
        true
    }

    fn position(nonce: u64) -> (usize, u32) {
        (((nonce / 64) % WORDS as u64) as usize, (nonce % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Window = ReplayWindow;
    const WINDOW: u64 = Window::WINDOW;

    #[test]
    fn each_nonce_is_accepted_once_in_any_order_within_the_window() {
        let mut w = Window::default();
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
    fn sliding_forgets_the_blocks_it_passes() {
        let mut w = Window::default();
        for n in 0..WINDOW + 64 {
            assert!(w.accept(n));
        }
        // The blocks reused for the newest nonces read as new; the oldest are too old.
        assert!(w.accept(WINDOW + 64));
        assert!(!w.may_accept(0));
        assert!(w.accept(10 * WINDOW));
        assert!(!w.accept(10 * WINDOW));
        assert!(w.accept(10 * WINDOW - 1));
    }

    /// Against a set of everything seen: accepted exactly when new and no more than the
    /// window behind the highest, in any order, with jumps of every size.
    #[test]
    fn a_model_agrees() {
        use std::collections::BTreeSet;
        for wide in [false, true] {
            let mut small = Window::default();
            let mut big = ReplayWindow::<1024>::default();
            let window = if wide {
                ReplayWindow::<1024>::WINDOW
            } else {
                WINDOW
            };
            let mut seen = BTreeSet::new();
            let mut top: Option<u64> = None;
            let mut x = 12345u64;
            for i in 0..50_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let spread = if i % 97 == 0 { 200_000 } else { 3 * window };
                let base = top.unwrap_or(0).saturating_sub(window * 3 / 2);
                let n = base + (x >> 33) % spread;
                let model = !seen.contains(&n) && top.is_none_or(|t| n > t || t - n < window);
                let got = if wide { big.accept(n) } else { small.accept(n) };
                assert_eq!(got, model, "nonce {n}, top {top:?}");
                if model {
                    seen.insert(n);
                    top = Some(top.map_or(n, |t| t.max(n)));
                }
            }
        }
    }
}
