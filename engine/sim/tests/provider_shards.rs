//! A provider on several shards, driven as the runtime drives one: each datagram goes to
//! the shard the kernel's steering picks (a session frame by its receiver index, an
//! initiation by a hash of its source), and each shard's handoffs go to the shard they
//! name. A client's sessions, polls and inbox must all be on its home shard, whichever
//! shard its initiation reached and across a re-handshake, and every packet stored for it
//! must come back to it in its polls, once.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use loopix_core::drops::DropReason;
use loopix_core::endpoint::Endpoint;
use loopix_core::formats::wire::read_item;
use loopix_core::network::topology::Topology;
use loopix_core::pipeline::steering::{home_shard, steered_shard};
use loopix_core::roles::RoleConfig;
use loopix_core::roles::inbox::MemoryInbox;
use loopix_core::roles::provider::{Provider, ProviderEvent};
use loopix_core::session::initiator::Opened;
use loopix_core::session::{ClientSession, FrameKind, FrameLayout};
use loopix_crypto::{Command, Hop, NodeId, SessionSecret, build};
use loopix_sim::network::{NetworkSpec, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const SHARDS: usize = 3;
const CLIENTS: usize = 12;

/// One provider's shards and what each was handed.
struct Shards {
    shards: Vec<Provider<MemoryInbox>>,
    /// Per shard: the clients whose frames (after the handshake) it read.
    frames_from: Vec<BTreeSet<NodeId>>,
    /// Initiations each shard read.
    initiations: Vec<usize>,
    /// Handoffs moved, by kind: sessions, deliveries.
    handoffs: (usize, usize),
    buf: Vec<u8>,
}

impl Shards {
    /// The shard a datagram from `from` reaches: its content's steering, or for an
    /// initiation a hash of its source (as the kernel's reuseport hash).
    fn steer(&self, from: SocketAddr, bytes: &[u8]) -> usize {
        steered_shard(bytes, self.shards.len()).unwrap_or_else(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            from.hash(&mut h);
            (h.finish() % self.shards.len() as u64) as usize
        })
    }

    /// Hands a datagram to the shard it reaches, then moves every handoff.
    fn receive(&mut self, now: u64, from: SocketAddr, bytes: &[u8], client: Option<NodeId>) {
        let s = self.steer(from, bytes);
        match client {
            Some(c) => {
                self.frames_from[s].insert(c);
            }
            None => self.initiations[s] += 1,
        }
        self.shards[s].handle_datagram(now, from, bytes);
        self.move_handoffs(now);
    }

    fn move_handoffs(&mut self, now: u64) {
        loop {
            let mut moved = false;
            for s in 0..self.shards.len() {
                while let Some((to, h)) = self.shards[s].poll_handoff() {
                    assert_ne!(to, s, "a shard hands nothing to itself");
                    match &h {
                        loopix_core::endpoint::Handoff::Session(_) => self.handoffs.0 += 1,
                        loopix_core::endpoint::Handoff::Deliver { .. } => self.handoffs.1 += 1,
                    }
                    self.shards[to].handle_handoff(now, h);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Every datagram the shards send at `now`, with the shard that sent it.
    /// (Sending is where a shard finds what fell due, and hands on what is not its own.)
    fn transmits(&mut self, now: u64) -> Vec<(usize, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for (s, shard) in self.shards.iter_mut().enumerate() {
            shard.handle_timeout(now);
            while let Some(t) = shard.poll_transmit(now, &mut self.buf) {
                out.push((s, t.to, self.buf[..t.len].to_vec()));
            }
        }
        self.move_handoffs(now);
        out
    }
}

struct Client {
    id: NodeId,
    session: ClientSession,
    addr: SocketAddr,
}

struct Net {
    topology: Topology,
    shards: Shards,
    clients: Vec<Client>,
    layout: FrameLayout,
    provider: NodeId,
    client_keys: BTreeMap<NodeId, loopix_crypto::PublicKey>,
    rng: ChaCha20Rng,
    now: u64,
}

impl Net {
    fn new(seed: u64) -> Self {
        let spec = NetworkSpec {
            layers: 1,
            mixes_per_layer: 1,
            providers: 1,
            clients: CLIENTS as u32,
            poll_rate_per_s: 1000.0,
            ..NetworkSpec::default()
        };
        let net = generate(&spec, seed).unwrap();
        let t = net.topology.clone();
        let p = t.providers().next().unwrap().id;
        let shards = (0..SHARDS)
            .map(|i| {
                let mut seed = [9u8; 32];
                seed[0] = i as u8;
                let config =
                    RoleConfig::node(p, net.keys.nodes[&p].clone(), net.keys.sessions[&p].clone())
                        .seeded(seed)
                        .on_shard(i, SHARDS);
                Provider::new(&t, config, MemoryInbox::new(100, 10_000)).unwrap()
            })
            .collect::<Vec<_>>();
        let layout = FrameLayout::new(&t.network.params, t.network.poll_size);
        let buf = vec![0u8; shards[0].max_datagram_len()];
        let provider_key = t.node(p).unwrap().session_key.unwrap();
        let clients = t
            .clients_of(p)
            .enumerate()
            .map(|(i, c)| Client {
                id: c.id,
                session: ClientSession::new(
                    SessionSecret::derive_from(&net.keys.clients[&c.id]),
                    provider_key,
                    layout,
                ),
                addr: format!("10.0.0.{}:5000", i + 1).parse().unwrap(),
            })
            .collect();
        Self {
            topology: t,
            shards: Shards {
                shards,
                frames_from: vec![BTreeSet::new(); SHARDS],
                initiations: vec![0; SHARDS],
                handoffs: (0, 0),
                buf,
            },
            clients,
            layout,
            provider: p,
            client_keys: net
                .keys
                .clients
                .iter()
                .map(|(id, k)| (*id, k.public_key()))
                .collect(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: 1_000_000_000,
        }
    }

    /// Client `i` handshakes from its address; its session is up when the response,
    /// sent by the client's home shard, opens.
    fn handshake(&mut self, i: usize) {
        self.now += 1_000;
        let mut init = vec![0u8; self.layout.frame_len()];
        let c = &mut self.clients[i];
        c.session
            .write_initiation(self.now, &mut self.rng, &mut init)
            .unwrap();
        let (addr, id) = (c.addr, c.id);
        self.shards.receive(self.now, addr, &init, None);
        let sent = self.shards.transmits(self.now);
        assert_eq!(sent.len(), 1, "one response");
        let (shard, to, bytes) = &sent[0];
        assert_eq!(*to, addr);
        assert_eq!(
            *shard,
            home_shard(id, SHARDS),
            "the response comes from home"
        );
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        let c = &mut self.clients[i];
        assert!(matches!(
            c.session.open(self.now, bytes, &mut plain),
            Opened::Established
        ));
    }

    /// Client `i` sends a frame of `kind` with `body`.
    fn send(&mut self, i: usize, kind: FrameKind, body: &[u8]) {
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        plain[0] = kind as u8;
        plain[1..1 + body.len()].copy_from_slice(body);
        let mut frame = vec![0u8; self.layout.frame_len()];
        self.clients[i].session.seal(&plain, &mut frame).unwrap();
        let (addr, id) = (self.clients[i].addr, self.clients[i].id);
        self.shards.receive(self.now, addr, &frame, Some(id));
    }

    /// A packet from client `from` to client `to`, through the provider alone (its one hop
    /// delivers it): the sender's home shard unwraps it, the recipient's stores it.
    fn message(&mut self, from: usize, to: usize) {
        let me = self.topology.node(self.provider).unwrap();
        let recipient = self.clients[to].id;
        let path = [
            me.epoch_keys
                .hop(
                    0,
                    Command::Deliver {
                        client: recipient,
                        delay_us: 0,
                    },
                )
                .unwrap(),
            Hop::new(self.client_keys[&recipient], Command::Final),
        ];
        let packet = build(&self.topology.network.params, &path, b"hi", &mut self.rng).unwrap();
        self.send(from, FrameKind::Packet, &packet);
        // Within the client's quota (twice its honest rate).
        self.now += 1_000_000;
    }

    /// Client `i` polls acknowledging `acks`; the ids of the real items its answer
    /// carried (the answer is released after the answer delay), and the shard it came from.
    fn poll(&mut self, i: usize, acks: &[u64], real: &BTreeSet<u64>) -> (Vec<u64>, usize) {
        let body: Vec<u8> = acks.iter().flat_map(|a| a.to_le_bytes()).collect();
        self.send(i, FrameKind::Poll, &body);
        self.now += 100_000;
        let sent = self.shards.transmits(self.now);
        let poll_size = usize::from(self.topology.network.poll_size);
        assert_eq!(sent.len(), poll_size, "one answer of N items");
        let mut plain = vec![0u8; self.layout.plaintext_len()];
        let mut ids = Vec::new();
        let mut from = BTreeSet::new();
        for (shard, to, bytes) in sent {
            assert_eq!(to, self.clients[i].addr);
            from.insert(shard);
            let Opened::Plain(p) = self.clients[i].session.open(self.now, &bytes, &mut plain)
            else {
                panic!("an answer item that does not open");
            };
            let item = read_item(p.body).unwrap();
            if real.contains(&item.id) {
                ids.push(item.id);
            }
        }
        assert_eq!(from.len(), 1, "one shard answers a poll");
        (ids, from.into_iter().next().unwrap())
    }

    /// Ids stored so far, by client, from every shard's events (and which shard stored).
    fn stored(&mut self) -> Vec<(usize, NodeId, u64)> {
        let mut out = Vec::new();
        for (s, shard) in self.shards.shards.iter_mut().enumerate() {
            while let Some(ProviderEvent::Stored { client, id, .. }) = shard.poll_event() {
                out.push((s, client, id));
            }
        }
        out
    }
}

#[test]
fn a_client_s_sessions_polls_and_inbox_are_on_its_home_shard_across_re_handshakes() {
    let mut net = Net::new(41);
    for i in 0..CLIENTS {
        net.handshake(i);
    }
    // Initiations reached shards by their source: several did not reach their client's
    // home, and were handed there.
    assert!(
        net.shards.initiations.iter().filter(|&&n| n > 0).count() > 1,
        "initiations spread: {:?}",
        net.shards.initiations
    );
    assert!(
        net.shards.handoffs.0 > 0,
        "some handshakes were handed home"
    );
    let homes: Vec<usize> = net
        .clients
        .iter()
        .map(|c| home_shard(c.id, SHARDS))
        .collect();
    for (s, shard) in net.shards.shards.iter().enumerate() {
        let homed = homes.iter().filter(|&&h| h == s).count();
        assert_eq!(
            shard.sessions(),
            homed,
            "shard {s} holds its clients' sessions"
        );
    }

    // Every client sends one message to every other (3 rounds), then all poll until
    // their inboxes are empty; then each re-handshakes (from a new address, so its
    // initiation may reach another shard) and it all happens again.
    for round in 0..2 {
        for from in 0..CLIENTS {
            for k in 1..=3 {
                net.message(from, (from + k) % CLIENTS);
            }
        }
        net.now += 1_000;
        let _ = net.shards.transmits(net.now);
        let stored = net.stored();
        assert_eq!(
            stored.len(),
            CLIENTS * 3,
            "round {round}: every message stored"
        );
        for &(s, client, _) in &stored {
            assert_eq!(s, home_shard(client, SHARDS), "stored on its home");
        }
        let mut expected: BTreeMap<NodeId, BTreeSet<u64>> = BTreeMap::new();
        for &(_, client, id) in &stored {
            expected.entry(client).or_default().insert(id);
        }
        for (i, &home) in homes.iter().enumerate() {
            let want = expected.remove(&net.clients[i].id).unwrap_or_default();
            let mut got = BTreeSet::new();
            let mut acks = Vec::new();
            for _ in 0..4 {
                let (ids, shard) = net.poll(i, &acks, &want);
                assert_eq!(shard, home, "answered from home");
                for id in &ids {
                    assert!(got.insert(*id), "round {round}: item {id} handed out twice");
                }
                acks = ids;
            }
            assert_eq!(
                got, want,
                "round {round}: client {i} collected its messages"
            );
        }
        for s in 0..SHARDS {
            for c in &net.shards.frames_from[s] {
                assert_eq!(home_shard(*c, SHARDS), s, "frames of {c:?} on shard {s}");
            }
        }
        // A re-handshake from a new port.
        for i in 0..CLIENTS {
            net.clients[i].addr.set_port(6000 + round as u16);
            net.now += 2_000_000;
            net.handshake(i);
        }
        for (s, shard) in net.shards.shards.iter().enumerate() {
            let homed = homes.iter().filter(|&&h| h == s).count();
            assert_eq!(
                shard.sessions(),
                2 * homed,
                "shard {s}: each client's current and previous session, at home"
            );
        }
    }
    assert!(net.shards.handoffs.1 > 0, "deliveries were handed home");
}

/// A replayed initiation is refused by the client's home, whichever shard reads it: its
/// state (the last handshake's time) is there alone.
#[test]
fn a_replayed_initiation_is_refused_whichever_shard_reads_it() {
    let mut net = Net::new(42);
    let mut init = vec![0u8; net.layout.frame_len()];
    net.now += 1_000;
    net.clients[0]
        .session
        .write_initiation(net.now, &mut net.rng, &mut init)
        .unwrap();
    let home = home_shard(net.clients[0].id, SHARDS);
    let before = net.shards.shards[home].sessions();
    // From many source ports: the copies reach every shard.
    let mut reached = BTreeSet::new();
    for port in 0..64u16 {
        let from: SocketAddr = format!("10.9.9.9:{}", 7000 + port).parse().unwrap();
        reached.insert(net.shards.steer(from, &init));
        net.shards.receive(net.now, from, &init, None);
    }
    assert_eq!(reached.len(), SHARDS, "copies read on every shard");
    let responses = net.shards.transmits(net.now);
    assert_eq!(responses.len(), 1, "one session, one response");
    assert_eq!(net.shards.shards[home].sessions(), before + 1);
    let others: usize = (0..SHARDS)
        .filter(|&s| s != home)
        .map(|s| net.shards.shards[s].sessions())
        .sum();
    assert_eq!(others, 0, "no session off its home");
}

/// A handoff the driver could not hand on (the other shard's queue full) is counted by the
/// core as `handoff_full`, once, and not as a datagram received again.
#[test]
fn a_refused_handoff_is_one_drop_and_no_new_datagram() {
    let mut net = Net::new(43);
    for i in 0..CLIENTS {
        net.handshake(i);
    }
    let homes: Vec<usize> = net
        .clients
        .iter()
        .map(|c| home_shard(c.id, SHARDS))
        .collect();
    let (from, to) = (0..CLIENTS)
        .flat_map(|a| (0..CLIENTS).map(move |b| (a, b)))
        .find(|&(a, b)| homes[a] != homes[b])
        .expect("clients on two shards");
    // The packet reaches the sender's home (its session's shard); its delivery is for
    // another shard, and the driver finds that shard's queue full.
    net.message(from, to);
    let shard = &mut net.shards.shards[homes[from]];
    shard.handle_timeout(net.now);
    let mut buf = vec![0u8; shard.max_datagram_len()];
    while shard.poll_transmit(net.now, &mut buf).is_some() {}
    let (dest, handoff) = shard
        .poll_handoff()
        .expect("a delivery for the recipient's home");
    assert_eq!(dest, homes[to]);
    let before = shard.stats().hop;
    shard.handoff_refused(handoff);
    let after = shard.stats().hop;
    assert_eq!(after.received, before.received, "not a datagram received");
    assert_eq!(
        after.drops.get(DropReason::HandoffFull),
        before.drops.get(DropReason::HandoffFull) + 1
    );
}
