//! Envoy's admin interface on 127.0.0.1:15000 (`/config_dump`, `/clusters`, `/stats`,
//! `/stats/prometheus`, `/ready`, `/quitquitquit`, `/logging`) and Istio's readiness on 15021
//! (`/healthz/ready`).
//!
//! Everything is read from the store's snapshot, the xDS status and the counters when asked;
//! nothing here is on the data path.

mod clusters;
mod config_dump;
mod render;
mod stats;
#[cfg(test)]
mod tests;

use crate::bootstrap::Bootstrap;
use crate::stats::Stats;
use crate::store::Store;
use crate::xds::XdsStatus;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Changes the process's log level (`/logging?level=`); set by the binary, which owns the
/// tracing subscriber's reload handle.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin servers read and control.
pub struct AdminState {
    /// The config store (`/config_dump`, `/clusters`).
    pub store: Arc<Store>,
    /// The counters (`/stats`).
    pub stats: Arc<Stats>,
    /// The xDS client's status (versions, readiness).
    pub status: Arc<XdsStatus>,
    /// The bootstrap (`/config_dump`'s BootstrapConfigDump).
    pub bootstrap: Bootstrap,
    /// Fired by `/quitquitquit`; once fired, the proxy reports DRAINING.
    pub shutdown: watch::Sender<bool>,
    /// Sets the log level; `None` when the binary offers no way to (then `/logging` says so).
    pub set_log_level: Option<SetLogLevel>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("node", &self.bootstrap.node.id)
            .finish_non_exhaustive()
    }
}

/// Envoy's server state, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No listener response accepted yet.
    Initializing,
    /// Serving.
    Live,
    /// Shutting down.
    Draining,
}

impl Readiness {
    /// Envoy's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Initializing => "INITIALIZING",
            Readiness::Live => "LIVE",
            Readiness::Draining => "DRAINING",
        }
    }
}

impl AdminState {
    /// The admin state over the process's store, counters and xDS status.
    pub fn new(
        store: Arc<Store>,
        stats: Arc<Stats>,
        status: Arc<XdsStatus>,
        bootstrap: Bootstrap,
        shutdown: watch::Sender<bool>,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            store,
            stats,
            status,
            bootstrap,
            shutdown,
            set_log_level: None,
        })
    }

    /// LIVE once the first listener response has been applied, DRAINING once shutdown started.
    pub fn readiness(&self) -> Readiness {
        if *self.shutdown.borrow() {
            Readiness::Draining
        } else if self.status.listeners_applied() {
            Readiness::Live
        } else {
            Readiness::Initializing
        }
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    reply(status, "text/plain; charset=UTF-8", body)
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Envoy's mutating endpoints require POST.
fn post_only() -> Response<Body> {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        "This endpoint requires POST.\n",
    )
}

fn logging(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return post_only();
    }
    let Some(level) = query_param(req.uri().query(), "level") else {
        return text(
            StatusCode::BAD_REQUEST,
            "usage: POST /logging?level=<trace|debug|info|warning|error|off>\n",
        );
    };
    // Envoy's level names; tracing says "warn".
    let level = match level {
        "warning" | "critical" => "warn",
        l => l,
    };
    match &state.set_log_level {
        None => text(
            StatusCode::NOT_IMPLEMENTED,
            "this process cannot change its log level at run time\n",
        ),
        Some(set) => match set(level) {
            Ok(()) => text(StatusCode::OK, format!("log level set to {level}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
    }
}

/// Answers one admin request.
fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match path {
        "/config_dump" => reply(
            StatusCode::OK,
            "application/json",
            config_dump::render(state),
        ),
        "/clusters" => text(StatusCode::OK, clusters::render(state)),
        "/stats" => text(StatusCode::OK, stats::text(state)),
        "/stats/prometheus" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            stats::prometheus(state),
        ),
        "/ready" => {
            let r = state.readiness();
            let code = if r == Readiness::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, format!("{}\n", r.as_str()))
        }
        "/quitquitquit" => {
            if req.method() != Method::POST {
                return post_only();
            }
            tracing::info!("shutdown requested through /quitquitquit");
            state.shutdown.send_replace(true);
            text(StatusCode::OK, "OK\n")
        }
        "/logging" => logging(state, req),
        "/" => text(
            StatusCode::OK,
            "admin commands are:\n  /clusters\n  /config_dump\n  /logging\n  /quitquitquit\n  /ready\n  /stats\n  /stats/prometheus\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "invalid path. try /\n"),
    }
}

/// Istio's readiness probe: 200 when live, 503 otherwise.
fn handle_readiness(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/healthz/ready" {
        return text(StatusCode::NOT_FOUND, "");
    }
    match state.readiness() {
        Readiness::Live => text(StatusCode::OK, ""),
        r => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", r.as_str()),
        ),
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AdminState>,
    handler: fn(&AdminState, &Request<Incoming>) -> Response<Body>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = handler(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// Serves Envoy's admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    accept_loop(listener, state, handle).await;
}

/// Serves Istio's readiness endpoint (`/healthz/ready`, port 15021) until the task is dropped.
pub async fn serve_readiness(listener: TcpListener, state: Arc<AdminState>) {
    accept_loop(listener, state, handle_readiness).await;
}

/// RFC 3339 UTC time of `secs` since the Unix epoch (`last_updated` in config dumps).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
