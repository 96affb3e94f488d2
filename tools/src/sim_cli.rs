//! `loopix sim`: the anonymity experiments of `loopix_sim::anonymity` from the command
//! line. Each subcommand prints a table (or one JSON object with `--json`), and writes a
//! CSV and an SVG plot into `--out`, saying where on stderr. Nothing in the output depends
//! on the wall clock: the same seed gives byte-identical files.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use loopix_core::formats::codec::{Codec, Plaintext};
use loopix_crypto::Processor;
use loopix_sim::anonymity::mix_entropy::{self, EntropyConfig, EntropyResult};
use loopix_sim::anonymity::network_gpa::{self, NetworkConfig, NetworkResult};
use loopix_sim::anonymity::params_calc::{self, ParamsInput};
use loopix_sim::anonymity::theorem1::{self, Theorem1Config, Theorem1Result};
use loopix_sim::stats::erlang_cdf;
use serde::Serialize;

use crate::json;
use crate::plot::{Labels, Series, line_chart};

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    #[command(subcommand)]
    which: SimCmd,
}

#[derive(Subcommand, Debug, Clone)]
enum SimCmd {
    /// Entropy of one Poisson mix's outputs against λ and µ, with and without mix loops.
    MixEntropy(MixEntropyArgs),
    /// The observation o(n,k,l) of Theorem 1, simulated against the formula.
    Theorem1(Theorem1Args),
    /// The §4.3 experiment: can a global passive adversary tell S0's messages from S1's?
    Network(NetworkArgs),
    /// What given rates, µ, layers and clients buy: pool, latency, overhead, entropy.
    Params(ParamsArgs),
    /// Crashes, restarts, partitions and replays in many seeded runs of a small network,
    /// each checked against the invariants (no duplicate, no silent loss, no replay
    /// forwarded, every drop counted); exits non-zero naming each failing seed.
    Chaos(ChaosArgs),
    /// A whole network at scale in virtual time (the real core, the stand-in codec):
    /// delivery, latency, fairness, the Poisson test of departures, each node's load and
    /// each mix's pool against λ/µ, and what the run cost this machine.
    Scale(ScaleArgs),
}

#[derive(Args, Debug, Clone)]
struct ScaleArgs {
    /// Mix layers.
    #[arg(long, default_value_t = 3)]
    layers: u8,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 2)]
    mixes_per_layer: u32,
    /// Providers (the clients are spread over them).
    #[arg(long, default_value_t = 2)]
    providers: u32,
    /// Clients, each the real client core.
    #[arg(long, default_value_t = 100)]
    clients: u32,
    /// Simulated seconds during which clients are given messages.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Simulated seconds after that for the last messages to arrive.
    #[arg(long, default_value_t = 20)]
    drain_s: u64,
    /// Mean seconds between one client's real messages.
    #[arg(long, default_value_t = 2.0)]
    message_interval_s: f64,
    /// The seed: one seed, one report.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object: the report (`sent`, `delivered`, `lost`, `in_flight`,
    /// `latency_ms`, `jain_fairness`, `poisson`, `pool_over_expected`, `per_node` ...) and
    /// `wall_s`, what it took this machine.
    #[arg(long)]
    json: bool,
}

fn scale_cmd(a: &ScaleArgs) -> Result<(), String> {
    use loopix_sim::scale::{ScaleConfig, run};
    let config = ScaleConfig {
        layers: a.layers,
        mixes_per_layer: a.mixes_per_layer,
        providers: a.providers,
        clients: a.clients,
        duration_s: a.duration_s,
        drain_s: a.drain_s,
        message_interval_s: a.message_interval_s,
        seed: a.seed,
        ..ScaleConfig::default()
    };
    let started = std::time::Instant::now();
    let r = run(&config)?;
    let wall_s = started.elapsed().as_secs_f64();
    let simulated = f64::from(r.nodes + r.clients);
    if a.json {
        json::print(&serde_json::json!({
            "config": config,
            "report": r,
            "wall_s": wall_s,
            "wall_ms_per_simulated_s_per_node_or_client":
                wall_s * 1e3 / r.simulated_s.max(1) as f64 / simulated,
        }))?;
    } else {
        println!(
            "{} nodes, {} clients, {} simulated s (seed {}): {} messages sent, {} delivered, \
             {} lost, {} in flight, {} duplicated; latency p50 {:.0} ms, p99 {:.0} ms; \
             Jain {:.4}; departures KS D {:.4} ({}); pools / λ/µ {:.3}; {} datagrams; \
             {wall_s:.1} s of this machine",
            r.nodes,
            r.clients,
            r.simulated_s,
            a.seed,
            r.sent,
            r.delivered,
            r.lost,
            r.in_flight,
            r.duplicates,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.jain_fairness.unwrap_or(0.0),
            r.poisson.map_or(f64::NAN, |k| k.d),
            if r.poisson.is_some_and(|k| k.poisson) {
                "Poisson"
            } else {
                "not Poisson"
            },
            r.pool_over_expected.unwrap_or(f64::NAN),
            r.datagrams,
        );
    }
    if r.duplicates + r.misdelivered > 0 {
        return Err(format!(
            "{} duplicated, {} misdelivered",
            r.duplicates, r.misdelivered
        ));
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
struct ChaosArgs {
    /// The first seed; runs use `seed`, `seed + 1`, ...
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many runs.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Seconds of traffic and chaos in each run (then it heals and drains).
    #[arg(long, default_value_t = 60)]
    chaos_s: u64,
    /// Print one JSON object (`runs`, `failures`, `messages`, `delivered`, `gave_up`,
    /// `crashes`, `restarts`, `partitions`, `replays`, `documents`, `failed_commits`).
    #[arg(long)]
    json: bool,
    /// Nodes skip their replay journal writes: a broken node the sweep must catch (for
    /// the test that shows it does).
    #[arg(long, hide = true)]
    skip_journal_writes: bool,
}

fn chaos_cmd(a: &ChaosArgs) -> Result<(), String> {
    use loopix_sim::chaos::{ChaosConfig, sweep};
    if a.runs == 0 || a.chaos_s < 10 {
        return Err("--runs must be at least 1 and --chaos-s at least 10".into());
    }
    let config = ChaosConfig {
        chaos_s: a.chaos_s,
        journal_writes: !a.skip_journal_writes,
        ..ChaosConfig::default()
    };
    let s = sweep(a.seed, a.runs, &config);
    let failures: Vec<serde_json::Value> = s
        .failures
        .iter()
        .map(|(seed, v)| {
            serde_json::json!({ "seed": seed, "invariant": v.invariant, "detail": v.detail })
        })
        .collect();
    if a.json {
        json::print(&serde_json::json!({
            "runs": s.runs,
            "failures": failures,
            "messages": s.totals.messages,
            "delivered": s.totals.delivered,
            "gave_up": s.totals.gave_up,
            "crashes": s.totals.crashes,
            "restarts": s.totals.restarts,
            "partitions": s.totals.partitions,
            "replays": s.totals.replays,
            "documents": s.totals.documents,
            "failed_commits": s.totals.failed_commits,
        }))?;
    } else {
        println!("{s} (seeds {}..={})", a.seed, a.seed + a.runs as u64 - 1);
        for (seed, v) in &s.failures {
            println!("seed {seed}: {v} (rerun: loopix sim chaos --seed {seed} --runs 1)");
        }
    }
    if s.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} runs broke an invariant",
            s.failures.len(),
            s.runs
        ))
    }
}

/// The packet format the node code runs over.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum CodecChoice {
    /// Cheap stand-in: same routing, no crypto (for long runs).
    Plaintext,
    /// Real Sphinx packets (~50 µs per hop).
    Sphinx,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Seed for every random choice; the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the CSV and SVG files.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// The packet format the node code runs over in the experiment.
    #[arg(long, value_enum, default_value_t = CodecChoice::Plaintext)]
    codec: CodecChoice,
}

#[derive(Args, Debug, Clone)]
struct MixEntropyArgs {
    /// Incoming rates λ (packets/s), comma-separated [default: 1,2,5,10,20,50,100].
    #[arg(long = "lambda-per-s", alias = "lambda", value_delimiter = ',', default_values_t = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0], hide_default_value = true)]
    lambda: Vec<f64>,
    /// Delay parameters µ (1/s; mean delay 1/µ), comma-separated [default: 0.5,1,2].
    #[arg(long = "mu-per-s", alias = "mu", value_delimiter = ',', default_values_t = [0.5, 1.0, 2.0], hide_default_value = true)]
    mu: Vec<f64>,
    /// The mix's own loop rate λM (packets/s) in the runs with loops.
    #[arg(
        long = "lambda-mix-loop-per-s",
        alias = "lambda-mix",
        default_value_t = 5.0
    )]
    lambda_mix: f64,
    /// Outputs averaged per point after the burn-in.
    #[arg(long, default_value_t = 20_000)]
    outputs: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone)]
struct Theorem1Args {
    /// Packets that enter the mix together at first.
    #[arg(long, default_value_t = 10)]
    n: u64,
    /// Of those, how many are still inside when the later ones arrive.
    #[arg(long, default_value_t = 4)]
    k: u64,
    /// Packets that arrive after n - k have left.
    #[arg(long, default_value_t = 6)]
    l: u64,
    /// Trials per point (the plot also runs every l' below l).
    #[arg(long, default_value_t = 10_000)]
    trials: u64,
    /// µ (1/s): each packet's delay is Exp(µ).
    #[arg(long = "mu-per-s", alias = "mu", default_value_t = 1.0)]
    mu: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone)]
struct NetworkArgs {
    /// Delay parameters µ (per time unit), comma-separated [default: 1,4].
    #[arg(long = "mu-per-s", alias = "mu", value_delimiter = ',', default_values_t = [1.0, 4.0], hide_default_value = true)]
    mu: Vec<f64>,
    /// Cover rates (client loop = client drop = mix loop rate), comma-separated
    /// [default: 0.5,2].
    #[arg(long = "cover-per-s", alias = "cover", value_delimiter = ',', default_values_t = [0.5, 2.0], hide_default_value = true)]
    cover: Vec<f64>,
    /// λP: each client's payload rate.
    #[arg(
        long = "lambda-payload-per-s",
        alias = "lambda-payload",
        default_value_t = 2.0
    )]
    lambda_payload: f64,
    /// Clients (S0 and S1 among them).
    #[arg(long, default_value_t = 100)]
    senders: u32,
    /// Mix layers.
    #[arg(long, default_value_t = 3)]
    layers: u8,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 2)]
    mixes_per_layer: u32,
    /// Providers.
    #[arg(long, default_value_t = 2)]
    providers: u32,
    /// Time units before S0 and S1 start sending.
    #[arg(long, default_value_t = 2500)]
    burn_in: u64,
    /// Time units measured after the burn-in.
    #[arg(long, default_value_t = 300)]
    measure: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone)]
struct ParamsArgs {
    /// Clients of the network.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Mix layers.
    #[arg(long, default_value_t = 3)]
    layers: u8,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 3)]
    mixes_per_layer: u32,
    /// µ (1/s): each hop's delay is Exp(µ), mean 1/µ.
    #[arg(long = "mu-per-s", alias = "mu", default_value_t = 10.0)]
    mu: f64,
    /// λP: each client's payload rate.
    #[arg(
        long = "lambda-payload-per-s",
        alias = "lambda-payload",
        default_value_t = 1.0
    )]
    lambda_payload: f64,
    /// λL: each client's loop rate.
    #[arg(
        long = "lambda-loop-per-s",
        alias = "lambda-loop",
        default_value_t = 1.0
    )]
    lambda_loop: f64,
    /// λD: each client's drop rate.
    #[arg(
        long = "lambda-drop-per-s",
        alias = "lambda-drop",
        default_value_t = 1.0
    )]
    lambda_drop: f64,
    /// λM: each mix's loop rate.
    #[arg(
        long = "lambda-mix-loop-per-s",
        alias = "lambda-mix",
        default_value_t = 1.0
    )]
    lambda_mix: f64,
    /// Bytes of one packet on the wire.
    #[arg(long, default_value_t = 2368)]
    packet_bytes: usize,
    #[command(flatten)]
    common: Common,
}

/// Calls `$cmd::<C>($args)` with the codec `$args.common.codec` names.
macro_rules! with_codec {
    ($cmd:ident, $args:expr) => {
        match $args.common.codec {
            CodecChoice::Plaintext => $cmd::<Plaintext>($args),
            CodecChoice::Sphinx => $cmd::<Processor>($args),
        }
    };
}

pub fn run(args: &SimArgs) -> Result<(), String> {
    match &args.which {
        SimCmd::MixEntropy(a) => with_codec!(mix_entropy_cmd, a),
        SimCmd::Theorem1(a) => with_codec!(theorem1_cmd, a),
        SimCmd::Network(a) => with_codec!(network_cmd, a),
        SimCmd::Params(a) => with_codec!(params_cmd, a),
        SimCmd::Chaos(a) => chaos_cmd(a),
        SimCmd::Scale(a) => scale_cmd(a),
    }
}

#[derive(Serialize)]
struct Sweep<T> {
    codec: &'static str,
    seed: u64,
    results: Vec<T>,
}

fn mix_entropy_cmd<C: Codec>(a: &MixEntropyArgs) -> Result<(), String> {
    let mut results = Vec::new();
    for &mu in &a.mu {
        for &lambda in &a.lambda {
            for mix_loops in [false, true] {
                if !(lambda > 0.0 && mu > 0.0) {
                    return Err(format!("λ {lambda} and µ {mu} must be positive"));
                }
                results.push(mix_entropy::run::<C>(&EntropyConfig {
                    lambda,
                    mu,
                    lambda_mix: a.lambda_mix,
                    mix_loops,
                    outputs: a.outputs,
                    burn_in_delays: 20.0,
                    seed: a.common.seed,
                }));
            }
        }
    }
    let csv = to_csv(&results)?;
    let series = entropy_series(&results, &a.mu);
    let labels = Labels {
        caption: "Entropy of a Poisson mix's output vs incoming rate",
        x: "incoming rate λ (packets/s)",
        y: "entropy (bits)",
    };
    let mut table = format!("codec {}  seed {}\n", C::NAME, a.common.seed);
    let _ = writeln!(
        table,
        "{:>8} {:>6} {:>6} {:>10} {:>10} {:>12}",
        "λ", "µ", "loops", "mean pool", "λ/µ", "entropy"
    );
    for r in &results {
        let _ = writeln!(
            table,
            "{:>8} {:>6} {:>6} {:>10.2} {:>10.2} {:>10.3} b",
            r.lambda, r.mu, r.mix_loops, r.mean_pool, r.expected_pool, r.entropy_bits
        );
    }
    let json = Sweep {
        codec: C::NAME,
        seed: a.common.seed,
        results,
    };
    emit(
        &a.common,
        "mix-entropy",
        &csv,
        &labels,
        &series,
        &json,
        &table,
    )
}

fn entropy_series(results: &[EntropyResult], mus: &[f64]) -> Vec<Series> {
    let mut out = Vec::new();
    for &mu in mus {
        for loops in [false, true] {
            let points = results
                .iter()
                .filter(|r| r.mu == mu && r.mix_loops == loops)
                .map(|r| (r.lambda, r.entropy_bits))
                .collect();
            let label = match loops {
                false => format!("µ = {mu}, no mix loops"),
                true => format!("µ = {mu}, mix loops"),
            };
            out.push(Series {
                label,
                points,
                reference: false,
            });
        }
    }
    out
}

#[derive(Serialize)]
struct Theorem1Output {
    #[serde(flatten)]
    result: Theorem1Result,
    seed: u64,
    /// The same n and k for every l' from 0 to l (what the plot shows).
    by_l: Vec<Theorem1Result>,
}

fn theorem1_cmd<C: Codec>(a: &Theorem1Args) -> Result<(), String> {
    let run = |l| {
        theorem1::run::<C>(&Theorem1Config {
            n: a.n,
            k: a.k,
            l,
            trials: a.trials,
            mu: a.mu,
            seed: a.common.seed,
        })
        .map_err(|e| format!("theorem1: {e}"))
    };
    let by_l = (0..=a.l).map(run).collect::<Result<Vec<_>, _>>()?;
    let result = by_l.last().cloned().ok_or("no result")?;
    let csv = to_csv(&by_l)?;
    let pick = |f: fn(&Theorem1Result) -> f64, from: usize| -> Vec<(f64, f64)> {
        by_l.iter().skip(from).map(|r| (r.l as f64, f(r))).collect()
    };
    let series = vec![
        series(
            "one of the first n (simulated)",
            pick(|r| r.p_first_empirical, 0),
            false,
        ),
        series(
            "k / (n(l+k)) (Theorem 1)",
            pick(|r| r.p_first_formula, 0),
            true,
        ),
        series(
            "one of the later l (simulated)",
            pick(|r| r.p_later_empirical, 1),
            false,
        ),
        series(
            "1 / (l+k) (Theorem 1)",
            pick(|r| r.p_later_formula, 1),
            true,
        ),
    ];
    let caption = format!(
        "Theorem 1, n = {}, k = {}: which message leaves next",
        a.n, a.k
    );
    let labels = Labels {
        caption: &caption,
        x: "messages arrived later (l)",
        y: "probability, per message",
    };
    let r = &result;
    let table = format!(
        "o(n={}, k={}, l={}), {} trials, codec {}\n  each of the first n: {:.5} ± {:.5} (theorem {:.5})\n  each of the later l: {:.5} ± {:.5} (theorem {:.5})\n",
        r.n,
        r.k,
        r.l,
        r.trials,
        r.codec,
        r.p_first_empirical,
        r.p_first_stderr,
        r.p_first_formula,
        r.p_later_empirical,
        r.p_later_stderr,
        r.p_later_formula
    );
    let json = Theorem1Output {
        result,
        seed: a.common.seed,
        by_l,
    };
    emit(&a.common, "theorem1", &csv, &labels, &series, &json, &table)
}

fn series(label: &str, points: Vec<(f64, f64)>, reference: bool) -> Series {
    Series {
        label: label.to_string(),
        points,
        reference,
    }
}

fn network_cmd<C: Codec>(a: &NetworkArgs) -> Result<(), String> {
    let mut results = Vec::new();
    for &mu in &a.mu {
        for &cover in &a.cover {
            let cfg = NetworkConfig {
                layers: a.layers,
                mixes_per_layer: a.mixes_per_layer,
                providers: a.providers,
                senders: a.senders,
                mu,
                lambda_payload: a.lambda_payload,
                cover,
                burn_in_units: a.burn_in,
                measure_units: a.measure,
                seed: a.common.seed,
            };
            results.push(network_gpa::run::<C>(&cfg).map_err(|e| format!("network: {}", e.0))?);
        }
    }
    let csv = to_csv(&results)?;
    let series: Vec<Series> = results.iter().map(epsilon_cdf).collect();
    let labels = Labels {
        caption: "Adversary's likelihood ratio for challenge messages (CDF)",
        x: "ε = |ln(p(S0) / p(S1))|",
        y: "fraction of challenge messages",
    };
    let mut table = format!("codec {}  seed {}\n", C::NAME, a.common.seed);
    let _ = writeln!(
        table,
        "{:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "µ", "cover", "packets", "ε mean", "ε p95", "accuracy", "advantage"
    );
    for r in &results {
        let _ = writeln!(
            table,
            "{:>6} {:>6} {:>8} {:>9.4} {:>9.4} {:>9.3} {:>9.3}",
            r.mu,
            r.cover,
            r.challenge_packets,
            r.epsilon_mean + 0.0,
            r.epsilon_p95,
            r.guess_accuracy,
            r.advantage
        );
    }
    let json = Sweep {
        codec: C::NAME,
        seed: a.common.seed,
        results,
    };
    emit(&a.common, "network", &csv, &labels, &series, &json, &table)
}

/// The empirical CDF of ε, thinned to at most ~200 points.
fn epsilon_cdf(r: &NetworkResult) -> Series {
    let n = r.epsilons.len();
    let step = n.div_ceil(200).max(1);
    let points = (0..n)
        .step_by(step)
        .chain((n > 0).then(|| n - 1))
        .map(|i| (r.epsilons[i], (i + 1) as f64 / n as f64))
        .collect();
    series(&format!("µ = {}, cover = {}", r.mu, r.cover), points, false)
}

#[derive(Serialize)]
struct ParamsOutput {
    clients: u32,
    layers: u8,
    mixes_per_layer: u32,
    mu: f64,
    lambda_payload: f64,
    lambda_loop: f64,
    lambda_drop: f64,
    lambda_mix: f64,
    #[serde(flatten)]
    report: params_calc::ParamsReport,
}

fn params_cmd<C: Codec>(a: &ParamsArgs) -> Result<(), String> {
    let input = ParamsInput {
        clients: a.clients,
        layers: a.layers,
        mixes_per_layer: a.mixes_per_layer,
        mu: a.mu,
        lambda_payload: a.lambda_payload,
        lambda_loop: a.lambda_loop,
        lambda_drop: a.lambda_drop,
        lambda_mix: a.lambda_mix,
        packet_bytes: a.packet_bytes,
        seed: a.common.seed,
    };
    let r = params_calc::calculate::<C>(&input).map_err(|e| format!("params: {}", e.0))?;
    let rows = [
        ("mix_input_pps", r.mix_input_pps),
        ("expected_pool", r.expected_pool),
        ("latency_mean_s", r.latency_mean_s),
        ("latency_p99_s", r.latency_p99_s),
        ("client_pps", r.client_pps),
        ("client_cover_share", r.client_cover_share),
        ("client_bytes_per_s", r.client_bytes_per_s),
        ("overhead_factor", r.overhead_factor),
        ("mix_entropy_bits", r.mix_entropy_bits),
    ];
    let csv = to_csv(&rows.map(|(quantity, value)| Quantity { quantity, value }))?;
    let shape = u32::from(a.layers) + 2;
    let cdf = erlang_cdf(shape, a.mu);
    let end = r.latency_p99_s * 1.3;
    let curve = (0..=100)
        .map(|i| end * f64::from(i) / 100.0)
        .map(|x| (x, cdf(x)));
    let series = vec![
        series(
            &format!("Gamma({shape}, µ = {})", a.mu),
            curve.collect(),
            false,
        ),
        series(
            "mean and p99",
            vec![
                (r.latency_mean_s, cdf(r.latency_mean_s)),
                (r.latency_p99_s, 0.99),
            ],
            true,
        ),
    ];
    let labels = Labels {
        caption: "End-to-end latency from the mixing delays (CDF)",
        x: "seconds",
        y: "fraction of messages delivered",
    };
    let table: String = rows
        .iter()
        .map(|(k, v)| format!("{k:>20}  {v:.4}\n"))
        .collect();
    let json = ParamsOutput {
        clients: a.clients,
        layers: a.layers,
        mixes_per_layer: a.mixes_per_layer,
        mu: a.mu,
        lambda_payload: a.lambda_payload,
        lambda_loop: a.lambda_loop,
        lambda_drop: a.lambda_drop,
        lambda_mix: a.lambda_mix,
        report: r,
    };
    emit(&a.common, "params", &csv, &labels, &series, &json, &table)
}

/// One CSV row of `params`.
#[derive(Serialize)]
struct Quantity {
    quantity: &'static str,
    value: f64,
}

/// Rows as CSV with a header from the field names.
fn to_csv<T: Serialize>(rows: &[T]) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| format!("csv: {e}"))?;
    }
    let bytes = w.into_inner().map_err(|e| format!("csv: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("csv: {e}"))
}

/// Writes `<out>/<name>.csv` and `<out>/<name>.svg`, prints `json` (with `--json`) or
/// `table`, and says on stderr where the files went.
fn emit(
    common: &Common,
    name: &str,
    csv: &str,
    labels: &Labels,
    series: &[Series],
    json: &impl Serialize,
    table: &str,
) -> Result<(), String> {
    let out = &common.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let csv_path = out.join(format!("{name}.csv"));
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let svg_path = out.join(format!("{name}.svg"));
    line_chart(&svg_path, labels, series)?;
    if common.json {
        json::print(json)?;
    } else {
        print!("{table}");
    }
    eprintln!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}
