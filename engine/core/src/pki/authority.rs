//! A directory authority, sans-IO: it takes key uploads (`handle_upload`), decides when
//! each epoch's document is ready and signs it (`poll_publish`), and answers for the
//! documents it has published. The shell serves it over HTTP and keeps uploads and
//! documents on disk ([`Authority::restore_upload`], [`Authority::restore_document`]).
//!
//! When the document of epoch `e` is published: as soon as every registered node has
//! uploaded keys for `e` and `e + 1`, or else at its deadline with the nodes that have
//! keys for `e` (the rest are left out of that epoch). The deadline is half an epoch
//! before `e` starts, and never earlier than `bootstrap_wait` after the authority
//! started, so nodes started together all make the first document. Once published, a
//! document never changes, and neither can the keys it lists: an upload that would change
//! a published key is refused.

use std::collections::BTreeMap;

use loopix_crypto::{Address, IdentitySecret};

use super::document::Unsigned;
use super::key_upload::{KeyUpload, SignedUpload, UploadFormatError};
use super::registry::Registry;
use crate::epoch::EpochSchedule;
use crate::topology::{EpochKeys, Node, Role, Topology};

/// Documents kept in memory (older ones stay on disk only).
const KEPT_DOCUMENTS: usize = 16;

/// How far ahead of the authority's clock an upload's `issued` may be, s.
const MAX_CLOCK_AHEAD_S: u64 = 120;

/// Why an upload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadError {
    Format(UploadFormatError),
    /// No node of this id is registered.
    UnknownNode(Address),
    /// Not signed by the registered node's identity key.
    BadSignature(Address),
    /// Not newer than the upload held (a replay, or an old upload sent again).
    Replayed {
        issued_s: u64,
        held_s: u64,
    },
    /// Issued further ahead of this authority's clock than clocks drift.
    FromTheFuture {
        issued_s: u64,
        now_s: u64,
    },
    /// Its keys end before the current epoch.
    Stale {
        last_epoch: u64,
        current: u64,
    },
    /// It would change a key a published document lists.
    ChangesPublishedKey {
        epoch: u64,
    },
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format(e) => e.fmt(f),
            Self::UnknownNode(a) => write!(f, "node {} is not registered here", a.0),
            Self::BadSignature(a) => {
                write!(f, "not signed by node {}'s registered identity key", a.0)
            }
            Self::Replayed { issued_s, held_s } => write!(
                f,
                "issued at {issued_s}, not after the upload held (issued at {held_s})"
            ),
            Self::FromTheFuture { issued_s, now_s } => write!(
                f,
                "issued {} s ahead of this authority's clock",
                issued_s.saturating_sub(*now_s)
            ),
            Self::Stale {
                last_epoch,
                current,
            } => write!(
                f,
                "its last key is for epoch {last_epoch}, before the current epoch {current}"
            ),
            Self::ChangesPublishedKey { epoch } => write!(
                f,
                "it changes the key of epoch {epoch}, which a published document lists"
            ),
        }
    }
}

impl std::error::Error for UploadError {}

/// What [`Authority::poll_publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// A new document, to store and serve.
    Published { epoch: u64, text: String },
    /// The deadline of `epoch` passed, and the uploads do not make a network yet (said
    /// once for each new reason).
    Waiting { epoch: u64, problem: String },
}

/// The authority's settings.
#[derive(Clone, Copy, Debug)]
pub struct AuthorityConfig {
    /// How long after starting the first deadline can be, µs.
    pub bootstrap_wait_us: u64,
}

/// A directory authority's state.
pub struct Authority {
    registry: Registry,
    key: IdentitySecret,
    config: AuthorityConfig,
    uploads: BTreeMap<Address, SignedUpload>,
    /// Published documents: their text and topology (for the frozen keys).
    documents: BTreeMap<u64, (String, Topology)>,
    started_us: Option<u64>,
    told: BTreeMap<u64, String>,
}

impl Authority {
    /// An authority for `registry`, signing with `key`.
    pub fn new(registry: Registry, key: IdentitySecret, config: AuthorityConfig) -> Self {
        Self {
            registry,
            key,
            config,
            uploads: BTreeMap::new(),
            documents: BTreeMap::new(),
            started_us: None,
            told: BTreeMap::new(),
        }
    }

    fn epochs(&self) -> EpochSchedule {
        self.registry.network.epochs
    }

    /// An upload read and checked to be signed by its registered node.
    fn registered_upload(&self, bytes: &[u8]) -> Result<SignedUpload, UploadError> {
        let signed = SignedUpload::parse(bytes).map_err(UploadError::Format)?;
        let node = signed.upload.node;
        let registered = self
            .registry
            .node(node)
            .ok_or(UploadError::UnknownNode(node))?;
        if !signed.signed_by(&registered.identity) {
            return Err(UploadError::BadSignature(node));
        }
        Ok(signed)
    }

    /// Takes a node's key upload at `now_us` (unix µs); returns the node it is from.
    pub fn handle_upload(&mut self, now_us: u64, bytes: &[u8]) -> Result<Address, UploadError> {
        let signed = self.registered_upload(bytes)?;
        let node = signed.upload.node;
        let now_s = now_us / 1_000_000;
        let issued_s = signed.upload.issued_s;
        if issued_s > now_s + MAX_CLOCK_AHEAD_S {
            return Err(UploadError::FromTheFuture { issued_s, now_s });
        }
        if let Some(held) = self.uploads.get(&node)
            && issued_s <= held.upload.issued_s
        {
            return Err(UploadError::Replayed {
                issued_s,
                held_s: held.upload.issued_s,
            });
        }
        let current = self.epochs().epoch_at(now_us);
        let last_epoch = signed.upload.keys.iter().last().map_or(0, |(e, _)| e);
        if last_epoch < current {
            return Err(UploadError::Stale {
                last_epoch,
                current,
            });
        }
        self.check_frozen(&signed.upload)?;
        self.uploads.insert(node, signed);
        Ok(node)
    }

    /// Published keys stay: every key the upload gives for an epoch a document lists
    /// must be the one listed.
    fn check_frozen(&self, upload: &KeyUpload) -> Result<(), UploadError> {
        for (_, topology) in self.documents.values() {
            let Some(n) = topology.node(upload.node) else {
                continue;
            };
            for (epoch, key) in n.epoch_keys.iter() {
                if upload.keys.get(epoch).is_some_and(|k| k != key) {
                    return Err(UploadError::ChangesPublishedKey { epoch });
                }
            }
        }
        Ok(())
    }

    /// Takes back an upload stored earlier (at start): checked again for its signature,
    /// not for its age.
    pub fn restore_upload(&mut self, bytes: &[u8]) -> Result<Address, UploadError> {
        let signed = self.registered_upload(bytes)?;
        let node = signed.upload.node;
        self.uploads.insert(node, signed);
        Ok(node)
    }

    /// Takes back a document published earlier (at start). The caller read it from its
    /// own store; it is parsed, not verified.
    pub fn restore_document(&mut self, epoch: u64, text: String) -> Result<(), String> {
        let (body, _) = super::document::unverified(text.as_bytes()).map_err(|e| e.to_string())?;
        let topology = Topology::from_toml(body).map_err(|e| e.to_string())?;
        self.documents.insert(epoch, (text, topology));
        self.forget_old();
        Ok(())
    }

    /// The upload held for `node`, as received (to store).
    pub fn upload_text(&self, node: Address) -> Option<&str> {
        self.uploads.get(&node).map(|u| u.text.as_str())
    }

    /// Adds the signatures of `peers` (other authorities) that `theirs`, their copy of
    /// the document of `epoch`, carries and ours lacks; returns the document if it changed
    /// (to store). Only the same document's signatures are taken.
    pub fn merge_peer_document(
        &mut self,
        epoch: u64,
        theirs: &[u8],
        peers: &[loopix_crypto::IdentityPublic],
    ) -> Result<Option<&str>, super::document::MergeError> {
        let Some((ours, _)) = self.documents.get_mut(&epoch) else {
            return Ok(None);
        };
        let (merged, added) = super::document::merge_signatures(ours, theirs, peers)?;
        if added == 0 {
            return Ok(None);
        }
        *ours = merged;
        Ok(Some(ours.as_str()))
    }

    /// Whether the published document of `epoch` carries `key`'s signature (`None`: no
    /// such document).
    pub fn signed_by(&self, epoch: u64, key: &loopix_crypto::IdentityPublic) -> Option<bool> {
        let (text, _) = self.documents.get(&epoch)?;
        let signers = super::document::unverified(text.as_bytes()).map_or(Vec::new(), |(_, k)| k);
        Some(signers.contains(key))
    }

    /// The published document of `epoch`.
    pub fn document(&self, epoch: u64) -> Option<&str> {
        self.documents.get(&epoch).map(|(t, _)| t.as_str())
    }

    /// The document of the epoch `now_us` falls in, if published.
    pub fn current_document(&self, now_us: u64) -> Option<&str> {
        self.document(self.epochs().epoch_at(now_us))
    }

    /// The registry's epoch schedule.
    pub fn schedule(&self) -> EpochSchedule {
        self.epochs()
    }

    /// Publishes the current or the next epoch's document if it is due.
    pub fn poll_publish(&mut self, now_us: u64) -> Option<Publish> {
        let started = *self.started_us.get_or_insert(now_us);
        let epochs = self.epochs();
        let current = epochs.epoch_at(now_us);
        for epoch in [current, current + 1] {
            if self.documents.contains_key(&epoch) {
                continue;
            }
            let all_ready = self.registry.nodes.iter().all(|n| {
                self.uploads.get(&n.id).is_some_and(|u| {
                    u.upload.keys.get(epoch).is_some() && u.upload.keys.get(epoch + 1).is_some()
                })
            });
            let deadline = epochs
                .start_of(epoch)
                .saturating_sub(epochs.length_us / 2)
                .max(started + self.config.bootstrap_wait_us);
            if !all_ready && now_us < deadline {
                continue;
            }
            match self.make(epoch) {
                Ok((text, topology)) => {
                    self.documents.insert(epoch, (text.clone(), topology));
                    self.forget_old();
                    self.told.remove(&epoch);
                    return Some(Publish::Published { epoch, text });
                }
                Err(problem) => {
                    if self.told.get(&epoch) != Some(&problem) {
                        self.told.insert(epoch, problem.clone());
                        return Some(Publish::Waiting { epoch, problem });
                    }
                }
            }
        }
        None
    }

    fn forget_old(&mut self) {
        while self.documents.len() > KEPT_DOCUMENTS {
            self.documents.pop_first();
        }
    }

    /// The signed document of `epoch` from the uploads held: every registered node with a
    /// key for `epoch` (and the next one's, if uploaded), and the clients of those
    /// providers.
    fn make(&self, epoch: u64) -> Result<(String, Topology), String> {
        let mut nodes = Vec::new();
        for r in &self.registry.nodes {
            let Some(u) = self.uploads.get(&r.id) else {
                continue;
            };
            let keys: Vec<_> = (epoch..=epoch + 1)
                .map_while(|e| u.upload.keys.get(e))
                .collect();
            if keys.is_empty() {
                continue;
            }
            nodes.push(Node {
                id: r.id,
                role: r.role,
                address: r.address,
                epoch_keys: EpochKeys::new(epoch, keys),
                session_key: Some(u.upload.session_key),
            });
        }
        let clients = self
            .registry
            .clients
            .iter()
            .filter(|c| {
                nodes
                    .iter()
                    .any(|n| n.id == c.provider && n.role == Role::Provider)
            })
            .copied()
            .collect();
        let topology = Topology {
            network: self.registry.network,
            nodes,
            clients,
        };
        // Through the text a reader will parse, so what is signed is what it can use.
        let body = topology.to_toml();
        let topology = Topology::from_toml(&body).map_err(|e| e.to_string())?;
        let epochs = self.epochs();
        let unsigned = Unsigned {
            epoch,
            valid_from_s: epochs.start_of(epoch).saturating_sub(epochs.length_us) / 1_000_000,
            valid_until_s: (epochs.start_of(epoch + 1) + epochs.grace_us).div_ceil(1_000_000),
            body,
        };
        Ok((unsigned.sign(&self.key), topology))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::document::{DocumentError, Trust, verify};
    use crate::pki::registry::tests::sample;
    use loopix_crypto::{EpochSeed, SessionSecret};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const S: u64 = 1_000_000;
    /// The sample registry's epochs: 1200 s from 0, grace 60 s.
    const EPOCH: u64 = 1200 * S;

    struct Net {
        authority: Authority,
        key: loopix_crypto::IdentityPublic,
        identities: BTreeMap<Address, IdentitySecret>,
        seeds: BTreeMap<Address, (EpochSeed, SessionSecret)>,
    }

    fn net() -> Net {
        let (text, identities) = sample();
        let registry = Registry::from_toml(&text).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let key = IdentitySecret::generate(&mut rng);
        let seeds = identities
            .keys()
            .map(|&id| {
                (
                    id,
                    (
                        EpochSeed::generate(&mut rng, 0),
                        SessionSecret::generate(&mut rng),
                    ),
                )
            })
            .collect();
        Net {
            key: key.public(),
            authority: Authority::new(
                registry,
                key,
                AuthorityConfig {
                    bootstrap_wait_us: 10 * S,
                },
            ),
            identities,
            seeds,
        }
    }

    impl Net {
        fn upload(&self, id: u64, issued_s: u64, first: u64, count: usize) -> String {
            let (seed, session) = &self.seeds[&Address(id)];
            KeyUpload::from_seed(Address(id), issued_s, session.public(), seed, first, count)
                .sign(&self.identities[&Address(id)])
        }

        fn upload_all(&mut self, now_us: u64, first: u64) {
            for id in [1, 2, 100] {
                let u = self.upload(id, now_us / S, first, 3);
                self.authority.handle_upload(now_us, u.as_bytes()).unwrap();
            }
        }
    }

    #[test]
    fn a_document_is_published_once_every_node_uploaded_and_verifies() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        assert_eq!(
            n.authority.poll_publish(now),
            None,
            "no uploads, no deadline yet"
        );
        n.upload_all(now, 5);
        let Some(Publish::Published { epoch: 5, text }) = n.authority.poll_publish(now) else {
            panic!("epoch 5 due")
        };
        let trust = Trust::new(vec![n.key], 1).unwrap();
        let d = verify(text.as_bytes(), &trust, Some(5), now).unwrap();
        assert_eq!(d.topology.nodes.len(), 3);
        assert_eq!(d.topology.clients.len(), 1);
        let mix = d.topology.node(Address(1)).unwrap();
        let (seed, session) = &n.seeds[&Address(1)];
        assert_eq!(
            mix.epoch_keys.get(5),
            Some(seed.secret_key(5).unwrap().public_key())
        );
        assert_eq!(
            mix.epoch_keys.get(6),
            Some(seed.secret_key(6).unwrap().public_key())
        );
        assert_eq!(mix.session_key, Some(session.public()));
        // The next epoch's follows at once (the keys are there); then nothing more.
        assert!(matches!(
            n.authority.poll_publish(now),
            Some(Publish::Published { epoch: 6, .. })
        ));
        assert_eq!(n.authority.poll_publish(now), None);
        assert_eq!(n.authority.current_document(now), Some(text.as_str()));
        // Valid through its epoch and the grace after it, not later.
        assert!(verify(text.as_bytes(), &trust, Some(5), 6 * EPOCH + 59 * S).is_ok());
        assert!(matches!(
            verify(text.as_bytes(), &trust, Some(5), 6 * EPOCH + 62 * S),
            Err(DocumentError::Expired { .. })
        ));
    }

    #[test]
    fn a_node_that_did_not_upload_is_left_out_at_the_deadline_and_not_before() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        // Two mixes per layer would be needed to leave a mix out; leave out nothing
        // essential: only the provider and mixes upload, one mix late.
        assert_eq!(n.authority.poll_publish(now), None);
        for id in [1, 100] {
            let u = n.upload(id, now / S, 5, 3);
            n.authority.handle_upload(now, u.as_bytes()).unwrap();
        }
        assert_eq!(
            n.authority.poll_publish(now + 5 * S),
            None,
            "waits for node 2"
        );
        // At the bootstrap deadline layer 2 is empty: said once, not published.
        let said = n.authority.poll_publish(now + 11 * S);
        assert!(
            matches!(&said, Some(Publish::Waiting { epoch: 5, problem }) if problem.contains("layer 2")),
            "{said:?}"
        );
        assert!(
            !matches!(
                n.authority.poll_publish(now + 12 * S),
                Some(Publish::Waiting { epoch: 5, .. })
            ),
            "said once"
        );
        let u = n.upload(2, now / S + 12, 5, 3);
        n.authority
            .handle_upload(now + 12 * S, u.as_bytes())
            .unwrap();
        assert!(matches!(
            n.authority.poll_publish(now + 13 * S),
            Some(Publish::Published { epoch: 5, .. })
        ));
    }

    #[test]
    fn forged_replayed_stale_and_unknown_uploads_are_refused() {
        let mut n = net();
        let now = 5 * EPOCH;
        let good = n.upload(1, 100, 5, 3);
        // Signed by another registered node's identity.
        let (seed, session) = &n.seeds[&Address(1)];
        let forged = KeyUpload::from_seed(Address(1), 100, session.public(), seed, 5, 3)
            .sign(&n.identities[&Address(2)]);
        assert_eq!(
            n.authority.handle_upload(now, forged.as_bytes()),
            Err(UploadError::BadSignature(Address(1)))
        );
        let stranger = KeyUpload::from_seed(Address(7), 100, session.public(), seed, 5, 3)
            .sign(&n.identities[&Address(1)]);
        assert_eq!(
            n.authority.handle_upload(now, stranger.as_bytes()),
            Err(UploadError::UnknownNode(Address(7)))
        );
        assert_eq!(
            n.authority.handle_upload(now, good.as_bytes()),
            Ok(Address(1))
        );
        assert_eq!(
            n.authority.handle_upload(now, good.as_bytes()),
            Err(UploadError::Replayed {
                issued_s: 100,
                held_s: 100
            })
        );
        let stale = n.upload(1, 200, 1, 3);
        assert_eq!(
            n.authority.handle_upload(now, stale.as_bytes()),
            Err(UploadError::Stale {
                last_epoch: 3,
                current: 5
            })
        );
        let future = n.upload(1, now / S + 3600, 5, 3);
        assert!(matches!(
            n.authority.handle_upload(now, future.as_bytes()),
            Err(UploadError::FromTheFuture { .. })
        ));
        assert!(matches!(
            n.authority.handle_upload(now, b"loopix-keys v1\nnode 1\n"),
            Err(UploadError::Format(_))
        ));
    }

    #[test]
    fn a_published_key_cannot_be_changed() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        n.upload_all(now, 5);
        while n.authority.poll_publish(now).is_some() {}
        // Node 1 comes back with a new seed: its keys for 5..7 differ from the documents'.
        let other = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(77), 0);
        let session = n.seeds[&Address(1)].1.public();
        let changed = KeyUpload::from_seed(Address(1), now / S + 1, session, &other, 6, 3)
            .sign(&n.identities[&Address(1)]);
        assert_eq!(
            n.authority.handle_upload(now, changed.as_bytes()),
            Err(UploadError::ChangesPublishedKey { epoch: 6 })
        );
        // From an epoch no document lists yet, new keys are taken.
        let later = KeyUpload::from_seed(Address(1), now / S + 1, session, &other, 8, 3)
            .sign(&n.identities[&Address(1)]);
        assert_eq!(
            n.authority.handle_upload(now, later.as_bytes()),
            Ok(Address(1))
        );
    }

    #[test]
    fn stored_uploads_and_documents_come_back() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        n.upload_all(now, 5);
        let Some(Publish::Published { text, .. }) = n.authority.poll_publish(now) else {
            panic!()
        };
        let upload = n.authority.upload_text(Address(1)).unwrap().to_string();
        let mut again = net();
        again.authority.restore_document(5, text.clone()).unwrap();
        assert_eq!(again.authority.signed_by(5, &n.key), Some(true));
        assert_eq!(again.authority.signed_by(6, &n.key), None);
        assert_eq!(
            again.authority.restore_upload(upload.as_bytes()),
            Ok(Address(1))
        );
        assert_eq!(again.authority.document(5), Some(text.as_str()));
        // An upload stored under another node's key is refused on the way back too.
        let bent = upload.replacen("node 1", "node 2", 1);
        assert!(again.authority.restore_upload(bent.as_bytes()).is_err());
    }
}
