//! The `capstan` binary: argument parsing and wiring only.

// `--features system-allocator` keeps the C library's malloc, which heap profilers
// (heaptrack, via LD_PRELOAD) can see; mimalloc's allocations bypass them.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: capstan_proxy::alloc::MiMalloc = capstan_proxy::alloc::MiMalloc;

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
            #[cfg(not(feature = "system-allocator"))]
            purge_freed_memory_soon();
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

/// Makes mimalloc hand pages that become free back to the OS after [`PURGE_DELAY_MS`] instead
/// of its default 1 s `purge_delay`. The control plane frees in bursts (a sync's generated
/// resources, the previous push context's caches, the watchers' listings) and allocates the
/// next burst within the second, so with the default every burst's freed pages stayed
/// resident on top of the next (docs/benchmarks.md, "The mesh's own footprint").
#[cfg(not(feature = "system-allocator"))]
fn purge_freed_memory_soon() {
    // SAFETY: `mi_option_set` only stores an option value; mimalloc reads it at its next purge.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// 10 ms, not 0: purging every freed span at once cost a TLB shootdown and a page fault per
/// span reused moments later — 10-30 % more server CPU per VirtualService change at 1,000
/// proxies (perf: IPIs and page faults 6 % of the samples) — while 10 ms keeps nearly all of
/// the memory (peak at 100 proxies 97 MiB against 94 at 0 and 105 at 1 s; one run each).
#[cfg(not(feature = "system-allocator"))]
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3); libmimalloc-sys names
/// only some of the options.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[cfg(not(feature = "system-allocator"))]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

#[cfg(all(test, not(feature = "system-allocator")))]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge delay is 1,000 ms; no other option defaults to it, so
        // this fails if the index names another option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        }
        purge_freed_memory_soon();
        assert_eq!(
            unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
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
