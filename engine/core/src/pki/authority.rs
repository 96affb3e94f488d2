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
//!
//! Keys are checked against the whole network, so that one registered operator cannot
//! hold back a document: an upload whose keys repeat each other, repeat a key another
//! node or a client holds (in a kept document, another upload or the registry), or whose
//! session key is of small order is refused with the reason. A document is made from what
//! is held even so: a node whose keys it cannot list (uploads restored from disk are not
//! re-checked against each other) is left out of it, with the reason
//! ([`Publish::Published`]'s `left_out`), and the rest are published.

use std::collections::BTreeMap;
use std::sync::Arc;

use loopix_crypto::{IdentitySecret, NodeId, PublicKey, SessionPublic};

use super::document::Unsigned;
use super::key_upload::{KeyUpload, SignedUpload, UploadFormatError};
use super::registry::Registry;
use crate::network::epoch::EpochSchedule;
use crate::network::topology::{EpochKeys, NodeEntry, Role, Topology};

/// Documents kept (in memory, and by the shell on disk): the newest this many epochs'.
pub const KEPT_DOCUMENTS: usize = 16;

/// How far ahead of the authority's clock an upload's `issued` may be, s.
const MAX_CLOCK_AHEAD_S: u64 = 120;

/// Why an upload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadError {
    Format(UploadFormatError),
    /// No node of this id is registered.
    UnknownNode(NodeId),
    /// Not signed by the registered node's identity key.
    BadSignature(NodeId),
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
    /// One of its keys is also its own other key, another node's or a client's.
    KeyInUse(KeyClash),
    /// Its session key is of small order: no secret can be agreed with it.
    WeakSessionKey,
}

/// Why a node's keys cannot be listed beside the others'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyClash {
    /// One of them (`session key` or `key of epoch E`) someone else holds.
    Held { key: String, holder: Holder },
    /// The key of epoch `again` is the key of epoch `first` too.
    Repeated { first: u64, again: u64 },
}

/// Who holds a key in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Node(NodeId),
    Client(NodeId),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(a) => write!(f, "node {}", a.0),
            Self::Client(a) => write!(f, "client {}", a.0),
        }
    }
}

impl std::fmt::Display for KeyClash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { key, holder } => write!(f, "its {key} is also {holder}'s"),
            Self::Repeated { first, again } => {
                write!(
                    f,
                    "its key of epoch {again} is also its key of epoch {first}"
                )
            }
        }
    }
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
            Self::KeyInUse(clash) => clash.fmt(f),
            Self::WeakSessionKey => {
                f.write_str("its session key is of small order: no secret can be agreed with it")
            }
        }
    }
}

impl std::error::Error for UploadError {}

/// What an authority's metrics show ([`Authority::gauges`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityGauges {
    pub nodes_registered: usize,
    pub clients_registered: usize,
    /// The newest epoch with a published document.
    pub newest_document: Option<u64>,
    /// Whether the current and the next epoch's documents are published.
    pub current_published: bool,
    pub next_published: bool,
    /// Each registered node, and the last epoch its uploaded keys cover (`None`: none).
    pub keys_until: Vec<(NodeId, Option<u64>)>,
}

/// Where a node or client stands with an authority ([`Authority::standing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not in this authority's registry.
    Unknown,
    /// Registered and listed in the published documents from epoch `from` (which may be
    /// after `current`: published ahead).
    Listed {
        from: u64,
        current: u64,
        /// Nodes: the epochs of the keys held for it (`None`: none uploaded).
        keys: Option<Option<(u64, u64)>>,
    },
    /// Registered; the first document that can list it is that of epoch `first`, not yet
    /// published (it starts in `starts_in_s`).
    Pending {
        first: u64,
        current: u64,
        starts_in_s: u64,
        keys: Option<Option<(u64, u64)>>,
    },
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |f: &mut std::fmt::Formatter<'_>, keys: &Option<Option<(u64, u64)>>| match keys {
            None => Ok(()),
            Some(None) => f.write_str("; no keys uploaded"),
            Some(Some((a, b))) => write!(f, "; keys for epochs {a}..={b} held"),
        };
        match self {
            Self::Unknown => f.write_str("not registered"),
            Self::Listed {
                from,
                current,
                keys: k,
            } if from <= current => {
                write!(
                    f,
                    "registered, published from epoch {from} (the current epoch is {current})"
                )?;
                keys(f, k)
            }
            Self::Listed {
                from,
                current,
                keys: k,
            } => {
                write!(
                    f,
                    "registered, published from epoch {from}, which has not started (the \
                     current epoch is {current})"
                )?;
                keys(f, k)
            }
            Self::Pending {
                first,
                current,
                starts_in_s,
                keys: k,
            } => {
                write!(
                    f,
                    "registered, not yet published: the first document that can list it is \
                     epoch {first}'s"
                )?;
                if first <= current {
                    f.write_str(" (the current epoch)")?;
                } else {
                    write!(
                        f,
                        " (starts in {starts_in_s} s; the current epoch is {current})"
                    )?;
                }
                keys(f, k)
            }
        }
    }
}

/// What [`Authority::poll_publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// A new document, to store and serve, and the nodes with keys held that it leaves out
    /// because their keys cannot be listed (each with the reason).
    Published {
        epoch: u64,
        text: String,
        left_out: Vec<(NodeId, String)>,
    },
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
    uploads: BTreeMap<NodeId, SignedUpload>,
    /// Published documents: their text and topology (for the frozen keys).
    /// Shared, so a server hands a document to many readers without copying it.
    documents: BTreeMap<u64, (Arc<str>, Topology)>,
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

    /// Takes a node's key upload at `now_us` (unix µs); returns the node it is from. The
    /// upload held, sent again, is taken again and changes nothing (a node that restarts
    /// within the second it last uploaded sends the same bytes).
    pub fn handle_upload(&mut self, now_us: u64, bytes: &[u8]) -> Result<NodeId, UploadError> {
        let signed = self.checked_upload(now_us, bytes)?;
        let node = signed.upload.node;
        if let Some(held) = self.uploads.get(&node) {
            if held.text.as_bytes() == bytes {
                return Ok(node);
            }
            if signed.upload.issued_s <= held.upload.issued_s {
                return Err(UploadError::Replayed {
                    issued_s: signed.upload.issued_s,
                    held_s: held.upload.issued_s,
                });
            }
        }
        self.uploads.insert(node, signed);
        Ok(node)
    }

    /// Whether [`Self::handle_upload`] would take `bytes` as a node's keys, ignoring only
    /// whether it is newer than the upload held; nothing changes. What `--check` asks:
    /// registered, signed by the registered identity key, keys sound and its own.
    pub fn check_upload(&self, now_us: u64, bytes: &[u8]) -> Result<NodeId, UploadError> {
        self.checked_upload(now_us, bytes).map(|s| s.upload.node)
    }

    /// An upload checked for all but its order among the node's uploads.
    fn checked_upload(&self, now_us: u64, bytes: &[u8]) -> Result<SignedUpload, UploadError> {
        let signed = self.registered_upload(bytes)?;
        let now_s = now_us / 1_000_000;
        let issued_s = signed.upload.issued_s;
        if issued_s > now_s + MAX_CLOCK_AHEAD_S {
            return Err(UploadError::FromTheFuture { issued_s, now_s });
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
        self.check_keys(&signed.upload)?;
        Ok(signed)
    }

    /// The upload's keys are sound and its own: a session key of large order, and no key
    /// that repeats another of its keys or that another node (in a kept document or an
    /// upload held) or a registered client holds.
    fn check_keys(&self, upload: &KeyUpload) -> Result<(), UploadError> {
        if upload.session_key.is_weak() {
            return Err(UploadError::WeakSessionKey);
        }
        let mut claims = Claims::default();
        claims.registry_clients(&self.registry);
        for (_, topology) in self.documents.values() {
            for n in topology.nodes.iter().filter(|n| n.id != upload.node) {
                claims.node(n.id, n.session_key, n.epoch_keys.iter());
            }
        }
        for (&id, held) in self.uploads.iter().filter(|(id, _)| **id != upload.node) {
            claims.node(id, Some(held.upload.session_key), held.upload.keys.iter());
        }
        claims
            .check_node(upload.node, upload.session_key, upload.keys.iter())
            .map_err(UploadError::KeyInUse)
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

    /// Takes a re-read registry (the operator registered or removed nodes and clients): the
    /// next documents are made from it. Uploads of nodes it no longer lists under the same
    /// identity key are dropped (returned, to delete from the store). A registry whose
    /// network parameters differ is refused: published documents and the keys nodes hold
    /// were made for them.
    pub fn set_registry(&mut self, registry: Registry) -> Result<Vec<NodeId>, String> {
        if registry.network != self.registry.network {
            return Err(
                "its [network] differs from the one in force; a network's parameters change \
                 only with a restart of every authority and node"
                    .into(),
            );
        }
        let mut dropped = Vec::new();
        self.uploads.retain(|id, u| {
            let kept = registry.node(*id).is_some_and(|r| u.signed_by(&r.identity));
            if !kept {
                dropped.push(*id);
            }
            kept
        });
        self.registry = registry;
        self.told.clear();
        Ok(dropped)
    }

    /// Takes back an upload stored earlier (at start): checked again for its signature,
    /// not for its age.
    pub fn restore_upload(&mut self, bytes: &[u8]) -> Result<NodeId, UploadError> {
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
        self.documents.insert(epoch, (text.into(), topology));
        self.forget_old();
        Ok(())
    }

    /// The upload held for `node`, as received (to store).
    pub fn upload_text(&self, node: NodeId) -> Option<&str> {
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
    ) -> Result<Option<Arc<str>>, super::document::MergeError> {
        let Some((ours, _)) = self.documents.get_mut(&epoch) else {
            return Ok(None);
        };
        let (merged, added) = super::document::merge_signatures(ours, theirs, peers)?;
        if added == 0 {
            return Ok(None);
        }
        *ours = merged.into();
        Ok(Some(Arc::clone(ours)))
    }

    /// Whether the published document of `epoch` carries `key`'s signature (`None`: no
    /// such document).
    pub fn signed_by(&self, epoch: u64, key: &loopix_crypto::IdentityPublic) -> Option<bool> {
        let (text, _) = self.documents.get(&epoch)?;
        let signers = super::document::unverified(text.as_bytes()).map_or(Vec::new(), |(_, k)| k);
        Some(signers.contains(key))
    }

    /// The published document of `epoch`.
    pub fn document(&self, epoch: u64) -> Option<Arc<str>> {
        self.documents.get(&epoch).map(|(t, _)| Arc::clone(t))
    }

    /// The document of the epoch `now_us` falls in, if published.
    pub fn current_document(&self, now_us: u64) -> Option<Arc<str>> {
        self.document(self.epochs().epoch_at(now_us))
    }

    /// What an operator bootstrapping the network asks: for the current and the next epoch,
    /// whether its document is published, and if not what it still lacks; and for every
    /// registered node, whether its keys for those epochs are held. Plain text, a line
    /// each.
    pub fn status(&self, now_us: u64) -> String {
        use std::fmt::Write;
        let current = self.epochs().epoch_at(now_us);
        let mut out = String::new();
        for epoch in [current, current + 1] {
            let state = match (self.documents.get(&epoch), self.told.get(&epoch)) {
                (Some((text, t)), _) => format!(
                    "published: {} nodes, {} clients, {} signature(s)",
                    t.nodes.len(),
                    t.clients.len(),
                    super::document::unverified(text.as_bytes()).map_or(0, |(_, k)| k.len())
                ),
                (None, Some(problem)) => format!("not published: {problem}"),
                (None, None) => {
                    let missing: Vec<String> = self
                        .registry
                        .nodes
                        .iter()
                        .filter(|n| !self.has_keys(n.id, epoch))
                        .map(|n| format!("{} ({})", n.id.0, n.role))
                        .collect();
                    if missing.is_empty() {
                        "not published yet: every node's keys are held".into()
                    } else {
                        format!(
                            "not published yet: waiting for keys of node(s) {}",
                            missing.join(", ")
                        )
                    }
                }
            };
            let _ = writeln!(out, "epoch {epoch}: {state}");
        }
        for n in &self.registry.nodes {
            let role = n.role;
            let keys = match self.uploads.get(&n.id) {
                None => "no keys uploaded".to_string(),
                Some(u) => {
                    let first = u.upload.keys.first();
                    let last = u.upload.keys.iter().last().map_or(first, |(e, _)| e);
                    format!("keys for epochs {first}..={last}")
                }
            };
            let _ = writeln!(out, "node {} ({role}, {}): {keys}", n.id.0, n.address);
        }
        let _ = writeln!(out, "clients registered: {}", self.registry.clients.len());
        out
    }

    /// Where a node or client stands with this authority at `now_us`: unknown, or
    /// registered, and from which epoch's document it is (or will be) listed. What a
    /// client or node that is not in the document it fetched asks, to tell "registered,
    /// published from epoch E" from "unknown".
    pub fn standing(&self, who: Holder, now_us: u64) -> Standing {
        let registered = match who {
            Holder::Node(id) => self.registry.node(id).is_some(),
            Holder::Client(id) => self.registry.clients.iter().any(|c| c.id == id),
        };
        if !registered {
            return Standing::Unknown;
        }
        let epochs = self.epochs();
        let current = epochs.epoch_at(now_us);
        let lists = |t: &Topology| match who {
            Holder::Node(id) => t.node(id).is_some(),
            Holder::Client(id) => t.client(id).is_some(),
        };
        let keys = match who {
            Holder::Node(id) => Some(self.uploads.get(&id).map(|u| {
                let first = u.upload.keys.first();
                (first, u.upload.keys.iter().last().map_or(first, |(e, _)| e))
            })),
            Holder::Client(_) => None,
        };
        // The first document from the current epoch on that lists it; else the first
        // epoch from now whose document is still to be made.
        let listed = self
            .documents
            .range(current..)
            .find(|(_, (_, t))| lists(t))
            .map(|(&e, _)| e);
        if let Some(epoch) = listed {
            // Listed now: from the oldest document of the unbroken run up to this one.
            let mut from = epoch;
            while from > 0
                && self
                    .documents
                    .get(&(from - 1))
                    .is_some_and(|(_, t)| lists(t))
            {
                from -= 1;
            }
            return Standing::Listed {
                from,
                current,
                keys,
            };
        }
        let first = (current..)
            .find(|e| !self.documents.contains_key(e))
            .unwrap_or(current);
        Standing::Pending {
            first,
            current,
            starts_in_s: epochs.start_of(first).saturating_sub(now_us) / 1_000_000,
            keys,
        }
    }

    /// What the authority's metrics show at `now_us`: who is registered, what is
    /// published, and how far each node's uploaded keys reach.
    pub fn gauges(&self, now_us: u64) -> AuthorityGauges {
        let current = self.epochs().epoch_at(now_us);
        AuthorityGauges {
            nodes_registered: self.registry.nodes.len(),
            clients_registered: self.registry.clients.len(),
            newest_document: self.documents.keys().next_back().copied(),
            current_published: self.documents.contains_key(&current),
            next_published: self.documents.contains_key(&(current + 1)),
            keys_until: self
                .registry
                .nodes
                .iter()
                .map(|n| {
                    let last = self
                        .uploads
                        .get(&n.id)
                        .and_then(|u| u.upload.keys.iter().last().map(|(e, _)| e));
                    (n.id, last)
                })
                .collect(),
        }
    }

    /// Whether the upload held for `node` has a key for `epoch`.
    fn has_keys(&self, node: NodeId, epoch: u64) -> bool {
        self.uploads
            .get(&node)
            .is_some_and(|u| u.upload.keys.get(epoch).is_some())
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
                Ok((text, topology, left_out)) => {
                    self.documents
                        .insert(epoch, (text.as_str().into(), topology));
                    self.forget_old();
                    self.told.remove(&epoch);
                    return Some(Publish::Published {
                        epoch,
                        text,
                        left_out,
                    });
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
    /// key for `epoch` (and the next one's, if uploaded) whose keys can be listed, and the
    /// clients of those providers; and the nodes left out, with the reason.
    ///
    /// Who may list a key, in this order: registered clients (the registry is the
    /// operator's own), then each node for the keys a kept document already lists for it,
    /// then nodes in registry order. A node whose keys clash with an earlier claim, repeat
    /// each other or include a weak session key is left out, so no upload can stop the
    /// document.
    #[allow(clippy::type_complexity)]
    fn make(&self, epoch: u64) -> Result<(String, Topology, Vec<(NodeId, String)>), String> {
        let mut claims = Claims::default();
        claims.registry_clients(&self.registry);
        for (_, topology) in self.documents.values() {
            for n in &topology.nodes {
                claims.node(n.id, n.session_key, n.epoch_keys.iter());
            }
        }
        let mut nodes = Vec::new();
        let mut left_out = Vec::new();
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
            let listed = EpochKeys::new(epoch, keys.clone());
            let session = u.upload.session_key;
            let refused = if session.is_weak() {
                Some(UploadError::WeakSessionKey.to_string())
            } else {
                claims
                    .check_node(r.id, session, listed.iter())
                    .err()
                    .map(|c| c.to_string())
            };
            if let Some(reason) = refused {
                left_out.push((r.id, reason));
                continue;
            }
            claims.node(r.id, Some(session), listed.iter());
            nodes.push(NodeEntry {
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
        Ok((unsigned.sign(&self.key), topology, left_out))
    }
}

/// Keys claimed in the network, by kind (Sphinx keys of nodes and clients share one space,
/// X25519 session keys another), with their holders.
#[derive(Default)]
struct Claims {
    sphinx: BTreeMap<[u8; 32], Holder>,
    session: BTreeMap<[u8; 32], Holder>,
}

impl Claims {
    fn registry_clients(&mut self, registry: &Registry) {
        for c in &registry.clients {
            self.sphinx
                .insert(c.public_key.to_bytes(), Holder::Client(c.id));
            self.session.insert(c.session_key.0, Holder::Client(c.id));
        }
    }

    /// Claims a node's keys (the first claim of a key stays).
    fn node(
        &mut self,
        id: NodeId,
        session: Option<SessionPublic>,
        keys: impl Iterator<Item = (u64, PublicKey)>,
    ) {
        if let Some(s) = session {
            self.session.entry(s.0).or_insert(Holder::Node(id));
        }
        for (_, k) in keys {
            self.sphinx.entry(k.to_bytes()).or_insert(Holder::Node(id));
        }
    }

    /// Whether node `id` may list these keys: none held by anyone else, none twice.
    fn check_node(
        &self,
        id: NodeId,
        session: SessionPublic,
        keys: impl Iterator<Item = (u64, PublicKey)>,
    ) -> Result<(), KeyClash> {
        let me = Holder::Node(id);
        let held = |key: String, holder: Holder| Err(KeyClash::Held { key, holder });
        if let Some(&h) = self.session.get(&session.0).filter(|h| **h != me) {
            return held("session key".into(), h);
        }
        let mut own = BTreeMap::new();
        for (epoch, k) in keys {
            if let Some(&h) = self.sphinx.get(&k.to_bytes()).filter(|h| **h != me) {
                return held(format!("key of epoch {epoch}"), h);
            }
            if let Some(first) = own.insert(k.to_bytes(), epoch) {
                return Err(KeyClash::Repeated {
                    first,
                    again: epoch,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::document::{DocumentError, Threshold, Trust, verify};
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
        identities: BTreeMap<NodeId, IdentitySecret>,
        seeds: BTreeMap<NodeId, (EpochSeed, SessionSecret)>,
    }

    fn net() -> Net {
        let (text, identities) = sample();
        net_of(&text, identities)
    }

    /// The sample network and a second mix in layer 2 (node 3), which can be left out.
    fn net_with_spare_mix() -> Net {
        let (text, mut identities) = sample();
        let spare = IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(6));
        let text = format!(
            "{text}\n[[nodes]]\nid = 3\nrole = \"mix\"\nlayer = 2\naddress = \"127.0.0.1:9003\"\nidentity_key = \"{}\"\n",
            hex::encode(spare.public().to_bytes())
        );
        identities.insert(NodeId(3), spare);
        net_of(&text, identities)
    }

    fn net_of(text: &str, identities: BTreeMap<NodeId, IdentitySecret>) -> Net {
        let registry = Registry::from_toml(text).unwrap();
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
            let (seed, session) = &self.seeds[&NodeId(id)];
            KeyUpload::from_seed(NodeId(id), issued_s, session.public(), seed, first, count)
                .sign(&self.identities[&NodeId(id)])
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
        let Some(Publish::Published { epoch: 5, text, .. }) = n.authority.poll_publish(now) else {
            panic!("epoch 5 due")
        };
        let trust = Trust::new(vec![n.key], Threshold::AtLeast(1)).unwrap();
        let d = verify(text.as_bytes(), &trust, Some(5), now).unwrap();
        assert_eq!(d.topology.nodes.len(), 3);
        assert_eq!(d.topology.clients.len(), 1);
        let mix = d.topology.node(NodeId(1)).unwrap();
        let (seed, session) = &n.seeds[&NodeId(1)];
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
        assert_eq!(
            n.authority.current_document(now).as_deref(),
            Some(text.as_str())
        );
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
        let (seed, session) = &n.seeds[&NodeId(1)];
        let forged = KeyUpload::from_seed(NodeId(1), 100, session.public(), seed, 5, 3)
            .sign(&n.identities[&NodeId(2)]);
        assert_eq!(
            n.authority.handle_upload(now, forged.as_bytes()),
            Err(UploadError::BadSignature(NodeId(1)))
        );
        let stranger = KeyUpload::from_seed(NodeId(7), 100, session.public(), seed, 5, 3)
            .sign(&n.identities[&NodeId(1)]);
        assert_eq!(
            n.authority.handle_upload(now, stranger.as_bytes()),
            Err(UploadError::UnknownNode(NodeId(7)))
        );
        assert_eq!(
            n.authority.handle_upload(now, good.as_bytes()),
            Ok(NodeId(1))
        );
        // The upload held, sent again, changes nothing; an older one, or another of the
        // same second, is a replay.
        assert_eq!(
            n.authority.handle_upload(now, good.as_bytes()),
            Ok(NodeId(1))
        );
        let older = n.upload(1, 99, 5, 3);
        assert_eq!(
            n.authority.handle_upload(now, older.as_bytes()),
            Err(UploadError::Replayed {
                issued_s: 99,
                held_s: 100
            })
        );
        let same_second = n.upload(1, 100, 5, 4);
        assert_eq!(
            n.authority.handle_upload(now, same_second.as_bytes()),
            Err(UploadError::Replayed {
                issued_s: 100,
                held_s: 100
            })
        );
        assert_eq!(n.authority.upload_text(NodeId(1)), Some(good.as_str()));
        // A check takes nothing: an upload it would accept is not held.
        let newer = n.upload(1, 150, 5, 3);
        assert_eq!(
            n.authority.check_upload(now, newer.as_bytes()),
            Ok(NodeId(1))
        );
        assert_eq!(
            n.authority.check_upload(now, forged.as_bytes()),
            Err(UploadError::BadSignature(NodeId(1)))
        );
        assert_eq!(n.authority.upload_text(NodeId(1)), Some(good.as_str()));
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
        let session = n.seeds[&NodeId(1)].1.public();
        let changed = KeyUpload::from_seed(NodeId(1), now / S + 1, session, &other, 6, 3)
            .sign(&n.identities[&NodeId(1)]);
        assert_eq!(
            n.authority.handle_upload(now, changed.as_bytes()),
            Err(UploadError::ChangesPublishedKey { epoch: 6 })
        );
        // From an epoch no document lists yet, new keys are taken.
        let later = KeyUpload::from_seed(NodeId(1), now / S + 1, session, &other, 8, 3)
            .sign(&n.identities[&NodeId(1)]);
        assert_eq!(
            n.authority.handle_upload(now, later.as_bytes()),
            Ok(NodeId(1))
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
        let upload = n.authority.upload_text(NodeId(1)).unwrap().to_string();
        let mut again = net();
        again.authority.restore_document(5, text.clone()).unwrap();
        assert_eq!(again.authority.signed_by(5, &n.key), Some(true));
        assert_eq!(again.authority.signed_by(6, &n.key), None);
        assert_eq!(
            again.authority.restore_upload(upload.as_bytes()),
            Ok(NodeId(1))
        );
        assert_eq!(again.authority.document(5).as_deref(), Some(text.as_str()));
        // An upload stored under another node's key is refused on the way back too.
        let bent = upload.replacen("node 1", "node 2", 1);
        assert!(again.authority.restore_upload(bent.as_bytes()).is_err());
    }

    /// Node 3's upload of `keys` from epoch 5 with session key `session`, signed.
    fn spare_upload(
        n: &Net,
        issued_s: u64,
        session: SessionPublic,
        keys: Vec<PublicKey>,
    ) -> String {
        KeyUpload {
            node: NodeId(3),
            issued_s,
            session_key: session,
            keys: EpochKeys::new(5, keys),
        }
        .sign(&n.identities[&NodeId(3)])
    }

    #[test]
    fn uploads_repeating_anyones_keys_or_with_weak_keys_are_refused() {
        let mut n = net_with_spare_mix();
        let now = 5 * EPOCH + 10 * S;
        assert_eq!(n.authority.poll_publish(now), None, "started");
        n.upload_all(now, 5);
        let t = now / S;
        let (own_seed, own_session) = &n.seeds[&NodeId(3)];
        let own: Vec<_> = (5..8)
            .map(|e| own_seed.secret_key(e).unwrap().public_key())
            .collect();
        let node1_session = n.seeds[&NodeId(1)].1.public();
        let node2_key = n.seeds[&NodeId(2)].0.secret_key(6).unwrap().public_key();
        let client = n.authority.registry.clients[0];
        let held = |key: &str, holder| {
            Err(UploadError::KeyInUse(KeyClash::Held {
                key: key.into(),
                holder,
            }))
        };
        let cases = [
            (
                "another node's session key",
                spare_upload(&n, t, node1_session, own.clone()),
                held("session key", Holder::Node(NodeId(1))),
            ),
            (
                "another node's epoch key (an upload held)",
                spare_upload(&n, t, own_session.public(), vec![own[0], node2_key]),
                held("key of epoch 6", Holder::Node(NodeId(2))),
            ),
            (
                "a client's Sphinx key",
                spare_upload(&n, t, own_session.public(), vec![client.public_key]),
                held("key of epoch 5", Holder::Client(client.id)),
            ),
            (
                "a client's session key",
                spare_upload(&n, t, client.session_key, own.clone()),
                held("session key", Holder::Client(client.id)),
            ),
            (
                "its own key twice",
                spare_upload(&n, t, own_session.public(), vec![own[0], own[1], own[0]]),
                Err(UploadError::KeyInUse(KeyClash::Repeated {
                    first: 5,
                    again: 7,
                })),
            ),
            (
                "a small-order session key",
                spare_upload(&n, t, SessionPublic([0; 32]), own.clone()),
                Err(UploadError::WeakSessionKey),
            ),
        ];
        for (what, upload, refused) in cases {
            assert_eq!(
                n.authority.handle_upload(now, upload.as_bytes()),
                refused,
                "{what}"
            );
        }
        // A published key stays its node's after that node's upload is replaced.
        // (Past the bootstrap wait, so epoch 5's is published without node 3.)
        while n.authority.poll_publish(now + 11 * S).is_some() {}
        assert!(n.authority.document(5).is_some());
        let node1_published = n.seeds[&NodeId(1)].0.secret_key(5).unwrap().public_key();
        let fresh = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(8), 0);
        let replaced = KeyUpload::from_seed(NodeId(1), t + 1, node1_session, &fresh, 7, 3)
            .sign(&n.identities[&NodeId(1)]);
        n.authority.handle_upload(now, replaced.as_bytes()).unwrap();
        assert_eq!(
            n.authority.handle_upload(
                now,
                spare_upload(&n, t, own_session.public(), vec![node1_published]).as_bytes()
            ),
            held("key of epoch 5", Holder::Node(NodeId(1)))
        );
        // Its own keys are taken, and the refusals said why.
        let good = spare_upload(&n, t, own_session.public(), own);
        assert_eq!(
            n.authority.handle_upload(now, good.as_bytes()),
            Ok(NodeId(3))
        );
        assert_eq!(
            UploadError::KeyInUse(KeyClash::Held {
                key: "session key".into(),
                holder: Holder::Client(NodeId(1001))
            })
            .to_string(),
            "its session key is also client 1001's"
        );
    }

    #[test]
    fn a_node_whose_keys_cannot_be_listed_is_left_out_and_the_rest_published() {
        let now = 5 * EPOCH + 10 * S;
        for (what, bad_session, bad_keys, reason) in [
            ("node 1's keys", false, true, "node 1's"),
            ("a small-order session key", true, false, "small order"),
        ] {
            let mut n = net_with_spare_mix();
            n.upload_all(now, 5);
            let (seed, session) = &n.seeds[&NodeId(3)];
            let seed = if bad_keys {
                &n.seeds[&NodeId(1)].0
            } else {
                seed
            };
            let session = if bad_session {
                SessionPublic([0; 32])
            } else {
                session.public()
            };
            let keys = (5..8)
                .map(|e| seed.secret_key(e).unwrap().public_key())
                .collect();
            // Stored before a restart: restored uploads are not checked against others.
            let upload = spare_upload(&n, now / S, session, keys);
            n.authority.restore_upload(upload.as_bytes()).unwrap();
            let Some(Publish::Published {
                epoch: 5,
                text,
                left_out,
            }) = n.authority.poll_publish(now)
            else {
                panic!("{what}: epoch 5 is published all the same")
            };
            assert_eq!(left_out.len(), 1, "{what}: {left_out:?}");
            assert_eq!(left_out[0].0, NodeId(3), "{what}");
            assert!(left_out[0].1.contains(reason), "{what}: {left_out:?}");
            let trust = Trust::new(vec![n.key], Threshold::AtLeast(1)).unwrap();
            let d = verify(text.as_bytes(), &trust, Some(5), now).unwrap();
            let ids: Vec<_> = d.topology.nodes.iter().map(|n| n.id.0).collect();
            assert_eq!(ids, [1, 2, 100], "{what}");
            let (seed1, _) = &n.seeds[&NodeId(1)];
            assert_eq!(
                d.topology.node(NodeId(1)).unwrap().epoch_keys.get(5),
                Some(seed1.secret_key(5).unwrap().public_key()),
                "{what}: the honest node keeps its keys"
            );
        }
    }

    #[test]
    fn a_registration_read_while_running_reaches_the_next_document() {
        let now = 5 * EPOCH + 10 * S;
        // Running without node 3: its upload is refused as unknown.
        let (text, identities) = sample();
        let mut n = net_of(&text, identities);
        let spare = net_with_spare_mix();
        n.identities
            .insert(NodeId(3), spare.identities[&NodeId(3)].clone());
        let mut rng = ChaCha20Rng::seed_from_u64(33);
        let fresh = (
            EpochSeed::generate(&mut rng, 0),
            SessionSecret::generate(&mut rng),
        );
        n.seeds.insert(NodeId(3), fresh);
        n.upload_all(now, 5);
        let u3 = n.upload(3, now / S, 5, 3);
        assert_eq!(
            n.authority.handle_upload(now, u3.as_bytes()),
            Err(UploadError::UnknownNode(NodeId(3)))
        );
        // The operator registers it; the authority re-reads its registry.
        let registry = spare.authority.registry.clone();
        assert_eq!(n.authority.set_registry(registry), Ok(vec![]));
        assert_eq!(n.authority.handle_upload(now, u3.as_bytes()), Ok(NodeId(3)));
        let Some(Publish::Published { epoch: 5, text, .. }) = n.authority.poll_publish(now) else {
            panic!("epoch 5 due")
        };
        let trust = Trust::new(vec![n.key], Threshold::AtLeast(1)).unwrap();
        let d = verify(text.as_bytes(), &trust, Some(5), now).unwrap();
        assert!(
            d.topology.node(NodeId(3)).is_some(),
            "the new node is listed"
        );
        // Removed again: its upload goes, and a registry with other parameters is refused.
        let (text, _) = sample();
        let without = Registry::from_toml(&text).unwrap();
        assert_eq!(
            n.authority.set_registry(without.clone()),
            Ok(vec![NodeId(3)])
        );
        let mut other = without;
        other.network.poll_size += 1;
        assert!(n.authority.set_registry(other).is_err());
    }

    #[test]
    fn the_status_says_what_a_document_still_lacks_and_who_uploaded() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        assert_eq!(n.authority.poll_publish(now), None);
        let u = n.upload(1, now / S, 5, 3);
        n.authority.handle_upload(now, u.as_bytes()).unwrap();
        let status = n.authority.status(now);
        assert!(
            status.contains(
                "epoch 5: not published yet: waiting for keys of node(s) 2 (mix, layer 2), 100 (provider)"
            ),
            "{status}"
        );
        assert!(status.contains("node 1 (mix, layer 1, "), "{status}");
        assert!(status.contains("keys for epochs 5..=7"), "{status}");
        assert!(
            status.contains("node 2 (mix, layer 2, 127.0.0.1:9002): no keys uploaded"),
            "{status}"
        );
        // At the deadline the authority says why it cannot publish.
        let _ = n.authority.poll_publish(now + 11 * S);
        let status = n.authority.status(now + 11 * S);
        assert!(
            status.contains("epoch 5: not published: ") && status.contains("layer 2"),
            "{status}"
        );
        let g = n.authority.gauges(now + 11 * S);
        assert_eq!((g.nodes_registered, g.clients_registered), (3, 1));
        assert_eq!(
            (g.newest_document, g.current_published, g.next_published),
            (None, false, false)
        );
        assert_eq!(
            g.keys_until,
            vec![(NodeId(1), Some(7)), (NodeId(2), None), (NodeId(100), None)]
        );
        n.upload_all(now + 12 * S, 5);
        while n.authority.poll_publish(now + 12 * S).is_some() {}
        let g = n.authority.gauges(now + 12 * S);
        assert_eq!((g.newest_document, g.current_published), (Some(6), true));
        let status = n.authority.status(now + 12 * S);
        assert!(
            status.contains("epoch 5: published: 3 nodes, 1 clients, 1 signature(s)"),
            "{status}"
        );
    }

    #[test]
    fn the_standing_tells_registered_and_published_from_unknown() {
        let mut n = net();
        let now = 5 * EPOCH + 10 * S;
        assert_eq!(n.authority.poll_publish(now), None);
        let client = n.authority.registry.clients[0].id;
        assert_eq!(
            n.authority.standing(Holder::Client(NodeId(4242)), now),
            Standing::Unknown
        );
        assert_eq!(
            n.authority.standing(Holder::Node(NodeId(77)), now),
            Standing::Unknown
        );
        // Registered, nothing published yet: epoch 5's document is the first.
        let pending = n.authority.standing(Holder::Client(client), now);
        assert_eq!(
            pending,
            Standing::Pending {
                first: 5,
                current: 5,
                starts_in_s: 0,
                keys: None
            }
        );
        assert!(
            pending.to_string().contains("not yet published"),
            "{pending}"
        );
        assert_eq!(
            n.authority
                .standing(Holder::Node(NodeId(1)), now)
                .to_string(),
            "registered, not yet published: the first document that can list it is epoch 5's \
             (the current epoch); no keys uploaded"
        );
        n.upload_all(now, 5);
        while n.authority.poll_publish(now).is_some() {}
        let listed = n.authority.standing(Holder::Client(client), now);
        assert!(
            matches!(
                listed,
                Standing::Listed {
                    from: 5,
                    current: 5,
                    ..
                }
            ),
            "{listed:?}"
        );
        assert!(
            listed
                .to_string()
                .starts_with("registered, published from epoch 5"),
            "{listed}"
        );
        assert!(
            n.authority
                .standing(Holder::Node(NodeId(1)), now)
                .to_string()
                .ends_with("keys for epochs 5..=7 held"),
        );
    }
}
