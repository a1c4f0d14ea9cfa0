//! EDS: a ClusterLoadAssignment per EDS cluster, endpoints filtered by subset labels and
//! grouped by locality. Every locality carries a `locality` and a non-zero weight (gRPC drops
//! localities without one).

use super::cds_tls::{istio_tls_mode, TRANSPORT_SOCKET_MATCH};
use super::common::{cluster_name, parse_outbound, socket, u32v};
use super::locality_lb;
use crate::context::cache::ByAddress;
use crate::context::ConfigEntry;
use crate::context::{exported_to, ProxyScope, PushContext};
use crate::proxy::{Proxy, ProxyType};
use crate::resource::Resource;
use crate::{NameSet, PushRequest, Subscription};
use capstan_api::networking::{ClientTlsMode, DestinationRule, Subset, TrafficPolicy};
use capstan_registry::{Endpoint as RegistryEndpoint, Health, Locality, Resolution};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The TLS mode a client's rule sets for a port: the policy's, overridden by its port-level
/// setting (Istio's `trafficPolicyTLSModeForPort`).
fn rule_tls_mode(policy: Option<&TrafficPolicy>, port: u16) -> Option<ClientTlsMode> {
    let policy = policy?;
    policy
        .port_level_settings
        .iter()
        .find(|pl| pl.port.is_some_and(|p| p.number == u32::from(port)) && pl.tls.is_some())
        .and_then(|pl| pl.tls.as_deref())
        .or(policy.tls.as_deref())
        .map(|t| t.mode)
}

/// Which endpoints of a cluster get `envoy.transport_socket_match: {tlsMode: ...}` metadata, so
/// that auto mTLS picks ISTIO_MUTUAL for them (Istio's endpoint builder with its mtlsChecker,
/// `ENABLE_AUTO_MTLS_CHECK_POLICIES`): endpoints with a sidecar (`tlsMode: istio`), unless
/// the DestinationRule turns TLS off for them (its subset for the endpoint's labels, else its
/// top level; port-level settings first) or the endpoint's own PeerAuthentication (workload
/// and port level included) is DISABLE. A rule saying ISTIO_MUTUAL keeps the label as it is.
struct EndpointTls<'a> {
    ctx: &'a PushContext,
    /// The rule's top-level mode for the port.
    root: Option<ClientTlsMode>,
    subsets: &'a [Subset],
    port: u16,
    label: Metadata,
}

impl<'a> EndpointTls<'a> {
    fn new(ctx: &'a PushContext, dr: Option<&'a ConfigEntry<DestinationRule>>, port: u16) -> Self {
        let spec = dr.map(|d| &d.spec);
        EndpointTls {
            ctx,
            root: rule_tls_mode(spec.and_then(|d| d.traffic_policy.as_deref()), port),
            subsets: spec.map_or(&[], |d| &d.subsets[..]),
            port,
            label: Metadata {
                filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), istio_tls_mode())]
                    .into_iter()
                    .collect(),
                ..Metadata::default()
            },
        }
    }

    /// The rule's mode for one endpoint (Istio's `tlsModeForDestinationRule`).
    fn rule_mode(&self, e: &RegistryEndpoint) -> Option<ClientTlsMode> {
        match self
            .subsets
            .iter()
            .find(|s| crate::context::selects(&s.labels, &e.meta.labels))
        {
            Some(s) => rule_tls_mode(s.traffic_policy.as_deref(), self.port).or(self.root),
            None => self.root,
        }
    }

    fn metadata(&self, e: &RegistryEndpoint) -> Option<Metadata> {
        match self.rule_mode(e) {
            Some(ClientTlsMode::Disable) => return None,
            Some(ClientTlsMode::IstioMutual) => {
                return (!e.meta.tls_mode.is_empty() && e.meta.tls_mode != "disabled")
                    .then(|| self.with_mode(&e.meta.tls_mode));
            }
            _ => {}
        }
        if e.meta.tls_mode != super::cds_tls::ISTIO_TLS_MODE {
            return None;
        }
        if self.ctx.has_peer_authentications() {
            let mode = self
                .ctx
                .workload_mtls(&e.meta.namespace, &e.meta.labels)
                .for_port(e.port);
            if mode == crate::context::MutualTlsMode::Disable {
                return None;
            }
        }
        Some(self.label.clone())
    }

    fn with_mode(&self, mode: &str) -> Metadata {
        if mode == super::cds_tls::ISTIO_TLS_MODE {
            return self.label.clone();
        }
        let fields = [(
            super::cds_tls::TLS_MODE_KEY.to_string(),
            Value {
                kind: Some(value::Kind::StringValue(mode.to_string())),
            },
        )];
        Metadata {
            filter_metadata: [(
                TRANSPORT_SOCKET_MATCH.to_string(),
                Struct {
                    fields: fields.into_iter().collect(),
                },
            )]
            .into_iter()
            .collect(),
            ..Metadata::default()
        }
    }
}

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
    // The rule matters for subsets and for TLS; most look-ups need neither.
    let dr = if key.subset.is_empty() && !ctx.index.tls_rules {
        None
    } else {
        ctx.destination_rule(proxy, key.host)
    };
    let labels = if key.subset.is_empty() {
        &empty
    } else {
        &dr?.spec
            .subsets
            .iter()
            .find(|s| s.name == key.subset)?
            .labels
    };
    let tls = EndpointTls::new(ctx, dr.map(|d| &**d), key.port);
    let mut by_locality: BTreeMap<&Locality, (u32, Vec<LbEndpoint>)> = BTreeMap::new();
    for e in ctx.services.endpoints(key.host, key.port, labels) {
        let weight = e.weight.max(1);
        let health = match e.health {
            Health::Healthy => HealthStatus::Healthy,
            Health::Unhealthy => HealthStatus::Unhealthy,
            Health::Draining => HealthStatus::Draining,
        };
        let entry = by_locality.entry(&e.meta.locality).or_default();
        entry.0 = entry.0.saturating_add(weight);
        entry.1.push(LbEndpoint {
            metadata: tls.metadata(e),
            health_status: health as i32,
            load_balancing_weight: Some(u32v(weight)),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(&e.address, u32::from(e.port))),
                ..Endpoint::default()
            })),
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
fn all_names(ctx: &PushContext, proxy: &Proxy, scope: &ProxyScope) -> NameSet {
    let mut out = Vec::new();
    for svc in &scope.services {
        if svc.resolution != Resolution::ClientSideLb {
            continue;
        }
        let dr = ctx.destination_rule(proxy, &svc.hostname);
        for p in &svc.ports {
            out.push(cluster_name("outbound", p.port, "", &svc.hostname).into());
            for s in dr.iter().flat_map(|d| d.spec.subsets.iter()) {
                out.push(cluster_name("outbound", p.port, &s.name, &svc.hostname).into());
            }
        }
    }
    out.into_iter().collect()
}

/// The assignments of every EDS cluster of `host` as this proxy gets them (its
/// DestinationRule's subsets, its locality), shared by the proxies that get the same.
fn host_assignments(ctx: &PushContext, proxy: &Proxy, host: &str) -> Arc<[Arc<Resource>]> {
    let dr = ctx.destination_rule(proxy, host);
    let rule = dr.cloned().map(ByAddress);
    ctx.cache.host_endpoints(host, rule, &proxy.locality, || {
        let Some(svc) = ctx.services.service(host) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in &svc.ports {
            let subsets = std::iter::once("").chain(
                dr.iter()
                    .flat_map(|d| d.spec.subsets.iter().map(|s| s.name.as_str())),
            );
            for subset in subsets {
                let name = cluster_name("outbound", p.port, subset, host);
                out.extend(shared_assignment(ctx, proxy, &name));
            }
        }
        out
    })
}

/// The shared assignment of one cluster, keyed by the DestinationRule for subsets (the rule's
/// subset labels select the endpoints) and, with locality failover, by the rule and the
/// proxy's locality.
fn shared_assignment(ctx: &PushContext, proxy: &Proxy, name: &str) -> Option<Arc<Resource>> {
    let key = parse_outbound(name)?;
    // The rule matters only for subsets, locality failover (rules with outlier detection) and
    // TLS; most look-ups need none.
    let dr = if key.subset.is_empty() && !ctx.index.failover_rules && !ctx.index.tls_rules {
        None
    } else {
        ctx.destination_rule(proxy, key.host)
    };
    // As istiod, failover applies whether or not the proxy's locality is known.
    let failover = dr.and_then(|d| locality_lb::failover(d, key.subset, key.port));
    let rule = if key.subset.is_empty() && failover.is_none() && !ctx.index.tls_rules {
        None
    } else {
        dr.cloned().map(ByAddress)
    };
    let locality = failover.is_some().then(|| proxy.locality.clone());
    ctx.cache.endpoints(name, rule, locality, || {
        load_assignment(ctx, proxy, name).map(|mut cla| {
            if let Some(f) = failover {
                locality_lb::apply_failover(&mut cla, &proxy.locality, f);
            }
            Resource::shared(cla.cluster_name.clone(), &cla)
        })
    })
}

/// Whether the proxy may see `host`'s endpoints: in its scope, or for a proxyless client
/// (which has no scope) exported to its namespace.
fn visible(ctx: &PushContext, proxy: &Proxy, scope: &ProxyScope, host: &str) -> bool {
    match proxy.proxy_type {
        ProxyType::Proxyless => ctx
            .services
            .service(host)
            .is_some_and(|s| exported_to(&s.export_to, &s.namespace, &proxy.namespace)),
        _ => scope.contains(host),
    }
}

/// Assignments for the subscribed clusters; for a non-full push only those of `eds_hosts`.
pub fn generate(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    sub: &Subscription,
    push: &PushRequest,
) -> Vec<Arc<Resource>> {
    if !push.full {
        // Only the changed hosts' clusters, found from the hosts rather than by scanning
        // thousands of subscribed names.
        let mut out: Vec<Arc<Resource>> = Vec::new();
        for host in &push.eds_hosts {
            if visible(ctx, proxy, scope, host) {
                let all = host_assignments(ctx, proxy, host);
                out.extend(all.iter().filter(|r| sub.wants_resource(r)).cloned());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        return out;
    }
    let all;
    let names = if sub.wildcard {
        all = all_names(ctx, proxy, scope);
        &all
    } else {
        &sub.names
    };
    names
        .iter()
        .filter(|name| parse_outbound(name).is_some_and(|key| visible(ctx, proxy, scope, key.host)))
        .filter_map(|name| shared_assignment(ctx, proxy, name))
        .collect()
}
