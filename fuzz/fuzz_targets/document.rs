//! A network document from anyone (a node or client fetches it over plain HTTP): a typed
//! error, never a panic, and only the authority's own signed bytes are ever accepted.
#![no_main]

mod input;
mod pki_fixture;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loopix_core::pki::document::{cosign, verify};
use loopix_crypto::IdentitySecret;

static FIXTURE: OnceLock<pki_fixture::Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(pki_fixture::fixture);
    let Some(bytes) = input::from(data, f.document.as_bytes()) else {
        return;
    };
    if let Ok(d) = verify(&bytes, &f.trust, None, pki_fixture::NOW_US) {
        assert!(
            bytes.starts_with(f.document_signed.as_bytes()),
            "a document the authority did not sign was accepted"
        );
        assert_eq!(d.epoch, pki_fixture::EPOCH);
    }
    // A second authority co-signing whatever it is handed: refused or signed, no panic;
    // what it signs still verifies only if the first signature does.
    let other = IdentitySecret::from_bytes([0x5a; 32]);
    let _ = cosign(&bytes, &other);
    let _ = &f.authority_key;
});
