//! Counters of the ADS server, read as a [`Metrics`] snapshot. `/metrics` renders them under
//! istiod's names (`pilot_xds_pushes{type}`, `pilot_xds_push_time{type}`,
//! `pilot_total_xds_rejects{type}`, `pilot_proxy_convergence_time`, ...). Connection tasks
//! record without locks: per-type counters of Envoy's xDS types sit at the type's position in
//! [`PUSH_ORDER`]; only the rarely used other types (MCP config) go through a map.

use crate::histogram::{AtomicHistogram, HistogramSnapshot};
use crate::resource::{CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name of a type URL in metrics' `type` label, as istiod's `GetMetricType`: `cds`, `eds`,
/// `lds`, `rds`, `sds` for Envoy's types, the type URL itself for the others.
pub fn metric_type(type_url: &str) -> &str {
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        SECRET => "sds",
        other => other,
    }
}

/// What the server counts per type URL.
#[derive(Debug)]
pub(crate) struct TypeCounters {
    /// Responses sent (`pilot_xds_pushes`: istiod counts every response, pushed or requested).
    pushes: AtomicU64,
    /// NACKs (`pilot_total_xds_rejects`).
    rejects: AtomicU64,
    /// Requests answering an older response than the last sent (`pilot_xds_expired_nonce`).
    expired_nonces: AtomicU64,
    /// Generation plus hand-over of each response (`pilot_xds_push_time`).
    push_time: AtomicHistogram,
    /// Encoded size of each response (`pilot_xds_config_size_bytes`).
    config_size: AtomicHistogram,
}

impl Default for TypeCounters {
    fn default() -> Self {
        TypeCounters {
            pushes: AtomicU64::new(0),
            rejects: AtomicU64::new(0),
            expired_nonces: AtomicU64::new(0),
            push_time: AtomicHistogram::seconds(),
            config_size: AtomicHistogram::bytes(),
        }
    }
}

impl TypeCounters {
    fn snapshot(&self, type_url: &str) -> TypeMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TypeMetrics {
            type_url: type_url.to_string(),
            metric_type: metric_type(type_url).to_string(),
            pushes: get(&self.pushes),
            rejects: get(&self.rejects),
            expired_nonces: get(&self.expired_nonces),
            push_time: self.push_time.snapshot(),
            config_size: self.config_size.snapshot(),
        }
    }
}

/// The counters of one type URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeMetrics {
    /// The full type URL (`pilot_xds_config_size_bytes`'s `type` label).
    pub type_url: String,
    /// Its [`metric_type`] (the `type` label of the other families).
    pub metric_type: String,
    /// Responses sent.
    pub pushes: u64,
    /// NACKs received.
    pub rejects: u64,
    /// Requests with an expired (not the latest) nonce.
    pub expired_nonces: u64,
    /// Generation and hand-over time of each response, in seconds.
    pub push_time: HistogramSnapshot,
    /// Encoded size of each response, in bytes.
    pub config_size: HistogramSnapshot,
}

/// A point-in-time copy of the server's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Push requests announced with [`AdsServer::push`](super::AdsServer::push).
    pub pushes: u64,
    /// Responses sent because of a push (one per connection and type).
    pub push_responses: u64,
    /// Responses sent in answer to requests (initial and subscription changes).
    pub request_responses: u64,
    /// NACKs received, of every type.
    pub nacks: u64,
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Encoded bytes of all responses sent.
    pub bytes_sent: u64,
    /// Generator errors (the proxy kept its last config for that type).
    pub generation_errors: u64,
    /// Responses whose ACK did not arrive within the ACK timeout.
    pub ack_timeouts: u64,
    /// Streams closed because the client did not read its responses in time.
    pub send_timeouts: u64,
    /// Streams refused or closed for a bad request (bad node, too many names).
    pub rejected_streams: u64,
    /// Largest request received, in bytes (`pilot_xds_recv_max`).
    pub recv_max: u64,
    /// Time from a push's creation to the ACK of the last response it caused, per connection
    /// (`pilot_proxy_convergence_time`), in seconds.
    pub convergence: HistogramSnapshot,
    /// Time from a push's creation to a connection starting on it (`pilot_proxy_queue_time`).
    pub queue_time: HistogramSnapshot,
    /// Time to hand one response to its stream (`pilot_xds_send_time`).
    pub send_time: HistogramSnapshot,
    /// Per type URL that saw any traffic: Envoy's types in push order, then the others.
    pub types: Vec<TypeMetrics>,
}

/// The live counters behind [`Metrics`]; shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Counters {
    pub pushes: AtomicU64,
    pub push_responses: AtomicU64,
    pub request_responses: AtomicU64,
    pub nacks: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub generation_errors: AtomicU64,
    pub ack_timeouts: AtomicU64,
    pub send_timeouts: AtomicU64,
    pub rejected_streams: AtomicU64,
    /// Shared with every stream's request reader.
    pub recv_max: Arc<AtomicU64>,
    /// At the type's index in [`PUSH_ORDER`].
    xds_types: [TypeCounters; PUSH_ORDER.len()],
    other_types: Mutex<BTreeMap<String, Arc<TypeCounters>>>,
    convergence: AtomicHistogram,
    queue_time: AtomicHistogram,
    send_time: AtomicHistogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            pushes: AtomicU64::new(0),
            push_responses: AtomicU64::new(0),
            request_responses: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            generation_errors: AtomicU64::new(0),
            ack_timeouts: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
            rejected_streams: AtomicU64::new(0),
            recv_max: Arc::new(AtomicU64::new(0)),
            xds_types: Default::default(),
            other_types: Mutex::new(BTreeMap::new()),
            convergence: AtomicHistogram::seconds(),
            queue_time: AtomicHistogram::seconds(),
            send_time: AtomicHistogram::seconds(),
        }
    }
}

/// Adds one to a counter (relaxed: counters are independent and only read for reporting).
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Runs `f` on the counters of `type_url`.
    fn with_type<R>(&self, type_url: &str, f: impl FnOnce(&TypeCounters) -> R) -> R {
        if let Some(i) = PUSH_ORDER.iter().position(|t| *t == type_url) {
            return f(&self.xds_types[i]);
        }
        let counters = {
            let mut others = self.other_types.lock().unwrap_or_else(|e| e.into_inner());
            match others.get(type_url) {
                Some(c) => c.clone(),
                None => others.entry(type_url.to_string()).or_default().clone(),
            }
        };
        f(&counters)
    }

    /// Records one response handed to its stream: `built` is its generation time, `sent` the
    /// time the hand-over took.
    pub fn record_sent(&self, type_url: &str, bytes: u64, built: Duration, sent: Duration) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.send_time.observe_duration(sent);
        self.with_type(type_url, |t| {
            incr(&t.pushes);
            t.push_time.observe_duration(built + sent);
            t.config_size.observe(bytes);
        });
    }

    /// Records a NACK of `type_url`.
    pub fn record_reject(&self, type_url: &str) {
        incr(&self.nacks);
        self.with_type(type_url, |t| incr(&t.rejects));
    }

    /// Records a request whose nonce is not the latest sent for `type_url`.
    pub fn record_expired_nonce(&self, type_url: &str) {
        self.with_type(type_url, |t| incr(&t.expired_nonces));
    }

    /// Records one convergence time.
    pub fn record_convergence(&self, d: Duration) {
        self.convergence.observe_duration(d);
    }

    /// Records the time a push waited before a connection started on it.
    pub fn record_queue_time(&self, d: Duration) {
        self.queue_time.observe_duration(d);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seen = |t: &TypeMetrics| t.pushes + t.rejects + t.expired_nonces > 0;
        let mut types: Vec<TypeMetrics> = PUSH_ORDER
            .iter()
            .zip(&self.xds_types)
            .map(|(url, t)| t.snapshot(url))
            .filter(seen)
            .collect();
        let others: Vec<(String, Arc<TypeCounters>)> = self
            .other_types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        types.extend(others.iter().map(|(url, t)| t.snapshot(url)).filter(seen));
        Metrics {
            pushes: get(&self.pushes),
            push_responses: get(&self.push_responses),
            request_responses: get(&self.request_responses),
            nacks: get(&self.nacks),
            connections: get(&self.connections),
            connections_total: get(&self.connections_total),
            bytes_sent: get(&self.bytes_sent),
            generation_errors: get(&self.generation_errors),
            ack_timeouts: get(&self.ack_timeouts),
            send_timeouts: get(&self.send_timeouts),
            rejected_streams: get(&self.rejected_streams),
            recv_max: get(&self.recv_max),
            convergence: self.convergence.snapshot(),
            queue_time: self.queue_time.snapshot(),
            send_time: self.send_time.snapshot(),
            types,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_type_counters_use_istiods_type_names() {
        let c = Counters::default();
        let ms = Duration::from_millis;
        c.record_sent(CLUSTER, 100, ms(2), ms(1));
        c.record_sent(CLUSTER, 300, ms(1), ms(0));
        c.record_reject(LISTENER);
        c.record_expired_nonce(LISTENER);
        let mcp = "istio.mcp.v1alpha1.Resource";
        c.record_sent(mcp, 10, ms(0), ms(0));
        let m = c.snapshot();
        let names: Vec<(&str, &str)> = m
            .types
            .iter()
            .map(|t| (t.metric_type.as_str(), t.type_url.as_str()))
            .collect();
        assert_eq!(names, vec![("cds", CLUSTER), ("lds", LISTENER), (mcp, mcp)]);
        let cds = &m.types[0];
        assert_eq!((cds.pushes, cds.rejects), (2, 0));
        assert_eq!((cds.config_size.count, cds.config_size.sum), (2, 400.0));
        assert!((cds.push_time.sum - 0.004).abs() < 1e-9);
        let lds = &m.types[1];
        assert_eq!((lds.pushes, lds.rejects, lds.expired_nonces), (0, 1, 1));
        assert_eq!((m.nacks, m.bytes_sent, m.send_time.count), (1, 410, 3));
    }
}
