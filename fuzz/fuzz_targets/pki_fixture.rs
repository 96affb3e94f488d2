//! A small network registered at an authority, and what its honest parties sign: the
//! directory targets lay the fuzzer's bytes over these and check that nothing but the
//! honest bytes is ever accepted.
// Each target uses part of the fixture.
#![allow(dead_code)]

use std::collections::BTreeMap;

use loopix_core::pki::document::{Threshold, Trust, Unsigned};
use loopix_core::pki::key_upload::KeyUpload;
use loopix_core::pki::registry::{Registry, registry_toml};
use loopix_crypto::{IdentityPublic, IdentitySecret, NodeId};
use loopix_sim::network::{Generated, NetworkSpec, generate_at};

pub const S: u64 = 1_000_000;
/// The fixture's epoch (1200 s epochs from 0).
pub const EPOCH: u64 = 3;
pub const NOW_US: u64 = (EPOCH * 1200 + 100) * S;

pub struct Fixture {
    pub registry: Registry,
    pub authority_key: IdentitySecret,
    pub trust: Trust,
    /// The signed document of `EPOCH`, and its signed part.
    pub document: String,
    pub document_signed: String,
    /// Node 1's signed upload, and its signed part.
    pub upload: String,
    pub upload_signed: String,
}

pub fn fixture() -> Fixture {
    let spec = NetworkSpec {
        layers: 1,
        mixes_per_layer: 1,
        providers: 1,
        clients: 1,
        epoch_start_s: 0,
        epoch_s: 1200,
        epoch_grace_s: 60,
        first_epoch: EPOCH,
        published_epochs: 2,
        ..NetworkSpec::default()
    };
    let Generated { topology, keys } = generate_at(&spec, 1, |id| {
        std::net::SocketAddr::from(([127, 0, 0, 1], 30_000 + id.0 as u16))
    })
    .expect("generated");
    let identities: BTreeMap<NodeId, IdentitySecret> = topology
        .nodes
        .iter()
        .map(|n| (n.id, IdentitySecret::from_bytes([n.id.0 as u8; 32])))
        .collect();
    let publics: BTreeMap<NodeId, IdentityPublic> =
        identities.iter().map(|(&id, k)| (id, k.public())).collect();
    let registry = Registry::from_toml(&registry_toml(&topology, &publics)).expect("registry");
    let authority_key = IdentitySecret::from_bytes([0xa5; 32]);
    let trust = Trust::new(vec![authority_key.public()], Threshold::AtLeast(1)).expect("trust");
    let unsigned = Unsigned {
        epoch: EPOCH,
        valid_from_s: 0,
        valid_until_s: u64::MAX / S,
        body: topology.to_toml(),
    };
    let id = NodeId(1);
    let upload = KeyUpload::from_seed(
        id,
        100,
        keys.sessions[&id].public(),
        &keys.nodes[&id],
        EPOCH,
        2,
    )
    .sign(&identities[&id]);
    let upload_signed = upload[..upload.find("signature ").expect("signed")].to_string();
    Fixture {
        registry,
        document: unsigned.sign(&authority_key),
        document_signed: unsigned.signed_text(),
        authority_key,
        trust,
        upload,
        upload_signed,
    }
}
