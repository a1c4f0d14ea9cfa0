//! ServiceEntry and WorkloadEntry config become services, endpoints and workloads.

use capstan_api::{check_text, CheckOptions, IstioObject};
use capstan_registry::serviceentry::from_config;
use capstan_registry::{RegistryId, RegistryKind, Resolution, ServiceIndex};
use std::collections::BTreeMap;

fn objects(yaml: &str) -> Vec<IstioObject> {
    check_text(yaml, &CheckOptions::default())
        .into_iter()
        .map(|r| {
            *r.object
                .unwrap_or_else(|| panic!("fixture must be valid: {:?}", r.errors))
        })
        .collect()
}

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-svc, namespace: legacy}
spec:
  hosts: [mysqldb.legacy.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: 3306, name: mysql, protocol: MySQL, targetPort: 3307}
  resolution: STATIC
  workloadSelector:
    labels: {app: mysql}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: legacy}
spec:
  hosts: [cache.legacy.internal]
  location: MESH_INTERNAL
  ports:
  - {number: 6379, name: redis, protocol: Redis}
  resolution: STATIC
  endpoints:
  - {address: 10.3.0.1, labels: {app: cache}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: legacy}
spec:
  address: 10.3.0.2
  labels: {app: mysql, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: mysql
  ports: {mysql: 3308}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-ns, namespace: elsewhere}
spec:
  address: 10.3.0.3
  labels: {app: mysql}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: google, namespace: default}
spec:
  hosts: [www.google.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
"#;

#[test]
fn service_entries_select_workload_entries_in_their_namespace() {
    let state = from_config(&objects(CONFIG));
    let svc = &state.services["mysqldb.legacy.svc.cluster.local"];
    assert_eq!(svc.resolution, Resolution::ClientSideLb);
    assert!(!svc.mesh_external);
    let eps = &state.endpoints[&("mysqldb.legacy.svc.cluster.local".to_string(), 3306)];
    let got: Vec<(&str, u16, &str)> = eps
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.meta.tls_mode.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("10.3.0.2", 3308, "istio")],
        "selected in its namespace, not the other namespace's"
    );
    let cache = &state.endpoints[&("cache.legacy.internal".to_string(), 6379)];
    let got: Vec<(&str, u16, &str)> = cache
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.meta.tls_mode.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("10.3.0.1", 6379, "disabled")],
        "inline endpoint, service port as target port"
    );
    assert_eq!(
        state.workloads["legacy/vm-1"].addresses,
        vec!["10.3.0.2".to_string()]
    );
}

#[test]
fn dns_entries_without_endpoints_resolve_their_host() {
    let state = from_config(&objects(CONFIG));
    let google = &state.services["www.google.com"];
    assert!(google.mesh_external);
    assert_eq!(google.resolution, Resolution::DnsLb);
    assert_eq!(
        state.endpoints[&("www.google.com".to_string(), 443)][0].address,
        "www.google.com"
    );
}

#[test]
fn recomputing_after_an_unrelated_change_emits_nothing() {
    let index = ServiceIndex::new();
    let id = RegistryId {
        kind: RegistryKind::ServiceEntry,
        name: "config".into(),
    };
    let objs = objects(CONFIG);
    assert!(!index.replace(&id, from_config(&objs)).is_empty());
    assert!(index.replace(&id, from_config(&objs)).is_empty());
    let edited = objects(&CONFIG.replace("ports: {mysql: 3308}", "ports: {mysql: 3309}"));
    let events = index.replace(&id, from_config(&edited));
    assert_eq!(
        events,
        vec![capstan_registry::RegistryEvent::EndpointsChanged(
            "mysqldb.legacy.svc.cluster.local".into(),
            3306
        )]
    );
    let none = BTreeMap::new();
    assert!(index
        .snapshot()
        .endpoints("mysqldb.legacy.svc.cluster.local", 3306, &none)
        .any(|e| e.port == 3309));
}

#[test]
fn workload_selectors_also_select_kubernetes_pods_of_their_namespace() {
    let config = objects(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: legacy}\nspec:\n  hosts: [db.legacy.internal]\n  location: MESH_INTERNAL\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP, targetPort: 15432}]\n  resolution: STATIC\n  workloadSelector:\n    labels: {app: db}\n",
    );
    let pod = |name: &str, ns: &str, ip: &str, app: &str| capstan_registry::Workload {
        name: name.into(),
        namespace: ns.into(),
        addresses: vec![ip.into(), format!("fd00::{}", name.len())],
        labels: [("app".to_string(), app.to_string())].into(),
        service_account: "db".into(),
        locality: capstan_registry::Locality::parse("r/z"),
        network: String::new(),
        registry: RegistryKind::Kubernetes,
    };
    let workloads = [
        pod("db-0", "legacy", "10.9.0.1", "db"),
        pod("db-x", "other", "10.9.0.2", "db"),
        pod("web-0", "legacy", "10.9.0.3", "web"),
    ];
    let state = capstan_registry::serviceentry::from_config_with_pods(&config, workloads.iter());
    let eps = &state.endpoints[&("db.legacy.internal".to_string(), 5432)];
    let got: Vec<(&str, u16, &str)> = eps
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.meta.workload.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("10.9.0.1", 15432, "db-0")],
        "only the matching pod of the same namespace, at its first address"
    );
    assert_eq!(eps[0].meta.locality.zone, "z");
}
