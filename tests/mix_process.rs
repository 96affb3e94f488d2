//! End-to-end: a mix as a `loopix node` process on 2 shards, fed over real UDP on 127.0.0.1
//! by this test, which plays the provider before it (a socket at the provider's address,
//! sealing with the provider's link keys) and the next hop (a socket named in the
//! topology).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Dir, NodeProcess, free_tcp, free_udp, metric, wait_metrics};
use loopix_core::network::link::{LINK_OVERHEAD, Links};
use loopix_core::network::topology::Topology;
use loopix_crypto::{Command, Hop, KeyPhase, NodeId, Params, PublicKey, build};
use loopix_runtime::key_file::read_session_key;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

struct Rig {
    _dir: Dir,
    node: Option<NodeProcess>,
    mix: SocketAddr,
    /// The provider's socket and links: what layer 1 takes packets from.
    provider: UdpSocket,
    links: Links,
    metrics: SocketAddr,
    sink: std::sync::mpsc::Receiver<Vec<u8>>,
    keys: [PublicKey; 3],
    /// Each node's published keys of epoch 1.
    next_keys: [PublicKey; 3],
    /// When epoch 0 started, unix s.
    epoch_start: u64,
}

fn pk(hex_text: &str) -> PublicKey {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut b).unwrap();
    PublicKey::from_bytes(b).unwrap()
}

/// Mix 1 (2 shards) relays to mix 2, whose address is a socket of this test.
fn rig(name: &str) -> Rig {
    rig_with(name, "")
}

/// [`rig`] with more `[network]` lines (e.g. the epoch schedule).
fn rig_with(name: &str, network: &str) -> Rig {
    let dir = Dir::new(name);
    let keys = ["m1.key", "m2.key", "p.key"].map(|k| dir.node_keygen(k));
    let sink_socket = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(4 << 20).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        UdpSocket::from(s)
    };
    let (mix, metrics) = (free_udp(), free_tcp());
    let provider = UdpSocket::bind("127.0.0.1:0").unwrap();
    let epoch_start = common::now_s();
    let topology = format!(
        "[network]\nlayers = 2\nmu_per_s = 10.0\nlambda_payload_per_s = 0.0\nlambda_loop_per_s = 0.0\n\
         lambda_drop_per_s = 0.0\nlambda_mix_loop_per_s = 0.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\
         epoch_start = {}\n{network}\n\
         [[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"{mix}\"\n{}\n\
         [[nodes]]\nid = 2\nrole = \"mix\"\nlayer = 2\naddress = \"{}\"\n{}\n\
         [[nodes]]\nid = 1000\nrole = \"provider\"\naddress = \"{}\"\n{}",
        epoch_start,
        keys[0].0,
        sink_socket.local_addr().unwrap(),
        keys[1].0,
        provider.local_addr().unwrap(),
        keys[2].0
    );
    dir.write("topology.toml", &topology);
    let session = read_session_key(&dir.path("p.key")).unwrap().unwrap();
    let parsed = Topology::from_toml(&topology).unwrap();
    let links = Links::new(&parsed, NodeId(1_000), &session, 0).unwrap();
    dir.write(
        "mix.toml",
        &format!("topology = \"topology.toml\"\nid = 1\nkey_file = \"m1.key\"\nshards = 2\nmetrics = \"{metrics}\"\n[limits]\nmax_packets_per_s = 2000\n"),
    );
    let node = start_node(&dir, metrics);
    let (tx, sink) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = sink_socket.recv(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    Rig {
        _dir: dir,
        node: Some(node),
        mix,
        provider,
        links,
        metrics,
        sink,
        epoch_start,
        next_keys: keys
            .clone()
            .map(|k| pk(k.0.split('"').nth(3).expect("a second key"))),
        keys: keys.map(|k| pk(&k.1)),
    }
}

/// Starts the mix of `dir` and waits until both its shards report.
fn start_node(dir: &Dir, metrics: SocketAddr) -> NodeProcess {
    let node = NodeProcess::start(&dir.path("mix.toml"), &dir.path("mix.log"));
    assert!(
        wait_metrics(metrics, Duration::from_secs(10), |t| t
            .contains("shard=\"1\""))
        .is_some(),
        "the mix started: {}",
        std::fs::read_to_string(dir.path("mix.log")).unwrap_or_default()
    );
    node
}

impl Rig {
    /// Sends `packet` from the provider over its link to the mix (a fresh trailer each
    /// time).
    fn send(&mut self, packet: &[u8]) {
        let d = self.sealed(packet);
        self.provider.send_to(&d, self.mix).unwrap();
    }

    fn sealed(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut d = packet.to_vec();
        d.resize(packet.len() + LINK_OVERHEAD, 0);
        let now = loopix_runtime::clock::NetworkClock::start().now_us();
        self.links.seal(now, NodeId(1), &mut d).unwrap();
        d
    }

    fn packet(&self, seed: u64) -> Vec<u8> {
        self.packet_under(&self.keys, KeyPhase::Even, seed)
    }

    /// A packet under `keys`, all of one epoch whose parity is `phase`.
    fn packet_under(&self, keys: &[PublicKey; 3], phase: KeyPhase, seed: u64) -> Vec<u8> {
        let mut path = [
            Hop::new(
                keys[0],
                Command::Relay {
                    next: NodeId(2),
                    delay_us: 1_000,
                },
            ),
            Hop::new(
                keys[1],
                Command::Relay {
                    next: NodeId(1_000),
                    delay_us: 0,
                },
            ),
            Hop::new(keys[2], Command::Drop),
        ];
        for hop in &mut path {
            hop.phase = phase;
        }
        build(
            &Params::default(),
            &path,
            b"",
            &mut ChaCha20Rng::seed_from_u64(seed),
        )
        .unwrap()
    }

    /// Datagrams the next hop got within 5 s (stopping early at `n`), plus any that come
    /// within 100 ms after.
    fn forwarded(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if self.sink.recv_timeout(left).is_err() {
                break;
            }
            got += 1;
        }
        got + self.sink.try_iter().count()
    }

    /// The node's metrics once its shards together have received `n` datagrams.
    fn metrics_after(&self, n: u64) -> String {
        let seen = |t: &str| {
            metric(t, "loopix_packets_in_total") >= n && metric(t, "loopix_pool_packets") == 0
        };
        wait_metrics(self.metrics, Duration::from_secs(10), seen)
            .expect("the node accounts for every datagram")
    }

    fn stop(&mut self) {
        assert!(self.node.take().unwrap().terminate(), "exit 0 on SIGTERM");
    }
}

/// `loopix_packets_dropped_total` for one reason, over all shards.
fn dropped(text: &str, reason: &str) -> u64 {
    let tag = format!("reason=\"{reason}\"}}");
    text.lines()
        .filter(|l| l.starts_with("loopix_packets_dropped_total{") && l.contains(&tag))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn both_shards_work_and_the_counters_add_up() {
    let mut rig = rig("mix-shards");
    let packets: Vec<Vec<u8>> = (0..300).map(|i| rig.packet(i)).collect();
    for p in &packets {
        rig.send(p);
    }
    assert_eq!(rig.forwarded(300), 300);
    let m = rig.metrics_after(300);
    for shard in ["0", "1"] {
        let line = format!("loopix_packets_in_total{{shard=\"{shard}\"}} ");
        let n: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse().ok())
            .unwrap();
        assert!(n > 50.0, "shard {shard} processed {n}");
    }
    let (inn, out) = (
        metric(&m, "loopix_packets_in_total"),
        metric(&m, "loopix_packets_out_total"),
    );
    let drops = metric(&m, "loopix_packets_dropped_total");
    assert_eq!(
        (inn, out, drops),
        (300, 300, 0),
        "in = out + drops + pending (0)"
    );
    assert_eq!(metric(&m, "loopix_kernel_drops_total"), 0, "{m}");
    assert!(m.contains("loopix_kernel_drops_total{shard=\"1\"}"));
    assert_eq!(metric(&m, "loopix_socket_errors_total"), 0, "{m}");
    assert!(m.contains("loopix_socket_errors_total{shard=\"0\",op=\"send\"}"));
    // The lane kernel was chosen by a measurement at start: every kernel this CPU runs is
    // listed with its cost, exactly one of them chosen, the one the build info names.
    let kernels: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("loopix_lane_kernel_seconds_per_packet{"))
        .collect();
    assert!(!kernels.is_empty(), "{m}");
    let chosen: Vec<&&str> = kernels
        .iter()
        .filter(|l| l.contains("chosen=\"true\""))
        .collect();
    assert_eq!(chosen.len(), 1, "{kernels:?}");
    let name = chosen[0].split('"').nth(1).unwrap();
    assert!(m.contains(&format!("kernel=\"{name}\",backend=")), "{m}");
    assert!(
        kernels
            .iter()
            .all(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.0)
    );
    // The provider's link in is alive: heard within the last minute.
    let heard = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("loopix_link_last_heard_timestamp_seconds{neighbour=\"1000\"} ")
        })
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the provider's link is reported");
    assert!(heard + 60 >= common::now_s(), "heard at {heard}");
    assert!(m.contains("loopix_links_silent 0\n"), "{m}");
    rig.stop();
}

/// The same packet under two link trailers (the node's replay filter refuses the second),
/// one datagram sent twice (its link's window refuses it), and a sealed datagram from a port
/// that is no node's (a forged source): forwarded once, each of the rest counted.
#[test]
fn a_packet_sent_again_or_from_a_stranger_is_forwarded_once() {
    let mut rig = rig("mix-replay");
    let p = rig.packet(7);
    rig.send(&p);
    rig.send(&p);
    let d = rig.sealed(&rig.packet(8));
    rig.provider.send_to(&d, rig.mix).unwrap();
    rig.provider.send_to(&d, rig.mix).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .send_to(&rig.sealed(&rig.packet(9)), rig.mix)
        .unwrap();
    assert_eq!(rig.forwarded(2), 2);
    let m = rig.metrics_after(5);
    assert_eq!(
        (
            metric(&m, "loopix_packets_out_total"),
            dropped(&m, "replay"),
            dropped(&m, "link_replay"),
            dropped(&m, "unknown_peer")
        ),
        (2, 1, 1, 1)
    );
    rig.stop();
}

#[test]
fn random_datagrams_are_counted_and_valid_traffic_still_flows() {
    let mut rig = rig("mix-garbage");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for burst in 1..=20u64 {
        for _ in 0..500 {
            let mut d = vec![0u8; 1 + (rng.next_u64() % 3_000) as usize];
            rng.fill_bytes(&mut d);
            rig.provider.send_to(&d, rig.mix).unwrap();
        }
        rig.metrics_after(burst * 500); // paced, so no kernel buffer overflows
    }
    let m = rig.metrics_after(10_000);
    // Garbage from the provider's own address: wrong lengths, or a link tag that does not
    // verify; none reaches the unwrap.
    assert_eq!(
        dropped(&m, "malformed") + dropped(&m, "link_auth") + dropped(&m, "link_replay"),
        10_000
    );
    assert_eq!(metric(&m, "loopix_packets_dropped_total"), 10_000);
    assert_eq!(metric(&m, "loopix_packets_out_total"), 0);
    for i in 0..50 {
        let p = rig.packet(100 + i);
        rig.send(&p);
    }
    assert_eq!(rig.forwarded(50), 50);
    rig.stop();
}

/// A packet forwarded before the node is killed with SIGKILL stays refused after it starts
/// again (its tag was journaled before it left), and after a SIGHUP with the same key.
#[test]
fn a_replay_is_refused_after_a_sigkill_and_restart_and_after_a_sighup() {
    let mut rig = rig("mix-restart");
    let (p, fresh) = (rig.packet(11), rig.packet(12));
    rig.send(&p);
    assert_eq!(rig.forwarded(1), 1);
    rig.node.take().unwrap().kill();

    rig.node = Some(start_node(&rig._dir, rig.metrics));
    rig.send(&p);
    rig.send(&fresh);
    assert_eq!(rig.forwarded(2), 1, "only the fresh packet");
    let m = rig.metrics_after(2);
    assert_eq!(
        (
            dropped(&m, "replay"),
            metric(&m, "loopix_packets_out_total")
        ),
        (1, 1)
    );

    let epoch = |m: &str| -> String {
        m.lines()
            .find(|l| l.starts_with("loopix_epoch "))
            .expect("the epoch gauge")
            .to_string()
    };
    let before = epoch(&m);
    rig.node.as_ref().unwrap().hangup();
    std::thread::sleep(Duration::from_millis(500));
    for q in [&p, &fresh] {
        rig.send(q);
    }
    assert_eq!(rig.forwarded(1), 0, "both are replays after the reload");
    let m = rig.metrics_after(4);
    assert_eq!(dropped(&m, "replay"), 3);
    assert_eq!(epoch(&m), before, "a reload does not move the epoch");

    // A reload of a broken topology is refused and changes nothing: the node forwards on.
    let topology = rig._dir.path("topology.toml");
    let good = std::fs::read_to_string(&topology).unwrap();
    std::fs::write(&topology, good.replace("layers = 2", "layers = 9")).unwrap();
    rig.node.as_ref().unwrap().hangup();
    std::thread::sleep(Duration::from_millis(500));
    let next = rig.packet(13);
    rig.send(&next);
    assert_eq!(
        rig.forwarded(1),
        1,
        "still forwarding after a refused reload"
    );
    let log = std::fs::read_to_string(rig._dir.path("mix.log")).unwrap_or_default();
    assert!(log.contains("reload refused"), "{log}");
    assert_eq!(epoch(&rig.metrics_after(5)), before);
    rig.stop();
}

/// With 10 s epochs the node changes keys by itself: epoch 1's packets pass once epoch 1's key
/// is in use, epoch 0's are refused once its grace is over, and the key file has moved past
/// epoch 0 (its key deleted).
#[test]
fn the_node_changes_keys_at_the_boundary_and_deletes_the_old_one() {
    let mut rig = rig_with("mix-epochs", "epoch_s = 10\nepoch_grace_s = 1\n");
    let seed_epoch = |rig: &Rig| {
        let text = std::fs::read_to_string(rig._dir.path("m1.key")).unwrap();
        text.lines().nth(1).unwrap().to_string()
    };
    assert_eq!(seed_epoch(&rig), "epoch 0");
    let first = rig.packet(1);
    rig.send(&first);
    assert_eq!(rig.forwarded(1), 1, "epoch 0's key now");
    // Epoch 1 runs from 10 s to 20 s after epoch_start; its key is in use from 9 s to 21 s,
    // epoch 0's until 11 s. Wait until 12 s.
    let at = std::time::UNIX_EPOCH + Duration::from_secs(rig.epoch_start + 12);
    if let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
    let next = rig.next_keys;
    let (new, old) = (rig.packet_under(&next, KeyPhase::Odd, 2), rig.packet(3));
    rig.send(&new);
    rig.send(&old);
    assert_eq!(rig.forwarded(1), 1, "only epoch 1's packet");
    let m = rig.metrics_after(3);
    assert_eq!(dropped(&m, "expired_key"), 1);
    let epoch: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("loopix_epoch ")?.parse().ok())
        .expect("the epoch gauge");
    assert!(epoch >= 1.0, "the node moved on: epoch {epoch}");
    assert_ne!(
        seed_epoch(&rig),
        "epoch 0",
        "epoch 0's key is gone from the file"
    );
    rig.stop();
}

/// A second `loopix node` for the same node (same key) refuses to start while the first
/// runs, naming it; the first keeps forwarding.
#[test]
fn a_second_copy_of_a_running_node_refuses_to_start() {
    let mut rig = rig("mix-twice");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopix"))
        .arg("node")
        .arg("--config")
        .arg(rig._dir.path("mix.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node 1 is already running (pid "), "{err}");

    // A copy of its folder (config, topology, key), elsewhere: the same identity, refused.
    let copy = common::Dir::new("mix-twice-copy");
    for f in ["mix.toml", "topology.toml", "m1.key"] {
        std::fs::copy(rig._dir.path(f), copy.path(f)).unwrap();
    }
    let run_copy = |config: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_loopix"))
            .arg("node")
            .arg("--config")
            .arg(copy.path(config))
            .output()
            .unwrap()
    };
    let out = run_copy("mix.toml");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node 1 is already running (pid "), "{err}");
    assert!(err.contains("node-1-"), "the host-wide lock: {err}");

    // Another node (the layer-2 mix's key and id) configured on this node's port: refused
    // before it binds, where SO_REUSEPORT would have let it share the port.
    std::fs::copy(rig._dir.path("m2.key"), copy.path("m2.key")).unwrap();
    std::fs::write(
        copy.path("other.toml"),
        format!(
            "topology = \"topology.toml\"\nid = 2\nkey_file = \"m2.key\"\nlisten = \"{}\"\n",
            rig.mix
        ),
    )
    .unwrap();
    let out = run_copy("other.toml");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is held by another process"), "{err}");

    // The first kept all of its traffic.
    let p = rig.packet(21);
    rig.send(&p);
    assert_eq!(rig.forwarded(1), 1);
    rig.stop();
}

/// `--check` says how much memory the node will keep resident: within 10 % of what the
/// node, once started with both shards up, reports for itself.
#[test]
fn the_memory_check_reports_is_what_the_node_holds() {
    let mut r = rig("memory");
    assert!(r.node.take().unwrap().terminate());
    let out = common::loopix()
        .args(["node", "--check", "--config"])
        .arg(r._dir.path("mix.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let predicted_mb: f64 = said
        .lines()
        .find_map(|l| l.strip_prefix("memory: about "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory figure: {said}"));
    r.node = Some(start_node(&r._dir, r.metrics));
    let text = common::scrape(r.metrics).unwrap_or_default();
    let rss_mb = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the node reports its resident memory")
        / 1e6;
    assert!(
        (predicted_mb - rss_mb).abs() <= 0.10 * rss_mb,
        "--check said {predicted_mb} MB, the node holds {rss_mb:.0} MB\n{said}"
    );
}
