//! The `loopix` binary as a user runs it.

use std::process::Command;

/// A new, empty directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loopix-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn loopix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(args)
        .output()
        .expect("loopix runs")
}

#[test]
fn speed_json_has_the_documented_fields() {
    let out = loopix(&[
        "speed",
        "--json",
        "--rounds",
        "1",
        "--round-ms",
        "1",
        "--payload-bytes",
        "64",
        "--hops",
        "2",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in [
        "floor_ns",
        "process_ns",
        "build_ns",
        "build_batch_ns_per_packet",
        "build_batch_over_build",
    ] {
        assert!(
            v[field].as_f64().is_some_and(|ns| ns > 0.0),
            "{field}: {}",
            v[field]
        );
    }
    assert_eq!(v["hops"], 2);
    assert_eq!(v["packet_bytes"], 304 + 16 + 64);
    let prims = v["primitives"].as_object().expect("primitives map");
    assert!(prims.contains_key("ristretto_scalar_mul") && prims.contains_key("lioness_decrypt"));
    // Every batch size built, and the kernel choice with the measurement behind it: the
    // chosen kernel among those measured, each at a positive cost.
    let sizes = v["build_batch_ns"].as_object().expect("build_batch_ns map");
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    let measured = v["kernel_measured_ns"]
        .as_object()
        .expect("kernel_measured_ns");
    assert!(
        measured
            .values()
            .all(|ns| ns.as_f64().is_some_and(|ns| ns > 0.0))
    );
    let kernel = v["batch_kernel"].as_str().unwrap();
    assert!(
        measured.contains_key(kernel),
        "{kernel} not among {measured:?}"
    );
    let by = if std::env::var_os("LOOPIX_KERNEL").is_some() {
        "fixed before"
    } else {
        "measurement"
    };
    assert_eq!(v["kernel_chosen_by"], by);
}

#[test]
fn speed_table_names_floor_and_process() {
    let out = loopix(&[
        "speed",
        "--rounds",
        "1",
        "--round-ms",
        "1",
        "--payload-bytes",
        "64",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("per-hop crypto floor") && text.contains("per-hop process (real)"));
}

#[test]
fn bad_options_are_reported_not_panicked() {
    let out = loopix(&["speed", "--payload-bytes", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("payload size 5"));
    let out = loopix(&["speed", "--hops", "9"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn keygen_writes_an_owner_only_key_and_prints_the_public_keys() {
    let dir = scratch("keygen");
    let key = dir.join("mix.key");
    let key_arg = key.to_str().unwrap();
    let out = loopix(&["keygen", "--out", key_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let keys: Vec<&str> = lines.lines().collect();
    assert_eq!(keys.len(), 2, "{lines}");
    for (line, field) in keys.iter().zip(["public_key", "session_key"]) {
        let hex = line
            .strip_prefix(&format!("{field} = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{line}"));
        assert!(hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = loopix(&["keygen", "--out", key_arg]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "must refuse to overwrite a key"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node key made in the first grace of an epoch starts at the epoch before, whose key is
/// still in use (a node refuses a key file without it); made later in the epoch, at the
/// epoch itself. A grace of half an epoch or more is refused, saying why.
#[test]
fn keygen_starts_at_the_oldest_epoch_in_use() {
    let dir = scratch("keygen-grace");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first_epoch = |name: &str, since_start_s: u64, grace_s: u64| {
        let key = dir.join(name);
        let start = (now - since_start_s).to_string();
        let grace = grace_s.to_string();
        let out = loopix(&[
            "keygen",
            "--epochs",
            "2",
            "--out",
            key.to_str().unwrap(),
            "--epoch-s",
            "100",
            "--epoch-start",
            &start,
            "--epoch-grace-s",
            &grace,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let first = text
            .lines()
            .find_map(|l| l.strip_prefix("first_epoch = "))
            .map(|e| e.trim().parse::<u64>().unwrap());
        (first, err)
    };
    // 110 s after the start of 100 s epochs: 10 s into epoch 1, within a 30 s grace.
    assert_eq!(first_epoch("in-grace.key", 110, 30).0, Some(0));
    // 150 s: halfway through epoch 1, past the grace.
    assert_eq!(first_epoch("past-grace.key", 150, 30).0, Some(1));
    let (first, err) = first_epoch("bad.key", 150, 50);
    assert_eq!(first, None);
    assert!(
        err.contains("--epoch-grace-s") && err.contains("half an epoch"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `keygen | head -1` (a reader that closes the pipe) is no crash, and a node key of no
/// epochs is refused.
#[test]
fn keygen_survives_a_closed_pipe_and_refuses_zero_epochs() {
    let dir = scratch("keygen-pipe");
    let key = dir.join("node.key");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // closed before keygen writes a byte
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(["keygen", "--epochs", "50", "--out", key.to_str().unwrap()])
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "keygen into a closed pipe");
    assert!(key.exists(), "the key was written first");
    let zero = loopix(&[
        "keygen",
        "--epochs",
        "0",
        "--out",
        dir.join("z.key").to_str().unwrap(),
    ]);
    assert!(!zero.status.success());
    assert!(!dir.join("z.key").exists());
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("--epochs"),
        "{}",
        String::from_utf8_lossy(&zero.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node's key file holds its identity key (mode 0600), and keygen prints the public
/// half for the directory registry as a comment, so its other lines still paste into a
/// topology as they are.
#[test]
fn node_keygen_prints_the_identity_key_for_the_registry() {
    let dir = scratch("keygen-identity");
    let key = dir.join("node.key");
    let out = loopix(&["keygen", "--epochs", "2", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let lines = String::from_utf8(out.stdout).unwrap();
    let printed = lines
        .lines()
        .find_map(|l| l.strip_prefix("# identity_key = \""))
        .and_then(|l| l.split('"').next())
        .unwrap_or_else(|| panic!("no identity_key comment: {lines}"));
    let identity = loopix_runtime::key_file::read_node_identity(&key)
        .unwrap()
        .expect("an identity key");
    assert_eq!(printed, hex::encode(identity.public().to_bytes()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `loopix node --check` on a config file holding `text`.
fn node_check(dir: &std::path::Path, text: &str) -> std::process::Output {
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    loopix(&["node", "--check", "--config", path.to_str().unwrap()])
}

#[test]
fn node_check_names_the_offending_field() {
    let dir = scratch("node-check");
    let out = node_check(
        &dir,
        "topology = \"missing.toml\"\nid = 1\nkey_file = \"k\"\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topology:") && err.contains("missing.toml"),
        "{err}"
    );
    let out = node_check(
        &dir,
        "topology = \"t.toml\"\nid = 1\nkey_file = \"k\"\nshardz = 2\n",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shardz"),
        "unknown keys are named"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `loopix keygen --epochs` makes a node's seed whose printed keys a topology publishes;
/// `loopix node --check` accepts it, reports the epoch and the replay filters' memory, and
/// refuses a seed whose keys the topology does not publish, and one others can read.
#[test]
fn node_check_verifies_the_epoch_keys_the_topology_publishes() {
    let dir = scratch("epochs");
    let keygen = |file: &str| {
        let path = dir.join(file);
        let out = loopix(&[
            "keygen",
            "--epochs",
            "3",
            "--first-epoch",
            "0",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (mix, provider) = (keygen("mix.key"), keygen("provider.key"));
    assert!(
        mix.starts_with("first_epoch = 0\nepoch_keys = [\""),
        "{mix}"
    );
    let epoch_keys = mix.lines().nth(1).unwrap();
    assert_eq!(epoch_keys.matches('"').count(), 6, "three keys: {mix}");
    assert!(mix.lines().nth(2).unwrap().starts_with("session_key = \""));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let topology = |mix_keys: &str| {
        format!(
            "[network]\nlayers = 1\nmu_per_s = 10.0\nlambda_payload_per_s = 1.0\nlambda_loop_per_s = 1.0\n\
             lambda_drop_per_s = 1.0\nlambda_mix_loop_per_s = 1.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\
             epoch_s = 600\nepoch_start = {now_s}\n\n\
             [[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"127.0.0.1:9\"\n{mix_keys}\n\
             [[nodes]]\nid = 1000\nrole = \"provider\"\naddress = \"127.0.0.1:10\"\n{provider}"
        )
    };
    std::fs::write(dir.join("t.toml"), topology(&mix)).unwrap();
    let config = "topology = \"t.toml\"\nid = 1\nkey_file = \"mix.key\"\n[limits]\nmax_packets_per_s = 1000\n";
    let out = node_check(&dir, config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("epoch 0 ("), "{text}");
    // 1,000 packets/s over 600 + 2 x 60 s: 720,000 tags, ~3.4 MB a filter.
    assert!(text.contains("of 720000 tags"), "{text}");

    // A misspelt log filter is an error, not silence (the node would otherwise run on).
    let path = dir.join("node.toml");
    std::fs::write(&path, config).unwrap();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(["node", "--config", path.to_str().unwrap()])
        .env("LOOPIX_LOG", "info,loopix=loud")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            node.kill().unwrap();
            panic!("the node started despite LOOPIX_LOG");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success() && err.contains("LOOPIX_LOG: `info,loopix=loud`"),
        "{err}"
    );

    // A bare word that is no level (tracing would take it for a target and hide every
    // other line) is refused too, by `--check` as by every command.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(["node", "--config", path.to_str().unwrap(), "--check"])
        .env("LOOPIX_LOG", "debg")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("LOOPIX_LOG: `debg`") && err.contains("no level"),
        "{err}"
    );

    // The host: a CPU it does not have, a listen port already taken.
    let out = node_check(&dir, &config.replace("[limits]", "cpus = [99]\n[limits]"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cpus: CPU 99"),
        "{err}"
    );
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = format!("listen = \"{}\"\n", taken.local_addr().unwrap());
    let out = node_check(&dir, &format!("{listen}{config}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("listen: "), "{err}");

    // Another seed's keys: the topology does not publish them.
    keygen("other.key");
    let out = node_check(&dir, &config.replace("mix.key", "other.key"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("key_file:") && err.contains("epoch 0"),
        "{err}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("mix.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let out = node_check(&dir, config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("readable by others"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A one-mix topology with two clients (Alice 10000, Bob 10001) whose nodes are not
/// running, in a scratch folder `name`: a client there queues, and sends into nothing.
fn client_rig(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let node = |f: &str| {
        let out = loopix(&[
            "keygen",
            "--epochs",
            "2",
            "--first-epoch",
            "0",
            "--out",
            &path(f),
        ]);
        String::from_utf8(out.stdout).unwrap()
    };
    let client = |f: &str| {
        let out = loopix(&["keygen", "--out", &path(f)]);
        String::from_utf8(out.stdout).unwrap()
    };
    let (mix, provider) = (node("m.key"), node("p.key"));
    let (alice, bob) = (client("a.key"), client("b.key"));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        dir.join("t.toml"),
        format!(
            "[network]\nlayers = 1\nmu_per_s = 10.0\nlambda_payload_per_s = 1.0\nlambda_loop_per_s = 0.0\n\
             lambda_drop_per_s = 0.0\nlambda_mix_loop_per_s = 0.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\
             epoch_start = {now_s}\n\n\
             [[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"127.0.0.1:9\"\n{mix}\n\
             [[nodes]]\nid = 1000\nrole = \"provider\"\naddress = \"127.0.0.1:19\"\n{provider}\n\
             [[clients]]\nid = 10000\nprovider = 1000\n{alice}\n\
             [[clients]]\nid = 10001\nprovider = 1000\n{bob}"
        )

    )
    .unwrap();
    dir
}

/// A sender that stops with messages still queued says how many and exits non-zero.
#[test]
fn a_client_stopping_with_messages_queued_says_so_and_fails() {
    let dir = client_rig("client");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let mut args = vec![
        "client".to_string(),
        "--topology".into(),
        path("t.toml"),
        "--id".into(),
        "10000".into(),
        "--key".into(),
        path("a.key"),
        "--send-to".into(),
        "10001".into(),
        "--duration-s".into(),
        "0.5".into(),
    ];
    for i in 0..20 {
        args.extend(["--message".to_string(), format!("m{i}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = loopix(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("never left"), "{err}");
    // Its record of delivered messages, kept for the next run, is its owner's alone; one
    // that is not a record stops the next run before it asks anyone anything.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let record = dir.join("a.key.delivered");
        let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&record, "garbage\n").unwrap();
        let out = loopix(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("a.key.delivered: line 1: not a message id"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Alice of [`client_rig`]'s folder `dir` sending to Bob, with `extra` arguments, as a
/// child whose stderr (and, if `stdin`, stdin) the test holds.
fn spawn_alice(dir: &std::path::Path, extra: &[&str], stdin: bool) -> std::process::Child {
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_loopix"));
    command
        .args(["client", "--topology", &path("t.toml"), "--id", "10000"])
        .args(["--key", &path("a.key"), "--send-to", "10001"])
        .args(extra)
        .stderr(std::process::Stdio::piped());
    if stdin {
        command.stdin(std::process::Stdio::piped());
    }
    command.spawn().unwrap()
}

/// `--stdin` from a pipe that stays open: each line is queued as it arrives, not at the
/// end of the input.
#[test]
fn a_client_queues_each_line_of_stdin_as_it_arrives() {
    use std::io::{BufRead, Write};
    let dir = client_rig("client-stdin");
    let mut child = spawn_alice(&dir, &["--stdin", "--duration-s", "20"], true);
    let mut input = child.stdin.take().unwrap();
    writeln!(input, "the first line").unwrap();
    input.flush().unwrap();
    // The pipe stays open; the client must say it queued the line.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    let queued = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("queued message") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(input);
    assert!(queued, "no line queued while stdin stayed open: {seen:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A client whose authority does not answer says what it waits for and gives up within
/// `--duration-s`; a malformed `--authority` and a key file others can read are refused
/// before anyone is asked.
#[test]
fn a_client_waiting_for_a_dead_authority_says_so_and_stops_in_time() {
    let dir = client_rig("client-dead-authority");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let authority_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = |authority: String, key: &str| {
        let started = std::time::Instant::now();
        let out = loopix(&[
            "client",
            "--authority",
            &authority,
            "--id",
            "10000",
            "--key",
            &path(key),
            "--duration-s",
            "3",
        ]);
        (out, started.elapsed())
    };
    let (out, took) = client(format!("{authority_key}@{dead}"), "a.key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "took {took:?}: {err}"
    );
    assert!(err.contains("waiting for a network document"), "{err}");
    assert!(
        err.contains(&dead.to_string()),
        "names the authority: {err}"
    );
    assert!(
        err.contains("no usable network document within 3 s"),
        "{err}"
    );

    let (out, took) = client(format!("{authority_key}@127.0.0.1"), "a.key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no port"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(2),
        "refused at once: {took:?}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("b.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let (out, took) = client(format!("{authority_key}@{dead}"), "b.key");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("readable by others"),
            "{err}"
        );
        assert!(!err.contains("waiting for a network document"), "{err}");
        assert!(
            took < std::time::Duration::from_secs(2),
            "refused at once: {took:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ctrl-C with messages given and not acknowledged: the client exits non-zero and names
/// every one, as never left or as sent but not acknowledged.
#[test]
fn a_client_interrupted_with_messages_unacknowledged_names_them_and_fails() {
    use std::io::BufRead;
    let dir = client_rig("client-sigint");
    let mut child = spawn_alice(
        &dir,
        &["--message", "one", "--message", "two", "--message", "three"],
        false,
    );
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut queued = Vec::new();
    let mut line = String::new();
    while queued.len() < 3 {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stderr ended: {queued:?}"
        );
        if let Some(id) = line.trim().strip_prefix("client 10000: queued message ") {
            queued.push(id.to_string());
        }
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    let last = rest.lines().last().unwrap_or_default();
    for id in &queued {
        assert!(last.contains(id.as_str()), "message {id} not named: {last}");
    }
    assert!(
        last.contains("never left") || last.contains("sent but not acknowledged"),
        "{last}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
