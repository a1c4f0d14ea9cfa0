//! Pure conversions from Kubernetes objects (Service, EndpointSlice, Pod, Node) to the Capstan
//! service model, following Istio's `serviceregistry/kube` conversion (`ConvertService`,
//! `endpointBuilder`). No I/O here: everything is unit-testable with literal objects.

use crate::index::EndpointKey;
use crate::model::{
    Endpoint, EndpointMeta, Health, Locality, Protocol, RegistryKind, Resolution, Service,
    ServicePort, Workload,
};
use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Label of an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation restricting which namespaces see it (Istio's `exportTo`).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// Pod label carrying the workload's TLS mode (`istio` with a sidecar).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Pod label naming the network the pod is on.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Node label: region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label: zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label: Istio subzone.
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// Why a Kubernetes object could not be converted (it is logged and skipped).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// The object has no name or namespace.
    #[error("object has no name or namespace")]
    MissingMetadata,
    /// The Service has no spec.
    #[error("service has no spec")]
    MissingSpec,
    /// A port number outside 1..=65535.
    #[error("port {name:?} has invalid number {number}")]
    BadPort {
        /// Port name.
        name: String,
        /// The offending number.
        number: i32,
    },
    /// An ExternalName Service without `externalName`.
    #[error("ExternalName service without spec.externalName")]
    MissingExternalName,
}

/// The hostname of a Service: `name.namespace.svc.<suffix>`.
pub fn hostname(name: &str, namespace: &str, suffix: &str) -> String {
    format!("{name}.{namespace}.svc.{suffix}")
}

fn port_number(name: &str, number: i32) -> Result<u16, ConvertError> {
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ConvertError::BadPort {
            name: name.to_string(),
            number,
        })
}

/// Converts a Service (Istio's `kube.ConvertService`).
pub fn convert_service(svc: &KubeService, suffix: &str) -> Result<Service, ConvertError> {
    let meta = &svc.metadata;
    let (Some(name), Some(namespace)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Err(ConvertError::MissingMetadata);
    };
    let spec = svc.spec.as_ref().ok_or(ConvertError::MissingSpec)?;
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let number = port_number(&port_name, p.port)?;
        // UDP/SCTP ports are not proxied; Istio still lists them, classified as UDP.
        let protocol = if p.protocol.as_deref() == Some("UDP") {
            Protocol::Udp
        } else {
            Protocol::for_port(p.app_protocol.as_deref(), &port_name)
        };
        ports.push(ServicePort {
            name: port_name,
            port: number,
            protocol,
        });
    }
    ports.sort();
    let is_external_name = spec.type_.as_deref() == Some("ExternalName");
    let external_name = if is_external_name {
        match spec.external_name.as_deref() {
            Some(n) if !n.is_empty() => Some(n.trim_end_matches('.').to_string()),
            _ => return Err(ConvertError::MissingExternalName),
        }
    } else {
        None
    };
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let addresses: Vec<String> = if is_external_name || headless {
        Vec::new()
    } else {
        // clusterIPs lists every family (dual stack); clusterIP is its first element.
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.clone().filter(|ip| !ip.is_empty()));
        }
        ips.retain(|ip| ip.parse::<IpAddr>().is_ok());
        ips
    };
    // Istio: ExternalName → DNS resolution of the alias, mesh external; headless →
    // passthrough (the caller picks the pod IP); else the proxy load-balances over EDS.
    let resolution = if is_external_name {
        Resolution::DnsLb
    } else if headless {
        Resolution::Passthrough
    } else {
        Resolution::ClientSideLb
    };
    let export_to = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Service {
        hostname: hostname(name, namespace, suffix),
        namespace: namespace.to_string(),
        ports,
        addresses,
        labels: meta.labels.clone().unwrap_or_default(),
        resolution,
        mesh_external: is_external_name,
        export_to,
        registry: RegistryKind::Kubernetes,
        external_name,
    })
}

/// Locality from a Node's topology labels.
pub fn node_locality(node: &Node) -> Locality {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    Locality {
        region: get(REGION_LABEL),
        zone: get(ZONE_LABEL),
        subzone: get(SUBZONE_LABEL),
    }
}

/// What an endpoint inherits from its Pod (and the Pod's Node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `security.istio.io/tlsMode` label, else `disabled`.
    pub tls_mode: String,
    /// `topology.istio.io/network` label.
    pub network: String,
    /// From the Node's labels; `None` when the Node is unknown.
    pub locality: Option<Locality>,
}

/// Extracts what endpoints and workloads need from a Pod and its Node (if known).
pub fn pod_info(pod: &Pod, node: Option<&Node>) -> PodInfo {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        tls_mode: labels
            .get(TLS_MODE_LABEL)
            .cloned()
            .unwrap_or_else(|| "disabled".into()),
        network: labels.get(NETWORK_LABEL).cloned().unwrap_or_default(),
        locality: node.map(node_locality),
        labels,
    }
}

/// The Pod's node name, if scheduled.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// A Pod with IPs as a workload: every `status.podIPs` entry (dual stack / multi-interface).
/// Pods without IPs (pending, host-less) are no workloads yet.
pub fn workload(pod: &Pod, node: Option<&Node>) -> Option<Workload> {
    let status = pod.status.as_ref()?;
    let mut addresses: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if addresses.is_empty() {
        addresses.extend(status.pod_ip.clone());
    }
    addresses.retain(|a| a.parse::<IpAddr>().is_ok());
    addresses.dedup();
    if addresses.is_empty() {
        return None;
    }
    let info = pod_info(pod, node);
    Some(Workload {
        name: info.name,
        namespace: info.namespace,
        addresses,
        labels: info.labels,
        service_account: info.service_account,
        locality: info.locality.unwrap_or_default(),
        network: info.network,
        registry: RegistryKind::Kubernetes,
    })
}

/// Everything one Kubernetes Service contributes to the registry: its own hostname and, for
/// headless services, one hostname per slice endpoint with `hostname` set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOutput {
    /// Services by hostname.
    pub services: BTreeMap<String, Service>,
    /// Endpoints by (hostname, service port), sorted.
    pub endpoints: BTreeMap<EndpointKey, Vec<Endpoint>>,
}

/// Health of a slice endpoint. Terminating wins over not-ready (a terminating pod is also
/// not ready): Istio keeps terminating endpoints as DRAINING (sent only for persistent
/// sessions), not-ready ones as UNHEALTHY.
fn health(conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> Health {
    match conditions {
        Some(c) if c.terminating == Some(true) => Health::Draining,
        Some(c) if c.ready == Some(false) => Health::Unhealthy,
        _ => Health::Healthy,
    }
}

/// What the registry reads of an EndpointSlice, kept instead of the object: the watched
/// object's per-endpoint struct alone is ~360 bytes (every optional field of the API), most
/// of it `None`, and the watch list grows the endpoint list to the next power of two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slice {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The Service it belongs to (the `kubernetes.io/service-name` label).
    pub service: Option<String>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// `ports`: (name, number).
    pub ports: Box<[(Option<String>, Option<i32>)]>,
    /// `endpoints`.
    pub endpoints: Box<[SliceEndpoint]>,
}

/// What the registry reads of one EndpointSlice endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// `addresses`.
    pub addresses: Box<[String]>,
    /// From `conditions`.
    pub health: Health,
    /// `hostname` (headless services' per-pod hosts).
    pub hostname: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `targetRef` when it names a Pod: (namespace if given, name).
    pub pod: Option<(Option<String>, String)>,
}

impl From<EndpointSlice> for Slice {
    fn from(slice: EndpointSlice) -> Slice {
        let meta = slice.metadata;
        Slice {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            service: meta.labels.and_then(|mut l| l.remove(SERVICE_NAME_LABEL)),
            address_type: slice.address_type,
            ports: slice
                .ports
                .into_iter()
                .flatten()
                .map(|p| (p.name, p.port))
                .collect(),
            endpoints: slice
                .endpoints
                .into_iter()
                .flatten()
                .map(|e| SliceEndpoint {
                    health: health(e.conditions.as_ref()),
                    addresses: e.addresses.into(),
                    hostname: e.hostname,
                    zone: e.zone,
                    pod: e
                        .target_ref
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| Some((r.namespace, r.name?))),
                })
                .collect(),
        }
    }
}

/// A Pod reduced to what [`pod_info`], [`pod_node`] and [`workload`] read (name, namespace,
/// labels, node, service account, IPs): Pod specs and statuses are large and the registry
/// keeps every Pod of the cluster.
pub fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        ..Default::default()
    };
    pod.spec = pod
        .spec
        .take()
        .map(|spec| k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name,
            service_account_name: spec.service_account_name,
            ..Default::default()
        });
    pod.status = pod
        .status
        .take()
        .map(|status| k8s_openapi::api::core::v1::PodStatus {
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            ..Default::default()
        });
}

/// A Node reduced to its name and the locality labels [`node_locality`] reads.
pub fn strip_node(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    let labels = meta.labels.map(|labels| {
        labels
            .into_iter()
            .filter(|(k, _)| [REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL].contains(&k.as_str()))
            .collect()
    });
    *node = Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: meta.name,
            labels,
            ..Default::default()
        },
        ..Default::default()
    };
}

/// Builds a Service's output from the converted service and its EndpointSlices.
/// `pod` looks up a Pod (namespace, name) referenced by an endpoint's `targetRef`.
/// Bad addresses are logged and skipped; FQDN slices are ignored (as in Istio).
pub fn service_output<'a>(
    service: &Service,
    slices: impl IntoIterator<Item = &'a Slice>,
    pod: &dyn Fn(&str, &str) -> Option<PodInfo>,
) -> ServiceOutput {
    let mut out = ServiceOutput::default();
    out.services
        .insert(service.hostname.clone(), service.clone());
    if let Some(external) = &service.external_name {
        // ExternalName: one DNS endpoint per port, at the aliased name.
        for p in &service.ports {
            let ep = Endpoint {
                address: external.clone(),
                port: p.port,
                service_port: p.port,
                meta: Arc::new(EndpointMeta {
                    tls_mode: "disabled".into(),
                    namespace: service.namespace.clone(),
                    ..EndpointMeta::default()
                }),
                weight: 0,
                health: Health::Healthy,
            };
            out.endpoints
                .insert((service.hostname.clone(), p.port), vec![ep]);
        }
        return out;
    }
    let headless = service.addresses.is_empty();
    // Endpoints without a Pod share one description per zone.
    let mut podless: Vec<(Option<&str>, Arc<EndpointMeta>)> = Vec::new();
    for slice in slices {
        let slice_name = slice.name.as_str();
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            tracing::debug!(slice = slice_name, address_type = %slice.address_type, "ignoring non-IP EndpointSlice");
            continue;
        }
        // One shared description per slice endpoint, for all of its ports.
        let metas: Vec<Arc<EndpointMeta>> = slice
            .endpoints
            .iter()
            .map(|ep| endpoint_meta(service, ep, pod, &mut podless))
            .collect();
        for (port_name, port_number) in slice.ports.iter() {
            let port_name = port_name.as_deref().unwrap_or("");
            // The slice carries the resolved target port; its name is the Service port's name,
            // which is how a named targetPort is matched.
            let Some(svc_port) = service.ports.iter().find(|p| p.name == port_name) else {
                continue;
            };
            let Some(target) = port_number
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
            else {
                tracing::warn!(slice = slice_name, port = port_name, number = ?port_number, "EndpointSlice port has no valid number; skipped");
                continue;
            };
            for (ep, meta) in slice.endpoints.iter().zip(&metas) {
                for address in ep.addresses.iter() {
                    if address.parse::<IpAddr>().is_err() {
                        tracing::warn!(service = %service.hostname, slice = slice_name, address, "EndpointSlice has an invalid address; skipped");
                        continue;
                    }
                    let endpoint = Endpoint {
                        address: address.clone(),
                        port: target,
                        service_port: svc_port.port,
                        meta: Arc::clone(meta),
                        weight: 0,
                        health: ep.health,
                    };
                    if headless {
                        if let Some(h) = ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                            // StatefulSet pods: `<pod-hostname>.<svc>.<ns>.svc.<suffix>`.
                            let host = format!("{h}.{}", service.hostname);
                            out.services.entry(host.clone()).or_insert_with(|| Service {
                                hostname: host.clone(),
                                resolution: Resolution::ClientSideLb,
                                ..service.clone()
                            });
                            out.endpoints
                                .entry((host, svc_port.port))
                                .or_default()
                                .push(endpoint.clone());
                        }
                    }
                    out.endpoints
                        .entry((service.hostname.clone(), svc_port.port))
                        .or_default()
                        .push(endpoint);
                }
            }
        }
    }
    for eps in out.endpoints.values_mut() {
        eps.sort();
        eps.dedup();
    }
    out
}

/// What is known about the workload behind a slice endpoint: its Pod's labels, identity and
/// Node locality, or (no Pod known) the service's namespace, `disabled` TLS and the slice's
/// zone, shared by every Pod-less endpoint of the zone.
fn endpoint_meta<'s>(
    service: &Service,
    ep: &'s SliceEndpoint,
    pod: &dyn Fn(&str, &str) -> Option<PodInfo>,
    podless: &mut Vec<(Option<&'s str>, Arc<EndpointMeta>)>,
) -> Arc<EndpointMeta> {
    let info = ep
        .pod
        .as_ref()
        .and_then(|(ns, name)| pod(ns.as_deref().unwrap_or(&service.namespace), name));
    let zone = ep.zone.as_deref();
    let Some(info) = info else {
        if let Some((_, meta)) = podless.iter().find(|(z, _)| *z == zone) {
            return Arc::clone(meta);
        }
        let meta = Arc::new(EndpointMeta {
            locality: Locality {
                zone: zone.unwrap_or_default().to_string(),
                ..Locality::default()
            },
            tls_mode: "disabled".into(),
            namespace: service.namespace.clone(),
            ..EndpointMeta::default()
        });
        podless.push((zone, Arc::clone(&meta)));
        return meta;
    };
    Arc::new(EndpointMeta {
        locality: info.locality.unwrap_or_else(|| Locality {
            zone: zone.unwrap_or_default().to_string(),
            ..Locality::default()
        }),
        labels: info.labels,
        network: info.network,
        service_account: info.service_account,
        tls_mode: info.tls_mode,
        workload: info.name,
        namespace: if info.namespace.is_empty() {
            service.namespace.clone()
        } else {
            info.namespace
        },
    })
}
