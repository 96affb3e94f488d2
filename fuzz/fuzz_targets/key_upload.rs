//! A key upload from anyone (an authority takes them over HTTP): a typed error, never a
//! panic, and only node 1's own signed bytes are ever taken.
#![no_main]

mod input;
mod pki_fixture;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loopix_core::pki::authority::{Authority, AuthorityConfig};

static FIXTURE: OnceLock<pki_fixture::Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(pki_fixture::fixture);
    let Some(bytes) = input::from(data, f.upload.as_bytes()) else {
        return;
    };
    let mut authority = Authority::new(
        f.registry.clone(),
        f.authority_key.clone(),
        AuthorityConfig {
            bootstrap_wait_us: 0,
        },
    );
    if authority.handle_upload(pki_fixture::NOW_US, &bytes).is_ok() {
        assert!(
            bytes.starts_with(f.upload_signed.as_bytes()),
            "an upload node 1 did not sign was taken"
        );
        // The same bytes again change nothing (a node restarting within the second).
        let held = authority
            .upload_text(loopix_crypto::NodeId(1))
            .map(str::to_string);
        assert!(authority.handle_upload(pki_fixture::NOW_US, &bytes).is_ok());
        assert_eq!(
            authority
                .upload_text(loopix_crypto::NodeId(1))
                .map(str::to_string),
            held
        );
    }
    let _ = authority.poll_publish(pki_fixture::NOW_US);
});
