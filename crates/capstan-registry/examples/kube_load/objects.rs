//! The synthetic mesh: Services with one port and one EndpointSlice each, and the churn
//! patches that move one endpoint to a new, never-used address.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The service port whose endpoints the benchmark tracks.
pub const PORT: u16 = 80;

/// Name of service `i`.
pub fn name(i: usize) -> String {
    format!("svc-{i}")
}

/// Hostname of service `i` in the index.
pub fn host(i: usize, namespace: &str) -> String {
    format!("{}.{namespace}.svc.cluster.local", name(i))
}

/// Initial address of endpoint `j` of service `i` (10.0.0.0/8, unique).
pub fn initial_address(i: usize, j: usize, per_service: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 0, 0, 0)) + 1 + (i * per_service + j) as u32
}

/// Address given by churn update `n` (11.0.0.0/8, unique per update).
pub fn churn_address(n: u64) -> u32 {
    u32::from(Ipv4Addr::new(11, 0, 0, 0)) + 1 + n as u32
}

/// Service `i`.
pub fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name(i)},
        "spec": {
            "selector": {"app": name(i)},
            "ports": [{"name": "http", "port": PORT, "targetPort": 8080}]
        }
    }))
    .expect("valid Service")
}

/// The `endpoints` array of a slice holding `addresses`.
pub fn endpoints(addresses: &[u32]) -> Value {
    Value::Array(
        addresses
            .iter()
            .map(|a| json!({"addresses": [Ipv4Addr::from(*a).to_string()], "conditions": {"ready": true}}))
            .collect(),
    )
}

/// The EndpointSlice of service `i`.
pub fn slice(i: usize, addresses: &[u32]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-slice", name(i)),
            "labels": {"kubernetes.io/service-name": name(i)}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(addresses)
    }))
    .expect("valid EndpointSlice")
}
