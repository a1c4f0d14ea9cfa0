//! Upstream connections. HTTP/1.1 goes through the cluster's own pool ([`super::http1_pool`]);
//! HTTP/2 through one hyper-util legacy `Client` per endpoint, whose connector always dials that
//! endpoint, so the request keeps the caller's authority (`Host` for HTTP/1, `:authority` for
//! HTTP/2) while connections are pooled per endpoint. Both enforce `max_connections` (a request
//! waits for a free connection, as Envoy's pending requests, up to `max_pending_requests`
//! waiters and `connect_timeout`), count connections, and retire a connection after
//! `max_requests_per_connection`.

use super::breaker::{Breaker, Permit, Resource};
use super::http1_pool::{Http1Pool, UpstreamBody};
use super::{Outgoing, UpstreamError};
use crate::http::BoxBody;
use crate::stats::ClusterStats;
use hyper_util::client::legacy::connect::{
    capture_connection, Connected, Connection, HttpConnector,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which HTTP version is spoken upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Envoy's default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (explicit `http2_protocol_options`).
    Http2,
    /// The downstream request's version (`use_downstream_protocol_config`).
    Downstream,
}

/// HTTP/2 settings from `http2_protocol_options`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Http2Settings {
    /// `initial_stream_window_size`.
    pub initial_stream_window: Option<u32>,
    /// `initial_connection_window_size`.
    pub initial_connection_window: Option<u32>,
    /// `hpack_table_size`.
    pub header_table_size: Option<u32>,
    /// `connection_keepalive.interval`.
    pub keepalive_interval: Option<Duration>,
    /// `connection_keepalive.timeout`.
    pub keepalive_timeout: Option<Duration>,
}

/// Connection settings of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Upstream HTTP version.
    pub protocol: UpstreamProtocol,
    /// `connect_timeout` (default 5s).
    pub connect_timeout: Duration,
    /// `common_http_protocol_options.idle_timeout` (Envoy's default 1h; None: never).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection` (None: unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2 settings.
    pub http2: Http2Settings,
    /// `upstream_bind_config.source_address`.
    pub bind: Option<IpAddr>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
            http2: Http2Settings::default(),
            bind: None,
        }
    }
}

/// Why the connector gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `max_connections` reached and `max_pending_requests` waiters already, or no connection
    /// freed up within the connect timeout.
    #[error("connection overflow (circuit breaker)")]
    Overflow,
    /// The TCP connection failed.
    #[error("{0}")]
    Failed(String),
}

/// Counts requests sent on one connection (set as a `Connected` extra, read from responses).
#[derive(Debug, Clone, Default)]
struct ConnUses(Arc<AtomicU32>);

/// Dials one endpoint, within the cluster's connection limit.
#[derive(Debug, Clone)]
pub struct EndpointConnector {
    addr: SocketAddr,
    tls: Option<Arc<super::transport::Connector>>,
    http: HttpConnector,
    timeout: Duration,
    breaker: Arc<Breaker>,
    stats: Arc<ClusterStats>,
}

impl EndpointConnector {
    /// Opens a connection; with `wait`, waits for a free connection slot (HTTP), else fails
    /// at once when all are taken (TCP proxy).
    pub async fn open(&self, wait: bool) -> Result<Tracked, ConnectError> {
        let permit = match self.breaker.try_acquire(Resource::Connections) {
            Some(p) => p,
            None => {
                self.stats.upstream_cx_overflow.inc();
                if !wait {
                    return Err(ConnectError::Overflow);
                }
                let _pending = self
                    .breaker
                    .try_acquire(Resource::Pending)
                    .ok_or(ConnectError::Overflow)?;
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.breaker
                    .acquire_connection(deadline)
                    .await
                    .ok_or(ConnectError::Overflow)?
            }
        };
        self.dial(permit).await
    }

    /// Dials the endpoint (TCP, then TLS when configured) under a `max_connections` permit.
    pub async fn dial(&self, permit: Permit) -> Result<Tracked, ConnectError> {
        let uri: http::Uri = format!("http://{}", self.addr)
            .parse()
            .map_err(|e| ConnectError::Failed(format!("{e}")))?;
        let mut http = self.http.clone();
        match tower::Service::call(&mut http, uri).await {
            Ok(io) => {
                let io = match &self.tls {
                    None => UpstreamIo::Plain(io.into_inner()),
                    Some(tls) => {
                        let handshake = tokio_rustls::TlsConnector::from(tls.config.clone())
                            .connect(tls.name.clone(), io.into_inner());
                        match tokio::time::timeout(self.timeout, handshake).await {
                            Ok(Ok(s)) => UpstreamIo::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                self.stats.upstream_cx_connect_fail.inc();
                                return Err(ConnectError::Failed(format!("TLS error: {e}")));
                            }
                            Err(_) => {
                                self.stats.upstream_cx_connect_fail.inc();
                                return Err(ConnectError::Failed(
                                    "TLS error: handshake timed out".into(),
                                ));
                            }
                        }
                    }
                };
                self.stats.upstream_cx_total.inc();
                self.stats.upstream_cx_active.inc();
                Ok(Tracked {
                    io: TokioIo::new(io),
                    uses: ConnUses::default(),
                    _guard: CxGuard {
                        stats: self.stats.clone(),
                        _permit: permit,
                    },
                })
            }
            Err(e) => {
                self.stats.upstream_cx_connect_fail.inc();
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                Err(ConnectError::Failed(msg))
            }
        }
    }
}

impl tower::Service<http::Uri> for EndpointConnector {
    type Response = Tracked;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Tracked, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.open(true).await })
    }
}

/// An upstream connection holding its `max_connections` permit and counted in
/// `upstream_cx_active` until dropped.
#[derive(Debug)]
pub struct Tracked {
    io: TokioIo<UpstreamIo>,
    uses: ConnUses,
    _guard: CxGuard,
}

#[derive(Debug)]
struct CxGuard {
    stats: Arc<ClusterStats>,
    _permit: Permit,
}

impl Drop for CxGuard {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
    }
}

impl Tracked {
    /// The TCP stream underneath.
    pub fn stream(&self) -> &TcpStream {
        self.io.inner().tcp()
    }
    /// The connection alone; it stops counting against the cluster.
    pub fn into_stream(self) -> UpstreamIo {
        self.io.into_inner()
    }
}

/// An upstream connection: plaintext or TLS.
#[derive(Debug)]
pub enum UpstreamIo {
    /// `raw_buffer`.
    Plain(TcpStream),
    /// `envoy.transport_sockets.tls`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamIo::Plain(s) => s,
            UpstreamIo::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        // The HTTP version is the cluster's configuration, never ALPN (Istio's mTLS offers
        // `istio-peer-exchange`/`istio`).
        Connected::new()
    }
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.inner().connected().extra(self.uses.clone())
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// Raw byte access for the TCP proxy.
impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.io.inner_mut()).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_shutdown(cx)
    }
}

type HttpClient = Client<EndpointConnector, BoxBody>;

/// Clients bound past this many endpoints are dropped (ORIGINAL_DST clusters see arbitrary
/// destinations); in-flight requests keep theirs.
const MAX_CLIENTS: usize = 4096;

/// A cluster's upstream clients, by endpoint and HTTP version.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    breaker: Arc<Breaker>,
    stats: Arc<ClusterStats>,
    clients: Mutex<HashMap<(SocketAddr, bool, usize), HttpClient>>,
    /// HTTP/1.1 connections.
    http1: Arc<Http1Pool>,
    /// TLS per transport-socket index (see [`super::transport::TransportConfig::choose`]).
    tls: Vec<Option<Arc<super::transport::Connector>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(
        config: PoolConfig,
        breaker: Arc<Breaker>,
        stats: Arc<ClusterStats>,
        tls: Vec<Option<Arc<super::transport::Connector>>>,
    ) -> Pool {
        Pool {
            http1: Http1Pool::new(
                config.idle_timeout,
                config.max_requests_per_connection,
                MAX_CLIENTS,
            ),
            config,
            breaker,
            stats,
            clients: Mutex::new(HashMap::new()),
            tls,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }
    /// The cluster's circuit breakers.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
    /// The cluster's counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// A connector dialing `addr` with transport socket `transport`.
    pub fn connector(&self, addr: SocketAddr, transport: usize) -> EndpointConnector {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.config.connect_timeout));
        http.set_local_address(self.config.bind);
        EndpointConnector {
            addr,
            tls: self.tls.get(transport).cloned().flatten(),
            http,
            timeout: self.config.connect_timeout,
            breaker: self.breaker.clone(),
            stats: self.stats.clone(),
        }
    }

    fn client(&self, addr: SocketAddr, h2: bool, transport: usize) -> HttpClient {
        let mut clients = self
            .clients
            .lock()
            .expect("pool lock is never poisoned: no panics under it");
        if let Some(c) = clients.get(&(addr, h2, transport)) {
            return c.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let cfg = &self.config;
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.idle_timeout);
        if h2 {
            let s = &cfg.http2;
            b.http2_only(true)
                .http2_initial_stream_window_size(s.initial_stream_window)
                .http2_initial_connection_window_size(s.initial_connection_window)
                .http2_header_table_size(s.header_table_size)
                .http2_keep_alive_interval(s.keepalive_interval);
            if let Some(t) = s.keepalive_timeout {
                b.http2_keep_alive_timeout(t);
            }
        }
        let c = b.build(self.connector(addr, transport));
        clients.insert((addr, h2, transport), c.clone());
        c
    }

    /// Drops the clients of endpoints not kept (an endpoint update).
    pub fn retain(&self, keep: &dyn Fn(&SocketAddr) -> bool) {
        self.clients
            .lock()
            .expect("pool lock is never poisoned: no panics under it")
            .retain(|(a, _, _), _| keep(a));
        self.http1.retain(keep);
    }

    /// Sends the request to `addr`, keeping the caller's authority.
    pub async fn send(
        &self,
        addr: SocketAddr,
        transport: usize,
        out: Outgoing<'_>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        let h2 = match self.config.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Downstream => out.head.version == http::Version::HTTP_2,
        };
        if h2 {
            // hyper's HTTP/2 client allocates per request anyway; its large future gets a box
            // rather than enlarging every request's future, which is copied as it is moved.
            return Box::pin(self.send_h2(addr, transport, out.into_request())).await;
        }
        out.head.version = http::Version::HTTP_11;
        if out.keep
            && out.head.uri.authority().is_none()
            && !out.head.headers.contains_key(http::header::HOST)
        {
            // The Host made up from this endpoint's address is this attempt's alone (another
            // may pick another endpoint): the head is copied. Rare, so boxed, to keep every
            // request's future small.
            return Box::pin(async move {
                let (mut head, body) = out.into_request().into_parts();
                http1_head(&mut head, addr)?;
                let out = Outgoing {
                    head: &mut head,
                    body,
                    keep: false,
                };
                self.http1.send((addr, transport), self, out).await
            })
            .await;
        }
        http1_head(out.head, addr)?;
        self.http1.send((addr, transport), self, out).await
    }

    /// Sends `req` over HTTP/2 (hyper's client) to `addr`.
    async fn send_h2(
        &self,
        addr: SocketAddr,
        transport: usize,
        mut req: http::Request<BoxBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        *req.version_mut() = http::Version::HTTP_2;
        *req.uri_mut() = upstream_uri(&req, addr)?;
        let capture = capture_connection(&mut req);
        let resp = self
            .client(addr, true, transport)
            .request(req)
            .await
            .map_err(|e| classify(&e))?;
        if let (Some(limit), Some(uses)) = (
            self.config.max_requests_per_connection,
            resp.extensions().get::<ConnUses>(),
        ) {
            if uses.0.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                if let Some(c) = capture.connection_metadata().as_ref() {
                    c.poison();
                }
            }
        }
        Ok(resp.map(UpstreamBody::new))
    }

    /// Opens a raw TCP connection to `addr` (no waiting for a free connection).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        transport: usize,
    ) -> Result<Tracked, UpstreamError> {
        self.connector(addr, transport)
            .open(false)
            .await
            .map_err(|e| match e {
                ConnectError::Overflow => UpstreamError::Overflow,
                ConnectError::Failed(m) => UpstreamError::ConnectFailure(m),
            })
    }
}

/// `http://<authority><path>`: the request's authority, else its Host header, else the
/// endpoint's address (the connector dials the endpoint whatever the authority says).
fn upstream_uri(
    req: &http::Request<BoxBody>,
    addr: SocketAddr,
) -> Result<http::Uri, UpstreamError> {
    use http::uri::{Authority, PathAndQuery, Scheme};
    // Built from parts (no formatting and re-parsing: this runs once per request).
    let authority = req
        .uri()
        .authority()
        .cloned()
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        })
        .map_or_else(|| Authority::try_from(addr.to_string()), Ok)
        .map_err(|e| UpstreamError::Reset(format!("cannot build upstream URI: {e}")))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    http::Uri::from_parts(parts)
        .map_err(|e| UpstreamError::Reset(format!("cannot build upstream URI: {e}")))
}

/// An HTTP/1.1 request head as the legacy client sent it: a Host header when missing (the
/// URI's authority, else the endpoint's address, without the default port) and an origin-form
/// URI (authority-form for CONNECT).
fn http1_head(head: &mut http::request::Parts, addr: SocketAddr) -> Result<(), UpstreamError> {
    let bad =
        |e: &dyn std::fmt::Display| UpstreamError::Reset(format!("cannot build upstream URI: {e}"));
    if !head.headers.contains_key(http::header::HOST) {
        let host = match head.uri.authority() {
            Some(a) if a.port_u16().is_some_and(|p| p != 80) => a.as_str().to_string(),
            Some(a) => a.host().to_string(),
            None if addr.port() != 80 => addr.to_string(),
            None if addr.is_ipv6() => format!("[{}]", addr.ip()),
            None => addr.ip().to_string(),
        };
        let v = http::HeaderValue::try_from(host).map_err(|e| bad(&e))?;
        head.headers.insert(http::header::HOST, v);
    }
    let uri = &head.uri;
    if uri.authority().is_none() {
        return Ok(());
    }
    let new = if head.method == http::Method::CONNECT {
        let mut parts = http::uri::Parts::default();
        parts.authority = uri.authority().cloned();
        http::Uri::from_parts(parts).map_err(|e| bad(&e))?
    } else {
        match uri.path_and_query() {
            Some(pq) if pq.as_str() != "/" => http::Uri::from(pq.clone()),
            _ => http::Uri::default(),
        }
    };
    head.uri = new;
    Ok(())
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Overflow => UpstreamError::Overflow,
                ConnectError::Failed(m) => UpstreamError::ConnectFailure(m.clone()),
            };
        }
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            if let (true, true, Some(r)) = (h.is_reset(), h.is_remote(), h.reason()) {
                return UpstreamError::RemoteReset(super::RemoteReset::from_reason(r.into()));
            }
        }
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    if e.is_connect() {
        UpstreamError::ConnectFailure(msg)
    } else {
        UpstreamError::Reset(msg)
    }
}
