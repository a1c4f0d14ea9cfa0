//! The semantic comparison of two xDS servers' answers to one node: each resource is reduced
//! to **facts** (`<kind> <name> <field path>` → value) covering what decides traffic, and the
//! two fact sets are compared. What is compared (everything else is not):
//!
//! - the names of clusters, load assignments, listeners and route configurations;
//! - per cluster: discovery type, LB policy and its config, connect timeout, circuit breakers,
//!   outlier detection, common LB config, the upstream protocol, DNS lookup family, the TLS of
//!   `transport_socket` and each `transport_socket_matches` entry (SNI, ALPN, client
//!   certificate, validation, SANs), inline endpoints;
//! - per load assignment: localities with priority and weight, endpoints with weight, health
//!   and auto-mTLS label;
//! - per listener: address, `use_original_dst`, listener filters (with their `filter_disabled`
//!   predicates), and per filter chain (keyed
//!   by its match) the downstream TLS and the terminal filter (HCM: route source and HTTP filter
//!   order; TCP proxy: cluster and weights);
//! - the security filters of a chain (`security`): each HTTP and network RBAC filter (its
//!   action in the filter order, and per policy by name its permissions and principals as
//!   normalised matcher expressions) and the JWT filter (per provider its issuer, audiences,
//!   JWKS keys by `kid`/`kty`, token locations, forwarding, payload metadata and
//!   `clear_route_cache`; its requirement rules);
//! - per route configuration: virtual hosts with domains, and per route in order its match,
//!   action (cluster, weights, rewrites, redirect, direct response), timeouts, retries, hash
//!   policy, mirrors, header changes and per-filter config (fault, CORS).
//!
//! **The Istio-only rule:** filters that only feed Istio's telemetry or Wasm (names starting
//! with `istio.`, `envoy.wasm`, `envoy.filters.http.wasm`, `envoy.filters.network.wasm`,
//! `envoy.filters.http.grpc_stats`, metadata exchange) are dropped from every filter list
//! before comparing: Capstan's proxy produces Istio's metrics itself.
#![allow(dead_code, deprecated)]

use anyhow::{Context, Result};
use capstan_proxy::resources::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, Address, TransportSocket};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, FilterChain, FilterChainMatch, Listener, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::config::route::v3::{route, RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options, HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

mod security;

pub use crate::xds_fetch::Fetched;

/// Facts: `<kind> <name> <field path>` → value.
pub type Facts = BTreeMap<String, String>;

/// Whether a filter only feeds Istio's telemetry or Wasm (the documented Istio-only rule).
pub fn istio_only(filter: &str) -> bool {
    filter.starts_with("istio.")
        || filter.starts_with("envoy.wasm")
        || filter == "envoy.filters.http.wasm"
        || filter == "envoy.filters.network.wasm"
        || filter == "envoy.filters.http.grpc_stats"
        || filter.contains("metadata_exchange")
        || filter.contains("metadataexchange")
}

fn decode<M: Message + Default>(any: &Any) -> Result<M> {
    M::decode(any.value.as_slice()).with_context(|| format!("decoding {}", any.type_url))
}

/// Debug output on one line.
fn dbg<T: Debug>(v: &T) -> String {
    format!("{v:?}")
}

fn dur(d: &Option<envoy_types::pb::google::protobuf::Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => format!("{}ms", d.seconds * 1000 + i64::from(d.nanos) / 1_000_000),
    }
}

fn addr(a: &Option<Address>) -> String {
    match a.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => {
            let port = match &s.port_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p.to_string(),
                other => dbg(other),
            };
            format!("{}:{port}", s.address)
        }
        Some(other) => dbg(other),
        None => "-".into(),
    }
}

/// Every resource of both kinds of answer reduced to facts.
pub fn facts(fetched: &Fetched) -> Result<Facts> {
    let mut f = Facts::new();
    for (type_url, resources) in fetched {
        for (name, u) in resources {
            let at = |kind: &str| format!("{kind} {name}");
            match *type_url {
                CLUSTER => cluster_facts(&at("cluster"), &decode(&u.resource)?, &mut f)?,
                ENDPOINT => cla_facts(&at("endpoints"), &decode(&u.resource)?, &mut f),
                LISTENER => listener_facts(&at("listener"), &decode(&u.resource)?, &mut f)?,
                ROUTE => routes_facts(&at("routes"), &decode(&u.resource)?, &mut f)?,
                _ => {}
            }
        }
    }
    Ok(f)
}

/// Separates the levels of a fact's path (resource, chain, virtual host, route, field).
pub const LEVEL: &str = " / ";

fn put(f: &mut Facts, at: &str, field: &str, value: impl Into<String>) {
    f.insert(format!("{at}{LEVEL}{field}"), value.into());
}

/// `at` one level down.
fn child(at: &str, level: &str) -> String {
    format!("{at}{LEVEL}{level}")
}

fn cluster_facts(at: &str, c: &Cluster, f: &mut Facts) -> Result<()> {
    put(f, at, "exists", "yes");
    let kind = match &c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_else(|_| t.to_string()),
        Some(cluster::ClusterDiscoveryType::ClusterType(t)) => format!("custom {}", t.name),
        None => "STATIC".into(),
    };
    put(f, at, "type", kind);
    if let Some(eds) = &c.eds_cluster_config {
        if !eds.service_name.is_empty() && eds.service_name != c.name {
            put(f, at, "eds.service_name", eds.service_name.clone());
        }
    }
    put(
        f,
        at,
        "lb_policy",
        cluster::LbPolicy::try_from(c.lb_policy)
            .map(|p| p.as_str_name().to_string())
            .unwrap_or_default(),
    );
    if let Some(lb) = &c.lb_config {
        put(f, at, "lb_config", dbg(lb));
    }
    put(f, at, "connect_timeout", dur(&c.connect_timeout));
    if let Some(cb) = &c.circuit_breakers {
        for t in &cb.thresholds {
            let p = t.priority;
            let v = |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
                x.as_ref().map_or("-".into(), |x| x.value.to_string())
            };
            put(
                f,
                at,
                &format!("circuit_breakers[priority {p}]"),
                format!(
                    "connections={} pending={} requests={} retries={} budget={}",
                    v(&t.max_connections),
                    v(&t.max_pending_requests),
                    v(&t.max_requests),
                    v(&t.max_retries),
                    t.retry_budget.as_ref().map_or("-".into(), dbg),
                ),
            );
        }
    }
    if let Some(od) = &c.outlier_detection {
        put(f, at, "outlier_detection", dbg(od));
    }
    if let Some(lb) = c
        .common_lb_config
        .as_ref()
        .filter(|lb| **lb != Default::default())
    {
        put(f, at, "common_lb_config", dbg(lb));
    }
    if c.dns_lookup_family != 0 && kind_is_dns(c) {
        put(f, at, "dns_lookup_family", c.dns_lookup_family.to_string());
    }
    let proto = c
        .typed_extension_protocol_options
        .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        .map(decode::<HttpProtocolOptions>)
        .transpose()?;
    if let Some(n) = &c.max_requests_per_connection {
        put(f, at, "max_requests_per_connection", n.value.to_string());
    }
    if let Some(p) = proto {
        let upstream = match &p.upstream_protocol_options {
            Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
                match &e.protocol_config {
                    Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)) => "explicit h2",
                    Some(http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(_)) => "explicit http/1.1",
                    _ => "explicit other",
                }
            }
            Some(http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                "use downstream"
            }
            Some(http_protocol_options::UpstreamProtocolOptions::AutoConfig(_)) => "auto",
            None => "-",
        };
        put(f, at, "upstream_protocol", upstream);
        if let Some(common) = &p.common_http_protocol_options {
            if let Some(n) = common.max_requests_per_connection {
                put(f, at, "max_requests_per_connection", n.value.to_string());
            }
            if common.idle_timeout.is_some() {
                put(f, at, "idle_timeout", dur(&common.idle_timeout));
            }
        }
    }
    put(
        f,
        at,
        "transport_socket",
        upstream_tls(&c.transport_socket)?,
    );
    for m in &c.transport_socket_matches {
        put(
            f,
            at,
            &format!(
                "transport_socket_matches[{} {}]",
                m.name,
                match_struct(&m.r#match)
            ),
            upstream_tls(&m.transport_socket)?,
        );
    }
    if let Some(cla) = &c.load_assignment {
        if !cla.endpoints.is_empty() {
            cla_facts(&child(at, "load_assignment"), cla, f);
        }
    }
    Ok(())
}

fn kind_is_dns(c: &Cluster) -> bool {
    matches!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(t))
            if t == cluster::DiscoveryType::StrictDns as i32
                || t == cluster::DiscoveryType::LogicalDns as i32
    )
}

/// A `Struct` as sorted `k=v` pairs (nested structs flattened with dots).
fn match_struct(s: &Option<Struct>) -> String {
    fn walk(prefix: &str, s: &Struct, out: &mut Vec<String>) {
        for (k, v) in &s.fields {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match &v.kind {
                Some(Kind::StructValue(inner)) => walk(&key, inner, out),
                Some(Kind::StringValue(x)) => out.push(format!("{key}={x}")),
                other => out.push(format!("{key}={other:?}")),
            }
        }
    }
    let mut out = Vec::new();
    if let Some(s) = s {
        walk("", s, &mut out);
    }
    out.sort();
    format!("{{{}}}", out.join(","))
}

fn sds_or_file(c: &CommonTlsContext) -> (String, String) {
    let cert = if !c.tls_certificate_sds_secret_configs.is_empty() {
        c.tls_certificate_sds_secret_configs
            .iter()
            .map(|s| format!("sds:{}", s.name))
            .collect::<Vec<_>>()
            .join("+")
    } else if !c.tls_certificates.is_empty() {
        "inline/file".into()
    } else {
        "none".into()
    };
    let validation = match &c.validation_context_type {
        None => "none".into(),
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => format!(
            "static ca={} sans={}",
            v.trusted_ca.is_some(),
            sans(&v.match_subject_alt_names, &v.match_typed_subject_alt_names)
        ),
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            format!("sds:{}", s.name)
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            let d = c.default_validation_context.as_ref();
            format!(
                "sds:{} sans={}",
                c.validation_context_sds_secret_config
                    .as_ref()
                    .map_or("-", |s| s.name.as_str()),
                d.map_or("[]".into(), |d| sans(
                    &d.match_subject_alt_names,
                    &d.match_typed_subject_alt_names
                ))
            )
        }
        Some(other) => dbg(other),
    };
    (cert, validation)
}

fn sans(
    untyped: &[envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher],
    typed: &[envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher],
) -> String {
    let mut all: Vec<String> = untyped
        .iter()
        .map(|m| dbg(&m.match_pattern))
        .chain(
            typed
                .iter()
                .map(|m| format!("{} {:?}", m.san_type, m.matcher)),
        )
        .collect();
    all.sort();
    format!("[{}]", all.join(", "))
}

fn upstream_tls(ts: &Option<TransportSocket>) -> Result<String> {
    let Some(ts) = ts else {
        return Ok("plaintext".into());
    };
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &ts.config_type
    else {
        return Ok(format!("{} (no config)", ts.name));
    };
    if any.type_url.ends_with("RawBuffer") {
        return Ok("plaintext".into());
    }
    if !any.type_url.ends_with("UpstreamTlsContext") {
        return Ok(any.type_url.clone());
    }
    let tls: UpstreamTlsContext = decode(any)?;
    let common = tls.common_tls_context.unwrap_or_default();
    let (cert, validation) = sds_or_file(&common);
    let mut alpn = common.alpn_protocols.clone();
    alpn.retain(|a| a != "istio-peer-exchange");
    Ok(format!(
        "tls sni={} alpn={alpn:?} cert={cert} validation={validation}",
        tls.sni
    ))
}

fn cla_facts(at: &str, cla: &ClusterLoadAssignment, f: &mut Facts) {
    put(f, at, "exists", "yes");
    for l in &cla.endpoints {
        let loc = l
            .locality
            .as_ref()
            .filter(|l| **l != Default::default())
            .map_or("-".into(), |l| {
                format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
            });
        let mut eps: Vec<String> = l
            .lb_endpoints
            .iter()
            .map(|e| {
                let address = match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => addr(&ep.address),
                    other => dbg(other),
                };
                let tls = e
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                    .map(|s| match_struct(&Some(s.clone())))
                    .unwrap_or_default();
                format!(
                    "{address} w={} health={} {tls}",
                    e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                    e.health_status
                )
            })
            .collect();
        eps.sort();
        put(
            f,
            at,
            // A locality weight counts only for a real locality (locality-weighted LB).
            &if loc == "-" {
                format!("locality[- p{}]", l.priority)
            } else {
                format!(
                    "locality[{loc} p{} w{}]",
                    l.priority,
                    l.load_balancing_weight.as_ref().map_or(0, |w| w.value)
                )
            },
            eps.join("; "),
        );
    }
    if let Some(p) = &cla.policy {
        if p.overprovisioning_factor.is_some() {
            put(
                f,
                at,
                "overprovisioning_factor",
                dbg(&p.overprovisioning_factor),
            );
        }
    }
}

fn chain_match(m: &Option<FilterChainMatch>) -> String {
    let Some(m) = m else {
        return "any".into();
    };
    let mut parts = Vec::new();
    if let Some(p) = &m.destination_port {
        parts.push(format!("port={}", p.value));
    }
    let cidrs = |r: &[envoy_types::pb::envoy::config::core::v3::CidrRange]| {
        let mut v: Vec<String> = r
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.address_prefix,
                    c.prefix_len.as_ref().map_or(0, |p| p.value)
                )
            })
            .collect();
        v.sort();
        v.join(",")
    };
    if !m.prefix_ranges.is_empty() {
        parts.push(format!("dst={}", cidrs(&m.prefix_ranges)));
    }
    if !m.source_prefix_ranges.is_empty() {
        parts.push(format!("src={}", cidrs(&m.source_prefix_ranges)));
    }
    if !m.server_names.is_empty() {
        let mut s = m.server_names.clone();
        s.sort();
        parts.push(format!("sni={}", s.join(",")));
    }
    if !m.transport_protocol.is_empty() {
        parts.push(format!("transport={}", m.transport_protocol));
    }
    if !m.application_protocols.is_empty() {
        let mut a = m.application_protocols.clone();
        a.sort();
        parts.push(format!("alpn={}", a.join(",")));
    }
    if m.source_type != 0 {
        parts.push(format!("source_type={}", m.source_type));
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(" ")
    }
}

fn listener_facts(at: &str, l: &Listener, f: &mut Facts) -> Result<()> {
    put(f, at, "exists", "yes");
    put(f, at, "address", addr(&l.address));
    if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
        put(f, at, "use_original_dst", "true");
    }
    if l.bind_to_port.as_ref().is_some_and(|b| !b.value) {
        put(f, at, "bind_to_port", "false");
    }
    let lf: Vec<String> = l
        .listener_filters
        .iter()
        .filter(|x| !istio_only(&x.name))
        .map(|x| match &x.filter_disabled {
            None => x.name.clone(),
            Some(p) => format!("{} disabled={}", x.name, listener_predicate(p)),
        })
        .collect();
    put(f, at, "listener_filters", lf.join(","));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for chain in &l.filter_chains {
        let m = chain_match(&chain.filter_chain_match);
        let n = seen.entry(m.clone()).or_default();
        let key = if *n == 0 {
            format!("chain[{m}]")
        } else {
            format!("chain[{m}]#{n}")
        };
        *n += 1;
        chain_facts(&child(at, &key), chain, f)?;
    }
    if let Some(chain) = &l.default_filter_chain {
        chain_facts(&child(at, "default_chain"), chain, f)?;
    }
    Ok(())
}

/// A listener filter's `filter_disabled`, in one line: `or(9080..9081,15006..15007)`.
fn listener_predicate(p: &ListenerFilterChainMatchPredicate) -> String {
    use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::Rule;
    let set = |rules: &[ListenerFilterChainMatchPredicate]| {
        rules
            .iter()
            .map(listener_predicate)
            .collect::<Vec<_>>()
            .join(",")
    };
    match &p.rule {
        None => "none".into(),
        Some(Rule::OrMatch(s)) => format!("or({})", set(&s.rules)),
        Some(Rule::AndMatch(s)) => format!("and({})", set(&s.rules)),
        Some(Rule::NotMatch(r)) => format!("not({})", listener_predicate(r)),
        Some(Rule::AnyMatch(b)) => format!("any={b}"),
        Some(Rule::DestinationPortRange(r)) => format!("{}..{}", r.start, r.end),
    }
}

fn chain_facts(at: &str, chain: &FilterChain, f: &mut Facts) -> Result<()> {
    put(f, at, "exists", "yes");
    if let Some(ts) = &chain.transport_socket {
        if let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &ts.config_type
        {
            if any.type_url.ends_with("DownstreamTlsContext") {
                let tls: DownstreamTlsContext = decode(any)?;
                let common = tls.common_tls_context.unwrap_or_default();
                let (cert, validation) = sds_or_file(&common);
                let mut alpn = common.alpn_protocols.clone();
                alpn.retain(|a| a != "istio-peer-exchange");
                put(
                    f,
                    at,
                    "tls",
                    format!(
                        "require_client_cert={} alpn={alpn:?} cert={cert} validation={validation}",
                        tls.require_client_certificate
                            .as_ref()
                            .is_some_and(|b| b.value)
                    ),
                );
            }
        }
    }
    let typed = |c: &Option<filter::ConfigType>| match c {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any.clone()),
        _ => None,
    };
    let filters: Vec<String> = chain
        .filters
        .iter()
        .filter(|x| !istio_only(&x.name))
        .map(|x| security::filter_label(&x.name, typed(&x.config_type).as_ref()))
        .collect();
    put(f, at, "filters", filters.join(","));
    let mut seen = BTreeMap::new();
    for nf in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &nf.config_type else {
            continue;
        };
        security::filter_facts(at, "tcp", any, &mut seen, f)?;
        if any.type_url.ends_with("HttpConnectionManager") {
            let hcm: HttpConnectionManager = decode(any)?;
            let routes = match &hcm.route_specifier {
                Some(RouteSpecifier::Rds(r)) => format!("rds:{}", r.route_config_name),
                Some(RouteSpecifier::RouteConfig(rc)) => {
                    routes_facts(&child(at, "inline_routes"), rc, f)?;
                    "inline".into()
                }
                other => dbg(other),
            };
            put(f, at, "http.routes", routes);
            use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
            let typed = |c: &Option<http_filter::ConfigType>| match c {
                Some(http_filter::ConfigType::TypedConfig(any)) => Some(any.clone()),
                _ => None,
            };
            let hf: Vec<String> = hcm
                .http_filters
                .iter()
                .filter(|x| !istio_only(&x.name))
                .map(|x| security::filter_label(&x.name, typed(&x.config_type).as_ref()))
                .collect();
            put(f, at, "http.filters", hf.join(","));
            let mut seen = BTreeMap::new();
            for x in &hcm.http_filters {
                if let Some(any) = typed(&x.config_type) {
                    security::filter_facts(at, "http", &any, &mut seen, f)?;
                }
            }
            let upgrades: Vec<String> = hcm
                .upgrade_configs
                .iter()
                .map(|u| match &u.enabled {
                    Some(b) => format!("{}={}", u.upgrade_type, b.value),
                    None => u.upgrade_type.clone(),
                })
                .collect();
            put(f, at, "http.upgrades", upgrades.join(","));
            // Envoy's default is 5 minutes; 0 disables it.
            put(
                f,
                at,
                "http.stream_idle_timeout",
                if hcm.stream_idle_timeout.is_some() {
                    dur(&hcm.stream_idle_timeout)
                } else {
                    "300000ms (default)".into()
                },
            );
            if hcm.use_remote_address.as_ref().is_some_and(|b| b.value) {
                put(f, at, "http.use_remote_address", "true");
            }
            if hcm.forward_client_cert_details != 0 {
                put(
                    f,
                    at,
                    "http.forward_client_cert_details",
                    hcm.forward_client_cert_details.to_string(),
                );
            }
        } else if any.type_url.ends_with("TcpProxy") {
            let tcp: TcpProxy = decode(any)?;
            let target = match &tcp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => c.clone(),
                Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                    let mut v: Vec<String> = w
                        .clusters
                        .iter()
                        .map(|c| format!("{}:{}", c.name, c.weight))
                        .collect();
                    v.sort();
                    format!("weighted[{}]", v.join(", "))
                }
                None => "-".into(),
            };
            put(f, at, "tcp.cluster", target);
            if tcp.idle_timeout.is_some() {
                put(f, at, "tcp.idle_timeout", dur(&tcp.idle_timeout));
            }
        }
    }
    Ok(())
}

fn routes_facts(at: &str, rc: &RouteConfiguration, f: &mut Facts) -> Result<()> {
    put(f, at, "exists", "yes");
    let mut names = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        names.insert(vh.name.clone());
        vhost_facts(&child(at, &format!("vhost[{}]", vh.name)), vh, f)?;
    }
    if rc.ignore_port_in_host_matching {
        put(f, at, "ignore_port_in_host_matching", "true");
    }
    if rc.validate_clusters.as_ref().is_some_and(|b| b.value) {
        put(f, at, "validate_clusters", "true");
    }
    Ok(())
}

fn vhost_facts(at: &str, vh: &VirtualHost, f: &mut Facts) -> Result<()> {
    put(f, at, "exists", "yes");
    let mut domains = vh.domains.clone();
    domains.sort();
    put(f, at, "domains", domains.join(","));
    if let Some(r) = &vh.retry_policy {
        retry_facts(&child(at, "retry_policy"), r, f);
    }
    if vh.include_request_attempt_count {
        put(f, at, "include_request_attempt_count", "true");
    }
    for (i, r) in vh.routes.iter().enumerate() {
        let at = child(at, &format!("route[{i}]"));
        put(f, &at, "exists", "yes");
        let mut m = r.r#match.clone().unwrap_or_default();
        // Case-sensitive is the default.
        if m.case_sensitive.as_ref().is_some_and(|b| b.value) {
            m.case_sensitive = None;
        }
        put(f, &at, "match", dbg(&m));
        per_filter(&at, &r.typed_per_filter_config, f)?;
        if !r.request_headers_to_add.is_empty() || !r.request_headers_to_remove.is_empty() {
            put(
                f,
                &at,
                "request_headers",
                format!(
                    "{:?} -{:?}",
                    r.request_headers_to_add, r.request_headers_to_remove
                ),
            );
        }
        if !r.response_headers_to_add.is_empty() || !r.response_headers_to_remove.is_empty() {
            put(
                f,
                &at,
                "response_headers",
                format!(
                    "{:?} -{:?}",
                    r.response_headers_to_add, r.response_headers_to_remove
                ),
            );
        }
        match &r.action {
            Some(route::Action::Route(ra)) => {
                use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
                let target = match &ra.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => c.clone(),
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        let v: Vec<String> = w
                            .clusters
                            .iter()
                            .map(|c| {
                                format!("{}:{}", c.name, c.weight.as_ref().map_or(0, |w| w.value))
                            })
                            .collect();
                        format!("weighted[{}]", v.join(", "))
                    }
                    Some(ClusterSpecifier::ClusterHeader(h)) => format!("header:{h}"),
                    other => dbg(other),
                };
                put(f, &at, "route.cluster", target);
                put(f, &at, "route.timeout", dur(&ra.timeout));
                if ra.max_grpc_timeout.is_some() {
                    put(f, &at, "route.max_grpc_timeout", dur(&ra.max_grpc_timeout));
                }
                if ra.idle_timeout.is_some() {
                    put(f, &at, "route.idle_timeout", dur(&ra.idle_timeout));
                }
                if let Some(rp) = &ra.retry_policy {
                    retry_facts(&child(&at, "route.retry_policy"), rp, f);
                }
                if !ra.hash_policy.is_empty() {
                    put(f, &at, "route.hash_policy", dbg(&ra.hash_policy));
                }
                if !ra.request_mirror_policies.is_empty() {
                    let m: Vec<String> = ra
                        .request_mirror_policies
                        .iter()
                        .map(|m| format!("{} {:?}", m.cluster, m.runtime_fraction))
                        .collect();
                    put(f, &at, "route.mirrors", m.join("; "));
                }
                if !ra.prefix_rewrite.is_empty() {
                    put(f, &at, "route.prefix_rewrite", ra.prefix_rewrite.clone());
                }
                if let Some(r) = &ra.regex_rewrite {
                    put(f, &at, "route.regex_rewrite", dbg(r));
                }
                if let Some(h) = &ra.host_rewrite_specifier {
                    put(f, &at, "route.host_rewrite", dbg(h));
                }
                if let Some(t) = &ra.max_stream_duration {
                    put(f, &at, "route.max_stream_duration", dbg(t));
                }
                if !ra.upgrade_configs.is_empty() {
                    let u: Vec<&str> = ra
                        .upgrade_configs
                        .iter()
                        .map(|u| u.upgrade_type.as_str())
                        .collect();
                    put(f, &at, "route.upgrades", u.join(","));
                }
                if let Some(c) = &ra.cors {
                    put(f, &at, "route.cors", dbg(c));
                }
            }
            Some(route::Action::Redirect(r)) => put(f, &at, "redirect", dbg(r)),
            Some(route::Action::DirectResponse(d)) => put(
                f,
                &at,
                "direct_response",
                format!(
                    "{} {:?}",
                    d.status,
                    d.body.as_ref().map(|b| dbg(&b.specifier))
                ),
            ),
            other => put(f, &at, "action", dbg(other)),
        }
    }
    Ok(())
}

fn per_filter(at: &str, cfg: &std::collections::HashMap<String, Any>, f: &mut Facts) -> Result<()> {
    for (name, any) in cfg {
        if istio_only(name) {
            continue;
        }
        let value = if any.type_url.ends_with("HTTPFault") {
            fault(&decode::<HttpFault>(any)?)
        } else {
            format!("{} ({} bytes)", any.type_url, any.value.len())
        };
        put(f, at, &format!("per_filter[{name}]"), value);
    }
    Ok(())
}

fn percent(p: &Option<envoy_types::pb::envoy::r#type::v3::FractionalPercent>) -> String {
    let Some(p) = p else {
        return "unset".into();
    };
    let per = match p.denominator {
        0 => 100.0,
        1 => 10_000.0,
        _ => 1_000_000.0,
    };
    format!("{}%", f64::from(p.numerator) * 100.0 / per)
}

/// A fault filter config: delay and abort with their percentages normalised.
fn fault(h: &HttpFault) -> String {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
    let delay = h.delay.as_ref().map(|d| {
        let how = match &d.fault_delay_secifier {
            Some(FaultDelaySecifier::FixedDelay(x)) => dur(&Some(*x)),
            other => dbg(other),
        };
        format!("delay {how} at {}", percent(&d.percentage))
    });
    let abort = h.abort.as_ref().map(|a| {
        let what = match &a.error_type {
            Some(ErrorType::HttpStatus(s)) => format!("http {s}"),
            Some(ErrorType::GrpcStatus(s)) => format!("grpc {s}"),
            other => dbg(other),
        };
        format!("abort {what} at {}", percent(&a.percentage))
    });
    let mut parts: Vec<String> = delay.into_iter().chain(abort).collect();
    if !h.headers.is_empty() {
        parts.push(format!("headers {:?}", h.headers));
    }
    if let Some(m) = &h.max_active_faults {
        parts.push(format!("max_active {}", m.value));
    }
    parts.join("; ")
}

/// A retry policy, field by field.
fn retry_facts(
    at: &str,
    r: &envoy_types::pb::envoy::config::route::v3::RetryPolicy,
    f: &mut Facts,
) {
    put(f, at, "retry_on", r.retry_on.clone());
    put(
        f,
        at,
        "num_retries",
        r.num_retries
            .as_ref()
            .map_or("1 (default)".into(), |n| n.value.to_string()),
    );
    if r.per_try_timeout.is_some() {
        put(f, at, "per_try_timeout", dur(&r.per_try_timeout));
    }
    let mut codes = r.retriable_status_codes.clone();
    codes.sort_unstable();
    if !codes.is_empty() {
        put(f, at, "retriable_status_codes", format!("{codes:?}"));
    }
    let hosts: Vec<&str> = r
        .retry_host_predicate
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if !hosts.is_empty() {
        put(f, at, "retry_host_predicate", hosts.join(","));
    }
    if r.host_selection_retry_max_attempts != 0 {
        put(
            f,
            at,
            "host_selection_retry_max_attempts",
            r.host_selection_retry_max_attempts.to_string(),
        );
    }
    if let Some(p) = &r.retry_priority {
        put(f, at, "retry_priority", p.name.clone());
    }
    if let Some(b) = &r.retry_back_off {
        put(
            f,
            at,
            "retry_back_off",
            format!("{} max {}", dur(&b.base_interval), dur(&b.max_interval)),
        );
    }
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    /// `<kind> <name> <field path>`.
    pub path: String,
    pub reference: Option<String>,
    pub capstan: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{}\n    istiod:  {}\n    capstan: {}",
            self.path,
            show(&self.reference),
            show(&self.capstan)
        )
    }
}

/// The differences; a resource present on one side only is one difference (`... exists`), not
/// one per fact.
pub fn diff(reference: &Facts, capstan: &Facts) -> Vec<Difference> {
    // Whether an object above the fact (resource, chain, virtual host, route) is missing on
    // one side: its `exists` difference is the one reported.
    let under_missing = |path: &str| -> bool {
        let levels: Vec<&str> = path.split(LEVEL).collect();
        (1..levels.len()).any(|n| {
            let exists = format!("{}{LEVEL}exists", levels[..n].join(LEVEL));
            exists != path && (reference.contains_key(&exists) != capstan.contains_key(&exists))
        })
    };
    let keys: BTreeSet<&String> = reference.keys().chain(capstan.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (a, b) = (reference.get(k), capstan.get(k));
        if a == b || under_missing(k) {
            continue;
        }
        out.push(Difference {
            path: k.clone(),
            reference: a.cloned(),
            capstan: b.cloned(),
        });
    }
    out
}

/// `pattern` with `*` matching any text (case-sensitive).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("cluster * lb_policy", "cluster a|b lb_policy"));
        assert!(glob("*", "x"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abde"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("ab*", "ab"));
    }

    #[test]
    fn a_resource_missing_on_one_side_is_one_difference() {
        let facts = |pairs: &[(&str, &str)]| -> Facts {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = facts(&[
            ("cluster x / exists", "yes"),
            ("cluster x / type", "EDS"),
            ("cluster y / exists", "yes"),
            ("cluster y / type", "EDS"),
            ("listener l / exists", "yes"),
            ("listener l / chain[a] / exists", "yes"),
            ("listener l / chain[a] / filters", "tcp"),
        ]);
        let b = facts(&[
            ("cluster y / exists", "yes"),
            ("cluster y / type", "STATIC"),
            ("listener l / exists", "yes"),
            ("listener l / chain[b] / exists", "yes"),
            ("listener l / chain[b] / filters", "tcp"),
        ]);
        let d = diff(&a, &b);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "cluster x / exists",
                "cluster y / type",
                "listener l / chain[a] / exists",
                "listener l / chain[b] / exists"
            ]
        );
    }

    #[test]
    fn istio_only_filters_are_the_documented_ones() {
        for f in [
            "istio.stats",
            "istio.metadata_exchange",
            "envoy.filters.http.grpc_stats",
            "envoy.filters.http.wasm",
        ] {
            assert!(istio_only(f), "{f}");
        }
        for f in [
            "envoy.filters.http.router",
            "envoy.filters.http.fault",
            "envoy.filters.http.rbac",
        ] {
            assert!(!istio_only(f), "{f}");
        }
    }
}
