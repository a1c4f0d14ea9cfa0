use super::*;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster as ClusterProto};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Any;

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn update<M: Message>(type_url: &str, name: &str, version: &str, m: &M) -> Update {
    Update {
        name: name.to_string(),
        version: version.to_string(),
        resource: any(type_url, m),
    }
}

fn socket(port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn eds_cluster(name: &str) -> ClusterProto {
    ClusterProto {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: None,
            service_name: name.into(),
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn assignment(name: &str, port: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn http_listener(name: &str, port: u32, route: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: route.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket(port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &hcm,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn store() -> Arc<Store> {
    Store::new(Arc::new(Stats::default()))
}

#[test]
fn eds_clusters_warm_when_their_endpoints_arrive() {
    let s = store();
    s.apply(
        resources::CLUSTER,
        vec![update(resources::CLUSTER, "c", "1", &eds_cluster("c"))],
        &[],
        false,
    )
    .unwrap();
    assert!(s.snapshot().cluster("c").is_none(), "warming until EDS");
    assert_eq!(s.wanted(resources::ENDPOINT), vec!["c".to_string()]);
    s.apply(
        resources::ENDPOINT,
        vec![update(
            resources::ENDPOINT,
            "c",
            "1",
            &assignment("c", 9000),
        )],
        &[],
        false,
    )
    .unwrap();
    assert!(s.snapshot().cluster("c").is_some());
}

#[test]
fn listeners_warm_when_their_routes_arrive_and_the_old_version_serves_meanwhile() {
    let s = store();
    s.apply(
        resources::LISTENER,
        vec![update(
            resources::LISTENER,
            "l",
            "1",
            &http_listener("l", 8001, "r1"),
        )],
        &[],
        false,
    )
    .unwrap();
    assert!(s.snapshot().listeners.is_empty(), "waiting for RDS r1");
    assert_eq!(s.wanted(resources::ROUTE), vec!["r1".to_string()]);
    let route = |name: &str| RouteConfiguration {
        name: name.into(),
        ..Default::default()
    };
    s.apply(
        resources::ROUTE,
        vec![update(resources::ROUTE, "r1", "1", &route("r1"))],
        &[],
        false,
    )
    .unwrap();
    let v1 = s.snapshot().listeners.get("l").cloned().expect("warm");
    // A new version naming a route not yet received: the old version keeps serving.
    s.apply(
        resources::LISTENER,
        vec![update(
            resources::LISTENER,
            "l",
            "2",
            &http_listener("l", 8001, "r2"),
        )],
        &[],
        false,
    )
    .unwrap();
    assert!(Arc::ptr_eq(&v1, &s.snapshot().listeners["l"]));
    s.apply(
        resources::ROUTE,
        vec![update(resources::ROUTE, "r2", "1", &route("r2"))],
        &[],
        false,
    )
    .unwrap();
    let v2 = s.snapshot().listeners["l"].clone();
    assert!(!Arc::ptr_eq(&v1, &v2));
    // Re-sent byte for byte: the same Arc, so its connections are not drained.
    s.apply(
        resources::LISTENER,
        vec![update(
            resources::LISTENER,
            "l",
            "3",
            &http_listener("l", 8001, "r2"),
        )],
        &[],
        false,
    )
    .unwrap();
    assert!(Arc::ptr_eq(&v2, &s.snapshot().listeners["l"]));
}

#[test]
fn a_bad_resource_rejects_the_whole_response_and_keeps_the_last_good_config() {
    let s = store();
    let good = update(resources::CLUSTER, "a", "1", &eds_cluster("a"));
    s.apply(resources::CLUSTER, vec![good], &[], false).unwrap();
    let mut bad = eds_cluster("b");
    bad.lb_policy = 99; // not a defined LbPolicy
    let err = s
        .apply(
            resources::CLUSTER,
            vec![
                update(resources::CLUSTER, "c", "2", &eds_cluster("c")),
                update(resources::CLUSTER, "b", "2", &bad),
            ],
            &["a".to_string()],
            false,
        )
        .unwrap_err();
    assert!(err.starts_with("cluster b: "), "{err}");
    // Nothing of it applied: `a` is still there, `c` is not.
    let held = s.versions(resources::CLUSTER);
    assert_eq!(held, vec![("a".to_string(), "1".to_string())]);
    // Undecodable bytes and a wrong type URL are errors too.
    let garbage = Update {
        name: "x".into(),
        version: "1".into(),
        resource: Any {
            type_url: resources::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        },
    };
    assert!(s
        .apply(resources::CLUSTER, vec![garbage], &[], false)
        .unwrap_err()
        .contains("cannot decode"));
    let wrong = update(resources::LISTENER, "x", "1", &Listener::default());
    assert!(s
        .apply(resources::CLUSTER, vec![wrong], &[], false)
        .unwrap_err()
        .contains("type_url"));
}

#[test]
fn state_of_the_world_removes_what_it_does_not_list() {
    let s = store();
    let c = |n: &str| update(resources::CLUSTER, n, "1", &eds_cluster(n));
    s.apply(resources::CLUSTER, vec![c("a"), c("b")], &[], true)
        .unwrap();
    s.apply(resources::CLUSTER, vec![c("b")], &[], true)
        .unwrap();
    assert_eq!(
        s.versions(resources::CLUSTER),
        vec![("b".to_string(), "1".to_string())]
    );
    assert_eq!(s.wanted(resources::ENDPOINT), vec!["b".to_string()]);
}

#[test]
fn secrets_are_wanted_while_a_listener_naming_them_serves_or_warms() {
    use crate::sds::tests::{gateway_context, tls_socket};
    const A: &str = "kubernetes://store-test-a";
    const B: &str = "kubernetes://store-test-b";
    let s = store();
    let gw = |secret: &str, route: &str| {
        let mut l = http_listener("gw", 8443, route);
        l.filter_chains[0].transport_socket =
            Some(tls_socket(&gateway_context(&[secret], None, false)));
        update(resources::LISTENER, "gw", "1", &l)
    };
    let rc = |n: &str| {
        update(
            resources::ROUTE,
            n,
            "1",
            &RouteConfiguration {
                name: n.into(),
                ..Default::default()
            },
        )
    };
    s.apply(resources::ROUTE, vec![rc("r1")], &[], false)
        .unwrap();
    s.apply(resources::LISTENER, vec![gw(A, "r1")], &[], true)
        .unwrap();
    assert_eq!(s.wanted(resources::SECRET), [A]);
    // A new version names another secret and a route not received yet: the serving version
    // keeps its secret until the new one takes over.
    s.apply(resources::LISTENER, vec![gw(B, "r2")], &[], true)
        .unwrap();
    assert_eq!(s.wanted(resources::SECRET), [A, B]);
    s.apply(resources::ROUTE, vec![rc("r2")], &[], false)
        .unwrap();
    assert_eq!(s.wanted(resources::SECRET), [B]);
}
