//! The admin servers on 127.0.0.1:0 over a store fed through `ResourceSink::apply`.

use super::*;
use crate::resources::{ResourceSink, Update, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::time::Duration;

fn any(type_url: &str, m: &impl Message) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

fn update(name: &str, version: &str, type_url: &str, m: &impl Message) -> Update {
    Update {
        name: name.into(),
        version: version.into(),
        resource: any(type_url, m),
    }
}

fn sock(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn assignment(name: &str, hosts: &[(&str, u32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: hosts
                .iter()
                .map(|(ip, port)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(sock(ip, *port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn route_config(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "reviews.ns.svc.cluster.local:9080".into(),
            domains: vec!["reviews".into(), "reviews.ns.svc.cluster.local".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Admin {
    addr: std::net::SocketAddr,
    ready_addr: std::net::SocketAddr,
    state: Arc<AdminState>,
    shutdown: watch::Receiver<bool>,
}

async fn start() -> Admin {
    let stats = Arc::new(Stats::default());
    let store = Store::new(stats.clone());
    let status = Arc::new(XdsStatus::with_stats(stats.clone()));
    let bootstrap = Bootstrap::from_parts(
        "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
        "a.ns",
        "127.0.0.1:15010",
        true,
        Some("127.0.0.1:15000".parse().expect("literal")),
        serde_json::json!({"NAMESPACE": "ns"}),
    )
    .expect("valid parts");
    let (tx, shutdown) = watch::channel(false);
    let state = AdminState::new(store, stats, status, bootstrap, tx);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let r = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, ready_addr) = (
        l.local_addr().expect("bound"),
        r.local_addr().expect("bound"),
    );
    tokio::spawn(serve(l, state.clone()));
    tokio::spawn(serve_readiness(r, state.clone()));
    Admin {
        addr,
        ready_addr,
        state,
        shutdown,
    }
}

/// One HTTP/1.1 request; returns status and body.
async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn config_dump_routes_and_bootstrap() {
    let a = start().await;
    let rc = route_config("9080", "outbound|9080||reviews.ns.svc.cluster.local");
    a.state
        .store
        .apply(ROUTE, vec![update("9080", "r1", ROUTE, &rc)], &[], false)
        .expect("route applies");
    let (code, body) = get(a.addr, "GET", "/config_dump").await;
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let configs = dump["configs"].as_array().expect("configs list");
    let types: Vec<&str> = configs.iter().filter_map(|c| c["@type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    let node = &configs[0]["bootstrap"]["node"];
    assert_eq!(node["id"], "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local");
    assert_eq!(node["metadata"]["NAMESPACE"], "ns");
    assert_eq!(
        configs[0]["bootstrap"]["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    let route = &configs[3]["dynamic_route_configs"][0];
    assert_eq!(route["version_info"], "r1");
    assert!(route["last_updated"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let rc = &route["route_config"];
    assert_eq!(
        rc["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(rc["name"], "9080");
    assert_eq!(rc["virtual_hosts"][0]["domains"][0], "reviews");
    assert_eq!(rc["virtual_hosts"][0]["routes"][0]["match"]["prefix"], "/");
    assert_eq!(
        rc["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
        "outbound|9080||reviews.ns.svc.cluster.local"
    );
}

#[tokio::test]
async fn secrets_are_dumped_without_their_keys() {
    use crate::identity::tests::TestCa;
    use crate::resources::SECRET;
    use crate::sds::tests::{
        cert_secret, gateway_context, gateway_listener, key_lines, server_cert,
    };
    use base64::Engine;
    const CERT: &str = "kubernetes://admin-test";
    const CA: &str = "kubernetes://admin-test-cacert";
    let a = start().await;
    let gw = gateway_listener("gw", &gateway_context(&[CERT], Some(CA), true));
    a.state
        .store
        .apply(LISTENER, vec![update("gw", "1", LISTENER, &gw)], &[], true)
        .expect("listener applies");
    let (chain, key) = server_cert(&TestCa::new("gateway"));
    let secret = cert_secret(CERT, &chain, &key);
    a.state
        .store
        .apply(
            SECRET,
            vec![update(CERT, "s1", SECRET, &secret)],
            &[],
            false,
        )
        .expect("secret applies");
    let (code, body) = get(a.addr, "GET", "/config_dump").await;
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let secrets = &dump["configs"][5];
    assert_eq!(
        secrets["@type"],
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
    );
    let active = &secrets["dynamic_active_secrets"][0];
    assert_eq!(
        (&active["name"], &active["version_info"]),
        (&serde_json::json!(CERT), &serde_json::json!("s1"))
    );
    let tls = &active["secret"]["tls_certificate"];
    assert_eq!(tls["private_key"]["inline_string"], "[redacted]");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(tls["certificate_chain"]["inline_bytes"], b64(&chain));
    // The CA the listener names has not arrived: warming.
    assert_eq!(
        secrets["dynamic_warming_secrets"],
        serde_json::json!([{ "name": CA }])
    );
    // No admin output holds the key, in PEM or base64.
    for path in ["/config_dump", "/clusters", "/stats", "/stats/prometheus"] {
        let (_, body) = get(a.addr, "GET", path).await;
        assert!(!body.contains(&b64(&key)), "{path} shows the key");
        for line in key_lines(&key) {
            assert!(!body.contains(line), "{path} shows the key");
        }
    }
}

#[tokio::test]
async fn clusters_and_stats() {
    let a = start().await;
    let static_c = Cluster {
        name: "static-c".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(assignment("static-c", &[("127.0.0.1", 8080)])),
        ..Default::default()
    };
    let eds_c = Cluster {
        name: "outbound|80||a.ns.svc.cluster.local".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            service_name: "outbound|80||a.ns.svc.cluster.local".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let store = &a.state.store;
    store
        .apply(
            CLUSTER,
            vec![
                update("static-c", "c1", CLUSTER, &static_c),
                update(&eds_c.name, "c1", CLUSTER, &eds_c),
            ],
            &[],
            true,
        )
        .expect("clusters apply");
    let cla = assignment(&eds_c.name, &[("10.0.0.7", 80), ("10.0.0.8", 80)]);
    store
        .apply(
            ENDPOINT,
            vec![update(&eds_c.name, "e1", ENDPOINT, &cla)],
            &[],
            false,
        )
        .expect("endpoints apply");
    a.state.status.record(CLUSTER, "c1", "n1", None);

    let (code, body) = get(a.addr, "GET", "/clusters").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("static-c::127.0.0.1:8080::health_flags::healthy\n"),
        "{body}"
    );
    assert!(
        body.contains("outbound|80||a.ns.svc.cluster.local::10.0.0.8:80::health_flags::healthy\n"),
        "{body}"
    );

    let stats = a.state.stats.cluster("static-c");
    stats.upstream_rq_total.add(3);
    stats.count_status(503);
    let http = a.state.stats.http("inbound_0.0.0.0_8080");
    http.downstream_rq_total.inc();
    http.downstream_rq_time.record(Duration::from_millis(7));
    let (code, body) = get(a.addr, "GET", "/stats").await;
    assert_eq!(code, 200);
    for line in [
        "cluster.static-c.upstream_rq_total: 3\n",
        "cluster.static-c.upstream_rq_5xx: 1\n",
        "cluster.static-c.upstream_cx_active: 0\n",
        "cluster.static-c.upstream_rq_pending_overflow: 0\n",
        "cluster.static-c.outlier_detection.ejections_active: 0\n",
        "http.inbound_0.0.0.0_8080.downstream_rq_total: 1\n",
        "cluster_manager.cds.update_success: 1\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    assert!(
        body.contains("http.inbound_0.0.0.0_8080.downstream_rq_time: P0(nan,10)"),
        "{body}"
    );

    let (code, body) = get(a.addr, "GET", "/stats/prometheus").await;
    assert_eq!(code, 200);
    for line in [
        "# TYPE envoy_cluster_upstream_rq_total counter\n",
        "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"static-c\"} 3\n",
        "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"static-c\"} 1\n",
        "# TYPE envoy_cluster_upstream_cx_active gauge\n",
        "envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name=\"static-c\"} 0\n",
        "# TYPE envoy_http_downstream_rq_time histogram\n",
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"inbound_0.0.0.0_8080\",le=\"5\"} 0\n",
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"inbound_0.0.0.0_8080\",le=\"10\"} 1\n",
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"inbound_0.0.0.0_8080\",le=\"+Inf\"} 1\n",
        "envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=\"inbound_0.0.0.0_8080\"} 1\n",
        "envoy_http_downstream_rq_time_sum{envoy_http_conn_manager_prefix=\"inbound_0.0.0.0_8080\"} 7\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }

    let (_, body) = get(a.addr, "GET", "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let clusters = &dump["configs"][1];
    assert_eq!(clusters["version_info"], "c1");
    let active = clusters["dynamic_active_clusters"]
        .as_array()
        .expect("list");
    assert_eq!(active.len(), 2);
    assert_eq!(active[1]["cluster"]["name"], "static-c");
    assert_eq!(active[1]["cluster"]["type"], "STATIC");
    assert_eq!(active[0]["cluster"]["type"], "EDS");
    let eps = &dump["configs"][4]["dynamic_endpoint_configs"][0]["endpoint_config"];
    assert_eq!(
        eps["endpoints"][0]["lb_endpoints"][1]["endpoint"]["address"]["socket_address"]["address"],
        "10.0.0.8"
    );
}

#[tokio::test]
async fn readiness_quit_and_logging() {
    let mut a = start().await;
    assert_eq!(
        get(a.addr, "GET", "/ready").await,
        (503, "INITIALIZING\n".into())
    );
    assert_eq!(get(a.ready_addr, "GET", "/healthz/ready").await.0, 503);
    a.state.status.record(LISTENER, "l1", "n1", None);
    assert_eq!(get(a.addr, "GET", "/ready").await, (200, "LIVE\n".into()));
    assert_eq!(get(a.ready_addr, "GET", "/healthz/ready").await.0, 200);

    assert_eq!(get(a.addr, "GET", "/quitquitquit").await.0, 405);
    assert!(!*a.shutdown.borrow());
    assert_eq!(get(a.addr, "POST", "/quitquitquit").await.0, 200);
    tokio::time::timeout(Duration::from_secs(1), a.shutdown.wait_for(|s| *s))
        .await
        .expect("shutdown fired")
        .expect("sender alive");
    assert_eq!(
        get(a.addr, "GET", "/ready").await,
        (503, "DRAINING\n".into())
    );
    assert_eq!(get(a.ready_addr, "GET", "/healthz/ready").await.0, 503);

    // No log-level hook in this process: say so rather than pretend.
    assert_eq!(get(a.addr, "POST", "/logging?level=debug").await.0, 501);
    assert_eq!(get(a.addr, "POST", "/logging").await.0, 400);
    assert_eq!(get(a.addr, "GET", "/nope").await.0, 404);
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
}
