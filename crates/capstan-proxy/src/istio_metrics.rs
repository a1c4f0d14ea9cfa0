//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`), with Istio's standard labels,
//! so existing Grafana and Kiali dashboards work unchanged.
//!
//! The hot path only finds (or creates) a series keyed by cluster name, response code and
//! protocol and bumps atomics; every label is derived when `/stats/prometheus` is scraped:
//! the source from the proxy's node metadata, the destination from the cluster's Istio name
//! (`outbound|9080|v1|reviews.default.svc.cluster.local`, `inbound|9080||`).

use crate::stats::{Counter, Histogram, BUCKETS_MS};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Who this proxy is, from its node (Istio's `WORKLOAD_NAME`, `NAMESPACE`, `LABELS`,
/// `CLUSTER_ID`, `MESH_ID`, and the node id's type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `sidecar` or `router`.
    pub proxy_type: String,
    /// Workload name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Canonical service (`service.istio.io/canonical-name`, else `app`).
    pub app: String,
    /// Canonical revision (`service.istio.io/canonical-revision`, else `version`).
    pub version: String,
    /// Cluster id.
    pub cluster: String,
}

impl Default for Workload {
    fn default() -> Self {
        let unknown = || "unknown".to_string();
        Workload {
            proxy_type: "sidecar".into(),
            name: unknown(),
            namespace: unknown(),
            app: unknown(),
            version: unknown(),
            cluster: unknown(),
        }
    }
}

impl Workload {
    /// Reads the workload from an Envoy node as pilot-agent fills it in.
    pub fn from_node(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Workload {
        use envoy_types::pb::google::protobuf::value::Kind;
        let meta = node.metadata.as_ref();
        let string = |key: &str| -> Option<String> {
            match meta?.fields.get(key)?.kind.as_ref()? {
                Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            }
        };
        let label = |key: &str| -> Option<String> {
            let Kind::StructValue(labels) = meta?.fields.get("LABELS")?.kind.as_ref()? else {
                return None;
            };
            match labels.fields.get(key)?.kind.as_ref()? {
                Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            }
        };
        // Node id: TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN.
        let mut parts = node.id.split('~');
        let proxy_type = parts.next().unwrap_or("sidecar").to_string();
        let pod = parts.nth(1).unwrap_or_default();
        let (pod_name, pod_ns) = pod.split_once('.').unwrap_or((pod, ""));
        let d = Workload::default();
        Workload {
            proxy_type,
            name: string("WORKLOAD_NAME")
                .or_else(|| (!pod_name.is_empty()).then(|| pod_name.to_string()))
                .unwrap_or(d.name),
            namespace: string("NAMESPACE")
                .or_else(|| (!pod_ns.is_empty()).then(|| pod_ns.to_string()))
                .unwrap_or(d.namespace),
            app: label("service.istio.io/canonical-name")
                .or_else(|| label("app"))
                .unwrap_or(d.app),
            version: label("service.istio.io/canonical-revision")
                .or_else(|| label("version"))
                .unwrap_or(d.version),
            cluster: string("CLUSTER_ID").unwrap_or(d.cluster),
        }
    }
}

/// The request protocol label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestProtocol {
    /// `http`.
    Http,
    /// `grpc` (content-type `application/grpc*`).
    Grpc,
}

/// One HTTP series.
#[derive(Debug, Default)]
pub struct RequestSeries {
    /// `istio_requests_total`.
    pub requests: Counter,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// Sum of request body bytes (`istio_request_bytes_sum`).
    pub request_bytes: Counter,
    /// Sum of response body bytes (`istio_response_bytes_sum`).
    pub response_bytes: Counter,
}

/// One TCP series (per cluster).
#[derive(Debug, Default)]
pub struct TcpSeries {
    /// `istio_tcp_connections_opened_total`.
    pub opened: Counter,
    /// `istio_tcp_connections_closed_total`.
    pub closed: Counter,
    /// `istio_tcp_sent_bytes_total` (to the downstream... Istio: bytes sent during the
    /// connection, from the reporter's side).
    pub sent_bytes: Counter,
    /// `istio_tcp_received_bytes_total`.
    pub received_bytes: Counter,
}

type HttpKey = (u16, RequestProtocol);

/// The HTTP series of one cluster, by response code and protocol. A cluster's counters keep a
/// handle on it ([`crate::stats::ClusterStats::istio`]), so a request finds its series in the
/// few its cluster has seen instead of hashing the cluster's name under the global lock.
#[derive(Debug, Default)]
pub struct ClusterRequests {
    series: Mutex<Vec<(HttpKey, Arc<RequestSeries>)>>,
}

impl ClusterRequests {
    /// The series for a response with `code` over `protocol`.
    pub fn series(&self, code: u16, protocol: RequestProtocol) -> Arc<RequestSeries> {
        let key = (code, protocol);
        let mut list = self
            .series
            .lock()
            .expect("metrics lock: no panics under it");
        if let Some((_, s)) = list.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let s = Arc::new(RequestSeries::default());
        list.push((key, s.clone()));
        s
    }

    fn all(&self) -> Vec<(HttpKey, Arc<RequestSeries>)> {
        self.series
            .lock()
            .expect("metrics lock: no panics under it")
            .clone()
    }
}

/// Istio's standard metrics of this proxy.
#[derive(Debug, Default)]
pub struct IstioMetrics {
    workload: OnceLock<Workload>,
    http: Mutex<HashMap<String, Arc<ClusterRequests>>>,
    tcp: Mutex<HashMap<String, Arc<TcpSeries>>>,
}

impl IstioMetrics {
    /// Sets who this proxy is (once, at start; later calls are ignored).
    pub fn set_workload(&self, w: Workload) {
        let _ = self.workload.set(w);
    }

    fn workload(&self) -> Workload {
        self.workload.get().cloned().unwrap_or_default()
    }

    /// The HTTP series of requests to `cluster`.
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterRequests> {
        let mut map = self.http.lock().expect("metrics lock: no panics under it");
        if let Some(c) = map.get(cluster) {
            return c.clone();
        }
        map.entry(cluster.to_string()).or_default().clone()
    }

    /// The series for a request to `cluster` answered with `code`.
    pub fn request(
        &self,
        cluster: &str,
        code: u16,
        protocol: RequestProtocol,
    ) -> Arc<RequestSeries> {
        self.cluster(cluster).series(code, protocol)
    }

    /// The TCP series for connections to `cluster`.
    pub fn tcp(&self, cluster: &str) -> Arc<TcpSeries> {
        let mut map = self.tcp.lock().expect("metrics lock: no panics under it");
        if let Some(s) = map.get(cluster) {
            return s.clone();
        }
        map.entry(cluster.to_string()).or_default().clone()
    }

    /// Renders every series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let me = self.workload();
        let http: Vec<(String, HttpKey, Arc<RequestSeries>)> = {
            let clusters: Vec<(String, Arc<ClusterRequests>)> = {
                let map = self.http.lock().expect("metrics lock: no panics under it");
                map.iter().map(|(c, m)| (c.clone(), m.clone())).collect()
            };
            let mut v: Vec<_> = clusters
                .iter()
                .flat_map(|(c, m)| m.all().into_iter().map(move |(k, s)| (c.clone(), k, s)))
                .collect();
            v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            v
        };
        let tcp: Vec<(String, Arc<TcpSeries>)> = {
            let map = self.tcp.lock().expect("metrics lock: no panics under it");
            let mut v: Vec<_> = map.iter().map(|(c, s)| (c.clone(), s.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let http_labels: Vec<String> = http
            .iter()
            .map(|(c, (code, proto), _)| {
                let proto = match proto {
                    RequestProtocol::Http => "http",
                    RequestProtocol::Grpc => "grpc",
                };
                format!(
                    "{},request_protocol=\"{proto}\",response_code=\"{code}\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"",
                    peer_labels(&me, c)
                )
            })
            .collect();
        if !http.is_empty() {
            out.push_str("# TYPE istio_requests_total counter\n");
            for ((_, _, s), l) in http.iter().zip(&http_labels) {
                let _ = writeln!(out, "istio_requests_total{{{l}}} {}", s.requests.get());
            }
            out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
            for ((_, _, s), l) in http.iter().zip(&http_labels) {
                histogram(out, "istio_request_duration_milliseconds", l, &s.duration);
            }
            for (name, get) in [
                (
                    "istio_request_bytes",
                    (|s: &RequestSeries| s.request_bytes.get()) as fn(&RequestSeries) -> u64,
                ),
                ("istio_response_bytes", |s: &RequestSeries| {
                    s.response_bytes.get()
                }),
            ] {
                let _ = writeln!(out, "# TYPE {name} summary");
                for ((_, _, s), l) in http.iter().zip(&http_labels) {
                    let _ = writeln!(out, "{name}_sum{{{l}}} {}", get(s));
                    let _ = writeln!(out, "{name}_count{{{l}}} {}", s.requests.get());
                }
            }
        }
        if !tcp.is_empty() {
            for (name, get) in [
                (
                    "istio_tcp_connections_opened_total",
                    (|s: &TcpSeries| s.opened.get()) as fn(&TcpSeries) -> u64,
                ),
                ("istio_tcp_connections_closed_total", |s: &TcpSeries| {
                    s.closed.get()
                }),
                ("istio_tcp_sent_bytes_total", |s: &TcpSeries| {
                    s.sent_bytes.get()
                }),
                ("istio_tcp_received_bytes_total", |s: &TcpSeries| {
                    s.received_bytes.get()
                }),
            ] {
                let _ = writeln!(out, "# TYPE {name} counter");
                for (c, s) in &tcp {
                    let _ = writeln!(
                        out,
                        "{name}{{{},request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"unknown\"}} {}",
                        peer_labels(&me, c),
                        get(s)
                    );
                }
            }
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (buckets, count, sum) = h.read();
    let mut cumulative = 0;
    for (bound, n) in BUCKETS_MS.iter().zip(buckets) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Source and destination labels for traffic through `cluster`, reported by this proxy.
/// Outbound (and gateway) traffic is reported as `source` with this workload as the source;
/// inbound (`inbound|PORT||`) as `destination` with this workload as the destination.
fn peer_labels(me: &Workload, cluster: &str) -> String {
    let unknown = Workload::default();
    let mut parts = cluster.split('|');
    let direction = parts.next().unwrap_or_default();
    let _port = parts.next();
    let subset = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    let inbound = direction == "inbound";
    let (src, dst) = if inbound {
        (&unknown, me)
    } else {
        (me, &unknown)
    };
    let (service, name, namespace) = if inbound {
        ("unknown".to_string(), me.app.clone(), me.namespace.clone())
    } else if host.is_empty() {
        // PassthroughCluster, BlackHoleCluster, ...: Istio names the cluster as the service.
        (
            cluster.to_string(),
            cluster.to_string(),
            "unknown".to_string(),
        )
    } else {
        let mut labels = host.splitn(3, '.');
        let name = labels.next().unwrap_or(host).to_string();
        let ns = labels.next().unwrap_or("unknown").to_string();
        (host.to_string(), name, ns)
    };
    let dst_version = if !inbound && !subset.is_empty() {
        subset.to_string()
    } else {
        dst.version.clone()
    };
    let reporter = if inbound { "destination" } else { "source" };
    let fields = [
        ("reporter", reporter.to_string()),
        ("source_workload", src.name.clone()),
        ("source_workload_namespace", src.namespace.clone()),
        ("source_principal", "unknown".to_string()),
        ("source_app", src.app.clone()),
        ("source_version", src.version.clone()),
        ("source_canonical_service", src.app.clone()),
        ("source_canonical_revision", src.version.clone()),
        ("source_cluster", src.cluster.clone()),
        ("destination_workload", dst.name.clone()),
        (
            "destination_workload_namespace",
            if inbound {
                dst.namespace.clone()
            } else {
                namespace.clone()
            },
        ),
        ("destination_principal", "unknown".to_string()),
        ("destination_app", dst.app.clone()),
        ("destination_version", dst_version.clone()),
        ("destination_service", service),
        ("destination_service_name", name),
        ("destination_service_namespace", namespace),
        ("destination_canonical_service", dst.app.clone()),
        ("destination_canonical_revision", dst_version),
        ("destination_cluster", dst.cluster.clone()),
    ];
    fields
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn me() -> Workload {
        Workload {
            proxy_type: "sidecar".into(),
            name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
        }
    }

    #[test]
    fn outbound_requests_are_reported_by_the_source() {
        let m = IstioMetrics::default();
        m.set_workload(me());
        let s = m.request(
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            200,
            RequestProtocol::Http,
        );
        s.requests.inc();
        s.duration.record(Duration::from_millis(3));
        m.request(
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            200,
            RequestProtocol::Http,
        )
        .requests
        .inc();
        let mut out = String::new();
        m.render(&mut out);
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("a requests line");
        for want in [
            "reporter=\"source\"",
            "source_workload=\"productpage-v1\"",
            "source_app=\"productpage\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "destination_version=\"v2\"",
            "response_code=\"200\"",
            "request_protocol=\"http\"",
        ] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        assert!(line.ends_with(" 2"), "{line}");
        assert!(out.contains("istio_request_duration_milliseconds_bucket{"));
        assert!(out.contains("le=\"5\"} 1"), "{out}");
    }

    #[test]
    fn inbound_requests_are_reported_by_the_destination() {
        let m = IstioMetrics::default();
        m.set_workload(me());
        m.request("inbound|9080||", 503, RequestProtocol::Grpc)
            .requests
            .inc();
        m.tcp("inbound|3306||").opened.inc();
        let mut out = String::new();
        m.render(&mut out);
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap();
        assert!(line.contains("reporter=\"destination\""), "{line}");
        assert!(
            line.contains("destination_workload=\"productpage-v1\""),
            "{line}"
        );
        assert!(line.contains("source_workload=\"unknown\""), "{line}");
        assert!(
            line.contains("request_protocol=\"grpc\",response_code=\"503\""),
            "{line}"
        );
        assert!(
            out.contains("istio_tcp_connections_opened_total{reporter=\"destination\""),
            "{out}"
        );
    }

    #[test]
    fn workload_from_node() {
        use envoy_types::pb::envoy::config::core::v3::Node;
        let json = serde_json::json!({"NAMESPACE": "shop", "LABELS": {"app": "cart", "version": "v3"}, "CLUSTER_ID": "c1"});
        let serde_json::Value::Object(map) = json else {
            unreachable!()
        };
        let node = Node {
            id: "sidecar~10.0.0.1~cart-7d9.shop~shop.svc.cluster.local".into(),
            metadata: Some(crate::bootstrap::json_to_struct(&map)),
            ..Default::default()
        };
        let w = Workload::from_node(&node);
        assert_eq!(
            w,
            Workload {
                proxy_type: "sidecar".into(),
                name: "cart-7d9".into(),
                namespace: "shop".into(),
                app: "cart".into(),
                version: "v3".into(),
                cluster: "c1".into(),
            }
        );
    }
}
