//! `/debug/config_dump`: what Capstan would send a connected proxy right now, summarised per
//! resource the way `istioctl proxy-config` shows it (and, on request, in full debug form).

use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use capstan_xds::{Generator, Proxy, PushRequest, Resource, Subscription};
use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, socket_address::PortSpecifier, Address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, RouteConfiguration,
};
use prost::Message;
use serde::Serialize;
use serde_json::{json, Value};

/// One resource in the dump.
#[derive(Serialize)]
pub struct Entry {
    /// Resource name.
    pub name: String,
    /// Content version.
    pub version: String,
    /// Table fields (as `istioctl proxy-config` shows them).
    pub summary: Value,
    /// The whole resource in Rust debug form, when asked for with `?format=full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
}

fn socket(address: Option<&Address>) -> (String, u32) {
    match address.and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            (s.address.clone(), port)
        }
        _ => (String::new(), 0),
    }
}

fn cluster_summary(c: &Cluster) -> Value {
    // Istio cluster names: direction|port|subset|host.
    let parts: Vec<&str> = c.name.split('|').collect();
    let kind = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_else(|_| t.to_string()),
        _ => "CUSTOM".into(),
    };
    match parts.as_slice() {
        [direction, port, subset, host] => {
            json!({"service": host, "port": port, "subset": subset, "direction": direction, "type": kind})
        }
        _ => json!({"service": c.name, "port": "-", "subset": "-", "direction": "-", "type": kind}),
    }
}

fn endpoint_summary(cla: &ClusterLoadAssignment) -> Value {
    let mut endpoints = Vec::new();
    for locality in &cla.endpoints {
        let where_ = locality
            .locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .unwrap_or_default();
        for e in &locality.lb_endpoints {
            let (address, port) = match &e.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => socket(ep.address.as_ref()),
                _ => (String::new(), 0),
            };
            let health =
                envoy_types::pb::envoy::config::core::v3::HealthStatus::try_from(e.health_status)
                    .map(|h| h.as_str_name())
                    .unwrap_or("UNKNOWN");
            endpoints.push(json!({"endpoint": format!("{address}:{port}"), "status": health, "locality": where_, "weight": e.load_balancing_weight.as_ref().map(|w| w.value)}));
        }
    }
    json!({"cluster": cla.cluster_name, "endpoints": endpoints})
}

fn listener_summary(l: &Listener) -> Value {
    let (address, port) = socket(l.address.as_ref());
    let chains: Vec<Value> = l
        .filter_chains
        .iter()
        .map(|fc| {
            let filters: Vec<&str> = fc.filters.iter().map(|f| f.name.as_str()).collect();
            json!({"name": fc.name, "filters": filters})
        })
        .collect();
    json!({"address": address, "port": port, "api_listener": l.api_listener.is_some(), "filter_chains": chains})
}

fn route_summary(r: &RouteConfiguration) -> Value {
    let hosts: Vec<Value> = r
        .virtual_hosts
        .iter()
        .map(|vh| {
            let routes: Vec<Value> = vh
                .routes
                .iter()
                .map(|route| {
                    let path = match route
                        .r#match
                        .as_ref()
                        .and_then(|m| m.path_specifier.as_ref())
                    {
                        Some(PathSpecifier::Prefix(p)) => format!("prefix {p}"),
                        Some(PathSpecifier::Path(p)) => format!("exact {p}"),
                        Some(PathSpecifier::SafeRegex(r)) => format!("regex {}", r.regex),
                        _ => "*".into(),
                    };
                    let to = match &route.action {
                        Some(Action::Route(a)) => match &a.cluster_specifier {
                            Some(ClusterSpecifier::Cluster(c)) => c.clone(),
                            Some(ClusterSpecifier::WeightedClusters(w)) => w
                                .clusters
                                .iter()
                                .map(|c| {
                                    format!(
                                        "{} {}%",
                                        c.name,
                                        c.weight.as_ref().map(|w| w.value).unwrap_or_default()
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(", "),
                            _ => "other".into(),
                        },
                        Some(Action::Redirect(_)) => "redirect".into(),
                        Some(Action::DirectResponse(d)) => format!("direct response {}", d.status),
                        _ => "-".into(),
                    };
                    json!({"name": route.name, "match": path, "to": to})
                })
                .collect();
            json!({"name": vh.name, "domains": vh.domains, "routes": routes})
        })
        .collect();
    json!({"virtual_hosts": hosts})
}

fn summarise(type_url: &str, r: &Resource) -> Value {
    let any = match r.any() {
        Ok(any) => any,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let bytes = any.value.as_slice();
    let decoded = match type_url {
        CLUSTER => Cluster::decode(bytes).map(|c| cluster_summary(&c)),
        ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|c| endpoint_summary(&c)),
        LISTENER => Listener::decode(bytes).map(|l| listener_summary(&l)),
        ROUTE => RouteConfiguration::decode(bytes).map(|r| route_summary(&r)),
        _ => return Value::Null,
    };
    decoded.unwrap_or_else(|e| json!({"error": e.to_string()}))
}

fn full(type_url: &str, r: &Resource) -> String {
    let any = match r.any() {
        Ok(any) => any,
        Err(e) => return e.to_string(),
    };
    let bytes = any.value.as_slice();
    match type_url {
        CLUSTER => Cluster::decode(bytes).map(|m| format!("{m:#?}")),
        ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|m| format!("{m:#?}")),
        LISTENER => Listener::decode(bytes).map(|m| format!("{m:#?}")),
        ROUTE => RouteConfiguration::decode(bytes).map(|m| format!("{m:#?}")),
        _ => Ok(String::new()),
    }
    .unwrap_or_else(|e| e.to_string())
}

/// Generates every type for `proxy` and summarises it. EDS and RDS are asked for by the names
/// the proxy's clusters and listeners reference, as a proxy would.
pub fn dump<G: Generator>(generator: &G, proxy: &Proxy, with_full: bool) -> Result<Value, String> {
    let push = PushRequest {
        full: true,
        ..PushRequest::default()
    };
    let wildcard = Subscription {
        wildcard: true,
        names: Default::default(),
    };
    let clusters = generator
        .generate(proxy, CLUSTER, &wildcard, &push)
        .map_err(|e| e.to_string())?;
    let listeners = generator
        .generate(proxy, LISTENER, &wildcard, &push)
        .map_err(|e| e.to_string())?;
    let eds_names = clusters
        .iter()
        .filter(|r| r.decode::<Cluster>().is_ok_and(|c| matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32)))
        .map(|r| r.name.as_str().into())
        .collect();
    let endpoints = generator
        .generate(
            proxy,
            ENDPOINT,
            &Subscription {
                wildcard: false,
                names: eds_names,
            },
            &push,
        )
        .map_err(|e| e.to_string())?;
    let route_names = listeners
        .iter()
        .flat_map(crate::discovery::dump_routes::route_names)
        .collect();
    let routes = generator
        .generate(
            proxy,
            ROUTE,
            &Subscription {
                wildcard: false,
                names: route_names,
            },
            &push,
        )
        .map_err(|e| e.to_string())?;
    let section = |type_url: &str, resources: &[std::sync::Arc<Resource>]| -> Vec<Entry> {
        resources
            .iter()
            .map(|r| Entry {
                name: r.name.clone(),
                version: r.version_string(),
                summary: summarise(type_url, r),
                full: with_full.then(|| full(type_url, r)),
            })
            .collect()
    };
    Ok(json!({
        "proxy": proxy,
        "clusters": section(CLUSTER, &clusters),
        "endpoints": section(ENDPOINT, &endpoints),
        "listeners": section(LISTENER, &listeners),
        "routes": section(ROUTE, &routes),
    }))
}
