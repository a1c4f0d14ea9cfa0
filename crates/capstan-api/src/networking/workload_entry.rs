//! `WorkloadEntry` and `WorkloadGroup`: non-Kubernetes workloads (VMs, bare metal) in the mesh.
//! The `WorkloadEntry` message also describes the endpoints of a `ServiceEntry`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// A single non-Kubernetes workload (or a `ServiceEntry` endpoint): its address, ports and identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP address, fully qualified host name (DNS resolution only) or `unix:///absolute/path`;
    /// may be empty only when `network` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name to the port this workload listens on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// L3 network the workload lives in (endpoints of one network reach each other directly).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Failure domain such as `us/us-east-1/az-1/r11`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Load-balancing weight; higher weights get proportionally more traffic.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    /// Service account of the workload's sidecar, in the configuration's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// A template for `WorkloadEntry` objects created automatically as VMs join the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadGroup {
    /// Labels and annotations given to every generated `WorkloadEntry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMetadata>,
    /// The `WorkloadEntry` template (address and labels are filled in automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WorkloadEntry>,
    /// Readiness probe run by the VM's proxy against the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// The subset of Kubernetes metadata attached to generated `WorkloadEntry` objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadGroupMetadata {
    /// Labels to attach.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to attach.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Health checking of a VM workload, mirroring Kubernetes readiness probes.
/// Exactly one of `httpGet`, `tcpSocket`, `exec` or `grpc` must be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadinessProbe {
    /// Seconds after start before the first probe.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub initial_delay_seconds: i32,
    /// Seconds after which a probe times out.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub timeout_seconds: i32,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub period_seconds: i32,
    /// Consecutive successes needed to become ready after a failure.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub success_threshold: i32,
    /// Consecutive failures needed to become unready after a success.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub failure_threshold: i32,
    /// HTTP GET check: the status decides health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    /// TCP check: being able to connect means healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    /// Command check: exit status 0 means healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    /// gRPC health-checking protocol call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

/// An HTTP GET readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHealthCheckConfig {
    /// Path to request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Port to connect to.
    #[serde(default)]
    pub port: u32,
    /// Host to connect to (defaults to the workload IP; usually set a `Host` header instead).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    /// Headers sent with the request; repeats allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<ProbeHttpHeader>,
}

/// A header sent by an HTTP readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeHttpHeader {
    /// Header name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Header value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// A TCP connect readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpHealthCheckConfig {
    /// Host to connect to (defaults to localhost).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Port to connect to.
    #[serde(default)]
    pub port: u32,
}

/// A command readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecHealthCheckConfig {
    /// Command and arguments; exit status 0 is healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// A gRPC health-checking protocol readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcHealthCheckConfig {
    /// Port to connect to.
    #[serde(default)]
    pub port: u32,
    /// Fully qualified gRPC service name to check (empty for the server as a whole).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}
