//! ServiceEntry, WorkloadEntry (and the WorkloadEntries a ServiceEntry selects) as a registry:
//! Istio's `serviceentry` controller. Pure: config objects in, registry state out; the caller
//! feeds the result to [`crate::ServiceIndex::replace`], which emits events only for what changed.

use crate::index::RegistryState;
use crate::model::{
    Endpoint, EndpointMeta, Health, Locality, Protocol, RegistryKind, Resolution, Service,
    ServicePort, Workload,
};
use capstan_api::networking::{
    ServiceEntry, ServiceEntryLocation, ServiceEntryResolution, WorkloadEntry,
};
use capstan_api::{IstioObject, Spec};

/// Label carrying a workload's TLS mode (`istio` when it runs a sidecar).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

fn resolution(r: ServiceEntryResolution) -> Resolution {
    match r {
        ServiceEntryResolution::Static => Resolution::ClientSideLb,
        ServiceEntryResolution::Dns | ServiceEntryResolution::DynamicDns => Resolution::DnsLb,
        ServiceEntryResolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
        ServiceEntryResolution::None => Resolution::Passthrough,
    }
}

fn endpoint_for(
    we: &WorkloadEntry,
    port: &capstan_api::networking::ServicePort,
    namespace: &str,
    workload: &str,
) -> Endpoint {
    // Target port: the WorkloadEntry's port of the same name, else the ServiceEntry port's
    // targetPort, else the port number itself (Istio's order).
    let target = we
        .ports
        .get(&port.name)
        .copied()
        .filter(|p| *p > 0)
        .or((port.target_port > 0).then_some(port.target_port))
        .unwrap_or(port.number);
    Endpoint {
        address: we.address.clone(),
        port: u16::try_from(target).unwrap_or_default(),
        service_port: u16::try_from(port.number).unwrap_or_default(),
        meta: std::sync::Arc::new(EndpointMeta {
            labels: we.labels.clone(),
            locality: Locality::parse(&we.locality),
            network: we.network.clone(),
            service_account: we.service_account.clone(),
            tls_mode: we
                .labels
                .get(TLS_MODE_LABEL)
                .cloned()
                .unwrap_or_else(|| "disabled".into()),
            workload: workload.to_string(),
            namespace: namespace.to_string(),
        }),
        weight: we.weight,
        health: Health::Healthy,
    }
}

/// Builds the ServiceEntry registry from every ServiceEntry and WorkloadEntry in `objects`.
/// When two ServiceEntries define one hostname, the first (in the given order) wins, as in
/// Istio, where the oldest wins.
pub fn from_config<'a>(objects: impl IntoIterator<Item = &'a IstioObject>) -> RegistryState {
    from_config_with_pods(objects, std::iter::empty())
}

/// A Kubernetes pod as a ServiceEntry's `workloadSelector` sees it.
struct Pod {
    namespace: String,
    name: String,
    entry: WorkloadEntry,
}

/// Like [`from_config`]; a ServiceEntry's `workloadSelector` also selects Kubernetes pods
/// (workloads of the Kubernetes registry) of its namespace, as Istio's ServiceEntry controller
/// does. Each selected pod contributes an endpoint at its first address.
pub fn from_config_with_pods<'a>(
    objects: impl IntoIterator<Item = &'a IstioObject>,
    workloads: impl IntoIterator<Item = &'a Workload>,
) -> RegistryState {
    let pods: Vec<Pod> = workloads
        .into_iter()
        .filter(|w| w.registry == RegistryKind::Kubernetes)
        .filter_map(|w| {
            let l = &w.locality;
            let locality = [l.region.as_str(), l.zone.as_str(), l.subzone.as_str()].join("/");
            Some(Pod {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                entry: WorkloadEntry {
                    address: w.addresses.first()?.clone(),
                    labels: w.labels.clone(),
                    locality: locality.trim_end_matches('/').to_string(),
                    network: w.network.clone(),
                    service_account: w.service_account.clone(),
                    ..WorkloadEntry::default()
                },
            })
        })
        .collect();
    let mut entries: Vec<(&IstioObject, &ServiceEntry)> = Vec::new();
    let mut workload_entries: Vec<(&IstioObject, &WorkloadEntry)> = Vec::new();
    for object in objects {
        match &object.spec {
            Spec::ServiceEntry(se) => entries.push((object, se)),
            Spec::WorkloadEntry(we) => workload_entries.push((object, we)),
            _ => {}
        }
    }
    let mut state = RegistryState::default();
    for (object, we) in &workload_entries {
        let meta = &object.metadata;
        state.workloads.insert(
            format!("{}/{}", meta.namespace, meta.name),
            Workload {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                addresses: if we.address.is_empty() {
                    Vec::new()
                } else {
                    vec![we.address.clone()]
                },
                labels: we.labels.clone(),
                service_account: we.service_account.clone(),
                locality: Locality::parse(&we.locality),
                network: we.network.clone(),
                registry: RegistryKind::ServiceEntry,
            },
        );
    }
    for (object, se) in entries {
        let namespace = object.metadata.namespace.as_str();
        let mut ports: Vec<ServicePort> = se
            .ports
            .iter()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone(),
                    port: u16::try_from(p.number).ok()?,
                    protocol: Protocol::parse(&p.protocol),
                })
            })
            .collect();
        ports.sort();
        // Endpoints: inline ones, then WorkloadEntries of the same namespace the selector picks.
        let mut instances: Vec<(&WorkloadEntry, String)> =
            se.endpoints.iter().map(|we| (we, String::new())).collect();
        if let Some(selector) = &se.workload_selector {
            for (weo, we) in &workload_entries {
                let selected = weo.metadata.namespace == namespace
                    && selector
                        .labels
                        .iter()
                        .all(|(k, v)| we.labels.get(k) == Some(v));
                if selected {
                    instances.push((we, weo.metadata.name.clone()));
                }
            }
            for pod in &pods {
                let selected = pod.namespace == namespace
                    && selector
                        .labels
                        .iter()
                        .all(|(k, v)| pod.entry.labels.get(k) == Some(v));
                if selected {
                    instances.push((&pod.entry, pod.name.clone()));
                }
            }
        }
        for host in &se.hosts {
            if state.services.contains_key(host) {
                tracing::warn!(%host, namespace, name = %object.metadata.name, "hostname already defined by another ServiceEntry; ignoring this one");
                continue;
            }
            state.services.insert(
                host.clone(),
                Service {
                    hostname: host.clone(),
                    namespace: namespace.to_string(),
                    ports: ports.clone(),
                    addresses: se.addresses.clone(),
                    labels: object.metadata.labels.clone(),
                    resolution: resolution(se.resolution),
                    mesh_external: se.location == ServiceEntryLocation::MeshExternal,
                    export_to: se.export_to.clone(),
                    registry: RegistryKind::ServiceEntry,
                    external_name: None,
                },
            );
            for port in &se.ports {
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let mut endpoints: Vec<Endpoint> = instances
                    .iter()
                    .map(|(we, workload)| endpoint_for(we, port, namespace, workload))
                    .collect();
                // DNS resolution without endpoints resolves the host itself (Istio does the same).
                if endpoints.is_empty()
                    && matches!(
                        se.resolution,
                        ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin
                    )
                    && !host.starts_with('*')
                {
                    let we = WorkloadEntry {
                        address: host.clone(),
                        ..WorkloadEntry::default()
                    };
                    endpoints.push(endpoint_for(&we, port, namespace, ""));
                }
                if !endpoints.is_empty() {
                    endpoints.sort();
                    state.endpoints.insert((host.clone(), number), endpoints);
                }
            }
        }
    }
    state
}
