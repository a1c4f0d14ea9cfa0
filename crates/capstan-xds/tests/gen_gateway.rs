//! Gateway generation as istiod does it: servers listen on the gateway Service's target
//! ports, TCP servers forward by the VirtualServices' `tcp` routes, and gateways get no
//! passthrough clusters.

mod common;

use common::*;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use prost::Message;

/// The ingress gateway's Service maps 80 → 8080, 443 → 8443 and 31400 → 31400 (as Istio's
/// chart does); `plain` has the same ports and opts out of port translation.
fn registry(opt_out: bool) -> String {
    let labels = if opt_out {
        "\n    labels: {networking.istio.io/disable-gateway-port-translation: \"true\"}"
    } else {
        ""
    };
    format!(
        r#"
services:
  - hostname: istio-ingressgateway.istio-system.svc.cluster.local
    namespace: istio-system
    addresses: [10.96.9.1]{labels}
    ports: [{{name: http2, port: 80}}, {{name: https, port: 443}}, {{name: tcp, port: 31400}}]
    endpoints:
      - {{address: 10.1.9.1, labels: {{istio: ingressgateway}}, ports: {{http2: 8080, https: 8443, tcp: 31400}}, workload: ingressgateway-1}}
  - hostname: httpbin.default.svc.cluster.local
    namespace: default
    addresses: [10.96.0.20]
    ports: [{{name: http, port: 8000}}]
    endpoints:
      - {{address: 10.1.0.20, labels: {{app: httpbin}}, ports: {{http: 80}}}}
  - hostname: tcp-echo.default.svc.cluster.local
    namespace: default
    addresses: [10.96.0.30]
    ports: [{{name: tcp, port: 9000}}]
    endpoints:
      - {{address: 10.1.0.31, labels: {{app: tcp-echo, version: v1}}}}
      - {{address: 10.1.0.32, labels: {{app: tcp-echo, version: v2}}}}
"#
    )
}

const GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: [httpbin.example.com]
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: [httpbin.example.com]
      tls: {mode: SIMPLE, credentialName: httpbin-cert}
    - port: {number: 9999, name: http-other, protocol: HTTP}
      hosts: [other.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [httpbin-gateway]
  http:
    - route:
        - destination: {host: httpbin, port: {number: 8000}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
    - route:
        - destination: {host: httpbin, port: {number: 8000}}
"#;

fn listeners(g: &capstan_xds::IstioGenerator) -> Vec<Listener> {
    let lds = generate_all(g, &ingress_gateway())
        .into_iter()
        .find(|(t, _)| *t == "lds")
        .expect("lds")
        .1;
    lds.iter()
        .map(|r| r.decode().expect("a listener"))
        .collect()
}

fn routes(g: &capstan_xds::IstioGenerator) -> Vec<RouteConfiguration> {
    let rds = generate_all(g, &ingress_gateway())
        .into_iter()
        .find(|(t, _)| *t == "rds")
        .expect("rds")
        .1;
    rds.iter().map(|r| r.decode().expect("routes")).collect()
}

/// Listener name → the RDS names its HTTP chains read.
fn rds_names(listeners: &[Listener]) -> Vec<(String, Vec<String>)> {
    listeners
        .iter()
        .map(|l| {
            let names = l
                .filter_chains
                .iter()
                .flat_map(|c| &c.filters)
                .filter_map(|f| match &f.config_type {
                    Some(filter::ConfigType::TypedConfig(a))
                        if a.type_url.ends_with("HttpConnectionManager") =>
                    {
                        let hcm = HttpConnectionManager::decode(a.value.as_slice()).ok()?;
                        match hcm.route_specifier {
                            Some(RouteSpecifier::Rds(r)) => Some(r.route_config_name),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            (l.name.clone(), names)
        })
        .collect()
}

/// Servers listen where the gateway's Service sends their port (its target port); a server
/// port no Service port names is listened on as is, and shares a listener with the servers
/// translated to it. HTTPS routes keep the server's own port in their name, and virtual hosts
/// are named for the server's port, as istiod's.
#[test]
fn gateway_servers_listen_on_the_services_target_ports() {
    // Whether the Service opts out of translation → listener → the RDS names it reads.
    type Listeners<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: &[(bool, Listeners<'_>)] = &[
        (
            false,
            &[
                ("0.0.0.0_8080", &["http.8080"]),
                ("0.0.0.0_8443", &["https.443.https.httpbin-gateway.default"]),
                ("0.0.0.0_9999", &["http.9999"]),
            ],
        ),
        // The Service opts out of translation: every server listens on its own port.
        (
            true,
            &[
                ("0.0.0.0_443", &["https.443.https.httpbin-gateway.default"]),
                ("0.0.0.0_80", &["http.80"]),
                ("0.0.0.0_8080", &["http.8080"]),
                ("0.0.0.0_9999", &["http.9999"]),
            ],
        ),
    ];
    for (opt_out, want) in cases {
        let g = build(GATEWAYS, &registry(*opt_out));
        let mut got = rds_names(&listeners(&g));
        got.sort();
        let want: Vec<(String, Vec<String>)> = want
            .iter()
            .map(|(l, r)| (l.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(got, want, "opt out of translation: {opt_out}");
    }
    let g = build(GATEWAYS, &registry(false));
    let listeners = listeners(&g);
    let l8080 = listeners.iter().find(|l| l.name == "0.0.0.0_8080").unwrap();
    let addr = format!("{:?}", l8080.address);
    assert!(addr.contains("PortValue(8080)"), "{addr}");
    let http = routes(&g)
        .into_iter()
        .find(|r| r.name == "http.8080")
        .expect("http.8080");
    let mut vhosts: Vec<&str> = http.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    vhosts.sort();
    assert_eq!(
        vhosts,
        ["bookinfo.example.com:8080", "httpbin.example.com:80"]
    );
}

const TCP_ECHO: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 31400, name: tcp, protocol: TCP}
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"#;

fn tcp_echo_vs(match_port: u32, weights: &[(&str, u32)]) -> String {
    let dests: String = weights
        .iter()
        .map(|(subset, w)| {
            format!(
                "        - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: {subset}}}\n          weight: {w}\n"
            )
        })
        .collect();
    format!(
        "{TCP_ECHO}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo, namespace: default}}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp-echo-gateway]\n  tcp:\n    - match: [{{port: {match_port}}}]\n      route:\n{dests}"
    )
}

/// The TCP proxy of a listener's only chain.
fn tcp_proxy(l: &Listener) -> TcpProxy {
    assert_eq!(l.filter_chains.len(), 1, "{}", l.name);
    let chain = &l.filter_chains[0];
    assert!(
        chain.filter_chain_match.is_none(),
        "plain TCP matches anything"
    );
    let f = chain.filters.last().expect("a filter");
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("{f:?}")
    };
    TcpProxy::decode(a.value.as_slice()).expect("a TCP proxy")
}

/// A TCP server forwards by the first `tcp` route bound to its gateway whose match names its
/// port: to one subset with the cluster as stat prefix, or split by weight with the
/// VirtualService's `name.namespace` (istiod's `buildGatewayNetworkFiltersFromTCPRoutes`).
/// Without a matching route there is no listener.
#[test]
fn gateway_tcp_servers_forward_by_tcp_routes() {
    let g = build(
        &tcp_echo_vs(31400, &[("v1", 80), ("v2", 20)]),
        &registry(false),
    );
    let ls = listeners(&g);
    let l = ls
        .iter()
        .find(|l| l.name == "0.0.0.0_31400")
        .expect("a TCP listener");
    assert!(l.listener_filters.is_empty(), "no TLS inspection for TCP");
    let tp = tcp_proxy(l);
    assert_eq!(tp.stat_prefix, "tcp-echo.default");
    let Some(ClusterSpecifier::WeightedClusters(w)) = tp.cluster_specifier else {
        panic!("{tp:?}")
    };
    let split: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        split,
        [
            ("outbound|9000|v1|tcp-echo.default.svc.cluster.local", 80),
            ("outbound|9000|v2|tcp-echo.default.svc.cluster.local", 20)
        ]
    );

    let g = build(&tcp_echo_vs(31400, &[("v1", 100)]), &registry(false));
    let tp = tcp_proxy(
        listeners(&g)
            .iter()
            .find(|l| l.name == "0.0.0.0_31400")
            .expect("a TCP listener"),
    );
    let one = "outbound|9000|v1|tcp-echo.default.svc.cluster.local";
    assert_eq!(tp.stat_prefix, one);
    assert_eq!(
        tp.cluster_specifier,
        Some(ClusterSpecifier::Cluster(one.into()))
    );

    let g = build(&tcp_echo_vs(31401, &[("v1", 100)]), &registry(false));
    assert!(
        listeners(&g).iter().all(|l| l.name != "0.0.0.0_31400"),
        "a route for another port does not apply"
    );
}

/// A plain-text server keeps its port: another gateway's TCP server translated to the same
/// port is dropped (istiod's `mergeGateways`), rather than a second catch-all chain Envoy
/// would reject.
#[test]
fn gateway_servers_that_cannot_share_a_port_are_dropped() {
    let tcp_on_80 = r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-on-80, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 80, name: tcp, protocol: TCP}
      hosts: ["*"]
"#;
    let g = build(
        &format!("{GATEWAYS}{tcp_on_80}{}", tcp_echo_vs(80, &[("v1", 100)])),
        &registry(false),
    );
    let ls = listeners(&g);
    let l = ls.iter().find(|l| l.name == "0.0.0.0_8080").unwrap();
    assert_eq!(l.filter_chains.len(), 1, "{:?}", rds_names(&ls));
}

/// Gateways have no original-destination listeners: istiod sends them the blackhole cluster
/// but neither passthrough cluster; sidecars get all three.
#[test]
fn gateways_get_no_passthrough_clusters() {
    let g = load_mesh("bookinfo-routing");
    let special = |proxy: &capstan_xds::Proxy| -> Vec<String> {
        let cds = generate_all(&g, proxy)
            .into_iter()
            .find(|(t, _)| *t == "cds")
            .expect("cds")
            .1;
        let mut names: Vec<String> = cds
            .iter()
            .map(|r| r.name.to_string())
            .filter(|n| !n.contains('|'))
            .collect();
        names.sort();
        names
    };
    assert_eq!(special(&ingress_gateway()), ["BlackHoleCluster"]);
    assert_eq!(
        special(&reviews_v1()),
        [
            "BlackHoleCluster",
            "InboundPassthroughCluster",
            "PassthroughCluster"
        ]
    );
}

/// Gateway routes match the host whatever the port the client wrote (bare host domains, the
/// port ignored), count attempts upstream, and the connection manager takes the client as the
/// peer (istiod's gateway route configurations and `createGatewayHTTPFilterChainOpts`).
#[test]
fn gateway_routes_ignore_the_port_and_trust_the_peer() {
    let g = build(GATEWAYS, &registry(false));
    for rc in routes(&g) {
        assert!(rc.ignore_port_in_host_matching, "{}", rc.name);
        for vh in rc
            .virtual_hosts
            .iter()
            .filter(|v| !v.name.starts_with("blackhole"))
        {
            assert_eq!(vh.domains.len(), 1, "{}: {:?}", vh.name, vh.domains);
            assert!(!vh.domains[0].contains(':'), "{:?}", vh.domains);
            assert!(vh.include_request_attempt_count, "{}", vh.name);
        }
    }
    for l in listeners(&g) {
        for f in l.filter_chains.iter().flat_map(|c| &c.filters) {
            let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
                continue;
            };
            if !a.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            if let Ok(hcm) = HttpConnectionManager::decode(a.value.as_slice()) {
                assert_eq!(
                    hcm.use_remote_address.map(|b| b.value),
                    Some(true),
                    "{}",
                    l.name
                );
            }
        }
    }
}
