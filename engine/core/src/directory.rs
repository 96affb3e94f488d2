//! Who is where, for building paths: the mixes of each layer, the providers, the clients'
//! providers, with every public key parsed once. Paths follow Loopix's stratified
//! topology: one mix per layer, chosen uniformly, each hop's delay drawn from Exp(µ).

use std::collections::BTreeMap;

use loopix_crypto::{Address, Command, Hop, PublicKey};
use rand_core::Rng;

use crate::rate::exp_us;
use crate::topology::{Role, Topology};

/// A node as a path hop.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub id: Address,
    pub key: PublicKey,
}

/// The path-building view of a topology.
#[derive(Clone, Debug)]
pub struct Directory {
    layers: Vec<Vec<Peer>>,
    providers: Vec<Peer>,
    /// Each client and its provider, by id: looked up for every packet a client sends.
    clients: BTreeMap<Address, (Peer, Address)>,
    mu_per_s: f64,
}

/// The delays a path asks its hops to hold it, in all, µs.
pub fn requested_delay_us(path: &[Hop]) -> u64 {
    path.iter()
        .map(|h| match h.command {
            Command::Relay { delay_us, .. } | Command::Deliver { delay_us, .. } => {
                u64::from(delay_us)
            }
            _ => 0,
        })
        .sum()
}

/// A path could not be made: a name not in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPeer(pub Address);

impl Directory {
    /// Indexes `topology`.
    pub fn new(topology: &Topology) -> Self {
        let peer = |n: &crate::topology::Node| Peer {
            id: n.id,
            key: n.public_key,
        };
        let layers = (1..=topology.network.layers)
            .map(|l| topology.mixes_in_layer(l).map(peer).collect())
            .collect();
        let providers = topology
            .nodes
            .iter()
            .filter(|n| n.role == Role::Provider)
            .map(peer)
            .collect();
        let clients = topology
            .clients
            .iter()
            .map(|c| {
                (
                    c.id,
                    (
                        Peer {
                            id: c.id,
                            key: c.public_key,
                        },
                        c.provider,
                    ),
                )
            })
            .collect();
        Self {
            layers,
            providers,
            clients,
            mu_per_s: topology.network.mu_per_s,
        }
    }

    /// Number of mix layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// A provider by id.
    pub fn provider(&self, id: Address) -> Option<Peer> {
        self.providers.iter().copied().find(|p| p.id == id)
    }

    /// A client and its provider.
    pub fn client(&self, id: Address) -> Option<(Peer, Address)> {
        self.clients.get(&id).copied()
    }

    /// A uniformly chosen provider.
    pub fn random_provider<R: Rng + ?Sized>(&self, rng: &mut R) -> Peer {
        pick(rng, &self.providers)
    }

    /// A uniformly chosen mix of `layer` (0-based).
    pub fn random_mix<R: Rng + ?Sized>(&self, rng: &mut R, layer: usize) -> Peer {
        pick(rng, &self.layers[layer])
    }

    /// A client's path to `recipient`: its provider, one mix per layer, the recipient's
    /// provider (deliver), the recipient (`last`: final, or loop return for its own loop).
    /// Returns the first hop's id.
    pub fn client_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        own_provider: Address,
        recipient: Address,
        last: Command,
        out: &mut Vec<Hop>,
    ) -> Result<Address, UnknownPeer> {
        let ingress = self
            .provider(own_provider)
            .ok_or(UnknownPeer(own_provider))?;
        let (to, egress_id) = self.client(recipient).ok_or(UnknownPeer(recipient))?;
        let egress = self.provider(egress_id).ok_or(UnknownPeer(egress_id))?;
        let mut peers = [ingress; loopix_crypto::MAX_HOPS];
        let n = self.fill_layers(rng, &mut peers, 1);
        peers[n] = egress;
        peers[n + 1] = to;
        self.chain(rng, &peers[..n + 2], last, out, |d| Command::Deliver {
            client: to.id,
            delay_us: d,
        });
        Ok(ingress.id)
    }

    /// A drop cover path: the client's provider, one mix per layer, a random provider that
    /// discards it. Returns the first hop's id.
    pub fn drop_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        own_provider: Address,
        out: &mut Vec<Hop>,
    ) -> Result<Address, UnknownPeer> {
        let ingress = self
            .provider(own_provider)
            .ok_or(UnknownPeer(own_provider))?;
        let mut peers = [ingress; loopix_crypto::MAX_HOPS];
        let n = self.fill_layers(rng, &mut peers, 1);
        peers[n] = self.random_provider(rng);
        self.chain_relays(rng, &peers[..n + 1], Command::Drop, out);
        Ok(ingress.id)
    }

    /// A mix's loop: the mixes of the layers after its own, a random provider, the layers
    /// before its own, then itself (loop return). Returns the first hop's id.
    pub fn mix_loop_path<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        me: Peer,
        my_layer: usize,
        out: &mut Vec<Hop>,
    ) -> Address {
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
        self.chain_relays(rng, &peers[..n + 1], Command::LoopReturn, out);
        peers[0].id
    }

    /// Writes one random mix per layer into `peers[from..]`; returns the next free index.
    fn fill_layers<R: Rng + ?Sized>(&self, rng: &mut R, peers: &mut [Peer], from: usize) -> usize {
        for l in 0..self.layers.len() {
            peers[from + l] = self.random_mix(rng, l);
        }
        from + self.layers.len()
    }

    /// Hops where each relays to the next after an Exp(µ) delay and the last gets `last`.
    fn chain_relays<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        peers: &[Peer],
        last: Command,
        out: &mut Vec<Hop>,
    ) {
        let last_id = peers[peers.len() - 1].id;
        self.chain(rng, peers, last, out, |d| Command::Relay {
            next: last_id,
            delay_us: d,
        });
    }

    /// Builds the hop list: hop `i < n-2` relays to `peers[i+1]`; hop `n-2` gets
    /// `penultimate(delay)`; hop `n-1` gets `last`.
    fn chain<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        peers: &[Peer],
        last: Command,
        out: &mut Vec<Hop>,
        penultimate: impl Fn(u32) -> Command,
    ) {
        out.clear();
        let n = peers.len();
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
            out.push(Hop {
                key: p.key,
                command,
            });
        }
    }

    /// One hop's delay: Exp(µ), in µs, capped to what the header can carry.
    fn delay_us<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        exp_us(rng, self.mu_per_s)
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32
    }
}

fn pick<R: Rng + ?Sized>(rng: &mut R, peers: &[Peer]) -> Peer {
    peers[(rng.next_u64() % peers.len() as u64) as usize]
}
