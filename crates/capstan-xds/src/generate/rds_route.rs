//! One VirtualService http route → Envoy routes: matches, destinations, redirects, rewrites,
//! timeouts, retries, faults, mirrors, header manipulation and CORS, with Istio's defaults.

use super::cds_policy::EffectivePolicy;
use super::common::{any, cluster_name, duration, secs, u32v, CORS_FILTER, FAULT_FILTER};
use crate::context::{selects, PushContext, VirtualServiceEntry};
use crate::proxy::Proxy;
use capstan_api::common::{Percent, StringMatch};
use capstan_api::networking::{
    CorsPolicy, Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest, HttpRetry,
    HttpRoute,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, header_value_option::HeaderAppendAction, DataSource, HeaderValue,
    HeaderValueOption, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route, route_action,
    route_match, weighted_cluster, DirectResponseAction, HeaderMatcher, QueryParameterMatcher,
    RedirectAction, RetryPolicy, Route, RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use envoy_types::pb::google::protobuf::BoolValue;

/// Istio's default `retryOn`.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Where routes are being built.
pub struct RouteCtx<'a> {
    /// The push context.
    pub ctx: &'a PushContext,
    /// The proxy.
    pub proxy: &'a Proxy,
    /// The port the route configuration serves.
    pub port: u16,
    /// `mesh` or the gateway's `ns/name`.
    pub gateway: &'a str,
}

impl RouteCtx<'_> {
    /// The host and port a destination written in a VirtualService of `namespace` goes to.
    fn target(&self, d: &Destination, namespace: &str) -> (String, u16) {
        let host = self.ctx.resolve_host(&d.host, namespace);
        let port = d
            .port
            .map(|p| p.number as u16)
            .or_else(|| {
                self.ctx
                    .services
                    .service(&host)
                    .filter(|s| s.ports.len() == 1)
                    .map(|s| s.ports[0].port)
            })
            .unwrap_or(self.port);
        (host, port)
    }

    /// Cluster name for a destination written in a VirtualService of `namespace`.
    pub fn cluster(&self, d: &Destination, namespace: &str) -> String {
        let (host, port) = self.target(d, namespace);
        cluster_name("outbound", port, &d.subset, &host)
    }

    /// The route hash policy for a destination whose DestinationRule (for this proxy) asks for
    /// consistent hashing (subset and port-level settings override the top level), as Istio's
    /// `consistentHashToHashPolicy`: the cluster's ring hash or Maglev balancer hashes on it.
    pub fn hash_policy(
        &self,
        d: &Destination,
        namespace: &str,
    ) -> Option<route_action::HashPolicy> {
        use route_action::hash_policy::{
            ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
        };
        let (host, port) = self.target(d, namespace);
        let dr = self.ctx.destination_rule(self.proxy, &host)?;
        let subset = dr
            .spec
            .subsets
            .iter()
            .find(|s| !d.subset.is_empty() && s.name == d.subset)
            .and_then(|s| s.traffic_policy.as_deref());
        let policy = EffectivePolicy::merge(dr.spec.traffic_policy.as_deref(), subset, port);
        let hash = policy.lb?.consistent_hash.as_ref()?;
        let specifier = if let Some(h) = &hash.http_header_name {
            PolicySpecifier::Header(Header {
                header_name: h.clone(),
                ..Header::default()
            })
        } else if let Some(c) = &hash.http_cookie {
            PolicySpecifier::Cookie(Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c.ttl.as_ref().map(duration),
                ..Cookie::default()
            })
        } else if hash.use_source_ip == Some(true) {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        } else if let Some(q) = &hash.http_query_parameter_name {
            PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
        } else {
            return None;
        };
        Some(route_action::HashPolicy {
            policy_specifier: Some(specifier),
            ..route_action::HashPolicy::default()
        })
    }

    fn applies(&self, m: &HttpMatchRequest, vs_ns: &str) -> bool {
        if m.port.is_some_and(|p| p != u32::from(self.port)) {
            return false;
        }
        if !m.gateways.is_empty()
            && !m.gateways.iter().any(|g| {
                let g = if g == "mesh" || g.contains('/') {
                    g.clone()
                } else {
                    format!("{vs_ns}/{g}")
                };
                g == self.gateway
            })
        {
            return false;
        }
        if !selects(&m.source_labels, &self.proxy.labels) {
            return false;
        }
        m.source_namespace.is_empty() || m.source_namespace == self.proxy.namespace
    }
}

/// An Istio string match as an Envoy StringMatcher.
pub fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(e) = &m.exact {
        string_matcher::MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        string_matcher::MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        string_matcher::MatchPattern::SafeRegex(regex(r))
    } else {
        return None;
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ..StringMatcher::default()
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..RegexMatcher::default()
    }
}

fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let spec = match string_matcher(m) {
        Some(sm) => header_matcher::HeaderMatchSpecifier::StringMatch(sm),
        None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_lowercase(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        ..HeaderMatcher::default()
    }
}

/// An Istio match (or none) as an Envoy RouteMatch.
pub fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        ..RouteMatch::default()
    };
    let Some(m) = m else {
        return out;
    };
    if let Some(uri) = &m.uri {
        out.path_specifier = if let Some(e) = &uri.exact {
            Some(route_match::PathSpecifier::Path(e.clone()))
        } else if let Some(p) = &uri.prefix {
            Some(route_match::PathSpecifier::Prefix(p.clone()))
        } else {
            uri.regex
                .as_ref()
                .map(|r| route_match::PathSpecifier::SafeRegex(regex(r)))
                .or(out.path_specifier)
        };
    }
    if m.ignore_uri_case == Some(true) {
        out.case_sensitive = Some(BoolValue { value: false });
    }
    for (name, sm) in [
        (":scheme", &m.scheme),
        (":method", &m.method),
        (":authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header(name, sm, false));
        }
    }
    out.headers
        .extend(m.headers.iter().map(|(k, v)| header(k, v, false)));
    out.headers
        .extend(m.without_headers.iter().map(|(k, v)| header(k, v, true)));
    out.query_parameters = m
        .query_params
        .iter()
        .map(|(k, v)| QueryParameterMatcher {
            name: k.clone(),
            query_parameter_match_specifier: Some(match string_matcher(v) {
                Some(sm) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    out
}

/// Istio's retry policy (default when the route sets none; none when attempts is 0).
pub fn retry_policy(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let mut p = RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(u32v(2)),
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                any(&PreviousHostsPredicate {}),
            )),
        }],
        ..RetryPolicy::default()
    };
    let Some(r) = r else {
        return Some(p);
    };
    match r.attempts {
        Some(n) if n <= 0 => return None,
        Some(n) => p.num_retries = Some(u32v(n as u32)),
        None => {}
    }
    if !r.retry_on.is_empty() {
        let mut on = Vec::new();
        let mut codes = Vec::new();
        for part in r
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match part.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => on.push(part.to_string()),
            }
        }
        if !codes.is_empty() && !on.iter().any(|s| s == "retriable-status-codes") {
            on.push("retriable-status-codes".into());
        }
        p.retry_on = on.join(",");
        p.retriable_status_codes = codes;
    }
    p.per_try_timeout = r.per_try_timeout.as_ref().map(duration);
    Some(p)
}

fn fraction(pct: Option<&Percent>, legacy: Option<i32>) -> FractionalPercent {
    let value = pct
        .map(|p| p.value)
        .or(legacy.map(f64::from))
        .unwrap_or(100.0);
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

/// A fault's percentage: none when the rule gives none, which the fault filter reads as 0 %
/// ("if not specified, no request will be delayed / aborted", Istio's API).
fn fault_fraction(pct: Option<&Percent>, legacy: Option<i32>) -> Option<FractionalPercent> {
    (pct.is_some() || legacy.is_some()).then(|| fraction(pct, legacy))
}

fn grpc_code(s: &str) -> Option<u32> {
    const CODES: [&str; 17] = capstan_api::common::GRPC_STATUS_CODES;
    s.parse()
        .ok()
        .or_else(|| CODES.iter().position(|c| *c == s).map(|i| i as u32))
}

/// An Istio fault as the fault filter's per-route config.
pub fn http_fault(f: &HttpFaultInjection) -> fault::HttpFault {
    let delay = f.delay.as_ref().and_then(|d| {
        d.fixed_delay.as_ref().map(|fd| common_fault::FaultDelay {
            percentage: fault_fraction(d.percentage.as_ref(), d.percent),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                duration(fd),
            )),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error = if let Some(s) = a.http_status {
            fault::fault_abort::ErrorType::HttpStatus(s as u32)
        } else if let Some(code) = a.grpc_status.as_deref().and_then(grpc_code) {
            fault::fault_abort::ErrorType::GrpcStatus(code)
        } else {
            return None;
        };
        Some(fault::FaultAbort {
            percentage: fault_fraction(a.percentage.as_ref(), a.percent),
            error_type: Some(error),
            ..fault::FaultAbort::default()
        })
    });
    fault::HttpFault {
        delay,
        abort,
        ..fault::HttpFault::default()
    }
}

fn cors_policy(c: &CorsPolicy) -> cors::CorsPolicy {
    let mut origins: Vec<StringMatcher> =
        c.allow_origins.iter().filter_map(string_matcher).collect();
    origins.extend(c.allow_origin.iter().map(|o| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
        ..StringMatcher::default()
    }));
    cors::CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age.map(|d| d.seconds.to_string()).unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        ..cors::CorsPolicy::default()
    }
}

/// Header operations as Envoy's (add, remove).
pub fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let opt = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..HeaderValue::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|kv| opt(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| opt(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.clone())
}

fn action(rc: &RouteCtx<'_>, r: &HttpRoute, ns: &str) -> route::Action {
    if let Some(redirect) = &r.redirect {
        let code = match redirect.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        };
        return route::Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone(),
            port_redirect: redirect.port.unwrap_or(0),
            response_code: code as i32,
            scheme_rewrite_specifier: (!redirect.scheme.is_empty()).then(|| {
                redirect_action::SchemeRewriteSpecifier::SchemeRedirect(redirect.scheme.clone())
            }),
            path_rewrite_specifier: (!redirect.uri.is_empty())
                .then(|| redirect_action::PathRewriteSpecifier::PathRedirect(redirect.uri.clone())),
            ..RedirectAction::default()
        });
    }
    if let Some(dr) = &r.direct_response {
        return route::Action::DirectResponse(DirectResponseAction {
            status: dr.status,
            body: dr
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .map(|s| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(s)),
                    ..DataSource::default()
                }),
            ..DirectResponseAction::default()
        });
    }
    let mut a = RouteAction {
        timeout: Some(r.timeout.as_ref().map(duration).unwrap_or_else(|| secs(0))),
        retry_policy: retry_policy(r.retries.as_ref()),
        ..RouteAction::default()
    };
    if rc.proxy.proxy_type != crate::ProxyType::Proxyless {
        grpc_timeout_from_header(&mut a);
    }
    let dests: Vec<_> = r
        .route
        .iter()
        .filter(|d| d.destination.is_some() && d.weight != Some(0) || r.route.len() == 1)
        .collect();
    a.cluster_specifier = match dests.as_slice() {
        [] => None,
        [one] => Some(route_action::ClusterSpecifier::Cluster(
            rc.cluster(one.destination.as_ref().expect("filtered"), ns),
        )),
        many => Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: many
                    .iter()
                    .map(|d| {
                        let (add, remove) =
                            header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref()));
                        let (radd, rremove) =
                            header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref()));
                        weighted_cluster::ClusterWeight {
                            name: rc.cluster(d.destination.as_ref().expect("filtered"), ns),
                            weight: Some(u32v(d.weight.unwrap_or(0).max(0) as u32)),
                            request_headers_to_add: add,
                            request_headers_to_remove: remove,
                            response_headers_to_add: radd,
                            response_headers_to_remove: rremove,
                            ..weighted_cluster::ClusterWeight::default()
                        }
                    })
                    .collect(),
                ..WeightedCluster::default()
            },
        )),
    };
    // Hash policies of the destinations that hash (one per distinct policy, in order).
    for d in &dests {
        if let Some(h) = d
            .destination
            .as_ref()
            .and_then(|dst| rc.hash_policy(dst, ns))
        {
            if !a.hash_policy.contains(&h) {
                a.hash_policy.push(h);
            }
        }
    }
    if let Some(rw) = &r.rewrite {
        if !rw.uri.is_empty() {
            a.prefix_rewrite = rw.uri.clone();
        }
        if !rw.authority.is_empty() {
            a.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(rw.authority.clone()),
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(&rr.r#match)),
                substitution: rr.rewrite.clone(),
            });
        }
    }
    let mirror = |d: &Destination, pct: FractionalPercent| route_action::RequestMirrorPolicy {
        cluster: rc.cluster(d, ns),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(pct),
            ..RuntimeFractionalPercent::default()
        }),
        ..route_action::RequestMirrorPolicy::default()
    };
    if let Some(m) = &r.mirror {
        let legacy = r.mirror_percent.map(|p| p as i32);
        a.request_mirror_policies
            .push(mirror(m, fraction(r.mirror_percentage.as_ref(), legacy)));
    }
    for m in &r.mirrors {
        if let Some(d) = &m.destination {
            a.request_mirror_policies
                .push(mirror(d, fraction(m.percentage.as_ref(), None)));
        }
    }
    route::Action::Route(a)
}

/// The Envoy routes for one VirtualService on this route configuration, in order; routes
/// whose matches all fail to apply (port, gateway, source labels/namespace) are left out.
pub fn virtual_service_routes(rc: &RouteCtx<'_>, vs: &VirtualServiceEntry) -> Vec<Route> {
    let ns = vs.config.namespace.as_str();
    let mut out = Vec::new();
    for r in &vs.config.spec.http {
        let matches: Vec<Option<&HttpMatchRequest>> = if r.r#match.is_empty() {
            vec![None]
        } else {
            let m: Vec<_> = r
                .r#match
                .iter()
                .filter(|m| rc.applies(m, ns))
                .map(Some)
                .collect();
            if m.is_empty() {
                continue;
            }
            m
        };
        let act = action(rc, r, ns);
        let (req_add, req_remove) = header_ops(r.headers.as_ref().and_then(|h| h.request.as_ref()));
        let (resp_add, resp_remove) =
            header_ops(r.headers.as_ref().and_then(|h| h.response.as_ref()));
        let mut per_filter = std::collections::HashMap::new();
        if let Some(f) = &r.fault {
            per_filter.insert(FAULT_FILTER.to_string(), any(&http_fault(f)));
        }
        if let Some(c) = &r.cors_policy {
            per_filter.insert(CORS_FILTER.to_string(), any(&cors_policy(c)));
        }
        // Routes match in order: nothing after a catch-all is reachable, and istiod stops
        // there too.
        let mut catch_all = r.r#match.is_empty();
        for m in matches {
            let route_match = route_match(m);
            catch_all |= is_catch_all(&route_match);
            out.push(Route {
                name: if r.name.is_empty() {
                    String::new()
                } else {
                    r.name.clone()
                },
                r#match: Some(route_match),
                action: Some(act.clone()),
                request_headers_to_add: req_add.clone(),
                request_headers_to_remove: req_remove.clone(),
                response_headers_to_add: resp_add.clone(),
                response_headers_to_remove: resp_remove.clone(),
                typed_per_filter_config: per_filter.clone(),
                ..Route::default()
            });
            if catch_all {
                break;
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

/// Whether a route match takes every request (istiod's `IsCatchAllRoute`): the path `/` as a
/// prefix or path-separated prefix, or the regex `.*`, with no header, query or metadata
/// condition.
fn is_catch_all(m: &RouteMatch) -> bool {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    path && m.headers.is_empty() && m.query_parameters.is_empty() && m.dynamic_metadata.is_empty()
}

/// istiod's `setTimeout` for Envoy: a gRPC request's `grpc-timeout` header is its timeout,
/// bounded by the route's (`max_grpc_timeout`, 0: no bound). Proxyless gRPC reads neither.
#[allow(deprecated)] // what istiod sets ("MaxStreamDuration has some regressions")
pub fn grpc_timeout_from_header(a: &mut RouteAction) {
    a.max_grpc_timeout = Some(a.timeout.unwrap_or_else(|| secs(0)));
}

/// Istio's default route to a service: prefix `/`, no timeout, default retries.
pub fn default_route(cluster: String) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(route_match(None)),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(secs(0)),
            retry_policy: retry_policy(None),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}
