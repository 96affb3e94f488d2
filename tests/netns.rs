//! `loopix testnet --netns`: every node, the directory and the clients on hosts of their
//! own (network namespaces) whose links, through a router, carry 20 ms each way. Every
//! message arrives exactly once, and what the mixes' loops took beyond the delays they
//! asked for is the links they crossed (every layer and a provider, and back: layers + 1
//! links of 20 ms) plus little. Needs root, iproute2 and /dev/net/tun: without them the
//! test says why and passes without running.

mod common;

use std::process::Command;

/// Why namespaces cannot be made here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    let probe = format!("lpx-probe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).status() {
        Ok(s) if s.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(_) => Some("`ip netns add` is refused here".into()),
        Err(e) => Some(format!("no iproute2 `ip`: {e}")),
    }
}

#[test]
fn a_network_across_namespaces_with_20_ms_links_delivers_everything_once() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: the netns testnet needs root, iproute2 and /dev/net/tun: {why}");
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--netns",
            "--link-delay-ms",
            "20",
            "--duration-s",
            "15",
            "--drain-s",
            "40",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loopix runs");
    let pid = child.id();
    let out = child.wait_with_output().expect("loopix ends");
    let (v, _) = common::delivered_once(&out, 20);
    let links = &v["links"];
    assert_eq!(links["delay_ms"].as_u64(), Some(20), "{v:#}");
    assert!(links["forwarded"].as_u64().unwrap() > 1000, "{links}");
    assert_eq!(links["lost"].as_u64(), Some(0), "{links}");
    let crossed = links["links_per_mix_loop"].as_u64().unwrap() as f64;
    for node in v["nodes"].as_array().unwrap() {
        assert!(node["exit_ok"].as_bool().unwrap(), "{node}");
        assert_eq!(node["drops"], serde_json::json!({}), "{node}");
        if node["role"].as_str().unwrap().starts_with("mix") {
            let overhead = node["loop_overhead_ms"].as_f64().unwrap();
            // The links' delays, plus processing and scheduling at each hop on a machine
            // that runs the whole network.
            assert!(
                overhead >= crossed * 20.0 && overhead <= crossed * 20.0 + 30.0,
                "{overhead} ms over {crossed} links of 20 ms: {node}"
            );
        }
    }
    // Nothing is left behind.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&list.stdout);
    assert!(
        !left.contains(&format!("lpx-{pid}-")),
        "namespaces left: {left}"
    );
}
