//! End-to-end: a provider on two shards killed with SIGKILL and restarted still delivers
//! every message it had stored for an offline client (its inbox on the client's home
//! shard, the packets reaching either shard from the mix); meanwhile an outsider without
//! keys tries to pass as the mix or a client and draws nothing.

mod common;

use std::time::Duration;

use common::{Dir, NodeProcess, free_tcp, free_udp, loopix, metric, metric_labelled, wait_metrics};
use loopix_core::session::FrameLayout;
use loopix_crypto::{Params, SessionPublic};
use rand_core::{Rng, SeedableRng};

/// A mix and a provider (two shards, its `[faults]` these) with clients Alice (10000) and
/// Bob (10001), running.
struct Small {
    dir: Dir,
    _mix: NodeProcess,
    provider: NodeProcess,
    provider_addr: std::net::SocketAddr,
    provider_metrics: std::net::SocketAddr,
    provider_keys: String,
}

fn small_network(name: &str, provider_faults: &str) -> Small {
    let dir = Dir::new(name);
    let (mix_keys, provider_keys) = (
        dir.node_keygen("mix.key").0,
        dir.node_keygen("provider.key").0,
    );
    let epoch_start = common::now_s();
    let (alice_keys, bob_keys) = (dir.keygen("alice.key"), dir.keygen("bob.key"));
    let (mix_addr, provider_addr) = (free_udp(), free_udp());
    let (mix_metrics, provider_metrics) = (free_tcp(), free_tcp());
    dir.write(
        "topology.toml",
        &format!(
            r#"[network]
layers = 1
mu_per_s = 50.0
lambda_payload_per_s = 5.0
lambda_loop_per_s = 0.0
lambda_drop_per_s = 0.5
lambda_mix_loop_per_s = 0.0
poll_size = 4
poll_rate_per_s = 2.0
epoch_start = {epoch_start}

[[nodes]]
id = 1
role = "mix"
layer = 1
address = "{mix_addr}"
{mix_keys}
[[nodes]]
id = 1000
role = "provider"
address = "{provider_addr}"
{provider_keys}
[[clients]]
id = 10000
provider = 1000
{alice_keys}
[[clients]]
id = 10001
provider = 1000
{bob_keys}"#
        ),
    );
    let node = |id: u32, key: &str, metrics: std::net::SocketAddr, extra: &str| {
        format!(
            "topology = \"topology.toml\"\nid = {id}\nkey_file = \"{key}\"\nmetrics = \"{metrics}\"\n{extra}[limits]\nmax_packets_per_s = 2000\n"
        )
    };
    dir.write("mix.toml", &node(1, "mix.key", mix_metrics, ""));
    dir.write(
        "provider.toml",
        &(node(
            1000,
            "provider.key",
            provider_metrics,
            "inbox_path = \"inbox.redb\"\nshards = 2\n",
        ) + provider_faults),
    );
    let mix = NodeProcess::start(&dir.path("mix.toml"), &dir.path("mix.log"));
    let provider = NodeProcess::start(&dir.path("provider.toml"), &dir.path("provider-1.log"));
    let up = |addr| wait_metrics(addr, Duration::from_secs(10), |_| true).is_some();
    assert!(
        up(mix_metrics) && up(provider_metrics),
        "nodes did not start"
    );
    Small {
        dir,
        _mix: mix,
        provider,
        provider_addr,
        provider_metrics,
        provider_keys,
    }
}

/// `loopix client` as Alice (10000) or Bob (10001).
fn client(dir: &Dir, id: &str, key: &str) -> std::process::Command {
    let mut c = loopix();
    c.arg("client")
        .arg("--topology")
        .arg(dir.path("topology.toml"))
        .args(["--id", id, "--key"])
        .arg(dir.path(key));
    c
}

/// Alice sends `messages` to Bob, who is offline, until they are all sent.
fn alice_sends(dir: &Dir, messages: &[String]) {
    let mut alice = client(dir, "10000", "alice.key");
    alice.args(["--send-to", "10001"]);
    for m in messages {
        alice.args(["--message", m]);
    }
    let out = alice
        .args(["--until-sent", "--duration-s", "20"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("queued message").count(),
        messages.len(),
        "{log}"
    );
    assert_eq!(log.matches("sent message").count(), messages.len(), "{log}");
}

#[test]
fn a_killed_provider_keeps_every_stored_message() {
    let Small {
        dir,
        _mix,
        provider,
        provider_addr,
        provider_metrics,
        provider_keys,
    } = small_network("provider-restart", "");

    // An outsider with no keys tries, all the while Alice sends, to pass as the mix or as
    // a client: the old cleartext poll claiming the mix's id, made-up session frames, and
    // a real Noise handshake under a key of its own. None may draw a single byte.
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let provider_session = session_key_of(&provider_keys);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spoofer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let layout = FrameLayout::new(&Params::default(), 4);
            let mut claim = b"LXPR".to_vec();
            claim.extend_from_slice(&1u64.to_le_bytes());
            claim.extend_from_slice(&[0u8; 32]);
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
            let (mut sent, mut drawn) = (0u64, 0u64);
            let mut buf = [0u8; 65_536];
            // Until Alice is done, and at least 100 of each in all.
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || sent < 300 {
                let mut frame = vec![0u8; layout.frame_len()];
                rng.fill_bytes(&mut frame);
                let handshake = common::stranger_handshake(provider_session, layout, &mut rng);
                for d in [&claim, &frame, &handshake] {
                    attacker.send_to(d, provider_addr).unwrap();
                    sent += 1;
                }
                while let Ok(n) = attacker.recv(&mut buf) {
                    drawn += n as u64;
                }
            }
            (sent, drawn)
        })
    };

    // Mistakes are refused before anything is sent, with what is wrong.
    let refused = |args: &[&str]| {
        let out = loopix()
            .arg("client")
            .arg("--topology")
            .arg(dir.path("topology.toml"))
            .args(["--id", "10000", "--key"])
            .arg(dir.path("alice.key"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(refused(&["--message", "hi"]).contains("need --send-to"));
    let e = refused(&["--send-to", "424242", "--message", "hi"]);
    assert!(
        e.contains("--send-to 424242: not a client of the topology"),
        "{e}"
    );

    // Alice sends five messages to Bob, who is offline.
    let messages: Vec<String> = (1..=5).map(|i| format!("note {i} for bob")).collect();
    alice_sends(&dir, &messages);
    let stored = wait_metrics(provider_metrics, Duration::from_secs(10), |t| {
        metric(t, "loopix_inbox_packets") >= 5
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (spoofed, drawn) = spoofer.join().unwrap();
    assert!(spoofed >= 300, "{spoofed} spoofed datagrams");
    assert_eq!(drawn, 0, "bytes drawn by an outsider without keys");
    let scraped = common::scrape(provider_metrics).unwrap_or_default();
    let dropped = |reason: &str| {
        metric_labelled(
            &scraped,
            "loopix_packets_dropped_total",
            &format!("reason=\"{reason}\""),
        )
    };
    // Each counted under its reason (the last few may still be in flight when the spoofer
    // stops: it sends without pause, and a loaded machine reads them late).
    let third = spoofed / 3;
    assert!(dropped("malformed") + 20 >= third, "{scraped}");
    assert!(dropped("unauthenticated") + 40 >= 2 * third, "{scraped}");
    assert!(
        stored.is_some(),
        "the provider never stored the five messages\nprovider:\n{}\nmix:\n{}",
        common::scrape(provider_metrics).unwrap_or_default(),
        std::fs::read_to_string(dir.path("provider-1.log")).unwrap_or_default()
    );

    // SIGKILL: no shutdown, no flush. Then start it again on the same store.
    drop(provider);
    let provider = NodeProcess::start(&dir.path("provider.toml"), &dir.path("provider-2.log"));
    // Once both shards report, they count what the reopened store holds.
    let after = wait_metrics(provider_metrics, Duration::from_secs(10), |t| {
        t.contains("loopix_inbox_packets{shard=\"0\"}")
            && t.contains("loopix_inbox_packets{shard=\"1\"}")
    });
    let after = after.expect("the restarted provider reports");
    assert_eq!(
        metric(&after, "loopix_inbox_packets"),
        5,
        "stored messages survive SIGKILL"
    );

    // Bob comes online and gets all five, once each.
    let bob = loopix()
        .arg("client")
        .arg("--topology")
        .arg(dir.path("topology.toml"))
        .args(["--id", "10001", "--key"])
        .arg(dir.path("bob.key"))
        .args(["--until-received", "5", "--duration-s", "20", "--json"])
        .output()
        .unwrap();
    let bob_log = String::from_utf8_lossy(&bob.stderr);
    assert!(bob.status.success(), "{bob_log}");
    // He is told his backlog (five packets, four an answer) and when it is collected.
    assert!(
        bob_log.contains("client 10001: 1 packet(s) wait at its provider"),
        "{bob_log}"
    );
    assert!(
        bob_log.contains("its provider holds nothing more for it"),
        "{bob_log}"
    );
    let mut got: Vec<String> = String::from_utf8(bob.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, messages);
    // Bob acknowledged them before he exited: his next run receives none of them again.
    let again = loopix()
        .arg("client")
        .arg("--topology")
        .arg(dir.path("topology.toml"))
        .args(["--id", "10001", "--key"])
        .arg(dir.path("bob.key"))
        .args(["--until-received", "1", "--duration-s", "4", "--json"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "",
        "delivered twice: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Alice asks with a reply block; Bob answers through it, never learning where she is.
    let bob = client(&dir, "10001", "bob.key")
        .args([
            "--answer",
            "pong",
            "--until-received",
            "1",
            "--duration-s",
            "30",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let alice = client(&dir, "10000", "alice.key")
        .args([
            "--send-to",
            "10001",
            "--message",
            "ping",
            "--reply-blocks",
            "1",
        ])
        .args(["--until-received", "1", "--duration-s", "30", "--json"])
        .output()
        .unwrap();
    let bob = bob.wait_with_output().unwrap();
    let bob_log = String::from_utf8_lossy(&bob.stderr);
    assert!(bob.status.success(), "{bob_log}");
    assert!(bob_log.contains("answered message"), "{bob_log}");
    let answer: serde_json::Value = serde_json::from_slice(&alice.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&alice.stderr)));
    assert_eq!(answer["message"], "pong", "{answer}");
    assert!(provider.terminate(), "provider exits 0 on SIGTERM");
}

/// A disk whose every commit takes a second: the provider's shards go on forwarding and
/// releasing on time (the store's writer waits, not they), and the messages are stored
/// once their commits are through.
#[test]
fn a_slow_disk_does_not_delay_what_the_provider_forwards() {
    let net = small_network(
        "provider-stall",
        "\n[faults]\nstore_commit_delay_ms = 1000\n",
    );
    let messages: Vec<String> = (1..=5).map(|i| format!("stalled {i}")).collect();
    alice_sends(&net.dir, &messages);
    let stored = wait_metrics(net.provider_metrics, Duration::from_secs(20), |t| {
        metric(t, "loopix_inbox_packets") >= 5
    });
    let t = stored.expect("the five messages were stored, a second a commit");
    let value = |name: &str| -> f64 {
        t.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with(&format!("{name}_")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    assert!(value("loopix_store_commit_max_seconds") >= 1.0, "{t}");
    // The shards never waited on it: far below one commit.
    let blocked = t
        .lines()
        .filter(|l| {
            l.starts_with("loopix_shard_max_block_seconds{") && l.contains("cause=\"store\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(f64::NAN, f64::max);
    assert!(!blocked.is_nan(), "a store block figure per shard: {t}");
    assert!(blocked < 0.1, "a shard waited {blocked} s\n{t}");
    // Every packet released (Alice's forwarded to the mix, Bob's stored) left within
    // 100 ms of its due time, though every commit took a second.
    let bucket = |le: &str| value(&format!("loopix_delay_error_seconds_bucket{{le=\"{le}\"}}"));
    let released = bucket("+Inf");
    assert!(released >= 10.0, "{t}");
    assert_eq!(bucket("0.1"), released, "released late: {t}");
    assert!(net.provider.terminate(), "provider exits 0 on SIGTERM");
}

/// The `session_key` a node's keygen lines publish.
fn session_key_of(lines: &str) -> SessionPublic {
    let hex = lines
        .lines()
        .find_map(|l| l.strip_prefix("session_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a session_key line");
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex, &mut key).unwrap();
    SessionPublic(key)
}
