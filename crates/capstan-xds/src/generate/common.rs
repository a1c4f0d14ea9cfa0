//! Small builders shared by the generators: config sources, addresses, durations, cluster
//! names, HTTP connection managers and TCP proxies.

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::{Message, Name};

/// Istio's cluster for unknown destinations under ALLOW_ANY.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster for unknown destinations under REGISTRY_ONLY.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's cluster for inbound traffic to ports no service declares.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// Filter names.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// CORS filter name.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// Router filter name.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// HCM network filter name.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// TCP proxy network filter name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// Packs a message into an `Any`.
pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// `ads: {}` with API version V3.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..ConfigSource::default()
    }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}

/// An Istio API duration as a protobuf duration.
pub fn duration(d: &capstan_api::common::Duration) -> Duration {
    Duration {
        seconds: d.seconds,
        nanos: d.nanos,
    }
}

/// Seconds as a protobuf duration.
pub fn secs(seconds: i64) -> Duration {
    Duration { seconds, nanos: 0 }
}

/// A `UInt32Value`.
pub fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

/// Istio's cluster name `DIRECTION|PORT|SUBSET|HOST`.
pub fn cluster_name(direction: &str, port: u16, subset: &str, host: &str) -> String {
    format!("{direction}|{port}|{subset}|{host}")
}

/// A parsed `outbound|PORT|SUBSET|HOST` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKey<'a> {
    /// Port.
    pub port: u16,
    /// Subset name, may be empty.
    pub subset: &'a str,
    /// Service hostname.
    pub host: &'a str,
}

/// Parses an outbound cluster name.
pub fn parse_outbound(name: &str) -> Option<ClusterKey<'_>> {
    // A byte scan: `splitn` searches with `memchr`, whose setup costs more than these short
    // fields (this runs per subscribed cluster and push: ~6 % of a sync's instructions).
    fn bar(s: &str) -> Option<usize> {
        s.bytes().position(|b| b == b'|')
    }
    let rest = name.strip_prefix("outbound|")?;
    let end = bar(rest)?;
    let port = rest[..end].parse().ok()?;
    let rest = &rest[end + 1..];
    let end = bar(rest)?;
    Some(ClusterKey {
        port,
        subset: &rest[..end],
        host: &rest[end + 1..],
    })
}

fn http_filter<M: Message + Name>(name: &str, m: &M) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(m))),
        ..hcm::HttpFilter::default()
    }
}

/// HTTP filters: fault (when asked), CORS (when asked), router last.
pub fn http_filters(cors: bool, fault: bool) -> Vec<hcm::HttpFilter> {
    // istiod's order: fault, then CORS, then the router.
    let mut out = Vec::new();
    if fault {
        out.push(http_filter(FAULT_FILTER, &HttpFault::default()));
    }
    if cors {
        out.push(http_filter(CORS_FILTER, &Cors {}));
    }
    out.push(http_filter(ROUTER_FILTER, &Router::default()));
    out
}

/// An HTTP connection manager reading routes `route_name` over ADS, WebSocket upgrades allowed
/// (istiod's `buildHTTPConnectionManager` enables `websocket` on every sidecar and gateway HCM).
pub fn hcm_rds(
    stat_prefix: &str,
    route_name: &str,
    filters: Vec<hcm::HttpFilter>,
) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        // istiod's `buildHTTPConnectionManager`: no stream idle timeout (Envoy's default is 5
        // minutes, which would cut idle WebSockets and long-poll streams).
        stream_idle_timeout: Some(secs(0)),
        http_filters: filters,
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route_name.to_string(),
            },
        )),
        ..hcm::HttpConnectionManager::default()
    }
}

/// Wraps an HCM as a network filter.
pub fn hcm_filter(m: &hcm::HttpConnectionManager) -> Filter {
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(m))),
    }
}

/// A TCP proxy network filter to one cluster.
pub fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let m = tcp::TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(
            cluster.to_string(),
        )),
        ..tcp::TcpProxy::default()
    };
    Filter {
        name: TCP_PROXY_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&m))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_round_trip() {
        let n = cluster_name("outbound", 9080, "v1", "reviews.default.svc.cluster.local");
        assert_eq!(n, "outbound|9080|v1|reviews.default.svc.cluster.local");
        let k = parse_outbound(&n).unwrap();
        assert_eq!(
            (k.port, k.subset, k.host),
            (9080, "v1", "reviews.default.svc.cluster.local")
        );
        assert!(parse_outbound("inbound|9080||").is_none());
    }

    #[test]
    fn cluster_names_parse_as_four_bar_separated_fields() {
        // (name, expected port, subset, host): the host is everything after the third bar.
        type Parsed<'a> = Option<(u16, &'a str, &'a str)>;
        let cases: [(&str, Parsed); 10] = [
            ("outbound|80||a.b", Some((80, "", "a.b"))),
            ("outbound|80|v1|a|b", Some((80, "v1", "a|b"))),
            ("outbound|80||", Some((80, "", ""))),
            ("outbound|80|v1", None),
            ("outbound|80", None),
            ("outbound|", None),
            ("outbound||v1|a", None),
            ("outbound|x|v1|a", None),
            ("outbound|70000||a", None),
            ("outbounds|80||a", None),
        ];
        for (name, want) in cases {
            let got = parse_outbound(name).map(|k| (k.port, k.subset, k.host));
            assert_eq!(got, want, "{name}");
        }
    }
}
