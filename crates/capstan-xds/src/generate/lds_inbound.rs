//! The sidecar's `virtualInbound` listener (15006): a filter chain set per inbound port, shaped
//! by the mutual-TLS mode its PeerAuthentications give the port (istiod's
//! `listener_inbound.go` with `filterchain_options.go`), and the catch-all for other ports.
//!
//! | mode | chains of a port (and of the catch-all) |
//! |---|---|
//! | PERMISSIVE (default) | mTLS: `transport_protocol: tls`, Istio's ALPNs, terminating with the workload certificate; plaintext: as before |
//! | STRICT | mTLS only, any ALPN: a plaintext connection matches no chain and is closed |
//! | DISABLE | plaintext only |
//!
//! HTTP chains carry the workload's RequestAuthentication JWT filter ([`super::jwt`]), then its
//! AuthorizationPolicy RBAC filters ([`super::authz`]), ahead of the router (istiod's order:
//! authentication before authorization, so RBAC can match the verified token's claims); TCP
//! chains carry the network RBAC filters before the `tcp_proxy`.

use super::cds_tls::{istio_identity, TLS_SOCKET};
use super::common::{
    any, hcm_filter, hcm_rds, http_filters, socket, tcp_proxy_filter, INBOUND_PASSTHROUGH_CLUSTER,
};
use crate::context::{MutualTlsMode, PushContext};
use crate::proxy::Proxy;
use capstan_registry::Protocol;
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket, TrafficDirection, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext, TlsParameters,
};
use envoy_types::pb::google::protobuf::BoolValue;

/// The ALPNs a sidecar client offers over mTLS (Istio's `allIstioMtlsALPNs`): `istio` and
/// `istio-peer-exchange` from clusters, `istio-http/*` and `istio-h2` from sniffed HTTP.
pub const ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// Istio's server cipher suites for sidecars (`SupportedCiphers`).
const SUPPORTED_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// Istio's `BuildInboundTLS`: the workload certificate (SDS `default`), clients verified
/// against `ROOTCA`, TLS 1.2 to 1.3 with Istio's ciphers; ALPN `h2`, `http/1.1` for HTTP
/// chains, with `istio-peer-exchange` first for TCP chains (metadata exchange). The server
/// never selects `istio`: that would hide the application protocol.
pub fn inbound_tls(http: bool) -> DownstreamTlsContext {
    let mut common = CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            cipher_suites: SUPPORTED_CIPHERS.iter().map(|c| c.to_string()).collect(),
            ..TlsParameters::default()
        }),
        alpn_protocols: if http {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            vec!["istio-peer-exchange".into(), "h2".into(), "http/1.1".into()]
        },
        ..CommonTlsContext::default()
    };
    istio_identity(&mut common, &[]);
    DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    }
}

fn tls_socket(http: bool) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &inbound_tls(http),
        ))),
    }
}

/// The chains for one destination (a port, or `None` for every other port) in a mode: the
/// plaintext chain keeps the port-only match it always had; mTLS chains add
/// `transport_protocol: tls` and, when plaintext is also accepted, Istio's ALPNs.
fn chains(
    name: &str,
    port: Option<u16>,
    mode: MutualTlsMode,
    http: bool,
    filters: &[Filter],
) -> Vec<FilterChain> {
    let destination_port = port.map(|p| super::common::u32v(u32::from(p)));
    let mtls = |alpns: &[&str]| FilterChain {
        name: name.to_string(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port,
            transport_protocol: "tls".into(),
            application_protocols: alpns.iter().map(|a| a.to_string()).collect(),
            ..FilterChainMatch::default()
        }),
        filters: filters.to_vec(),
        transport_socket: Some(tls_socket(http)),
        ..FilterChain::default()
    };
    let plaintext = FilterChain {
        name: name.to_string(),
        filter_chain_match: destination_port.map(|p| FilterChainMatch {
            destination_port: Some(p),
            ..FilterChainMatch::default()
        }),
        filters: filters.to_vec(),
        ..FilterChain::default()
    };
    match mode {
        MutualTlsMode::Permissive => vec![mtls(&ISTIO_MTLS_ALPNS), plaintext],
        MutualTlsMode::Strict => vec![mtls(&[])],
        MutualTlsMode::Disable => vec![plaintext],
    }
}

/// The inbound HTTP connection manager for a port: one route to `inbound|PORT||`, behind the
/// workload's JWT and RBAC filters (`security`: RequestAuthentication, then AuthorizationPolicy),
/// which come before every other HTTP filter.
fn http_filter(port: u16, cluster: &str, security: &[HttpFilter]) -> Filter {
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    let mut filters = security.to_vec();
    filters.extend(http_filters(false, false));
    let mut hcm = hcm_rds(&format!("inbound_0.0.0.0_{port}"), "", filters);
    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![super::rds_route::default_route(cluster.to_string())],
            ..VirtualHost::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    }));
    hcm_filter(&hcm)
}

/// The network filters of a TCP chain: the RBAC filters, then the terminal `tcp_proxy`.
fn with_rbac(rbac: &[Filter], terminal: Filter) -> Vec<Filter> {
    let mut v = rbac.to_vec();
    v.push(terminal);
    v
}

/// `virtualInbound` for a sidecar, with `listener_filters` given by the caller.
pub fn virtual_inbound(
    ctx: &PushContext,
    proxy: &Proxy,
    listener_filters: Vec<ListenerFilter>,
) -> Listener {
    let mtls = ctx.workload_mtls(&proxy.namespace, &proxy.labels);
    let ports = super::cds::inbound_ports(ctx, proxy);
    let authz = ctx.workload_authz(&proxy.namespace, &proxy.labels);
    let jwt_rules = ctx.workload_jwt_rules(&proxy.namespace, &proxy.labels);
    let mut http_security: Vec<HttpFilter> = super::jwt::jwt_filter(&jwt_rules, ctx.jwks())
        .into_iter()
        .collect();
    http_security.extend(super::authz::http_filters(&authz));
    let tcp_rbac = super::authz::network_filters(&authz);
    let mut out = Vec::new();
    for &(port, protocol) in &ports {
        let cluster = format!("inbound|{port}||");
        // Undeclared protocols are served as HTTP inbound (no sniffing on this side).
        let http = protocol.is_http() || protocol == Protocol::Unknown;
        let filter = if http {
            http_filter(port, &cluster, &http_security)
        } else {
            tcp_proxy_filter(&format!("inbound_0.0.0.0_{port}"), &cluster)
        };
        let filters = if http {
            vec![filter]
        } else {
            with_rbac(&tcp_rbac, filter)
        };
        out.extend(chains(
            &cluster,
            Some(port),
            mtls.for_port(port),
            http,
            &filters,
        ));
    }
    // Other ports pass through to the original destination, under the workload's mode; a
    // port-level setting for a port no service declares gets its own chains (Istio's
    // `ForPassthrough`).
    let catchall = "virtualInbound-catchall-tcp";
    // istiod authorizes pass-through connections too: a policy covers every port of the
    // workload, not only the declared ones.
    let passthrough = with_rbac(
        &tcp_rbac,
        tcp_proxy_filter(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER),
    );
    for (&port, &mode) in &mtls.per_port {
        if !ports.iter().any(|(p, _)| *p == port) {
            out.extend(chains(catchall, Some(port), mode, false, &passthrough));
        }
    }
    out.extend(chains(catchall, None, mtls.mode, false, &passthrough));
    Listener {
        name: "virtualInbound".into(),
        address: Some(socket("0.0.0.0", 15006)),
        listener_filters,
        filter_chains: out,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Listener::default()
    }
}
