//! The sidecar's `virtualInbound` listener (15006), as istiod's `listener_inbound.go` builds
//! it: a blackhole chain for traffic to 15006 itself, the passthrough chains for ports no
//! service declares (to `InboundPassthroughCluster`), then the chains of each inbound port.
//! Which chains a destination gets follows istiod's `FilterChainMatchOptions`
//! (`filterchain_options.go`), by the mutual-TLS mode its PeerAuthentications give it and the
//! port's protocol:
//!
//! | mode | HTTP port | TCP port | undeclared protocol (and the passthrough) |
//! |---|---|---|---|
//! | PERMISSIVE (default) | mTLS (Istio's ALPNs); `raw_buffer` | mTLS (Istio's ALPNs); one-way TLS (not terminated); `raw_buffer` | HTTP over mTLS (`istio-http/*`, `istio-h2`); HTTP in plaintext (`http/1.1`, `h2c`); TCP over mTLS (`istio-peer-exchange`, `istio`); TCP in plaintext; one-way TLS |
//! | STRICT | mTLS, any ALPN | mTLS, any ALPN | HTTP over mTLS (`istio-http/*`, `istio-h2`); TCP over mTLS |
//! | DISABLE | `raw_buffer` | `raw_buffer` | HTTP in plaintext (`http/1.1`, `h2c`); TCP in plaintext |
//!
//! The TLS and HTTP inspectors follow the chains, as istiod's `populateListenerFilters`: each
//! is listed when some chain needs it (a `tls` transport; a plaintext HTTP ALPN), and
//! disabled (`filter_disabled`) on the destination ports whose chains do not, so a server-first
//! protocol on a TCP port is not held back waiting for the client's first bytes.
//!
//! A connection no chain matches (plaintext under STRICT) is closed. HTTP chains carry the
//! workload's RequestAuthentication JWT filter ([`super::jwt`]), then its AuthorizationPolicy
//! RBAC filters ([`super::authz`]), ahead of the others (istiod's order: authentication before
//! authorization, so RBAC can match the verified token's claims); TCP chains carry the network
//! RBAC filters before the `tcp_proxy`.

use super::cds_tls::{istio_identity, TLS_SOCKET};
use super::common::{
    any, socket, tcp_proxy_filter, u32v, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER,
};
use super::lds_inbound_http::{connection_manager, InboundHttp};
use crate::context::{MutualTlsMode, PushContext};
use crate::proxy::Proxy;
use capstan_registry::Protocol;
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket, TrafficDirection, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::{
    MatchSet, Rule,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext,
    TlsParameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::BTreeMap;

/// The ALPNs a sidecar client offers over mTLS (Istio's `allIstioMtlsALPNs`): `istio` and
/// `istio-peer-exchange` from clusters, `istio-http/*` and `istio-h2` from sniffed HTTP.
pub const ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// HTTP a client sidecar sniffed and sent over mTLS (Istio's `mtlsHTTPALPNs`).
const MTLS_HTTP_ALPNS: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
/// TCP from a client sidecar over mTLS (Istio's `mtlsTCPWithMxcALPNs`).
const MTLS_TCP_ALPNS: [&str; 2] = ["istio-peer-exchange", "istio"];
/// Plaintext HTTP as the HTTP inspector reports it (Istio's `plaintextHTTPALPNs`; HTTP/1.0
/// falls to the TCP chain, as istiod without `PILOT_HTTP10`).
const PLAINTEXT_HTTP_ALPNS: [&str; 2] = ["http/1.1", "h2c"];

/// Istio's server cipher suites for sidecars (`SupportedCiphers`).
const SUPPORTED_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// The port `virtualInbound` listens on (mesh `proxyInboundListenPort`).
const INBOUND_LISTEN_PORT: u16 = 15006;

/// Istio's `BuildInboundTLS`: the workload certificate (SDS `default`), clients verified
/// against `ROOTCA` and required to be of the mesh's trust domain (a `spiffe://<td>/` prefix
/// match on their SANs), TLS 1.2 to 1.3 with Istio's ciphers; ALPN `h2`, `http/1.1` for HTTP
/// chains, with `istio-peer-exchange` first for TCP chains (metadata exchange). The server
/// never selects `istio`: that would hide the application protocol.
pub fn inbound_tls(http: bool, trust_domain: &str) -> DownstreamTlsContext {
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
    // istiod's `TrustDomainsForValidation`: a prefix per trust domain (no aliases here).
    if let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        &mut common.validation_context_type
    {
        if let Some(default) = &mut v.default_validation_context {
            #[allow(deprecated)] // match_subject_alt_names: what Istio sends
            {
                default.match_subject_alt_names = vec![StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Prefix(format!(
                        "spiffe://{trust_domain}/"
                    ))),
                    ..StringMatcher::default()
                }];
            }
        }
    }
    DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    }
}

fn tls_socket(http: bool, trust_domain: &str) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &inbound_tls(http, trust_domain),
        ))),
    }
}

/// What a chain serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serves {
    Http,
    Tcp,
}

/// One of istiod's `FilterChainMatchOptions`: the ALPNs and transport protocol matched, what
/// the chain serves, and whether it terminates mTLS.
struct MatchOption {
    alpns: &'static [&'static str],
    transport: &'static str,
    serves: Serves,
    mtls: bool,
}

const fn opt(
    alpns: &'static [&'static str],
    transport: &'static str,
    serves: Serves,
    mtls: bool,
) -> MatchOption {
    MatchOption {
        alpns,
        transport,
        serves,
        mtls,
    }
}

const TLS: &str = "tls";
const RAW: &str = "raw_buffer";

/// How a port's traffic is served: its declared protocol, or sniffed when undeclared (istiod's
/// `ListenerProtocolAuto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortKind {
    Http,
    Tcp,
    Sniffed,
}

impl PortKind {
    fn of(protocol: Protocol) -> PortKind {
        if protocol.is_http() {
            PortKind::Http
        } else if protocol == Protocol::Unknown {
            PortKind::Sniffed
        } else {
            PortKind::Tcp
        }
    }
}

/// istiod's `getFilterChainMatchOptions`.
fn match_options(mode: MutualTlsMode, kind: PortKind) -> &'static [MatchOption] {
    use MutualTlsMode::{Disable, Permissive, Strict};
    use Serves::{Http, Tcp};
    const PERMISSIVE_HTTP: [MatchOption; 2] = [
        opt(&ISTIO_MTLS_ALPNS, TLS, Http, true),
        opt(&[], RAW, Http, false),
    ];
    const PERMISSIVE_TCP: [MatchOption; 3] = [
        opt(&ISTIO_MTLS_ALPNS, TLS, Tcp, true),
        opt(&[], TLS, Tcp, false),
        opt(&[], RAW, Tcp, false),
    ];
    const PERMISSIVE_SNIFFED: [MatchOption; 5] = [
        opt(&MTLS_HTTP_ALPNS, TLS, Http, true),
        opt(&PLAINTEXT_HTTP_ALPNS, RAW, Http, false),
        opt(&MTLS_TCP_ALPNS, TLS, Tcp, true),
        opt(&[], RAW, Tcp, false),
        opt(&[], TLS, Tcp, false),
    ];
    const STRICT_HTTP: [MatchOption; 1] = [opt(&[], TLS, Http, true)];
    const STRICT_TCP: [MatchOption; 1] = [opt(&[], TLS, Tcp, true)];
    const STRICT_SNIFFED: [MatchOption; 2] = [
        opt(&MTLS_HTTP_ALPNS, TLS, Http, true),
        opt(&[], TLS, Tcp, true),
    ];
    const DISABLE_HTTP: [MatchOption; 1] = [opt(&[], RAW, Http, false)];
    const DISABLE_TCP: [MatchOption; 1] = [opt(&[], RAW, Tcp, false)];
    const DISABLE_SNIFFED: [MatchOption; 2] = [
        opt(&PLAINTEXT_HTTP_ALPNS, RAW, Http, false),
        opt(&[], RAW, Tcp, false),
    ];
    match (mode, kind) {
        (Permissive, PortKind::Http) => &PERMISSIVE_HTTP,
        (Permissive, PortKind::Tcp) => &PERMISSIVE_TCP,
        (Permissive, PortKind::Sniffed) => &PERMISSIVE_SNIFFED,
        (Strict, PortKind::Http) => &STRICT_HTTP,
        (Strict, PortKind::Tcp) => &STRICT_TCP,
        (Strict, PortKind::Sniffed) => &STRICT_SNIFFED,
        (Disable, PortKind::Http) => &DISABLE_HTTP,
        (Disable, PortKind::Tcp) => &DISABLE_TCP,
        (Disable, PortKind::Sniffed) => &DISABLE_SNIFFED,
    }
}

/// One destination's chains: its port (`None`: any), names and filters per what a chain
/// serves (istiod's `inboundChainConfig`).
#[derive(Clone)]
struct Destination<'a> {
    port: Option<u16>,
    http_name: &'a str,
    tcp_name: &'a str,
    http: Vec<Filter>,
    tcp: Vec<Filter>,
}

/// istiod's `inboundChainForOpts`: a chain per match option.
fn chains(d: &Destination<'_>, options: &[MatchOption], trust_domain: &str) -> Vec<FilterChain> {
    options
        .iter()
        .map(|o| {
            let http = o.serves == Serves::Http;
            FilterChain {
                name: if http { d.http_name } else { d.tcp_name }.to_string(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: d.port.map(|p| u32v(u32::from(p))),
                    transport_protocol: o.transport.into(),
                    application_protocols: o.alpns.iter().map(|a| a.to_string()).collect(),
                    ..FilterChainMatch::default()
                }),
                filters: if http { d.http.clone() } else { d.tcp.clone() },
                transport_socket: o.mtls.then(|| tls_socket(http, trust_domain)),
                ..FilterChain::default()
            }
        })
        .collect()
}

/// The network filters of a TCP chain: the RBAC filters, then the terminal `tcp_proxy`.
fn with_rbac(rbac: &[Filter], terminal: Filter) -> Vec<Filter> {
    let mut v = rbac.to_vec();
    v.push(terminal);
    v
}

/// istiod's `buildInboundBlackhole`: traffic addressed to 15006 itself would loop.
fn blackhole() -> FilterChain {
    FilterChain {
        name: "virtualInbound-blackhole".into(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(u32v(u32::from(INBOUND_LISTEN_PORT))),
            ..FilterChainMatch::default()
        }),
        filters: vec![tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
        ..FilterChain::default()
    }
}

/// A predicate matching any of `ports` (istiod's `listenerPredicateExcludePorts`: one
/// `[port, port + 1)` range each, in an `or_match` when there are several).
fn any_of_ports(ports: &[u16]) -> ListenerFilterChainMatchPredicate {
    let mut rules: Vec<ListenerFilterChainMatchPredicate> = ports
        .iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: i32::from(*p),
                end: i32::from(*p) + 1,
            })),
        })
        .collect();
    if rules.len() == 1 {
        return rules.remove(0);
    }
    ListenerFilterChainMatchPredicate {
        rule: Some(Rule::OrMatch(MatchSet { rules })),
    }
}

/// The inspectors `chains` need (istiod's `populateListenerFilters`), by destination port (0
/// for chains that name none, the undeclared ports). The TLS inspector, when the undeclared
/// ports need it, is disabled on the declared ports that do not; otherwise it is disabled
/// everywhere but on the ports that do. The HTTP inspector is disabled on every port that does
/// not need it, 0 included (as istiod lists it).
fn inspectors(chains: &[FilterChain]) -> Vec<ListenerFilter> {
    #[derive(Default, Clone, Copy)]
    struct Needs {
        tls: bool,
        http: bool,
    }
    let mut by_port: BTreeMap<u16, Needs> = BTreeMap::new();
    for c in chains {
        let Some(m) = &c.filter_chain_match else {
            by_port.entry(0).or_default();
            continue;
        };
        let port = m
            .destination_port
            .as_ref()
            .map_or(0, |p| u16::try_from(p.value).unwrap_or(0));
        let needs = by_port.entry(port).or_default();
        needs.tls |= m.transport_protocol == TLS;
        needs.http |= m
            .application_protocols
            .iter()
            .any(|a| PLAINTEXT_HTTP_ALPNS.contains(&a.as_str()));
    }
    let mut out = Vec::new();
    if by_port.values().any(|n| n.tls) {
        let default_on = by_port.get(&0).is_some_and(|n| n.tls);
        let differ: Vec<u16> = by_port
            .iter()
            .filter(|(p, n)| **p != 0 && n.tls != default_on)
            .map(|(p, _)| *p)
            .collect();
        let mut f = super::lds::tls_inspector();
        if !differ.is_empty() {
            let listed = any_of_ports(&differ);
            f.filter_disabled = Some(if default_on {
                listed
            } else {
                ListenerFilterChainMatchPredicate {
                    rule: Some(Rule::NotMatch(Box::new(listed))),
                }
            });
        }
        out.push(f);
    }
    if by_port.values().any(|n| n.http) {
        let without: Vec<u16> = by_port
            .iter()
            .filter(|(_, n)| !n.http)
            .map(|(p, _)| *p)
            .collect();
        let mut f = super::lds::http_inspector();
        if !without.is_empty() {
            f.filter_disabled = Some(any_of_ports(&without));
        }
        out.push(f);
    }
    out
}

/// `virtualInbound` for a sidecar: `listener_filters` given by the caller, then the inspectors
/// its chains need.
pub fn virtual_inbound(
    ctx: &PushContext,
    proxy: &Proxy,
    mut listener_filters: Vec<ListenerFilter>,
) -> Listener {
    let trust_domain = ctx.mesh.trust_domain.as_str();
    let mtls = ctx.workload_mtls(&proxy.namespace, &proxy.labels);
    let ports = super::cds::inbound_ports(ctx, proxy);
    let authz = ctx.workload_authz(&proxy.namespace, &proxy.labels);
    let jwt_rules = ctx.workload_jwt_rules(&proxy.namespace, &proxy.labels);
    let mut http_security: Vec<HttpFilter> = super::jwt::jwt_filter(&jwt_rules, ctx.jwks(), false)
        .into_iter()
        .collect();
    http_security.extend(super::authz::http_filters(&authz));
    let tcp_rbac = super::authz::network_filters(&authz);

    let mut out = vec![blackhole()];
    // Ports no service declares pass through to the original destination under the
    // workload's mode; a port-level setting for such a port gets its own chains (istiod's
    // `ForPassthrough`). istiod authorizes pass-through traffic too: a policy covers every
    // port of the workload, not only the declared ones.
    let passthrough = Destination {
        port: None,
        http_name: "virtualInbound-catchall-http",
        tcp_name: "virtualInbound",
        http: vec![connection_manager(&InboundHttp {
            stat_prefix: INBOUND_PASSTHROUGH_CLUSTER,
            cluster: INBOUND_PASSTHROUGH_CLUSTER,
            port: 0,
            grpc: false,
            security: &http_security,
        })],
        tcp: with_rbac(
            &tcp_rbac,
            tcp_proxy_filter(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER),
        ),
    };
    out.extend(chains(
        &passthrough,
        match_options(mtls.mode, PortKind::Sniffed),
        trust_domain,
    ));
    for (&port, &mode) in &mtls.per_port {
        if !ports.iter().any(|(p, _)| *p == port) {
            let d = Destination {
                port: Some(port),
                ..passthrough.clone()
            };
            out.extend(chains(
                &d,
                match_options(mode, PortKind::Sniffed),
                trust_domain,
            ));
        }
    }

    for &(port, protocol) in &ports {
        let cluster = format!("inbound|{port}||");
        let name = format!("0.0.0.0_{port}");
        let kind = PortKind::of(protocol);
        let d = Destination {
            port: Some(port),
            http_name: &name,
            tcp_name: &name,
            http: if kind == PortKind::Tcp {
                Vec::new()
            } else {
                vec![connection_manager(&InboundHttp {
                    stat_prefix: &format!("inbound_{name}"),
                    cluster: &cluster,
                    port,
                    grpc: matches!(protocol, Protocol::Grpc | Protocol::GrpcWeb),
                    security: &http_security,
                })]
            },
            tcp: if kind == PortKind::Http {
                Vec::new()
            } else {
                with_rbac(&tcp_rbac, tcp_proxy_filter(&cluster, &cluster))
            },
        };
        out.extend(chains(
            &d,
            match_options(mtls.for_port(port), kind),
            trust_domain,
        ));
    }
    listener_filters.extend(inspectors(&out));
    Listener {
        name: "virtualInbound".into(),
        address: Some(socket("0.0.0.0", u32::from(INBOUND_LISTEN_PORT))),
        listener_filters,
        filter_chains: out,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Listener::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option set of istiod's table, by (mode, port kind): (ALPNs, transport, serves
    /// HTTP, terminates mTLS).
    #[test]
    fn match_options_follow_istiod() {
        type Row = (usize, &'static str, bool, bool);
        let rows = |mode, kind| -> Vec<Row> {
            match_options(mode, kind)
                .iter()
                .map(|o| (o.alpns.len(), o.transport, o.serves == Serves::Http, o.mtls))
                .collect()
        };
        use MutualTlsMode::{Disable, Permissive, Strict};
        let cases: Vec<(MutualTlsMode, PortKind, Vec<Row>)> = vec![
            (
                Permissive,
                PortKind::Http,
                vec![(5, TLS, true, true), (0, RAW, true, false)],
            ),
            (
                Permissive,
                PortKind::Tcp,
                vec![
                    (5, TLS, false, true),
                    (0, TLS, false, false),
                    (0, RAW, false, false),
                ],
            ),
            (
                Permissive,
                PortKind::Sniffed,
                vec![
                    (3, TLS, true, true),
                    (2, RAW, true, false),
                    (2, TLS, false, true),
                    (0, RAW, false, false),
                    (0, TLS, false, false),
                ],
            ),
            (Strict, PortKind::Http, vec![(0, TLS, true, true)]),
            (Strict, PortKind::Tcp, vec![(0, TLS, false, true)]),
            (
                Strict,
                PortKind::Sniffed,
                vec![(3, TLS, true, true), (0, TLS, false, true)],
            ),
            (Disable, PortKind::Http, vec![(0, RAW, true, false)]),
            (Disable, PortKind::Tcp, vec![(0, RAW, false, false)]),
            (
                Disable,
                PortKind::Sniffed,
                vec![(2, RAW, true, false), (0, RAW, false, false)],
            ),
        ];
        for (mode, kind, want) in cases {
            assert_eq!(rows(mode, kind), want, "{mode:?} {kind:?}");
        }
    }

    /// The inspectors of virtualInbound under each mode, for the blackhole (15006), the
    /// passthrough (sniffed, port 0), an HTTP port 9080 and a TCP port 3306: (listener filter,
    /// its `filter_disabled`) as istiod's `populateListenerFilters` gives them.
    #[test]
    fn inspectors_are_disabled_where_no_chain_needs_them() {
        use MutualTlsMode::{Disable, Permissive, Strict};
        fn ports(p: &[u16]) -> Option<ListenerFilterChainMatchPredicate> {
            Some(any_of_ports(p))
        }
        let chains_for = |mode| {
            let d = |port| Destination {
                port,
                http_name: "h",
                tcp_name: "t",
                http: Vec::new(),
                tcp: Vec::new(),
            };
            let mut out = vec![blackhole()];
            for (port, kind) in [
                (None, PortKind::Sniffed),
                (Some(9080), PortKind::Http),
                (Some(3306), PortKind::Tcp),
            ] {
                out.extend(chains(&d(port), match_options(mode, kind), "cluster.local"));
            }
            out
        };
        const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
        const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
        /// Each inspector listed, by name, with its `filter_disabled`.
        type Listed = Vec<(&'static str, Option<ListenerFilterChainMatchPredicate>)>;
        let cases: Vec<(MutualTlsMode, Listed)> = vec![
            (
                Permissive,
                vec![
                    (TLS_INSPECTOR, ports(&[15006])),
                    (HTTP_INSPECTOR, ports(&[3306, 9080, 15006])),
                ],
            ),
            (Strict, vec![(TLS_INSPECTOR, ports(&[15006]))]),
            (Disable, vec![(HTTP_INSPECTOR, ports(&[3306, 9080, 15006]))]),
        ];
        for (mode, want) in cases {
            let got: Listed = inspectors(&chains_for(mode))
                .into_iter()
                .map(|f| {
                    let name = if f.name == TLS_INSPECTOR {
                        TLS_INSPECTOR
                    } else {
                        HTTP_INSPECTOR
                    };
                    (name, f.filter_disabled)
                })
                .collect();
            assert_eq!(got, want, "{mode:?}");
        }
        // Only declared ports need TLS detection: the inspector runs on those alone.
        let only_9080 = vec![
            blackhole(),
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(u32v(9080)),
                    transport_protocol: TLS.into(),
                    ..FilterChainMatch::default()
                }),
                ..FilterChain::default()
            },
        ];
        let tls = inspectors(&only_9080);
        assert_eq!(tls.len(), 1);
        assert_eq!(
            tls[0].filter_disabled,
            Some(ListenerFilterChainMatchPredicate {
                rule: Some(Rule::NotMatch(Box::new(any_of_ports(&[9080])))),
            })
        );
        assert_eq!(
            any_of_ports(&[9080]).rule,
            Some(Rule::DestinationPortRange(Int32Range {
                start: 9080,
                end: 9081
            }))
        );
    }

    #[test]
    fn inbound_tls_requires_the_trust_domain() {
        let ctx = inbound_tls(true, "example.org");
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
            ctx.common_tls_context.unwrap().validation_context_type
        else {
            panic!("no combined validation context")
        };
        #[allow(deprecated)]
        let sans = v
            .default_validation_context
            .unwrap()
            .match_subject_alt_names;
        assert_eq!(
            sans[0].match_pattern,
            Some(string_matcher::MatchPattern::Prefix(
                "spiffe://example.org/".into()
            ))
        );
    }
}
