//! End-to-end: `loopix testnet` starts real `loopix node` processes on 127.0.0.1 and real
//! clients, and every real message arrives exactly once, while an outsider with no keys
//! tries to pass as a mix, a client, or a node: it draws not one byte.
//!
//! Built and run as an integration test of the `loopix-tools` package (which owns the
//! binary), from this directory: see `tools/Cargo.toml`.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use loopix_core::network::link::LINK_OVERHEAD;
use loopix_core::network::topology::{Role, Topology};
use loopix_core::pipeline::steering::home_shard;
use loopix_core::session::FrameLayout;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Drop reasons an outsider's datagrams are counted under; honest traffic has none.
const ATTACK_REASONS: [&str; 5] = [
    "malformed",
    "unauthenticated",
    "unknown_peer",
    "link_auth",
    "handshake_mac",
];

/// One testnet at a time: two whole networks at once would saturate a small machine.
static ONE_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_twenty_second_testnet_delivers_every_message_exactly_once() {
    let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("loopix-e2e-testnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            // Two shards a node: a mix's loops come back to the shard that sent them, a
            // provider's clients each live on their home shard.
            "--shards",
            "2",
            "--duration-s",
            "20",
            "--drain-s",
            "20",
            "--json",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loopix runs");
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || outsider(&dir, &stop))
    };
    let out = child.wait_with_output().expect("loopix runs");
    stop.store(true, Ordering::SeqCst);
    let (sent_by_attacker, drawn) = attacker.join().unwrap();
    assert!(
        sent_by_attacker >= 300,
        "{sent_by_attacker} datagrams tried"
    );
    assert_eq!(drawn, 0, "bytes an outsider without keys drew");
    // 10 clients for 20 s at one message per ~2 s.
    let (v, _) = common::delivered_once(&out, 40);
    assert_eq!(
        (v["in_flight_real"].as_u64(), v["unsent_real"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Ten clients keep their timers: the run reports how late they fired.
    assert!(v["client_timer_lag_max_ms"].as_f64().is_some(), "{v:#}");
    assert!(v["client_timers_late"].as_u64().is_some());
    assert_eq!(
        (
            v["client_send_errors"].as_u64(),
            v["client_recv_errors"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // Mix loops came back, and their round trip beyond the requested delays (routing,
    // processing, loopback links) is positive and far below the mixing delays.
    let overhead = v["loop_overhead_ms"].as_f64().expect("mix loops returned");
    assert!(
        overhead > 0.0 && overhead < 50.0,
        "loop overhead {overhead} ms"
    );
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8, "3 layers x 2 mixes + 2 providers");
    let mut refused = std::collections::BTreeMap::new();
    for n in nodes {
        assert!(n["packets_in"].as_u64().unwrap() > 0, "{n}");
        if n["role"].as_str().unwrap().starts_with("mix") {
            let f = n["loop_return_fraction"]
                .as_f64()
                .expect("mixes judge their loops");
            assert!(f >= 0.9, "loops lost on a healthy network: {n}");
        }
        assert_eq!(n["exit_ok"], true, "node exited 0 on SIGTERM: {n}");
        for (reason, count) in n["drops"].as_object().unwrap() {
            assert!(
                ATTACK_REASONS.contains(&reason.as_str()),
                "honest traffic dropped: {n}"
            );
            *refused.entry(reason.clone()).or_insert(0) += count.as_u64().unwrap();
        }
    }
    // Each kind of attempt was seen and counted under its reason (exact counts are the
    // simulation's to check: here some arrive before the nodes bind or after they stop).
    for reason in ["malformed", "unauthenticated", "unknown_peer"] {
        assert!(refused.get(reason).is_some_and(|&n| n > 0), "{refused:?}");
    }
    // Every provider's sessions started on its clients' home shards, and on no other.
    let topology = std::fs::read_to_string(dir.join("topology.toml")).unwrap();
    let topology = Topology::from_toml(&topology).unwrap();
    let mut both_serving = 0;
    for p in topology.providers() {
        let n = nodes.iter().find(|n| n["id"] == p.id.0).unwrap();
        let started = &n["sessions_by_shard"];
        let mut serving = 0;
        for shard in 0..2 {
            let homed = topology
                .clients_of(p.id)
                .filter(|c| home_shard(c.id, 2) == shard)
                .count();
            let sessions = started[shard.to_string()].as_u64().unwrap_or(0);
            assert_eq!(
                homed > 0,
                sessions > 0,
                "provider {}: shard {shard}: {n}",
                p.id.0
            );
            serving += usize::from(sessions > 0);
        }
        both_serving += usize::from(serving == 2);
    }
    assert!(both_serving > 0, "a provider served clients on both shards");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Until `stop`, against the testnet in `dir` once its topology is written: sends each
/// provider the old cleartext poll claiming a layer-1 mix's id, a client's id and a made-up
/// one, a made-up session frame, and a real handshake under a key of its own; sends each
/// layer-1 mix a link-sized datagram as if from a provider. Returns (datagrams sent, bytes
/// that came back).
fn outsider(dir: &std::path::Path, stop: &AtomicBool) -> (u64, u64) {
    let path = dir.join("topology.toml");
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&path)
            && let Ok(parsed) = Topology::from_toml(&t)
        {
            break parsed;
        }
        if stop.load(Ordering::SeqCst) {
            return (0, 0);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let t = text;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let layout = FrameLayout::new(&t.network.params, t.network.poll_size);
    let link_len = t.network.params.packet_len() + LINK_OVERHEAD;
    let mix = t.mixes_in_layer(1).next().unwrap().id;
    let client = t.clients[0].id;
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let (mut sent, mut drawn) = (0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::SeqCst) {
        for node in &t.nodes {
            let mut datagrams = Vec::new();
            match node.role {
                Role::Provider => {
                    for claimed in [mix, client, loopix_crypto::NodeId(424_242)] {
                        let mut poll = b"LXPR".to_vec();
                        poll.extend_from_slice(&claimed.0.to_le_bytes());
                        poll.extend_from_slice(&[0u8; 32]);
                        datagrams.push(poll);
                    }
                    let mut frame = vec![0u8; layout.frame_len()];
                    rng.fill_bytes(&mut frame);
                    datagrams.push(frame);
                    let key = node.session_key.unwrap();
                    datagrams.push(common::stranger_handshake(key, layout, &mut rng));
                }
                Role::Mix { layer: 1 } => {
                    let mut d = vec![0u8; link_len];
                    rng.fill_bytes(&mut d);
                    datagrams.push(d);
                }
                Role::Mix { .. } => {}
            }
            for d in datagrams {
                if socket.send_to(&d, node.address).is_ok() {
                    sent += 1;
                }
            }
        }
        while let Ok(n) = socket.recv(&mut buf) {
            drawn += n as u64;
        }
        std::thread::sleep(Duration::from_millis(80));
    }
    (sent, drawn)
}

/// 5 % of every node's datagrams dropped and a layer-1 mix killed and restarted mid-run:
/// acknowledgements and retransmission still bring every real message exactly once, and
/// none is given up. Each node counts what it dropped on purpose (about
/// 5 % of what it sent) and the mix's restart is reported.
#[test]
fn with_injected_loss_and_a_killed_mix_no_message_is_lost() {
    let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--duration-s",
            "8",
            "--drain-s",
            "90",
            "--link-loss",
            "0.05",
            "--kill-mix-after-s",
            "3",
            "--json",
        ])
        .output()
        .expect("loopix runs");
    let (v, stderr) = common::delivered_once(&out, 10);
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(n("gave_up_real"), 0, "{v:#}");
    // Acks lost on the way are resent on the sender's backoff, minutes at worst: those
    // still out at the end are neither lost nor given up.
    assert!(
        n("acked_real") > 0 && n("acked_real") <= n("sent_real"),
        "{v:#}"
    );
    assert!(n("retransmitted") > 0, "the loss cost resends: {v:#}");
    assert!(
        stderr.contains("killed mix 1 and started it again"),
        "{stderr}"
    );
    for node in v["nodes"].as_array().unwrap() {
        let (dropped, sent) = (
            node["fault_drops"].as_u64().unwrap(),
            node["packets_out"].as_u64().unwrap(),
        );
        assert!(dropped > 0, "{node}");
        // A mix's out counts every datagram it sends (a provider's leaves out its session
        // frames); the restarted mix's counters are its second process's.
        if node["role"].as_str().unwrap().starts_with("mix") {
            let share = dropped as f64 / (dropped + sent) as f64;
            assert!((0.01..0.12).contains(&share), "{share} dropped: {node}");
        }
        let restarts = u64::from(node["id"] == 1);
        assert_eq!(node["restarts"].as_u64(), Some(restarts), "{node}");
    }
}

/// Nodes and clients get everything from two `loopix directory` authorities and require
/// both signatures on every document: no topology file exists; nodes upload their signed
/// keys to both, each authority adds the other's signature, and with
/// 8 s epochs the run crosses at least two boundaries (each a new document and new keys
/// for every hop), delivering every message exactly once. Mix loops, built from each
/// mix's own document, keep working after the first document's keys run out.
#[test]
fn a_testnet_run_from_the_directory_crosses_epochs_and_delivers_everything_once() {
    let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--directory",
            "--authorities",
            "2",
            "--epoch-s",
            "8",
            "--duration-s",
            "20",
            "--drain-s",
            "40",
            "--json",
        ])
        .output()
        .expect("loopix runs");
    let (v, _) = common::delivered_once(&out, 20);
    let n = |k: &str| v[k].as_u64().unwrap();
    let dir = std::path::Path::new(v["dir"].as_str().unwrap());
    assert!(
        !dir.join("topology.toml").exists(),
        "no topology file handed out"
    );
    assert!(
        n("documents_switched") >= 2,
        "two boundaries crossed: {v:#}"
    );
    for node in v["nodes"].as_array().unwrap() {
        assert!(node["exit_ok"].as_bool().unwrap(), "{node}");
        assert!(node["document_epoch"].as_u64().unwrap() >= 2, "{node}");
        assert_eq!(node["drops"], serde_json::json!({}), "{node}");
        assert_eq!(node["loops_failed"].as_u64(), Some(0), "{node}");
        if node["role"].as_str().unwrap().starts_with("mix") {
            let back = node["loop_return_fraction"].as_f64().unwrap_or(0.0);
            assert!(back >= 0.9, "{node}");
        }
        // Every link in is alive, and the last document was fetched this run.
        assert_eq!(node["links_silent"].as_u64(), Some(0), "{node}");
        assert!(
            node["last_fetch_s"].as_u64().unwrap() + 120 >= common::now_s(),
            "{node}"
        );
    }
}

/// One testnet with a flood of handshake-shaped junk at 20,000 frames/s, at the first
/// provider or (the control) at a closed port on the same host: its summary.
fn flooded_testnet(at: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--duration-s",
            "15",
            "--drain-s",
            "20",
            "--flood-handshakes-per-s",
            "20000",
            "--flood-at",
            at,
            "--json",
        ])
        .output()
        .expect("loopix runs");
    common::delivered_once(&out, 30).0
}

/// A flood of junk initiations at a provider costs it one BLAKE2s a frame (mac1), not a
/// Diffie-Hellman: every message still arrives once, the flood's frames are counted as
/// refused by mac1, and end-to-end latency stays near a control run whose flood costs the
/// machine the same sending but goes elsewhere. (Before mac1, the same flood made each
/// frame an X25519 and latency five times longer.) The median must stay within 1.5x; the
/// 99th percentile of ~70 messages is the second largest of a long-tailed sample, too
/// noisy on a shared two-core machine for 1.5x, so here it must stay within 2.5x
/// (`perf/handshake_flood.sh` compares both over longer runs).
#[test]
fn a_handshake_flood_at_a_provider_is_refused_without_a_dh_and_costs_no_latency() {
    let _one = ONE_NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let attacked = flooded_testnet("provider");
    let control = flooded_testnet("elsewhere");
    let refused = |v: &serde_json::Value| -> u64 {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["drops"]["handshake_mac"].as_u64().unwrap_or(0))
            .sum()
    };
    let sent = attacked["flood"]["sent"].as_u64().unwrap();
    assert!(sent > 200_000, "{:#}", attacked["flood"]);
    // Frames that reached the provider while it ran were refused by mac1 (some arrive
    // before it binds or after it stops, and the kernel may drop some at a full buffer).
    assert!(
        refused(&attacked) as f64 >= 0.9 * sent as f64,
        "{} of {sent} refused by mac1",
        refused(&attacked)
    );
    assert_eq!(refused(&control), 0);
    for node in attacked["nodes"].as_array().unwrap() {
        assert_eq!(
            node["drops"]["unauthenticated"].as_u64().unwrap_or(0),
            0,
            "{node}"
        );
    }
    let ms = |v: &serde_json::Value, q: &str| v["latency_ms"][q].as_f64().unwrap();
    let (p50, p99) = (ms(&attacked, "p50"), ms(&attacked, "p99"));
    let (c50, c99) = (ms(&control, "p50"), ms(&control, "p99"));
    eprintln!(
        "flood at the provider: p50 {p50:.0} ms, p99 {p99:.0} ms; control: p50 {c50:.0} ms, p99 {c99:.0} ms"
    );
    assert!(p50 <= 1.5 * c50, "p50 {p50:.0} ms against {c50:.0} ms");
    assert!(p99 <= 2.5 * c99, "p99 {p99:.0} ms against {c99:.0} ms");
}
