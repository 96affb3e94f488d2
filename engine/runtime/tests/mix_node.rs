//! A mix node on 2 shards over real UDP on 127.0.0.1, in this process.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use loopix_core::drops::DropReason;
use loopix_core::endpoint::Endpoint;
use loopix_core::hop::HopLimits;
use loopix_core::mix::{Mix, MixConfig};
use loopix_core::topology::Topology;
use loopix_crypto::{Address, Command, EpochSeed, Hop, Params, SecretKey, build};
use loopix_runtime::node::{Node, NodeLayout};
use loopix_runtime::shard::ShardReport;
use loopix_sim::{NetworkSpec, generate};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

struct Rig {
    node: Node,
    topology: Topology,
    /// Datagrams the next hop received, read by a thread so its socket buffer never fills.
    sink: std::sync::mpsc::Receiver<Vec<u8>>,
    params: Params,
    next_key: SecretKey,
    seed: EpochSeed,
}

const MIX: Address = Address(1);
const NEXT: Address = Address(2);

/// Mix 1 on two shards; mix 2's address is `sink`, a socket of the test.
fn rig() -> Rig {
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
    for n in &mut net.topology.nodes {
        if n.id == NEXT {
            n.address = sink_socket.local_addr().unwrap();
        }
    }
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
        let config = MixConfig {
            id: MIX,
            epoch_seed: seed.clone(),
            limits,
            loop_window: 10,
            loop_grace_us: 1_000_000,
            seed: [i as u8; 32],
        };
        (Mix::new(&topology, config).unwrap(), None)
    };
    let probe = make(0).0;
    let layout = NodeLayout {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        cpus: vec![],
        packet_len: params.packet_len(),
        datagram_len: probe.max_datagram_len() + 1,
        recv_buffer_bytes: 1 << 23,
        spin: None,
    };
    let node = Node::start(&layout, make).unwrap();
    Rig {
        node,
        topology,
        sink,
        params,
        next_key,
        seed,
    }
}

/// A node's key of epoch 0 in `topology`.
fn key_of(topology: &Topology, id: Address) -> loopix_crypto::PublicKey {
    topology.node(id).unwrap().epoch_keys.get(0).unwrap()
}

impl Rig {
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
                    next: Address(1_000),
                    delay_us: 0,
                },
            ),
            Hop::new(key(Address(1_000)), Command::Drop),
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
}

impl Totals {
    fn of(reports: &[ShardReport]) -> Self {
        reports.iter().fold(Self::default(), |t, r| Self {
            received: t.received + r.core.received,
            sent: t.sent + r.core.sent,
            drops: t.drops + r.core.drops.total(),
            pending: t.pending + r.core.pending,
        })
    }
}

#[test]
fn both_shards_forward_and_the_counters_add_up() {
    let mut rig = rig();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rig.node.local_addr;
    let packets: Vec<Vec<u8>> = (0..200).map(|i| rig.packet(i)).collect();
    for p in &packets {
        sender.send_to(p, to).unwrap();
    }
    let got = rig.collect(200);
    let (reports, t) = rig.totals(200);
    assert_eq!(got.len(), 200, "{t:?} {reports:?}");
    let next = loopix_crypto::Processor::new(rig.next_key.clone(), rig.params);
    for mut p in got {
        assert!(
            next.process(&mut p).is_ok(),
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

#[test]
fn a_packet_sent_twice_from_two_ports_is_forwarded_once() {
    let mut rig = rig();
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let p = rig.packet(99);
    a.send_to(&p, rig.node.local_addr).unwrap();
    b.send_to(&p, rig.node.local_addr).unwrap();
    let got = rig.collect(1).len();
    let (reports, t) = rig.totals(2);
    assert_eq!(got, 1, "forwarded exactly once: {t:?} {reports:?}");
    let (reports, t) = rig.totals(2);
    let replays: u64 = reports
        .iter()
        .map(|r| r.core.drops.get(DropReason::Replay))
        .sum();
    assert_eq!((t.received, t.sent, replays), (2, 1, 1));
    rig.node.shutdown(Duration::from_secs(1));
}

#[test]
fn random_datagrams_are_dropped_and_counted_and_valid_traffic_still_flows() {
    let mut rig = rig();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut sent = 0u64;
    for burst in 0..20 {
        for _ in 0..500 {
            let mut d = vec![0u8; 1 + (rng.next_u64() % 3_000) as usize];
            rng.fill_bytes(&mut d);
            sender.send_to(&d, rig.node.local_addr).unwrap();
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
        sender
            .send_to(&rig.packet(1_000 + i), rig.node.local_addr)
            .unwrap();
    }
    assert_eq!(rig.collect(50).len(), 50);
    rig.node.shutdown(Duration::from_secs(1));
}

/// SIGHUP's path: a reload with the same seed leaves the replay filters alone (the replay
/// stays refused); a reload with another seed puts its key in use, with a fresh filter.
#[test]
fn a_reload_keeps_an_unchanged_key_and_its_filter_and_replaces_a_changed_one() {
    let mut rig = rig();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = rig.packet(1);
    sender.send_to(&first, rig.node.local_addr).unwrap();
    assert_eq!(rig.collect(1).len(), 1);
    let topology = rig.topology.clone();
    rig.node.reload(&topology, &rig.seed);
    let settle = || std::thread::sleep(Duration::from_millis(100));
    settle();
    sender.send_to(&first, rig.node.local_addr).unwrap();
    assert_eq!(rig.collect(1).len(), 0, "the same key: still a replay");

    let new_seed = EpochSeed::generate(&mut ChaCha20Rng::seed_from_u64(77), 0);
    rig.node.reload(&topology, &new_seed);
    settle();
    let new_key = new_seed.secret_key(0).unwrap().public_key();
    for i in 0..20 {
        sender
            .send_to(&rig.packet(100 + i), rig.node.local_addr)
            .unwrap();
        sender
            .send_to(&rig.packet_for(new_key, 200 + i), rig.node.local_addr)
            .unwrap();
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
