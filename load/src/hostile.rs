//! What `loopix loadgen --hostile` sends: honest packets among what an attacker or a broken
//! peer would send, so an overload test loads the node with every kind of work it must
//! refuse, not only with packets it forwards.
//!
//! Every ten datagrams, in a fixed interleaving:
//! - 4 valid packets (forwarded back to the generator and timed);
//! - 2 Sphinx replays: a valid packet sent four datagrams earlier, under a fresh link
//!   trailer (the link cannot tell; the node pays a whole unwrap before its replay filter
//!   refuses it);
//! - 2 junk packets: random bytes of a packet's length under a valid link trailer (a whole
//!   unwrap, then a MAC or group-element failure);
//! - 1 random datagram of random length with no trailer (refused before any crypto);
//! - 1 packet asking the node to hold it for 590 s (unwrapped, then refused as beyond the
//!   delay horizon).

use std::collections::HashMap;

use loopix_core::network::link::LINK_OVERHEAD;
use loopix_crypto::params::MAC_LEN;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::setup::{Pool, Setup, build_pool};

/// One datagram's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Valid,
    Replay,
    SealedJunk,
    Junk,
    MaxDelay,
}

const PATTERN: [Kind; 10] = [
    Kind::Valid,
    Kind::Valid,
    Kind::Valid,
    Kind::Valid,
    Kind::Replay,
    Kind::Replay,
    Kind::SealedJunk,
    Kind::SealedJunk,
    Kind::Junk,
    Kind::MaxDelay,
];

/// How far back in the sequence a replay's original was sent.
const REPLAY_LAG: usize = 4;

/// The hold a max-delay packet asks for, µs: the old default wheel horizon, far beyond the
/// network's delay horizon.
pub const MAX_DELAY_US: u32 = 590_000_000;

/// The longest random datagram.
const MAX_JUNK_LEN: u64 = 3_000;

/// Datagrams of each kind in a hostile pool.
#[derive(Serialize, Debug, Default, Clone, Copy)]
pub struct HostileCounts {
    pub valid: u64,
    pub replays: u64,
    pub sealed_junk: u64,
    pub junk: u64,
    pub max_delay: u64,
}

impl HostileCounts {
    /// Datagrams the node must refuse: every kind but the valid packets.
    pub fn refused(&self) -> u64 {
        self.replays + self.sealed_junk + self.junk + self.max_delay
    }

    /// The counts of the first `n` datagrams of a hostile pool.
    pub fn of_first(n: usize) -> Self {
        let mut c = Self::default();
        for i in 0..n {
            *match PATTERN[i % PATTERN.len()] {
                Kind::Valid => &mut c.valid,
                Kind::Replay => &mut c.replays,
                Kind::SealedJunk => &mut c.sealed_junk,
                Kind::Junk => &mut c.junk,
                Kind::MaxDelay => &mut c.max_delay,
            } += 1;
        }
        c
    }
}

/// `count` datagrams, sealed as sent at `at_us`: the first `hostile` in the hostile
/// interleaving, the rest valid. Only the valid ones are in the pool's MAC index (a
/// replay that is forwarded instead of its original counts as the original).
pub(crate) fn pool(
    setup: &Setup,
    at_us: u64,
    count: usize,
    hostile: usize,
) -> Result<Pool, String> {
    let kind = |i: usize| {
        if i < hostile {
            PATTERN[i % PATTERN.len()]
        } else {
            Kind::Valid
        }
    };
    let built: Vec<usize> = (0..count)
        .filter(|&i| matches!(kind(i), Kind::Valid | Kind::MaxDelay))
        .collect();
    let valid_path = setup.path_at(at_us)?;
    let delay_path = setup.path_holding(at_us, MAX_DELAY_US)?;
    let path_of = |j: usize| match kind(built[j]) {
        Kind::MaxDelay => delay_path,
        _ => valid_path,
    };
    let mut packets = build_pool(&setup.params, &path_of, built.len())?;
    let mut mac_of = vec![[0u8; MAC_LEN]; built.len()];
    for (mac, j) in packets.by_mac.drain() {
        mac_of[j as usize] = mac;
    }
    let packet_len = setup.params.packet_len();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("getrandom: {e}"))?;
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut pool = Pool {
        packets: Vec::with_capacity(count),
        by_mac: HashMap::with_capacity(built.len()),
    };
    let mut next_built = 0;
    for i in 0..count {
        let datagram = match kind(i) {
            k @ (Kind::Valid | Kind::MaxDelay) => {
                let j = next_built;
                next_built += 1;
                if k == Kind::Valid {
                    pool.by_mac.insert(mac_of[j], i as u32);
                }
                setup.seal_owned(at_us, std::mem::take(&mut packets.packets[j]))
            }
            Kind::Replay => setup.seal(at_us, &pool.packets[i - REPLAY_LAG][..packet_len]),
            Kind::SealedJunk => {
                let mut junk = Vec::with_capacity(packet_len + LINK_OVERHEAD);
                junk.resize(packet_len, 0);
                rng.fill_bytes(&mut junk);
                setup.seal_owned(at_us, junk)
            }
            Kind::Junk => {
                let mut junk = vec![0u8; 1 + (rng.next_u64() % MAX_JUNK_LEN) as usize];
                rng.fill_bytes(&mut junk);
                junk
            }
        };
        pool.packets.push(datagram);
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_always_follows_a_valid_original() {
        for i in 0..PATTERN.len() {
            if PATTERN[i] == Kind::Replay {
                assert_eq!(PATTERN[i - REPLAY_LAG], Kind::Valid);
            }
        }
        let c = HostileCounts::of_first(25);
        assert_eq!(
            (c.valid, c.replays, c.sealed_junk, c.junk, c.max_delay),
            (12, 5, 4, 2, 2)
        );
        assert_eq!(
            c.valid + c.replays + c.sealed_junk + c.junk + c.max_delay,
            25
        );
    }
}
