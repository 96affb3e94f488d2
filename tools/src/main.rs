//! `loopix`: the command-line front end of the loopix mix engine.

mod keygen;
mod logging;
mod plot;
mod sim_cli;
mod stress_cli;

use clap::{Parser, Subcommand};
use loopix_authority as directory;
use loopix_load::{json, loadgen, provider_load, soak, speed};
use loopix_runtime::service::{client, node};
use loopix_testnet as testnet;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Loopix anonymity system: a thread-per-core mix engine.
#[derive(Parser, Debug)]
#[command(name = "loopix", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure the per-hop crypto floor, processing and build time on this machine.
    Speed(speed::SpeedArgs),
    /// Generate a client key, or a node's seed of epoch keys (mode 0600), and print what
    /// the topology publishes.
    Keygen(keygen::KeygenArgs),
    /// Run a mix or a provider from its configuration file.
    #[command(after_help = "\
Signals: SIGINT or SIGTERM stop receiving, send what the wheels hold (at most grace_ms), \
flush the store and exit 0; SIGHUP re-reads the topology and the key file (keys that did \
not change keep their replay filters; settings only a restart applies are named in a \
warning).

Logs: stderr; LOOPIX_LOG sets the filter (default info, e.g. LOOPIX_LOG=debug); an \
invalid filter is an error.

Paths in node.toml (topology, key_file, inbox_path, replay_dir) are relative to the \
directory of node.toml. The key file must be mode 0600; <key_file>.lock keeps a second \
copy of the node from starting.")]
    Node(node::NodeArgs),
    /// A directory authority: register nodes and clients, take their signed keys, publish
    /// each epoch's signed network document.
    Directory(directory::DirectoryArgs),
    /// Run clients: send messages, print what arrives, cover traffic always on.
    Client(client::ClientArgs),
    /// Offer open-loop load to one node and measure its hop.
    Loadgen(loadgen::LoadgenArgs),
    /// Offer load to one node across key epochs, with replays (perf/soak.sh drives it).
    Soak(soak::SoakArgs),
    /// Load a provider with a population of client sessions: handshakes, packets, polls
    /// with acks, and deliveries from its mix (perf/provider.sh drives it).
    ProviderLoad(provider_load::ProviderLoadArgs),
    /// Run a whole network on loopback and report on it (the default main job).
    Testnet(testnet::TestnetArgs),
    /// Start a network and load it with many real clients in steps (client counts and
    /// message rates): delivery, latency, fairness, Poisson fidelity, pools, CPU per client.
    Stress(testnet::stress::StressArgs),
    /// Anonymity experiments on the node's own mixing code (paper §4): entropy, Theorem 1,
    /// the network challenge, and a parameter calculator.
    Sim(sim_cli::SimArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Every command, `--check` included: a mistaken LOOPIX_LOG is said at once.
    if let Err(e) = logging::filter() {
        eprintln!("loopix: {e}");
        return std::process::ExitCode::FAILURE;
    }
    // The long-running commands log; `--check` and the measuring tools print.
    let logs = match &cli.command {
        Cmd::Node(args) => !args.check,
        Cmd::Client(_) => true,
        Cmd::Directory(args) => args.serves(),
        _ => false,
    };
    if logs && let Err(e) = logging::init() {
        eprintln!("loopix: {e}");
        return std::process::ExitCode::FAILURE;
    }
    choose_kernel();
    // Before any packet work: where on the stack dalek's multiplication runs decides up to a
    // third of its cost in some builds (crypto/src/stack_position.rs). Key generation does
    // no packet work; it is spared the ~30 ms sweep.
    if !matches!(cli.command, Cmd::Keygen(_) | Cmd::Directory(_)) {
        loopix_crypto::stack_position::calibrate();
        // Then the lane kernel: the fastest this CPU runs, measured (~15 ms), unless
        // LOOPIX_KERNEL named one.
        loopix_crypto::lanes::calibrate::calibrate();
    }
    let result = match &cli.command {
        Cmd::Speed(args) => speed::run(args),
        Cmd::Keygen(args) => keygen::run(args),
        Cmd::Node(args) => node::run(args),
        Cmd::Testnet(args) => testnet::run(args),
        Cmd::Stress(args) => stress_cli::run(args),
        Cmd::Client(args) => client::run(args),
        Cmd::Directory(args) => directory::run(args),
        Cmd::Loadgen(args) => loadgen::run(args),
        Cmd::Sim(args) => sim_cli::run(args),
        Cmd::Soak(args) => soak::run(args),
        Cmd::ProviderLoad(args) => provider_load::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopix: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `LOOPIX_KERNEL` picks the lane kernel packets unwrap with (to compare kernels, or to rule
/// the lanes out with `portable`); a name this CPU cannot run, or no kernel's, falls back to
/// the one measured fastest, with a warning.
fn choose_kernel() {
    use loopix_crypto::lanes::Kernel;
    let Ok(asked) = std::env::var("LOOPIX_KERNEL") else {
        return;
    };
    match Kernel::named(&asked) {
        Ok(kernel) => {
            Kernel::use_in_process(kernel);
        }
        Err(e) => eprintln!("loopix: LOOPIX_KERNEL={asked}: {e}; using the one measured fastest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand and every flag of every subcommand says what it is for.
    #[test]
    fn every_flag_of_every_subcommand_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
