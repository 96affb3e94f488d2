//! Property tests of the pieces whose correctness is an invariant over any input: the
//! timing wheel against a model, the replay filter, the replay windows, fragment
//! reassembly and the per-client quota.

use std::collections::{BTreeMap, BTreeSet};

use loopix_core::formats::payload::Reassembly;
use loopix_core::network::epoch::EpochSchedule;
use loopix_core::network::topology::Network;
use loopix_core::pipeline::replay::{ReplayFilter, Seen};
use loopix_core::pipeline::timing_wheel::{TimingWheel, WheelConfig};
use loopix_core::roles::client_quota::{BURST, ClientQuota, Spend, TOLERANCE};
use loopix_core::session::ReplayWindow;
use loopix_crypto::NodeId;
use proptest::prelude::*;

const SLOT_US: u64 = 100;

/// One step of a wheel's life: insert an entry due `delay` µs from now, or let time pass.
#[derive(Clone, Debug)]
enum WheelOp {
    Insert { delay_us: u64 },
    Advance { by_us: u64 },
}

fn wheel_op() -> impl Strategy<Value = WheelOp> {
    prop_oneof![
        (0u64..2_000_000).prop_map(|delay_us| WheelOp::Insert { delay_us }),
        (0u64..300_000).prop_map(|by_us| WheelOp::Advance { by_us }),
    ]
}

proptest! {
    /// Every entry fires exactly once, never before its due time, and no later than the
    /// first poll at or after its due time plus one slot.
    #[test]
    fn the_wheel_fires_each_entry_once_never_early_at_most_a_slot_late(
        start_us in 0u64..1_000_000_000_000,
        ops in proptest::collection::vec(wheel_op(), 1..200),
    ) {
        let config = WheelConfig { slot_us: SLOT_US, horizon_us: 10_000_000 };
        let mut wheel = TimingWheel::new(config, 256).unwrap();
        let mut now = start_us;
        let mut due: BTreeMap<u32, u64> = BTreeMap::new();
        let mut free: Vec<u32> = (0..256).rev().collect();
        let mut fired = Vec::new();
        let mut check = |wheel: &mut TimingWheel, now: u64, due: &mut BTreeMap<u32, u64>, free: &mut Vec<u32>| {
            fired.clear();
            wheel.poll(now, |i| fired.push(i));
            for &i in &fired {
                let at = due.remove(&i).expect("fired once, and only what was inserted");
                prop_assert!(at <= now, "entry due at {} fired at {}", at, now);
                free.push(i);
            }
            for (&i, &at) in due.iter() {
                prop_assert!(now < at + SLOT_US, "entry {} due at {} still waiting at {}", i, at, now);
            }
            Ok(())
        };
        for op in ops {
            match op {
                WheelOp::Insert { delay_us } => {
                    if let Some(i) = free.pop() {
                        wheel.insert(i, now + delay_us, now).unwrap();
                        due.insert(i, now + delay_us);
                    }
                }
                WheelOp::Advance { by_us } => {
                    // The driver polls at the deadline the wheel asked for, or later.
                    let target = now + by_us;
                    while let Some(d) = wheel.next_deadline_us().filter(|&d| d <= target) {
                        now = now.max(d);
                        check(&mut wheel, now, &mut due, &mut free)?;
                    }
                    now = target;
                    check(&mut wheel, now, &mut due, &mut free)?;
                }
            }
        }
        prop_assert_eq!(wheel.len(), due.len());
    }

    /// Within its rated capacity the filter records every fresh tag and refuses each one
    /// seen before; its length counts what it recorded.
    #[test]
    fn the_replay_filter_refuses_exactly_what_it_has_seen(
        hashes in proptest::collection::vec(any::<u64>(), 1..2_000),
    ) {
        let mut filter = ReplayFilter::new(4_096, [7; 16]);
        let mut seen = BTreeSet::new();
        for h in hashes {
            let got = filter.insert_hash(h);
            if seen.contains(&h) {
                prop_assert_eq!(got, Seen::Replay);
            } else if got == Seen::Fresh {
                seen.insert(h);
            } else {
                // A fresh hash reported as seen: only a fingerprint collision within its
                // buckets may do that (see FALSE_POSITIVE_BOUND), never a full filter here.
                prop_assert_ne!(got, Seen::Full);
            }
            prop_assert_eq!(filter.insert_hash(h), Seen::Replay, "a second sighting");
        }
        prop_assert_eq!(filter.len(), seen.len());
    }

    /// A window accepts each nonce at most once, accepts every nonce newer than the
    /// highest, and within the window every nonce not seen before.
    #[test]
    fn a_replay_window_accepts_each_nonce_once_and_every_fresh_one_within_reach(
        nonces in proptest::collection::vec(0u64..5_000, 1..600),
    ) {
        let mut window = ReplayWindow::<16>::default();
        let span = ReplayWindow::<16>::WINDOW;
        let mut accepted = BTreeSet::new();
        let mut top: Option<u64> = None;
        for n in nonces {
            let within = top.is_none_or(|t| n > t || t - n < span);
            let fresh = !accepted.contains(&n);
            let got = window.accept(n);
            prop_assert_eq!(got, fresh && within, "nonce {} (top {:?})", n, top);
            if got {
                accepted.insert(n);
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
    }

    /// A message's fragments, in any order and any of them repeated, come out as the whole
    /// message exactly once; the bytes held stay within the bound.
    #[test]
    fn fragments_in_any_order_and_repeated_make_the_message_once(
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..12),
        order in proptest::collection::vec(any::<u16>(), 1..60),
    ) {
        let count = parts.len() as u16;
        let whole: Vec<u8> = parts.concat();
        let mut r = Reassembly::new(4, 16, 64 * 1024);
        let mut out = Vec::new();
        // Every fragment once (so the message completes), then the shuffled repeats.
        let indices: Vec<u16> = order.iter().map(|i| i % count).chain(0..count).collect();
        for i in indices {
            if let Some(m) = r.add(9, i, count, &parts[usize::from(i)]) {
                out.push(m);
            }
            prop_assert!(r.bytes() <= 64 * 1024);
        }
        prop_assert_eq!(out, vec![whole]);
        // Once whole, the message is remembered: its fragments again bring nothing.
        prop_assert_eq!(r.add(9, 0, count, &parts[0]), None);
    }

    /// Over any sequence of sends, a client gets at most its burst plus twice its honest
    /// rate times the time elapsed.
    #[test]
    fn a_client_never_gets_more_than_its_burst_and_twice_its_rate(
        gaps_us in proptest::collection::vec(0u64..200_000, 1..500),
    ) {
        let network = Network {
            params: loopix_crypto::Params::default(),
            layers: 1,
            mu_per_s: 10.0,
            lambda_payload_per_s: 3.0,
            lambda_loop_per_s: 1.0,
            lambda_drop_per_s: 1.0,
            lambda_mix_loop_per_s: 0.0,
            poll_size: 4,
            poll_rate_per_s: 1.0,
            epochs: EpochSchedule::new(0, 1_200_000_000, 60_000_000).unwrap(),
        };
        let mut quota = ClientQuota::new(&network);
        let (client, start) = (NodeId(5), 1_000_000u64);
        let mut now = start;
        let mut allowed = 0u64;
        for gap in gaps_us {
            now += gap;
            if quota.allow(client, Spend::Packet, now) {
                allowed += 1;
            }
            let elapsed_s = (now - start) as f64 / 1e6;
            let bound = BURST + TOLERANCE * 5.0 * elapsed_s;
            prop_assert!(allowed as f64 <= bound + 1e-9, "{} allowed, bound {}", allowed, bound);
        }
    }
}
