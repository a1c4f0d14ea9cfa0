//! Graceful shutdown of `capstan discovery` on SIGTERM (what Kubernetes sends on every
//! rollout) or SIGINT: turn unready (`/ready` answers 503, new xDS streams get `UNAVAILABLE`),
//! close the open xDS streams spread over the drain window so their proxies move to the other
//! replicas a few at a time, stop the xDS and webhook servers once the requests in flight
//! are answered, and exit 0.

use anyhow::{Context as _, Result};
use capstan_xds::{AdsServer, IstioGenerator};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long the stopped servers get to finish what they are doing (a webhook request may take
/// the API server's default webhook timeout, 10 s).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The signals that start a shutdown, installed at start so that one arriving while the
/// process starts is not fatal.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Takes over SIGTERM and SIGINT.
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
        })
    }

    /// The name of the first signal received.
    async fn received(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// What the shutdown drains and stops.
pub struct Drain {
    /// The ADS server whose streams are drained.
    pub ads: AdsServer<IstioGenerator>,
    /// The window the stream closes are spread over.
    pub window: Duration,
    /// Turned true after the drain: the servers in `graceful` stop.
    pub stop: watch::Sender<bool>,
}

/// Why a server task ended before any signal.
fn ended(joined: Result<Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match joined {
        Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::Error::from(e).context("a server task failed"),
    }
}

/// Waits for a signal (or returns the error of a server that ends first), then drains:
/// `graceful` servers stop through `drain.stop` and are waited for (bounded); `others` (debug,
/// monitoring: /ready must answer 503 until the end) are then aborted.
pub async fn run(
    mut signals: Signals,
    mut graceful: JoinSet<Result<()>>,
    mut others: JoinSet<Result<()>>,
    drain: Drain,
) -> Result<()> {
    let name = tokio::select! {
        Some(joined) = graceful.join_next() => return Err(ended(joined)),
        Some(joined) = others.join_next() => return Err(ended(joined)),
        name = signals.received() => name,
    };
    tracing::info!(signal = name, window = ?drain.window, "shutting down: unready, draining xDS streams");
    drain.ads.drain(drain.window).await;
    drain.stop.send_replace(true);
    let finished = tokio::time::timeout(STOP_GRACE, async {
        while let Some(joined) = graceful.join_next().await {
            if let Err(e) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
                tracing::warn!(error = %format!("{e:#}"), "a server failed while stopping");
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(grace = ?STOP_GRACE, "servers still busy after the grace period; exiting anyway");
    }
    others.abort_all();
    tracing::info!("drained; exiting");
    Ok(())
}
