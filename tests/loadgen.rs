//! End-to-end: `loopix loadgen` against a mix process measures the hop, and puts every
//! lost packet on the side that lost it.

mod common;

use std::time::Duration;

use common::{Dir, NodeProcess, free_tcp, free_udp, loopix, wait_metrics};

#[test]
fn loadgen_measures_a_node_without_loss_at_a_modest_rate() {
    let dir = Dir::new("loadgen");
    let (node, metrics) = start_mix(&dir, 2, "[limits]\nmax_packets_per_s = 30000\n");
    let v = loadgen(
        &dir.path("topology.toml"),
        &[
            "--rate",
            "1000",
            "--duration-s",
            "2",
            "--poisson",
            "--metrics",
            &metrics.to_string(),
        ],
    );
    assert_eq!(v["sent"], 2000);
    assert_eq!(v["forwarded"], 2000, "{v:#}");
    assert_eq!(v["loss"].as_f64(), Some(0.0));
    let p50 = v["latency_us"]["p50"].as_f64().unwrap();
    let p99 = v["latency_us"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50 && v["latency_us"]["p999"].as_f64().unwrap() >= p99);
    assert!(v["offered_pps"].as_f64().unwrap() > 900.0);
    let side = &v["loss_by_side"];
    assert_eq!(side["lost"], 0, "{v:#}");
    assert!(
        side["node_counters"]["drops"]
            .as_object()
            .unwrap()
            .is_empty(),
        "{v:#}"
    );
    // The node timed its receive work: every packet costs at least the microseconds of its
    // two multiplications, and far less than a second.
    let per_packet = v["node_receive_us_per_packet"]
        .as_f64()
        .expect("timed by the node");
    assert!((1.0..1e6).contains(&per_packet), "{per_packet}");
    // Bursts: the same packets counted, every one sent and forwarded.
    let v = loadgen(
        &dir.path("topology.toml"),
        &[
            "--rate",
            "2000",
            "--duration-s",
            "1",
            "--send-quantum-us",
            "1000",
        ],
    );
    assert_eq!(
        (v["sent"].as_u64(), v["forwarded"].as_u64()),
        (Some(2000), Some(2000)),
        "{v:#}"
    );
    assert_eq!(v["send_quantum_us"], 1000);
    capacity_mode_agrees_with_its_own_steps(&dir.path("topology.toml"), &metrics.to_string());
    assert!(node.terminate());
}

/// Every lost packet is put on the side that lost it. A generator that stops reading (its
/// receive buffer one datagram deep) loses what the node forwarded: that loss is the
/// generator's, never the node's. A node that drops a fifth of what it sends (fault
/// injection, counted) loses that: the node's, never the generator's.
#[test]
fn every_lost_packet_is_put_on_the_side_that_lost_it() {
    let dir = Dir::new("loadgen-attribution");
    let (node, metrics) = start_mix(&dir, 1, "");
    let metrics = metrics.to_string();
    let topology = dir.path("topology.toml");
    let common = ["--rate", "1000", "--duration-s", "1", "--metrics", &metrics];
    let stalled = [
        "--receive-buffer-bytes",
        "2048",
        "--stall-receiver-ms",
        "1300",
    ];
    let v = loadgen(&topology, &[&common[..], &stalled[..]].concat());
    let side = &v["loss_by_side"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let lost = n(&side["lost"]);
    assert!(lost > 500, "the stalled generator lost little: {v:#}");
    assert_eq!(lost, n(&v["sent"]) - n(&v["forwarded"]), "{v:#}");
    assert_eq!(
        (
            n(&side["generator"]),
            n(&side["node"]),
            n(&side["unattributed"])
        ),
        (lost, 0, 0),
        "{v:#}"
    );
    assert!(
        n(&side["generator_counts"]["kernel_drops"]) >= lost,
        "{v:#}"
    );
    // The node forwarded every packet and dropped none.
    let counters = &side["node_counters"];
    assert_eq!(n(&counters["packets_out"]), 1000, "{v:#}");
    assert!(counters["drops"].as_object().unwrap().is_empty(), "{v:#}");
    assert!(node.terminate());

    let (node, metrics) = start_mix(&dir, 1, "[faults]\ndrop_fraction = 0.2\n");
    let metrics = metrics.to_string();
    let v = loadgen(
        &topology,
        &["--rate", "1000", "--duration-s", "1", "--metrics", &metrics],
    );
    let side = &v["loss_by_side"];
    let lost = n(&side["lost"]);
    assert!((100..400).contains(&lost), "a fifth dropped: {v:#}");
    assert_eq!(
        (
            n(&side["generator"]),
            n(&side["node"]),
            n(&side["unattributed"])
        ),
        (0, lost, 0),
        "{v:#}"
    );
    assert_eq!(n(&side["node_counters"]["fault_drops"]), lost, "{v:#}");
    assert!(node.terminate());
}

/// Writes a one-layer topology (mix 1, the generator as provider 1000) unless `dir` has
/// one, and starts the mix on `shards` shards with `node_toml` (limits, faults) added to
/// its config; returns it and its metrics address once every shard reports.
fn start_mix(dir: &Dir, shards: usize, node_toml: &str) -> (NodeProcess, std::net::SocketAddr) {
    if !dir.path("topology.toml").exists() {
        let keys = ["mix.key", "gen.key"].map(|k| dir.node_keygen(k).0);
        let (mix, generator) = (free_udp(), free_udp());
        dir.write(
            "topology.toml",
            &format!(
                "[network]\nlayers = 1\nmu_per_s = 10.0\nlambda_payload_per_s = 0.0\nlambda_loop_per_s = 0.0\n\
                 lambda_drop_per_s = 0.0\nlambda_mix_loop_per_s = 0.0\npoll_size = 4\npoll_rate_per_s = 1.0\n\
                 epoch_start = {}\n\n\
                 [[nodes]]\nid = 1\nrole = \"mix\"\nlayer = 1\naddress = \"{mix}\"\n{}\n\
                 [[nodes]]\nid = 1000\nrole = \"provider\"\naddress = \"{generator}\"\n{}",
                common::now_s(),
                keys[0],
                keys[1]
            ),
        );
    }
    let metrics = free_tcp();
    dir.write(
        "mix.toml",
        &format!(
            "topology = \"topology.toml\"\nid = 1\nkey_file = \"mix.key\"\nshards = {shards}\nmetrics = \"{metrics}\"\n{node_toml}"
        ),
    );
    let node = NodeProcess::start(&dir.path("mix.toml"), &dir.path("mix.log"));
    let last_shard = format!("shard=\"{}\"", shards - 1);
    assert!(
        wait_metrics(metrics, Duration::from_secs(10), |t| t
            .contains(&last_shard))
        .is_some()
    );
    (node, metrics)
}

/// `--find-capacity` with short single runs and a loose bound. The capacity depends on the
/// machine; what must hold anywhere is that the report agrees with its own steps: a ramp of
/// passes up to the first failure, at most `--refine` bisection steps strictly between the
/// last pass and that failure, the capacity the best rate that passed, and the efficiency
/// that capacity over floor x shards.
fn capacity_mode_agrees_with_its_own_steps(topology: &std::path::Path, metrics: &str) {
    let bound = 50_000.0;
    let c = loadgen(
        topology,
        &[
            "--find-capacity",
            "--metrics",
            metrics,
            "--duration-s",
            "0.3",
            "--repeats",
            "1",
            "--refine",
            "2",
            "--p99-bound-us",
            "50000",
            "--settle-ms",
            "100",
        ],
    );
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let (capacity, floor_pps) = (f(&c["capacity_pps"]), f(&c["floor_pps"]));
    assert_eq!(
        (c["shards"].as_u64(), c["refine"].as_u64()),
        (Some(2), Some(2)),
        "{c:#}"
    );
    assert!((floor_pps * f(&c["floor_ns"]) / 1e9 - 1.0).abs() < 1e-9);
    assert!((f(&c["efficiency"]) - capacity / (floor_pps * 2.0)).abs() < 1e-9);
    let steps = c["steps"].as_array().unwrap();
    for s in steps {
        let judged = f(&s["loss"]) < 0.001 && f(&s["p99_us"]) <= bound;
        assert_eq!(s["passed"].as_bool(), Some(judged), "{s:#}");
        let node_us = s["node_receive_us_per_packet"].as_f64();
        assert!(node_us.is_some_and(|us| us > 1.0), "{s:#}");
    }
    let first_fail = steps.iter().position(|s| s["passed"] == false);
    let ramp = &steps[..first_fail.unwrap_or(steps.len())];
    assert!(
        ramp.windows(2)
            .all(|w| f(&w[1]["offered_pps"]) > f(&w[0]["offered_pps"]))
    );
    let Some(first_fail) = first_fail else {
        return; // Passed up to the ramp's top: nothing to bisect.
    };
    let refinements = &steps[first_fail + 1..];
    assert!(refinements.len() <= 2, "{c:#}");
    let low = ramp.last().map_or(0.0, |s| f(&s["offered_pps"]));
    let high = f(&steps[first_fail]["offered_pps"]);
    let near = |a: f64, b: f64| (a - b).abs() <= 0.05 * b;
    for s in refinements {
        let rate = f(&s["offered_pps"]);
        assert!(rate > low * 0.95 && rate < high * 1.05, "{c:#}");
    }
    if capacity > 0.0 {
        let best = steps
            .iter()
            .filter(|s| s["passed"] == true)
            .map(|s| f(&s["offered_pps"]))
            .fold(0.0, f64::max);
        assert!(near(best, capacity), "best passed {best} vs {capacity}");
    } else {
        assert!(ramp.is_empty() && refinements.is_empty(), "{c:#}");
    }
}

/// `loopix loadgen --json` against node 1 as provider 1000, with `args`; its report.
fn loadgen(topology: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = loopix()
        .args(["loadgen", "--topology"])
        .arg(topology)
        .args(["--target", "1", "--as", "1000", "--json", "--key"])
        .arg(topology.with_file_name("gen.key"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
