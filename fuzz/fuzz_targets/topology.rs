//! The topology loader on attacker-chosen text: a typed error naming a field, never a
//! panic. (A node loads a topology it is handed; later, one it fetches.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopix_core::network::topology::Topology;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Topology::from_toml(text);
    }
});
