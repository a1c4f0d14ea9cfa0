//! Clusters: compiled from CDS (`Cluster`) and EDS (`ClusterLoadAssignment`), and the runtime that
//! outlives config updates: endpoints, load balancer, circuit breakers, outlier detection,
//! connection pools.
//!
//! - [`compile`](compile()) / [`protocol`]: the `Cluster` proto → [`ClusterConfig`];
//! - [`endpoints`]: `ClusterLoadAssignment` → [`EndpointSet`];
//! - [`lb`] and [`hash`]: picking a host; [`breaker`]: circuit breakers;
//!   [`outlier`]: ejections; [`pool`]: upstream connections; [`dns`]: DNS clusters;
//!   [`dns_resolver`]: which resolver configs the system resolver can stand in for.

pub mod breaker;
mod compile;
pub mod dns;
pub mod dns_resolver;
pub mod endpoints;
pub mod hash;
pub mod http1_codec;
mod http1_link;
pub mod http1_pool;
pub mod lb;
pub mod outlier;
pub mod pool;
pub mod protocol;
pub mod transport;

pub use breaker::{BreakerConfig, RetryPermit};
pub use compile::compile;
pub use dns::{DnsConfig, LookupFamily};
pub use endpoints::{compile_assignment, EndpointSet};
pub use http1_pool::UpstreamBody;
pub use lb::{LbConfig, LbPolicy};
pub use outlier::OutlierConfig;
pub use pool::{PoolConfig, Tracked};

use crate::http::BoxBody;
use crate::stats::ClusterStats;
use arc_swap::ArcSwap;
use breaker::{Breaker, Resource};
use lb::Balancer;
use outlier::{Detector, Outcome};
use pool::Pool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// EDS over ADS, under this service name (the cluster's name when unset).
    Eds(String),
    /// `STATIC`: the inline load assignment.
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: hostnames in the inline load assignment, resolved.
    Dns,
    /// `ORIGINAL_DST`: the connection's original destination.
    OriginalDst,
}

/// A cluster's compiled configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// How its endpoints are found.
    pub discovery: Discovery,
    /// Load balancing.
    pub lb: LbConfig,
    /// Circuit breakers (DEFAULT priority).
    pub breaker: BreakerConfig,
    /// Outlier detection, when configured.
    pub outlier: Option<OutlierConfig>,
    /// Upstream connections and HTTP protocol.
    pub pool: PoolConfig,
    /// The inline load assignment (STATIC and DNS clusters; names unresolved for DNS).
    pub endpoints: Option<EndpointSet>,
    /// DNS resolution settings (DNS clusters).
    pub dns: Option<DnsConfig>,
    /// Transport sockets (plaintext or TLS, per endpoint with `transport_socket_matches`).
    pub transport: transport::TransportConfig,
}

impl ClusterConfig {
    /// A config with Envoy's defaults (tests and builders).
    pub fn new(name: &str, discovery: Discovery) -> ClusterConfig {
        ClusterConfig {
            name: name.to_string(),
            discovery,
            lb: LbConfig::default(),
            breaker: BreakerConfig::default(),
            outlier: None,
            pool: PoolConfig::default(),
            endpoints: None,
            dns: None,
            transport: transport::TransportConfig::default(),
        }
    }
}

/// What the load balancer may use for one pick.
#[derive(Debug, Clone, Default)]
pub struct LbContext {
    /// The route's hash-policy hash (ring hash / maglev).
    pub hash: Option<u64>,
    /// The downstream connection's original destination (ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
    /// Hosts tried already by this request (retry `previous_hosts` predicate).
    pub avoid: Vec<SocketAddr>,
}

/// A request on its way to an upstream. Its head stays where the caller keeps it and is lent
/// to the layers below, so that a request that may be sent again (a retry) is not copied for
/// each attempt, and the futures between the router and the connection do not each carry it.
/// The plain HTTP/1.1 codec writes it from the borrowed head (amending its framing headers,
/// which a later attempt would amend alike); hyper's clients take a request by value: the head
/// is copied for them while `keep` says the caller needs it again, else taken.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The request head: the caller's.
    pub head: &'a mut http::request::Parts,
    /// The request body.
    pub body: BoxBody,
    /// Another attempt may follow: the head must be left for it.
    pub keep: bool,
}

impl Outgoing<'_> {
    /// The request by value: a copy of the head while the caller keeps it, else the head.
    pub fn into_request(self) -> http::Request<BoxBody> {
        let head = if self.keep {
            self.head.clone()
        } else {
            std::mem::replace(self.head, http::Request::new(()).into_parts().0)
        };
        http::Request::from_parts(head, self.body)
    }
}

/// Why an upstream request or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A circuit breaker refused it (answered 503, counted as overflow).
    #[error("upstream overflow (circuit breaker)")]
    Overflow,
    /// No healthy endpoint.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// The connection could not be made.
    #[error("upstream connect error: {0}")]
    ConnectFailure(String),
    /// The connection broke before a response.
    #[error("upstream reset: {0}")]
    Reset(String),
    /// The upstream reset the request's HTTP/2 stream before a response (the connection
    /// lives on), as an upstream without extended CONNECT refuses a WebSocket.
    #[error("upstream {}", .0.envoy_name())]
    RemoteReset(RemoteReset),
}

/// Why an upstream reset a stream, in Envoy's `StreamResetReason` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteReset {
    /// `REFUSED_STREAM`: the request was not processed (safe to retry).
    Refused,
    /// `CONNECT_ERROR`: the tunnel of a CONNECT request broke.
    ConnectError,
    /// Any other error code.
    Other,
}

impl RemoteReset {
    /// The HTTP/2 error code's reason.
    pub fn from_reason(code: u32) -> RemoteReset {
        // RFC 9113 §7: REFUSED_STREAM 0x7, CONNECT_ERROR 0xa.
        match code {
            0x7 => RemoteReset::Refused,
            0xa => RemoteReset::ConnectError,
            _ => RemoteReset::Other,
        }
    }

    /// Envoy's name for it (`Http::Utility::resetReasonToString`), which its local reply
    /// and access log show.
    pub fn envoy_name(self) -> &'static str {
        match self {
            RemoteReset::Refused => "remote refused stream reset",
            RemoteReset::ConnectError => "remote error with CONNECT request",
            RemoteReset::Other => "remote reset",
        }
    }
}

/// One host as the admin page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// Its load-balancing weight.
    pub weight: u32,
    /// Currently ejected by outlier detection.
    pub ejected: bool,
    /// Requests in flight.
    pub active: u32,
}

/// A live cluster: config plus runtime state.
#[derive(Debug)]
pub struct Cluster {
    config: Arc<ClusterConfig>,
    stats: Arc<ClusterStats>,
    balancer: ArcSwap<Balancer>,
    breaker: Arc<Breaker>,
    outlier: Option<Detector>,
    pool: Pool,
    /// Transport-socket index per endpoint (only with `transport_socket_matches`).
    transport_of: ArcSwap<crate::fast_map::FastMap<SocketAddr, usize>>,
    /// DNS clusters: when the next resolution is due (None: never resolved).
    dns_due: Mutex<Option<Instant>>,
    /// Single flight for DNS resolution.
    dns_lock: tokio::sync::Mutex<()>,
}

/// The TLS connectors of each transport socket (index as [`transport::TransportConfig::choose`]).
/// Specs were checked when compiled; one that still fails to build connects as an error.
fn connectors(t: &transport::TransportConfig) -> Vec<Option<Arc<transport::Connector>>> {
    (0..=t.matches.len())
        .map(|i| {
            t.spec(i).and_then(|spec| match transport::connector(spec) {
                Ok(c) => Some(Arc::new(c)),
                Err(error) => {
                    tracing::error!(%error, "upstream TLS configuration unusable");
                    None
                }
            })
        })
        .collect()
}

/// Decrements `upstream_rq_active` and the host's active count when the request ends.
struct Active<'a>(&'a ClusterStats, Arc<AtomicU32>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.upstream_rq_active.dec();
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    /// A cluster with no endpoints yet (STATIC clusters start with their inline ones).
    pub fn new(config: Arc<ClusterConfig>, stats: Arc<ClusterStats>) -> Arc<Cluster> {
        let breaker = Breaker::new(config.breaker);
        let empty = Balancer::new(&config.lb, &EndpointSet::default(), None);
        let cluster = Cluster {
            balancer: ArcSwap::from_pointee(empty),
            outlier: config.outlier.clone().map(Detector::new),
            pool: Pool::new(
                config.pool.clone(),
                breaker.clone(),
                stats.clone(),
                connectors(&config.transport),
            ),
            transport_of: ArcSwap::from_pointee(Default::default()),
            breaker,
            dns_due: Mutex::new(None),
            dns_lock: tokio::sync::Mutex::new(()),
            config,
            stats,
        };
        if cluster.config.discovery == Discovery::Static {
            if let Some(set) = &cluster.config.endpoints {
                cluster.set_endpoints(set.clone());
            }
        }
        Arc::new(cluster)
    }
    /// The transport-socket index of an endpoint (0: the cluster's `transport_socket`; an
    /// endpoint not in EDS, e.g. ORIGINAL_DST, matches with no metadata).
    fn transport(&self, addr: SocketAddr) -> usize {
        if self.config.transport.matches.is_empty() {
            return 0;
        }
        self.transport_of
            .load()
            .get(&addr)
            .copied()
            .unwrap_or_else(|| self.config.transport.choose(&[]))
    }

    /// Its configuration.
    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }
    /// Its counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }
    /// Replaces its endpoints (EDS update), keeping health and outlier state of those that stay.
    pub fn set_endpoints(&self, endpoints: EndpointSet) {
        let old = self.balancer.load_full();
        let new = Balancer::new(&self.config.lb, &endpoints, Some(&old));
        let addrs: std::collections::HashSet<SocketAddr> = new.hosts().map(|h| h.addr).collect();
        let keep = |a: &SocketAddr| addrs.contains(a);
        if let Some(d) = &self.outlier {
            d.retain(&keep, Instant::now(), &self.stats);
        }
        if self.config.discovery != Discovery::OriginalDst {
            self.pool.retain(&keep);
        }
        if !self.config.transport.matches.is_empty() {
            let by_addr = endpoints
                .hosts()
                .filter_map(|h| match h.address {
                    endpoints::HostAddress::Ip(a) => {
                        Some((a, self.config.transport.choose(&h.socket_match)))
                    }
                    endpoints::HostAddress::Name(..) => None,
                })
                .collect();
            self.transport_of.store(Arc::new(by_addr));
        }
        self.stats.membership_total.set(new.len() as i64);
        self.stats
            .membership_healthy
            .set(new.healthy_count(&[]) as i64);
        self.balancer.store(Arc::new(new));
    }
    /// Its hosts now, with ejection state (for `/clusters`).
    pub fn hosts(&self) -> Vec<HostStatus> {
        let ejected = self.ejected();
        self.balancer
            .load()
            .hosts()
            .map(|h| HostStatus {
                addr: h.addr,
                weight: h.weight,
                ejected: ejected.contains(&h.addr),
                active: h.active.load(Ordering::Relaxed),
            })
            .collect()
    }
    /// A permit for one retry under `max_retries`: counts `upstream_rq_retry` when granted and
    /// `upstream_rq_retry_overflow` when refused (callers do not count these again). Hold it
    /// while the retry is in flight.
    pub fn try_retry(&self) -> Option<RetryPermit> {
        match self.breaker.try_acquire(Resource::Retries) {
            Some(p) => {
                self.stats.upstream_rq_retry.inc();
                Some(RetryPermit(p))
            }
            None => {
                self.stats.upstream_rq_retry_overflow.inc();
                None
            }
        }
    }

    /// The hosts outlier detection has ejected now (none without it: then the clock is not read).
    fn ejected(&self) -> Vec<SocketAddr> {
        self.outlier
            .as_ref()
            .map(|d| d.ejected(Instant::now(), &self.stats))
            .unwrap_or_default()
    }

    /// Records the outcome of a request or connection to `addr` for outlier detection.
    /// `request` and `connect` do this themselves; the router calls it for outcomes they cannot
    /// see (e.g. a per-try timeout: `report(addr, 504)`).
    pub fn report(&self, addr: SocketAddr, status: u16) {
        self.report_outcome(addr, Outcome::Status(status));
    }

    fn report_outcome(&self, addr: SocketAddr, outcome: Outcome) {
        if let Some(d) = &self.outlier {
            let size = self.balancer.load().len();
            d.report(addr, outcome, size, Instant::now(), &self.stats);
        }
    }

    /// Whether this cluster resolves its endpoints by DNS and a resolution is due.
    fn dns_refresh_due(&self) -> bool {
        self.config.dns.is_some()
            && self.config.endpoints.is_some()
            && self
                .dns_due
                .lock()
                .expect("dns lock is never poisoned: no panics under it")
                .is_none_or(|t| t <= Instant::now())
    }

    async fn refresh_dns(&self) {
        let (Some(dns), Some(set)) = (&self.config.dns, &self.config.endpoints) else {
            return;
        };
        if !self.dns_refresh_due() {
            return;
        }
        let _flight = self.dns_lock.lock().await;
        if !self.dns_refresh_due() {
            return;
        }
        let jitter = dns.jitter.mul_f64(fastrand::f64());
        let next = match dns::resolve(set, dns).await {
            Ok(resolved) => {
                self.set_endpoints(resolved);
                dns.refresh + jitter
            }
            Err(e) => {
                tracing::warn!(cluster = %self.config.name, "DNS resolution failed: {e}");
                dns.failure_refresh + jitter
            }
        };
        *self
            .dns_due
            .lock()
            .expect("dns lock is never poisoned: no panics under it") = Some(Instant::now() + next);
    }

    /// Picks an endpoint (and its active-request counter).
    async fn pick(&self, ctx: &LbContext) -> Result<(SocketAddr, Arc<AtomicU32>), UpstreamError> {
        if self.config.discovery == Discovery::OriginalDst {
            return ctx
                .original_dst
                .map(|a| (a, Arc::default()))
                .ok_or_else(|| {
                    self.stats.upstream_cx_none_healthy.inc();
                    UpstreamError::NoHealthyUpstream
                });
        }
        // A resolution is rare: its future (the resolver's) gets a box of its own rather than
        // enlarging every request's future, which is copied as it is moved.
        if self.dns_refresh_due() {
            Box::pin(self.refresh_dns()).await;
        }
        let ejected = self.ejected();
        let balancer = self.balancer.load();
        let mut rng = fastrand::Rng::new();
        balancer
            .pick(ctx, &ejected, &mut rng)
            .map(|h| (h.addr, h.active.clone()))
            .ok_or_else(|| {
                self.stats.upstream_cx_none_healthy.inc();
                UpstreamError::NoHealthyUpstream
            })
    }

    /// Sends one HTTP request to an endpoint picked by the load balancer.
    pub async fn request(
        &self,
        req: http::Request<BoxBody>,
        ctx: &LbContext,
    ) -> Result<(http::Response<UpstreamBody>, SocketAddr), UpstreamError> {
        let (mut head, body) = req.into_parts();
        let out = Outgoing {
            head: &mut head,
            body,
            keep: false,
        };
        self.send(out, ctx).await
    }

    /// Sends one HTTP request, its head lent ([`Outgoing`]), to an endpoint picked by the load
    /// balancer.
    pub async fn send(
        &self,
        out: Outgoing<'_>,
        ctx: &LbContext,
    ) -> Result<(http::Response<UpstreamBody>, SocketAddr), UpstreamError> {
        let Some(_rq) = self.breaker.try_acquire(Resource::Requests) else {
            self.stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamError::Overflow);
        };
        let (addr, host_active) = self.pick(ctx).await?;
        self.stats.upstream_rq_total.inc();
        self.stats.upstream_rq_active.inc();
        host_active.fetch_add(1, Ordering::Relaxed);
        let _active = Active(&self.stats, host_active);
        match self.pool.send(addr, self.transport(addr), out).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                self.stats.count_status(status);
                self.report_outcome(addr, Outcome::Status(status));
                Ok((resp, addr))
            }
            Err(UpstreamError::Overflow) => {
                self.stats.upstream_rq_pending_overflow.inc();
                Err(UpstreamError::Overflow)
            }
            Err(e) => {
                if matches!(e, UpstreamError::RemoteReset(_)) {
                    self.stats.upstream_rq_rx_reset.inc();
                }
                self.report_outcome(addr, Outcome::LocalFailure);
                Err(e)
            }
        }
    }

    /// Opens a TCP connection to an endpoint picked by the load balancer. The connection
    /// leaves `max_connections` and `upstream_cx_active` when this returns; use
    /// [`Cluster::connect_tracked`] to keep it counted while open.
    pub async fn connect(
        &self,
        ctx: &LbContext,
    ) -> Result<(pool::UpstreamIo, SocketAddr), UpstreamError> {
        let (conn, addr) = self.connect_tracked(ctx).await?;
        Ok((conn.into_stream(), addr))
    }

    /// Opens a TCP connection counted against `max_connections` and in `upstream_cx_active`
    /// until dropped; it reads and writes as a `TcpStream`.
    pub async fn connect_tracked(
        &self,
        ctx: &LbContext,
    ) -> Result<(Tracked, SocketAddr), UpstreamError> {
        let (addr, _) = self.pick(ctx).await?;
        match self.pool.connect(addr, self.transport(addr)).await {
            Ok(conn) => {
                self.report_outcome(addr, Outcome::Status(200));
                Ok((conn, addr))
            }
            Err(e) => {
                if !matches!(e, UpstreamError::Overflow) {
                    self.report_outcome(addr, Outcome::LocalFailure);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
