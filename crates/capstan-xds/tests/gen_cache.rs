//! The push's shared-resource cache: proxies generated one after another from one context get
//! exactly what each would get from a fresh context, and an endpoints-only push carries over
//! only what those endpoints cannot have changed.

mod common;

use capstan_xds::resource::ENDPOINT;
use capstan_xds::{Generator, IstioGenerator, MeshConfig, Proxy, PushContext, PushRequest};
use common::*;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use std::path::PathBuf;

fn mesh_text(mesh: &str) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/meshes")
        .join(mesh);
    (
        std::fs::read_to_string(dir.join("config.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("registry.yaml")).unwrap(),
    )
}

fn proxies() -> Vec<Proxy> {
    vec![
        reviews_v1(),
        // Same namespace, other labels.
        node(
            "sidecar~10.1.0.30~ratings-v1-x.default~default.svc.cluster.local",
            &[],
            &[("app", "ratings"), ("version", "v1")],
        ),
        // Another namespace.
        node(
            "sidecar~10.1.1.5~mysql-0.db~db.svc.cluster.local",
            &[],
            &[("app", "mysql")],
        ),
        node(
            "sidecar~10.1.9.9~tools-0.istio-system~istio-system.svc.cluster.local",
            &[],
            &[("app", "tools")],
        ),
        ingress_gateway(),
        grpc_client(),
        reviews_v1(),
    ]
}

#[test]
fn shared_resources_equal_fresh_generation_for_every_proxy() {
    for mesh in ["bookinfo", "bookinfo-routing", "egress-scoped"] {
        let (config, registry) = mesh_text(mesh);
        let shared = build(&config, &registry);
        for proxy in proxies() {
            let fresh = build(&config, &registry);
            assert_eq!(
                render_all(&shared, &proxy),
                render_all(&fresh, &proxy),
                "{mesh}: {}",
                proxy.id
            );
        }
        let stats = shared.context().cache_stats();
        assert!(
            stats.hits > stats.misses,
            "{mesh}: later proxies should mostly hit: {stats:?}"
        );
    }
}

const SOURCE_LABELS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - match: [{sourceLabels: {app: productpage}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"#;

fn route_9080(g: &IstioGenerator, proxy: &Proxy) -> String {
    format!("{:?}", virtual_host(g, proxy, "9080", "reviews.").routes)
}

/// Routes that match on source labels differ between proxies of one namespace, so the route
/// cache must tell them apart.
#[test]
fn source_label_routes_are_not_shared_across_labels() {
    let (_, registry) = mesh_text("bookinfo");
    let g = build(SOURCE_LABELS, &registry);
    let productpage = node(
        "sidecar~10.1.0.10~productpage-v1-x.default~default.svc.cluster.local",
        &[],
        &[("app", "productpage"), ("version", "v1")],
    );
    let other = reviews_v1();
    let for_other = route_9080(&g, &other);
    let for_productpage = route_9080(&g, &productpage);
    assert_ne!(for_other, for_productpage);
    assert!(for_productpage.contains("outbound|9080|v2|reviews"));
    assert!(!for_other.contains("outbound|9080|v2|reviews"));
    let fresh = build(SOURCE_LABELS, &registry);
    assert_eq!(route_9080(&fresh, &productpage), for_productpage);
}

fn assignment(g: &IstioGenerator, proxy: &Proxy, cluster: &str) -> ClusterLoadAssignment {
    let sub = capstan_xds::Subscription {
        wildcard: false,
        names: [cluster.into()].into_iter().collect(),
    };
    let push = PushRequest {
        full: true,
        ..PushRequest::default()
    };
    g.generate(proxy, ENDPOINT, &sub, &push).unwrap()[0]
        .decode()
        .unwrap()
}

#[test]
fn an_endpoints_only_push_regenerates_exactly_the_changed_hosts() {
    let (config, registry) = mesh_text("bookinfo-routing");
    let (store, index) = world(&config, &registry);
    let g = IstioGenerator::new(PushContext::new(
        store.snapshot(),
        index.snapshot(),
        MeshConfig::default(),
        1,
    ));
    let proxy = reviews_v1();
    let before = render_all(&g, &proxy);

    // Move one reviews endpoint; nothing else changes.
    let moved = registry.replace("10.1.0.22", "10.1.0.99");
    assert_ne!(moved, registry);
    index.replace(
        &file_registry(),
        capstan_registry::file::parse(&moved).unwrap(),
    );
    let reviews = "reviews.default.svc.cluster.local".to_string();
    let push = PushRequest {
        version: 2,
        full: false,
        eds_hosts: [reviews.clone()].into_iter().collect(),
        ..PushRequest::default()
    };
    g.advance(store.snapshot(), index.snapshot(), &push);
    let after = render_all(&g, &proxy);
    let carried = g.context().cache_stats();

    // Exactly what a fresh context gives.
    let fresh = IstioGenerator::new(PushContext::new(
        store.snapshot(),
        index.snapshot(),
        MeshConfig::default(),
        2,
    ));
    assert_eq!(after, render_all(&fresh, &proxy));
    // Only EDS changed, and it shows the new address.
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(*name == "eds", a != b, "{name}");
    }
    let cla = assignment(
        &g,
        &proxy,
        "outbound|9080|v2|reviews.default.svc.cluster.local",
    );
    assert!(format!("{cla:?}").contains("10.1.0.99"));
    // The unchanged hosts' resources were carried over, not regenerated.
    assert!(carried.hits > 0, "{carried:?}");
    // The EDS-only push itself yields the changed host's subscribed clusters, no others.
    let every_cluster = capstan_xds::Subscription {
        wildcard: false,
        names: generate_all(&g, &proxy)
            .into_iter()
            .find(|(n, _)| *n == "eds")
            .unwrap()
            .1
            .iter()
            .map(|r| r.name.as_str().into())
            .collect(),
    };
    let pushed: Vec<String> = g
        .generate(&proxy, ENDPOINT, &every_cluster, &push)
        .unwrap()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert!(!pushed.is_empty());
    assert!(
        pushed
            .iter()
            .all(|n| n.ends_with("|reviews.default.svc.cluster.local")),
        "{pushed:?}"
    );
    let all_reviews = every_cluster
        .names
        .iter()
        .filter(|n| n.ends_with("|reviews.default.svc.cluster.local"))
        .count();
    assert_eq!(pushed.len(), all_reviews);

    // A full push starts from an empty cache; the generator's totals keep counting.
    let total = g.cache_stats();
    let full = PushRequest {
        version: 3,
        full: true,
        ..PushRequest::default()
    };
    g.advance(store.snapshot(), index.snapshot(), &full);
    assert_eq!(g.context().cache_stats().hits, 0);
    assert_eq!(g.cache_stats(), total);
    assert_eq!(render_all(&g, &proxy), after);
}

/// Configurations whose routes differ by the proxy's namespace in ways other than short names:
/// a VirtualService exported to its own namespace only, a route matching on the source
/// namespace, DestinationRules in two namespaces (precedence by the proxy's namespace).
const NAMESPACE_SENSITIVE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-private, namespace: default}
spec:
  hosts: [reviews]
  exportTo: ["."]
  http:
    - route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
    - match: [{sourceNamespace: db}]
      route: [{destination: {host: ratings, subset: v1}}]
      timeout: 7s
    - route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-default}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: db}
spec:
  host: details.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-db}}}
"#;

/// Virtual hosts are shared across namespaces only when nothing but the short names differ.
#[test]
fn shared_virtual_hosts_respect_namespace_dependent_routes() {
    let (_, registry) = mesh_text("bookinfo");
    let shared = build(NAMESPACE_SENSITIVE, &registry);
    let mut seen = Vec::new();
    for proxy in proxies() {
        let fresh = build(NAMESPACE_SENSITIVE, &registry);
        let got = render_all(&shared, &proxy);
        assert_eq!(got, render_all(&fresh, &proxy), "{}", proxy.id);
        seen.push((proxy.namespace.clone(), got));
    }
    // The namespaces really do see different routes (the test would prove nothing otherwise).
    let rds = |ns: &str| {
        seen.iter()
            .find(|(n, _)| n == ns)
            .map(|(_, r)| r.iter().find(|(t, _)| *t == "rds").unwrap().1.clone())
            .unwrap()
    };
    assert_ne!(rds("default"), rds("db"));
    assert!(rds("db").contains("x-db") && !rds("db").contains("x-default"));
    assert!(rds("default").contains("x-default"));
}

/// Reviews has subsets v1 and v2 for everyone, but the `db` namespace's own rule (exported to
/// itself, so it takes precedence there) has only v3.
const PER_NAMESPACE_SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: db}
spec:
  host: reviews.default.svc.cluster.local
  exportTo: ["."]
  subsets:
    - {name: v3, labels: {version: v3}}
"#;

/// An endpoints-only push gives each proxy exactly the changed hosts' part of what a full push
/// gives it, for its own DestinationRule and its own subscription, whatever proxy generated
/// first from the shared context.
#[test]
fn endpoints_only_pushes_match_full_generation_per_proxy() {
    let (_, registry) = mesh_text("bookinfo");
    let g = build(PER_NAMESPACE_SUBSETS, &registry);
    let changed = [
        "reviews.default.svc.cluster.local".to_string(),
        "ratings.default.svc.cluster.local".to_string(),
    ];
    let eds_push = PushRequest {
        version: 1,
        full: false,
        eds_hosts: changed.iter().cloned().collect(),
        ..PushRequest::default()
    };
    let full = PushRequest {
        version: 1,
        full: true,
        ..PushRequest::default()
    };
    let mut subset_clusters = std::collections::BTreeSet::new();
    for proxy in proxies() {
        let every: Vec<String> = generate_all(&g, &proxy)
            .into_iter()
            .find(|(n, _)| *n == "eds")
            .unwrap()
            .1
            .iter()
            .map(|r| r.name.clone())
            .collect();
        // Everything, and every other name (a client that subscribed to some clusters only).
        let partial: Vec<String> = every.iter().step_by(2).cloned().collect();
        for names in [every, partial] {
            let sub = capstan_xds::Subscription {
                wildcard: false,
                names: names.iter().map(|n| n.as_str().into()).collect(),
            };
            let render = |rs: Vec<std::sync::Arc<capstan_xds::Resource>>| {
                let mut v: Vec<(String, Vec<u8>)> = rs
                    .iter()
                    .map(|r| (r.name.clone(), r.body.to_vec()))
                    .collect();
                v.sort();
                v
            };
            let expected: Vec<(String, Vec<u8>)> =
                render(g.generate(&proxy, ENDPOINT, &sub, &full).unwrap())
                    .into_iter()
                    .filter(|(n, _)| changed.iter().any(|h| n.ends_with(&format!("|{h}"))))
                    .collect();
            let pushed = render(g.generate(&proxy, ENDPOINT, &sub, &eds_push).unwrap());
            assert_eq!(pushed, expected, "{}", proxy.id);
            subset_clusters.extend(
                pushed
                    .iter()
                    .filter(|(n, _)| n.starts_with("outbound|9080|v"))
                    .map(|(n, _)| n.clone()),
            );
        }
    }
    // Both rules were in play.
    assert!(subset_clusters.contains("outbound|9080|v1|reviews.default.svc.cluster.local"));
    assert!(subset_clusters.contains("outbound|9080|v3|reviews.default.svc.cluster.local"));
}

/// A sidecar's route configuration holds the cached virtual hosts' buffers, shared with the
/// configurations of other namespaces, and its body is byte for byte what assembling it in one
/// buffer gives: the configuration's own fields, then each virtual host as a `virtual_hosts`
/// entry, packed in an `Any`.
#[test]
fn route_configurations_share_virtual_hosts_and_encode_as_one_buffer() {
    use capstan_xds::resource::{Body, ROUTE};
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::google::protobuf::{Any, BoolValue};
    use prost::Message;
    let (config, registry) = mesh_text("bookinfo-routing");
    let g = build(&config, &registry);
    let route_9080 = |proxy: &Proxy| {
        generate_all(&g, proxy)
            .into_iter()
            .find(|(n, _)| *n == "rds")
            .unwrap()
            .1
            .into_iter()
            .find(|r| r.name == "9080")
            .expect("a route configuration for 9080")
    };
    let proxies = proxies();
    // db and istio-system: bookinfo's services are in neither, so their hosts are the same.
    let (db, tools) = (route_9080(&proxies[2]), route_9080(&proxies[3]));
    for r in [&db, &tools, &route_9080(&proxies[0])] {
        let decoded: RouteConfiguration = r.decode().unwrap();
        assert!(decoded.virtual_hosts.len() > 2, "{decoded:?}");
        let mut value = RouteConfiguration {
            name: "9080".into(),
            validate_clusters: Some(BoolValue { value: false }),
            ignore_port_in_host_matching: true,
            ..RouteConfiguration::default()
        }
        .encode_to_vec();
        for vh in &decoded.virtual_hosts {
            prost::encoding::message::encode(2, vh, &mut value);
        }
        let one = Any {
            type_url: ROUTE.into(),
            value,
        }
        .encode_to_vec();
        assert_eq!(r.body.to_vec(), one, "{}", r.name);
        assert_eq!(r.body.len(), one.len());
        assert!(matches!(r.body, Body::Parts { .. }));
        assert_eq!(
            r.body.parts().len(),
            decoded.virtual_hosts.len() + 1,
            "the head, then one part per virtual host"
        );
    }
    let shared = db.body.parts()[1..]
        .iter()
        .filter(|p| tools.body.parts().iter().any(|q| q.as_ptr() == p.as_ptr()))
        .count();
    assert_eq!(
        shared,
        db.body.parts().len() - 2,
        "every service's virtual host is one buffer in both (the catch-all is not cached)"
    );
    assert_eq!(
        db.version, tools.version,
        "the same content, the same version"
    );
    assert_eq!(db, tools);
}
