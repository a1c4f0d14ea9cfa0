//! The `capstan` binary: argument parsing and wiring only.

// `--features system-allocator` keeps the C library's malloc, which heap profilers
// (heaptrack, via LD_PRELOAD) can see; mimalloc's allocations bypass them.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod discovery;
mod proxy_init;
mod proxy_status;
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
    /// Run the control plane (boxed: its flags make it the largest variant by far).
    Discovery(Box<discovery::Args>),
    /// Run the bundled sidecar / gateway, configured by xDS (like Envoy under pilot-agent).
    ///
    /// The `capstan-proxy` binary, which the injected sidecar runs, is the same code with the
    /// same flags without the control plane.
    Proxy(capstan_proxy::cli::Args),
    /// Install Istio's iptables traffic capture in the pod's network namespace (the injected
    /// `istio-init` container; `istio-iptables`' flags).
    ProxyInit(proxy_init::Args),
    /// Show every connected proxy's sync state per xDS type (like `istioctl proxy-status`).
    ProxyStatus(proxy_status::StatusArgs),
    /// Show what a proxy was sent (like `istioctl proxy-config`).
    ProxyConfig(proxy_status::ConfigArgs),
    /// Validate Istio configuration files, like `istioctl validate`.
    Validate(validate::Args),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Discovery(args) => {
            init_tracing();
            match discovery::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Proxy(args) => {
            init_tracing();
            report(capstan_proxy::cli::run(args))
        }
        Command::ProxyInit(args) => report(proxy_init::run(&args)),
        Command::Validate(args) => validate::run(&args),
        Command::ProxyStatus(args) => report(proxy_status::status(&args)),
        Command::ProxyConfig(args) => report(proxy_status::config(&args)),
        Command::Version => {
            println!("capstan {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
