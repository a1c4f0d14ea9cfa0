//! Shared helpers for the generator tests: loading meshes, building proxies, rendering
//! resources with nested `Any`s decoded.
#![allow(dead_code)]

use capstan_api::CheckOptions;
use capstan_config::ConfigStore;
use capstan_registry::{RegistryId, RegistryKind, ServiceIndex};
use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use capstan_xds::{
    Generator, IstioGenerator, MeshConfig, Proxy, PushContext, PushRequest, Subscription,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, listener_filter, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter as hcm_http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use prost::Message;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds a generator from `testdata/meshes/<mesh>`.
pub fn load_mesh(mesh: &str) -> IstioGenerator {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/meshes")
        .join(mesh);
    let config_text = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    let registry_text = std::fs::read_to_string(dir.join("registry.yaml")).unwrap();
    build(&config_text, &registry_text)
}

/// The registry text of `testdata/meshes/<mesh>`.
pub fn registry_text(mesh: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/meshes")
        .join(mesh)
        .join("registry.yaml");
    std::fs::read_to_string(path).unwrap()
}

/// The virtual host whose name starts with `host_prefix` in the proxy's RDS `route`.
pub fn virtual_host(
    g: &IstioGenerator,
    proxy: &Proxy,
    route: &str,
    host_prefix: &str,
) -> envoy_types::pb::envoy::config::route::v3::VirtualHost {
    let rds = generate_all(g, proxy)
        .into_iter()
        .find(|(n, _)| *n == "rds")
        .unwrap()
        .1;
    let rc: RouteConfiguration = rds
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("route {route}"))
        .decode()
        .unwrap();
    rc.virtual_hosts
        .into_iter()
        .find(|v| v.name.starts_with(host_prefix))
        .unwrap_or_else(|| panic!("virtual host {host_prefix}"))
}

/// Builds a generator from config and registry text.
pub fn build(config_text: &str, registry_text: &str) -> IstioGenerator {
    build_with_mesh(config_text, registry_text, MeshConfig::default())
}

/// Builds a generator from config and registry text under a mesh config.
pub fn build_with_mesh(config_text: &str, registry_text: &str, mesh: MeshConfig) -> IstioGenerator {
    let (store, index) = world(config_text, registry_text);
    IstioGenerator::new(PushContext::new(
        store.snapshot(),
        index.snapshot(),
        mesh,
        1,
    ))
}

/// The registry id the file registry text is loaded under.
pub fn file_registry() -> RegistryId {
    RegistryId {
        kind: RegistryKind::File,
        name: "file".into(),
    }
}

/// A config store and service index holding config and registry text.
pub fn world(config_text: &str, registry_text: &str) -> (ConfigStore, ServiceIndex) {
    let results = capstan_api::check_text(config_text, &CheckOptions::default());
    let mut objects = Vec::new();
    for r in results {
        assert!(
            r.errors.is_empty(),
            "{}/{}: {:?}",
            r.namespace,
            r.name,
            r.errors
        );
        if let Some(o) = r.object {
            objects.push(*o);
        }
    }
    let store = ConfigStore::new();
    store.replace_source("test", objects.clone());
    let index = ServiceIndex::new();
    let state = capstan_registry::file::parse(registry_text).unwrap();
    index.replace(&file_registry(), state);
    let se = capstan_registry::serviceentry::from_config(objects.iter());
    index.replace(
        &RegistryId {
            kind: RegistryKind::ServiceEntry,
            name: "se".into(),
        },
        se,
    );
    (store, index)
}

/// A proxy from a node id, metadata and labels.
pub fn node(id: &str, meta: &[(&str, &str)], labels: &[(&str, &str)]) -> Proxy {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut fields: std::collections::BTreeMap<String, Value> =
        meta.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
    let label_fields = labels.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: label_fields,
            })),
        },
    );
    let node = Node {
        id: id.into(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        ..Node::default()
    };
    Proxy::from_node(Some(&node)).unwrap()
}

/// The sidecar of reviews-v1.
pub fn reviews_v1() -> Proxy {
    node(
        "sidecar~10.1.0.21~reviews-v1-abc.default~default.svc.cluster.local",
        &[],
        &[("app", "reviews"), ("version", "v1")],
    )
}

/// The ingress gateway.
pub fn ingress_gateway() -> Proxy {
    node(
        "router~10.1.9.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local",
        &[],
        &[("istio", "ingressgateway")],
    )
}

/// A proxyless gRPC client in `default`.
pub fn grpc_client() -> Proxy {
    node(
        "grpc-client-1",
        &[("GENERATOR", "grpc"), ("NAMESPACE", "default")],
        &[],
    )
}

/// The gRPC client's target.
pub const GRPC_TARGET: &str = "reviews.default.svc.cluster.local:9080";

fn full() -> PushRequest {
    PushRequest {
        version: 1,
        full: true,
        ..PushRequest::default()
    }
}

fn wildcard() -> Subscription {
    Subscription {
        wildcard: true,
        ..Subscription::default()
    }
}

fn names<I: IntoIterator<Item = String>>(n: I) -> Subscription {
    Subscription {
        wildcard: false,
        names: n.into_iter().map(Into::into).collect(),
    }
}

/// Generates all four types the way the client would subscribe.
pub fn generate_all(
    g: &IstioGenerator,
    proxy: &Proxy,
) -> Vec<(&'static str, Vec<Arc<capstan_xds::Resource>>)> {
    let push = full();
    if proxy.proxy_type == capstan_xds::ProxyType::Proxyless {
        let target = names([GRPC_TARGET.to_string()]);
        let lds = g.generate(proxy, LISTENER, &target, &push).unwrap();
        let rds = g.generate(proxy, ROUTE, &target, &push).unwrap();
        let mut clusters = std::collections::BTreeSet::new();
        for r in &rds {
            let rc: RouteConfiguration = r.decode().unwrap();
            collect_clusters(&rc, &mut clusters);
        }
        let cds = g
            .generate(proxy, CLUSTER, &names(clusters.clone()), &push)
            .unwrap();
        let eds = g
            .generate(proxy, ENDPOINT, &names(clusters), &push)
            .unwrap();
        return vec![("lds", lds), ("rds", rds), ("cds", cds), ("eds", eds)];
    }
    ["lds", "rds", "cds", "eds"]
        .into_iter()
        .zip([LISTENER, ROUTE, CLUSTER, ENDPOINT])
        .map(|(n, t)| (n, g.generate(proxy, t, &wildcard(), &push).unwrap()))
        .collect()
}

/// Cluster names a route configuration refers to.
pub fn collect_clusters(rc: &RouteConfiguration, out: &mut std::collections::BTreeSet<String>) {
    use envoy_types::pb::envoy::config::route::v3::{route, route_action};
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            if let Some(route::Action::Route(a)) = &r.action {
                match &a.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(c)) => {
                        out.insert(c.clone());
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        out.extend(w.clusters.iter().map(|c| c.name.clone()));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Decodes a nested Any into debug text and empties it in place.
fn take_any(any: &mut Any, nested: &mut Vec<String>) {
    let t = any.type_url.rsplit('/').next().unwrap_or("").to_string();
    let v = any.value.as_slice();
    let text = match t.as_str() {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            let mut hcm = HttpConnectionManager::decode(v).unwrap();
            // The JWT filter's config inlines key sets: thousands of bytes rendered one per
            // line. Its golden is rendered readably apart (gen_authz.rs, `jwt.txt`).
            for f in &mut hcm.http_filters {
                if let Some(hcm_http_filter::ConfigType::TypedConfig(a)) = &mut f.config_type {
                    if a.type_url.ends_with(".jwt_authn.v3.JwtAuthentication") {
                        a.value.clear();
                    }
                }
            }
            format!("{hcm:#?}")
        }
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            format!("{:#?}", TcpProxy::decode(v).unwrap())
        }
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            format!("{:#?}", UpstreamTlsContext::decode(v).unwrap())
        }
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => {
            format!("{:#?}", DownstreamTlsContext::decode(v).unwrap())
        }
        "envoy.extensions.filters.http.fault.v3.HttpFault" => {
            format!("{:#?}", HttpFault::decode(v).unwrap())
        }
        _ => return,
    };
    nested.push(format!("--- nested {t} #{}\n{text}", nested.len()));
    any.value = format!("<nested #{}>", nested.len() - 1).into_bytes();
}

fn render_one(type_url: &str, r: &capstan_xds::Resource) -> String {
    let mut nested = Vec::new();
    let main = match type_url {
        LISTENER => {
            let mut l: Listener = r.decode().unwrap();
            for fc in &mut l.filter_chains {
                for f in &mut fc.filters {
                    if let Some(filter::ConfigType::TypedConfig(a)) = &mut f.config_type {
                        take_any(a, &mut nested);
                    }
                }
                if let Some(ts) = &mut fc.transport_socket {
                    if let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a)) = &mut ts.config_type {
                        take_any(a, &mut nested);
                    }
                }
            }
            for lf in &mut l.listener_filters {
                if let Some(listener_filter::ConfigType::TypedConfig(a)) = &mut lf.config_type {
                    a.value.clear();
                }
            }
            if let Some(api) = &mut l.api_listener {
                if let Some(a) = &mut api.api_listener {
                    take_any(a, &mut nested);
                }
            }
            format!("{l:#?}")
        }
        ROUTE => {
            let mut rc: RouteConfiguration = r.decode().unwrap();
            for vh in &mut rc.virtual_hosts {
                for route in &mut vh.routes {
                    let mut keys: Vec<String> =
                        route.typed_per_filter_config.keys().cloned().collect();
                    keys.sort();
                    for k in keys {
                        take_any(
                            route.typed_per_filter_config.get_mut(&k).unwrap(),
                            &mut nested,
                        );
                    }
                }
            }
            format!("{rc:#?}")
        }
        CLUSTER => {
            let mut c: Cluster = r.decode().unwrap();
            let sockets = c.transport_socket.iter_mut().chain(
                c.transport_socket_matches
                    .iter_mut()
                    .filter_map(|m| m.transport_socket.as_mut()),
            );
            for ts in sockets {
                if let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a)) = &mut ts.config_type {
                    take_any(a, &mut nested);
                }
            }
            format!("{c:#?}")
        }
        _ => format!("{:#?}", r.decode::<ClusterLoadAssignment>().unwrap()),
    };
    format!("=== {}\n{main}\n{}\n", r.name, nested.join("\n"))
}

/// Renders all four types as golden text.
pub fn render_all(g: &IstioGenerator, proxy: &Proxy) -> Vec<(&'static str, String)> {
    generate_all(g, proxy)
        .into_iter()
        .map(|(n, mut rs)| {
            rs.sort_by(|a, b| a.name.cmp(&b.name));
            let type_url = match n {
                "lds" => LISTENER,
                "rds" => ROUTE,
                "cds" => CLUSTER,
                _ => ENDPOINT,
            };
            (
                n,
                rs.iter()
                    .map(|r| render_one(type_url, r))
                    .collect::<String>(),
            )
        })
        .collect()
}

/// Keeps Arc in use for helper users.
pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
