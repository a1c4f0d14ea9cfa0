//! Gateways (`router` proxies): listeners `0.0.0.0_PORT` from the servers of Gateways that
//! select the proxy, plain HTTP → HCM with routes `http.PORT`, HTTPS SIMPLE/MUTUAL → TLS
//! termination with routes `https.PORT.PORTNAME.GATEWAY.NAMESPACE`, PASSTHROUGH → SNI chains
//! with TCP proxies; and the route configurations for them.

use super::common::{any, hcm_filter, hcm_rds, http_filters, socket, tcp_proxy_filter};
use super::rds_route::{route_match, virtual_service_routes, RouteCtx};
use crate::context::{host_matches, ConfigEntry, PushContext};
use crate::proxy::Proxy;
use capstan_api::networking::{Gateway, Server, ServerTlsMode};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, virtual_host, DirectResponseAction, Route, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{self, CombinedCertificateValidationContext},
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::BTreeMap;
use std::sync::Arc;

struct ServerRef<'a> {
    gateway: &'a Arc<ConfigEntry<Gateway>>,
    server: &'a Server,
}

impl ServerRef<'_> {
    fn gateway_name(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
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
    fn is_plain_http(&self) -> bool {
        matches!(self.protocol().as_str(), "HTTP" | "HTTP2" | "GRPC")
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
    fn hosts(&self) -> Vec<&str> {
        self.server
            .hosts
            .iter()
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h))
            .collect()
    }
    fn https_route_name(&self, port: u32) -> String {
        let port_name = self
            .server
            .port
            .as_ref()
            .map(|p| p.name.as_str())
            .unwrap_or("");
        format!(
            "https.{port}.{port_name}.{}.{}",
            self.gateway.name, self.gateway.namespace
        )
    }
}

fn servers<'a>(ctx: &'a PushContext, proxy: &Proxy) -> BTreeMap<u32, Vec<ServerRef<'a>>> {
    let mut out: BTreeMap<u32, Vec<ServerRef<'a>>> = BTreeMap::new();
    for gateway in ctx.gateways_for(proxy) {
        for server in &gateway.spec.servers {
            if let Some(port) = &server.port {
                out.entry(port.number)
                    .or_default()
                    .push(ServerRef { gateway, server });
            }
        }
    }
    out
}

fn virtual_hosts(
    ctx: &PushContext,
    proxy: &Proxy,
    port: u32,
    refs: &[&ServerRef<'_>],
) -> Vec<VirtualHost> {
    let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for sr in refs {
        let gw = sr.gateway_name();
        let rc = RouteCtx {
            ctx,
            proxy,
            port: port as u16,
            gateway: &gw,
        };
        let server_hosts = sr.hosts();
        let redirect = sr.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for vs in ctx.virtual_services(&proxy.namespace, &gw) {
            for host in &vs.hosts {
                if !server_hosts
                    .iter()
                    .any(|s| host_matches(s, host) || host_matches(host, s))
                {
                    continue;
                }
                let vh = hosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone(), format!("{host}:*")],
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
                virtual_hosts: virtual_hosts(ctx, proxy, port, &plain),
                validate_clusters: Some(BoolValue { value: false }),
                ..RouteConfiguration::default()
            });
        }
        for sr in refs.iter().filter(|s| s.terminates_http()) {
            out.push(RouteConfiguration {
                name: sr.https_route_name(port),
                virtual_hosts: virtual_hosts(ctx, proxy, port, &[sr]),
                validate_clusters: Some(BoolValue { value: false }),
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
fn downstream_tls(server: &Server) -> Option<TransportSocket> {
    let tls = server.tls.as_ref()?;
    let mutual = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::IstioMutual)
    );
    // OPTIONAL_MUTUAL verifies a client certificate when one is shown.
    let verify = mutual || tls.mode == Some(ServerTlsMode::OptionalMutual);
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
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
    let mut out: Vec<HttpFilter> = super::jwt::jwt_filter(&rules, ctx.jwks())
        .into_iter()
        .collect();
    out.extend(super::authz::http_filters(
        &ctx.workload_authz(&proxy.namespace, &proxy.labels),
    ));
    out.extend(http_filters(true, true));
    out
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
            let hcm = hcm_rds(&stat, &format!("http.{port}"), filters.clone());
            chains.push(FilterChain {
                filters: vec![hcm_filter(&hcm)],
                ..FilterChain::default()
            });
        }
        for sr in refs.iter().filter(|s| s.terminates_http()) {
            tls_inspect = true;
            let hcm = hcm_rds(&stat, &sr.https_route_name(port), filters.clone());
            chains.push(FilterChain {
                filter_chain_match: sni_match(&sr.hosts()),
                filters: vec![hcm_filter(&hcm)],
                transport_socket: downstream_tls(sr.server),
                ..FilterChain::default()
            });
        }
        for sr in refs
            .iter()
            .filter(|s| s.tls_mode() == Some(ServerTlsMode::Passthrough))
        {
            tls_inspect = true;
            let gw = sr.gateway_name();
            for vs in ctx.virtual_services(&proxy.namespace, &gw) {
                for tr in &vs.config.spec.tls {
                    let Some(dest) = tr.route.first().and_then(|d| d.destination.as_ref()) else {
                        continue;
                    };
                    let rc = RouteCtx {
                        ctx,
                        proxy,
                        port: port as u16,
                        gateway: &gw,
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
