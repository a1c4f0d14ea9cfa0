//! The `capstan` binary: argument parsing and wiring only.

mod discovery;
mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Capstan: an Istio-compatible service-mesh control plane.
#[derive(Parser)]
#[command(name = "capstan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Discovery(discovery::Args),
    /// Validate Istio configuration files, like `istioctl validate`.
    Validate(validate::Args),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Discovery(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            match discovery::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate(args) => validate::run(&args),
        Command::Version => {
            println!("capstan {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
