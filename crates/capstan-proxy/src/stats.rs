//! Counters with Envoy's names, updated with plain atomics on the hot path and rendered only when
//! scraped (see [`crate::admin`]). A cluster's or listener's counters outlive config updates: they
//! are looked up by name, as Envoy's stats scopes are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds in milliseconds: Envoy's default histogram buckets (also Istio's
/// `istio_request_duration_milliseconds` buckets).
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A latency histogram over [`BUCKETS_MS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 19],
    count: AtomicU64,
    /// Sum in microseconds, so sub-millisecond values add up.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one value.
    pub fn record(&self, d: std::time::Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        if let Some(i) = BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    /// Per-bucket (non-cumulative) counts, total count, sum in milliseconds.
    pub fn read(&self) -> ([u64; 19], u64, f64) {
        let mut b = [0; 19];
        for (out, a) in b.iter_mut().zip(&self.buckets) {
            *out = a.load(Ordering::Relaxed);
        }
        (
            b,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

/// `cluster.<name>.*`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// `upstream_rq_total`.
    pub upstream_rq_total: Counter,
    /// `upstream_rq_<class>xx` for classes 1..=5 (index 0 is 1xx).
    pub upstream_rq_class: [Counter; 5],
    /// `upstream_rq_active`.
    pub upstream_rq_active: Gauge,
    /// `upstream_rq_pending_overflow`: requests refused by a circuit breaker.
    pub upstream_rq_pending_overflow: Counter,
    /// `upstream_rq_retry`.
    pub upstream_rq_retry: Counter,
    /// `upstream_rq_retry_overflow`: retries refused by the retry budget/breaker.
    pub upstream_rq_retry_overflow: Counter,
    /// `retry_or_shadow_abandoned`: requests whose body outgrew the buffer limit, giving up
    /// their retries and mirrors.
    pub retry_or_shadow_abandoned: Counter,
    /// `upstream_rq_timeout`.
    pub upstream_rq_timeout: Counter,
    /// `upstream_rq_per_try_timeout`.
    pub upstream_rq_per_try_timeout: Counter,
    /// `upstream_rq_rx_reset`: requests whose stream the upstream reset before a response.
    pub upstream_rq_rx_reset: Counter,
    /// `upstream_cx_total`.
    pub upstream_cx_total: Counter,
    /// `upstream_cx_active`.
    pub upstream_cx_active: Gauge,
    /// `upstream_cx_connect_fail`.
    pub upstream_cx_connect_fail: Counter,
    /// `upstream_cx_overflow`.
    pub upstream_cx_overflow: Counter,
    /// `upstream_cx_none_healthy`: no endpoint to pick.
    pub upstream_cx_none_healthy: Counter,
    /// `outlier_detection.ejections_active`.
    pub ejections_active: Gauge,
    /// `outlier_detection.ejections_enforced_total`.
    pub ejections_enforced_total: Counter,
    /// `membership_total`.
    pub membership_total: Gauge,
    /// `membership_healthy`.
    pub membership_healthy: Gauge,
    /// This cluster's Istio request series (set by [`Stats::cluster`]; a request reaches them
    /// without a lookup by cluster name).
    pub istio: std::sync::OnceLock<Arc<crate::istio_metrics::ClusterRequests>>,
}

impl ClusterStats {
    /// Counts a response status.
    pub fn count_status(&self, status: u16) {
        if let Some(c) = self
            .upstream_rq_class
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
    }
}

/// `http.<stat_prefix>.*` for one HTTP connection manager.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// `downstream_rq_total`.
    pub downstream_rq_total: Counter,
    /// `downstream_rq_<class>xx`.
    pub downstream_rq_class: [Counter; 5],
    /// `downstream_rq_active`.
    pub downstream_rq_active: Gauge,
    /// `downstream_rq_time` (histogram).
    pub downstream_rq_time: Histogram,
    /// `downstream_cx_total`.
    pub downstream_cx_total: Counter,
    /// `downstream_cx_active`.
    pub downstream_cx_active: Gauge,
    /// `downstream_cx_upgrades_total`: upgrade requests allowed (WebSocket and others).
    pub downstream_cx_upgrades_total: Counter,
    /// `downstream_cx_upgrades_active`: upgraded streams open.
    pub downstream_cx_upgrades_active: Gauge,
    /// `no_route`: requests no route matched.
    pub no_route: Counter,
    /// `fault.delays_injected`.
    pub fault_delays_injected: Counter,
    /// `fault.aborts_injected`.
    pub fault_aborts_injected: Counter,
    /// `rbac.allowed`.
    pub rbac_allowed: Counter,
    /// `rbac.denied`.
    pub rbac_denied: Counter,
    /// `jwt_authn.allowed`.
    pub jwt_authn_allowed: Counter,
    /// `jwt_authn.denied`.
    pub jwt_authn_denied: Counter,
}

/// `tcp.<stat_prefix>.*` for one TCP proxy.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// `downstream_cx_total`.
    pub downstream_cx_total: Counter,
    /// `downstream_cx_active`... (Envoy: `downstream_cx_no_route` etc. are not modelled).
    pub downstream_cx_active: Gauge,
    /// `downstream_cx_tx_bytes_total`.
    pub tx_bytes: Counter,
    /// `downstream_cx_rx_bytes_total`.
    pub rx_bytes: Counter,
}

/// `<stat_prefix>rbac.*` for network RBAC filters.
#[derive(Debug, Default)]
pub struct RbacStats {
    /// `allowed`.
    pub allowed: Counter,
    /// `denied`.
    pub denied: Counter,
}

/// Every stats scope of the process, by name.
#[derive(Debug, Default)]
pub struct Stats {
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    rbac: Mutex<BTreeMap<String, Arc<RbacStats>>>,
    /// `server.*` and xDS client counters.
    pub server: ServerStats,
    /// Istio's standard metrics.
    pub istio: crate::istio_metrics::IstioMetrics,
}

/// `server.*` and `control_plane.*`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// `control_plane.connected_state`.
    pub connected: Gauge,
    /// Updates applied (ACKed), all types.
    pub update_success: Counter,
    /// Updates rejected (NACKed), all types.
    pub update_rejected: Counter,
    /// `server.total_connections`.
    pub total_connections: Gauge,
}

fn scope<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    let mut map = map
        .lock()
        .expect("stats map lock is never poisoned: no panics under it");
    if let Some(s) = map.get(name) {
        return s.clone();
    }
    let s = Arc::new(T::default());
    map.insert(name.to_string(), s.clone());
    s
}

fn all<T>(map: &Mutex<BTreeMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    map.lock()
        .expect("stats map lock is never poisoned: no panics under it")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Stats {
    /// The counters of cluster `name` (created on first use).
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let s = scope(&self.clusters, name);
        s.istio.get_or_init(|| self.istio.cluster(name));
        s
    }
    /// The counters of HTTP connection manager `stat_prefix`.
    pub fn http(&self, stat_prefix: &str) -> Arc<HttpStats> {
        scope(&self.http, stat_prefix)
    }
    /// The counters of TCP proxy `stat_prefix`.
    pub fn tcp(&self, stat_prefix: &str) -> Arc<TcpStats> {
        scope(&self.tcp, stat_prefix)
    }
    /// Every cluster scope, by name.
    pub fn clusters(&self) -> Vec<(String, Arc<ClusterStats>)> {
        all(&self.clusters)
    }
    /// Every HTTP scope, by stat prefix.
    pub fn http_scopes(&self) -> Vec<(String, Arc<HttpStats>)> {
        all(&self.http)
    }
    /// The counters of a network RBAC filter (`instance`: its stat prefix without `tcp.`,
    /// then `rbac`).
    pub fn network_rbac(&self, instance: &str) -> Arc<RbacStats> {
        scope(&self.rbac, instance)
    }
    /// Every network RBAC scope.
    pub fn network_rbac_scopes(&self) -> Vec<(String, Arc<RbacStats>)> {
        all(&self.rbac)
    }
    /// Every TCP scope, by stat prefix.
    pub fn tcp_scopes(&self) -> Vec<(String, Arc<TcpStats>)> {
        all(&self.tcp)
    }
}
