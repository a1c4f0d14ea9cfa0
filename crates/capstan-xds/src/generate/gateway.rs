//! Gateways (`router` proxies): listeners `0.0.0.0_PORT` from the servers of Gateways that
//! select the proxy, on the port the gateway's Service sends each server's port to; plain HTTP
//! → HCM with routes `http.PORT`, HTTPS SIMPLE/MUTUAL → TLS termination with routes
//! `https.SERVERPORT.PORTNAME.GATEWAY.NAMESPACE`, PASSTHROUGH → SNI chains with TCP proxies,
//! TCP (and TLS terminated for TCP) → a TCP proxy from the VirtualServices' `tcp` routes; and
//! the route configurations for them.

use super::common::{any, hcm_filter, hcm_rds, http_filters, socket, tcp_proxy_filter};
use super::lds_tcp::tcp_to;
use super::rds_route::{route_match, virtual_service_routes, RouteCtx};
use crate::context::{
    host_matches, resolve_gateway, ConfigEntry, PushContext, ServiceTarget, VirtualServiceEntry,
};
use crate::proxy::Proxy;
use capstan_api::networking::{Gateway, L4MatchAttributes, Server, ServerTlsMode};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, virtual_host, DirectResponseAction, Route, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{self, CombinedCertificateValidationContext},
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Service label by which a gateway's Service opts out of gateway port translation: servers
/// then listen on their own port numbers (Istio's `DisableGatewayPortTranslationLabel`).
const DISABLE_PORT_TRANSLATION_LABEL: &str = "networking.istio.io/disable-gateway-port-translation";

/// One server of a Gateway selecting the proxy.
struct ServerRef<'a> {
    gateway: &'a Arc<ConfigEntry<Gateway>>,
    server: &'a Server,
}

impl ServerRef<'_> {
    fn gateway_name(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
    }
    /// The server's own port number (what routes, virtual host names and L4 matches see).
    fn port(&self) -> u32 {
        self.server.port.as_ref().map_or(0, |p| p.number)
    }
    fn protocol(&self) -> String {
        self.server
            .port
            .as_ref()
            .map(|p| p.protocol.to_ascii_uppercase())
            .unwrap_or_default()
    }
    fn tls_mode(&self) -> Option<ServerTlsMode> {
        self.server.tls.as_ref().map(|t| t.mode.unwrap_or_default())
    }
    /// An HTTP server (with or without `httpsRedirect`), served in plain text.
    fn is_plain_http(&self) -> bool {
        is_http(&self.protocol())
    }
    /// A server with TLS settings that is not a plain HTTP one (Istio's `IsTLSServer`).
    fn is_tls_server(&self) -> bool {
        self.server.tls.is_some() && !self.is_plain_http()
    }
    fn is_passthrough(&self) -> bool {
        matches!(
            self.tls_mode(),
            Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
        )
    }
    /// A TCP server: opaque TCP, or TLS terminated for TCP (neither HTTP, HTTPS terminated
    /// nor passed through).
    fn is_tcp(&self) -> bool {
        !self.is_plain_http() && !self.terminates_http() && !self.is_passthrough()
    }
    fn terminates_http(&self) -> bool {
        self.protocol() == "HTTPS"
            && matches!(
                self.tls_mode(),
                Some(
                    ServerTlsMode::Simple
                        | ServerTlsMode::Mutual
                        | ServerTlsMode::IstioMutual
                        | ServerTlsMode::OptionalMutual
                )
            )
    }
    /// The server's hosts without their namespaces (what SNI matches).
    fn hosts(&self) -> Vec<&str> {
        self.server
            .hosts
            .iter()
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h))
            .collect()
    }
    /// The server's hosts that VirtualServices of `namespace` may serve: `ns/host` only for
    /// that namespace (`.` is the gateway's, `*` any), a bare host for every one (Istio's
    /// `NamesForNamespace`).
    fn hosts_for(&self, namespace: &str) -> Vec<&str> {
        self.server
            .hosts
            .iter()
            .filter_map(|h| match h.split_once('/') {
                None => Some(h.as_str()),
                Some(("*", host)) => Some(host),
                Some((".", host)) => (self.gateway.namespace == namespace).then_some(host),
                Some((ns, host)) => (ns == namespace).then_some(host),
            })
            .collect()
    }
    /// Whether a VirtualService bound to the server's gateway has a host in common with it.
    fn shares_host(&self, vs: &VirtualServiceEntry) -> bool {
        let server_hosts = self.hosts_for(&vs.config.namespace);
        vs.hosts.iter().any(|host| {
            server_hosts
                .iter()
                .any(|s| host_matches(s, host) || host_matches(host, s))
        })
    }
    /// The route configuration of an HTTPS server, named by the server's own port (as
    /// istiod's `gatewayRDSRouteName`).
    fn https_route_name(&self) -> String {
        let port_name = self
            .server
            .port
            .as_ref()
            .map(|p| p.name.as_str())
            .unwrap_or("");
        format!(
            "https.{}.{port_name}.{}.{}",
            self.port(),
            self.gateway.name,
            self.gateway.namespace
        )
    }
}

/// Whether a server protocol is HTTP-based (Istio's `Instance.IsHTTP`).
fn is_http(protocol: &str) -> bool {
    matches!(protocol, "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
}

/// The port the proxy listens on for a server's port (istiod's `resolvePorts` for Gateways
/// that select by labels): the target port of the first of the proxy's service ports with that
/// number, unless its Service opts out of port translation; else the port itself. A gateway
/// Service mapping 80 to 8080 thus has the server on port 80 listen on 8080, where the
/// Service sends its traffic.
fn listen_port(targets: &[ServiceTarget<'_>], number: u32) -> u32 {
    targets
        .iter()
        .filter(|t| {
            !t.service
                .labels
                .contains_key(DISABLE_PORT_TRANSLATION_LABEL)
        })
        .find(|t| u32::from(t.port.port) == number)
        .map_or(number, |t| u32::from(t.target_port))
}

/// The servers of the Gateways selecting the proxy, by the port the proxy listens on for
/// them, merged as istiod's `mergeGateways` does: HTTP servers share a port with each other,
/// TLS servers (told apart by SNI) with each other and with one plain-text server; any other
/// server on the port of a plain-text server is dropped.
fn servers<'a>(ctx: &'a PushContext, proxy: &Proxy) -> BTreeMap<u32, Vec<ServerRef<'a>>> {
    let targets = ctx.service_targets(proxy);
    let mut out: BTreeMap<u32, Vec<ServerRef<'a>>> = BTreeMap::new();
    // Listen port → the protocol of its plain-text server.
    let mut plain_text: HashMap<u32, String> = HashMap::new();
    for gateway in ctx.gateways_for(proxy) {
        for server in &gateway.spec.servers {
            let Some(port) = &server.port else {
                continue;
            };
            let sr = ServerRef { gateway, server };
            let listen = listen_port(&targets, port.number);
            match plain_text.get(&listen) {
                Some(current) if !(is_http(current) && sr.is_plain_http()) => {
                    tracing::debug!(
                        gateway = %sr.gateway_name(),
                        port = listen,
                        "gateway server conflicts with the port's plain-text server; skipped"
                    );
                    continue;
                }
                Some(_) => {}
                None if !sr.is_tls_server() => {
                    plain_text.insert(listen, sr.protocol());
                }
                None => {}
            }
            out.entry(listen).or_default().push(sr);
        }
    }
    out
}

/// The virtual hosts of the servers sharing one route configuration: per host of the
/// VirtualServices bound to each server's gateway, named and routed for the server's own port
/// (the first server to serve a host names it).
fn virtual_hosts(ctx: &PushContext, proxy: &Proxy, refs: &[&ServerRef<'_>]) -> Vec<VirtualHost> {
    let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for sr in refs {
        let gw = sr.gateway_name();
        let port = sr.port();
        let rc = RouteCtx {
            ctx,
            proxy,
            port: port as u16,
            gateway: &gw,
        };
        let redirect = sr.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for vs in ctx.virtual_services(&proxy.namespace, &gw) {
            let server_hosts = sr.hosts_for(&vs.config.namespace);
            for host in &vs.hosts {
                if !server_hosts
                    .iter()
                    .any(|s| host_matches(s, host) || host_matches(host, s))
                {
                    continue;
                }
                // The host without a port: the route configuration ignores the request's
                // (istiod's gateway virtual hosts).
                let vh = hosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone()],
                    include_request_attempt_count: true,
                    ..VirtualHost::default()
                });
                vh.routes.extend(virtual_service_routes(&rc, vs));
                if redirect {
                    vh.require_tls = virtual_host::TlsRequirementType::All as i32;
                }
            }
        }
    }
    let mut out: Vec<VirtualHost> = hosts.into_values().collect();
    if out.is_empty() {
        let port = refs.first().map_or(0, |sr| sr.port());
        out.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(route_match(None)),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 404,
                    ..DirectResponseAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        });
    }
    out
}

/// Route configurations for a gateway proxy.
pub fn route_configs(ctx: &PushContext, proxy: &Proxy) -> Vec<RouteConfiguration> {
    let mut out = Vec::new();
    for (port, refs) in servers(ctx, proxy) {
        let plain: Vec<&ServerRef<'_>> = refs.iter().filter(|s| s.is_plain_http()).collect();
        if !plain.is_empty() {
            out.push(RouteConfiguration {
                name: format!("http.{port}"),
                virtual_hosts: virtual_hosts(ctx, proxy, &plain),
                validate_clusters: Some(BoolValue { value: false }),
                ignore_port_in_host_matching: true,
                ..RouteConfiguration::default()
            });
        }
        for sr in refs.iter().filter(|s| s.terminates_http()) {
            out.push(RouteConfiguration {
                name: sr.https_route_name(),
                virtual_hosts: virtual_hosts(ctx, proxy, &[sr]),
                validate_clusters: Some(BoolValue { value: false }),
                ignore_port_in_host_matching: true,
                ..RouteConfiguration::default()
            });
        }
    }
    out
}

fn file(path: &str) -> Option<DataSource> {
    (!path.is_empty()).then(|| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..DataSource::default()
    })
}

/// Exact matchers for a server's `subjectAltNames`.
fn exact_sans(sans: &[String]) -> Vec<StringMatcher> {
    sans.iter()
        .map(|s| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.clone())),
            ..StringMatcher::default()
        })
        .collect()
}

// `match_subject_alt_names` is deprecated in Envoy's API, and it is what istiod sets.
#[allow(deprecated)]
fn downstream_tls(server: &Server, tcp: bool) -> Option<TransportSocket> {
    let tls = server.tls.as_ref()?;
    let mutual = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::IstioMutual)
    );
    // OPTIONAL_MUTUAL verifies a client certificate when one is shown.
    let verify = mutual || tls.mode == Some(ServerTlsMode::OptionalMutual);
    let mut alpn_protocols: Vec<String> = vec!["h2".into(), "http/1.1".into()];
    if tcp && tls.mode == Some(ServerTlsMode::IstioMutual) {
        // istiod's `BuildListenerTLSContext`: TCP servers terminating ISTIO_MUTUAL also offer
        // Istio's metadata exchange.
        alpn_protocols.insert(0, "istio-peer-exchange".into());
    }
    let mut common = CommonTlsContext {
        alpn_protocols,
        ..CommonTlsContext::default()
    };
    let sds = |name: String| SdsSecretConfig {
        name,
        sds_config: Some(super::common::ads()),
    };
    if tls.mode == Some(ServerTlsMode::IstioMutual) {
        // The gateway's own workload certificate, clients verified against the mesh roots.
        common.tls_certificate_sds_secret_configs = vec![sds("default".into())];
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                "ROOTCA".into(),
            )),
        );
    } else if !tls.credential_name.is_empty() || !tls.credential_names.is_empty() {
        // Istio's `credentialNames` (an RSA and an ECDSA certificate, say) are all offered;
        // clients are verified against the first one's CA.
        let names: Vec<&String> = if tls.credential_names.is_empty() {
            vec![&tls.credential_name]
        } else {
            tls.credential_names.iter().collect()
        };
        common.tls_certificate_sds_secret_configs = names
            .iter()
            .map(|n| sds(format!("{}{n}", super::sds::KUBERNETES_PREFIX)))
            .collect();
        if verify {
            // As istiod: the Secret's CA over SDS, the SANs checked beside it.
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_subject_alt_names: exact_sans(&tls.subject_alt_names),
                            ..CertificateValidationContext::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(format!(
                            "{}{}{}",
                            super::sds::KUBERNETES_PREFIX,
                            names[0],
                            super::sds::CA_SUFFIX
                        ))),
                        ..CombinedCertificateValidationContext::default()
                    },
                ),
            );
        }
    } else {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: file(&tls.server_certificate),
            private_key: file(&tls.private_key),
            ..TlsCertificate::default()
        }];
        if verify && !tls.ca_certificates.is_empty() {
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: file(&tls.ca_certificates),
                        match_subject_alt_names: exact_sans(&tls.subject_alt_names),
                        ..CertificateValidationContext::default()
                    },
                ),
            );
        }
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: mutual }),
        ..DownstreamTlsContext::default()
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}

fn sni_match(hosts: &[&str]) -> Option<FilterChainMatch> {
    let names: Vec<String> = hosts
        .iter()
        .filter(|h| **h != "*")
        .map(|h| h.to_string())
        .collect();
    (!names.is_empty()).then(|| FilterChainMatch {
        server_names: names,
        ..FilterChainMatch::default()
    })
}

/// The HTTP filters of a gateway's HTTP and HTTPS chains: the JWT filter of the
/// RequestAuthentications and the RBAC filters of the AuthorizationPolicies selecting the
/// gateway's workload (istiod applies both to gateways as to sidecars, by the gateway pod's
/// labels, in this order), then CORS, fault and the router.
fn gateway_http_filters(ctx: &PushContext, proxy: &Proxy) -> Vec<HttpFilter> {
    let rules = ctx.workload_jwt_rules(&proxy.namespace, &proxy.labels);
    let mut out: Vec<HttpFilter> = super::jwt::jwt_filter(&rules, ctx.jwks(), true)
        .into_iter()
        .collect();
    out.extend(super::authz::http_filters(
        &ctx.workload_authz(&proxy.namespace, &proxy.labels),
    ));
    out.extend(http_filters(true, true));
    out
}

/// The TCP proxy a VirtualService route sends a gateway server's connections to: to one
/// cluster with its name as stat prefix, or split by weight with the VirtualService's
/// `name.namespace` (istiod's `buildOutboundNetworkFilters`).
fn tcp_route_filter(
    rc: &RouteCtx<'_>,
    vs: &VirtualServiceEntry,
    route: &[capstan_api::networking::RouteDestination],
) -> Option<Filter> {
    let ns = vs.config.namespace.as_str();
    let stat = match route {
        [single] => rc.cluster(single.destination.as_ref()?, ns),
        _ => format!("{}.{ns}", vs.config.name),
    };
    tcp_to(rc, route, ns, &stat)
}

/// Whether an L4 match applies to a gateway server: its port is the server's own and its
/// gateways, if any, name the server's (istiod's `l4SingleMatch`).
fn l4_applies(m: &L4MatchAttributes, sr: &ServerRef<'_>, vs_namespace: &str) -> bool {
    let gw = sr.gateway_name();
    m.port.is_none_or(|p| p == sr.port())
        && (m.gateways.is_empty()
            || m.gateways
                .iter()
                .any(|g| resolve_gateway(g, vs_namespace) == gw))
}

/// The chain of a TCP server, terminating TLS when the server has TLS settings (istiod's
/// `buildGatewayNetworkFiltersFromTCPRoutes`): the RBAC filters, then a TCP proxy for the
/// first `tcp` route, of the VirtualServices bound to the server's gateway that share a host
/// with it, whose match applies to the server. None without such a route.
fn tcp_chain(
    ctx: &PushContext,
    proxy: &Proxy,
    sr: &ServerRef<'_>,
    rbac: &[Filter],
) -> Option<FilterChain> {
    let gw = sr.gateway_name();
    let rc = RouteCtx {
        ctx,
        proxy,
        port: sr.port() as u16,
        gateway: &gw,
    };
    let proxy_filter = ctx
        .virtual_services(&proxy.namespace, &gw)
        .filter(|vs| sr.shares_host(vs))
        .find_map(|vs| {
            vs.config
                .spec
                .tcp
                .iter()
                .filter(|r| {
                    r.r#match.is_empty()
                        || r.r#match
                            .iter()
                            .any(|m| l4_applies(m, sr, &vs.config.namespace))
                })
                .find(|r| !r.route.is_empty())
                .and_then(|r| tcp_route_filter(&rc, vs, &r.route))
        });
    let Some(proxy_filter) = proxy_filter else {
        tracing::debug!(gateway = %gw, port = sr.port(), "gateway TCP server has no route");
        return None;
    };
    let mut filters = rbac.to_vec();
    filters.push(proxy_filter);
    let tls = sr.server.tls.is_some();
    Some(FilterChain {
        filter_chain_match: if tls { sni_match(&sr.hosts()) } else { None },
        filters,
        transport_socket: if tls {
            downstream_tls(sr.server, true)
        } else {
            None
        },
        ..FilterChain::default()
    })
}

/// A gateway's HTTP connection manager: the edge of the mesh, so the client is the peer
/// (`use_remote_address`, as istiod's `createGatewayHTTPFilterChainOpts`), and
/// `x-forwarded-client-cert` is replaced by this hop's view of an mTLS client (istiod's
/// gateway default `SANITIZE_SET`, with the subject, certificate, URI and DNS SANs).
fn gateway_hcm(stat: &str, route: &str, filters: Vec<HttpFilter>) -> HttpConnectionManager {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
        ForwardClientCertDetails, SetCurrentClientCertDetails,
    };
    HttpConnectionManager {
        use_remote_address: Some(BoolValue { value: true }),
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            cert: true,
            uri: true,
            dns: true,
            ..SetCurrentClientCertDetails::default()
        }),
        ..hcm_rds(stat, route, filters)
    }
}

/// Listeners for a gateway proxy.
pub fn listeners(ctx: &PushContext, proxy: &Proxy) -> Vec<Listener> {
    let mut out = Vec::new();
    let filters = gateway_http_filters(ctx, proxy);
    let tcp_rbac =
        super::authz::network_filters(&ctx.workload_authz(&proxy.namespace, &proxy.labels));
    for (port, refs) in servers(ctx, proxy) {
        let name = format!("0.0.0.0_{port}");
        let stat = format!("outbound_0.0.0.0_{port}");
        let mut chains = Vec::new();
        let mut tls_inspect = false;
        if refs.iter().any(|s| s.is_plain_http()) {
            let hcm = gateway_hcm(&stat, &format!("http.{port}"), filters.clone());
            chains.push(FilterChain {
                filters: vec![hcm_filter(&hcm)],
                ..FilterChain::default()
            });
        }
        for sr in refs.iter().filter(|s| s.terminates_http()) {
            tls_inspect = true;
            let hcm = gateway_hcm(&stat, &sr.https_route_name(), filters.clone());
            chains.push(FilterChain {
                filter_chain_match: sni_match(&sr.hosts()),
                filters: vec![hcm_filter(&hcm)],
                transport_socket: downstream_tls(sr.server, false),
                ..FilterChain::default()
            });
        }
        for sr in refs.iter().filter(|s| s.is_tcp()) {
            if let Some(chain) = tcp_chain(ctx, proxy, sr, &tcp_rbac) {
                tls_inspect |= chain.filter_chain_match.is_some();
                chains.push(chain);
            }
        }
        for sr in refs
            .iter()
            .filter(|s| s.tls_mode() == Some(ServerTlsMode::Passthrough))
        {
            tls_inspect = true;
            let gw = sr.gateway_name();
            let rc = RouteCtx {
                ctx,
                proxy,
                port: sr.port() as u16,
                gateway: &gw,
            };
            for vs in ctx.virtual_services(&proxy.namespace, &gw) {
                for tr in &vs.config.spec.tls {
                    let Some(dest) = tr.route.first().and_then(|d| d.destination.as_ref()) else {
                        continue;
                    };
                    let cluster = rc.cluster(dest, &vs.config.namespace);
                    let sni: Vec<&str> = tr
                        .r#match
                        .iter()
                        .flat_map(|m| m.sni_hosts.iter().map(String::as_str))
                        .collect();
                    // istiod authorizes TLS passthrough connections with the network RBAC
                    // filters of the AuthorizationPolicies selecting the gateway.
                    let mut filters = tcp_rbac.clone();
                    filters.push(tcp_proxy_filter(&cluster, &cluster));
                    chains.push(FilterChain {
                        filter_chain_match: sni_match(&sni),
                        filters,
                        ..FilterChain::default()
                    });
                }
            }
        }
        if chains.is_empty() {
            continue;
        }
        let listener_filters = if tls_inspect {
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &TlsInspector::default(),
                ))),
                ..ListenerFilter::default()
            }]
        } else {
            Vec::new()
        };
        out.push(Listener {
            name,
            address: Some(socket("0.0.0.0", port)),
            filter_chains: chains,
            listener_filters,
            traffic_direction: envoy_types::pb::envoy::config::core::v3::TrafficDirection::Outbound
                as i32,
            ..Listener::default()
        });
    }
    out
}
