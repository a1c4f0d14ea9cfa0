//! EDS: a ClusterLoadAssignment per EDS cluster, endpoints filtered by subset labels and
//! grouped by locality. Every locality carries a `locality` and a non-zero weight (gRPC drops
//! localities without one).

use super::common::{cluster_name, parse_outbound, socket, u32v};
use crate::context::cache::ByAddress;
use crate::context::{exported_to, ProxyScope, PushContext};
use crate::proxy::{Proxy, ProxyType};
use crate::resource::Resource;
use crate::{PushRequest, Subscription};
use capstan_registry::{Health, Locality, Resolution};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The assignment for one outbound cluster, or None when the cluster is not an EDS cluster of
/// a known service.
pub fn load_assignment(
    ctx: &PushContext,
    proxy: &Proxy,
    name: &str,
) -> Option<ClusterLoadAssignment> {
    let key = parse_outbound(name)?;
    let svc = ctx.services.service(key.host)?;
    if svc.resolution != Resolution::ClientSideLb || svc.port(key.port).is_none() {
        return None;
    }
    let empty = BTreeMap::new();
    let labels = if key.subset.is_empty() {
        &empty
    } else {
        let dr = ctx.destination_rule(proxy, key.host)?;
        &dr.spec
            .subsets
            .iter()
            .find(|s| s.name == key.subset)?
            .labels
    };
    let mut by_locality: BTreeMap<&Locality, (u32, Vec<LbEndpoint>)> = BTreeMap::new();
    for e in ctx.services.endpoints(key.host, key.port, labels) {
        let weight = e.weight.max(1);
        let health = match e.health {
            Health::Healthy => HealthStatus::Healthy,
            Health::Unhealthy => HealthStatus::Unhealthy,
            Health::Draining => HealthStatus::Draining,
        };
        let entry = by_locality.entry(&e.locality).or_default();
        entry.0 = entry.0.saturating_add(weight);
        entry.1.push(LbEndpoint {
            health_status: health as i32,
            load_balancing_weight: Some(u32v(weight)),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(&e.address, u32::from(e.port))),
                ..Endpoint::default()
            })),
            ..LbEndpoint::default()
        });
    }
    Some(ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(l, (weight, lb_endpoints))| LocalityLbEndpoints {
                locality: Some(EnvoyLocality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.subzone.clone(),
                }),
                load_balancing_weight: Some(u32v(weight.max(1))),
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    })
}

/// Every EDS cluster name in scope for a proxy (what a wildcard EDS request means).
fn all_names(ctx: &PushContext, proxy: &Proxy, scope: &ProxyScope) -> BTreeSet<Arc<str>> {
    let mut out = BTreeSet::new();
    for svc in &scope.services {
        if svc.resolution != Resolution::ClientSideLb {
            continue;
        }
        let dr = ctx.destination_rule(proxy, &svc.hostname);
        for p in &svc.ports {
            out.insert(cluster_name("outbound", p.port, "", &svc.hostname).into());
            for s in dr.iter().flat_map(|d| d.spec.subsets.iter()) {
                out.insert(cluster_name("outbound", p.port, &s.name, &svc.hostname).into());
            }
        }
    }
    out
}

/// The subscribed EDS cluster names of `hosts`.
fn changed_names(
    ctx: &PushContext,
    proxy: &Proxy,
    hosts: &BTreeSet<String>,
    sub: &Subscription,
) -> BTreeSet<Arc<str>> {
    let mut out = BTreeSet::new();
    for host in hosts {
        let Some(svc) = ctx.services.service(host) else {
            continue;
        };
        let dr = ctx.destination_rule(proxy, host);
        for p in &svc.ports {
            let subsets = std::iter::once("").chain(
                dr.iter()
                    .flat_map(|d| d.spec.subsets.iter().map(|s| s.name.as_str())),
            );
            for subset in subsets {
                let name = cluster_name("outbound", p.port, subset, host);
                if sub.wants(&name) {
                    out.insert(name.into());
                }
            }
        }
    }
    out
}

/// The shared assignment of one cluster: keyed by the DestinationRule only for subsets (the
/// rule's subset labels select the endpoints).
fn shared_assignment(ctx: &PushContext, proxy: &Proxy, name: &str) -> Option<Arc<Resource>> {
    let key = parse_outbound(name)?;
    let rule = if key.subset.is_empty() {
        None
    } else {
        ctx.destination_rule(proxy, key.host)
            .cloned()
            .map(ByAddress)
    };
    ctx.cache.endpoints(name, rule, || {
        load_assignment(ctx, proxy, name)
            .map(|cla| Resource::shared(cla.cluster_name.clone(), &cla))
    })
}

/// Assignments for the subscribed clusters; for a non-full push only those of `eds_hosts`.
pub fn generate(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    sub: &Subscription,
    push: &PushRequest,
) -> Vec<Arc<Resource>> {
    let all;
    let names = if !push.full {
        // Only the changed hosts' clusters, found from the hosts rather than by scanning
        // thousands of subscribed names.
        all = changed_names(ctx, proxy, &push.eds_hosts, sub);
        &all
    } else if sub.wildcard {
        all = all_names(ctx, proxy, scope);
        &all
    } else {
        &sub.names
    };
    names
        .iter()
        .filter(|name| {
            let Some(key) = parse_outbound(name) else {
                return false;
            };
            if !push.full && !push.eds_hosts.contains(key.host) {
                return false;
            }
            match proxy.proxy_type {
                ProxyType::Proxyless => ctx
                    .services
                    .service(key.host)
                    .is_some_and(|s| exported_to(&s.export_to, &s.namespace, &proxy.namespace)),
                _ => scope.contains(key.host),
            }
        })
        .filter_map(|name| shared_assignment(ctx, proxy, name))
        .collect()
}
