//! The proxy process: config store, xDS client, listeners and admin servers wired together, and
//! Envoy's shutdown (on SIGTERM, SIGINT or `/quitquitquit`: stop being ready, stop accepting,
//! let in-flight requests finish within the drain window, exit 0).

use crate::admin::AdminState;
use crate::bootstrap::Bootstrap;
use crate::stats::Stats;
use crate::store::Store;
use crate::xds::{self, XdsStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How to run the proxy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Node, xDS server, admin address.
    pub bootstrap: Bootstrap,
    /// How long connections get to finish after shutdown starts (pilot-agent's
    /// `terminationDrainDuration`, default 5 s).
    pub drain_time: Duration,
    /// Istio's readiness port (15021, `/healthz/ready`); `None` to not serve it.
    pub readiness: Option<std::net::SocketAddr>,
    /// Where the workload certificate comes from (none: no mTLS).
    pub identity: IdentitySource,
    /// TLS and token for a secured control plane (istiod's 15012); None: plaintext.
    pub xds_tls: Option<crate::xds::XdsTls>,
}

/// Where the workload certificate (SDS `default` / `ROOTCA`) comes from.
#[derive(Debug, Clone, Default)]
pub enum IdentitySource {
    /// None: configuration that needs it fails its handshakes.
    #[default]
    None,
    /// Files in Istio's `/etc/certs` layout, re-read when they change.
    Files(std::path::PathBuf),
    /// The mesh CA.
    Ca(crate::identity::ca::CaOptions),
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bootstrap has no ADS config.
    #[error("the bootstrap has no dynamic_resources.ads_config: nothing to configure the proxy")]
    NoAds,
    /// An admin port could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Envoy's admin address under Istio.
const DEFAULT_ADMIN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

async fn bind(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs the proxy until it is asked to stop, then drains and returns.
pub async fn run(opts: Options) -> Result<(), RunError> {
    if opts.bootstrap.ads.is_none() {
        return Err(RunError::NoAds);
    }
    let stats = Arc::new(Stats::default());
    stats
        .istio
        .set_workload(crate::istio_metrics::Workload::from_node(
            &opts.bootstrap.node,
        ));
    let store = Store::new(stats.clone());
    let status = Arc::new(XdsStatus::with_stats(stats.clone()));
    let (shutdown_tx, shutdown) = watch::channel(false);

    let admin_addr = opts.bootstrap.admin.unwrap_or(DEFAULT_ADMIN);
    let admin_listener = bind("admin", admin_addr).await?;
    let readiness_listener = match opts.readiness {
        Some(addr) => Some(bind("readiness", addr).await?),
        None => None,
    };
    let admin = AdminState::new(
        store.clone(),
        stats.clone(),
        status.clone(),
        opts.bootstrap.clone(),
        shutdown_tx.clone(),
    );
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, admin.clone()));
    let readiness_task =
        readiness_listener.map(|l| tokio::spawn(crate::admin::serve_readiness(l, admin.clone())));
    tracing::info!(admin = %admin_addr, "capstan proxy starting");

    let identity = crate::identity::Identity::workload().clone();
    let identity_task = match opts.identity.clone() {
        IdentitySource::None => None,
        IdentitySource::Files(dir) => Some(tokio::spawn(crate::identity::files::run(
            dir,
            identity,
            Duration::from_secs(1),
        ))),
        IdentitySource::Ca(ca) => Some(tokio::spawn(crate::identity::ca::run(ca, identity))),
    };
    let xds = tokio::spawn(xds::run_with(
        opts.bootstrap.clone(),
        store.clone(),
        status.clone(),
        shutdown.clone(),
        opts.xds_tls.clone(),
    ));
    let listeners = tokio::spawn(crate::server::run(
        store.clone(),
        shutdown.clone(),
        opts.drain_time,
    ));
    let mut asked = shutdown.clone();
    tokio::select! {
        _ = signalled() => tracing::info!("signal received: draining"),
        _ = asked.wait_for(|s| *s) => tracing::info!("shutdown requested: draining"),
    }
    shutdown_tx.send_replace(true);
    let _ = listeners.await;
    xds.abort();
    if let Some(t) = identity_task {
        t.abort();
    }
    admin_task.abort();
    if let Some(t) = readiness_task {
        t.abort();
    }
    tracing::info!("drained; exiting");
    Ok(())
}
