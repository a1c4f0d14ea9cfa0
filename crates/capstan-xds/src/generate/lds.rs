//! LDS for sidecars: `virtualOutbound` (15001), `virtualInbound` (15006, [`super::lds_inbound`]), per-port outbound
//! listeners (`0.0.0.0_PORT` for HTTP and sniffed ports, `VIP_PORT` for TCP); gateways and
//! proxyless clients are delegated to their modules.

use super::common::{
    any, cluster_name, hcm_filter, hcm_rds, http_filters, socket, tcp_proxy_filter,
    BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER,
};
use crate::context::{ProxyScope, PushContext};
use crate::proxy::{Proxy, ProxyType};
use crate::resource::Resource;
use crate::Subscription;
use capstan_api::networking::OutboundTrafficMode;
use capstan_registry::{Protocol, Service};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::BTreeMap;
use std::sync::Arc;

fn listener_filter<M: prost::Message + prost::Name>(name: &str, m: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(m))),
        ..ListenerFilter::default()
    }
}

fn original_dst() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.original_dst",
        &OriginalDst::default(),
    )
}

fn sniffers() -> Vec<ListenerFilter> {
    vec![tls_inspector(), http_inspector()]
}

/// The TLS inspector: it sets the transport protocol, SNI and ALPN chains match.
pub(super) fn tls_inspector() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.tls_inspector",
        &TlsInspector::default(),
    )
}

fn unknown_destination(policy: OutboundTrafficMode) -> &'static str {
    match policy {
        OutboundTrafficMode::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundTrafficMode::RegistryOnly => BLACKHOLE_CLUSTER,
    }
}

fn virtual_outbound(scope: &ProxyScope) -> Listener {
    let cluster = unknown_destination(scope.outbound_policy);
    Listener {
        name: "virtualOutbound".into(),
        address: Some(socket("0.0.0.0", 15001)),
        // `use_original_dst` reads the original destination itself (Envoy inserts the
        // original_dst listener filter for it), so none is listed, as istiod lists none.
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![
            // Connections whose original destination is 15001 itself would loop.
            FilterChain {
                name: "virtualOutbound-blackhole".into(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(envoy_types::pb::google::protobuf::UInt32Value {
                        value: 15001,
                    }),
                    ..FilterChainMatch::default()
                }),
                filters: vec![tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
                ..FilterChain::default()
            },
            FilterChain {
                name: "virtualOutbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_filter(cluster, cluster)],
                ..FilterChain::default()
            },
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Listener::default()
    }
}

fn virtual_inbound(ctx: &PushContext, proxy: &Proxy) -> Listener {
    super::lds_inbound::virtual_inbound(ctx, proxy, vec![original_dst()])
}

fn outbound_listener(
    name: String,
    ip: &str,
    port: u16,
    chains: Vec<FilterChain>,
    sniff: bool,
) -> Listener {
    Listener {
        name,
        address: Some(socket(ip, u32::from(port))),
        filter_chains: chains,
        listener_filters: if sniff { sniffers() } else { Vec::new() },
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Listener::default()
    }
}

/// The HTTP chain of a wildcard outbound listener: plaintext HTTP as the HTTP inspector
/// detects it (istiod's `plaintextHTTPALPNs` on `raw_buffer`); anything else falls through to
/// the listener's default chain.
fn http_chain(port: u16) -> FilterChain {
    let hcm = hcm_rds(
        &format!("outbound_0.0.0.0_{port}"),
        &port.to_string(),
        http_filters(true, true),
    );
    FilterChain {
        filters: vec![hcm_filter(&hcm)],
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..FilterChainMatch::default()
        }),
        ..FilterChain::default()
    }
}

/// The HTTP inspector alone: it sets the application protocol the HTTP chain matches.
pub(super) fn http_inspector() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.http_inspector",
        &HttpInspector::default(),
    )
}

/// Per-port outbound listeners.
fn outbound_listeners(ctx: &PushContext, proxy: &Proxy, scope: &ProxyScope) -> Vec<Listener> {
    let mut by_port: BTreeMap<u16, Vec<(&Arc<Service>, Protocol)>> = BTreeMap::new();
    for svc in &scope.services {
        for p in &svc.ports {
            if p.protocol != Protocol::Udp {
                by_port.entry(p.port).or_default().push((svc, p.protocol));
            }
        }
    }
    let fallback = unknown_destination(scope.outbound_policy);
    let mut out = Vec::new();
    for (port, services) in by_port {
        let any_http = services.iter().any(|(_, p)| p.is_http());
        let any_unknown = services.iter().any(|(_, p)| *p == Protocol::Unknown);
        let tcp: Vec<(&Arc<Service>, Protocol)> = services
            .iter()
            .filter(|(_, p)| !p.is_http() && *p != Protocol::Unknown)
            .map(|(s, p)| (*s, *p))
            .collect();
        let wildcard = format!("0.0.0.0_{port}");
        if any_unknown {
            // Protocol sniffing: the HTTP chain by application protocol, TCP otherwise (the
            // service's cluster when it is alone on the port, as the default chain).
            let single: Vec<&Arc<Service>> = services.iter().map(|(s, _)| *s).collect();
            let tcp_cluster = match single.as_slice() {
                [one] => cluster_name("outbound", port, "", &one.hostname),
                _ => fallback.to_string(),
            };
            let mut listener =
                outbound_listener(wildcard, "0.0.0.0", port, vec![http_chain(port)], false);
            listener.listener_filters = vec![http_inspector()];
            listener.default_filter_chain = Some(FilterChain {
                filters: vec![tcp_proxy_filter(&tcp_cluster, &tcp_cluster)],
                ..FilterChain::default()
            });
            out.push(listener);
        } else if any_http {
            // Explicit HTTP: what is not plaintext HTTP passes through, as istiod's
            // `PassthroughFilterChain` (traffic to a non-mesh destination on a mesh port).
            let mut listener =
                outbound_listener(wildcard, "0.0.0.0", port, vec![http_chain(port)], false);
            listener.listener_filters = vec![http_inspector()];
            listener.default_filter_chain = Some(FilterChain {
                name: "PassthroughFilterChain".into(),
                filters: vec![tcp_proxy_filter(fallback, fallback)],
                ..FilterChain::default()
            });
            out.push(listener);
        }
        for (svc, protocol) in tcp {
            let (chains, sni) = super::lds_tcp::chains(ctx, proxy, svc, port, protocol);
            let listener = match svc.addresses.iter().find(|a| a.as_str() != "0.0.0.0") {
                Some(vip) => outbound_listener(format!("{vip}_{port}"), vip, port, chains, false),
                None if !(any_http || any_unknown) => {
                    outbound_listener(format!("0.0.0.0_{port}"), "0.0.0.0", port, chains, false)
                }
                None => continue,
            };
            let mut listener = listener;
            if sni {
                listener.listener_filters.push(listener_filter(
                    "envoy.filters.listener.tls_inspector",
                    &TlsInspector::default(),
                ));
            }
            out.push(listener);
        }
    }
    // Two VIP-less TCP services on one port would collide: keep the first.
    let mut seen = std::collections::HashSet::new();
    out.retain(|l| seen.insert(l.name.clone()));
    out
}

/// Listeners for a proxy.
pub fn generate(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    sub: &Subscription,
) -> Vec<std::sync::Arc<Resource>> {
    let listeners: Vec<Listener> = match proxy.proxy_type {
        ProxyType::Proxyless => sub
            .names
            .iter()
            .filter_map(|n| super::grpc::listener(ctx, proxy, n))
            .collect(),
        ProxyType::Router => super::gateway::listeners(ctx, proxy),
        // Never asked: Envoy's types are refused to config clients.
        ProxyType::ConfigClient => Vec::new(),
        ProxyType::Sidecar => {
            let mut l = vec![virtual_outbound(scope), virtual_inbound(ctx, proxy)];
            l.extend(outbound_listeners(ctx, proxy, scope));
            l
        }
    };
    listeners
        .iter()
        .filter(|l| proxy.proxy_type == ProxyType::Proxyless || sub.wants(&l.name))
        .map(|l| Resource::shared(l.name.clone(), l))
        .collect()
}
