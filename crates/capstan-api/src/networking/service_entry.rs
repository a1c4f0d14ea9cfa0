//! `ServiceEntry`: adds entries (external APIs, VMs, other registries) to Istio's service registry.

use super::WorkloadEntry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A service known to the mesh by host name(s), with ports, location, resolution and endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Host names of the service; a wildcard prefix (`*.example.com`) is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs (or CIDR prefixes) of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Whether the service is outside the mesh (default) or part of it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub location: ServiceEntryLocation,
    /// How the proxy resolves the endpoints' IP addresses.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resolution: ServiceEntryResolution,
    /// Endpoints of the service; at most one of `endpoints` and `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects pods or `WorkloadEntry` objects (MESH_INTERNAL services) by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<crate::common::NetworkingWorkloadSelector>,
    /// Namespaces the service is visible to (`.`, `*`, `~` or names); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Subject alternative names the server certificate must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a `ServiceEntry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number (1..65535).
    #[serde(default)]
    pub number: u32,
    /// Protocol on the port (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS...); empty to sniff.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port name (a DNS-1123 label), unique within the service entry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Port on the endpoints receiving the traffic; defaults to `number`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// Whether a `ServiceEntry` describes a service outside the mesh or inside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServiceEntryLocation {
    /// Outside the mesh (external APIs); the default.
    #[default]
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    /// Part of the mesh (for example VMs running a sidecar).
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// How the proxy resolves the addresses of a `ServiceEntry`'s endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServiceEntryResolution {
    /// Connections are already resolved to a destination IP; forward to it. The default.
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// Use the static IP addresses of the endpoints.
    #[serde(rename = "STATIC")]
    Static,
    /// Resolve the hosts (or endpoint addresses) with DNS and balance over all answers.
    #[serde(rename = "DNS")]
    Dns,
    /// Resolve with DNS and use only the first answer for each new connection.
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
    /// Resolve the name taken from the Host header or SNI (wildcard, MESH_EXTERNAL hosts only).
    #[serde(rename = "DYNAMIC_DNS")]
    DynamicDns,
}

impl ServiceEntryResolution {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceEntryResolution::None => "NONE",
            ServiceEntryResolution::Static => "STATIC",
            ServiceEntryResolution::Dns => "DNS",
            ServiceEntryResolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            ServiceEntryResolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}
