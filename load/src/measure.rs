//! A small timing harness for `loopix speed`: cases run round-robin, so drift in a noisy
//! VM's speed touches every case alike, and each case reports its median round. And the
//! process's own CPU time, which load tools report beside the node's.

use std::time::{Duration, Instant};

/// One measured operation. `run(n)` performs the operation `n` times and returns the time
/// spent in it, leaving out any per-round setup the case needs (such as refilling packets).
pub struct Case<'a> {
    pub name: &'static str,
    run: Box<dyn FnMut(u64) -> Duration + 'a>,
    iters: u64,
    samples_ns: Vec<f64>,
    /// Operations one call does (a batch's packets): times are reported per operation.
    ops_per_call: usize,
}

impl<'a> Case<'a> {
    /// A case whose every call is timed as it is.
    pub fn simple(name: &'static str, mut op: impl FnMut() + 'a) -> Self {
        Self::with_setup(name, move |n| {
            let start = Instant::now();
            for _ in 0..n {
                op();
            }
            start.elapsed()
        })
    }

    /// A case that times itself (see [`Case`]).
    pub fn with_setup(name: &'static str, run: impl FnMut(u64) -> Duration + 'a) -> Self {
        Self {
            name,
            run: Box::new(run),
            iters: 1,
            samples_ns: Vec::new(),
            ops_per_call: 1,
        }
    }

    /// Each call does `ops` operations (a batch): report time per operation.
    pub fn per_call(mut self, ops: usize) -> Self {
        self.ops_per_call = ops.max(1);
        self
    }

    /// Doubles the iteration count until one round takes at least `round`.
    fn calibrate(&mut self, round: Duration) {
        while (self.run)(self.iters) < round && self.iters < 1 << 30 {
            self.iters *= 2;
        }
    }

    fn sample(&mut self) {
        let spent = (self.run)(self.iters);
        self.samples_ns
            .push(spent.as_nanos() as f64 / (self.iters as f64 * self.ops_per_call as f64));
    }

    /// Median nanoseconds per operation over the rounds run so far.
    pub fn median_ns(&self) -> f64 {
        let mut s = self.samples_ns.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
}

/// Calibrates every case, then runs `rounds` rounds of all of them in turn.
pub fn run_round_robin(cases: &mut [Case<'_>], rounds: usize, round: Duration) {
    for c in cases.iter_mut() {
        c.calibrate(round);
    }
    for _ in 0..rounds {
        for c in cases.iter_mut() {
            c.sample();
        }
    }
}

/// This process's CPU time so far, user and system, every thread, s: a generator's own
/// cost, reported beside the node's (on a machine they share, the generator's CPU is CPU
/// the node did not get).
pub fn process_cpu_s() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into memory we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call (and zeroed before it).
    let u = unsafe { usage.assume_init() };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(s(u.ru_utime) + s(u.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu_s().unwrap();
        let until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        // Clock ticks are coarse (10 ms); 30 ms of spinning shows at least one.
        assert!(process_cpu_s().unwrap() > before);
    }

    #[test]
    fn median_of_odd_and_even_sample_counts() {
        let mut c = Case::simple("noop", || {});
        c.samples_ns = vec![3.0, 1.0, 2.0];
        assert_eq!(c.median_ns(), 2.0);
        c.samples_ns.push(10.0);
        assert_eq!(c.median_ns(), 2.5);
    }

    #[test]
    fn setup_time_is_left_out_of_the_measurement() {
        let mut c = Case::with_setup("sleepy setup", |n| {
            std::thread::sleep(Duration::from_millis(2));
            Duration::from_nanos(5 * n)
        });
        run_round_robin(std::slice::from_mut(&mut c), 3, Duration::from_micros(1));
        assert_eq!(c.median_ns(), 5.0);
    }
}
