//! A mix node on 2 shards over real UDP on 127.0.0.1, in this process. The test plays the
//! provider before it (a socket at the provider's address, sealing with its link keys) and
//! the mix after it (a socket the node forwards to).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use loopix_core::drops::DropReason;
use loopix_core::endpoint::Endpoint;
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::Topology;
use loopix_core::pipeline::hop::HopLimits;
use loopix_core::roles::RoleConfig;
use loopix_core::roles::mix::Mix;
use loopix_crypto::{Command, EpochSeed, Hop, NodeId, Params, SecretKey, build};
use loopix_runtime::backend::{Backend, Chosen};
use loopix_runtime::node::{NodeLayout, RunningNode};
use loopix_runtime::shard::ShardReport;
use loopix_sim::{NetworkSpec, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

struct Rig {
    node: RunningNode,
    topology: Topology,
    /// The provider's socket and links: what layer 1 takes packets from.
    provider: UdpSocket,
    links: Links,
    /// Datagrams the next hop received, read by a thread so its socket buffer never fills.
    sink: std::sync::mpsc::Receiver<Vec<u8>>,
    params: Params,
    next_key: SecretKey,
    seed: EpochSeed,
}

const MIX: NodeId = NodeId(1);
const NEXT: NodeId = NodeId(2);
const PROVIDER: NodeId = NodeId(1_000);

/// Mix 1 on two shards; mix 2's address is `sink`, a socket of the test.
/// The backend these tests run the node on: `LOOPIX_BACKEND` (the CI runs them on each),
/// else what `auto` picks on this host.
fn backend_under_test() -> Chosen {
    let asked: Backend = std::env::var("LOOPIX_BACKEND")
        .map(|v| v.parse().expect("LOOPIX_BACKEND names a backend"))
        .unwrap_or_default();
    asked
        .choose()
        .expect("the backend runs on this host")
        .backend
}

fn rig() -> Rig {
    rig_with(None, None)
}

/// [`rig`], its shards shedding datagrams that waited longer than `max_socket_wait`.
fn rig_shedding(max_socket_wait: Option<Duration>) -> Rig {
    rig_with(max_socket_wait, None)
}

/// [`rig_shedding`], with mix 2 at `next` if given (instead of the sink).
fn rig_with(max_socket_wait: Option<Duration>, next: Option<std::net::SocketAddr>) -> Rig {
    let spec = NetworkSpec {
        layers: 2,
        mixes_per_layer: 1,
        providers: 1,
        clients: 1,
        lambda_payload_per_s: 0.0,
        lambda_loop_per_s: 0.0,
        lambda_drop_per_s: 0.0,
        lambda_mix_loop_per_s: 0.0,
        // Epoch 0 starts now (the node runs on unix time) and outlasts the test.
        epoch_start_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        ..NetworkSpec::default()
    };
    let mut net = generate(&spec, 7).unwrap();
    // A big receive buffer: on 2 cores the reader thread competes with both shards.
    let sink_socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sink_socket.set_recv_buffer_size(4 << 20).unwrap();
    sink_socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let sink_socket = UdpSocket::from(sink_socket);
    let provider = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in &mut net.topology.nodes {
        if n.id == NEXT {
            n.address = next.unwrap_or(sink_socket.local_addr().unwrap());
        }
        if n.id == PROVIDER {
            n.address = provider.local_addr().unwrap();
        }
    }
    let links = Links::new(&net.topology, PROVIDER, &net.keys.sessions[&PROVIDER], 0).unwrap();
    let session_key = net.keys.sessions.remove(&MIX).unwrap();
    let (sink_tx, sink) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(len) = sink_socket.recv(&mut buf) {
            if sink_tx.send(buf[..len].to_vec()).is_err() {
                return;
            }
        }
    });
    let seed = net.keys.nodes.remove(&MIX).unwrap();
    let next_key = net.keys.nodes[&NEXT].secret_key(0).unwrap();
    let topology = net.topology;
    let params = topology.network.params;
    let limits = HopLimits {
        pool_packets: 16_384,
        replay_tags: 1 << 16,
        ..HopLimits::default()
    };
    let make = |i: usize| {
        let config = RoleConfig {
            loop_window: 10,
            loop_grace_us: 1_000_000,
            ..RoleConfig::node(MIX, seed.clone(), session_key.clone())
                .seeded([i as u8; 32])
                .limited(limits)
                .on_shard(i, 2)
        };
        (Mix::new(&topology, config).unwrap(), None)
    };
    let probe = make(0).0;
    let layout = NodeLayout {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        cpus: vec![],
        packet_len: probe.max_datagram_len(),
        frame_len: 0,
        datagram_len: probe.max_datagram_len() + 1,
        recv_buffer_bytes: 1 << 23,
        spin: None,
        max_socket_wait,
        backend: backend_under_test(),
    };
    let node = RunningNode::start(&layout, make).unwrap();
    Rig {
        node,
        topology,
        provider,
        links,
        sink,
        params,
        next_key,
        seed,
    }
}

/// A node's key of epoch 0 in `topology`.
fn key_of(topology: &Topology, id: NodeId) -> loopix_crypto::PublicKey {
    topology.node(id).unwrap().epoch_keys.get(0).unwrap()
}

impl Rig {
    /// Sends `packet` from the provider, over its link to the mix.
    fn send(&mut self, packet: &[u8]) {
        let d = self.sealed(packet);
        self.provider.send_to(&d, self.node.local_addr).unwrap();
    }

    /// `packet` with the provider's link trailer for the mix, stamped now.
    fn sealed(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut d = packet.to_vec();
        d.resize(packet.len() + LINK_OVERHEAD, 0);
        let now = loopix_runtime::clock::NetworkClock::start().now_us();
        self.links.seal(now, MIX, &mut d).unwrap();
        d
    }

    fn packet(&self, seed: u64) -> Vec<u8> {
        self.packet_for(key_of(&self.topology, MIX), seed)
    }

    fn packet_for(&self, mix_key: loopix_crypto::PublicKey, seed: u64) -> Vec<u8> {
        let key = |id| key_of(&self.topology, id);
        let path = [
            Hop::new(
                mix_key,
                Command::Relay {
                    next: NEXT,
                    delay_us: 2_000,
                },
            ),
            Hop::new(
                key(NEXT),
                Command::Relay {
                    next: NodeId(1_000),
                    delay_us: 0,
                },
            ),
            Hop::new(key(NodeId(1_000)), Command::Drop),
        ];
        build(
            &self.params,
            &path,
            b"",
            &mut ChaCha20Rng::seed_from_u64(seed),
        )
        .unwrap()
    }

    /// Receives from the sink until `n` datagrams came or 5 s passed.
    fn collect(&self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.sink.recv_timeout(left) {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        // Anything more would be a duplicate: give it a moment to show up.
        while let Ok(d) = self.sink.recv_timeout(Duration::from_millis(100)) {
            out.push(d);
        }
        out
    }

    /// Sums the shards' reports once every shard has accounted for `received` datagrams.
    fn totals(&mut self, received: u64) -> (Vec<ShardReport>, Totals) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reports = self.node.fresh_reports(Duration::from_millis(300));
            let t = Totals::of(&reports);
            if t.received >= received && t.pending == 0 || Instant::now() > deadline {
                return (reports, t);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    received: u64,
    sent: u64,
    drops: u64,
    pending: u64,
    kernel_drops: u64,
}

impl Totals {
    fn of(reports: &[ShardReport]) -> Self {
        reports.iter().fold(Self::default(), |t, r| Self {
            received: t.received + r.core.received,
            sent: t.sent + r.core.sent,
            drops: t.drops + r.core.drops.total(),
            pending: t.pending + r.core.pending,
            kernel_drops: t.kernel_drops + r.kernel_drops,
        })
    }
}

#[test]
fn both_shards_forward_and_the_counters_add_up() {
    let mut rig = rig();
    let packets: Vec<Vec<u8>> = (0..200).map(|i| rig.packet(i)).collect();
    for p in &packets {
        rig.send(p);
    }
    let got = rig.collect(200);
    let (reports, t) = rig.totals(200);
    assert_eq!(got.len(), 200, "{t:?} {reports:?}");
    let next = loopix_crypto::Processor::new(rig.next_key.clone(), rig.params);
    let packet_len = rig.params.packet_len();
    for mut p in got {
        assert_eq!(
            p.len(),
            packet_len + LINK_OVERHEAD,
            "a packet and its link trailer"
        );
        assert!(
            next.process(&mut p[..packet_len]).is_ok(),
            "forwarded packets are valid for the next hop"
        );
    }
    assert!(reports.iter().all(|r| r.core.received > 20), "{reports:?}");
    assert_eq!(
        (t.received, t.sent, t.drops, t.pending),
        (200, 200, 0, 0),
        "in = out + drops + pending"
    );
    rig.node.shutdown(Duration::from_secs(1));
}

/// The same packet under two link trailers (a replay the link cannot tell), the same
/// datagram again (a link replay), and the datagram from a port that is no node's (a
/// forged source): forwarded once, each of the rest counted under its reason.
#[test]
fn a_packet_sent_again_or_from_a_stranger_is_forwarded_once() {
    let mut rig = rig();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = rig.packet(99);
    let d = rig.sealed(&p);
    rig.provider.send_to(&d, rig.node.local_addr).unwrap();
    rig.provider.send_to(&d, rig.node.local_addr).unwrap();
    rig.send(&p);
    stranger
        .send_to(&rig.sealed(&p), rig.node.local_addr)
        .unwrap();
    let got = rig.collect(1).len();
    let (reports, t) = rig.totals(4);
    assert_eq!(got, 1, "forwarded exactly once: {t:?} {reports:?}");
    assert_eq!(t.drops, 3);
    let count = |reason| -> u64 { reports.iter().map(|r| r.core.drops.get(reason)).sum() };
    assert_eq!(
        (
            t.received,
            t.sent,
            count(DropReason::LinkReplay),
            count(DropReason::Replay),
            count(DropReason::UnknownPeer)
        ),
        (4, 1, 1, 1, 1)
    );
    rig.node.shutdown(Duration::from_secs(1));
}

#[test]
fn random_datagrams_are_dropped_and_counted_and_valid_traffic_still_flows() {
    let mut rig = rig();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut sent = 0u64;
    for burst in 0..20 {
        for _ in 0..500 {
            let mut d = vec![0u8; 1 + (rng.next_u64() % 3_000) as usize];
            rng.fill_bytes(&mut d);
            rig.provider.send_to(&d, rig.node.local_addr).unwrap();
            sent += 1;
        }
        // Let the node catch up so the kernel buffer never overflows.
        let (_, t) = rig.totals(sent);
        assert_eq!(
            t.received, sent,
            "burst {burst}: the node saw every datagram"
        );
    }
    let (_, t) = rig.totals(sent);
    assert_eq!((t.drops, t.sent), (10_000, 0));
    for i in 0..50 {
        let p = rig.packet(1_000 + i);
        rig.send(&p);
    }
    assert_eq!(rig.collect(50).len(), 50);
    rig.node.shutdown(Duration::from_secs(1));
}

/// SIGHUP's path: a reload with the same seed leaves the replay filters alone (the replay
/// stays refused); a reload with another seed puts its key in use, with a fresh filter.
#[test]
fn a_reload_keeps_an_unchanged_key_and_its_filter_and_replaces_a_changed_one() {
    let mut rig = rig();
    let first = rig.packet(1);
    rig.send(&first);
    assert_eq!(rig.collect(1).len(), 1);
    let topology = rig.topology.clone();
    rig.node.reload(&topology, &rig.seed);
    let settle = || std::thread::sleep(Duration::from_millis(100));
    settle();
    rig.send(&first);
    assert_eq!(rig.collect(1).len(), 0, "the same key: still a replay");

    let new_seed = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(77), 0);
    rig.node.reload(&topology, &new_seed);
    settle();
    let new_key = new_seed.secret_key(0).unwrap().public_key();
    for i in 0..20 {
        let (old, new) = (rig.packet(100 + i), rig.packet_for(new_key, 200 + i));
        rig.send(&old);
        rig.send(&new);
    }
    assert_eq!(
        rig.collect(20).len(),
        20,
        "only the new key's packets are forwarded"
    );
    let (reports, t) = rig.totals(42);
    let count = |reason| -> u64 { reports.iter().map(|r| r.core.drops.get(reason)).sum() };
    assert_eq!(
        (t.sent, count(DropReason::Replay), count(DropReason::Mac)),
        (21, 1, 20)
    );
    rig.node.shutdown(Duration::from_secs(1));
}

/// Junk that costs the node a whole unwrap (a valid link trailer, a Sphinx header that
/// fails its MAC after the key exchange), sent in one burst far faster than two shards
/// unwrap: with a 2 ms bound the shards shed what waited longer, unread, as `stale`;
/// without one they unwrap it all. Every datagram is accounted for either way.
#[test]
fn an_overloaded_shard_sheds_what_waited_too_long_in_its_socket() {
    let burst = |max_socket_wait| {
        let mut rig = rig_shedding(max_socket_wait);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut junk = vec![0u8; rig.params.packet_len()];
        let sent = 3_000u64;
        for _ in 0..sent {
            rng.fill_bytes(&mut junk);
            let d = rig.sealed(&junk);
            rig.provider.send_to(&d, rig.node.local_addr).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (reports, t) = loop {
            let (reports, t) = rig.totals(0);
            if t.received + t.kernel_drops >= sent || Instant::now() > deadline {
                break (reports, t);
            }
        };
        rig.node.shutdown(Duration::from_secs(1));
        let stale: u64 = reports
            .iter()
            .map(|r| r.core.drops.get(DropReason::Stale))
            .sum();
        assert_eq!(t.received + t.kernel_drops, sent, "{t:?}");
        assert_eq!((t.drops, t.sent), (t.received, 0), "all junk, all dropped");
        stale
    };
    let stale = burst(Some(Duration::from_millis(2)));
    assert!(stale > 0, "nothing was shed");
    assert_eq!(burst(None), 0, "no bound, nothing shed");
}

/// A next hop the shard's socket cannot send to (an IPv6 address from an IPv4 socket): every
/// forward fails in the kernel and is counted as a send error, none silently lost.
#[test]
fn sends_the_socket_refuses_are_counted() {
    let mut rig = rig_with(None, Some("[::1]:9".parse().unwrap()));
    for i in 0..20 {
        let p = rig.packet(500 + i);
        rig.send(&p);
    }
    let (reports, t) = rig.totals(20);
    let errors: u64 = reports.iter().map(|r| r.send_errors).sum();
    assert_eq!((t.received, t.sent, errors), (20, 20, 20), "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.recv_errors).sum::<u64>(), 0);
    rig.node.shutdown(Duration::from_secs(1));
}
