//! Targeted assertions on generated fields (names, weights, retries, locality weights, HCM).

mod common;

use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use common::*;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;

type Shared = std::sync::Arc<capstan_xds::Resource>;

fn of<'a>(all: &'a [(&str, Vec<Shared>)], t: &str) -> &'a [Shared] {
    &all.iter().find(|(n, _)| *n == t).unwrap().1
}

#[test]
fn sidecar_clusters_routes_and_retries() {
    let g = load_mesh("bookinfo-routing");
    let all = generate_all(&g, &reviews_v1());
    let clusters: Vec<String> = of(&all, "cds").iter().map(|r| r.name.clone()).collect();
    for want in [
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "inbound|9080||",
        "PassthroughCluster",
        "BlackHoleCluster",
        "InboundPassthroughCluster",
    ] {
        assert!(
            clusters.iter().any(|c| c == want),
            "missing {want}: {clusters:?}"
        );
    }
    let v2: Cluster = of(&all, "cds")
        .iter()
        .find(|r| r.name == "outbound|9080|v2|reviews.default.svc.cluster.local")
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(v2.lb_policy, 2, "consistent hash subset → RING_HASH");
    assert!(v2.transport_socket.is_some(), "ISTIO_MUTUAL inherited");
    let rc: RouteConfiguration = of(&all, "rds")
        .iter()
        .find(|r| r.name == "9080")
        .unwrap()
        .decode()
        .unwrap();
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
        .unwrap();
    assert!(vh.domains.contains(&"reviews".to_string()));
    assert!(vh.domains.contains(&"10.96.0.11".to_string()));
    assert!(
        vh.domains.iter().all(|d| !d.ends_with(":9080")),
        "the port is ignored in host matching, as istiod: {:?}",
        vh.domains
    );
    assert!(rc.ignore_port_in_host_matching);
    let Some(route::Action::Route(jason)) = &vh.routes[0].action else {
        panic!()
    };
    let retry = jason.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries.as_ref().unwrap().value, 3);
    assert_eq!(retry.retry_on, "5xx,gateway-error,retriable-status-codes");
    assert_eq!(retry.retriable_status_codes, vec![503]);
    assert_eq!(jason.timeout.as_ref().unwrap().seconds, 2);
    let Some(route::Action::Route(split)) = &vh.routes[1].action else {
        panic!()
    };
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &split.cluster_specifier else {
        panic!()
    };
    let weights: Vec<(String, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        weights,
        vec![
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                80
            ),
            (
                "outbound|9080|v3|reviews.default.svc.cluster.local".to_string(),
                20
            )
        ]
    );
    assert_eq!(split.request_mirror_policies.len(), 1);
    // Default route for a service without a VirtualService: no timeout, Istio's retries.
    let details = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name.starts_with("details."))
        .unwrap();
    let Some(route::Action::Route(d)) = &details.routes[0].action else {
        panic!()
    };
    assert_eq!(d.timeout.as_ref().unwrap().seconds, 0);
    assert_eq!(
        d.retry_policy
            .as_ref()
            .unwrap()
            .num_retries
            .as_ref()
            .unwrap()
            .value,
        2
    );
    // Fault on ratings as per-route filter config.
    let ratings = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name.starts_with("ratings."))
        .unwrap();
    assert!(ratings.routes[0]
        .typed_per_filter_config
        .contains_key("envoy.filters.http.fault"));
}

#[test]
fn listeners_have_stat_prefix_and_ads_rds() {
    let g = load_mesh("bookinfo-routing");
    for proxy in [reviews_v1(), ingress_gateway()] {
        for r in of(&generate_all(&g, &proxy), "lds") {
            let l: Listener = r.decode().unwrap();
            for fc in &l.filter_chains {
                for f in &fc.filters {
                    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) = &f.config_type else { panic!() };
                    if f.name == "envoy.filters.network.http_connection_manager" {
                        let h = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
                        assert!(!h.stat_prefix.is_empty(), "{}", l.name);
                        assert_eq!(
                            h.http_filters.last().unwrap().name,
                            "envoy.filters.http.router"
                        );
                        if let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier {
                            assert!(matches!(
                                rds.config_source.as_ref().unwrap().config_source_specifier,
                                Some(ConfigSourceSpecifier::Ads(_))
                            ));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn proxyless_grpc_gets_api_listener_and_weighted_localities() {
    let g = load_mesh("bookinfo");
    let all = generate_all(&g, &grpc_client());
    let lds = of(&all, "lds");
    assert_eq!(lds.len(), 1);
    let l: Listener = lds[0].decode().unwrap();
    assert_eq!(l.name, GRPC_TARGET);
    let h = HttpConnectionManager::decode(
        l.api_listener
            .unwrap()
            .api_listener
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert!(!h.stat_prefix.is_empty());
    let Some(RouteSpecifier::Rds(rds)) = h.route_specifier else {
        panic!()
    };
    assert_eq!(rds.route_config_name, GRPC_TARGET);
    assert!(rds.config_source.is_some());
    assert_eq!(of(&all, "rds")[0].name, GRPC_TARGET);
    let eds = of(&all, "eds");
    assert_eq!(eds.len(), 1);
    let cla: ClusterLoadAssignment = eds[0].decode().unwrap();
    assert_eq!(cla.endpoints.len(), 2, "two localities");
    for l in &cla.endpoints {
        assert!(l.locality.is_some());
        assert!(l.load_balancing_weight.unwrap().value > 0);
    }
}

#[test]
fn eds_only_push_returns_only_changed_hosts() {
    let g = load_mesh("bookinfo");
    let proxy = reviews_v1();
    let sub = capstan_xds::Subscription {
        wildcard: true,
        ..Default::default()
    };
    let push = capstan_xds::PushRequest {
        version: 2,
        full: false,
        eds_hosts: ["ratings.default.svc.cluster.local".to_string()]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    use capstan_xds::Generator;
    let out = g.generate(&proxy, ENDPOINT, &sub, &push).unwrap();
    assert_eq!(
        out.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["outbound|9080||ratings.default.svc.cluster.local"]
    );
    assert!(g.affects(&proxy, &push));
    let _ = (CLUSTER, LISTENER, ROUTE);
}

#[test]
fn sidecar_scoping_hides_other_namespaces_and_blocks_unknown() {
    let g = load_mesh("egress-scoped");
    let all = generate_all(&g, &reviews_v1());
    assert!(!of(&all, "cds").iter().any(|r| r.name.contains("mysql.db")));
    let vo: Listener = of(&all, "lds")
        .iter()
        .find(|r| r.name == "virtualOutbound")
        .unwrap()
        .decode()
        .unwrap();
    let text = format!("{vo:?}");
    assert!(!text.contains("PassthroughCluster") || text.contains("BlackHoleCluster"));
    let dns: Cluster = of(&all, "cds")
        .iter()
        .find(|r| r.name == "outbound|80||httpbin.org")
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(
        dns.cluster_discovery_type,
        Some(envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(1))
    );
}

/// A quick timing of all four types for one sidecar in a 1,000-service mesh (printed).
#[test]
fn thousand_service_mesh_generates_everything() {
    let mut reg = String::from("services:\n");
    for i in 0..1000 {
        reg.push_str(&format!(
            "  - hostname: svc{i}.ns{}.svc.cluster.local\n    namespace: ns{}\n    addresses: [10.{}.{}.1]\n    ports: [{{name: http, port: 8080}}]\n    endpoints:\n      - {{address: 10.200.{}.{}, labels: {{app: svc{i}}}, locality: r/z{}}}\n      - {{address: 10.201.{}.{}, labels: {{app: svc{i}}}, locality: r/z{}}}\n",
            i % 10, i % 10, i / 250, i % 250, i / 250, i % 250, i % 3, i / 250, i % 250, (i + 1) % 3
        ));
    }
    let g = build("", &reg);
    let proxy = reviews_v1();
    let start = std::time::Instant::now();
    let all = generate_all(&g, &proxy);
    let elapsed = start.elapsed();
    let count: usize = all.iter().map(|(_, r)| r.len()).sum();
    eprintln!("1000-service mesh: {count} resources in {elapsed:?}");
    assert!(count > 2000);
}

const HASHING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true}}
    portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 10s, path: /}}}
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
      trafficPolicy:
        loadBalancer: {consistentHash: {httpQueryParameterName: user}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-productpage, namespace: default}
spec:
  host: ratings
  workloadSelector: {matchLabels: {app: productpage}}
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-pp}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
    - match: [{uri: {prefix: /v2}}]
      route: [{destination: {host: ratings, subset: v2}}]
    - route:
        - {destination: {host: ratings, subset: v1}, weight: 50}
        - {destination: {host: ratings, subset: v2}, weight: 50}
"#;

fn ratings_hash_policies(
    g: &capstan_xds::IstioGenerator,
    proxy: &capstan_xds::Proxy,
) -> Vec<String> {
    let vh = common::virtual_host(g, proxy, "9080", "ratings.");
    vh.routes
        .iter()
        .map(|r| match &r.action {
            Some(route::Action::Route(a)) => format!("{:?}", a.hash_policy),
            other => format!("{other:?}"),
        })
        .collect()
}

/// DestinationRule consistent hashing reaches the routes (Envoy's ring hash and Maglev hash on
/// the route's hash policy): subset over port level over top level, one policy per distinct
/// destination policy, and a rule selecting the proxy's workload wins for that proxy only.
#[test]
fn consistent_hash_rules_become_route_hash_policies() {
    let registry = common::registry_text("bookinfo");
    let g = common::build(HASHING, &registry);
    let reviews = ratings_hash_policies(&g, &reviews_v1());
    assert_eq!(reviews.len(), 2, "{reviews:?}");
    assert!(reviews[0].contains("QueryParameter") && reviews[0].contains("\"user\""));
    assert!(!reviews[0].contains("Cookie"), "{}", reviews[0]);
    // Weighted v1 (port-level cookie) and v2 (subset query parameter).
    assert!(reviews[1].contains("Cookie") && reviews[1].contains("\"session\""));
    assert!(reviews[1].contains("seconds: 10") && reviews[1].contains("QueryParameter"));
    assert!(!reviews[1].contains("source_ip"), "{}", reviews[1]);
    // Same namespace, selected by the workload rule: its header policy instead.
    let productpage = common::node(
        "sidecar~10.1.0.10~productpage-v1-x.default~default.svc.cluster.local",
        &[],
        &[("app", "productpage"), ("version", "v1")],
    );
    let fresh = ratings_hash_policies(&common::build(HASHING, &registry), &productpage);
    assert!(fresh.iter().all(|p| p.contains("x-pp")), "fresh: {fresh:?}");
    let pp = ratings_hash_policies(&g, &productpage);
    assert!(
        pp.iter()
            .all(|p| p.contains("x-pp") && !p.contains("Cookie")),
        "{pp:?}"
    );
    // And the shared route cache kept them apart.
    assert_eq!(ratings_hash_policies(&g, &reviews_v1()), reviews);
}

const FAILOVER_REGISTRY: &str = r#"
services:
  - hostname: api.default.svc.cluster.local
    namespace: default
    addresses: [10.96.5.1]
    ports: [{name: http, port: 8080}]
    endpoints:
      - {address: 10.5.0.1, labels: {app: api}, locality: us-east1/us-east1-a/rack1}
      - {address: 10.5.0.2, labels: {app: api}, locality: us-east1/us-east1-a/rack2}
      - {address: 10.5.0.3, labels: {app: api}, locality: us-east1/us-east1-b}
      - {address: 10.5.0.4, labels: {app: api}, locality: eu-west1/eu-west1-a}
      - {address: 10.5.0.5, labels: {app: api}, locality: asia-east1/asia-east1-a}
"#;

fn failover_rule(extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: default}}\nspec:\n  host: api\n  trafficPolicy:\n{extra}"
    )
}

fn located(locality: Option<(&str, &str, &str)>) -> capstan_xds::Proxy {
    use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
    let node = Node {
        id: "sidecar~10.1.0.21~client-0.default~default.svc.cluster.local".into(),
        locality: locality.map(|(region, zone, sub_zone)| Locality {
            region: region.into(),
            zone: zone.into(),
            sub_zone: sub_zone.into(),
        }),
        ..Node::default()
    };
    capstan_xds::Proxy::from_node(Some(&node)).unwrap()
}

/// Region/zone/subzone → priority of the `api` cluster's localities for a proxy.
fn priorities(g: &capstan_xds::IstioGenerator, proxy: &capstan_xds::Proxy) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let sub = capstan_xds::Subscription {
        wildcard: false,
        names: ["outbound|8080||api.default.svc.cluster.local".into()]
            .into_iter()
            .collect(),
    };
    let push = capstan_xds::PushRequest {
        full: true,
        ..capstan_xds::PushRequest::default()
    };
    let cla: ClusterLoadAssignment =
        capstan_xds::Generator::generate(g, proxy, capstan_xds::resource::ENDPOINT, &sub, &push)
            .unwrap()[0]
            .decode()
            .unwrap();
    cla.endpoints
        .iter()
        .map(|g| {
            let l = g.locality.clone().unwrap_or_default();
            (
                format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
                g.priority,
            )
        })
        .collect()
}

/// With outlier detection, endpoints are prioritised by closeness to the proxy's locality,
/// as Istio's locality failover does by default; a failover rule demotes regions it does not
/// name; without outlier detection (or with locality LB off) every locality stays at priority 0.
#[test]
fn locality_failover_orders_endpoints_by_closeness() {
    let outlier =
        "    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s}\n";
    let g = common::build(&failover_rule(outlier), FAILOVER_REGISTRY);
    let rack1 = located(Some(("us-east1", "us-east1-a", "rack1")));
    let p = |v: &[(String, u32)], l: &str| v.iter().find(|(k, _)| k.starts_with(l)).unwrap().1;
    let near = priorities(&g, &rack1);
    assert_eq!(p(&near, "us-east1/us-east1-a/rack1"), 0, "{near:?}");
    assert_eq!(p(&near, "us-east1/us-east1-a/rack2"), 1);
    assert_eq!(p(&near, "us-east1/us-east1-b"), 2);
    assert_eq!(p(&near, "eu-west1"), 3);
    assert_eq!(p(&near, "asia-east1"), 3);
    // Another proxy of the same push, elsewhere: its own order (not the cached one above).
    let eu = priorities(&g, &located(Some(("eu-west1", "eu-west1-a", ""))));
    assert_eq!(p(&eu, "eu-west1"), 0, "{eu:?}");
    assert_eq!(p(&eu, "us-east1/us-east1-b"), 1);
    // No locality reported: no priorities.
    let unknown = priorities(&g, &located(None));
    assert!(unknown.iter().all(|(_, pr)| *pr == 0), "{unknown:?}");

    // A failover rule from us-east1 to eu-west1 puts asia behind europe.
    let with_rule = format!(
        "{outlier}    loadBalancer:\n      localityLbSetting:\n        failover: [{{from: us-east1, to: eu-west1}}]\n"
    );
    let g = common::build(&failover_rule(&with_rule), FAILOVER_REGISTRY);
    let ruled = priorities(&g, &rack1);
    assert_eq!(p(&ruled, "eu-west1"), 3, "{ruled:?}");
    assert_eq!(p(&ruled, "asia-east1"), 4);

    // Without outlier detection, or with locality load balancing off: all at priority 0.
    for extra in [
        "    connectionPool: {tcp: {maxConnections: 10}}\n".to_string(),
        format!("{outlier}    loadBalancer:\n      localityLbSetting: {{enabled: false}}\n"),
    ] {
        let g = common::build(&failover_rule(&extra), FAILOVER_REGISTRY);
        let flat = priorities(&g, &rack1);
        assert!(flat.iter().all(|(_, pr)| *pr == 0), "{extra}: {flat:?}");
    }
}

const L4_REGISTRY: &str = r#"
services:
  - hostname: mysql.db.svc.cluster.local
    namespace: db
    addresses: [10.96.1.5]
    ports: [{name: tcp-mysql, port: 3306}]
    endpoints:
      - {address: 10.1.1.5, labels: {app: mysql, version: v1}}
      - {address: 10.1.1.6, labels: {app: mysql, version: v2}}
  - hostname: edge.default.svc.cluster.local
    namespace: default
    addresses: [10.96.2.1]
    ports: [{name: tls, port: 443}]
    endpoints:
      - {address: 10.1.2.1, labels: {app: edge}}
  - hostname: a.default.svc.cluster.local
    namespace: default
    addresses: [10.96.2.2]
    ports: [{name: tls, port: 443}]
    endpoints:
      - {address: 10.1.2.2, labels: {app: a}}
"#;

const L4_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: db}
spec:
  hosts: [mysql.db.svc.cluster.local]
  tcp:
    - match: [{destinationSubnets: [10.96.1.0/24], port: 3306}]
      route: [{destination: {host: mysql.db.svc.cluster.local, subset: v2}}]
    - route:
        - {destination: {host: mysql.db.svc.cluster.local, subset: v1}, weight: 80}
        - {destination: {host: mysql.db.svc.cluster.local, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [edge, "*.example.com"]
  tls:
    - match: [{sniHosts: [a.example.com], port: 443}]
      route: [{destination: {host: a, port: {number: 443}}}]
    - match: [{sniHosts: [other.example.com], port: 8443}]
      route: [{destination: {host: a}}]
"#;

/// VirtualService `tcp` and `tls` routes shape the sidecar's TCP listeners: weighted TCP
/// proxies, chains by destination subnet, SNI-matched chains (with the TLS inspector), and a
/// default chain to the service itself for what matches no route.
#[test]
fn tcp_and_tls_routes_shape_outbound_tcp_listeners() {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    let g = common::build(L4_CONFIG, L4_REGISTRY);
    let all = generate_all(&g, &reviews_v1());
    let listener = |name: &str| -> Listener {
        of(&all, "lds")
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("listener {name}"))
            .decode()
            .unwrap()
    };
    let proxies = |l: &Listener| -> Vec<(Vec<String>, Vec<String>, String)> {
        l.filter_chains
            .iter()
            .map(|c| {
                let m = c.filter_chain_match.clone().unwrap_or_default();
                let Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        any,
                    ),
                ) = &c.filters[0].config_type
                else {
                    panic!("typed config")
                };
                let tp = TcpProxy::decode(any.value.as_slice()).unwrap();
                let to = match tp.cluster_specifier.unwrap() {
                    ClusterSpecifier::Cluster(c) => c,
                    ClusterSpecifier::WeightedClusters(w) => w
                        .clusters
                        .iter()
                        .map(|c| format!("{}={}", c.name, c.weight))
                        .collect::<Vec<_>>()
                        .join(","),
                };
                (
                    m.server_names,
                    m.prefix_ranges
                        .iter()
                        .map(|r| r.address_prefix.clone())
                        .collect(),
                    to,
                )
            })
            .collect()
    };
    let mysql = proxies(&listener("10.96.1.5_3306"));
    assert_eq!(
        mysql,
        vec![
            (vec![], vec!["10.96.1.0".to_string()], "outbound|3306|v2|mysql.db.svc.cluster.local".to_string()),
            (vec![], vec![], "outbound|3306|v1|mysql.db.svc.cluster.local=80,outbound|3306|v2|mysql.db.svc.cluster.local=20".to_string()),
        ]
    );
    let edge_listener = listener("10.96.2.1_443");
    let edge = proxies(&edge_listener);
    assert_eq!(
        edge,
        vec![
            (
                vec!["a.example.com".to_string()],
                vec![],
                "outbound|443||a.default.svc.cluster.local".to_string()
            ),
            (
                vec![],
                vec![],
                "outbound|443||edge.default.svc.cluster.local".to_string()
            ),
        ],
        "the 8443 match does not apply to port 443"
    );
    assert!(edge_listener
        .listener_filters
        .iter()
        .any(|f| f.name == "envoy.filters.listener.tls_inspector"));
    // A service without routes keeps its single default chain and no inspector.
    let a = listener("10.96.2.2_443");
    assert_eq!(proxies(&a).len(), 1);
    assert!(a.listener_filters.is_empty());
}

const DELEGATION: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - name: root
      match: [{uri: {prefix: /reviews}}]
      timeout: 3s
      delegate: {name: reviews-routes, namespace: team}
    - name: rest
      route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: team}
spec:
  http:
    - name: v2
      match: [{uri: {prefix: /reviews/v2}}]
      route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
    - name: outside
      match: [{uri: {prefix: /elsewhere}}]
      route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
    - name: local
      route: [{destination: {host: ratings}}]
"#;

/// A root VirtualService's delegating route is replaced by the delegate's routes merged into
/// it (matches narrowed, the root's timeout inherited, short names resolved in the delegate's
/// namespace); a delegate route matching outside the root's match is left out.
#[test]
fn delegate_virtual_services_are_followed() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    let registry = common::registry_text("bookinfo");
    let g = common::build(DELEGATION, &registry);
    let vh = common::virtual_host(&g, &reviews_v1(), "9080", "reviews.");
    let routes: Vec<(String, String, String, Option<i64>)> = vh
        .routes
        .iter()
        .map(|r| {
            let path = match r.r#match.as_ref().and_then(|m| m.path_specifier.clone()) {
                Some(PathSpecifier::Prefix(p)) => p,
                other => format!("{other:?}"),
            };
            let Some(route::Action::Route(a)) = &r.action else {
                panic!("route action")
            };
            let to = match &a.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                other => format!("{other:?}"),
            };
            (
                r.name.clone(),
                path,
                to,
                a.timeout.as_ref().map(|t| t.seconds),
            )
        })
        .collect();
    let want = [
        (
            "root-v2",
            "/reviews/v2",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            Some(3),
        ),
        (
            "root-local",
            "/reviews",
            "outbound|9080||ratings.team.svc.cluster.local",
            Some(3),
        ),
        (
            "rest",
            "/",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            Some(0),
        ),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(n, p, c, t)| (n.to_string(), p.to_string(), c.to_string(), *t))
        .collect();
    assert_eq!(routes, want);
}

const INGRESS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
    - port: {number: 9080, protocol: HTTP, name: http}
      defaultEndpoint: 127.0.0.1:8080
    - port: {number: 9090, protocol: HTTP, name: http-direct}
    - port: {number: 9443, protocol: TCP, name: tcp}
      defaultEndpoint: 0.0.0.0:7000
  egress:
    - hosts: ["./*"]
"#;

/// A Sidecar's ingress listeners replace the service ports on the inbound side (istiod's
/// `buildInboundClustersFromSidecar`): one `inbound|PORT||` cluster per listener, STATIC to
/// its default endpoint (loopback, or the proxy's own address for `0.0.0.0`, reached from
/// 127.0.0.6) or ORIGINAL_DST without one, and virtualInbound chains per port.
#[test]
fn sidecar_ingress_listeners_define_inbound_ports() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType;
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let g = common::build(INGRESS, &common::registry_text("bookinfo"));
    let all = generate_all(&g, &reviews_v1());
    // (name, discovery type, endpoints, upstream bind address)
    let inbound: Vec<(String, i32, Vec<String>, Option<String>)> = of(&all, "cds")
        .iter()
        .filter(|r| r.name.starts_with("inbound|"))
        .map(|r| {
            let c: Cluster = r.decode().unwrap();
            let addrs = c
                .load_assignment
                .iter()
                .flat_map(|a| a.endpoints.iter())
                .flat_map(|l| l.lb_endpoints.iter())
                .filter_map(|e| match &e.host_identifier {
                    Some(HostIdentifier::Endpoint(ep)) => {
                        match ep.address.as_ref()?.address.as_ref()? {
                            address::Address::SocketAddress(s) => match s.port_specifier {
                                Some(socket_address::PortSpecifier::PortValue(p)) => {
                                    Some(format!("{}:{p}", s.address))
                                }
                                _ => None,
                            },
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            let Some(ClusterDiscoveryType::Type(kind)) = c.cluster_discovery_type else {
                panic!("{}: no discovery type", c.name)
            };
            let bind = c
                .upstream_bind_config
                .and_then(|b| b.source_address)
                .map(|a| a.address);
            (c.name, kind, addrs, bind)
        })
        .collect();
    let (static_, original_dst) = (0, 4);
    let bind = Some("127.0.0.6".to_string());
    let want = vec![
        (
            "inbound|9080||".to_string(),
            static_,
            vec!["127.0.0.1:8080".to_string()],
            None,
        ),
        (
            "inbound|9090||".to_string(),
            original_dst,
            vec![],
            bind.clone(),
        ),
        (
            "inbound|9443||".to_string(),
            static_,
            vec!["10.1.0.21:7000".to_string()],
            bind,
        ),
    ];
    assert_eq!(inbound, want);
    let vi: Listener = of(&all, "lds")
        .iter()
        .find(|r| r.name == "virtualInbound")
        .unwrap()
        .decode()
        .unwrap();
    let chains: Vec<&str> = vi.filter_chains.iter().map(|c| c.name.as_str()).collect();
    for port in ["0.0.0.0_9080", "0.0.0.0_9090", "0.0.0.0_9443"] {
        assert!(chains.contains(&port), "{port}: {chains:?}");
    }
}
