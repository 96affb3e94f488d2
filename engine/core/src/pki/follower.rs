//! Following the directory, sans-IO: which document to fetch when, which topology is in
//! force, and (for a node) which keys to upload when. Nodes and clients drive the same
//! follower; the shell does the fetching and hands back the bytes with `now`.
//!
//! - At start it asks for the current document (`Want::Current`) and takes it only if it
//!   verifies and is for the epoch that the document's own schedule says `now` is in.
//! - From half an epoch before the next epoch starts, it asks for that epoch's document
//!   (`Want::Epoch`), and holds it until the boundary, where [`Follower::poll_topology`]
//!   hands it over: documents change at boundaries, never in the middle of an epoch.
//! - A fetch that failed or brought a document that was refused is tried again after
//!   [`RETRY_US`]. If the current document expires with no next one, it asks for the
//!   current one again.

use loopix_crypto::{EpochSeed, IdentitySecret, NodeId, SessionPublic};

use super::document::{Document, DocumentError, Trust, verify};
use super::key_upload::KeyUpload;
use crate::network::epoch::EpochSchedule;
use crate::network::topology::Topology;

/// How long after a failed fetch or upload the next is tried, µs.
pub const RETRY_US: u64 = 1_000_000;

/// A document to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Whichever epoch is current (at start, or after falling behind).
    Current,
    /// This epoch's.
    Epoch(u64),
}

/// What a node or client knows of the directory.
#[derive(Debug)]
pub struct Follower {
    trust: Trust,
    current: Option<Document>,
    next: Option<Document>,
    /// A topology to hand over (the first document's).
    fresh: Option<Topology>,
    retry_at_us: u64,
}

impl Follower {
    /// A follower that trusts `trust`.
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            current: None,
            next: None,
            fresh: None,
            retry_at_us: 0,
        }
    }

    /// The document in force.
    pub fn current(&self) -> Option<&Document> {
        self.current.as_ref()
    }

    fn schedule(&self) -> Option<EpochSchedule> {
        self.current.as_ref().map(|d| d.topology.network.epochs)
    }

    /// What to fetch now, if anything.
    pub fn poll_fetch(&self, now_us: u64) -> Option<Want> {
        if now_us < self.retry_at_us {
            return None;
        }
        let (Some(current), Some(epochs)) = (&self.current, self.schedule()) else {
            return Some(Want::Current);
        };
        if now_us > current.valid_until_us && self.next.is_none() {
            return Some(Want::Current);
        }
        let next = current.epoch + 1;
        let from = epochs.start_of(next).saturating_sub(epochs.length_us / 2);
        (self.next.is_none() && now_us >= from).then_some(Want::Epoch(next))
    }

    /// Takes the answer to a fetch of `want`: the document's epoch, or why it was refused
    /// (the fetch is tried again later).
    pub fn handle_fetched(
        &mut self,
        now_us: u64,
        want: Want,
        bytes: &[u8],
    ) -> Result<u64, DocumentError> {
        let asked = match want {
            Want::Current => None,
            Want::Epoch(e) => Some(e),
        };
        let checked = verify(bytes, &self.trust, asked, now_us).and_then(|d| {
            let current = d.topology.network.epochs.epoch_at(now_us);
            match want {
                // A stale current document (the authority has not published the new
                // one yet) is refused; so is one from an epoch still ahead.
                Want::Current if d.epoch != current => Err(DocumentError::WrongEpoch {
                    asked: current,
                    got: d.epoch,
                }),
                _ => Ok(d),
            }
        });
        match checked {
            Ok(d) => {
                let epoch = d.epoch;
                match want {
                    Want::Current => {
                        self.fresh = Some(d.topology.clone());
                        self.current = Some(d);
                        self.next = None;
                    }
                    Want::Epoch(_) => self.next = Some(d),
                }
                Ok(epoch)
            }
            Err(e) => {
                self.retry_at_us = now_us + RETRY_US;
                Err(e)
            }
        }
    }

    /// A fetch that brought nothing (no authority answered, or none had the document).
    pub fn handle_fetch_failed(&mut self, now_us: u64) {
        self.retry_at_us = now_us + RETRY_US;
    }

    /// The topology to use from now, when it changes: the first document's, then each
    /// next one's once its epoch has started.
    pub fn poll_topology(&mut self, now_us: u64) -> Option<Topology> {
        if let Some(t) = self.fresh.take() {
            return Some(t);
        }
        let next = self.next.as_ref()?;
        let epochs = next.topology.network.epochs;
        if now_us < epochs.start_of(next.epoch) {
            return None;
        }
        let next = self.next.take()?;
        let topology = next.topology.clone();
        self.current = Some(next);
        Some(topology)
    }
}

/// Epochs of keys a node uploads at a time: the current one and three ahead, so an
/// authority that publishes the next document early has its keys, and an upload missed
/// for an epoch or two costs nothing.
pub const UPLOAD_EPOCHS: usize = 4;

/// A node's side of key publishing: when to upload, and the signed upload. The seed it
/// holds moves forward with the epochs (earlier keys wiped), as the key file does.
pub struct KeyPublisher {
    node: NodeId,
    identity: IdentitySecret,
    session_key: SessionPublic,
    seed: EpochSeed,
    epochs: EpochSchedule,
    /// The epoch last uploaded for, once an authority took it.
    done_for: Option<u64>,
    last_issued_s: u64,
    retry_at_us: u64,
}

impl KeyPublisher {
    /// Publishes `seed`'s keys for `node` under `identity`, on `epochs`.
    pub fn new(
        node: NodeId,
        identity: IdentitySecret,
        session_key: SessionPublic,
        seed: EpochSeed,
        epochs: EpochSchedule,
    ) -> Self {
        Self {
            node,
            identity,
            session_key,
            seed,
            epochs,
            done_for: None,
            last_issued_s: 0,
            retry_at_us: 0,
        }
    }

    /// The epochs a node's network runs on can be learned only from a document: set them
    /// when one arrives (a new schedule uploads again).
    pub fn set_schedule(&mut self, epochs: EpochSchedule) {
        if epochs != self.epochs {
            self.epochs = epochs;
            self.done_for = None;
        }
    }

    /// A signed upload to send now, if one is due: once at start and once every epoch.
    pub fn poll_upload(&mut self, now_us: u64) -> Option<String> {
        let current = self.epochs.epoch_at(now_us);
        if self.done_for == Some(current) || now_us < self.retry_at_us {
            return None;
        }
        self.seed.advance_to(current);
        // Never the same `issued` twice: an authority takes only newer uploads.
        let issued_s = (now_us / 1_000_000).max(self.last_issued_s + 1);
        self.last_issued_s = issued_s;
        let upload = KeyUpload::from_seed(
            self.node,
            issued_s,
            self.session_key,
            &self.seed,
            current,
            UPLOAD_EPOCHS,
        );
        Some(upload.sign(&self.identity))
    }

    /// The last epoch the keys an authority took cover (`None`: none taken yet).
    pub fn uploaded_until(&self) -> Option<u64> {
        self.done_for.map(|e| e + UPLOAD_EPOCHS as u64 - 1)
    }

    /// How the upload went: taken by an authority, or not (tried again later).
    pub fn handle_uploaded(&mut self, now_us: u64, accepted: bool) {
        if accepted {
            self.done_for = Some(self.epochs.epoch_at(now_us));
        } else {
            self.retry_at_us = now_us + RETRY_US;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::authority::{Authority, AuthorityConfig, Publish};
    use crate::pki::document::Threshold;
    use crate::pki::registry::{Registry, tests::sample};
    use loopix_crypto::SessionSecret;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::collections::BTreeMap;

    const S: u64 = 1_000_000;
    const EPOCH: u64 = 1200 * S;

    /// An authority over the sample registry, each node's publisher, and a trust in it.
    fn setup() -> (Authority, Vec<KeyPublisher>, Trust) {
        let (text, identities) = sample();
        let registry = Registry::from_toml(&text).unwrap();
        let epochs = registry.network.epochs;
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let key = IdentitySecret::generate(&mut rng);
        let trust = Trust::new(vec![key.public()], Threshold::AtLeast(1)).unwrap();
        let publishers = identities
            .into_iter()
            .map(|(id, identity)| {
                KeyPublisher::new(
                    id,
                    identity,
                    SessionSecret::generate(&mut rng).public(),
                    EpochSeed::generate(&mut rng, 0),
                    epochs,
                )
            })
            .collect();
        let config = AuthorityConfig {
            bootstrap_wait_us: 5 * S,
        };
        (Authority::new(registry, key, config), publishers, trust)
    }

    /// One second of a network: every node uploads what is due, the authority publishes,
    /// the follower fetches what it wants. Returns topology changes.
    fn second(
        now: u64,
        authority: &mut Authority,
        publishers: &mut [KeyPublisher],
        follower: &mut Follower,
        published: &mut BTreeMap<u64, String>,
    ) -> Option<Topology> {
        for p in publishers.iter_mut() {
            if let Some(u) = p.poll_upload(now) {
                let ok = authority.handle_upload(now, u.as_bytes()).is_ok();
                p.handle_uploaded(now, ok);
            }
        }
        while let Some(out) = authority.poll_publish(now) {
            if let Publish::Published { epoch, text, .. } = out {
                published.insert(epoch, text);
            }
        }
        if let Some(want) = follower.poll_fetch(now) {
            let doc = match want {
                Want::Current => authority.current_document(now),
                Want::Epoch(e) => authority.document(e),
            };
            match doc {
                Some(d) => {
                    let _ = follower.handle_fetched(now, want, d.as_bytes());
                }
                None => follower.handle_fetch_failed(now),
            }
        }
        follower.poll_topology(now)
    }

    #[test]
    fn a_follower_switches_at_each_boundary_to_the_next_epochs_keys() {
        let (mut authority, mut publishers, trust) = setup();
        let mut follower = Follower::new(trust);
        let mut published = BTreeMap::new();
        let start = 3 * EPOCH + 100 * S;
        let mut switches = Vec::new();
        let mut fetches = 0;
        for t in 0..(3 * 1200) {
            let now = start + t * S;
            if follower.poll_fetch(now).is_some() {
                fetches += 1;
            }
            if let Some(topology) = second(
                now,
                &mut authority,
                &mut publishers,
                &mut follower,
                &mut published,
            ) {
                let epoch = topology.network.epochs.epoch_at(now);
                // Every node has keys for the epoch now and the next.
                for n in &topology.nodes {
                    assert!(
                        n.epoch_keys.get(epoch).is_some(),
                        "node {:?} at {epoch}",
                        n.id
                    );
                    assert!(n.epoch_keys.get(epoch + 1).is_some());
                }
                switches.push((now, epoch));
            }
        }
        // The first at start, then one at each of the 3 boundaries, each on the second it
        // starts.
        assert_eq!(switches.len(), 4, "{switches:?}");
        assert_eq!(switches[0].1, 3);
        for (i, &(at, epoch)) in switches[1..].iter().enumerate() {
            assert_eq!(epoch, 4 + i as u64);
            assert_eq!(
                at,
                (4 + i as u64) * EPOCH,
                "switched exactly at the boundary"
            );
        }
        // Each document fetched once (no polling storm): the first and one per epoch.
        assert_eq!(fetches, 4, "fetches");
        assert!(published.len() >= 4);
    }

    #[test]
    fn a_stale_current_document_is_refused_and_tried_again() {
        let (mut authority, mut publishers, trust) = setup();
        let now = 3 * EPOCH + 100 * S;
        let mut published = BTreeMap::new();
        let mut f = Follower::new(trust.clone());
        second(now, &mut authority, &mut publishers, &mut f, &mut published);
        let doc3 = published[&3].clone();
        // Offered epoch 3's document in epoch 4 (an authority that fell behind): refused.
        let mut late = Follower::new(trust);
        let at = 4 * EPOCH + 10 * S;
        assert_eq!(
            late.handle_fetched(at, Want::Current, doc3.as_bytes()),
            Err(DocumentError::WrongEpoch { asked: 4, got: 3 })
        );
        assert!(late.poll_topology(at).is_none());
        assert_eq!(late.poll_fetch(at), None, "waits before trying again");
        assert_eq!(late.poll_fetch(at + RETRY_US), Some(Want::Current));
        // Asked for epoch 4, given epoch 3's.
        assert_eq!(
            late.handle_fetched(at, Want::Epoch(4), doc3.as_bytes()),
            Err(DocumentError::WrongEpoch { asked: 4, got: 3 })
        );
    }

    #[test]
    fn an_upload_a_second_after_a_refused_one_is_newer() {
        let (_, mut publishers, _) = setup();
        let p = &mut publishers[0];
        let now = 3 * EPOCH;
        let first = p.poll_upload(now).unwrap();
        p.handle_uploaded(now, false);
        assert_eq!(p.poll_upload(now + 1), None, "waits");
        let again = p.poll_upload(now + RETRY_US).unwrap();
        assert_ne!(first, again, "issued later");
        p.handle_uploaded(now + RETRY_US, true);
        assert_eq!(
            p.poll_upload(now + 2 * RETRY_US),
            None,
            "done for this epoch"
        );
        assert!(p.poll_upload(4 * EPOCH).is_some(), "and due in the next");
    }
}
