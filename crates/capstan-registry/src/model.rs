//! The service model every registry adapter produces: services with ports and VIPs, endpoints
//! with locality, health and identity, and workloads (one workload may have several addresses).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Application protocol of a port, as Istio classifies it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Protocol {
    /// HTTP/1.1 (or upgraded).
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/2 cleartext.
    #[serde(rename = "HTTP2")]
    Http2,
    /// gRPC.
    #[serde(rename = "GRPC")]
    Grpc,
    /// gRPC-Web.
    #[serde(rename = "GRPC-Web")]
    GrpcWeb,
    /// HTTP over TLS terminated by the application.
    #[serde(rename = "HTTPS")]
    Https,
    /// Opaque TLS.
    #[serde(rename = "TLS")]
    Tls,
    /// Opaque TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP (not proxied).
    #[serde(rename = "UDP")]
    Udp,
    /// MongoDB.
    #[serde(rename = "Mongo")]
    Mongo,
    /// Redis.
    #[serde(rename = "Redis")]
    Redis,
    /// MySQL.
    #[serde(rename = "MySQL")]
    Mysql,
    /// An HTTP forward proxy port.
    #[serde(rename = "HTTP_PROXY")]
    HttpProxy,
    /// Not declared: the proxy sniffs it (Istio's protocol detection).
    #[default]
    #[serde(rename = "UnsupportedProtocol")]
    Unknown,
}

impl Protocol {
    /// Parses a protocol name case-insensitively (`http`, `GRPC`, `grpc-web`); unknown names give `Unknown`.
    pub fn parse(s: &str) -> Protocol {
        const TABLE: &[(&str, Protocol)] = &[
            ("http", Protocol::Http),
            ("http2", Protocol::Http2),
            ("grpc", Protocol::Grpc),
            ("grpc-web", Protocol::GrpcWeb),
            ("https", Protocol::Https),
            ("tls", Protocol::Tls),
            ("tcp", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("mongo", Protocol::Mongo),
            ("redis", Protocol::Redis),
            ("mysql", Protocol::Mysql),
            ("http_proxy", Protocol::HttpProxy),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, p)| *p)
            .unwrap_or(Protocol::Unknown)
    }

    /// Istio's protocol selection for a Kubernetes port: `appProtocol` first, then the port
    /// name's prefix before `-` (`http-web`, `grpc`, `tcp-db`), else `Unknown` (sniffed).
    pub fn for_port(app_protocol: Option<&str>, port_name: &str) -> Protocol {
        if let Some(app) = app_protocol {
            // Kubernetes' standard appProtocol values (KEP-3726).
            let app = match app {
                "kubernetes.io/h2c" => "http2",
                "kubernetes.io/ws" | "kubernetes.io/wss" => "http",
                other => other,
            };
            let p = Protocol::parse(app);
            if p != Protocol::Unknown {
                return p;
            }
        }
        let prefix = port_name.split_once('-').map_or(port_name, |(p, _)| p);
        Protocol::parse(prefix)
    }

    /// True for protocols whose traffic Istio routes with HTTP route tables.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Unknown => "UnsupportedProtocol",
        };
        f.write_str(s)
    }
}

/// A port a service exposes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (may be empty for single-port services).
    pub name: String,
    /// Port number clients use.
    pub port: u16,
    /// Application protocol.
    pub protocol: Protocol,
}

/// How clients find a service's endpoints (Istio's `Resolution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// The proxy load-balances over endpoints it is told (EDS).
    #[default]
    ClientSideLb,
    /// Endpoints are DNS names resolved by the proxy.
    DnsLb,
    /// DNS names, round robin over the answers.
    DnsRoundRobinLb,
    /// Traffic goes to the address the caller asked for.
    Passthrough,
}

/// Which registry a service or endpoint came from. Order is merge precedence (first wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RegistryKind {
    /// Kubernetes Services / EndpointSlices / Pods.
    Kubernetes,
    /// ServiceEntry / WorkloadEntry config.
    ServiceEntry,
    /// Consul catalog.
    Consul,
    /// The YAML file registry.
    File,
}

/// A service: a hostname with ports, optionally virtual IPs, and its properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Fully qualified hostname (`reviews.default.svc.cluster.local`, `web.service.consul`).
    pub hostname: String,
    /// Namespace the service belongs to (for scoping and exportTo).
    pub namespace: String,
    /// Ports, sorted by number.
    pub ports: Vec<ServicePort>,
    /// Virtual IPs (Kubernetes ClusterIPs, ServiceEntry addresses); empty for headless.
    pub addresses: Vec<String>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// How endpoints are resolved.
    pub resolution: Resolution,
    /// True for services outside the mesh (ServiceEntry MESH_EXTERNAL, ExternalName).
    pub mesh_external: bool,
    /// Namespaces that may see the service (`*` for all, `.` for its own); empty means all.
    pub export_to: Vec<String>,
    /// Which registry defined it.
    pub registry: RegistryKind,
    /// For Kubernetes ExternalName services: the name it aliases.
    pub external_name: Option<String>,
}

impl Service {
    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Health of an endpoint.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Health {
    /// Ready to receive traffic.
    #[default]
    Healthy,
    /// Not ready (failing checks, not-ready pods).
    Unhealthy,
    /// Shutting down: finishes what it has, gets nothing new.
    Draining,
}

/// Region / zone / subzone of a workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Locality {
    /// Region (`topology.kubernetes.io/region`).
    pub region: String,
    /// Zone (`topology.kubernetes.io/zone`).
    pub zone: String,
    /// Subzone (`topology.istio.io/subzone`).
    pub subzone: String,
}

impl Locality {
    /// Parses Istio's `region/zone/subzone` form (missing parts are empty).
    pub fn parse(s: &str) -> Locality {
        let mut parts = s.splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or_default().to_string(),
            zone: parts.next().unwrap_or_default().to_string(),
            subzone: parts.next().unwrap_or_default().to_string(),
        }
    }
}

/// One instance of a service on one port: where to send traffic and what is known about it.
///
/// What is known about the workload behind it is shared ([`EndpointMeta`]): a workload's
/// endpoints (one per port of every service it backs) hold one copy between them, so an
/// endpoint itself is an address, ports, weight and health (48 bytes, where the strings and
/// labels inline took 256 and a labels map of its own per port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address (or a DNS name for DNS-resolved services, or `unix://` path).
    pub address: String,
    /// Port on the endpoint (the target port).
    pub port: u16,
    /// The service port number this endpoint serves.
    pub service_port: u16,
    /// What is known about the workload (labels, locality, identity...), shared.
    #[serde(flatten)]
    pub meta: Arc<EndpointMeta>,
    /// Load-balancing weight; 0 means the default (1).
    pub weight: u32,
    /// Health.
    pub health: Health,
}

/// What is known about the workload behind an endpoint; shared by its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointMeta {
    /// Workload labels (subset selection matches on these).
    pub labels: BTreeMap<String, String>,
    /// Locality.
    pub locality: Locality,
    /// Network the endpoint is on (multi-network meshes).
    pub network: String,
    /// Workload identity (`spiffe://cluster.local/ns/default/sa/reviews` or service account name).
    pub service_account: String,
    /// Istio TLS mode label (`istio` when the endpoint has a sidecar, else `disabled`).
    pub tls_mode: String,
    /// Name of the workload (pod, WorkloadEntry, Consul node/service id).
    pub workload: String,
    /// Namespace of the workload.
    pub namespace: String,
}

/// A workload: something that runs and may have several addresses (several network interfaces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Name (pod, WorkloadEntry, Consul service id).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Every address it answers on.
    pub addresses: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Identity.
    pub service_account: String,
    /// Locality.
    pub locality: Locality,
    /// Network.
    pub network: String,
    /// Registry it came from.
    pub registry: RegistryKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_app_protocol_then_port_name() {
        assert_eq!(Protocol::for_port(Some("grpc"), "http-web"), Protocol::Grpc);
        assert_eq!(
            Protocol::for_port(Some("kubernetes.io/h2c"), "x"),
            Protocol::Http2
        );
        assert_eq!(Protocol::for_port(None, "http-web"), Protocol::Http);
        assert_eq!(
            Protocol::for_port(None, "grpc-web-ui"),
            Protocol::Grpc,
            "prefix is before the first '-'"
        );
        assert_eq!(Protocol::for_port(None, "HTTP2"), Protocol::Http2);
        assert_eq!(Protocol::for_port(None, "mongo-db"), Protocol::Mongo);
        assert_eq!(Protocol::for_port(None, "web"), Protocol::Unknown);
        assert_eq!(Protocol::for_port(Some("weird"), "tcp-db"), Protocol::Tcp);
    }

    #[test]
    fn locality_parses_partial_forms() {
        assert_eq!(
            Locality::parse("us-east1/us-east1-b"),
            Locality {
                region: "us-east1".into(),
                zone: "us-east1-b".into(),
                subzone: String::new()
            }
        );
        assert_eq!(Locality::parse(""), Locality::default());
    }
}
