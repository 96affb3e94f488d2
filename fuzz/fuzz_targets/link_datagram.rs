//! Node-to-node datagrams on attacker-chosen bytes: a layer-1 mix checks each as if from
//! its provider. Never a panic, and only the one real datagram opens (once). Half the
//! inputs are spliced onto it so the fuzzer reaches the window and the tag.
#![no_main]

mod input;

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::Topology;
use loopix_crypto::{NodeId, SecretKey, SessionSecret};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Fixture {
    mix: Links,
    valid: Vec<u8>,
    opened: bool,
}

fn fixture() -> &'static Mutex<Fixture> {
    static FX: std::sync::OnceLock<Mutex<Fixture>> = std::sync::OnceLock::new();
    FX.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (m, p) = (SessionSecret::generate(&mut rng), SessionSecret::generate(&mut rng));
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let epoch_key = |rng: &mut ChaCha20Rng| hex(SecretKey::generate(rng).public_key().to_bytes());
        let text = format!(
            "[network]\nlayers = 1\nmu_per_s = 1.0\nlambda_payload_per_s = 1.0\nlambda_loop_per_s = 1.0\n\
             lambda_drop_per_s = 1.0\nlambda_mix_loop_per_s = 1.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\n\
             [[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"127.0.0.1:9001\"\nfirst_epoch = 0\n\
             epoch_keys = [\"{}\"]\nsession_key = \"{}\"\n\n\
             [[nodes]]\nid = 100\nrole = \"provider\"\naddress = \"127.0.0.1:9100\"\nfirst_epoch = 0\n\
             epoch_keys = [\"{}\"]\nsession_key = \"{}\"\n",
            epoch_key(&mut rng),
            hex(m.public().0),
            epoch_key(&mut rng),
            hex(p.public().0)
        );
        let t = Topology::from_toml(&text).expect("a valid topology");
        let mut provider = Links::new(&t, NodeId(100), &p, 0).expect("links");
        let mix = Links::new(&t, NodeId(1), &m, 0).expect("links");
        let mut valid = vec![5u8; 64 + LINK_OVERHEAD];
        provider.seal(1_000, NodeId(1), &mut valid).expect("adjacent");
        Mutex::new(Fixture { mix, valid, opened: false })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let Some(datagram) = input::from(data, &fx.valid) else {
        return;
    };
    if fx.mix.open(2_000, NodeId(100), &datagram).is_ok() {
        assert_eq!(datagram, fx.valid, "only the real datagram opens");
        assert!(!fx.opened, "and only once");
        fx.opened = true;
    }
});
