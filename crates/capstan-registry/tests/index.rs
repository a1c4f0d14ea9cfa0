//! The aggregate index: merging by hostname, coarse-grained services, multi-address workloads,
//! and events only for real changes.

use capstan_registry::file::parse;
use capstan_registry::{RegistryEvent, RegistryId, RegistryKind, ServiceIndex};
use std::collections::BTreeMap;

fn id(kind: RegistryKind, name: &str) -> RegistryId {
    RegistryId {
        kind,
        name: name.into(),
    }
}

const MESH: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 9080}]
  addresses: [10.96.0.12]
  endpoints:
  - {address: 10.1.0.5, labels: {app: reviews, version: v1}, workload: reviews-v1}
  - {address: 10.1.0.6, labels: {app: reviews, version: v2}, workload: reviews-v2}
# Coarse-grained: one process at 10.1.0.9:8080 serves three logical services.
- hostname: orders.shop
  ports: [{name: grpc, port: 8080}]
  endpoints: [{address: 10.1.0.9, workload: monolith}]
- hostname: payments.shop
  ports: [{name: grpc, port: 8080}]
  endpoints: [{address: 10.1.0.9, workload: monolith}]
- hostname: users.shop
  ports: [{name: http-api, port: 8080}]
  endpoints: [{address: 10.1.0.9, workload: monolith}]
workloads:
# A VM with two network interfaces.
- {name: vm-1, namespace: legacy, addresses: [10.2.0.1, 192.168.7.1], labels: {app: legacy}}
"#;

#[test]
fn answers_services_endpoints_subsets_and_workloads() {
    let index = ServiceIndex::new();
    index.replace(&id(RegistryKind::File, "f"), parse(MESH).unwrap());
    let snap = index.snapshot();
    assert_eq!(snap.service_count(), 4);
    let reviews = snap.service("reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.ports[0].protocol, capstan_registry::Protocol::Http);
    let v2: BTreeMap<String, String> = [("version".to_string(), "v2".to_string())].into();
    let addrs: Vec<&str> = snap
        .endpoints("reviews.default.svc.cluster.local", 9080, &v2)
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addrs, vec!["10.1.0.6"]);
    let none = BTreeMap::new();
    let all: Vec<&str> = snap
        .endpoints("reviews.default.svc.cluster.local", 9080, &none)
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(all, vec!["10.1.0.5", "10.1.0.6"]);

    let hosts: Vec<&String> = snap.services_at("10.1.0.9").collect();
    assert_eq!(hosts, vec!["orders.shop", "payments.shop", "users.shop"]);
    assert_eq!(snap.workload_by_ip("10.1.0.9").unwrap().name, "monolith");

    let vm = snap.workload_by_ip("192.168.7.1").unwrap();
    assert_eq!(vm.name, "vm-1");
    assert_eq!(snap.workload_by_ip("10.2.0.1").unwrap().name, "vm-1");
}

#[test]
fn a_no_op_relist_emits_nothing_and_a_change_emits_only_itself() {
    let index = ServiceIndex::new();
    let reg = id(RegistryKind::File, "f");
    assert!(!index.replace(&reg, parse(MESH).unwrap()).is_empty());
    let version = index.snapshot().version;
    assert!(
        index.replace(&reg, parse(MESH).unwrap()).is_empty(),
        "re-list of the same state must be silent"
    );
    assert_eq!(index.snapshot().version, version);

    let changed = MESH.replace(
        "{address: 10.1.0.6, labels: {app: reviews, version: v2}, workload: reviews-v2}",
        "{address: 10.1.0.7, labels: {app: reviews, version: v2}, workload: reviews-v2}",
    );
    let events = index.replace(&reg, parse(&changed).unwrap());
    assert_eq!(
        events,
        vec![
            RegistryEvent::EndpointsChanged("reviews.default.svc.cluster.local".into(), 9080),
            RegistryEvent::WorkloadChanged("10.1.0.6".into()),
            RegistryEvent::WorkloadChanged("10.1.0.7".into()),
        ]
    );
    assert!(index.snapshot().workload_by_ip("10.1.0.6").is_none());
    assert!(index.snapshot().services_at("10.1.0.6").next().is_none());
}

#[test]
fn higher_precedence_registry_defines_the_service_and_endpoints_merge() {
    let index = ServiceIndex::new();
    let file = "services:\n- hostname: web.shop\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 10.0.0.1}]\n";
    let se = "services:\n- hostname: web.shop\n  ports: [{name: tcp, port: 80}]\n  endpoints: [{address: 10.0.0.2}]\n";
    index.replace(&id(RegistryKind::File, "f"), parse(file).unwrap());
    let mut state = parse(se).unwrap();
    for s in state.services.values_mut() {
        s.registry = RegistryKind::ServiceEntry;
    }
    let events = index.replace(&id(RegistryKind::ServiceEntry, "se"), state);
    assert!(events.contains(&RegistryEvent::ServiceChanged("web.shop".into())));
    let snap = index.snapshot();
    let none = BTreeMap::new();
    assert_eq!(
        snap.service("web.shop").unwrap().registry,
        RegistryKind::ServiceEntry
    );
    assert_eq!(snap.endpoints("web.shop", 80, &none).count(), 2);

    let events = index.remove_registry(&id(RegistryKind::ServiceEntry, "se"));
    assert!(events.contains(&RegistryEvent::ServiceChanged("web.shop".into())));
    assert_eq!(
        index.snapshot().service("web.shop").unwrap().registry,
        RegistryKind::File
    );
    assert_eq!(index.snapshot().endpoints("web.shop", 80, &none).count(), 1);
}

#[tokio::test]
async fn file_registry_keeps_last_good_state_on_a_bad_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.yaml");
    std::fs::write(&path, MESH).unwrap();
    let index = ServiceIndex::new();
    let registry = capstan_registry::file::FileRegistry::new(path.clone());
    registry.sync(&index).unwrap();
    std::fs::write(&path, "services: [{hostname: x, ports: [{port: 0}]}]").unwrap();
    let err = registry.sync(&index).unwrap_err();
    assert!(err.contains("services[0].ports[0].port"), "{err}");
    assert_eq!(index.snapshot().service_count(), 4);
}
