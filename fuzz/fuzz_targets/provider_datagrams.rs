//! A provider's door on attacker-chosen bytes, the way its shard calls it: the input's
//! first byte picks a link datagram from the layer-1 mix (sealed under a valid trailer
//! when it has a packet's length), the plaintext of a frame in the client's live session
//! (poll requests with their acks, packets, anything), or raw bytes from the client's
//! address; then the timers and sends. Half the inputs are laid over a valid one (a packet
//! for the client's inbox; a poll). Never a panic; every poll answered is answered with
//! exactly `poll_size` items, each a frame that opens in the client's session.
#![no_main]

mod input;

use std::net::SocketAddr;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use loopix_core::endpoint::Endpoint;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::roles::RoleConfig;
use loopix_core::roles::answer_queue::POLL_ANSWER_DELAY_US;
use loopix_core::roles::inbox::MemoryInbox;
use loopix_core::roles::provider::Provider;
use loopix_core::session::initiator::Opened;
use loopix_core::session::{ClientSession, FrameKind, FrameLayout};
use loopix_crypto::{Command, Hop, NodeId, Params, SessionSecret, build};
use loopix_sim::network::{FIRST_CLIENT, FIRST_PROVIDER};
use loopix_sim::{NetworkSpec, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MIX: NodeId = NodeId(1);
const PROVIDER: NodeId = NodeId(FIRST_PROVIDER);
const CLIENT: NodeId = NodeId(FIRST_CLIENT);
/// A new session this often, well within the provider's session lifetime.
const REKEY_US: u64 = 60_000_000;

struct Fixture {
    provider: Provider<MemoryInbox>,
    mix: Links,
    mix_addr: SocketAddr,
    session: ClientSession,
    session_at_us: u64,
    client_addr: SocketAddr,
    layout: FrameLayout,
    params: Params,
    poll_size: u64,
    valid_packet: Vec<u8>,
    valid_poll: Vec<u8>,
    now_us: u64,
    rng: ChaCha20Rng,
    buf: Vec<u8>,
}

impl Fixture {
    /// A new session for the client, as its core would start one.
    fn handshake(&mut self) {
        let mut frame = vec![0u8; self.layout.frame_len()];
        self.session
            .write_initiation(self.now_us, &mut self.rng, &mut frame)
            .expect("a handshake");
        self.provider
            .handle_datagram(self.now_us, self.client_addr, &frame);
        let t = self
            .provider
            .poll_transmit(self.now_us, &mut self.buf)
            .expect("a response");
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        assert!(matches!(
            self.session
                .open(self.now_us, &self.buf[..t.len], &mut plain),
            Opened::Established
        ));
        self.session_at_us = self.now_us;
    }
}

fn fixture() -> &'static Mutex<Fixture> {
    static FX: std::sync::OnceLock<Mutex<Fixture>> = std::sync::OnceLock::new();
    FX.get_or_init(|| {
        let spec = NetworkSpec {
            layers: 1,
            mixes_per_layer: 1,
            providers: 1,
            clients: 1,
            payload_bytes: 64,
            // Generous shares, so the quota refuses little of what the fuzzer sends.
            lambda_payload_per_s: 1_000.0,
            poll_rate_per_s: 1_000.0,
            ..NetworkSpec::default()
        };
        let mut net = generate(&spec, 3).expect("a valid topology");
        let t = &net.topology;
        let config = RoleConfig::node(
            PROVIDER,
            net.keys
                .nodes
                .remove(&PROVIDER)
                .expect("the provider's keys"),
            net.keys
                .sessions
                .remove(&PROVIDER)
                .expect("its session key"),
        )
        .seeded([6; 32]);
        let provider = Provider::new(t, config, MemoryInbox::new(64, 1_024)).expect("a provider");
        let mix = Links::new(t, MIX, &net.keys.sessions[&MIX], 0).expect("links");
        let client_key = &net.keys.clients[&CLIENT];
        let provider_key = t.node(PROVIDER).and_then(|n| n.session_key).expect("a key");
        let params = t.network.params;
        let layout = FrameLayout::new(&params, t.network.poll_size);
        let session =
            ClientSession::new(SessionSecret::derive_from(client_key), provider_key, layout);
        let deliver = t
            .node(PROVIDER)
            .expect("a node")
            .epoch_keys
            .hop(
                0,
                Command::Deliver {
                    client: CLIENT,
                    delay_us: 0,
                },
            )
            .expect("epoch 0's key");
        let last = Hop::new(client_key.public_key(), Command::Final);
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let valid_packet = build(&params, &[deliver, last], b"hi", &mut rng).expect("a packet");
        let mut valid_poll = vec![0u8; layout.plaintext_len()];
        valid_poll[0] = FrameKind::Poll as u8;
        let buf = vec![0u8; provider.max_datagram_len()];
        let mut fx = Fixture {
            mix_addr: t.node(MIX).expect("a node").address,
            provider,
            mix,
            session,
            session_at_us: 0,
            client_addr: "10.0.0.7:7".parse().expect("an address"),
            layout,
            params,
            poll_size: u64::from(t.network.poll_size),
            valid_packet,
            valid_poll,
            now_us: 1_000_000,
            rng,
            buf,
        };
        fx.handshake();
        Mutex::new(fx)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let fx = &mut *fx;
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    fx.now_us += 5_000;
    if fx.now_us - fx.session_at_us > REKEY_US {
        fx.handshake();
    }
    let now = fx.now_us;
    let polls_before = fx.provider.stats().polls_answered;
    match which % 3 {
        0 => {
            let Some(mut d) = input::from(data, &fx.valid_packet) else {
                return;
            };
            if d.len() == fx.params.packet_len() {
                d.resize(d.len() + LINK_OVERHEAD, 0);
                fx.mix.seal(now, PROVIDER, &mut d).expect("adjacent");
            }
            fx.provider.handle_datagram(now, fx.mix_addr, &d);
        }
        1 => {
            let Some(mut plain) = input::from(data, &fx.valid_poll) else {
                return;
            };
            plain.resize(fx.layout.plaintext_len(), 0);
            let mut frame = vec![0u8; fx.layout.frame_len()];
            if fx.session.seal(&plain, &mut frame).is_some() {
                fx.provider.handle_datagram(now, fx.client_addr, &frame);
            }
        }
        _ => fx.provider.handle_datagram(now, fx.client_addr, data),
    }
    // Answers leave a fixed delay after their poll: look then.
    let answered_at = now + POLL_ANSWER_DELAY_US;
    fx.provider.handle_timeout(answered_at);
    let mut items = 0;
    let mut plain = vec![0u8; fx.layout.plaintext_len()];
    while let Some(t) = fx.provider.poll_transmit(answered_at, &mut fx.buf) {
        if t.to != fx.client_addr {
            continue; // a link packet on to a mix (none here: a one-layer network)
        }
        assert_eq!(t.len, fx.layout.frame_len(), "one frame length");
        match fx.session.open(now, &fx.buf[..t.len], &mut plain) {
            Opened::Plain(p) => assert_eq!(p.kind, FrameKind::Item),
            _ => panic!("an answer that does not open in the session"),
        }
        items += 1;
    }
    let polls = fx.provider.stats().polls_answered - polls_before;
    assert_eq!(
        fx.provider.answers_held(),
        0,
        "every answer left at its time"
    );
    assert_eq!(
        items,
        polls * fx.poll_size,
        "every poll answered with poll_size items"
    );
});
