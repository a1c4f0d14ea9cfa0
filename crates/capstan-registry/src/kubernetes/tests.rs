//! Table tests of the pure conversions and of the cache's incremental bookkeeping.

use super::cache::{Cache, Dirty, Key};
use super::convert::{self, ConvertError, PodInfo, Slice};
use crate::index::RegistryState;
use crate::model::{Health, Locality, Protocol, Resolution};
use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn svc(name: &str, spec: Value) -> KubeService {
    obj(json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec}))
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Value) -> Slice {
    obj::<EndpointSlice>(json!({"metadata": {"name": name, "namespace": "ns",
        "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints}))
    .into()
}

fn pod(name: &str, node: &str, labels: Value, ips: &[&str]) -> Pod {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    obj(
        json!({"metadata": {"name": name, "namespace": "ns", "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": "sa", "containers": []},
        "status": {"podIPs": ips}}),
    )
}

fn node(name: &str, zone: &str, other: &str) -> Node {
    obj(json!({"metadata": {"name": name, "labels": {
        "topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": zone, "other": other}}}))
}

fn key(name: &str) -> Key {
    ("ns".into(), name.into())
}

/// (addresses, resolution, mesh_external) or the error.
type ServiceCase = (
    &'static str,
    Value,
    Result<(Vec<String>, Resolution, bool), ConvertError>,
);
/// A cache mutation.
type Step = Box<dyn Fn(&mut Cache) -> Dirty>;

#[test]
fn converts_services() {
    let cases: Vec<ServiceCase> = vec![
        (
            "dual-stack",
            json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"],
            "ports": [{"name": "http", "port": 80}]}),
            Ok((
                vec!["10.0.0.1".into(), "fd00::1".into()],
                Resolution::ClientSideLb,
                false,
            )),
        ),
        (
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            Ok((vec![], Resolution::Passthrough, false)),
        ),
        (
            "external",
            json!({"type": "ExternalName", "externalName": "example.com."}),
            Ok((vec![], Resolution::DnsLb, true)),
        ),
        (
            "no-external-name",
            json!({"type": "ExternalName"}),
            Err(ConvertError::MissingExternalName),
        ),
        (
            "bad-port",
            json!({"ports": [{"name": "x", "port": 70000}]}),
            Err(ConvertError::BadPort {
                name: "x".into(),
                number: 70000,
            }),
        ),
        (
            "zero-port",
            json!({"ports": [{"name": "x", "port": 0}]}),
            Err(ConvertError::BadPort {
                name: "x".into(),
                number: 0,
            }),
        ),
    ];
    for (name, spec, want) in cases {
        let got = convert::convert_service(&svc(name, spec), "cluster.local")
            .map(|s| (s.addresses, s.resolution, s.mesh_external));
        assert_eq!(got, want, "{name}");
    }
    let s = convert::convert_service(
        &obj(json!({"metadata": {"name": "a", "namespace": "ns",
        "annotations": {"networking.istio.io/exportTo": " ., other ,"}}, "spec": {"ports": [
        {"name": "web", "port": 81, "appProtocol": "http2"}, {"name": "grpc-x", "port": 80},
        {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
        "example.org",
    )
    .unwrap();
    assert_eq!(s.hostname, "a.ns.svc.example.org");
    assert_eq!(s.export_to, vec![".", "other"]);
    let ports: Vec<_> = s.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(
        ports,
        vec![
            (53, Protocol::Udp),
            (80, Protocol::Grpc),
            (81, Protocol::Http2)
        ]
    );
    let e = convert::convert_service(
        &svc(
            "e",
            json!({"type": "ExternalName", "externalName": "example.com."}),
        ),
        "c",
    )
    .unwrap();
    assert_eq!(e.external_name.as_deref(), Some("example.com"));
    assert_eq!(
        convert::convert_service(&obj(json!({"metadata": {"name": "x"}})), "c"),
        Err(ConvertError::MissingMetadata)
    );
}

#[test]
fn endpoints_from_slices() {
    let service = convert::convert_service(
        &svc(
            "a",
            json!({"clusterIP": "10.0.0.1",
        "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "tcp", "port": 90}]}),
        ),
        "cl",
    )
    .unwrap();
    let s = slice(
        "a-1",
        "a",
        json!([{"name": "http", "port": 8080}, {"name": "unknown", "port": 1}]),
        json!([
        {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "p1"}},
        {"addresses": ["10.1.0.2"], "conditions": {"ready": false}, "zone": "z9"},
        {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["01.2.3.4", "10.1.0.4"], "conditions": {"ready": true}}]),
    );
    let fqdn: Slice = obj::<EndpointSlice>(json!({"metadata": {"name": "a-f", "namespace": "ns"},
        "addressType": "FQDN", "ports": [{"name": "http", "port": 1}], "endpoints": [{"addresses": ["x.example"]}]}))
    .into();
    let lookup = |ns: &str, name: &str| {
        (ns == "ns" && name == "p1").then(|| PodInfo {
            name: "p1".into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
            tls_mode: "istio".into(),
            network: "n1".into(),
            locality: Some(Locality {
                region: "r".into(),
                zone: "z".into(),
                subzone: String::new(),
            }),
            ..PodInfo::default()
        })
    };
    let out = convert::service_output(&service, [&s, &fqdn], &lookup);
    assert_eq!(out.services.len(), 1);
    assert_eq!(
        out.endpoints.keys().cloned().collect::<Vec<_>>(),
        vec![("a.ns.svc.cl".to_string(), 80)]
    );
    let eps = &out.endpoints[&("a.ns.svc.cl".to_string(), 80)];
    let table: Vec<_> = eps
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.port,
                e.health,
                e.meta.locality.zone.as_str(),
                e.meta.tls_mode.as_str(),
            )
        })
        .collect();
    assert_eq!(
        table,
        vec![
            ("10.1.0.1", 8080, Health::Healthy, "z", "istio"),
            ("10.1.0.2", 8080, Health::Unhealthy, "z9", "disabled"),
            ("10.1.0.3", 8080, Health::Draining, "", "disabled"),
            ("10.1.0.4", 8080, Health::Healthy, "", "disabled"),
        ]
    );
    assert_eq!(
        (
            eps[0].meta.service_account.as_str(),
            eps[0].meta.network.as_str(),
            eps[0].meta.workload.as_str()
        ),
        ("sa", "n1", "p1")
    );
    // Pod-less endpoints of one zone share one description; another zone gets its own.
    assert!(std::sync::Arc::ptr_eq(&eps[2].meta, &eps[3].meta));
    assert!(!std::sync::Arc::ptr_eq(&eps[1].meta, &eps[2].meta));
}

#[test]
fn a_workloads_endpoints_share_its_description() {
    // Two ports of one Service, two addresses of one Pod: four endpoints, one description.
    let service = convert::convert_service(
        &svc(
            "a",
            json!({"clusterIP": "10.0.0.1",
        "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}]}),
        ),
        "cl",
    )
    .unwrap();
    let s = slice(
        "a-1",
        "a",
        json!([{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]),
        json!([{"addresses": ["10.1.0.1", "10.1.0.9"], "targetRef": {"kind": "Pod", "name": "p1"}}]),
    );
    let lookup = |_: &str, name: &str| {
        (name == "p1").then(|| PodInfo {
            name: "p1".into(),
            namespace: "ns".into(),
            labels: [("app".to_string(), "a".to_string())].into(),
            ..PodInfo::default()
        })
    };
    let out = convert::service_output(&service, [&s], &lookup);
    let all: Vec<_> = out.endpoints.values().flatten().collect();
    assert_eq!(all.len(), 4);
    assert!(all
        .iter()
        .all(|e| std::sync::Arc::ptr_eq(&e.meta, &all[0].meta)));
    assert_eq!(all[0].meta.labels["app"], "a");
}

#[test]
fn headless_per_endpoint_hosts() {
    let service = convert::convert_service(
        &svc(
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "tcp", "port": 5432}]}),
        ),
        "cl",
    )
    .unwrap();
    let s = slice(
        "db-1",
        "db",
        json!([{"name": "tcp", "port": 5432}]),
        json!([{"addresses": ["10.0.0.1"], "hostname": "db-0"}, {"addresses": ["10.0.0.2"]}]),
    );
    let out = convert::service_output(&service, [&s], &|_, _| None);
    assert_eq!(
        out.services.keys().collect::<Vec<_>>(),
        vec!["db-0.db.ns.svc.cl", "db.ns.svc.cl"]
    );
    assert_eq!(
        out.services["db-0.db.ns.svc.cl"].resolution,
        Resolution::ClientSideLb
    );
    assert_eq!(out.endpoints[&("db.ns.svc.cl".to_string(), 5432)].len(), 2);
    assert_eq!(
        out.endpoints[&("db-0.db.ns.svc.cl".to_string(), 5432)].len(),
        1
    );
}

#[test]
fn workloads_have_every_pod_ip() {
    let p = pod(
        "p",
        "n",
        json!({"topology.istio.io/network": "net"}),
        &["10.0.0.1", "fd00::1"],
    );
    let w = convert::workload(&p, Some(&node("n", "z", ""))).unwrap();
    assert_eq!(w.addresses, vec!["10.0.0.1", "fd00::1"]);
    assert_eq!(
        (
            w.network.as_str(),
            w.locality.zone.as_str(),
            w.service_account.as_str()
        ),
        ("net", "z", "sa")
    );
    assert!(convert::workload(&pod("q", "n", json!({}), &[]), None).is_none());
}

fn services(d: &Dirty) -> BTreeSet<String> {
    d.services.iter().map(|k| k.1.clone()).collect()
}

#[test]
fn cache_dirties_only_what_changed() {
    let mut c = Cache::new("cl");
    c.apply_node(node("n1", "z1", "a"));
    c.apply_pod(pod("p1", "n1", json!({}), &["10.0.0.1"]));
    c.apply_service(svc("a", json!({"ports": [{"name": "http", "port": 80}]})));
    c.apply_service(svc("b", json!({"ports": [{"name": "http", "port": 80}]})));
    let pod_ref = json!([{"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p1"}}]);
    let d = c.apply_slice(slice(
        "a-1",
        "a",
        json!([{"name": "http", "port": 80}]),
        pod_ref.clone(),
    ));
    assert_eq!(services(&d), BTreeSet::from(["a".to_string()]));
    assert!(d.pods.is_empty());
    // The pod is referenced by `a` only.
    let d = c.apply_pod(pod("p1", "n1", json!({"v": "2"}), &["10.0.0.1"]));
    assert_eq!(services(&d), BTreeSet::from(["a".to_string()]));
    assert_eq!(d.pods, BTreeSet::from([key("p1")]));
    // A node label that is not locality changes nothing; a zone change dirties its pods.
    assert_eq!(c.apply_node(node("n1", "z1", "b")), Dirty::default());
    let d = c.apply_node(node("n1", "z2", "b"));
    assert_eq!(
        (services(&d), d.pods.len()),
        (BTreeSet::from(["a".to_string()]), 1)
    );
    // Moving the slice to `b` dirties both; the reverse index follows.
    let d = c.apply_slice(slice(
        "a-1",
        "b",
        json!([{"name": "http", "port": 80}]),
        pod_ref,
    ));
    assert_eq!(
        services(&d),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    let d = c.apply_pod(pod("p1", "n1", json!({"v": "3"}), &["10.0.0.1"]));
    assert_eq!(services(&d), BTreeSet::from(["b".to_string()]));
    let d = c.delete_slice(&slice("a-1", "b", json!([]), json!([])));
    assert_eq!(services(&d), BTreeSet::from(["b".to_string()]));
    assert!(services(&c.apply_pod(pod("p1", "n1", json!({}), &["10.0.0.1"]))).is_empty());
}

#[test]
fn incremental_flushes_equal_a_full_build() {
    let mut c = Cache::new("cl");
    let mut state = RegistryState::default();
    let steps: Vec<Step> = vec![
        Box::new(|c| c.apply_node(node("n1", "z1", ""))),
        Box::new(|c| {
            c.apply_service(svc(
                "db",
                json!({"clusterIP": "None", "ports": [{"name": "t", "port": 1}]}),
            ))
        }),
        Box::new(|c| {
            c.apply_slice(slice("db-1", "db", json!([{"name": "t", "port": 2}]), json!([
            {"addresses": ["10.0.0.1"], "hostname": "h0", "targetRef": {"kind": "Pod", "name": "p1"}}])))
        }),
        Box::new(|c| {
            c.apply_pod(pod(
                "p1",
                "n1",
                json!({"app": "db"}),
                &["10.0.0.1", "10.0.0.9"],
            ))
        }),
        Box::new(|c| c.apply_node(node("n1", "z2", ""))),
        Box::new(|c| c.apply_service(svc("bad", json!({"ports": [{"name": "t", "port": -1}]})))),
        Box::new(|c| {
            c.apply_slice(slice("db-1", "db", json!([{"name": "t", "port": 2}]), json!([
            {"addresses": ["10.0.0.1"], "hostname": "h1", "targetRef": {"kind": "Pod", "name": "p1"}}])))
        }),
    ];
    for step in &steps {
        let d = step(&mut c);
        c.flush(&d, &mut state);
        let full = c.build();
        assert_eq!(state, full);
    }
    assert!(state.services.contains_key("h1.db.ns.svc.cl"));
    assert!(
        !state.services.contains_key("h0.db.ns.svc.cl"),
        "stale per-endpoint host removed"
    );
    assert!(
        !state.services.contains_key("bad.ns.svc.cl"),
        "malformed service skipped"
    );
    assert_eq!(
        state.endpoints[&("db.ns.svc.cl".to_string(), 1)][0]
            .meta
            .locality
            .zone,
        "z2"
    );
    assert_eq!(state.workloads["ns/p1"].addresses.len(), 2);
    let d = c.delete_service(&svc("db", json!({})));
    c.flush(&d, &mut state);
    assert_eq!(state.services.len(), 0);
    assert_eq!(state.endpoints.len(), 0);
}
