//! Client-provider session frames on attacker-chosen bytes, at both ends: the provider's
//! handshake and transport paths (snow's message parsing among them) and the client's.
//! Never a panic; nothing that does not authenticate is ever taken. Half the inputs are
//! spliced onto a real frame so the fuzzer also reaches the window and the decryption.
#![no_main]

mod input;

use std::net::SocketAddr;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use loopix_core::session::initiator::Opened;
use loopix_core::session::{ClientSession, FrameKind, FrameLayout, Received, Sessions};
use loopix_crypto::{NodeId, Params, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Fixture {
    provider: Sessions,
    client: ClientSession,
    layout: FrameLayout,
    valid: Vec<u8>,
}

fn fixture() -> &'static Mutex<Fixture> {
    static FX: std::sync::OnceLock<Mutex<Fixture>> = std::sync::OnceLock::new();
    FX.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let layout = FrameLayout::new(&Params::new(64).expect("valid size"), 4);
        let (p, c) = (
            SessionSecret::generate(&mut rng),
            SessionSecret::generate(&mut rng),
        );
        let mut provider =
            Sessions::new(p.clone(), layout, [(NodeId(10_000), c.public())], [1; 32]);
        let mut client = ClientSession::new(c, p.public(), layout);
        let mut init = vec![0u8; layout.frame_len()];
        client
            .write_initiation(1_000, &mut rng, &mut init)
            .expect("a handshake");
        let mut out = vec![0u8; layout.frame_len()];
        let from: SocketAddr = "10.0.0.1:1".parse().expect("an address");
        let Received::Response { len } = provider.receive(1_000, from, &init, &mut out) else {
            panic!("the fixture's handshake");
        };
        let mut plain = vec![0u8; layout.plaintext_len()];
        assert!(matches!(
            client.open(1_000, &out[..len], &mut plain),
            Opened::Established
        ));
        plain.fill(0);
        plain[0] = FrameKind::Poll as u8;
        let mut valid = vec![0u8; layout.frame_len()];
        client.seal(&plain, &mut valid).expect("a session");
        Mutex::new(Fixture {
            provider,
            client,
            layout,
            valid,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let Some(frame) = input::from(data, &fx.valid) else {
        return;
    };
    let from: SocketAddr = "10.6.6.6:6".parse().expect("an address");
    let mut out = vec![0u8; fx.layout.frame_len()];
    let fx = &mut *fx;
    if let Received::Plain { plain, .. } = fx.provider.receive(2_000, from, &frame, &mut out) {
        // Only the untouched frame authenticates, once.
        assert_eq!(frame, fx.valid);
        assert_eq!(plain.kind, FrameKind::Poll);
    }
    let mut plain = vec![0u8; fx.layout.plaintext_len()];
    let _ = fx.client.open(2_000, &frame, &mut plain);
});
