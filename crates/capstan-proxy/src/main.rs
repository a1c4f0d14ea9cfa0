//! The `capstan-proxy` binary: the sidecar / gateway alone, with `capstan proxy`'s flags. The
//! injected `istio-proxy` container runs it rather than the all-in-one `capstan`, whose control
//! plane (Kubernetes client, xDS server, validation) would otherwise sit in the proxy's mapped
//! pages (docs/benchmarks.md: file-backed RSS).

// `--features system-allocator` keeps the C library's malloc, which heap profilers
// (heaptrack, via LD_PRELOAD) can see; mimalloc's allocations bypass them.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: capstan_proxy::alloc::MiMalloc = capstan_proxy::alloc::MiMalloc;

use clap::Parser;
use std::process::ExitCode;

/// Capstan's sidecar / gateway, configured only by xDS (Envoy's v3 API, as Istio generates it);
/// the same flags as `capstan proxy`.
#[derive(Parser)]
#[command(name = "capstan-proxy", version)]
struct Cli {
    #[command(flatten)]
    args: capstan_proxy::cli::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match capstan_proxy::cli::run(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
