//! One client and one provider, frame by frame, and what an attacker without keys gets.

use std::net::SocketAddr;

use loopix_crypto::{NodeId, Params, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::initiator::Opened;
use super::*;
use crate::drops::DropReason;

const CLIENT: NodeId = NodeId(10_000);

struct Pair {
    client: ClientSession,
    provider: Sessions,
    layout: FrameLayout,
    rng: ChaCha20Rng,
    addr: SocketAddr,
}

fn pair() -> Pair {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let layout = FrameLayout::new(&Params::new(256).unwrap(), 4);
    let provider_key = SessionSecret::generate(&mut rng);
    let client_key = SessionSecret::generate(&mut rng);
    let provider = Sessions::new(
        provider_key.clone(),
        layout,
        [(CLIENT, client_key.public())],
        [1; 32],
    );
    let client = ClientSession::new(client_key, provider_key.public(), layout);
    Pair {
        client,
        provider,
        layout,
        rng,
        addr: "10.0.0.1:5000".parse().unwrap(),
    }
}

impl Pair {
    fn frame(&self) -> Vec<u8> {
        vec![0u8; self.layout.frame_len()]
    }

    /// Runs a handshake at `now`; returns the initiation sent.
    fn connect(&mut self, now: u64) -> Vec<u8> {
        let mut init = self.frame();
        let n = self.client.write_initiation(now, &mut self.rng, &mut init);
        assert_eq!(n, Some(self.layout.frame_len()));
        let mut out = self.frame();
        let Received::Response { len } = self.provider.receive(now, self.addr, &init, &mut out)
        else {
            panic!("the handshake was refused");
        };
        assert_eq!(len, self.layout.frame_len(), "one frame answers one frame");
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        assert!(matches!(
            self.client.open(now, &out[..len], &mut plain),
            Opened::Established
        ));
        init
    }

    fn plain(&self, kind: FrameKind, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; self.layout.plaintext_len()];
        p[0] = kind as u8;
        p
    }

    fn uplink(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut f = self.frame();
        assert_eq!(self.client.seal(plain, &mut f), Some(f.len()));
        f
    }
}

fn drop_reason(r: Received<'_>) -> Option<DropReason> {
    match r {
        Received::Dropped(d) => Some(d),
        _ => None,
    }
}

#[test]
fn frames_travel_both_ways_once_and_all_have_one_length() {
    let mut p = pair();
    assert_eq!(p.client.handshake_due(0), initiator::HandshakeDue::Now);
    p.connect(1_000);
    assert!(p.client.is_up(1_000) && p.provider.is_up(CLIENT, 1_000));
    let sent = p.plain(FrameKind::Poll, 0xAB);
    let frame = p.uplink(&sent);
    let mut out = p.frame();
    let Received::Plain {
        client,
        index,
        plain,
    } = p.provider.receive(2_000, p.addr, &frame, &mut out)
    else {
        panic!("refused");
    };
    assert_eq!((client, plain.kind), (CLIENT, FrameKind::Poll));
    assert_eq!(plain.body, &sent[1..]);
    let mut back = p.frame();
    let answer = p.plain(FrameKind::Item, 0xCD);
    let (to, len) = p.provider.seal(2_000, index, &answer, &mut back).unwrap();
    assert_eq!((to, len), (p.addr, frame.len()));
    let mut plain = vec![0u8; p.layout.plaintext_len()];
    let Opened::Plain(got) = p.client.open(2_000, &back, &mut plain) else {
        panic!("the answer did not open");
    };
    assert_eq!(got.body, &answer[1..]);
    // The same bytes again, either way: replays.
    let mut out = p.frame();
    assert_eq!(
        drop_reason(p.provider.receive(3_000, p.addr, &frame, &mut out)),
        Some(DropReason::SessionReplay)
    );
    assert!(matches!(
        p.client.open(3_000, &back, &mut plain),
        Opened::Refused
    ));
}

#[test]
fn a_flipped_bit_or_a_made_up_session_does_not_authenticate() {
    let mut p = pair();
    p.connect(1_000);
    let sent = p.plain(FrameKind::Packet, 1);
    let mut frame = p.uplink(&sent);
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let mut out = p.frame();
    assert_eq!(
        drop_reason(p.provider.receive(2_000, p.addr, &frame, &mut out)),
        Some(DropReason::Unauthenticated)
    );
    let mut random = p.frame();
    p.rng.fill_bytes(&mut random);
    random[..4].copy_from_slice(&77u32.to_be_bytes());
    assert_eq!(
        drop_reason(p.provider.receive(2_000, p.addr, &random, &mut out)),
        Some(DropReason::Unauthenticated)
    );
    // The untouched frame still opens after the forgeries: they moved no window.
    frame[last] ^= 1;
    assert!(matches!(
        p.provider.receive(2_000, p.addr, &frame, &mut out),
        Received::Plain { .. }
    ));
}

#[test]
fn only_a_registered_client_with_a_fresh_timestamp_gets_an_answer() {
    let mut p = pair();
    let init = p.connect(1_000);
    let mut out = p.frame();
    // Replayed from anywhere, even much later: refused, nothing to send.
    let spoofed: SocketAddr = "10.6.6.6:666".parse().unwrap();
    assert_eq!(
        drop_reason(p.provider.receive(5_000, spoofed, &init, &mut out)),
        Some(DropReason::SessionReplay)
    );
    // A stranger's key: no answer.
    let stranger_key = SessionSecret::generate(&mut p.rng);
    let mut stranger = ClientSession::new(stranger_key, p.provider.public(), p.layout);
    let mut f = p.frame();
    stranger
        .write_initiation(6_000, &mut p.rng, &mut f)
        .unwrap();
    assert_eq!(
        drop_reason(p.provider.receive(6_000, spoofed, &f, &mut out)),
        Some(DropReason::Unauthenticated)
    );
    // The client's own handshake with a clock far off: refused.
    let far = 1_000 + MAX_CLOCK_SKEW_US + 1;
    p.client.reset();
    let mut f = p.frame();
    p.client.write_initiation(far, &mut p.rng, &mut f).unwrap();
    assert_eq!(
        drop_reason(p.provider.receive(1_000, p.addr, &f, &mut out)),
        Some(DropReason::SessionReplay)
    );
}

#[test]
fn a_rekey_keeps_answers_in_flight_and_the_answer_goes_where_the_client_now_is() {
    let mut p = pair();
    p.connect(1_000);
    let poll = p.plain(FrameKind::Poll, 0);
    let frame = p.uplink(&poll);
    let mut out = p.frame();
    let Received::Plain { index: old, .. } = p.provider.receive(2_000, p.addr, &frame, &mut out)
    else {
        panic!("refused");
    };
    let later = 1_000 + REKEY_AFTER_US;
    assert_eq!(
        p.client.handshake_due(later),
        initiator::HandshakeDue::OnCover
    );
    p.addr = "10.0.0.2:6000".parse().unwrap();
    p.connect(later);
    // An answer to the poll sent before the rekey still opens.
    let mut back = p.frame();
    let (to, _) = p
        .provider
        .seal(later, old, &p.plain(FrameKind::Item, 9), &mut back)
        .unwrap();
    assert_eq!(
        to,
        "10.0.0.1:5000".parse().unwrap(),
        "the old session's peer"
    );
    let mut plain = vec![0u8; p.layout.plaintext_len()];
    assert!(matches!(
        p.client.open(later, &back, &mut plain),
        Opened::Plain(_)
    ));
    // After the reject time the old session seals nothing.
    assert!(
        p.provider
            .seal(1_000 + REJECT_AFTER_US, old, &poll, &mut back)
            .is_none()
    );
}

#[test]
fn junk_initiations_are_refused_without_a_diffie_hellman() {
    let mut p = pair();
    let mut out = p.frame();
    let mut junk = p.frame();
    for i in 0..200 {
        p.rng.fill_bytes(&mut junk);
        junk[..4].fill(0);
        let from: SocketAddr = format!("10.9.0.{}:{}", i % 250, 1000 + i).parse().unwrap();
        assert_eq!(
            drop_reason(p.provider.receive(1_000, from, &junk, &mut out)),
            Some(DropReason::HandshakeMac)
        );
    }
    // A real initiation with one bit of its mac1 or of its Noise message changed, too.
    for at in [frame::MAC1_AT, frame::HEADER_LEN + 5] {
        let mut init = p.frame();
        p.client
            .write_initiation(1_000, &mut p.rng, &mut init)
            .unwrap();
        init[at] ^= 1;
        assert_eq!(
            drop_reason(p.provider.receive(1_000, p.addr, &init, &mut out)),
            Some(DropReason::HandshakeMac),
            "byte {at}"
        );
    }
    assert_eq!(p.provider.handshakes_computed(), 0);
    p.client.reset();
    p.connect(2_000);
    assert_eq!(p.provider.handshakes_computed(), 1);
}

/// A pair whose provider is under load from its first handshake on.
fn loaded_pair(per_source_per_s: u32) -> Pair {
    let mut p = pair();
    let provider = std::mem::replace(
        &mut p.provider,
        Sessions::new(SessionSecret::generate(&mut p.rng), p.layout, [], [0; 32]),
    );
    p.provider = provider.with_limits(HandshakeLimits {
        load_per_s: 0,
        per_source_per_s,
        per_client_interval_us: 0,
    });
    p
}

#[test]
fn under_load_a_client_gets_a_cookie_then_its_session() {
    let mut p = loaded_pair(20);
    // Load: one handshake computed (the threshold is 0).
    p.connect(1_000);
    p.client.reset();
    let mut init = p.frame();
    p.client
        .write_initiation(2_000, &mut p.rng, &mut init)
        .unwrap();
    let mut out = p.frame();
    let Received::Cookie { len } = p.provider.receive(2_000, p.addr, &init, &mut out) else {
        panic!("under load, an unproven address gets a cookie");
    };
    assert_eq!(len, p.layout.frame_len(), "one frame answers one frame");
    assert_eq!(p.provider.handshakes_computed(), 1, "no DH for it");
    let mut plain = vec![0u8; p.layout.plaintext_len()];
    // A cookie for another initiator index is not taken.
    let mut other = out.clone();
    other[0] ^= 1;
    assert!(matches!(
        p.client.open(2_000, &other, &mut plain),
        Opened::Refused
    ));
    assert!(matches!(
        p.client.open(2_000, &out[..len], &mut plain),
        Opened::CookieTaken
    ));
    assert_eq!(
        p.client.handshake_due(2_000),
        initiator::HandshakeDue::Now,
        "the next initiation goes at once"
    );
    p.connect(3_000);
    assert_eq!(p.client.stats().cookies, 1);
    // The same initiation with its mac2 replayed from another address: a cookie for that
    // address, not a handshake.
    p.client.reset();
    let mut init = p.frame();
    p.client
        .write_initiation(4_000, &mut p.rng, &mut init)
        .unwrap();
    let elsewhere: SocketAddr = "10.6.6.6:666".parse().unwrap();
    assert!(matches!(
        p.provider.receive(4_000, elsewhere, &init, &mut out),
        Received::Cookie { .. }
    ));
    assert!(matches!(
        p.provider.receive(4_000, p.addr, &init, &mut out),
        Received::Response { .. }
    ));
}

#[test]
fn under_load_a_proven_address_is_held_to_its_handshake_allowance() {
    let mut p = loaded_pair(2);
    p.connect(1_000);
    let mut out = p.frame();
    let mut plain = vec![0u8; p.layout.plaintext_len()];
    let mut init = p.frame();
    p.client
        .write_initiation(2_000, &mut p.rng, &mut init)
        .unwrap();
    let Received::Cookie { len } = p.provider.receive(2_000, p.addr, &init, &mut out) else {
        panic!()
    };
    p.client.open(2_000, &out[..len], &mut plain);
    let results: Vec<_> = (0..5u64)
        .map(|i| {
            let mut f = p.frame();
            p.client
                .write_initiation(3_000 + i, &mut p.rng, &mut f)
                .unwrap();
            drop_reason(p.provider.receive(3_000 + i, p.addr, &f, &mut out))
        })
        .collect();
    assert_eq!(
        results,
        [
            None,
            None,
            Some(DropReason::HandshakeRateLimited),
            Some(DropReason::HandshakeRateLimited),
            Some(DropReason::HandshakeRateLimited)
        ]
    );
}

#[test]
fn a_registered_client_cannot_churn_sessions() {
    let mut p = pair();
    let interval = HandshakeLimits::default().per_client_interval_us;
    // A burst: the first session and three more at once (a reload, lost answers).
    for i in 0..4 {
        p.client.reset();
        p.connect(1_000 + i);
    }
    let mut out = p.frame();
    let mut f = p.frame();
    p.client.reset();
    p.client
        .write_initiation(2_000, &mut p.rng, &mut f)
        .unwrap();
    assert_eq!(
        drop_reason(p.provider.receive(2_000, p.addr, &f, &mut out)),
        Some(DropReason::HandshakeRateLimited)
    );
    // Then one an interval.
    p.client.reset();
    p.connect(2_000 + interval);
    let mut f = p.frame();
    p.client.reset();
    p.client
        .write_initiation(3_000 + interval, &mut p.rng, &mut f)
        .unwrap();
    assert_eq!(
        drop_reason(p.provider.receive(3_000 + interval, p.addr, &f, &mut out)),
        Some(DropReason::HandshakeRateLimited)
    );
}

#[test]
fn a_removed_or_re_keyed_client_loses_its_session_at_once() {
    let mut p = pair();
    p.connect(1_000);
    let poll = p.plain(FrameKind::Poll, 0);
    let mut out = p.frame();
    let frame = p.uplink(&poll);
    assert!(matches!(
        p.provider.receive(2_000, p.addr, &frame, &mut out),
        Received::Plain { .. }
    ));
    // The topology now gives the client another key: its session made under the old one
    // ends, though it is young.
    let new_key = SessionSecret::generate(&mut p.rng).public();
    p.provider.set_clients([(CLIENT, new_key)]);
    assert!(!p.provider.is_up(CLIENT, 3_000));
    let frame = p.uplink(&poll);
    assert_eq!(
        drop_reason(p.provider.receive(3_000, p.addr, &frame, &mut out)),
        Some(DropReason::Unauthenticated)
    );
    // Removed: the same.
    let mut q = pair();
    q.connect(1_000);
    q.provider.set_clients([]);
    assert!(!q.provider.is_up(CLIENT, 2_000));
    assert_eq!(q.provider.len(), 0);
}
