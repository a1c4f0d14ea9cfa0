//! DestinationRule traffic policy → Envoy cluster settings (load balancing, connection pool,
//! outlier detection; TLS is [`super::cds_tls`]), with Istio's merge order: top level, its
//! port-level settings, the subset's policy, the subset's port-level settings.

use super::common::{duration, u32v};
use capstan_api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, SimpleLb,
    TrafficPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, cluster, CircuitBreakers, Cluster,
    OutlierDetection as EnvoyOutlier,
};
use envoy_types::pb::envoy::r#type::v3::Percent;

/// The settings that apply to one cluster after merging.
#[derive(Clone, Debug, Default)]
pub struct EffectivePolicy<'a> {
    /// Load balancer.
    pub lb: Option<&'a LoadBalancerSettings>,
    /// Connection pool.
    pub pool: Option<&'a ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier: Option<&'a OutlierDetection>,
    /// Client TLS.
    pub tls: Option<&'a ClientTlsSettings>,
}

impl<'a> EffectivePolicy<'a> {
    fn apply(&mut self, p: &'a TrafficPolicy, port: u16) {
        self.lb = p.load_balancer.as_deref().or(self.lb);
        self.pool = p.connection_pool.as_deref().or(self.pool);
        self.outlier = p.outlier_detection.as_deref().or(self.outlier);
        self.tls = p.tls.as_deref().or(self.tls);
        if let Some(pl) = p
            .port_level_settings
            .iter()
            .find(|pl| pl.port.is_some_and(|s| s.number == u32::from(port)))
        {
            self.lb = pl.load_balancer.as_deref().or(self.lb);
            self.pool = pl.connection_pool.as_deref().or(self.pool);
            self.outlier = pl.outlier_detection.as_deref().or(self.outlier);
            self.tls = pl.tls.as_deref().or(self.tls);
        }
    }

    /// Merges the top-level policy and a subset's policy for `port`.
    pub fn merge(
        top: Option<&'a TrafficPolicy>,
        subset: Option<&'a TrafficPolicy>,
        port: u16,
    ) -> EffectivePolicy<'a> {
        let mut out = EffectivePolicy::default();
        for p in [top, subset].into_iter().flatten() {
            out.apply(p, port);
        }
        out
    }
}

/// Istio's defaults: every threshold at its maximum, remaining tracked.
fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: Some(u32v(u32::MAX)),
        max_pending_requests: Some(u32v(u32::MAX)),
        max_requests: Some(u32v(u32::MAX)),
        max_retries: Some(u32v(u32::MAX)),
        track_remaining: true,
        ..Thresholds::default()
    }
}

/// Istio's default circuit breakers (every threshold at its maximum) on a cluster no policy
/// shapes (the passthrough clusters).
pub fn apply_default_circuit_breakers(c: &mut Cluster) {
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![default_thresholds()],
        ..CircuitBreakers::default()
    });
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|v| *v > 0).map(|v| v as u32)
}

/// The connection pool's per-connection settings in the cluster's `HttpProtocolOptions`
/// (istiod's `applyConnectionPool`): idle timeout (HTTP's, else TCP's), requests per
/// connection, HTTP/2 stream limit (not `maxConnectionDuration`: the proxy cannot retire
/// connections by age yet); `useClientProtocol` makes the
/// upstream speak the downstream's protocol. Options without a protocol choice get explicit
/// HTTP/1.1, as istiod's cluster builder does.
fn http_pool_options(c: &mut Cluster, pool: &capstan_api::networking::ConnectionPoolSettings) {
    use envoy_types::pb::envoy::config::core::v3::{
        Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    };
    let http = pool.http.as_ref();
    let tcp = pool.tcp.as_ref();
    let idle = http
        .and_then(|h| h.idle_timeout.as_ref())
        .or_else(|| tcp.and_then(|t| t.idle_timeout.as_ref()));
    let per_connection = http.and_then(|h| positive(h.max_requests_per_connection));
    let streams = http.and_then(|h| positive(h.max_concurrent_streams));
    let client_protocol = http.and_then(|h| h.use_client_protocol).unwrap_or(false);
    if idle.is_none() && per_connection.is_none() && streams.is_none() && !client_protocol {
        return;
    }
    let mut options = super::cds::http_options(c);
    if idle.is_some() || per_connection.is_some() {
        let common = options
            .common_http_protocol_options
            .get_or_insert_with(CommonOptions::default);
        if let Some(d) = idle {
            common.idle_timeout = Some(duration(d));
        }
        if let Some(n) = per_connection {
            common.max_requests_per_connection = Some(u32v(n));
        }
    }
    if let Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
        protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)),
    })) = options.upstream_protocol_options.as_mut()
    {
        if let Some(n) = streams {
            h2.max_concurrent_streams = Some(u32v(n));
        }
    }
    if client_protocol {
        options.upstream_protocol_options = Some(
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..UseDownstreamHttpConfig::default()
            }),
        );
    }
    options.upstream_protocol_options.get_or_insert_with(|| {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
        })
    });
    super::cds::set_http_options(c, &options);
}

/// Applies the policy's load balancing, connection pool and outlier detection to a cluster.
pub fn apply_policy(c: &mut Cluster, p: &EffectivePolicy<'_>) {
    use cluster::LbPolicy;
    // Load balancing (Istio's default is LEAST_REQUEST).
    c.lb_policy = LbPolicy::LeastRequest as i32;
    if let Some(lb) = p.lb {
        if let Some(simple) = lb.simple {
            c.lb_policy = match simple {
                SimpleLb::RoundRobin => LbPolicy::RoundRobin,
                SimpleLb::Random => LbPolicy::Random,
                SimpleLb::Passthrough => {
                    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                        cluster::DiscoveryType::OriginalDst as i32,
                    ));
                    c.eds_cluster_config = None;
                    c.load_assignment = None;
                    LbPolicy::ClusterProvided
                }
                SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => {
                    LbPolicy::LeastRequest
                }
            } as i32;
        }
        if let Some(hash) = &lb.consistent_hash {
            if let Some(maglev) = &hash.maglev {
                c.lb_policy = LbPolicy::Maglev as i32;
                c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                    table_size: maglev
                        .table_size
                        .map(|t| envoy_types::pb::google::protobuf::UInt64Value { value: t.0 }),
                }));
            } else {
                c.lb_policy = LbPolicy::RingHash as i32;
                let min = hash
                    .ring_hash
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(hash.minimum_ring_size);
                c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
                    cluster::RingHashLbConfig {
                        minimum_ring_size: min
                            .map(|m| envoy_types::pb::google::protobuf::UInt64Value { value: m.0 }),
                        ..cluster::RingHashLbConfig::default()
                    },
                ));
            }
        }
    }
    // Connection pool.
    let mut thresholds = default_thresholds();
    if let Some(pool) = p.pool {
        if let Some(tcp) = &pool.tcp {
            if let Some(m) = positive(tcp.max_connections) {
                thresholds.max_connections = Some(u32v(m));
            }
            if let Some(t) = &tcp.connect_timeout {
                c.connect_timeout = Some(duration(t));
            }
        }
        if let Some(http) = &pool.http {
            if let Some(m) = positive(http.http1_max_pending_requests) {
                thresholds.max_pending_requests = Some(u32v(m));
            }
            if let Some(m) = positive(http.http2_max_requests) {
                thresholds.max_requests = Some(u32v(m));
            }
            if let Some(m) = positive(http.max_retries) {
                thresholds.max_retries = Some(u32v(m));
            }
        }
        http_pool_options(c, pool);
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds],
        ..CircuitBreakers::default()
    });
    // Outlier detection.
    if let Some(o) = p.outlier {
        let mut od = EnvoyOutlier {
            // Istio disables success-rate ejection.
            enforcing_success_rate: Some(u32v(0)),
            interval: o.interval.as_ref().map(duration),
            base_ejection_time: o.base_ejection_time.as_ref().map(duration),
            max_ejection_percent: positive(o.max_ejection_percent).map(u32v),
            ..EnvoyOutlier::default()
        };
        let five_xx = o
            .consecutive_5xx_errors
            .or_else(|| positive(o.consecutive_errors));
        match five_xx {
            Some(0) => od.enforcing_consecutive_5xx = Some(u32v(0)),
            Some(n) => {
                od.consecutive_5xx = Some(u32v(n));
                od.enforcing_consecutive_5xx = Some(u32v(100));
            }
            None => {}
        }
        if let Some(n) = o.consecutive_gateway_errors.filter(|n| *n > 0) {
            od.consecutive_gateway_failure = Some(u32v(n));
            od.enforcing_consecutive_gateway_failure = Some(u32v(100));
        }
        if let Some(pct) = o.min_health_percent.filter(|p| *p >= 0) {
            let common = c.common_lb_config.get_or_insert_with(Default::default);
            common.healthy_panic_threshold = Some(Percent {
                value: f64::from(pct),
            });
        }
        c.outlier_detection = Some(od);
    }
}
