//! `loopix sim` as a user runs it: the JSON contract, the files it writes, and that the
//! same seed gives byte-identical output.

use std::path::Path;
use std::process::{Command, Output};

fn sim(out: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .arg("sim")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("loopix runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loopix-sim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

const ENTROPY: &[&str] = &[
    "mix-entropy",
    "--lambda",
    "5,20",
    "--mu",
    "1",
    "--outputs",
    "3000",
    "--json",
];

#[test]
fn mix_entropy_json_plot_and_csv() {
    let dir = scratch("entropy");
    let v = json(&sim(&dir, ENTROPY));
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "two rates, with and without loops");
    for r in results {
        for f in ["lambda", "mu", "mean_pool", "entropy_bits"] {
            assert!(r[f].as_f64().is_some_and(|x| x > 0.0), "{f}: {r}");
        }
        assert!(r["mix_loops"].is_boolean());
    }
    assert_eq!(v["codec"], "plaintext");
    let csv = std::fs::read_to_string(dir.join("mix-entropy.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let svg = std::fs::read_to_string(dir.join("mix-entropy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("no mix loops"));
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (scratch("det-a"), scratch("det-b"), scratch("det-c"));
    let first = sim(&a, ENTROPY).stdout;
    assert_eq!(first, sim(&b, ENTROPY).stdout);
    for f in ["mix-entropy.csv", "mix-entropy.svg"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap()
        );
    }
    let mut other = ENTROPY.to_vec();
    other.extend(["--seed", "2"]);
    assert_ne!(first, sim(&c, &other).stdout);
    let net = [
        "network",
        "--senders",
        "10",
        "--burn-in",
        "20",
        "--measure",
        "20",
        "--json",
    ];
    assert_eq!(sim(&a, &net).stdout, sim(&b, &net).stdout);
}

#[test]
fn theorem1_json_has_the_contract_fields() {
    let dir = scratch("theorem1");
    let out = sim(
        &dir,
        &[
            "theorem1", "--n", "6", "--k", "3", "--l", "3", "--trials", "2000", "--json",
        ],
    );
    let v = json(&out);
    for f in [
        "p_first_empirical",
        "p_first_formula",
        "p_later_empirical",
        "p_later_formula",
    ] {
        assert!(v[f].as_f64().is_some(), "{f}: {v}");
    }
    assert_eq!(v["trials"], 2000);
    assert!((v["p_later_formula"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12);
    assert_eq!(v["by_l"].as_array().map(Vec::len), Some(4));
    assert!(dir.join("theorem1.svg").exists() && dir.join("theorem1.csv").exists());
}

#[test]
fn network_and_params_run_over_real_packets_too() {
    let dir = scratch("sphinx");
    let net = [
        "network",
        "--senders",
        "6",
        "--burn-in",
        "10",
        "--measure",
        "10",
        "--mu",
        "1,2",
        "--cover",
        "0.5",
        "--codec",
        "sphinx",
        "--json",
    ];
    let v = json(&sim(&dir, &net));
    assert_eq!(v["codec"], "sphinx");
    assert_eq!(
        v["results"].as_array().map(Vec::len),
        Some(2),
        "two µ, one cover"
    );
    let params = [
        "params",
        "--clients",
        "50",
        "--mu",
        "2",
        "--codec",
        "sphinx",
        "--json",
    ];
    let v = json(&sim(&dir, &params));
    assert_eq!(v["entropy_codec"], "sphinx");
    assert!((v["latency_mean_s"].as_f64().unwrap() - 2.5).abs() < 1e-9);
    assert!(v["mix_entropy_bits"].as_f64().unwrap() > 0.0);
    assert!(dir.join("params.svg").exists());
}

#[test]
fn bad_scenarios_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_loopix"))
        .args(["sim", "theorem1", "--n", "3", "--k", "5", "--out"])
        .arg(scratch("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("k <= n"));
}

/// `loopix sim chaos`: the JSON contract, exit 0 when every invariant held; and a broken
/// node (one that skips its journal writes) fails the sweep, naming the seed and the
/// invariant.
#[test]
fn chaos_reports_its_runs_and_fails_naming_the_seed_that_broke_an_invariant() {
    let chaos = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_loopix"))
            .args(["sim", "chaos", "--runs", "3", "--seed", "5"])
            .args(extra)
            .output()
            .expect("loopix runs")
    };
    let ok = chaos(&["--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v = json(&ok);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["failures"], serde_json::json!([]));
    for field in ["messages", "crashes", "restarts", "partitions", "replays"] {
        assert!(v[field].as_u64().unwrap() > 0, "{field}: {v}");
    }
    let broken = chaos(&["--skip-journal-writes"]);
    assert!(!broken.status.success());
    let said = String::from_utf8_lossy(&broken.stdout);
    assert!(
        said.contains("no replay forwarded") && said.contains("rerun: loopix sim chaos --seed "),
        "{said}"
    );
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("broke an invariant"),
        "{broken:?}"
    );
}
