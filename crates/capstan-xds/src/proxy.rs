//! The proxy model: who is connected, parsed from the Envoy `Node` (id and metadata) the way
//! istiod does, and the proxy's own workload and services found in the registry.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use std::collections::BTreeMap;
use std::fmt;

/// What kind of proxy this is (the first field of the node id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ProxyType {
    /// A sidecar (`sidecar~...`): inbound and outbound listeners.
    Sidecar,
    /// A gateway (`router~...`): listeners from Gateway servers.
    Router,
    /// A proxyless gRPC client (node metadata `GENERATOR: grpc`, or an id without `~`).
    Proxyless,
    /// A config consumer, e.g. another control plane reading Istio config over MCP-over-xDS,
    /// whose node id is not a proxy's: it is served config types only, never Envoy's xDS types.
    ConfigClient,
}

/// A connected proxy, as generation sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Proxy {
    /// The full node id.
    pub id: String,
    /// Sidecar, gateway or proxyless.
    pub proxy_type: ProxyType,
    /// The proxy's IP addresses: `INSTANCE_IPS` metadata, else the id's IP field. A workload with
    /// several network interfaces reports several.
    pub ip_addresses: Vec<String>,
    /// `pod.namespace` part of the id (`reviews-v1-abc.default`).
    pub pod_id: String,
    /// Namespace (metadata `NAMESPACE`, else from the id).
    pub namespace: String,
    /// DNS domain (`default.svc.cluster.local`).
    pub dns_domain: String,
    /// Workload labels (metadata `LABELS`).
    pub labels: BTreeMap<String, String>,
    /// Istio version the proxy reports (`ISTIO_VERSION`), if any.
    pub istio_version: String,
    /// Interception mode (`INTERCEPTION_MODE`: REDIRECT, TPROXY, NONE).
    pub interception_mode: String,
    /// Cluster ID (`CLUSTER_ID`), if any.
    pub cluster_id: String,
    /// Network (`NETWORK`), if any.
    pub network: String,
    /// Where the proxy runs (the node's `locality`, as Istio's agent reports it); empty when
    /// not reported.
    pub locality: capstan_registry::Locality,
    /// The stream was authenticated (client certificate or token) and authorized for every
    /// namespace the node claims (istiod's `VerifiedIdentity`). Only such proxies are sent
    /// credentials (SDS secrets), as istiod requires.
    pub authenticated: bool,
}

/// Why a node could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The request carried no node.
    #[error("the first request of a stream must carry a node")]
    MissingNode,
    /// The node id is empty.
    #[error("node id is empty")]
    EmptyId,
    /// The node id does not have Istio's four `~`-separated fields.
    #[error("node id {0:?} is not of the form TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN")]
    MalformedId(String),
    /// The id names an unknown proxy type.
    #[error("node id {0:?}: unknown proxy type {1:?} (sidecar or router)")]
    UnknownType(String, String),
    /// The id's IP field is not an IP address.
    #[error("node id {0:?}: {1:?} is not an IP address")]
    BadAddress(String, String),
}

/// Longest node id accepted (Envoy ids are short; this bounds hostile input).
const MAX_ID_LEN: usize = 1024;

/// The start of an over-long id, for the error (cut at a character boundary).
fn shortened(id: &str) -> String {
    let mut out: String = id.chars().take(64).collect();
    out.push('…');
    out
}

fn string_field(metadata: Option<&Struct>, key: &str) -> Option<String> {
    match metadata?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn labels_field(metadata: Option<&Struct>) -> BTreeMap<String, String> {
    let Some(Value {
        kind: Some(Kind::StructValue(labels)),
    }) = metadata.and_then(|m| m.fields.get("LABELS"))
    else {
        return BTreeMap::new();
    };
    labels
        .fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

impl Proxy {
    /// Parses a node as istiod does: `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`, with metadata
    /// overriding or adding (`NAMESPACE`, `INSTANCE_IPS`, `LABELS`, `GENERATOR`, ...). Proxyless
    /// gRPC clients may use any id when their metadata says `GENERATOR: grpc`.
    pub fn from_node(node: Option<&Node>) -> Result<Proxy, ProxyError> {
        let node = node.ok_or(ProxyError::MissingNode)?;
        let id = node.id.clone();
        if id.is_empty() {
            return Err(ProxyError::EmptyId);
        }
        if id.len() > MAX_ID_LEN {
            return Err(ProxyError::MalformedId(shortened(&id)));
        }
        let metadata = node.metadata.as_ref();
        let generator = string_field(metadata, "GENERATOR").unwrap_or_default();
        let parts: Vec<&str> = id.split('~').collect();
        let (proxy_type, ip_field, pod_id, domain) = match parts.as_slice() {
            [t, ip, pod, domain] => {
                let proxy_type = match (*t, generator.as_str()) {
                    (_, "grpc") => ProxyType::Proxyless,
                    ("sidecar", _) => ProxyType::Sidecar,
                    ("router", _) => ProxyType::Router,
                    _ => return Err(ProxyError::UnknownType(id.clone(), t.to_string())),
                };
                (
                    proxy_type,
                    ip.to_string(),
                    pod.to_string(),
                    domain.to_string(),
                )
            }
            _ if generator == "grpc" => (
                ProxyType::Proxyless,
                String::new(),
                String::new(),
                String::new(),
            ),
            _ => return Err(ProxyError::MalformedId(id.clone())),
        };
        let mut ip_addresses: Vec<String> = string_field(metadata, "INSTANCE_IPS")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if ip_addresses.is_empty() && !ip_field.is_empty() {
            ip_addresses.push(ip_field.clone());
        }
        for ip in &ip_addresses {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ProxyError::BadAddress(id.clone(), ip.clone()));
            }
        }
        let namespace = string_field(metadata, "NAMESPACE")
            .or_else(|| pod_id.rsplit_once('.').map(|(_, ns)| ns.to_string()))
            .or_else(|| domain.split('.').next().map(String::from))
            .unwrap_or_else(|| "default".to_string());
        Ok(Proxy {
            proxy_type,
            ip_addresses,
            pod_id,
            namespace,
            dns_domain: domain,
            labels: labels_field(metadata),
            istio_version: string_field(metadata, "ISTIO_VERSION").unwrap_or_default(),
            interception_mode: string_field(metadata, "INTERCEPTION_MODE")
                .unwrap_or_else(|| "REDIRECT".into()),
            cluster_id: string_field(metadata, "CLUSTER_ID").unwrap_or_default(),
            network: string_field(metadata, "NETWORK").unwrap_or_default(),
            locality: node
                .locality
                .as_ref()
                .map(|l| capstan_registry::Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    subzone: l.sub_zone.clone(),
                })
                .unwrap_or_default(),
            authenticated: false,
            id,
        })
    }
}

impl Proxy {
    /// A config consumer whose node is not a proxy's ([`ProxyType::ConfigClient`]): the id is
    /// kept as given (shown in syncz), the namespace comes from metadata `NAMESPACE` only.
    /// The node must still carry a non-empty id of bounded length.
    pub fn config_client(node: Option<&Node>) -> Result<Proxy, ProxyError> {
        let node = node.ok_or(ProxyError::MissingNode)?;
        if node.id.is_empty() {
            return Err(ProxyError::EmptyId);
        }
        if node.id.len() > MAX_ID_LEN {
            return Err(ProxyError::MalformedId(shortened(&node.id)));
        }
        let metadata = node.metadata.as_ref();
        Ok(Proxy {
            id: node.id.clone(),
            proxy_type: ProxyType::ConfigClient,
            ip_addresses: Vec::new(),
            pod_id: String::new(),
            namespace: string_field(metadata, "NAMESPACE").unwrap_or_default(),
            dns_domain: String::new(),
            labels: BTreeMap::new(),
            istio_version: string_field(metadata, "ISTIO_VERSION").unwrap_or_default(),
            interception_mode: String::new(),
            cluster_id: string_field(metadata, "CLUSTER_ID").unwrap_or_default(),
            network: String::new(),
            locality: capstan_registry::Locality::default(),
            authenticated: false,
        })
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        let fields = meta
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect();
        Node {
            id: id.into(),
            metadata: Some(Struct { fields }),
            ..Node::default()
        }
    }

    #[test]
    fn parses_sidecar_router_and_proxyless_ids() {
        let p = Proxy::from_node(Some(&node(
            "sidecar~10.1.1.1~reviews-v1-abc.default~default.svc.cluster.local",
            &[],
        )))
        .unwrap();
        assert_eq!(
            (p.proxy_type, p.namespace.as_str(), p.ip_addresses.clone()),
            (ProxyType::Sidecar, "default", vec!["10.1.1.1".to_string()])
        );
        let p = Proxy::from_node(Some(&node(
            "router~10.1.1.2~gw-1.istio-system~istio-system.svc.cluster.local",
            &[],
        )))
        .unwrap();
        assert_eq!(p.proxy_type, ProxyType::Router);
        let p = Proxy::from_node(Some(&node(
            "anything",
            &[("GENERATOR", "grpc"), ("NAMESPACE", "shop")],
        )))
        .unwrap();
        assert_eq!(
            (p.proxy_type, p.namespace.as_str()),
            (ProxyType::Proxyless, "shop")
        );
        let p = Proxy::from_node(Some(&node(
            "sidecar~10.0.0.1~vm.legacy~legacy.svc.cluster.local",
            &[("INSTANCE_IPS", "10.0.0.1,192.168.7.1")],
        )))
        .unwrap();
        assert_eq!(
            p.ip_addresses,
            vec!["10.0.0.1".to_string(), "192.168.7.1".to_string()]
        );
    }

    #[test]
    fn rejects_garbage_ids_with_a_reason() {
        assert_eq!(Proxy::from_node(None), Err(ProxyError::MissingNode));
        assert!(matches!(
            Proxy::from_node(Some(&node("", &[]))),
            Err(ProxyError::EmptyId)
        ));
        assert!(matches!(
            Proxy::from_node(Some(&node("garbage", &[]))),
            Err(ProxyError::MalformedId(_))
        ));
        assert!(matches!(
            Proxy::from_node(Some(&node("ship~1.1.1.1~a.b~b.svc", &[]))),
            Err(ProxyError::UnknownType(..))
        ));
        assert!(matches!(
            Proxy::from_node(Some(&node("sidecar~not-an-ip~a.b~b.svc", &[]))),
            Err(ProxyError::BadAddress(..))
        ));
        assert!(matches!(
            Proxy::from_node(Some(&node(&"x".repeat(5000), &[]))),
            Err(ProxyError::MalformedId(_))
        ));
        // Cut at a character boundary, not at byte 64.
        assert!(matches!(
            Proxy::from_node(Some(&node(&format!("x{}", "é".repeat(3000)), &[]))),
            Err(ProxyError::MalformedId(_))
        ));
    }

    #[test]
    fn config_clients_need_only_an_id() {
        let c = Proxy::config_client(Some(&node(
            "capstan-config-source/host/1",
            &[("NAMESPACE", "istio-system")],
        )))
        .unwrap();
        assert_eq!(
            (c.proxy_type, c.id.as_str(), c.namespace.as_str()),
            (
                ProxyType::ConfigClient,
                "capstan-config-source/host/1",
                "istio-system"
            )
        );
        assert_eq!(Proxy::config_client(None), Err(ProxyError::MissingNode));
        assert_eq!(
            Proxy::config_client(Some(&node("", &[]))),
            Err(ProxyError::EmptyId)
        );
        assert!(matches!(
            Proxy::config_client(Some(&node(&"é".repeat(1000), &[]))),
            Err(ProxyError::MalformedId(_))
        ));
    }
}
