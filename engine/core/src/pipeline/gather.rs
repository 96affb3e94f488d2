//! Where received packets wait, briefly, to fill a run of vector lanes.
//!
//! A run of the lane kernel costs the same however many of its lanes carry a packet, and
//! a full run of eight costs about what three packets cost one at a time. A socket read
//! rarely brings a whole run: below saturation a node reads one, two or three datagrams at
//! a time and unwraps nearly all of them one at a time, at about two and a half times the
//! crypto cost per packet of a full run. So a packet that does not complete a run may wait
//! here for the next ones, under three rules:
//!
//! - only while the traffic of its key phase is fast enough to fill a run within the
//!   window: the last run's worth of packets of that phase arrived within it (a slow node
//!   never makes a packet wait for company that is not coming);
//! - never longer than the window after it arrived ([`Gather::deadline_us`]);
//! - its delay counts from its arrival, not from when it was unwrapped, so the wait comes
//!   out of the delay its sender chose. Only a packet whose delay is shorter than its wait
//!   leaves late, and the hop's delay-error histogram records it.
//!
//! Nothing allocates after construction: each phase has [`AREA`] buffers, and a full area
//! is unwrapped whole.

use loopix_crypto::{KeyPhase, ProcessError, Processed};

/// Packets one key phase's area holds; a multiple of every kernel's run.
pub const AREA: usize = 32;
/// The longest run any kernel takes.
const MAX_RUN: usize = 16;

/// The packets of one key phase, oldest first, with their arrival times.
pub struct Area {
    pub bufs: Box<[Box<[u8]>]>,
    pub results: Box<[Result<Processed, ProcessError>]>,
    arrived_us: [u64; AREA],
    len: usize,
    /// Arrival times of the last [`MAX_RUN`] packets of this phase, a ring.
    recent: [u64; MAX_RUN],
    seen: usize,
}

impl Area {
    fn new(packet_len: usize) -> Self {
        Self {
            bufs: (0..AREA)
                .map(|_| vec![0u8; packet_len].into_boxed_slice())
                .collect(),
            results: vec![Err(ProcessError::MacMismatch); AREA].into_boxed_slice(),
            arrived_us: [0; AREA],
            len: 0,
            recent: [0; MAX_RUN],
            seen: 0,
        }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == AREA
    }

    /// When waiting packet `i` arrived.
    pub fn arrived_us(&self, i: usize) -> u64 {
        self.arrived_us[i]
    }

    /// Copies `packet` in behind the others. The caller unwraps a full area first.
    fn push(&mut self, packet: &[u8], now_us: u64) {
        debug_assert!(!self.is_full());
        self.bufs[self.len].copy_from_slice(packet);
        self.arrived_us[self.len] = now_us;
        self.len += 1;
        self.recent[self.seen % MAX_RUN] = now_us;
        self.seen += 1;
    }

    /// Whether the last `run` packets of this phase arrived within `window_us`: traffic
    /// fast enough that a run fills within the window.
    fn fills_runs(&self, run: usize, window_us: u64) -> bool {
        if run > MAX_RUN || self.seen < run {
            return false;
        }
        let newest = self.recent[(self.seen - 1) % MAX_RUN];
        let oldest = self.recent[(self.seen - run) % MAX_RUN];
        newest - oldest <= window_us
    }

    /// Forgets the first `n` packets (unwrapped): the rest move to the front, their
    /// buffers swapped, not copied.
    pub fn take_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.bufs[..self.len].rotate_left(n);
        self.arrived_us[..self.len].rotate_left(n);
        self.len -= n;
    }
}

/// Both key phases' areas and the rule for how long a packet waits.
pub struct Gather {
    areas: [Area; 2],
    window_us: u64,
}

impl Gather {
    /// Areas for packets of `packet_len` bytes; a packet waits at most `window_us` (0: a
    /// packet never waits).
    pub fn new(packet_len: usize, window_us: u64) -> Self {
        Self {
            areas: [Area::new(packet_len), Area::new(packet_len)],
            window_us,
        }
    }

    pub fn packet_len(&self) -> usize {
        self.areas[0].bufs[0].len()
    }

    pub fn area(&self, phase: KeyPhase) -> &Area {
        &self.areas[phase.index()]
    }

    pub fn area_mut(&mut self, phase: KeyPhase) -> &mut Area {
        &mut self.areas[phase.index()]
    }

    /// Takes `packet` (of [`Self::packet_len`] bytes) into its phase's area.
    pub fn push(&mut self, phase: KeyPhase, packet: &[u8], now_us: u64) {
        self.areas[phase.index()].push(packet, now_us);
    }

    /// How many of `phase`'s waiting packets, oldest first, to unwrap at `now_us`, for a
    /// codec whose runs take `run` packets (1: no lanes): every whole run, and the rest
    /// too unless they may wait for the next packets (the traffic fills runs and the
    /// oldest of them has not waited the window out).
    pub fn ready(&self, phase: KeyPhase, run: usize, now_us: u64) -> usize {
        let area = &self.areas[phase.index()];
        let n = area.len;
        if run <= 1 || self.window_us == 0 {
            return n;
        }
        let whole = n - n % run;
        if whole == n {
            return n;
        }
        let may_wait = area.fills_runs(run, self.window_us)
            && now_us < area.arrived_us[whole].saturating_add(self.window_us);
        if may_wait { whole } else { n }
    }

    /// When the oldest waiting packet has waited the window out, if any waits.
    pub fn deadline_us(&self) -> Option<u64> {
        self.areas
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.arrived_us[0].saturating_add(self.window_us))
            .min()
    }

    /// Packets waiting in both areas.
    pub fn len(&self) -> usize {
        self.areas.iter().map(Area::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: usize = 8;
    const WINDOW: u64 = 1_000;

    fn gather() -> Gather {
        Gather::new(4, WINDOW)
    }

    fn push_at(g: &mut Gather, times: impl IntoIterator<Item = u64>) {
        for t in times {
            g.push(KeyPhase::Even, &[t as u8; 4], t);
        }
    }

    #[test]
    fn slow_traffic_never_waits() {
        let mut g = gather();
        // One packet every 200 µs: a run of eight takes 1.4 ms, longer than the window.
        push_at(&mut g, (0..RUN as u64 - 1).map(|i| i * 200));
        assert_eq!(g.ready(KeyPhase::Even, RUN, 1_200), 7);
        // A lone first packet has no history: it does not wait either.
        let mut g = gather();
        push_at(&mut g, [5]);
        assert_eq!(g.ready(KeyPhase::Even, RUN, 5), 1);
    }

    #[test]
    fn fast_traffic_waits_for_a_whole_run_until_the_window_is_out() {
        let mut g = gather();
        // Ten packets 50 µs apart: the last eight within 350 µs.
        push_at(&mut g, (0..10).map(|i| i * 50));
        assert_eq!(
            g.ready(KeyPhase::Even, RUN, 450),
            8,
            "one run now, two wait"
        );
        g.area_mut(KeyPhase::Even).take_front(8);
        assert_eq!(g.len(), 2);
        // The two left are the newest, in order.
        assert_eq!(g.area(KeyPhase::Even).bufs[0][0], 400u64 as u8);
        assert_eq!(g.area(KeyPhase::Even).arrived_us(1), 450);
        assert_eq!(g.deadline_us(), Some(400 + WINDOW));
        assert_eq!(g.ready(KeyPhase::Even, RUN, 400 + WINDOW - 1), 0);
        assert_eq!(g.ready(KeyPhase::Even, RUN, 400 + WINDOW), 2, "waited out");
    }

    #[test]
    fn whole_runs_and_codecs_without_lanes_never_wait() {
        let mut g = gather();
        push_at(&mut g, (0..16).map(|i| i * 10));
        assert_eq!(g.ready(KeyPhase::Even, RUN, 150), 16);
        g.area_mut(KeyPhase::Even).take_front(16);
        push_at(&mut g, (0..3).map(|i| 200 + i * 10));
        assert_eq!(g.ready(KeyPhase::Even, 1, 220), 3, "no lanes");
        assert_eq!(Gather::new(4, 0).ready(KeyPhase::Even, RUN, 0), 0);
        let mut off = Gather::new(4, 0);
        off.push(KeyPhase::Even, &[1; 4], 0);
        assert_eq!(off.ready(KeyPhase::Even, RUN, 0), 1, "window 0: no wait");
    }

    #[test]
    fn the_phases_wait_apart() {
        let mut g = gather();
        push_at(&mut g, (0..9).map(|i| i * 10));
        g.push(KeyPhase::Odd, &[0; 4], 95);
        assert_eq!(g.ready(KeyPhase::Even, RUN, 100), 8);
        assert_eq!(g.ready(KeyPhase::Odd, RUN, 100), 1, "the odd phase is slow");
        assert_eq!(g.len(), 10);
        assert!(g.area(KeyPhase::Odd).len() == 1 && !g.area(KeyPhase::Even).is_full());
    }
}
