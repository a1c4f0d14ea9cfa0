//! `/clusters` in Envoy's text format: `<cluster>::<key>::<value>` for each active cluster, and
//! `<cluster>::<host:port>::<stat>::<value>` for each of its endpoints.
//!
//! Endpoints and their health are read from the EDS assignment (or the cluster's inline
//! `load_assignment`) as received; per-host request and connection counts need an accessor on
//! the cluster runtime and are not shown yet.

use super::AdminState;
use crate::resources::{CLUSTER, ENDPOINT};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use prost::Message;
use std::fmt::Write;

/// Envoy's `health_flags` for an EDS health status.
fn health_flags(status: i32) -> &'static str {
    match HealthStatus::try_from(status) {
        Ok(HealthStatus::Unhealthy) | Ok(HealthStatus::Timeout) => "/failed_eds_health",
        Ok(HealthStatus::Degraded) => "/degraded_eds_health",
        Ok(HealthStatus::Draining) => "/pending_dynamic_removal",
        _ => "healthy",
    }
}

fn hosts(out: &mut String, name: &str, cla: &ClusterLoadAssignment) {
    for locality in &cla.endpoints {
        let (region, zone, sub_zone) = locality
            .locality
            .as_ref()
            .map(|l| (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()))
            .unwrap_or_default();
        for e in &locality.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                continue;
            };
            let host = match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => {
                        if sa.address.contains(':') {
                            format!("[{}]:{p}", sa.address)
                        } else {
                            format!("{}:{p}", sa.address)
                        }
                    }
                    _ => sa.address.clone(),
                },
                Some(address::Address::Pipe(p)) => format!("unix://{}", p.path),
                _ => continue,
            };
            let weight = e.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            let _ = writeln!(
                out,
                "{name}::{host}::health_flags::{}",
                health_flags(e.health_status)
            );
            let _ = writeln!(out, "{name}::{host}::weight::{weight}");
            let _ = writeln!(out, "{name}::{host}::region::{region}");
            let _ = writeln!(out, "{name}::{host}::zone::{zone}");
            let _ = writeln!(out, "{name}::{host}::sub_zone::{sub_zone}");
            let _ = writeln!(out, "{name}::{host}::canary::false");
            let _ = writeln!(out, "{name}::{host}::priority::{}", locality.priority);
        }
    }
}

/// The whole `/clusters` page.
pub fn render(state: &AdminState) -> String {
    let snapshot = state.store.snapshot();
    let raw_clusters = state.store.raw(CLUSTER);
    let raw_endpoints = state.store.raw(ENDPOINT);
    let mut names: Vec<&String> = snapshot.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let _ = writeln!(out, "{name}::added_via_api::true");
        let proto = raw_clusters
            .get(name)
            .and_then(|r| Cluster::decode(r.resource.value.as_slice()).ok());
        let Some(proto) = proto else { continue };
        let inline = proto.load_assignment.clone();
        let eds = proto.eds_cluster_config.as_ref().map(|e| {
            if e.service_name.is_empty() {
                name.clone()
            } else {
                e.service_name.clone()
            }
        });
        let cla = match eds {
            Some(service) => raw_endpoints
                .get(&service)
                .and_then(|r| ClusterLoadAssignment::decode(r.resource.value.as_slice()).ok()),
            None => inline,
        };
        if let Some(cla) = cla {
            hosts(&mut out, name, &cla);
        }
    }
    out
}
