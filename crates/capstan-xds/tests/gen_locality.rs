//! The proxy's locality as istiod takes it (from the registry — its pod's Node — before the
//! one the proxy reports), the EDS priorities relative to it, and the locality-weighted
//! balancing istiod turns on in clusters with failover rules.

mod common;

use capstan_xds::resource::{CLUSTER, ENDPOINT};
use capstan_xds::{Generator, IstioGenerator, Proxy, PushRequest, Subscription};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

const REGISTRY: &str = r#"
services:
  - hostname: helloworld.default.svc.cluster.local
    namespace: default
    addresses: [10.96.5.1]
    ports: [{name: http, port: 5000}]
    endpoints:
      - {address: 10.5.0.1, labels: {app: helloworld}, locality: us-east/us-east-1a}
      - {address: 10.5.0.2, labels: {app: helloworld}, locality: us-west/us-west-1b}
      - {address: 10.5.0.3, labels: {app: helloworld}, locality: eu/eu-1a}
  - hostname: httpbin.default.svc.cluster.local
    namespace: default
    addresses: [10.96.5.2]
    ports: [{name: http, port: 8000}]
    endpoints:
      - {address: 10.5.1.1, labels: {app: httpbin}, locality: us-east/us-east-1a}
      - {address: 10.5.1.2, labels: {app: httpbin}, locality: us-west/us-west-1b}
  - hostname: client.default.svc.cluster.local
    namespace: default
    addresses: [10.96.5.3]
    ports: [{name: http, port: 80}]
    endpoints:
      - {address: 10.1.0.21, labels: {app: client}, locality: us-east/us-east-1a, workload: client-0}
workloads:
  - {name: labelled-0, namespace: default, addresses: [10.1.0.22], labels: {istio-locality: us-west.us-west-1b}}
  - {name: elsewhere-0, namespace: other, addresses: [10.1.0.23], locality: eu/eu-1a}
"#;

/// Istio's locality load balancing task: failover from us-east to us-west, with outlier
/// detection; httpbin has outlier detection only (the circuit breaking task).
const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: default}
spec:
  host: helloworld.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover: [{from: us-east, to: us-west}]
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m}
"#;

/// A sidecar in `default` at `ip`, reporting `reported` (`region/zone`) in its node, if any.
fn sidecar(ip: &str, pod: &str, reported: Option<&str>) -> Proxy {
    let node = Node {
        id: format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
        locality: reported.map(|l| {
            let (region, zone) = l.split_once('/').unwrap_or((l, ""));
            Locality {
                region: region.into(),
                zone: zone.into(),
                ..Locality::default()
            }
        }),
        ..Node::default()
    };
    Proxy::from_node(Some(&node)).expect("a sidecar node")
}

fn full() -> PushRequest {
    PushRequest {
        full: true,
        ..PushRequest::default()
    }
}

fn named(name: &str) -> Subscription {
    Subscription {
        wildcard: false,
        names: [name.into()].into_iter().collect(),
    }
}

/// `region → priority` of a cluster's localities for a proxy.
fn priorities(g: &IstioGenerator, proxy: &Proxy, cluster: &str) -> Vec<(String, u32)> {
    let cla: ClusterLoadAssignment = g
        .generate(proxy, ENDPOINT, &named(cluster), &full())
        .expect("EDS")[0]
        .decode()
        .expect("an assignment");
    let mut out: Vec<(String, u32)> = cla
        .endpoints
        .iter()
        .map(|e| (e.locality.clone().unwrap_or_default().region, e.priority))
        .collect();
    out.sort();
    out
}

const HELLOWORLD: &str = "outbound|5000||helloworld.default.svc.cluster.local";
const HTTPBIN: &str = "outbound|8000||httpbin.default.svc.cluster.local";

/// Endpoint priorities follow the locality istiod gives the proxy: its workload's in the
/// registry first (whatever the proxy reports), its locality label, then the reported one.
#[test]
fn priorities_are_relative_to_the_registrys_locality_of_the_proxy() {
    let g = common::build(RULES, REGISTRY);
    let east = [("eu", 2), ("us-east", 0), ("us-west", 1)];
    let west = [("eu", 1), ("us-east", 1), ("us-west", 0)];
    let unknown = [("eu", 0), ("us-east", 0), ("us-west", 0)];
    type Priorities<'a> = &'a [(&'a str, u32)];
    let cases: &[(&str, Proxy, Priorities<'_>)] = &[
        ("registry", sidecar("10.1.0.21", "client-0", None), &east),
        (
            "registry over reported",
            sidecar("10.1.0.21", "client-0", Some("eu/eu-1a")),
            &east,
        ),
        (
            "locality label",
            sidecar("10.1.0.22", "labelled-0", None),
            &west,
        ),
        (
            "reported, unknown to the registry",
            sidecar("10.1.0.99", "vm-0", Some("us-west/us-west-1b")),
            &west,
        ),
        (
            "a workload of another namespace is not the proxy's",
            sidecar("10.1.0.23", "elsewhere-0", None),
            &unknown,
        ),
        (
            "nothing known",
            sidecar("10.1.0.99", "vm-0", None),
            &unknown,
        ),
    ];
    for (case, proxy, want) in cases {
        let want: Vec<(String, u32)> = want.iter().map(|(r, p)| (r.to_string(), *p)).collect();
        assert_eq!(priorities(&g, proxy, HELLOWORLD), want, "{case}");
    }
    // Outlier detection alone fails over by closeness too (the mesh default turns locality
    // load balancing on).
    assert_eq!(
        priorities(&g, &sidecar("10.1.0.21", "client-0", None), HTTPBIN),
        [("us-east".to_string(), 0), ("us-west".to_string(), 1)]
    );
}

fn cluster(g: &IstioGenerator, proxy: &Proxy, name: &str) -> Cluster {
    g.generate(proxy, CLUSTER, &named(name), &full())
        .expect("CDS")
        .first()
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .decode()
        .expect("a cluster")
}

/// istiod turns on locality-weighted balancing in a cluster whose rule names failover regions
/// (with outlier detection), and leaves it off for outlier detection alone.
#[test]
fn failover_rules_turn_on_locality_weighted_balancing() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier;
    let g = common::build(RULES, REGISTRY);
    let proxy = sidecar("10.1.0.21", "client-0", None);
    let specifier = |name: &str| {
        cluster(&g, &proxy, name)
            .common_lb_config
            .and_then(|c| c.locality_config_specifier)
    };
    assert!(matches!(
        specifier(HELLOWORLD),
        Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));
    assert_eq!(specifier(HTTPBIN), None);
}

/// A change of the proxy's own workload (its Node's locality) is pushed to it; another
/// workload's change is not (it reaches proxies through the endpoints it serves).
#[test]
fn the_proxys_own_workload_changes_are_pushed_to_it() {
    let g = common::build(RULES, REGISTRY);
    let proxy = sidecar("10.1.0.21", "client-0", None);
    let push = |key: &str| PushRequest {
        full: true,
        changed: [key.to_string()].into_iter().collect(),
        ..PushRequest::default()
    };
    assert!(g.affects(&proxy, &push("workload:10.1.0.21")));
    assert!(!g.affects(&proxy, &push("workload:10.1.0.22")));
}
