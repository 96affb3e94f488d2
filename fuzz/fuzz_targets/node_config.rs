//! `node.toml` on attacker-chosen text (operators paste configs; a broken one must be a
//! clear error naming its field, never a panic). The topology it names is a valid one in a
//! scratch directory; half the inputs are laid over a valid config.
#![no_main]

mod input;

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use loopix_runtime::config::NodeConfig;
use loopix_sim::NetworkSpec;
use loopix_sim::network::generate;

const VALID: &str = "topology = \"topology.toml\"\nid = 1\nkey_file = \"node-1.key\"\n\
shards = 2\ncpus = [0, 1]\nlisten = \"127.0.0.1:9001\"\nmetrics = \"127.0.0.1:9101\"\n\
grace_ms = 2000\nspin_us = 0\nreplay_sync_ms = 1000\n\n[limits]\npool_packets = 65536\n\
max_packets_per_s = 25000\njournal_tags = 65536\nslot_us = 100\nhorizon_ms = 600000\n\
max_socket_wait_ms = 100\ninbox_per_client = 10000\ninbox_total = 1000000\n\
inbox_ttl_s = 604800\n";

fn base() -> &'static PathBuf {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("loopix-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let toml = generate(&NetworkSpec::default(), 1)
            .expect("generated")
            .topology
            .to_toml();
        std::fs::write(dir.join("topology.toml"), toml).expect("the topology");
        assert!(
            NodeConfig::parse(VALID, &dir).is_ok(),
            "the valid config parses"
        );
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = input::from(data, VALID.as_bytes()) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    if let Err(e) = NodeConfig::parse(text, base()) {
        // A clear error: one line.
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
