//! `loopix stress` end to end: a short sweep against the network it starts delivers every
//! message once, and its report holds every figure with the counters consistent.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_sweep_delivers_every_message_once_and_reports_consistent_figures() {
    let report_dir =
        std::env::temp_dir().join(format!("loopix-stress-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "stress",
            "--clients",
            "4,12",
            "--step-s",
            "8",
            "--drain-s",
            "20",
            "--json",
            "--report-dir",
        ])
        .arg(&report_dir)
        .output()
        .expect("run loopix stress");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loopix stress failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join("stress.json")).expect("stress.json"),
    )
    .expect("stress.json parses");
    assert_eq!(
        written["steps"], report["steps"],
        "the file is the printed report"
    );
    assert!(report["floor_clients_per_core"].as_f64().unwrap() > 0.0);
    assert!(!report["cpu_model"].as_str().unwrap().is_empty());
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "one step per client count");
    let nodes = |s: &Value| s["nodes"].as_array().unwrap().clone();
    for (step, clients) in steps.iter().zip([4, 12]) {
        let n = |k: &str| step[k].as_u64().unwrap_or_else(|| panic!("{k} in {step}"));
        assert_eq!(n("clients"), clients);
        assert!(n("sent") > 0, "{step}");
        assert_eq!(
            n("sent"),
            n("delivered") + n("lost") + n("in_flight"),
            "every message judged once: {step}"
        );
        assert_eq!(n("delivered"), n("sent"), "every message delivered: {step}");
        assert_eq!(n("duplicates") + n("misdelivered"), 0, "{step}");
        let lat = &step["latency_ms"];
        let p50 = lat["p50"].as_f64().unwrap();
        let p99 = lat["p99"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && p50 <= p99 && p99 <= lat["max"].as_f64().unwrap(),
            "{lat}"
        );
        let cdf = step["latency_cdf_ms"].as_array().unwrap();
        assert_eq!(cdf.last().unwrap()[1].as_f64(), Some(1.0));
        // Every sender had all its messages delivered: equal shares.
        assert!(
            (step["jain_fairness"].as_f64().unwrap() - 1.0).abs() < 1e-9,
            "{step}"
        );
        assert!(step["client_timers_late"].is_u64());
        let ks = &step["poisson"];
        assert!(ks["n"].as_u64().unwrap() > 50, "departures recorded: {ks}");
        assert!(
            ks["d"].as_f64().unwrap() < 0.2,
            "departures close to Poisson: {ks}"
        );
        // Every node carried packets in the step; every mix's pool was sampled.
        for node in nodes(step) {
            assert!(node["packets_in"].as_u64().unwrap() > 0, "{node}");
            if node["role"].as_str().unwrap().starts_with("mix") {
                assert!(node["pool_expected"].as_f64().unwrap() > 0.0, "{node}");
            }
        }
        assert!(step["cpu_clients_s"].as_f64().unwrap() > 0.0);
        assert!(step["cpu_nodes_s"].as_f64().unwrap() > 0.0);
    }
    for plot in [
        "stress-latency-cdf.svg",
        "stress-latency.svg",
        "stress-delivered.svg",
        "stress-clients-per-core.svg",
    ] {
        let svg = std::fs::read_to_string(report_dir.join(plot)).expect(plot);
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{plot}");
    }
    let _ = std::fs::remove_dir_all(&report_dir);
}

/// `loopix stress --attach` loads a network another process started and runs: a testnet
/// that runs no clients of its own but writes spare clients' keys and its nodes' metrics
/// addresses. Every message is delivered once, and the nodes' counters are scraped.
#[test]
fn a_sweep_attached_to_a_running_testnet_delivers_every_message_once() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = std::env::temp_dir().join(format!("loopix-stress-attach-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut testnet = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "testnet",
            "--clients",
            "0",
            "--spare-clients",
            "6",
            "--duration-s",
            "300",
            "--drain-s",
            "0",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loopix testnet");
    let mut lines = BufReader::new(testnet.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the testnet says when its network is up")
            .unwrap();
        if line.contains("network up") {
            break;
        }
    }
    // Keep reading its stderr, so it never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.count());
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args([
            "stress",
            "--clients",
            "6",
            "--step-s",
            "6",
            "--drain-s",
            "20",
            "--json",
            "--attach",
        ])
        .arg(&dir)
        .output()
        .expect("run loopix stress");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(testnet.id() as i32, libc::SIGINT) };
    let status = testnet.wait().unwrap();
    drain.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loopix stress --attach failed: {stderr}"
    );
    assert!(status.success(), "the testnet stopped cleanly on SIGINT");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["started_network"], false);
    let step = &report["steps"][0];
    let n = |k: &str| step[k].as_u64().unwrap();
    assert!(n("sent") > 0);
    assert_eq!(n("delivered"), n("sent"), "{step}");
    assert_eq!(n("duplicates") + n("misdelivered"), 0);
    let nodes = step["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8, "every node scraped through metrics.toml");
    assert!(nodes.iter().all(|n| n["packets_in"].as_u64().unwrap() > 0));
    let _ = std::fs::remove_dir_all(&dir);
}
