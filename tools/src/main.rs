//! `loopix`: the command-line front end of the loopix mix engine.

mod keygen;
mod measure;
mod speed;

use clap::{Parser, Subcommand};

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
    /// Generate a key pair: secret key file (mode 0600), public key printed as hex.
    Keygen(keygen::KeygenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Speed(args) => speed::run(args),
        Cmd::Keygen(args) => keygen::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopix: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
