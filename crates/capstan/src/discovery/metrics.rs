//! `/metrics`: istiod's metric families (same names, types and label names, so Istio's Grafana
//! dashboards and Kiali read Capstan as they read istiod) plus Capstan's own `capstan_*`.
//!
//! A [`prometheus::core::Collector`] builds every family at scrape time from the counters the
//! server already keeps (atomic snapshots, and the connection statuses for per-proxy gauges),
//! and `prometheus::TextEncoder` writes the text format. Counters keep istiod's sample names:
//! istiod's OpenTelemetry exporter is set up without counter suffixes, so its counters have no
//! `_total` (the OpenMetrics encoders would add one; see docs/architecture.md, Decisions).
//! As in istiod, a labelled series appears with its first event.

use super::State;
use capstan_xds::histogram::HistogramSnapshot;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One family: name, help, type and label names, as istiod declares it (or, for `capstan_*`,
/// as Capstan does).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn family(
    name: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every family Capstan exposes. Help texts of istiod's families are istiod's.
const FAMILIES: &[Family] = &[
    family("pilot_xds", GAUGE, &["version"], "Number of endpoints connected to this pilot using XDS."),
    family("pilot_xds_pushes", COUNTER, &["type"], "Pilot build and send errors for lds, rds, cds and eds."),
    family("pilot_xds_push_time", HISTOGRAM, &["type"], "Total time in seconds Pilot takes to push lds, rds, cds and eds."),
    family("pilot_xds_config_size_bytes", HISTOGRAM, &["type"], "Distribution of configuration sizes pushed to clients"),
    family("pilot_xds_send_time", HISTOGRAM, &[], "Total time in seconds Pilot takes to send generated configuration."),
    family("pilot_total_xds_rejects", COUNTER, &["type"], "Total number of XDS responses from pilot rejected by proxy."),
    family("pilot_xds_cds_reject", GAUGE, &["err", "node"], "Pilot rejected CDS configs."),
    family("pilot_xds_eds_reject", GAUGE, &["err", "node"], "Pilot rejected EDS."),
    family("pilot_xds_lds_reject", GAUGE, &["err", "node"], "Pilot rejected LDS."),
    family("pilot_xds_rds_reject", GAUGE, &["err", "node"], "Pilot rejected RDS."),
    family("pilot_xds_expired_nonce", COUNTER, &["type"], "Total number of XDS requests with an expired nonce."),
    family("pilot_xds_recv_max", GAUGE, &[], "The maximum size request we have received so far."),
    family("pilot_proxy_convergence_time", HISTOGRAM, &[], "Delay in seconds between config change and a proxy receiving all required configuration."),
    family("pilot_proxy_queue_time", HISTOGRAM, &[], "Time in seconds, a proxy is in the push queue before being dequeued."),
    family("pilot_debounce_time", HISTOGRAM, &[], "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue (includes pushcontext_init_seconds)."),
    family("pilot_pushcontext_init_seconds", HISTOGRAM, &[], "Total time in seconds Pilot takes to init pushContext."),
    family("pilot_push_triggers", COUNTER, &["type"], "Total number of times a push was triggered, labeled by reason for the push."),
    family("pilot_inbound_updates", COUNTER, &["type"], "Total number of updates received by pilot."),
    family("pilot_k8s_cfg_events", COUNTER, &["event", "type"], "Events from k8s config."),
    family("pilot_k8s_reg_events", COUNTER, &["event", "type"], "Events from k8s registry."),
    family("pilot_services", GAUGE, &[], "Total services known to pilot."),
    family("pilot_virt_services", GAUGE, &[], "Total virtual services known to pilot."),
    family("pilot_info", GAUGE, &["version"], "Pilot version and build information."),
    family("istio_build", GAUGE, &["component", "tag"], "Istio component build info"),
    family("istiod_uptime_seconds", GAUGE, &[], "Current istiod server uptime in seconds"),
    family("istiod_managed_clusters", GAUGE, &["cluster_type"], "Number of clusters managed by istiod"),
    family("citadel_server_csr_count", COUNTER, &[], "The number of CSRs received by Citadel server."),
    family("citadel_server_authentication_failure_count", COUNTER, &[], "The number of authentication failures."),
    family("citadel_server_csr_sign_err_count", COUNTER, &["error"], "The number of errors occurred when signing the CSR."),
    family("citadel_server_success_cert_issuance_count", COUNTER, &[], "The number of certificates issuances that have succeeded."),
    family("citadel_server_root_cert_expiry_timestamp", GAUGE, &[], "The unix timestamp, in seconds, when the root cert will expire."),
    family("citadel_server_root_cert_expiry_seconds", GAUGE, &[], "The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired."),
    family("citadel_server_cert_chain_expiry_timestamp", GAUGE, &[], "The unix timestamp, in seconds, when Istio generated cert chain will expire."),
    family("citadel_server_cert_chain_expiry_seconds", GAUGE, &[], "The time remaining, in seconds, before the Istio Generated cert chain will expire. A negative value indicates the cert is expired."),
    family("capstan_pushes_total", COUNTER, &[], "Debounced pushes announced to the connections."),
    family("capstan_xds_connections_total", COUNTER, &[], "ADS streams accepted since start."),
    family("capstan_xds_send_bytes_total", COUNTER, &[], "Encoded bytes of all xDS responses sent."),
    family("capstan_xds_generation_errors_total", COUNTER, &[], "Generation failures (the proxy kept its last config)."),
    family("capstan_xds_ack_timeouts_total", COUNTER, &[], "Responses whose ACK did not arrive in time."),
    family("capstan_xds_send_timeouts_total", COUNTER, &[], "Streams closed because the proxy did not read."),
    family("capstan_xds_rejected_streams_total", COUNTER, &[], "Streams refused or closed for a bad request (bad node, unauthorized, too many names)."),
    family("capstan_xds_cache_reads", COUNTER, &["type"], "Reads of the push's shared-resource cache, by outcome (hit, miss)."),
    family("capstan_config_revision", GAUGE, &[], "Revision of the config store."),
    family("capstan_config_objects", GAUGE, &[], "Validated config objects in the store."),
    family("capstan_services", GAUGE, &[], "Services in the merged index."),
];

/// The version Capstan reports where istiod reports its own (`pilot_info`, `istio_build`).
const VERSION: &str = concat!("capstan-", env!("CARGO_PKG_VERSION"));

/// The reject gauges per Envoy type URL (istiod keeps them for these four types only).
const REJECT_GAUGES: [(&str, &str); 4] = [
    (capstan_xds::resource::CLUSTER, "pilot_xds_cds_reject"),
    (capstan_xds::resource::ENDPOINT, "pilot_xds_eds_reject"),
    (capstan_xds::resource::LISTENER, "pilot_xds_lds_reject"),
    (capstan_xds::resource::ROUTE, "pilot_xds_rds_reject"),
];

/// A gRPC status code by name, as Go's `codes.Code.String()` writes it (istiod's `err` label).
pub(crate) fn grpc_code_name(code: i32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

/// Samples gathered during one scrape, by family name.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<proto::Metric>>);

fn labelled(labels: &[(&str, &str)]) -> proto::Metric {
    let mut pairs: Vec<proto::LabelPair> = labels
        .iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    // istiod writes labels by name; the registry orders series by the values in this order.
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    proto::Metric::from_label(pairs)
}

impl Samples {
    fn gauge(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        let mut m = labelled(labels);
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.0.entry(name).or_default().push(m);
    }

    fn counter(&mut self, name: &'static str, labels: &[(&str, &str)], value: u64) {
        let mut m = labelled(labels);
        let mut c = proto::Counter::default();
        c.set_value(value as f64);
        m.set_counter(c);
        self.0.entry(name).or_default().push(m);
    }

    fn histogram(&mut self, name: &'static str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut m = labelled(labels);
        let mut out = proto::Histogram::default();
        out.set_sample_count(h.count);
        out.set_sample_sum(h.sum);
        out.set_bucket(
            h.bounds
                .iter()
                .zip(&h.cumulative)
                .map(|(bound, n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect(),
        );
        m.set_histogram(out);
        self.0.entry(name).or_default().push(m);
    }

    /// The families, with the declared help and type; unknown names are dropped (a debug
    /// build fails instead: every family must be declared in [`FAMILIES`]).
    fn into_families(self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, metrics) in self.0 {
            let Some(f) = FAMILIES.iter().find(|f| f.name == name) else {
                debug_assert!(false, "metric family {name} is not declared in FAMILIES");
                continue;
            };
            debug_assert!(
                metrics.iter().all(|m| m
                    .get_label()
                    .iter()
                    .map(|l| l.name())
                    .eq(f.labels.iter().copied())),
                "{name}: every series carries the declared labels, by name"
            );
            let mut mf = MetricFamily::default();
            mf.set_name(name.to_string());
            mf.set_help(f.help.to_string());
            mf.set_field_type(f.kind);
            mf.set_metric(metrics);
            out.push(mf);
        }
        out
    }
}

/// Builds the families from `state` at each scrape.
pub(crate) struct DiscoveryCollector {
    state: State,
    started: Instant,
    descs: Vec<Desc>,
}

impl DiscoveryCollector {
    /// A collector reading `state`; uptime counts from now.
    pub(crate) fn new(state: State) -> DiscoveryCollector {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = f.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(f.name.into(), f.help.into(), labels, Default::default())
                    .expect("FAMILIES hold valid metric and label names")
            })
            .collect();
        DiscoveryCollector {
            state,
            started: Instant::now(),
            descs,
        }
    }

    fn xds(&self, out: &mut Samples) {
        let m = self.state.ads.metrics();
        for t in &m.types {
            let ty = [("type", t.metric_type.as_str())];
            if t.pushes > 0 {
                out.counter("pilot_xds_pushes", &ty, t.pushes);
                out.histogram("pilot_xds_push_time", &ty, &t.push_time);
                out.histogram(
                    "pilot_xds_config_size_bytes",
                    &[("type", t.type_url.as_str())],
                    &t.config_size,
                );
            }
            if t.rejects > 0 {
                out.counter("pilot_total_xds_rejects", &ty, t.rejects);
            }
            if t.expired_nonces > 0 {
                out.counter("pilot_xds_expired_nonce", &ty, t.expired_nonces);
            }
        }
        out.histogram("pilot_xds_send_time", &[], &m.send_time);
        out.histogram("pilot_proxy_convergence_time", &[], &m.convergence);
        out.histogram("pilot_proxy_queue_time", &[], &m.queue_time);
        out.gauge("pilot_xds_recv_max", &[], m.recv_max as f64);
        out.counter("capstan_pushes_total", &[], m.pushes);
        out.counter("capstan_xds_connections_total", &[], m.connections_total);
        out.counter("capstan_xds_send_bytes_total", &[], m.bytes_sent);
        out.counter(
            "capstan_xds_generation_errors_total",
            &[],
            m.generation_errors,
        );
        out.counter("capstan_xds_ack_timeouts_total", &[], m.ack_timeouts);
        out.counter("capstan_xds_send_timeouts_total", &[], m.send_timeouts);
        out.counter(
            "capstan_xds_rejected_streams_total",
            &[],
            m.rejected_streams,
        );
    }

    /// Per-connection gauges: streams by the proxy's Istio version, and the proxies whose last
    /// response of a type was rejected.
    fn connections(&self, out: &mut Samples) {
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        // (family, err, node): a proxy with several streams is one series, as in istiod.
        let mut rejects: BTreeMap<(&'static str, String, String), ()> = BTreeMap::new();
        self.state.ads.visit_connections(|c| {
            *versions.entry(c.proxy.istio_version.clone()).or_default() += 1;
            for (type_url, family) in REJECT_GAUGES {
                let Some(t) = c.types.get(type_url) else {
                    continue;
                };
                // Current, not ever: the rejected response is still the latest sent.
                let Some(nack) = t
                    .last_nack
                    .as_ref()
                    .filter(|n| n.nonce == t.last_sent_nonce)
                else {
                    continue;
                };
                // istiod's node label is the proxy ID's `pod.namespace` field.
                let node = if c.proxy.pod_id.is_empty() {
                    c.proxy_id.clone()
                } else {
                    c.proxy.pod_id.clone()
                };
                rejects.insert((family, grpc_code_name(nack.code), node), ());
            }
        });
        for (version, n) in versions {
            out.gauge("pilot_xds", &[("version", &version)], n as f64);
        }
        for (family, err, node) in rejects.into_keys() {
            out.gauge(family, &[("err", &err), ("node", &node)], 1.0);
        }
    }

    fn pipeline(&self, out: &mut Samples) {
        let p = self.state.pipeline.snapshot();
        for (t, n) in &p.inbound_updates {
            out.counter("pilot_inbound_updates", &[("type", t)], *n);
        }
        for (t, n) in &p.push_triggers {
            out.counter("pilot_push_triggers", &[("type", t)], *n);
        }
        for e in &p.config_events {
            let labels = [("event", e.event), ("type", e.kind.as_str())];
            out.counter("pilot_k8s_cfg_events", &labels, e.count);
        }
        for e in &p.registry_events {
            let labels = [("event", e.event), ("type", e.kind.as_str())];
            out.counter("pilot_k8s_reg_events", &labels, e.count);
        }
        out.histogram("pilot_debounce_time", &[], &p.debounce_time);
        out.histogram("pilot_pushcontext_init_seconds", &[], &p.pushcontext_init);
    }

    fn state_gauges(&self, out: &mut Samples) {
        let config = self.state.store.snapshot();
        let virtual_services = config
            .objects
            .keys()
            .filter(|k| k.kind == capstan_api::Kind::VirtualService)
            .count();
        let services = self.state.index.snapshot().service_count();
        out.gauge("pilot_services", &[], services as f64);
        out.gauge("pilot_virt_services", &[], virtual_services as f64);
        out.gauge("capstan_services", &[], services as f64);
        out.gauge("capstan_config_revision", &[], config.revision as f64);
        out.gauge("capstan_config_objects", &[], config.objects.len() as f64);
        let cache = self.state.generator.cache_stats();
        out.counter("capstan_xds_cache_reads", &[("type", "hit")], cache.hits);
        out.counter("capstan_xds_cache_reads", &[("type", "miss")], cache.misses);
        out.gauge("pilot_info", &[("version", VERSION)], 1.0);
        out.gauge(
            "istio_build",
            &[("component", "pilot"), ("tag", VERSION)],
            1.0,
        );
        out.gauge(
            "istiod_uptime_seconds",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        // One cluster: the Kubernetes one discovery watches, if any; no remote clusters.
        let local = if self.state.kubernetes { 1.0 } else { 0.0 };
        out.gauge(
            "istiod_managed_clusters",
            &[("cluster_type", "local")],
            local,
        );
        out.gauge(
            "istiod_managed_clusters",
            &[("cluster_type", "remote")],
            0.0,
        );
    }

    /// istiod's Citadel families, when a CA runs: its request counters, and the expiry of the
    /// first root of the trust bundle and of the signing certificate (istiod's
    /// `RecordCertsExpiry`: the latter only for a CA with a chain, i.e. not self-signed).
    fn ca(&self, out: &mut Samples) {
        let Some(ca) = &self.state.ca else {
            return;
        };
        let m = ca.metrics.snapshot();
        out.counter("citadel_server_csr_count", &[], m.requests);
        out.counter(
            "citadel_server_authentication_failure_count",
            &[],
            m.authentication_failures,
        );
        for (error, n) in &m.sign_errors {
            out.counter("citadel_server_csr_sign_err_count", &[("error", error)], *n);
        }
        out.counter("citadel_server_success_cert_issuance_count", &[], m.issued);
        let authority = ca.authority.get();
        let now = SystemTime::now();
        let mut expiry = |timestamp: &'static str, seconds: &'static str, at: SystemTime| {
            let unix = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs() as f64);
            let left = match at.duration_since(now) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            out.gauge(timestamp, &[], unix);
            out.gauge(seconds, &[], left);
        };
        if let Some(root) = authority.trust_bundle().roots().first() {
            expiry(
                "citadel_server_root_cert_expiry_timestamp",
                "citadel_server_root_cert_expiry_seconds",
                root.not_after(),
            );
        }
        if !authority.intermediates().is_empty() {
            expiry(
                "citadel_server_cert_chain_expiry_timestamp",
                "citadel_server_cert_chain_expiry_seconds",
                authority.ca_not_after(),
            );
        }
    }
}

impl Collector for DiscoveryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Samples::default();
        self.xds(&mut out);
        self.connections(&mut out);
        self.pipeline(&mut out);
        self.state_gauges(&mut out);
        self.ca(&mut out);
        out.into_families()
    }
}

/// A registry holding the discovery collector.
pub(crate) fn registry(state: State) -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(DiscoveryCollector::new(state)))
        .expect("a fresh registry accepts the collector: FAMILIES has unique names");
    registry
}

/// The text exposition of everything `registry` holds.
pub(crate) fn render(registry: &prometheus::Registry) -> Result<String, prometheus::Error> {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::Kind;
    use capstan_config::{ConfigChange, ConfigEvent, ConfigKey, ConfigStore, EventKind};
    use capstan_registry::ServiceIndex;
    use capstan_xds::context::{MeshConfig, PushContext};
    use capstan_xds::debounce::Change;
    use capstan_xds::{AdsOptions, AdsServer, IstioGenerator};
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    fn state() -> State {
        let store = Arc::new(ConfigStore::new());
        let index = Arc::new(ServiceIndex::new());
        let ctx = PushContext::new(store.snapshot(), index.snapshot(), MeshConfig::default(), 0);
        let generator = Arc::new(IstioGenerator::new(ctx));
        let ads = AdsServer::new(generator.clone(), AdsOptions::default());
        State {
            store,
            index,
            generator,
            ads,
            pipeline: Arc::default(),
            kubernetes: true,
            ca: None,
        }
    }

    /// `# TYPE` per family, and the label names of each sample's family (`le` left out).
    fn parse(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap();
                let mut name = &line[..name_end];
                for suffix in ["_bucket", "_sum", "_count"] {
                    let base = name.strip_suffix(suffix).unwrap_or(name);
                    if types.get(base).is_some_and(|t| t == "histogram") {
                        name = base;
                    }
                }
                let set = labels.entry(name.to_string()).or_default();
                if let Some(body) = line[name_end..].strip_prefix('{') {
                    let body = &body[..body.find('}').unwrap()];
                    for pair in body.split(',') {
                        let key = pair.split_once('=').unwrap().0;
                        if key != "le" {
                            set.insert(key.to_string());
                        }
                    }
                }
            }
        }
        (types, labels)
    }

    /// The text format as Prometheus and istiod's dashboards read it: histograms as
    /// `_bucket{le}`/`_sum`/`_count`, counters under their own names (no `_total` added),
    /// every family with its declared type and label names.
    #[test]
    fn the_exposition_has_istiods_shape() {
        let state = state();
        let change = Change::Config(ConfigChange {
            revision: 1,
            events: vec![ConfigEvent {
                event: EventKind::Added,
                key: ConfigKey {
                    kind: Kind::VirtualService,
                    namespace: "demo".into(),
                    name: "app".into(),
                },
            }],
        });
        let triggers = state.pipeline.record_change(&change);
        state
            .pipeline
            .record_push(&triggers, Duration::from_millis(20));
        let text = render(&registry(state)).unwrap();
        for line in [
            "# TYPE pilot_push_triggers counter",
            "pilot_push_triggers{type=\"config\"} 1",
            "pilot_inbound_updates{type=\"config\"} 1",
            "pilot_k8s_cfg_events{event=\"add\",type=\"VirtualService\"} 1",
            "# TYPE pilot_debounce_time histogram",
            "pilot_debounce_time_bucket{le=\"0.01\"} 0",
            "pilot_debounce_time_bucket{le=\"0.025\"} 1",
            "pilot_debounce_time_bucket{le=\"+Inf\"} 1",
            "pilot_debounce_time_sum 0.02",
            "pilot_debounce_time_count 1",
            "pilot_services 0",
            "istiod_managed_clusters{cluster_type=\"local\"} 1",
            "istio_build{component=\"pilot\",tag=\"capstan-",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line}:\n{text}"
            );
        }
        assert!(!text.contains("_total{") && !text.contains("pilot_push_triggers_total"));
        let (types, labels) = parse(&text);
        for (name, kind) in &types {
            let f = FAMILIES.iter().find(|f| f.name == name).unwrap();
            assert_eq!(*kind, format!("{:?}", f.kind).to_lowercase(), "{name}");
            let declared: BTreeSet<String> = f.labels.iter().map(|l| l.to_string()).collect();
            assert_eq!(labels[name], declared, "{name}");
        }
        // No connection yet: the per-connection and per-type families are absent, not zero.
        for absent in ["pilot_xds", "pilot_xds_pushes", "pilot_total_xds_rejects"] {
            assert!(!types.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn grpc_codes_are_named_as_go_names_them() {
        assert_eq!(grpc_code_name(3), "InvalidArgument");
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(16), "Unauthenticated");
        assert_eq!(grpc_code_name(42), "Code(42)");
        assert_eq!(grpc_code_name(-1), "Code(-1)");
    }

    /// With a CA, istiod's Citadel families: each `CreateCertificate` outcome counted where
    /// istiod counts it, and the expiry gauges of the root (and, for a CA with a chain only,
    /// of the signing certificate).
    #[tokio::test]
    async fn ca_requests_are_counted_as_citadel_counts_them() {
        use capstan_ca::{CaService, CertificateAuthority, CurrentCa, StaticTokenAuthenticator};
        use capstan_ca_proto::IstioCertificateRequest;
        let (ca, _) = CertificateAuthority::generate_self_signed(Default::default()).unwrap();
        let authority = CurrentCa::fixed(Arc::new(ca));
        let tokens = StaticTokenAuthenticator::parse("tok ns sa", "t", "cluster.local").unwrap();
        let service = CaService::new(authority.clone(), vec![Arc::new(tokens)]);
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        for (token, csr) in [
            (Some("tok"), csr.as_str()),
            (Some("tok"), "not a CSR"),
            (Some("wrong"), csr.as_str()),
            (None, csr.as_str()),
        ] {
            let mut request = tonic::Request::new(IstioCertificateRequest {
                csr: csr.to_owned(),
                ..Default::default()
            });
            if let Some(t) = token {
                let value = format!("Bearer {t}").parse().unwrap();
                request.metadata_mut().insert("authorization", value);
            }
            let _ = service.create_certificate(request).await;
        }
        let mut state = state();
        state.ca = Some(super::super::ca::CaObserved {
            authority,
            metrics: service.metrics().clone(),
        });
        let text = render(&registry(state)).unwrap();
        for line in [
            "# TYPE citadel_server_csr_count counter",
            "citadel_server_csr_count 4",
            "citadel_server_authentication_failure_count 2",
            "citadel_server_csr_sign_err_count{error=\"CSR_ERROR\"} 1",
            "citadel_server_success_cert_issuance_count 1",
            "# TYPE citadel_server_root_cert_expiry_timestamp gauge",
            "citadel_server_root_cert_expiry_seconds 315",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line}:\n{text}"
            );
        }
        // A self-signed CA has no chain: istiod records no chain expiry for it.
        assert!(!text.contains("citadel_server_cert_chain_expiry"), "{text}");
    }

    #[test]
    fn every_family_is_declared_once() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
