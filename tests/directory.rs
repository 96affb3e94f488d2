//! The directory authority as a real process: operators register nodes through the CLI,
//! nodes' signed key uploads are taken over HTTP and forged, replayed or oversized ones
//! refused, the published document verifies under the authority's key, and a node told
//! to trust another key refuses the document with a clear error.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loopix_core::network::topology::Topology;
use loopix_core::pki::document::{Threshold, Trust, verify};
use loopix_core::pki::key_upload::{KeyUpload, MAX_UPLOAD_BYTES};
use loopix_core::pki::registry::registry_toml;
use loopix_crypto::{IdentityPublic, IdentitySecret, NodeId};
use loopix_sim::network::{Generated, NetworkSpec, generate_at};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn loopix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(args)
        .output()
        .expect("loopix runs")
}

/// One HTTP/1.1 request; returns the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("authority answers");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

struct Authority(Child);

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A fresh scratch folder for test `name` and an authority initialised in its `authority`
/// subfolder (a key of mode 0600 and a registry skeleton): the folder, the authority's
/// folder and the authority key it printed.
fn init_authority(name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("loopix-directory-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let adir = dir.join("authority");
    let out = loopix(&["directory", "init", "--dir", adir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let key_hex = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("authority key: "))
        .expect("the key is printed")
        .to_string();
    (dir, adir, key_hex)
}

fn serve(dir: &Path, listen: &str) -> Authority {
    let child = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(["directory", "serve", "--dir"])
        .arg(dir)
        .args(["--listen", listen, "--bootstrap-wait-s", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("authority starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "authority did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Authority(child)
}

/// A small network (one mix, one provider, two clients) and its nodes' identities.
struct Network {
    topology: Topology,
    keys: loopix_sim::network::Keys,
    identities: BTreeMap<NodeId, IdentitySecret>,
    rng: ChaCha20Rng,
}

/// Writes the registry of a small network into the authority's folder `adir`.
fn register_network(adir: &Path) -> Network {
    register_network_with_epochs(adir, 1200, 0)
}

/// [`register_network`] with epochs of `epoch_s` (a twentieth of it the grace) from unix
/// second `epoch_start_s`.
fn register_network_with_epochs(adir: &Path, epoch_s: u64, epoch_start_s: u64) -> Network {
    // A small network, registered whole (what register-node/-client append, at once).
    let spec = NetworkSpec {
        layers: 1,
        mixes_per_layer: 1,
        providers: 1,
        clients: 2,
        epoch_start_s,
        epoch_s,
        epoch_grace_s: (epoch_s / 20).max(1),
        first_epoch: 0,
        published_epochs: 1,
        ..NetworkSpec::default()
    };
    let Generated { topology, keys } = generate_at(&spec, 7, |id| {
        std::net::SocketAddr::from(([127, 0, 0, 1], 30_000 + id.0 as u16))
    })
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let identities: BTreeMap<NodeId, IdentitySecret> = topology
        .nodes
        .iter()
        .map(|n| (n.id, IdentitySecret::generate(&mut rng)))
        .collect();
    let publics: BTreeMap<NodeId, IdentityPublic> =
        identities.iter().map(|(&id, k)| (id, k.public())).collect();
    std::fs::write(
        adir.join("registry.toml"),
        registry_toml(&topology, &publics),
    )
    .unwrap();

    Network {
        topology,
        keys,
        identities,
        rng,
    }
}

#[test]
fn uploads_are_checked_and_documents_verify_only_under_the_authoritys_key() {
    // init: a key (mode 0600) and a registry skeleton.
    let (dir, adir, key_hex) = init_authority("e2e");
    // register-node refuses an invalid entry and leaves the registry as it was.
    let before = std::fs::read_to_string(adir.join("registry.toml")).unwrap();
    let bad = loopix(&[
        "directory",
        "register-node",
        "--dir",
        adir.to_str().unwrap(),
        "--id",
        "1",
        "--role",
        "mix",
        "--layer",
        "9",
        "--address",
        "127.0.0.1:1",
        "--identity-key",
        &key_hex,
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nodes[0].layer"),
        "{bad:?}"
    );
    assert_eq!(
        std::fs::read_to_string(adir.join("registry.toml")).unwrap(),
        before
    );

    let Network {
        topology,
        keys,
        identities,
        mut rng,
    } = register_network(&adir);
    let listen = free_port();
    let _authority = serve(&adir, &listen);

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let epoch = now_s / 1200;
    let upload = |id: NodeId, issued: u64, signer: &IdentitySecret| {
        KeyUpload::from_seed(
            id,
            issued,
            keys.sessions[&id].public(),
            &keys.nodes[&id],
            epoch,
            3,
        )
        .sign(signer)
    };
    let mix = topology.nodes[0].id;
    let provider = topology.nodes[1].id;
    // Forged: the mix's keys signed by the provider's identity.
    let (status, why) = http(
        &listen,
        "POST",
        "/keys",
        upload(mix, now_s, &identities[&provider]).as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&why).contains("not signed by node"),
        "{why:?}"
    );
    // Oversized: refused on its announced length, unread.
    let (status, _) = http(&listen, "POST", "/keys", &vec![b'k'; MAX_UPLOAD_BYTES + 10]);
    assert_eq!(status, 413);
    // A check of it keeps nothing and says the same.
    let (status, why) = http(
        &listen,
        "POST",
        "/keys/check",
        upload(mix, now_s, &identities[&provider]).as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&why).contains("not signed by node"),
        "{why:?}"
    );
    // Honest; the same bytes again change nothing; an older upload is a replay.
    let honest = upload(mix, now_s, &identities[&mix]);
    assert_eq!(
        http(&listen, "POST", "/keys/check", honest.as_bytes()).0,
        200
    );
    assert_eq!(http(&listen, "POST", "/keys", honest.as_bytes()).0, 200);
    assert_eq!(http(&listen, "POST", "/keys", honest.as_bytes()).0, 200);
    let older = upload(mix, now_s - 1, &identities[&mix]);
    let (status, why) = http(&listen, "POST", "/keys", older.as_bytes());
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&why).contains("not after the upload held"),
        "{why:?}"
    );
    // No document while the provider's keys are missing (the bootstrap wait is long), and
    // the operator can ask why.
    assert_eq!(http(&listen, "GET", "/document", b"").0, 404);
    let status = loopix(&[
        "directory",
        "status",
        "--authority",
        &format!("{key_hex}@{listen}"),
    ]);
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    // The status starts at the authority's current epoch: the one this test began in, or
    // the next if a boundary passed since (epochs are 20 minutes of the wall clock).
    let now_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 1200;
    assert!(
        (epoch..=now_epoch).any(|e| report.contains(&format!(
            "epoch {e}: not published yet: waiting for keys of node(s) {}",
            provider.0
        ))),
        "{report}"
    );
    assert!(
        report.contains(&format!("node {} (mix, layer 1, ", mix.0))
            && report.contains(&format!("keys for epochs {epoch}..={}", epoch + 2)),
        "{report}"
    );
    assert!(
        report.contains(&format!("node {} (provider, ", provider.0))
            && report.contains("no keys uploaded"),
        "{report}"
    );
    assert_eq!(
        http(
            &listen,
            "POST",
            "/keys",
            upload(provider, now_s, &identities[&provider]).as_bytes()
        )
        .0,
        200
    );
    // Every node uploaded: the document is published at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let document = loop {
        let (status, body) = http(&listen, "GET", "/document", b"");
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "no document");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(&key_hex, &mut key).unwrap();
    let authority_key = IdentityPublic::from_bytes(key).unwrap();
    let now_us = now_s * 1_000_000;
    let d = verify(
        &document,
        &Trust::new(vec![authority_key], Threshold::AtLeast(1)).unwrap(),
        Some(epoch),
        now_us,
    )
    .expect("the document verifies under the printed key");
    assert_eq!(d.topology.nodes.len(), 2);
    assert_eq!(
        d.topology.node(mix).unwrap().epoch_keys.get(epoch),
        Some(keys.nodes[&mix].secret_key(epoch).unwrap().public_key())
    );
    assert_eq!(
        http(&listen, "GET", &format!("/document/{epoch}"), b"").1,
        document
    );

    // A node whose configuration trusts another authority key refuses the document.
    let node_key = dir.join("node.key");
    loopix_runtime::key_file::write_seed(
        &node_key,
        &keys.nodes[&mix],
        &keys.sessions[&mix],
        Some(&identities[&mix]),
    )
    .unwrap();
    // `directory` is the node's [directory] section after its `authorities` line.
    let check = |authorities: &[&str], directory: &str| {
        let config = dir.join("node.toml");
        let list: Vec<String> = authorities
            .iter()
            .map(|k| format!("{{ address = \"{listen}\", key = \"{k}\" }}"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "id = {}\nkey_file = \"node.key\"\nlisten = \"127.0.0.1:0\"\n\n[directory]\n\
                 authorities = [{}]\nwait_s = 3\n{directory}",
                mix.0,
                list.join(", ")
            ),
        )
        .unwrap();
        loopix(&["node", "--config", config.to_str().unwrap(), "--check"])
    };
    let strangers: Vec<String> = (0..3)
        .map(|_| hex::encode(IdentitySecret::generate(&mut rng).public().to_bytes()))
        .collect();
    let refused = check(&[&strangers[2]], "");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("signed only by keys not trusted here"),
        "{err}"
    );
    let taken = check(&[&key_hex], "");
    assert!(taken.status.success(), "{taken:?}");
    assert!(
        String::from_utf8_lossy(&taken.stdout).contains("topology from the directory"),
        "{taken:?}"
    );
    // Three authorities named and no threshold: a document one of them signed is refused
    // (two are required), a threshold of one is refused unless a minority is allowed.
    let three = [key_hex.as_str(), &strangers[0], &strangers[1]];
    let one_of_three = check(&three, "");
    assert!(!one_of_three.status.success(), "{one_of_three:?}");
    let err = String::from_utf8_lossy(&one_of_three.stderr);
    assert!(
        err.contains("signed by 1 trusted authorities; 2 are required"),
        "{err}"
    );
    let minority = check(&three, "threshold = 1\n");
    assert!(!minority.status.success());
    let err = String::from_utf8_lossy(&minority.stderr);
    assert!(
        err.contains("directory.threshold") && err.contains("not a majority"),
        "{err}"
    );
    let allowed = check(&three, "threshold = 1\nallow_minority_threshold = true\n");
    assert!(allowed.status.success(), "{allowed:?}");
    // A client's flags say the same, before it waits for anything.
    let flags: Vec<String> = three
        .iter()
        .flat_map(|k| ["--authority".to_string(), format!("{k}@{listen}")])
        .collect();
    let mut args: Vec<&str> = vec!["client"];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--threshold", "1", "--id", "1", "--key", "none.key"]);
    let client = loopix(&args);
    assert!(!client.status.success());
    let err = String::from_utf8_lossy(&client.stderr);
    assert!(err.contains("not a majority"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP connection to `to` from the loopback address `from` (the authority caps
/// connections per source address, so attackers and honest readers come from different
/// ones, as on a real network).
fn connect_from(from: &str, to: &str) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into())?;
    let remote: std::net::SocketAddr = to.parse().unwrap();
    socket.connect_timeout(&remote.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Every node of `topology` uploads its keys for `count` epochs from `first` (issued at
/// `now_s`) to the authority at `listen`, which must take each.
fn upload_every_node(
    topology: &Topology,
    keys: &loopix_sim::network::Keys,
    identities: &BTreeMap<NodeId, IdentitySecret>,
    listen: &str,
    now_s: u64,
    first: u64,
    count: usize,
) {
    for n in &topology.nodes {
        let session = keys.sessions[&n.id].public();
        let upload = KeyUpload::from_seed(n.id, now_s, session, &keys.nodes[&n.id], first, count)
            .sign(&identities[&n.id]);
        let (status, why) = http(listen, "POST", "/keys", upload.as_bytes());
        assert_eq!(
            status,
            200,
            "node {}: {}",
            n.id.0,
            String::from_utf8_lossy(&why)
        );
    }
}

/// The value of an unlabelled or labelled metric line in a Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn stalling_peers_hold_up_neither_fetches_nor_uploads_nor_publishing() {
    let (dir, adir, _) = init_authority("stall");
    let Network {
        topology,
        keys,
        identities,
        ..
    } = register_network(&adir);
    let listen = free_port();
    let _authority = serve(&adir, &listen);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running =
        |stop: &std::sync::atomic::AtomicBool| !stop.load(std::sync::atomic::Ordering::SeqCst);
    let mut attackers = Vec::new();
    // 1. From 127.0.0.2: 24 connections (more than one source may hold) each pipelining
    //    document fetches and never reading an answer, opened again whenever closed.
    for _ in 0..24 {
        let (listen, stop) = (listen.clone(), std::sync::Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            let request = b"GET /document HTTP/1.1\r\nHost: a\r\n\r\n".repeat(200);
            while running(&stop) {
                if let Ok(mut s) = connect_from("127.0.0.2", &listen) {
                    s.set_write_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    while running(&stop) && s.write_all(&request).is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // 2. From 127.0.0.3: 40 uploads that announce 4,000 bytes and send one a second.
    // 3. From 127.0.0.4: 10 request heads trickled a byte at a time, and heads of 100 KB.
    for (from, count, opening) in [
        (
            "127.0.0.3",
            40,
            "POST /keys HTTP/1.1\r\nHost: a\r\nContent-Length: 4000\r\n\r\nl",
        ),
        ("127.0.0.4", 10, "GET /schedule HTTP/1.1\r\nX-Slow: "),
    ] {
        for _ in 0..count {
            let (listen, stop) = (listen.clone(), std::sync::Arc::clone(&stop));
            attackers.push(std::thread::spawn(move || {
                while running(&stop) {
                    if let Ok(mut s) = connect_from(from, &listen) {
                        let mut ok = s.write_all(opening.as_bytes()).is_ok();
                        while ok && running(&stop) {
                            std::thread::sleep(Duration::from_millis(300));
                            ok = s.write_all(b"l").is_ok();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
    }
    {
        let (listen, stop) = (listen.clone(), std::sync::Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            let huge = format!(
                "GET /schedule HTTP/1.1\r\nX-Huge: {}\r\n\r\n",
                "h".repeat(100_000)
            );
            while running(&stop) {
                if let Ok(mut s) = connect_from("127.0.0.4", &listen) {
                    let _ = s.write_all(huge.as_bytes());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));

    // Honest fetches from 127.0.0.1, each answered within 1 s.
    let timed = |path: &str| {
        let at = Instant::now();
        let (status, _) = http(&listen, "GET", path, b"");
        (status, at.elapsed())
    };
    for _ in 0..5 {
        let (status, took) = timed("/schedule");
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "a fetch took {took:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Honest uploads are taken, and the document is published at once.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let epoch = now_s / 1200;
    upload_every_node(&topology, &keys, &identities, &listen, now_s, epoch, 3);
    let published = Instant::now();
    loop {
        let (status, took) = timed("/document");
        assert!(took < Duration::from_secs(1), "a fetch took {took:?}");
        if status == 200 {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(2),
            "no document 2 s after the last upload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The attackers were refused, and counted.
    let (status, metrics) = http(&listen, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metric(
            &metrics,
            "loopix_directory_connections_refused_total{reason=\"per_source\"}"
        ) > 0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "loopix_directory_connections_timed_out_total") > 0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "loopix_directory_bad_requests_total") > 0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "loopix_directory_uploads_total{result=\"taken\"}"),
        2
    );
    assert!(metric(&metrics, "loopix_directory_documents_published_total") >= 1);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for a in attackers {
        a.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An operator registers a client while the authority runs and sends it SIGHUP: the next
/// document made lists the client, and the reload is counted.
#[test]
fn a_registration_added_while_the_authority_runs_is_in_the_next_document() {
    let (dir, adir, key_hex) = init_authority("hup");
    let mut key = [0u8; 32];
    hex::decode_to_slice(&key_hex, &mut key).unwrap();
    let trust = Trust::new(
        vec![IdentityPublic::from_bytes(key).unwrap()],
        Threshold::AtLeast(1),
    )
    .unwrap();
    const EPOCH_S: u64 = 6;
    let unix_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // Epoch 0 starts now (a seed's keys are a hash chain from its first epoch).
    let start_s = unix_s();
    let Network {
        topology,
        keys,
        identities,
        ..
    } = register_network_with_epochs(&adir, EPOCH_S, start_s);
    let listen = free_port();
    let authority = serve(&adir, &listen);
    let now_s = unix_s();
    let epoch = (now_s - start_s) / EPOCH_S;
    upload_every_node(&topology, &keys, &identities, &listen, now_s, epoch, 16);
    let doc_of = |e: u64| -> Option<Topology> {
        let (status, body) = http(&listen, "GET", &format!("/document/{e}"), b"");
        (status == 200).then(|| {
            verify(&body, &trust, Some(e), (start_s + e * EPOCH_S) * 1_000_000)
                .unwrap()
                .topology
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while doc_of(epoch).is_none() {
        assert!(Instant::now() < deadline, "no first document");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new client, registered by the CLI while the authority runs.
    let key = dir.join("carol.key");
    let made = loopix(&["keygen", "--out", key.to_str().unwrap()]);
    let lines = String::from_utf8(made.stdout).unwrap();
    let field = |name: &str| {
        lines
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap()
            .to_string()
    };
    let provider = topology.providers().next().unwrap().id.0.to_string();
    let carol = loopix_crypto::NodeId(10_005);
    let standing = || {
        let (status, body) = http(&listen, "GET", "/status/client/10005", b"");
        (status, String::from_utf8_lossy(&body).trim().to_string())
    };
    assert_eq!(standing(), (404, "client 10005: not registered".into()));
    let registered = loopix(&[
        "directory",
        "register-client",
        "--dir",
        adir.to_str().unwrap(),
        "--id",
        "10005",
        "--provider",
        &provider,
        "--public-key",
        &field("public_key"),
        "--session-key",
        &field("session_key"),
    ]);
    assert!(registered.status.success(), "{registered:?}");
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(authority.0.id() as i32, libc::SIGHUP) },
        0
    );
    // Documents already published do not change; the next one made lists her.
    let deadline = Instant::now() + Duration::from_secs(4 * EPOCH_S);
    let listed = loop {
        let now_epoch = (unix_s() - start_s) / EPOCH_S;
        if let Some(t) = doc_of(now_epoch + 1).filter(|t| t.client(carol).is_some()) {
            break t;
        }
        assert!(Instant::now() < deadline, "carol is in no document");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        listed.client(carol).unwrap().provider.0.to_string(),
        provider
    );
    assert!(
        doc_of(epoch).unwrap().client(carol).is_none(),
        "published ones stay"
    );
    let (status, said) = standing();
    assert_eq!(status, 200);
    assert!(said.contains("registered, published from epoch"), "{said}");
    let (_, metrics) = http(&listen, "GET", "/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(
        metric(&metrics, "loopix_directory_registry_reloads_total"),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new network, checked host by host: a registered node's `--check` succeeds at once
/// while the rest of the network has not uploaded, saying where it stands and what the
/// first document lacks; an unregistered id is refused at once, as is a client no
/// authority registered, and a registered client waiting for its first document says so.
#[test]
fn a_check_says_where_a_registration_stands_without_the_rest_of_the_network() {
    let (dir, adir, key_hex) = init_authority("check");
    let Network {
        topology,
        keys,
        identities,
        ..
    } = register_network(&adir);
    let listen = free_port();
    let _authority = serve(&adir, &listen);
    let mix = topology.nodes[0].id;
    let provider = topology.nodes[1].id;
    loopix_runtime::key_file::write_seed(
        &dir.join("node.key"),
        &keys.nodes[&mix],
        &keys.sessions[&mix],
        Some(&identities[&mix]),
    )
    .unwrap();
    let check = |id: u64| {
        let config = dir.join(format!("node-{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "id = {id}\nkey_file = \"node.key\"\nlisten = \"127.0.0.1:0\"\n\n[directory]\n\
                 authorities = [{{ address = \"{listen}\", key = \"{key_hex}\" }}]\n"
            ),
        )
        .unwrap();
        let started = Instant::now();
        let out = loopix(&["node", "--config", config.to_str().unwrap(), "--check"]);
        (out, started.elapsed())
    };
    let (ok, took) = check(mix.0);
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(took < Duration::from_secs(20), "it did not wait: {took:?}");
    assert!(
        said.contains("would be taken by 1 of 1 authorities"),
        "{said}"
    );
    assert!(said.contains("registered, not yet published"), "{said}");
    assert!(
        said.contains(&format!("{} (provider)", provider.0)),
        "what the document lacks: {said}"
    );
    // A check keeps nothing: the mix has still uploaded no keys.
    let (_, status) = http(&listen, "GET", &format!("/status/node/{}", mix.0), b"");
    let status = String::from_utf8_lossy(&status);
    assert!(status.contains("no keys uploaded"), "{status}");
    // The authority's metrics say the same, and serve every series its alert rules use.
    let (_, metrics) = http(&listen, "GET", "/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "loopix_directory_nodes_registered 2",
        "loopix_directory_clients_registered 2",
        "loopix_directory_document_published{epoch=\"current\"} 0",
        &format!(
            "loopix_directory_node_keys_until_epoch{{node=\"{}\"}} 0",
            mix.0
        ),
    ] {
        assert!(metrics.contains(&format!("{line}\n")), "{line}:\n{metrics}");
    }
    let rules = include_str!("../docs/monitoring/authority-alerts.yml");
    for (at, _) in rules.match_indices("loopix_directory_") {
        let name: String = rules[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} is used by the alert rules and not served"
        );
    }
    // Another id with these keys: not registered, said at once.
    let (refused, took) = check(999);
    assert!(!refused.status.success());
    assert!(took < Duration::from_secs(20), "{took:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("node 999 is not registered"), "{err}");
    // Clients: one no authority knows fails at once; a registered one waits for its
    // first document and, when the run's time is over, says where it stands.
    let client_key = dir.join("client.key");
    let (&client, secret) = keys.clients.iter().next().unwrap();
    loopix_runtime::key_file::write_client_key(&client_key, secret).unwrap();
    let authority = format!("{key_hex}@{listen}");
    let run_client = |id: u64| {
        let started = Instant::now();
        let out = loopix(&[
            "client",
            "--authority",
            &authority,
            "--id",
            &id.to_string(),
            "--key",
            client_key.to_str().unwrap(),
            "--duration-s",
            "3",
        ]);
        (out, started.elapsed())
    };
    let (unknown, took) = run_client(4242);
    assert!(!unknown.status.success());
    assert!(took < Duration::from_secs(3), "{took:?}");
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("client 4242: not registered"), "{err}");
    let (waiting, took) = run_client(client.0);
    assert!(!waiting.status.success());
    assert!(took < Duration::from_secs(10), "{took:?}");
    let err = String::from_utf8_lossy(&waiting.stderr);
    assert!(
        err.contains("no usable network document within 3 s")
            && err.contains("registered, not yet published"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
