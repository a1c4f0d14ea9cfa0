//! CDS: outbound clusters per visible service port and DestinationRule subset, inbound clusters
//! for the proxy's own service ports, and Istio's passthrough / blackhole clusters.

use super::cds_policy::{apply_policy, EffectivePolicy};
use super::cds_tls::{apply_tls, spiffe_id, ClusterTls};
use super::common::{
    ads, cluster_name, secs, socket, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
};
use crate::context::cache::ByAddress;
use crate::context::{ProxyScope, PushContext};
use crate::proxy::Proxy;
use crate::resource::Resource;
use crate::Subscription;
use capstan_registry::{Resolution, Service, ServicePort};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use std::sync::Arc;

/// Istio's mesh default connect timeout.
const CONNECT_TIMEOUT_SECS: i64 = 10;

fn discovery(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

fn static_assignment(name: &str, addrs: &[(String, u32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|(a, p)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(a, *p)),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                })
                .collect(),
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

/// HTTP/2 to the upstream for HTTP2 and gRPC ports, as Istio's `setH2Options`: the
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` extension with explicit HTTP/2.
/// Without it a proxy speaks HTTP/1.1 upstream and gRPC breaks.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The cluster's `HttpProtocolOptions` extension, decoded (default when absent).
pub(crate) fn http_options(
    c: &Cluster,
) -> envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions {
    use prost::Message;
    c.typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .and_then(|a| {
            envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions::decode(
                a.value.as_slice(),
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Sets the cluster's `HttpProtocolOptions` extension.
pub(crate) fn set_http_options(
    c: &mut Cluster,
    options: &envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions,
) {
    c.typed_extension_protocol_options.insert(
        HTTP_PROTOCOL_OPTIONS.to_string(),
        super::common::any(options),
    );
}

/// HTTP/2 upstreams for HTTP2 and gRPC ports (Istio's `setH2Options`).
fn h2_upstream(c: &mut Cluster, protocol: capstan_registry::Protocol) {
    use capstan_registry::Protocol;
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions,
    };
    if !matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        return;
    }
    let mut options = http_options(c);
    options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
        ExplicitHttpConfig {
            protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        },
    ));
    set_http_options(c, &options);
}

/// Istio's passthrough clusters: the upstream speaks the downstream's protocol, idle
/// connections close after 5 minutes, and no circuit breaker limits them.
fn passthrough_options(c: &mut Cluster) {
    use envoy_types::pb::envoy::config::core::v3::{
        Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        UpstreamProtocolOptions, UseDownstreamHttpConfig,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    set_http_options(
        c,
        &HttpProtocolOptions {
            common_http_protocol_options: Some(CommonOptions {
                idle_timeout: Some(secs(300)),
                ..CommonOptions::default()
            }),
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..UseDownstreamHttpConfig::default()
                },
            )),
            ..HttpProtocolOptions::default()
        },
    );
    super::cds_policy::apply_default_circuit_breakers(c);
}

/// The bare outbound cluster for a service port (discovery type by resolution).
fn base_cluster(ctx: &PushContext, name: &str, svc: &Service, port: &ServicePort) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(secs(CONNECT_TIMEOUT_SECS)),
        ..Cluster::default()
    };
    match svc.resolution {
        Resolution::ClientSideLb => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::Eds);
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name.to_string(),
            });
        }
        Resolution::DnsLb | Resolution::DnsRoundRobinLb => {
            c.cluster_discovery_type = discovery(if svc.resolution == Resolution::DnsLb {
                cluster::DiscoveryType::StrictDns
            } else {
                cluster::DiscoveryType::LogicalDns
            });
            c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
            let mut addrs: Vec<(String, u32)> = ctx
                .services
                .endpoint_set(&svc.hostname, port.port)
                .into_iter()
                .flat_map(|e| e.iter())
                .map(|e| (e.address.clone(), u32::from(e.port)))
                .collect();
            if addrs.is_empty() {
                addrs.push((svc.hostname.clone(), u32::from(port.port)));
            }
            if svc.resolution == Resolution::DnsRoundRobinLb {
                addrs.truncate(1);
            }
            c.load_assignment = Some(static_assignment(name, &addrs));
        }
        Resolution::Passthrough => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::OriginalDst);
        }
    }
    c
}

/// The identities of a service's workloads on a port, sorted (Istio's
/// `PushContext.ServiceAccounts[host][port]`): what ISTIO_MUTUAL expects of the server.
fn service_accounts(ctx: &PushContext, svc: &Service, port: u16) -> Vec<String> {
    let mut out: Vec<String> = ctx
        .services
        .endpoint_set(&svc.hostname, port)
        .into_iter()
        .flat_map(|e| e.iter())
        .filter(|e| !e.meta.service_account.is_empty())
        .map(|e| {
            let ns = if e.meta.namespace.is_empty() {
                &svc.namespace
            } else {
                &e.meta.namespace
            };
            spiffe_id(&ctx.mesh.trust_domain, ns, &e.meta.service_account)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Outbound clusters for one service, its subsets included. Proxyless clients get no auto
/// mTLS (they have no SDS and would use neither secret).
pub fn outbound_clusters(
    ctx: &PushContext,
    proxy: &Proxy,
    svc: &Service,
    proxyless: bool,
) -> Vec<Cluster> {
    let dr = ctx.destination_rule(proxy, &svc.hostname);
    let mut out = Vec::new();
    for port in &svc.ports {
        if port.protocol == capstan_registry::Protocol::Udp {
            continue;
        }
        let top = dr.and_then(|d| d.spec.traffic_policy.as_deref());
        let mut subsets: Vec<(&str, Option<&capstan_api::networking::TrafficPolicy>)> =
            vec![("", None)];
        if let Some(d) = dr {
            subsets.extend(
                d.spec
                    .subsets
                    .iter()
                    .map(|s| (s.name.as_str(), s.traffic_policy.as_deref())),
            );
        }
        let accounts = service_accounts(ctx, svc, port.port);
        for (subset, subset_policy) in subsets {
            let name = cluster_name("outbound", port.port, subset, &svc.hostname);
            let mut c = base_cluster(ctx, &name, svc, port);
            h2_upstream(&mut c, port.protocol);
            let policy = EffectivePolicy::merge(top, subset_policy, port.port);
            apply_policy(&mut c, &policy);
            if !proxyless {
                super::locality_lb::apply_to_cluster(&mut c, &policy);
            }
            let lb_passthrough = policy
                .lb
                .and_then(|lb| lb.simple)
                .is_some_and(|s| s == capstan_api::networking::SimpleLb::Passthrough);
            let sni = format!("outbound_.{}_.{}_.{}", port.port, subset, svc.hostname);
            apply_tls(
                &mut c,
                &ClusterTls {
                    rule: policy.tls,
                    istio_sni: &sni,
                    service_accounts: &accounts,
                    auto_mtls: ctx.mesh.enable_auto_mtls && !proxyless,
                    service_mode: ctx.service_mtls_mode(svc, port.port, lb_passthrough),
                    http2: matches!(
                        port.protocol,
                        capstan_registry::Protocol::Http2 | capstan_registry::Protocol::Grpc
                    ),
                },
            );
            if svc.resolution == Resolution::Passthrough {
                c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
            } else if !proxyless {
                // Unready endpoints are sent (as UNHEALTHY), so panic mode, which would route
                // to them, is off unless the DestinationRule sets `minHealthPercent` (istiod's
                // `applyLoadBalancer` with PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS).
                let common = c.common_lb_config.get_or_insert_with(Default::default);
                common
                    .healthy_panic_threshold
                    .get_or_insert(envoy_types::pb::envoy::r#type::v3::Percent { value: 0.0 });
            }
            out.push(c);
        }
    }
    out
}

/// One inbound port of a sidecar: where traffic arrives and where it is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPort {
    /// The port traffic arrives on (the `inbound|PORT||` cluster, the listener chain).
    pub port: u16,
    /// Its protocol.
    pub protocol: capstan_registry::Protocol,
    /// Where the cluster sends it: `None` for the connection's original destination (the
    /// application on the address the client called), else fixed endpoints.
    pub endpoints: Option<Vec<(String, u32)>>,
}

/// Where a Sidecar ingress listener forwards (istiod's `buildInboundClustersFromSidecar`): an
/// empty endpoint means the original destination; `0.0.0.0:PORT` (`[::]:PORT`) the proxy's
/// first IPv4 (IPv6) address, else loopback; `127.0.0.1:PORT` and `[::1]:PORT` loopback.
/// `unix://` sockets are not supported (no endpoints).
fn default_endpoint(spec: &str, proxy: &Proxy) -> Option<Vec<(String, u32)>> {
    if spec.is_empty() {
        return None;
    }
    let parsed = spec.rsplit_once(':').and_then(|(host, p)| {
        let p = p.parse::<u32>().ok()?;
        Some((host.trim_start_matches('[').trim_end_matches(']'), p))
    });
    let Some((host, p)) = parsed else {
        return Some(Vec::new());
    };
    let first = |v6: bool| {
        proxy
            .ip_addresses
            .iter()
            .find(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_ipv6() == v6)
            })
            .cloned()
    };
    let address = match host {
        "0.0.0.0" => first(false).unwrap_or_else(|| "127.0.0.1".into()),
        "::" => first(true).unwrap_or_else(|| "::1".into()),
        h if h.parse::<std::net::IpAddr>().is_ok() => h.to_string(),
        _ => return Some(Vec::new()),
    };
    Some(vec![(address, p)])
}

/// The sidecar's inbound ports: its Sidecar's `ingress` listeners when it has any (as Istio),
/// else its services' target ports, forwarded to the original destination (istiod's default
/// `inboundTrafficPolicy` PASSTHROUGH).
pub fn inbound(ctx: &PushContext, proxy: &Proxy) -> Vec<InboundPort> {
    if let Some(sidecar) = ctx.sidecar(proxy).filter(|s| !s.spec.ingress.is_empty()) {
        let mut out: Vec<InboundPort> = sidecar
            .spec
            .ingress
            .iter()
            .filter_map(|l| {
                let p = l.port.as_ref()?;
                let port = u16::try_from(p.number).ok()?;
                let protocol = if p.protocol.is_empty() {
                    capstan_registry::Protocol::for_port(None, &p.name)
                } else {
                    capstan_registry::Protocol::parse(&p.protocol)
                };
                Some(InboundPort {
                    port,
                    protocol,
                    endpoints: default_endpoint(&l.default_endpoint, proxy),
                })
            })
            .collect();
        out.sort_by_key(|p| p.port);
        out.dedup_by_key(|p| p.port);
        return out;
    }
    let mut ports = std::collections::BTreeMap::new();
    for ip in &proxy.ip_addresses {
        for host in ctx.services.services_at(ip) {
            let Some(svc) = ctx.services.service(host) else {
                continue;
            };
            for sp in &svc.ports {
                let target = ctx
                    .services
                    .endpoint_set(host, sp.port)
                    .into_iter()
                    .flat_map(|e| e.iter())
                    .find(|e| proxy.ip_addresses.contains(&e.address))
                    .map(|e| e.port)
                    .unwrap_or(sp.port);
                ports.entry(target).or_insert(sp.protocol);
            }
        }
    }
    ports
        .into_iter()
        .map(|(port, protocol)| InboundPort {
            port,
            protocol,
            endpoints: None,
        })
        .collect()
}

/// `inbound|PORT||` clusters for the proxy's inbound ports (istiod's `buildInboundCluster`):
/// ORIGINAL_DST, never cleaned up, or STATIC to a Sidecar's default endpoint; Istio's default
/// circuit breakers (every maximum); connections to a non-loopback address leave from
/// 127.0.0.6, which the capture rules let through instead of sending back to the proxy.
pub fn inbound_clusters(ctx: &PushContext, proxy: &Proxy) -> Vec<Cluster> {
    /// istiod's `maxSecondsValue`: the longest protobuf duration.
    const NEVER_SECS: i64 = 315_576_000_000;
    inbound(ctx, proxy)
        .into_iter()
        .map(|p| {
            let name = format!("inbound|{}||", p.port);
            let mut c = Cluster {
                name: name.clone(),
                connect_timeout: Some(secs(CONNECT_TIMEOUT_SECS)),
                ..Cluster::default()
            };
            let loopback = match &p.endpoints {
                None => {
                    c.cluster_discovery_type = discovery(cluster::DiscoveryType::OriginalDst);
                    c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
                    c.cleanup_interval = Some(secs(NEVER_SECS));
                    false
                }
                Some(endpoints) => {
                    c.cluster_discovery_type = discovery(cluster::DiscoveryType::Static);
                    c.load_assignment = Some(static_assignment(&name, endpoints));
                    endpoints.iter().all(|(a, _)| {
                        a.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                    })
                }
            };
            if !loopback {
                c.upstream_bind_config = Some(BindConfig {
                    source_address: Some(SocketAddress {
                        address: "127.0.0.6".into(),
                        port_specifier: Some(
                            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(0),
                        ),
                        ..SocketAddress::default()
                    }),
                    ..BindConfig::default()
                });
            }
            super::cds_policy::apply_default_circuit_breakers(&mut c);
            h2_upstream(&mut c, p.protocol);
            c
        })
        .collect()
}

/// The ports the proxy serves, for inbound listeners.
pub fn inbound_ports(ctx: &PushContext, proxy: &Proxy) -> Vec<(u16, capstan_registry::Protocol)> {
    inbound(ctx, proxy)
        .into_iter()
        .map(|p| (p.port, p.protocol))
        .collect()
}

fn special_clusters() -> Vec<Cluster> {
    let timeout = Some(secs(CONNECT_TIMEOUT_SECS));
    let mut clusters = vec![
        Cluster {
            name: BLACKHOLE_CLUSTER.into(),
            connect_timeout: timeout,
            cluster_discovery_type: discovery(cluster::DiscoveryType::Static),
            ..Cluster::default()
        },
        Cluster {
            name: PASSTHROUGH_CLUSTER.into(),
            connect_timeout: timeout,
            cluster_discovery_type: discovery(cluster::DiscoveryType::OriginalDst),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            ..Cluster::default()
        },
        Cluster {
            name: INBOUND_PASSTHROUGH_CLUSTER.into(),
            connect_timeout: timeout,
            cluster_discovery_type: discovery(cluster::DiscoveryType::OriginalDst),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            upstream_bind_config: Some(BindConfig {
                source_address: Some(SocketAddress {
                    address: "127.0.0.6".into(),
                    port_specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(0),
                    ),
                    ..SocketAddress::default()
                }),
                ..BindConfig::default()
            }),
            ..Cluster::default()
        },
    ];
    for c in clusters.iter_mut().skip(1) {
        passthrough_options(c);
    }
    clusters
}

/// gRPC implements only ROUND_ROBIN and RING_HASH through `lb_policy` and NACKs the rest
/// ("LB policy is not supported"); Istio's grpcgen likewise falls back to round robin. gRPC
/// resolves no DNS clusters itself, so every cluster is EDS.
fn for_proxyless(mut c: Cluster) -> Cluster {
    if c.lb_policy != cluster::LbPolicy::RingHash as i32 {
        c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
        c.lb_config = None;
    }
    c.cluster_discovery_type = discovery(cluster::DiscoveryType::Eds);
    c.load_assignment = None;
    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ads()),
        service_name: c.name.clone(),
    });
    c
}

/// A service's outbound clusters as resources, shared by every proxy of the push that uses
/// the same DestinationRule for it.
fn shared_outbound(
    ctx: &PushContext,
    proxy: &Proxy,
    svc: &Service,
    proxyless: bool,
) -> Arc<[Arc<Resource>]> {
    let dr = ctx.destination_rule(proxy, &svc.hostname);
    let key = dr.cloned().map(ByAddress);
    ctx.cache.clusters(&svc.hostname, key, proxyless, || {
        outbound_clusters(ctx, proxy, svc, proxyless)
            .into_iter()
            .map(|c| if proxyless { for_proxyless(c) } else { c })
            .map(|c| Resource::shared(c.name.clone(), &c))
            .collect()
    })
}

/// Istio's passthrough and blackhole clusters, the same for every proxy.
fn special_resources() -> &'static [Arc<Resource>] {
    static SPECIAL: std::sync::OnceLock<Vec<Arc<Resource>>> = std::sync::OnceLock::new();
    SPECIAL.get_or_init(|| {
        special_clusters()
            .iter()
            .map(|c| Resource::shared(c.name.clone(), c))
            .collect()
    })
}

/// All clusters for a proxy.
pub fn generate(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    sub: &Subscription,
) -> Vec<Arc<Resource>> {
    let mut out: Vec<Arc<Resource>> = Vec::new();
    match proxy.proxy_type {
        crate::ProxyType::Proxyless => {
            // Only what it asks for.
            for name in &sub.names {
                let Some(key) = super::common::parse_outbound(name) else {
                    continue;
                };
                let Some(svc) = ctx.services.service(key.host) else {
                    continue;
                };
                if !crate::context::exported_to(&svc.export_to, &svc.namespace, &proxy.namespace) {
                    continue;
                }
                let all = shared_outbound(ctx, proxy, svc, true);
                out.extend(all.iter().filter(|c| c.name == **name).cloned());
            }
        }
        // Never asked: Envoy's types are refused to config clients.
        crate::ProxyType::ConfigClient => {}
        crate::ProxyType::Sidecar | crate::ProxyType::Router => {
            for svc in &scope.services {
                out.extend(shared_outbound(ctx, proxy, svc, false).iter().cloned());
            }
            if proxy.proxy_type == crate::ProxyType::Sidecar {
                out.extend(
                    inbound_clusters(ctx, proxy)
                        .iter()
                        .map(|c| Resource::shared(c.name.clone(), c)),
                );
            }
            // Gateways have no original-destination listeners: istiod sends them only the
            // blackhole cluster (`buildClusters`).
            out.extend(
                special_resources()
                    .iter()
                    .filter(|c| {
                        proxy.proxy_type == crate::ProxyType::Sidecar || c.name == BLACKHOLE_CLUSTER
                    })
                    .cloned(),
            );
            if !sub.wildcard {
                out.retain(|c| sub.names.contains(c.name.as_str()));
            }
        }
    }
    out
}
