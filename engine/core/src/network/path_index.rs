//! Who is where, for building paths: the mixes of each layer, the providers, the clients'
//! providers, with every public key parsed once. Paths follow Loopix's stratified
//! topology: one mix per layer, chosen uniformly, each hop's delay drawn from Exp(µ), and
//! each node hop under its key for the epoch that hop will fall in.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use loopix_crypto::{Command, Hop, KeyPhase, NodeId, PublicKey};
use rand_core::Rng;

use crate::network::epoch::EpochSchedule;
use crate::network::topology::{EpochKeys, Topology};
use crate::roles::rate::exp_us;

/// A path hop's owner: a node (keys per epoch) or a client (one key for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopOwner {
    pub id: NodeId,
    /// Index into the index's table of node keys; `None` for a client (its key is in the
    /// client table).
    keys: Option<usize>,
}

/// Every client of a topology, by id: its key and its provider. Every client of a network
/// needs all of them (to build a path to any recipient), so clients built from one
/// topology share one table: held per client, N clients would hold N² entries.
type ClientTable = BTreeMap<NodeId, (PublicKey, NodeId)>;

thread_local! {
    /// The last client table built on this thread, for the next index of the same clients.
    static LAST_CLIENTS: RefCell<Option<Arc<ClientTable>>> = const { RefCell::new(None) };
}

/// The client table of `topology`: the last one built on this thread if it lists exactly
/// these clients, else a new one.
fn client_table(topology: &Topology) -> Arc<ClientTable> {
    LAST_CLIENTS.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(table) = last.as_ref()
            && table.len() == topology.clients.len()
            && topology.clients.iter().all(|c| {
                table
                    .get(&c.id)
                    .is_some_and(|(key, provider)| *key == c.public_key && *provider == c.provider)
            })
        {
            return Arc::clone(table);
        }
        let table: Arc<ClientTable> = Arc::new(
            topology
                .clients
                .iter()
                .map(|c| (c.id, (c.public_key, c.provider)))
                .collect(),
        );
        *last = Some(Arc::clone(&table));
        table
    })
}

/// The path-building view of a topology.
#[derive(Clone, Debug)]
pub struct PathIndex {
    layers: Vec<Vec<HopOwner>>,
    providers: Vec<HopOwner>,
    /// Each client's key and provider, by id: looked up for every packet a client sends
    /// (shared by every index built from the same clients).
    clients: Arc<ClientTable>,
    /// Every node's keys, per epoch.
    keys: Vec<EpochKeys>,
    epochs: EpochSchedule,
    mu_per_s: f64,
    delay_horizon_us: u64,
}

/// The delays a path asks its hops to hold it, in all, µs.
pub fn requested_delay_us(path: &[Hop]) -> u64 {
    path.iter().map(|h| hop_delay_us(h.command)).sum()
}

fn hop_delay_us(command: Command) -> u64 {
    match command {
        Command::Relay { delay_us, .. } | Command::Deliver { delay_us, .. } => u64::from(delay_us),
        _ => 0,
    }
}

/// Why a path could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A name not in the topology.
    UnknownPeer(NodeId),
    /// The topology lists no key of `node` for the epoch a hop falls in: it must publish
    /// keys further ahead.
    NoKey { node: NodeId, epoch: u64 },
}

impl PathIndex {
    /// Whether a node holds a key of `phase` at `now_us`: the current epoch's, or within a
    /// grace, its neighbour's. A packet (or reply block) whose first hop is under a key of
    /// any other phase is refused there, as [`crate::drops::DropReason::ExpiredKey`].
    pub fn phase_in_use(&self, now_us: u64, phase: KeyPhase) -> bool {
        self.epochs.live(now_us)[phase.index()].is_some()
    }

    /// Indexes `topology`.
    pub fn new(topology: &Topology) -> Self {
        let mut keys = Vec::with_capacity(topology.nodes.len());
        let mut nodes = BTreeMap::new();
        for n in &topology.nodes {
            keys.push(n.epoch_keys.clone());
            let owner = HopOwner {
                id: n.id,
                keys: Some(keys.len() - 1),
            };
            nodes.insert(n.id, owner);
        }
        let clients = client_table(topology);
        let layers = (1..=topology.network.layers)
            .map(|l| topology.mixes_in_layer(l).map(|n| nodes[&n.id]).collect())
            .collect();
        let providers = topology.providers().map(|n| nodes[&n.id]).collect();
        Self {
            layers,
            providers,
            clients,
            keys,
            epochs: topology.network.epochs,
            mu_per_s: topology.network.mu_per_s,
            delay_horizon_us: topology.network.delay_horizon_us(),
        }
    }

    /// Number of mix layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// A node by id (a mix or a provider).
    pub fn node(&self, id: NodeId) -> Option<HopOwner> {
        self.layers
            .iter()
            .flatten()
            .chain(&self.providers)
            .copied()
            .find(|p| p.id == id)
    }

    /// A provider by id.
    pub fn provider(&self, id: NodeId) -> Option<HopOwner> {
        self.providers.iter().copied().find(|p| p.id == id)
    }

    /// Whether `other` holds the same client table (built from the same clients on this
    /// thread): what keeps many clients' memory linear in their number.
    pub fn shares_clients_with(&self, other: &PathIndex) -> bool {
        Arc::ptr_eq(&self.clients, &other.clients)
    }

    /// A client and its provider.
    pub fn client(&self, id: NodeId) -> Option<(HopOwner, NodeId)> {
        let &(_, provider) = self.clients.get(&id)?;
        Some((HopOwner { id, keys: None }, provider))
    }

    /// A uniformly chosen provider.
    pub fn random_provider<R: Rng + ?Sized>(&self, rng: &mut R) -> HopOwner {
        pick(rng, &self.providers)
    }

    /// A uniformly chosen mix of `layer` (0-based).
    pub fn random_mix<R: Rng + ?Sized>(&self, rng: &mut R, layer: usize) -> HopOwner {
        pick(rng, &self.layers[layer])
    }

    /// `owner` as a hop told `command`, under the key it unwraps with at `at_us`.
    pub fn hop_at(&self, owner: HopOwner, at_us: u64, command: Command) -> Result<Hop, PathError> {
        match owner.keys {
            // A client's one key, for good.
            None => {
                let (key, _) = self
                    .clients
                    .get(&owner.id)
                    .ok_or(PathError::UnknownPeer(owner.id))?;
                Ok(Hop::new(*key, command))
            }
            Some(i) => {
                let epoch = self.epochs.epoch_at(at_us);
                self.keys[i].hop(epoch, command).ok_or(PathError::NoKey {
                    node: owner.id,
                    epoch,
                })
            }
        }
    }

    /// A client's path to `recipient` for a packet sent at `now_us`: its provider, one mix
    /// per layer, the recipient's provider (deliver), the recipient (`last`: final, or loop
    /// return for its own loop). Returns the first hop's id.
    pub fn client_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_us: u64,
        own_provider: NodeId,
        recipient: NodeId,
        last: Command,
        out: &mut Vec<Hop>,
    ) -> Result<NodeId, PathError> {
        let ingress = self
            .provider(own_provider)
            .ok_or(PathError::UnknownPeer(own_provider))?;
        let (to, egress_id) = self
            .client(recipient)
            .ok_or(PathError::UnknownPeer(recipient))?;
        let egress = self
            .provider(egress_id)
            .ok_or(PathError::UnknownPeer(egress_id))?;
        let mut peers = [ingress; loopix_crypto::MAX_HOPS];
        let n = self.fill_layers(rng, &mut peers, 1);
        peers[n] = egress;
        peers[n + 1] = to;
        self.chain(rng, now_us, &peers[..n + 2], last, out, |d| {
            Command::Deliver {
                client: to.id,
                delay_us: d,
            }
        })?;
        Ok(ingress.id)
    }

    /// A drop cover path sent at `now_us`: the client's provider, one mix per layer, a
    /// random provider that discards it. Returns the first hop's id.
    pub fn drop_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_us: u64,
        own_provider: NodeId,
        out: &mut Vec<Hop>,
    ) -> Result<NodeId, PathError> {
        let ingress = self
            .provider(own_provider)
            .ok_or(PathError::UnknownPeer(own_provider))?;
        let mut peers = [ingress; loopix_crypto::MAX_HOPS];
        let n = self.fill_layers(rng, &mut peers, 1);
        peers[n] = self.random_provider(rng);
        self.chain_relays(rng, now_us, &peers[..n + 1], Command::Drop, out)?;
        Ok(ingress.id)
    }

    /// A mix's loop sent at `now_us`: the mixes of the layers after its own, a random
    /// provider, the layers before its own, then itself (loop return). Returns the first
    /// hop's id.
    pub fn mix_loop_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_us: u64,
        me: HopOwner,
        my_layer: usize,
        out: &mut Vec<Hop>,
    ) -> Result<NodeId, PathError> {
        let mut peers = [me; loopix_crypto::MAX_HOPS];
        let mut n = 0;
        for l in my_layer + 1..self.layers.len() {
            peers[n] = self.random_mix(rng, l);
            n += 1;
        }
        peers[n] = self.random_provider(rng);
        n += 1;
        for l in 0..my_layer {
            peers[n] = self.random_mix(rng, l);
            n += 1;
        }
        peers[n] = me;
        self.chain_relays(rng, now_us, &peers[..n + 1], Command::LoopReturn, out)?;
        Ok(peers[0].id)
    }

    /// Writes one random mix per layer into `peers[from..]`; returns the next free index.
    fn fill_layers<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        peers: &mut [HopOwner],
        from: usize,
    ) -> usize {
        for l in 0..self.layers.len() {
            peers[from + l] = self.random_mix(rng, l);
        }
        from + self.layers.len()
    }

    /// Hops where each relays to the next after an Exp(µ) delay and the last gets `last`.
    fn chain_relays<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_us: u64,
        peers: &[HopOwner],
        last: Command,
        out: &mut Vec<Hop>,
    ) -> Result<(), PathError> {
        let last_id = peers[peers.len() - 1].id;
        self.chain(rng, now_us, peers, last, out, |d| Command::Relay {
            next: last_id,
            delay_us: d,
        })
    }

    /// Builds the hop list: hop `i < n-2` relays to `peers[i+1]`; hop `n-2` gets
    /// `penultimate(delay)`; hop `n-1` gets `last`. Each hop is built under the key of the
    /// epoch it will unwrap the packet in, reckoned as `now_us` plus the delays of the hops
    /// before it: the earliest it can arrive, so it can only be later than reckoned, by
    /// its links, which the nodes' grace period covers (see [`crate::network::epoch`]).
    fn chain<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_us: u64,
        peers: &[HopOwner],
        last: Command,
        out: &mut Vec<Hop>,
        penultimate: impl Fn(u32) -> Command,
    ) -> Result<(), PathError> {
        out.clear();
        let n = peers.len();
        let mut at_us = now_us;
        for (i, p) in peers.iter().enumerate() {
            let command = if i + 1 == n {
                last
            } else {
                let d = self.delay_us(rng);
                if i + 2 == n {
                    penultimate(d)
                } else {
                    Command::Relay {
                        next: peers[i + 1].id,
                        delay_us: d,
                    }
                }
            };
            out.push(self.hop_at(*p, at_us, command)?);
            at_us += hop_delay_us(command);
        }
        Ok(())
    }

    /// One hop's delay: Exp(µ), in µs, capped at the network's delay horizon (which nodes
    /// enforce; a draw beyond it has probability 1e-9) and what the header can carry.
    fn delay_us<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        exp_us(rng, self.mu_per_s)
            .unwrap_or(0)
            .min(self.delay_horizon_us)
            .min(u64::from(u32::MAX)) as u32
    }
}

fn pick<R: Rng + ?Sized>(rng: &mut R, peers: &[HopOwner]) -> HopOwner {
    peers[(rng.next_u64() % peers.len() as u64) as usize]
}
