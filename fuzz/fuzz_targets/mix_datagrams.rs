//! The path a mix's shards run, on attacker-chosen bytes: `handle_datagrams` on a batch
//! (the input's datagram from the provider before it, under a valid link trailer when it
//! has a packet's length, and again under a fresh one: a Sphinx replay the link cannot
//! tell; and the raw bytes from the provider's address), then the timers and sends. Never a
//! panic; every datagram is accounted for (received = sent + dropped + held); and nothing
//! but the one real packet is ever forwarded, once.
#![no_main]

mod input;

use std::net::SocketAddr;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use loopix_core::endpoint::Endpoint;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::roles::RoleConfig;
use loopix_core::roles::mix::Mix;
use loopix_crypto::{Command, NodeId, Params, build};
use loopix_sim::network::FIRST_PROVIDER;
use loopix_sim::{NetworkSpec, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MIX: NodeId = NodeId(1);
const PROVIDER: NodeId = NodeId(FIRST_PROVIDER);

struct Fixture {
    mix: Mix,
    provider: Links,
    provider_addr: SocketAddr,
    params: Params,
    valid: Vec<u8>,
    now_us: u64,
    forwarded: u64,
    buf: Vec<u8>,
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
            lambda_mix_loop_per_s: 0.0,
            ..NetworkSpec::default()
        };
        let mut net = generate(&spec, 3).expect("a valid topology");
        let t = &net.topology;
        let config = RoleConfig::node(
            MIX,
            net.keys.nodes.remove(&MIX).expect("the mix's keys"),
            net.keys
                .sessions
                .remove(&MIX)
                .expect("the mix's session key"),
        )
        .seeded([4; 32]);
        let mix = Mix::new(t, config).expect("a mix");
        let provider = Links::new(t, PROVIDER, &net.keys.sessions[&PROVIDER], 0).expect("links");
        let hop = |id: NodeId, command| {
            t.node(id)
                .expect("a node")
                .epoch_keys
                .hop(0, command)
                .expect("epoch 0's key")
        };
        let path = [
            hop(
                MIX,
                Command::Relay {
                    next: PROVIDER,
                    delay_us: 1_000,
                },
            ),
            hop(PROVIDER, Command::Drop),
        ];
        let params = t.network.params;
        let valid =
            build(&params, &path, b"", &mut ChaCha20Rng::seed_from_u64(5)).expect("a packet");
        let buf = vec![0u8; mix.max_datagram_len()];
        Mutex::new(Fixture {
            mix,
            provider_addr: t.node(PROVIDER).expect("a node").address,
            provider,
            params,
            valid,
            now_us: 1_000_000,
            forwarded: 0,
            buf,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let fx = &mut *fx;
    let Some(bytes) = input::from(data, &fx.valid) else {
        return;
    };
    fx.now_us += 10_000;
    let sealed = |links: &mut Links, now_us| {
        let mut d = bytes.clone();
        if d.len() == fx.params.packet_len() {
            d.resize(d.len() + LINK_OVERHEAD, 0);
            links.seal(now_us, MIX, &mut d).expect("adjacent");
        }
        d
    };
    let (first, again) = (
        sealed(&mut fx.provider, fx.now_us),
        sealed(&mut fx.provider, fx.now_us),
    );
    let from = fx.provider_addr;
    let batch = [(from, &first[..]), (from, &again[..]), (from, &bytes[..])];
    let before = fx.mix.stats().hop.received;
    fx.mix.handle_datagrams(fx.now_us, &batch);
    assert_eq!(
        fx.mix.stats().hop.received,
        before + 3,
        "every datagram counted"
    );
    fx.now_us += 10_000;
    fx.mix.handle_timeout(fx.now_us);
    while let Some(t) = fx.mix.poll_transmit(fx.now_us, &mut fx.buf) {
        assert_eq!(bytes, fx.valid, "only the real packet is forwarded");
        assert_eq!(t.len, fx.params.packet_len() + LINK_OVERHEAD);
        fx.forwarded += 1;
    }
    assert!(fx.forwarded <= 1, "and only once");
    let s = fx.mix.stats();
    assert_eq!(
        s.hop.received,
        s.sent + s.hop.drops.total() + fx.mix.pool_size() as u64,
        "received = sent + dropped + held"
    );
});
