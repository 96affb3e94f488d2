//! `loopix stress`: runs the sweep ([`loopix_testnet::stress`]), draws its plots beside
//! `stress.json`, and prints the report. Loss under overload is a finding, not a failure;
//! a node that died, a message delivered twice or to the wrong client fails the run.

use std::path::{Path, PathBuf};

use loopix_testnet::stress::{self, StressArgs, StressReport};

use crate::plot::{Labels, Series, line_chart};

pub fn run(args: &StressArgs) -> Result<(), String> {
    if let Some(out) = &args.write_shadow {
        let loopix = std::env::current_exe().map_err(|e| e.to_string())?;
        let config = stress::shadow::write(args, out, &loopix)?;
        println!("{}", config.display());
        return Ok(());
    }
    let report = stress::run(args)?;
    let plots = plot(&report, Path::new(&report.report_dir))?;
    if args.json {
        loopix_load::json::print(&report)?;
    } else {
        print(&report, &plots);
    }
    if let Some(why) = report.steps.iter().find_map(|s| s.node_died.clone()) {
        return Err(why);
    }
    let bad: u64 = report
        .steps
        .iter()
        .map(|s| s.duplicates + s.misdelivered)
        .sum();
    if bad > 0 {
        return Err(format!(
            "{bad} messages delivered twice or to the wrong client"
        ));
    }
    Ok(())
}

/// Draws the latency CDF of every step, and latency, delivered share and clients per core
/// against client count; returns the files written.
fn plot(r: &StressReport, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let label =
        |s: &stress::Step| format!("{} clients, 1 msg/{} s", s.clients, s.message_interval_s);
    let cdf: Vec<Series> = r
        .steps
        .iter()
        .filter(|s| !s.latency_cdf_ms.is_empty())
        .map(|s| Series {
            label: label(s),
            points: s.latency_cdf_ms.clone(),
            reference: false,
        })
        .collect();
    let mut written = Vec::new();
    if !cdf.is_empty() {
        let path = dir.join("stress-latency-cdf.svg");
        line_chart(
            &path,
            &Labels {
                caption: "End-to-end latency, CDF per step",
                x: "latency (ms)",
                y: "share of delivered messages",
            },
            &cdf,
        )?;
        written.push(path);
    }
    // Per message rate, one curve against client count.
    let mut intervals: Vec<f64> = r.steps.iter().map(|s| s.message_interval_s).collect();
    intervals.sort_by(f64::total_cmp);
    intervals.dedup();
    let per_rate = |f: &dyn Fn(&stress::Step) -> f64, what: &str| -> Vec<Series> {
        intervals
            .iter()
            .map(|&i| Series {
                label: format!("{what}, 1 msg/{i} s"),
                points: r
                    .steps
                    .iter()
                    .filter(|s| s.message_interval_s == i)
                    .map(|s| (f64::from(s.clients), f(s)))
                    .collect(),
                reference: false,
            })
            .collect()
    };
    let mut latency = per_rate(&|s| s.latency_ms.p50, "p50");
    latency.extend(per_rate(&|s| s.latency_ms.p99, "p99"));
    let mut per_core = per_rate(&|s| s.clients_per_core, "measured");
    per_core.push(Series {
        label: "crypto floor".into(),
        points: r
            .steps
            .iter()
            .map(|s| (f64::from(s.clients), r.floor_clients_per_core))
            .collect(),
        reference: true,
    });
    let delivered = per_rate(
        &|s| {
            if s.sent == 0 {
                0.0
            } else {
                s.delivered as f64 / s.sent as f64
            }
        },
        "delivered / sent",
    );
    for (file, caption, y, series) in [
        (
            "stress-latency.svg",
            "End-to-end latency",
            "latency (ms)",
            latency,
        ),
        (
            "stress-delivered.svg",
            "Messages delivered",
            "delivered / sent",
            delivered,
        ),
        (
            "stress-clients-per-core.svg",
            "Clients per core of CPU used",
            "clients per core",
            per_core,
        ),
    ] {
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let path = dir.join(file);
        line_chart(
            &path,
            &Labels {
                caption,
                x: "clients",
                y,
            },
            &series,
        )?;
        written.push(path);
    }
    Ok(written)
}

fn print(r: &StressReport, plots: &[PathBuf]) {
    println!(
        "loopix stress: {} layers x {} mixes, {} providers{}; {} ({}, {})",
        r.layers,
        r.mixes_per_layer,
        r.providers,
        match r.shards {
            Some(n) => format!(", {n} shards each"),
            None => " (attached: node CPU not measured)".into(),
        },
        r.cpu_model,
        r.curve_backend,
        r.lanes_kernel
    );
    println!(
        "crypto floor: build {:.0} us, hop {:.1} us; a client-second costs {:.0} us at least: {:.0} clients per core",
        r.build_ns / 1e3,
        r.hop_ns / 1e3,
        r.floor_ns_per_client_s / 1e3,
        r.floor_clients_per_core
    );
    println!(
        "\n{:>7} {:>8} {:>7} {:>9} {:>5} {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>8} {:>7}",
        "clients",
        "msg/s",
        "sent",
        "delivered",
        "lost",
        "in flight",
        "p50 ms",
        "p99 ms",
        "resent",
        "jain",
        "late tm",
        "per core",
        "floor x"
    );
    for s in &r.steps {
        println!(
            "{:>7} {:>8.2} {:>7} {:>9} {:>5} {:>9} {:>8.0} {:>8.0} {:>6} {:>6.3} {:>7} {:>8.0} {:>7.2}",
            s.clients,
            f64::from(s.clients) / s.message_interval_s,
            s.sent,
            s.delivered,
            s.lost,
            s.in_flight,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.retransmitted,
            s.jain_fairness.unwrap_or(0.0),
            s.client_timers_late,
            s.clients_per_core,
            s.over_floor
        );
    }
    for s in &r.steps {
        if let Some(k) = &s.poisson {
            println!(
                "{} clients: departures {} Poisson (KS D {:.4} over {} gaps, 1 % critical {:.4})",
                s.clients,
                if k.poisson {
                    "pass as"
                } else {
                    "do not pass as"
                },
                k.d,
                k.n,
                k.critical_d
            );
        }
        let pools: Vec<String> = s
            .nodes
            .iter()
            .filter_map(|n| {
                Some(format!(
                    "{} {:.1}/{:.1}",
                    n.id, n.pool_packets?, n.pool_expected?
                ))
            })
            .collect();
        if !pools.is_empty() {
            println!("  mix pools held/expected (λ/µ): {}", pools.join(", "));
        }
        let drops: Vec<String> = s
            .nodes
            .iter()
            .filter(|n| !n.drops.is_empty())
            .map(|n| {
                let d: Vec<String> = n.drops.iter().map(|(r, c)| format!("{r}={c}")).collect();
                format!("{}: {}", n.id, d.join(" "))
            })
            .collect();
        if !drops.is_empty() {
            println!("  drops: {}", drops.join("; "));
        }
    }
    println!(
        "\nreport: {}/stress.json (the network's files: {})",
        r.report_dir, r.dir
    );
    for p in plots {
        println!("plot: {}", p.display());
    }
}
