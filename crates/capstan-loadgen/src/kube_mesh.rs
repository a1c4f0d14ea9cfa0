//! The same mesh as [`crate::mesh`], as Kubernetes objects for an API server: Namespaces,
//! Services, EndpointSlices, VirtualServices and DestinationRules (JSON, ready for server-side
//! apply), and the byte patterns by which a simulated proxy recognises that a response carries
//! a change made through the API.
//!
//! Differences from the file mesh, both servers seeing the same: there are no Pods, so the
//! endpoints carry no labels, service accounts or localities (the DestinationRules' `v1`/`v2`
//! subsets select no endpoint; Istio builds endpoints without a Pod when the EndpointSlice
//! names none, `getPod` in `endpointslice.go`); the API server allocates the ClusterIPs.

use crate::mesh::{self, MeshSpec};
use serde_json::{json, Value};

/// The service port every service exposes (the file mesh's).
pub const PORT: u16 = 9080;

/// The namespaces of the mesh (`mesh::namespace`), sorted.
pub fn namespaces(spec: &MeshSpec) -> Vec<String> {
    let mut out: Vec<String> = (0..spec.services.min(10)).map(mesh::namespace).collect();
    out.sort();
    out
}

/// A Namespace object.
pub fn namespace_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// istiod's mesh configuration ConfigMap (`istio` in `istio-system`, keys `mesh` and
/// `meshNetworks`): the defaults. Capstan does not read it.
pub fn istio_config_map() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": "", "meshNetworks": "networks: {}"}
    })
}

/// Name of service `i` (and of its VirtualService and DestinationRule).
pub fn name(i: usize) -> String {
    format!("svc-{i}")
}

/// Service `i`: one HTTP port, selecting the Pods of its app (there are none).
pub fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name(i), "namespace": mesh::namespace(i), "labels": {"app": name(i)}},
        "spec": {
            "selector": {"app": name(i)},
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]
        }
    })
}

/// Name of service `i`'s one EndpointSlice.
pub fn slice_name(i: usize) -> String {
    format!("svc-{i}-0")
}

/// Service `i`'s EndpointSlice with every endpoint at `generation` (0 is the initial mesh; a
/// change moves them all to fresh addresses, as the file mesh's registry change does).
pub fn endpoint_slice(spec: &MeshSpec, i: usize, generation: usize) -> Value {
    let endpoints: Vec<Value> = (0..spec.endpoints)
        .map(|e| {
            json!({
                "addresses": [mesh::endpoint_ip(i, e, generation)],
                "conditions": {"ready": true}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(i), "namespace": mesh::namespace(i),
            "labels": {"kubernetes.io/service-name": name(i)}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// The VirtualService of service `i` (`mesh::virtual_service_yaml`'s object).
pub fn virtual_service(i: usize, weight: u32) -> Value {
    let destination = |subset: &str, weight: u32| json!({"destination": {"host": name(i), "subset": subset}, "weight": weight});
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name(i), "namespace": mesh::namespace(i)},
        "spec": {
            "hosts": [name(i)],
            "http": [{
                "route": [destination("v1", weight), destination("v2", 100 - weight)],
                "timeout": "2s"
            }]
        }
    })
}

/// The DestinationRule of service `i` (`mesh::destination_rule_yaml`'s object).
pub fn destination_rule(i: usize) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": name(i), "namespace": mesh::namespace(i)},
        "spec": {
            "host": name(i),
            "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}}
            ]
        }
    })
}

/// Every object of the mesh, namespaces first (what the API server must hold before a server
/// starts).
pub fn objects(spec: &MeshSpec) -> Vec<Value> {
    let mut out: Vec<Value> = namespaces(spec)
        .iter()
        .map(|n| namespace_object(n))
        .collect();
    for i in 0..spec.services {
        out.push(service(i));
        out.push(endpoint_slice(spec, i, 0));
    }
    out.extend((0..spec.virtual_services.min(spec.services)).map(|i| virtual_service(i, 80)));
    out.extend((0..spec.destination_rules.min(spec.services)).map(destination_rule));
    out
}

/// The EDS cluster of service `i` (Istio's `outbound|PORT||HOST`).
pub fn cluster(i: usize) -> String {
    format!("outbound|{PORT}||{}", mesh::hostname(i))
}

/// A subset cluster of service `i` (`outbound|PORT|SUBSET|HOST`).
pub fn subset_cluster(i: usize, subset: &str) -> String {
    format!("outbound|{PORT}|{subset}|{}", mesh::hostname(i))
}

/// The RDS route configuration every sidecar's outbound HTTP listener on the port uses.
pub fn route_name() -> String {
    PORT.to_string()
}

/// Protobuf bytes of a length-delimited field: tag, length, value (`value` < 128 bytes).
fn field(number: u8, value: &[u8]) -> Vec<u8> {
    debug_assert!(value.len() < 128, "one-byte length");
    let mut out = vec![(number << 3) | 2, value.len() as u8];
    out.extend_from_slice(value);
    out
}

/// What a `ClusterLoadAssignment` holding an endpoint at `ip` contains: the `SocketAddress`
/// field `address = 2` with exactly that string (the length byte keeps `10.1.2.3` from
/// matching `10.1.2.33`).
pub fn endpoint_needle(ip: &str) -> Vec<u8> {
    field(2, ip.as_bytes())
}

/// What a `RouteConfiguration` sending `weight` to service `i`'s `v1` subset contains: a
/// `WeightedCluster.ClusterWeight` with `name = 1` that cluster and then `weight = 2`, a
/// `UInt32Value` of `weight` (protobuf encoders write fields in number order: Go's and
/// prost's alike). `weight` must be 1..=127 (one varint byte).
pub fn route_needle(i: usize, weight: u32) -> Vec<u8> {
    debug_assert!((1..128).contains(&weight), "one-byte varint");
    let mut out = field(1, subset_cluster(i, "v1").as_bytes());
    // weight = 2 (length-delimited), holding UInt32Value.value = 1 (varint).
    out.extend_from_slice(&[(2 << 3) | 2, 2, 1 << 3, weight as u8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    };
    use envoy_types::pb::envoy::config::route::v3::{
        route, route_action, weighted_cluster, Route, RouteAction, RouteConfiguration, VirtualHost,
        WeightedCluster,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;
    use prost::Message;

    const SPEC: MeshSpec = MeshSpec {
        services: 30,
        endpoints: 3,
        virtual_services: 12,
        destination_rules: 7,
    };

    /// The Istio objects are the file mesh's, field for field (so both modes measure one mesh).
    #[test]
    fn istio_objects_match_the_file_mesh() {
        for (i, weight) in [(0, 80), (17, 50)] {
            let yaml: Value = serde_yaml_ng::from_str(&mesh::virtual_service_yaml(i, weight))
                .expect("the file mesh's YAML parses");
            assert_eq!(virtual_service(i, weight), yaml, "VirtualService {i}");
        }
        let file = mesh::config_yaml(&SPEC);
        let drs: Vec<Value> = file
            .split("---\n")
            .map(|d| serde_yaml_ng::from_str::<Value>(d).expect("YAML"))
            .filter(|d| d["kind"] == "DestinationRule")
            .collect();
        assert_eq!(drs.len(), 7);
        for (i, dr) in drs.iter().enumerate() {
            assert_eq!(&destination_rule(i), dr, "DestinationRule {i}");
        }
    }

    #[test]
    fn objects_cover_the_mesh_namespaces_first() {
        let all = objects(&SPEC);
        let count = |kind: &str| all.iter().filter(|o| o["kind"] == kind).count();
        assert_eq!(count("Namespace"), 10);
        assert_eq!(count("Service"), 30);
        assert_eq!(count("EndpointSlice"), 30);
        assert_eq!(count("VirtualService"), 12);
        assert_eq!(count("DestinationRule"), 7);
        assert!(all[..10].iter().all(|o| o["kind"] == "Namespace"));
        // Every namespaced object is in one of the mesh's namespaces.
        let namespaces = namespaces(&SPEC);
        for o in &all[10..] {
            let ns = o["metadata"]["namespace"].as_str().expect("namespaced");
            assert!(namespaces.iter().any(|n| n == ns), "{o}");
        }
        let slice = endpoint_slice(&SPEC, 13, 2);
        assert_eq!(slice["metadata"]["namespace"], "ns-3");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-13"
        );
        assert_eq!(
            slice["endpoints"][1]["addresses"][0],
            mesh::endpoint_ip(13, 1, 2)
        );
        assert_eq!(service(13)["spec"]["ports"][0]["port"], 9080);
    }

    fn assignment(ip: &str) -> Vec<u8> {
        let endpoint = |ip: &str| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(9080)),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            ..LbEndpoint::default()
        };
        ClusterLoadAssignment {
            cluster_name: cluster(3),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint("10.0.0.1"), endpoint(ip)],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn endpoint_needle_finds_exactly_that_address() {
        let body = assignment("10.101.2.3");
        let found = |ip: &str| memchr::memmem::find(&body, &endpoint_needle(ip)).is_some();
        assert!(found("10.101.2.3"));
        assert!(found("10.0.0.1"));
        assert!(!found("10.101.2.33"));
        assert!(!found("10.101.2."));
        assert!(
            memchr::memmem::find(&assignment("10.101.2.33"), &endpoint_needle("10.101.2.3"))
                .is_none()
        );
    }

    fn routes(i: usize, weight: u32) -> Vec<u8> {
        let split = |subset: &str, w: u32| weighted_cluster::ClusterWeight {
            name: subset_cluster(i, subset),
            weight: Some(UInt32Value { value: w }),
            ..weighted_cluster::ClusterWeight::default()
        };
        RouteConfiguration {
            name: route_name(),
            virtual_hosts: vec![VirtualHost {
                name: format!("{}:9080", mesh::hostname(i)),
                routes: vec![Route {
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                            WeightedCluster {
                                clusters: vec![split("v1", weight), split("v2", 100 - weight)],
                                ..WeightedCluster::default()
                            },
                        )),
                        ..RouteAction::default()
                    })),
                    ..Route::default()
                }],
                ..VirtualHost::default()
            }],
            ..RouteConfiguration::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn route_needle_finds_that_weight_of_that_service() {
        let body = routes(4, 50);
        assert!(memchr::memmem::find(&body, &route_needle(4, 50)).is_some());
        assert!(memchr::memmem::find(&body, &route_needle(4, 80)).is_none());
        assert!(memchr::memmem::find(&routes(4, 80), &route_needle(4, 80)).is_some());
        assert!(memchr::memmem::find(&routes(40, 50), &route_needle(4, 50)).is_none());
    }
}
