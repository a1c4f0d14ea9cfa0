//! Pure conversion of Consul's `/v1/health/service/<name>` answer into the service model.
//!
//! Follows Istio's former in-tree Consul adapter (`pilot/pkg/serviceregistry/consul/conversion.go`,
//! removed in Istio 1.8) where it made a choice, and documents where Capstan differs:
//! - hostname `<service>.service.consul` (the suffix is configurable);
//! - one service port per distinct instance port (a Consul instance has exactly one port);
//!   Istio named the port after its protocol, defaulting to `tcp` — so does Capstan, adding
//!   `-<port>` when a service has several ports so that names stay unique;
//! - protocol: `ServiceMeta["protocol"]` (what Consul Connect uses), then a tag `protocol=<p>` or
//!   `protocol|<p>`, then `NodeMeta["protocol"]` (where Istio read it), else TCP (Istio's default);
//! - endpoint labels: tags of the form `key=value` or `key|value` (Istio's form), then
//!   `ServiceMeta`, which wins on conflicts; other tags are ignored, as in Istio;
//! - health: any critical check of the instance or its node (maintenance mode is a critical check)
//!   makes it Unhealthy; `warning` stays Healthy, as Consul's own DNS interface does by default;
//! - address: `Service.Address`, else `Node.Address`; the workload gets every tagged address of the
//!   service, and of the node when the instance uses the node's address (one workload, several
//!   addresses);
//! - locality: node meta `region`/`zone`/`subzone`, the region defaulting to the datacenter;
//! - identity: `ServiceMeta["serviceAccount"]`; network: node meta `network`.

use crate::index::EndpointKey;
use crate::model::{
    Endpoint, EndpointMeta, Health, Locality, Protocol, RegistryKind, Resolution, Service,
    ServicePort, Workload,
};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Label carrying a workload's TLS mode (Istio's `security.istio.io/tlsMode`).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Consul sends `null` for empty lists and maps; treat it as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One entry of `/v1/health/service/<name>`: an instance with its node and checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    /// The node the instance runs on.
    #[serde(default)]
    pub node: Node,
    /// The service instance.
    pub service: AgentService,
    /// Node-level and instance-level checks.
    #[serde(default, deserialize_with = "nullable")]
    pub checks: Vec<Check>,
}

/// A Consul node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// Node address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// `lan`, `wan`, `lan_ipv4`, ... → address.
    #[serde(default, deserialize_with = "nullable")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
}

/// A service instance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance id (unique on its node).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Address (empty: the node's).
    #[serde(default)]
    pub address: String,
    /// `lan_ipv4`, `wan_ipv4`, `lan_ipv6`, ... → address and port.
    #[serde(default, deserialize_with = "nullable")]
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    /// Service metadata.
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// DNS weights by health.
    #[serde(default, deserialize_with = "nullable")]
    pub weights: Weights,
}

/// A tagged address of a service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaggedAddress {
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Port.
    #[serde(default)]
    pub port: u16,
}

/// Consul's DNS weights.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while passing.
    #[serde(default)]
    pub passing: u32,
    /// Weight while warning.
    #[serde(default)]
    pub warning: u32,
}

/// A health check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    /// Check id.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    #[serde(default)]
    pub status: String,
    /// Instance the check belongs to; empty for node checks.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

/// Settings the conversion needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Hostname suffix (`service.consul`).
    pub domain: String,
    /// Namespace of the services and workloads.
    pub namespace: String,
    /// Datacenter used as region when the node names neither a region nor a datacenter.
    pub datacenter: String,
}

/// What one Consul service contributes to the registry state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceContribution {
    /// The service (None when it has no instances).
    pub service: Option<Service>,
    /// Endpoints by (hostname, port).
    pub endpoints: BTreeMap<EndpointKey, Vec<Endpoint>>,
    /// Workloads by `namespace/name`.
    pub workloads: BTreeMap<String, Workload>,
}

/// The hostname of Consul service `name`.
pub fn hostname(name: &str, domain: &str) -> String {
    format!("{name}.{domain}")
}

/// Parses a `/v1/health/service` body. Entries that do not decode are logged and skipped, so a
/// bad instance does not hide the good ones; a body that is not a JSON array is an error.
pub fn parse_entries(body: &[u8], service: &str) -> Result<Vec<HealthEntry>, serde_json::Error> {
    let raw: Vec<serde_json::Value> = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        match serde_json::from_value::<HealthEntry>(value) {
            Ok(entry) => out.push(entry),
            Err(error) => {
                tracing::warn!(service, entry = i, %error, "skipping malformed Consul health entry")
            }
        }
    }
    Ok(out)
}

/// Labels from tags `key=value` / `key|value`, then service meta (meta wins).
pub fn labels(tags: &[String], meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for tag in tags {
        if let Some((k, v)) = tag.split_once('=').or_else(|| tag.split_once('|')) {
            if !k.is_empty() {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// The protocol name an instance declares (lowercase), `tcp` if none.
fn protocol_name(entry: &HealthEntry, labels: &BTreeMap<String, String>) -> String {
    labels
        .get("protocol")
        .or_else(|| entry.node.meta.get("protocol"))
        .filter(|p| !p.is_empty())
        .map_or_else(|| "tcp".to_string(), |p| p.to_ascii_lowercase())
}

/// Health of an instance from its checks and its node's checks.
pub fn health(entry: &HealthEntry) -> Health {
    let relevant = entry
        .checks
        .iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == entry.service.id);
    if relevant
        .into_iter()
        .any(|c| matches!(c.status.as_str(), "critical" | "maintenance"))
    {
        Health::Unhealthy
    } else {
        Health::Healthy
    }
}

fn worst_is_warning(entry: &HealthEntry) -> bool {
    entry
        .checks
        .iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == entry.service.id)
        .any(|c| c.status == "warning")
}

/// Every address of an instance: the primary first, then the service's tagged addresses; when the
/// instance uses its node's address, the node's tagged addresses too (they are the same machine's,
/// whereas a service with its own address — a container — does not own its node's addresses).
pub fn addresses(entry: &HealthEntry) -> Vec<String> {
    let own = !entry.service.address.is_empty();
    let primary = if own {
        &entry.service.address
    } else {
        &entry.node.address
    };
    let node_tagged = entry.node.tagged_addresses.values().filter(|_| !own);
    let mut out: Vec<String> = Vec::new();
    let candidates = std::iter::once(primary)
        .chain(entry.service.tagged_addresses.values().map(|t| &t.address))
        .chain(node_tagged);
    for a in candidates {
        if !a.is_empty() && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

fn locality(entry: &HealthEntry, options: &ConvertOptions) -> Locality {
    let meta = &entry.node.meta;
    let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
    let mut region = get("region");
    if region.is_empty() {
        region = if entry.node.datacenter.is_empty() {
            options.datacenter.clone()
        } else {
            entry.node.datacenter.clone()
        };
    }
    Locality {
        region,
        zone: get("zone"),
        subzone: get("subzone"),
    }
}

/// Converts every instance of Consul service `name` into the service, its endpoints and its
/// workloads. Instances without an address or port are skipped with a warning.
pub fn convert(
    name: &str,
    entries: &[HealthEntry],
    options: &ConvertOptions,
) -> ServiceContribution {
    let host = hostname(name, &options.domain);
    let mut usable: Vec<&HealthEntry> = entries
        .iter()
        .filter(|e| {
            let ok = e.service.port != 0 && !addresses(e).is_empty();
            if !ok {
                tracing::warn!(service = name, instance = %e.service.id, node = %e.node.node,
                    "skipping Consul instance without address or port");
            }
            ok
        })
        .collect();
    // Deterministic output whatever order Consul lists instances in.
    usable.sort_by(|a, b| (&a.node.node, &a.service.id).cmp(&(&b.node.node, &b.service.id)));
    let mut out = ServiceContribution::default();
    if usable.is_empty() {
        return out;
    }
    // Port → protocol name: the first instance (in sorted order) that declares it wins.
    let mut port_protocols: BTreeMap<u16, String> = BTreeMap::new();
    for e in &usable {
        let labels = labels(&e.service.tags, &e.service.meta);
        let proto = protocol_name(e, &labels);
        match port_protocols.get(&e.service.port) {
            Some(existing) if *existing != proto => tracing::warn!(
                service = name, port = e.service.port, %existing, conflicting = %proto,
                "instances declare different protocols on one port; keeping the first"
            ),
            Some(_) => {}
            None => {
                port_protocols.insert(e.service.port, proto);
            }
        }
    }
    let multi = port_protocols.len() > 1;
    let ports: Vec<ServicePort> = port_protocols
        .iter()
        .map(|(port, proto)| ServicePort {
            name: if multi {
                format!("{proto}-{port}")
            } else {
                proto.clone()
            },
            port: *port,
            // An unknown name gives `Unknown`: the proxy sniffs the protocol.
            protocol: Protocol::parse(proto),
        })
        .collect();
    for e in &usable {
        let labels = labels(&e.service.tags, &e.service.meta);
        let addrs = addresses(e);
        let locality = locality(e, options);
        let service_account = e
            .service
            .meta
            .get("serviceAccount")
            .cloned()
            .unwrap_or_default();
        let network = e.node.meta.get("network").cloned().unwrap_or_default();
        let workload = format!("{}/{}", e.node.node, e.service.id);
        let weight = if worst_is_warning(e) {
            e.service.weights.warning
        } else {
            e.service.weights.passing
        };
        let endpoint = Endpoint {
            address: addrs[0].clone(),
            port: e.service.port,
            service_port: e.service.port,
            meta: std::sync::Arc::new(EndpointMeta {
                labels: labels.clone(),
                locality: locality.clone(),
                network: network.clone(),
                service_account: service_account.clone(),
                tls_mode: labels
                    .get(TLS_MODE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "disabled".into()),
                workload: workload.clone(),
                namespace: options.namespace.clone(),
            }),
            weight,
            health: health(e),
        };
        out.endpoints
            .entry((host.clone(), e.service.port))
            .or_default()
            .push(endpoint);
        out.workloads.insert(
            format!("{}/{workload}", options.namespace),
            Workload {
                name: workload,
                namespace: options.namespace.clone(),
                addresses: addrs,
                labels,
                service_account,
                locality,
                network,
                registry: RegistryKind::Consul,
            },
        );
    }
    for endpoints in out.endpoints.values_mut() {
        endpoints.sort();
    }
    out.service = Some(Service {
        hostname: host.clone(),
        namespace: options.namespace.clone(),
        ports,
        addresses: Vec::new(),
        labels: BTreeMap::new(),
        resolution: Resolution::ClientSideLb,
        mesh_external: false,
        export_to: Vec::new(),
        registry: RegistryKind::Consul,
        external_name: None,
    });
    out
}

#[cfg(test)]
mod tests;
