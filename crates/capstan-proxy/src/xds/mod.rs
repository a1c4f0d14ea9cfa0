//! The ADS client: Delta (or SotW) over one gRPC stream; applies responses through a
//! [`ResourceSink`] in Envoy's order, ACKs and NACKs, reconnects with jittered backoff.
//!
//! [`machine`] decides what to subscribe and answer (pure); [`delta`] and [`sotw`] speak the two
//! protocols over one stream each; this module connects, reconnects and keeps [`XdsStatus`].

mod delta;
mod machine;
mod sotw;
#[cfg(test)]
mod tests;

use crate::bootstrap::{AdsConfig, Bootstrap};
use crate::resources::ResourceSink;
use crate::stats::Stats;
use machine::Machine;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// The largest response accepted: Istio's config for a big mesh runs to tens of MB, and
/// Envoy sets no limit.
const MAX_MESSAGE: usize = 512 * 1024 * 1024;
/// First reconnect delay bound (full jitter: the delay is uniform in `[0, bound]`).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest reconnect delay bound.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A stream that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5);

/// The state of one resource type, as `/config_dump` and the stats show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeStatus {
    /// Version of the last accepted response.
    pub version: String,
    /// Nonce of the last response, accepted or not.
    pub nonce: String,
    /// When a response was last accepted.
    pub last_updated: Option<SystemTime>,
    /// Responses accepted.
    pub acks: u64,
    /// Responses rejected.
    pub nacks: u64,
    /// The last rejection's error detail and time (Envoy's `error_state`).
    pub last_error: Option<(String, SystemTime)>,
}

#[derive(Debug, Default)]
struct StatusInner {
    types: BTreeMap<String, TypeStatus>,
}

/// What the client reports for the admin endpoints: per type URL, the last applied version and
/// nonce, the last NACK's error, and whether the stream is up.
#[derive(Debug, Default)]
pub struct XdsStatus {
    connected: AtomicBool,
    inner: Mutex<StatusInner>,
    stats: Option<Arc<Stats>>,
    listeners_applied: watch::Sender<bool>,
}

impl XdsStatus {
    /// A status that also counts into `stats.server` (`control_plane.connected_state`,
    /// update success/rejected).
    pub fn with_stats(stats: Arc<Stats>) -> XdsStatus {
        XdsStatus {
            stats: Some(stats),
            ..XdsStatus::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner
            .lock()
            .expect("xDS status lock is never poisoned: nothing panics under it")
    }

    /// Whether an ADS stream is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        if let Some(s) = &self.stats {
            s.server.connected.set(i64::from(up));
        }
    }

    /// The status of `type_url`, if a response of it has arrived.
    pub fn type_status(&self, type_url: &str) -> Option<TypeStatus> {
        self.lock().types.get(type_url).cloned()
    }

    /// Every type's status, by type URL.
    pub fn types(&self) -> BTreeMap<String, TypeStatus> {
        self.lock().types.clone()
    }

    /// Responses accepted and rejected, all types.
    pub fn totals(&self) -> (u64, u64) {
        self.lock()
            .types
            .values()
            .fold((0, 0), |(a, n), t| (a + t.acks, n + t.nacks))
    }

    /// Whether a listener (LDS) response has been accepted: Envoy's readiness condition.
    pub fn listeners_applied(&self) -> bool {
        *self.listeners_applied.borrow()
    }

    /// Fires once a listener response has been accepted.
    pub fn subscribe_listeners_applied(&self) -> watch::Receiver<bool> {
        self.listeners_applied.subscribe()
    }

    /// Records one response; returns the version now held of its type.
    pub(crate) fn record(
        &self,
        type_url: &str,
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) -> String {
        let mut inner = self.lock();
        let t = inner.types.entry(type_url.to_string()).or_default();
        t.nonce = nonce.to_string();
        match error {
            None => {
                t.version = version.to_string();
                t.last_updated = Some(SystemTime::now());
                t.acks += 1;
            }
            Some(e) => {
                t.nacks += 1;
                t.last_error = Some((e.to_string(), SystemTime::now()));
            }
        }
        let held = t.version.clone();
        drop(inner);
        if let Some(s) = &self.stats {
            match error {
                None => s.server.update_success.inc(),
                Some(_) => s.server.update_rejected.inc(),
            }
        }
        if error.is_none() && type_url == crate::resources::LISTENER {
            self.listeners_applied.send_replace(true);
        }
        held
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The server could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    /// The endpoint is malformed.
    #[error("bad xDS endpoint {0}")]
    Endpoint(String),
    /// The server failed the stream.
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    /// The server closed the stream.
    #[error("server closed the stream")]
    Closed,
}

/// How to reach a secured control plane (istiod's 15012): TLS verified against `root_cert`
/// for `server_name`, the workload certificate presented when there is one, and the
/// ServiceAccount token in `authorization` (what pilot-agent does for Envoy).
#[derive(Debug, Clone)]
pub struct XdsTls {
    /// Roots trusted for the control plane's serving certificate.
    pub root_cert: std::path::PathBuf,
    /// Name expected on it.
    pub server_name: String,
    /// Bearer token file (re-read at every connection).
    pub token_file: Option<std::path::PathBuf>,
}

impl XdsTls {
    fn token(
        &self,
    ) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, StreamError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| StreamError::Endpoint(format!("token {}: {e}", path.display())))?;
        format!("Bearer {}", text.trim())
            .parse()
            .map(Some)
            .map_err(|_| {
                StreamError::Endpoint(format!("token {}: not a header value", path.display()))
            })
    }
}

/// Opens a TLS channel to `endpoint` (`http://host:port` names the address).
async fn connect_tls(endpoint: &str, tls: &XdsTls) -> Result<Channel, StreamError> {
    let address = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let roots = std::fs::read(&tls.root_cert)
        .map_err(|e| StreamError::Endpoint(format!("{}: {e}", tls.root_cert.display())))?;
    let config = crate::identity::ca::control_plane_tls(
        &roots,
        Some(crate::identity::Identity::workload().clone()),
    )
    .map_err(StreamError::Endpoint)?;
    crate::identity::ca::tls_channel(address, &tls.server_name, config)
        .await
        .map_err(StreamError::Endpoint)
}

/// Opens a channel to `endpoint`: `http://host:port` or `unix:/path`.
async fn connect(endpoint: &str) -> Result<Channel, StreamError> {
    let connect_err = |source| StreamError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let path = path.to_string();
        // The URI is not used: the connector dials the socket.
        let ep = Endpoint::from_static("http://localhost").connect_timeout(Duration::from_secs(5));
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        return ep
            .connect_with_connector(connector)
            .await
            .map_err(connect_err);
    }
    Endpoint::from_shared(endpoint.to_string())
        .map_err(|_| StreamError::Endpoint(endpoint.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(connect_err)
}

/// Delay bound after `attempt` consecutive failures: `BACKOFF_BASE · 2^attempt`, capped.
fn backoff_bound(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX)
}

/// Full jitter: uniform in `[0, bound]`.
fn jittered(bound: Duration) -> Duration {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// One stream: connect, speak the protocol until it ends or `shutdown` fires.
async fn run_stream(
    endpoint: &str,
    ads: &AdsConfig,
    bootstrap: &Bootstrap,
    machine: &mut Machine,
    status: &XdsStatus,
    shutdown: &mut watch::Receiver<bool>,
    tls: Option<&XdsTls>,
) -> Result<(), StreamError> {
    let (channel, token) = match tls {
        Some(t) => (connect_tls(endpoint, t).await?, t.token()?),
        None => (connect(endpoint).await?, None),
    };
    let node = bootstrap.node.clone();
    if ads.delta {
        delta::run(channel, token, node, machine, status, shutdown).await
    } else {
        sotw::run(channel, token, node, machine, status, shutdown).await
    }
}

/// Runs the ADS client until `shutdown` fires, reconnecting as needed.
pub async fn run(
    bootstrap: Bootstrap,
    sink: Arc<dyn ResourceSink>,
    status: Arc<XdsStatus>,
    shutdown: watch::Receiver<bool>,
) {
    run_with(bootstrap, sink, status, shutdown, None).await
}

/// [`run`], over TLS to a secured control plane when `tls` is given.
pub async fn run_with(
    bootstrap: Bootstrap,
    sink: Arc<dyn ResourceSink>,
    status: Arc<XdsStatus>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<XdsTls>,
) {
    let Some(ads) = bootstrap.ads.clone() else {
        tracing::error!("no ADS config in the bootstrap: the xDS client does not run");
        return;
    };
    let mut machine = Machine::new(sink, status.clone());
    let mut attempt: u32 = 0;
    // Where in the endpoint list to start: random, so the proxies of one bootstrap spread over
    // the replicas it lists, as behind a Service address.
    let mut next = fastrand::usize(..ads.endpoints.len().max(1));
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let endpoint = ads.endpoints[next % ads.endpoints.len()].clone();
        next = next.wrapping_add(1);
        let result = run_stream(
            &endpoint,
            &ads,
            &bootstrap,
            &mut machine,
            &status,
            &mut shutdown,
            tls.as_ref(),
        )
        .await;
        status.set_connected(false);
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(%endpoint, error = %e, "xDS stream ended"),
        }
        if started.elapsed() >= STABLE {
            attempt = 0;
        }
        let delay = jittered(backoff_bound(attempt));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The stream request, with `authorization` when a token is given.
fn with_token<T>(
    stream: T,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(stream);
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", t);
    }
    request
}

/// A NACK's `error_detail`: `google.rpc.Status` with code 3 (INVALID_ARGUMENT), as Envoy sends.
fn error_detail(message: &str) -> envoy_types::pb::google::rpc::Status {
    envoy_types::pb::google::rpc::Status {
        code: 3,
        message: message.to_string(),
        details: Vec::new(),
    }
}
