//! Sidecar outbound filter chains for TCP and TLS service ports, from the `tcp` and `tls`
//! routes of the first VirtualService for the host that has applicable ones (as Istio): a TLS
//! route match becomes a chain matched by SNI (`server_names`, plus destination subnets); a
//! TCP route match with destination or source subnets a chain matched by those; the first
//! TCP route without such conditions is the listener's default chain. Without any, the default
//! chain forwards to the service's own cluster.

use super::common::{any, cluster_name, u32v, TCP_PROXY_FILTER};
use super::rds_route::RouteCtx;
use crate::context::{selects, PushContext};
use crate::proxy::Proxy;
use capstan_api::networking::RouteDestination;
use capstan_registry::{Protocol, Service};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;

/// Whether an L4 match (its port, source labels, source namespace and gateways) applies to the
/// proxy's outbound listener on `port`.
fn applies(
    rc: &RouteCtx<'_>,
    port: Option<u32>,
    source_labels: &std::collections::BTreeMap<String, String>,
    source_namespace: &str,
    gateways: &[String],
) -> bool {
    port.is_none_or(|p| p == u32::from(rc.port))
        && selects(source_labels, &rc.proxy.labels)
        && (source_namespace.is_empty() || source_namespace == rc.proxy.namespace)
        && (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
}

/// `10.0.0.0/8` (or a bare address, as a host prefix) as an Envoy CIDR range.
fn cidr(s: &str) -> Option<CidrRange> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    addr.parse::<std::net::IpAddr>().ok()?;
    Some(CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(u32v(len)),
    })
}

fn cidrs(list: &[String]) -> Vec<CidrRange> {
    list.iter().filter_map(|s| cidr(s)).collect()
}

/// A TCP proxy to a route's destinations (weighted when there are several).
pub(super) fn tcp_to(
    rc: &RouteCtx<'_>,
    route: &[RouteDestination],
    ns: &str,
    stat: &str,
) -> Option<Filter> {
    let dests: Vec<_> = route
        .iter()
        .filter_map(|d| Some((d.destination.as_ref()?, d.weight)))
        .filter(|(_, w)| *w != Some(0) || route.len() == 1)
        .collect();
    let specifier = match dests.as_slice() {
        [] => return None,
        [(d, _)] => tcp::tcp_proxy::ClusterSpecifier::Cluster(rc.cluster(d, ns)),
        many => {
            tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(tcp::tcp_proxy::WeightedCluster {
                clusters: many
                    .iter()
                    .map(|(d, w)| tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                        name: rc.cluster(d, ns),
                        weight: w.unwrap_or(0).max(0) as u32,
                        ..Default::default()
                    })
                    .collect(),
            })
        }
    };
    let m = tcp::TcpProxy {
        stat_prefix: stat.to_string(),
        cluster_specifier: Some(specifier),
        ..tcp::TcpProxy::default()
    };
    Some(Filter {
        name: TCP_PROXY_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&m))),
    })
}

/// The chains of `svc`'s outbound listener on `port`, and whether any matches on SNI (the
/// listener then needs the TLS inspector).
pub fn chains(
    ctx: &PushContext,
    proxy: &Proxy,
    svc: &Service,
    port: u16,
    protocol: Protocol,
) -> (Vec<FilterChain>, bool) {
    let rc = RouteCtx {
        ctx,
        proxy,
        port,
        gateway: "mesh",
    };
    let own = cluster_name("outbound", port, "", &svc.hostname);
    let mut out: Vec<FilterChain> = Vec::new();
    let mut default: Option<FilterChain> = None;
    for vs in ctx.virtual_services_for_host(&proxy.namespace, &svc.hostname) {
        let ns = vs.config.namespace.as_str();
        let spec = &vs.config.spec;
        if matches!(protocol, Protocol::Tls | Protocol::Https) {
            for route in &spec.tls {
                for m in &route.r#match {
                    if !applies(
                        &rc,
                        m.port,
                        &m.source_labels,
                        &m.source_namespace,
                        &m.gateways,
                    ) {
                        continue;
                    }
                    let Some(f) = tcp_to(&rc, &route.route, ns, &own) else {
                        continue;
                    };
                    out.push(FilterChain {
                        filter_chain_match: Some(FilterChainMatch {
                            server_names: m.sni_hosts.clone(),
                            prefix_ranges: cidrs(&m.destination_subnets),
                            ..FilterChainMatch::default()
                        }),
                        filters: vec![f],
                        ..FilterChain::default()
                    });
                }
            }
        }
        for route in &spec.tcp {
            let Some(f) = tcp_to(&rc, &route.route, ns, &own) else {
                continue;
            };
            if route.r#match.is_empty() {
                default.get_or_insert_with(|| FilterChain {
                    filters: vec![f.clone()],
                    ..FilterChain::default()
                });
                continue;
            }
            for m in &route.r#match {
                if !applies(
                    &rc,
                    m.port,
                    &m.source_labels,
                    &m.source_namespace,
                    &m.gateways,
                ) {
                    continue;
                }
                let subnets = cidrs(&m.destination_subnets);
                let sources = if m.source_subnet.is_empty() {
                    Vec::new()
                } else {
                    cidr(&m.source_subnet).into_iter().collect()
                };
                if subnets.is_empty() && sources.is_empty() {
                    default.get_or_insert_with(|| FilterChain {
                        filters: vec![f.clone()],
                        ..FilterChain::default()
                    });
                } else {
                    out.push(FilterChain {
                        filter_chain_match: Some(FilterChainMatch {
                            prefix_ranges: subnets,
                            source_prefix_ranges: sources,
                            ..FilterChainMatch::default()
                        }),
                        filters: vec![f.clone()],
                        ..FilterChain::default()
                    });
                }
            }
        }
        if !out.is_empty() || default.is_some() {
            break;
        }
    }
    let sni = out.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.server_names.is_empty())
    });
    out.push(default.unwrap_or_else(|| FilterChain {
        filters: vec![super::common::tcp_proxy_filter(&own, &own)],
        ..FilterChain::default()
    }));
    // Envoy rejects a listener whose chains have equal matches: the first wins, as in Istio.
    let mut seen = Vec::new();
    out.retain(|c| {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        if seen.contains(&m) {
            false
        } else {
            seen.push(m);
            true
        }
    });
    (out, sni)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_accept_prefixes_and_bare_addresses() {
        assert_eq!(cidr("10.0.0.0/8").unwrap().prefix_len, Some(u32v(8)));
        assert_eq!(cidr("10.1.2.3").unwrap().prefix_len, Some(u32v(32)));
        assert_eq!(cidr("fd00::1").unwrap().prefix_len, Some(u32v(128)));
        assert!(cidr("nonsense/8").is_none());
    }
}
