//! Route configurations (RDS, or inline in an HTTP connection manager) compiled into a table:
//! virtual hosts matched by domain as Envoy does, routes matched by path, headers and query.
//!
//! - [`matcher`]: `RouteMatch`, header/query/string matchers; [`action`]: forward, redirect,
//!   direct response; [`retry`], [`hash`]: retry and hash policies; [`headers`]: header
//!   mutations; [`filters`]: per-route fault and CORS configs.

pub mod action;
pub mod filters;
pub mod hash;
pub mod headers;
pub mod matcher;
pub mod retry;

use crate::CompileError;
use action::{Action, Inherited};
use envoy_types::pb::envoy::config::route::v3 as rpb;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use filters::FilterOverrides;
use headers::HeaderMutation;
use matcher::RouteMatcher;

/// Envoy's default `max_direct_response_body_size_bytes`.
const MAX_DIRECT_BODY: usize = 4096;

/// `VirtualHost.require_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    /// `NONE`.
    None,
    /// `EXTERNAL_ONLY`: plain-text requests from outside are redirected to https.
    ExternalOnly,
    /// `ALL`: every plain-text request is redirected to https.
    All,
}

/// How much of a request body a route's requests keep for retries and mirrors, from the
/// route's fields, else its virtual host's (Envoy's "buffer limit precedence" on `Route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyBufferLimit {
    /// Neither field set: the listener's `per_connection_buffer_limit_bytes`.
    #[default]
    Connection,
    /// `per_request_buffer_limit_bytes`: at most this, and at most the listener's limit.
    AtMost(u32),
    /// `request_body_buffer_limit`: this, even beyond the listener's limit.
    Exactly(u64),
}

impl BodyBufferLimit {
    /// The limit for a request on a connection whose listener's limit is `connection`.
    pub fn effective(self, connection: usize) -> usize {
        match self {
            BodyBufferLimit::Connection => connection,
            BodyBufferLimit::AtMost(n) => connection.min(n as usize),
            BodyBufferLimit::Exactly(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// One level's fields; `request_body_buffer_limit` wins when both are set.
    fn level(
        per_request: Option<&envoy_types::pb::google::protobuf::UInt32Value>,
        request_body: Option<&envoy_types::pb::google::protobuf::UInt64Value>,
    ) -> Option<BodyBufferLimit> {
        match (request_body, per_request) {
            (Some(b), _) => Some(BodyBufferLimit::Exactly(b.value)),
            (None, Some(p)) => Some(BodyBufferLimit::AtMost(p.value)),
            (None, None) => None,
        }
    }
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// When it applies.
    pub matcher: RouteMatcher,
    /// What it does.
    pub action: Action,
    /// Route-level request header mutations.
    pub request_headers: HeaderMutation,
    /// Route-level response header mutations.
    pub response_headers: HeaderMutation,
    /// Per-filter configs, resolved route > virtual host > route configuration.
    pub filters: FilterOverrides,
    /// What its requests keep of their bodies for retries and mirrors (route, else virtual
    /// host).
    pub buffer_limit: BodyBufferLimit,
}

impl Route {
    /// The route's prefix match, if it is one (for `prefix_rewrite`).
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.matcher.path {
            matcher::PathMatch::Prefix(p) | matcher::PathMatch::SeparatedPrefix(p) => Some(p),
            matcher::PathMatch::Exact(p) => Some(p),
            matcher::PathMatch::Regex(_) => None,
        }
    }
}

/// A compiled virtual host.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// Its name.
    pub name: String,
    /// Its routes, first match wins.
    pub routes: Vec<Route>,
    /// `require_tls`.
    pub require_tls: RequireTls,
    /// Request header mutations.
    pub request_headers: HeaderMutation,
    /// Response header mutations.
    pub response_headers: HeaderMutation,
    /// `include_request_attempt_count`: `x-envoy-attempt-count` upstream.
    pub include_attempt_count: bool,
    /// `include_attempt_count_in_response`.
    pub include_attempt_count_in_response: bool,
}

/// A compiled route configuration.
#[derive(Debug)]
pub struct RouteTable {
    /// The configuration's name.
    pub name: String,
    /// Virtual hosts in configuration order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Route-configuration request header mutations.
    pub request_headers: HeaderMutation,
    /// Route-configuration response header mutations.
    pub response_headers: HeaderMutation,
    /// `most_specific_header_mutations_wins`.
    pub most_specific_wins: bool,
    /// `ignore_port_in_host_matching`.
    pub ignore_port: bool,
    /// `vhost_header`: the header naming the host (default `:authority`).
    pub vhost_header: Option<String>,
    exact: crate::fast_map::FastMap<String, usize>,
    /// (suffix without `*`, vhost), longest first.
    suffixes: Vec<(String, usize)>,
    /// (prefix without `*`, vhost), longest first.
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
}

impl RouteTable {
    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // The wildcard matches at least one character, as Envoy.
        let s = self
            .suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()));
        if let Some((_, i)) = s {
            return Some(*i);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
            .map(|(_, i)| *i)
    }

    /// The virtual host for `host` (the Host header): exact, then suffix wildcards, then prefix
    /// wildcards, with the port as given and then without it, then `*`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        // Hosts are nearly always lower case already: copied only when they are not.
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let (bare, port) = action::split_host_port(host);
        let found = if self.ignore_port {
            self.lookup(bare)
        } else {
            self.lookup(host)
                .or_else(|| port.and_then(|_| self.lookup(bare)))
        };
        found
            .or(self.default)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    /// The virtual host and first matching route for a request.
    pub fn route(
        &self,
        host: &str,
        path_and_query: &str,
        headers: &http::HeaderMap,
    ) -> Option<(&VirtualHost, &Route)> {
        let vh = self.virtual_host(host)?;
        let r = vh
            .routes
            .iter()
            .find(|r| r.matcher.matches(path_and_query, headers))?;
        Some((vh, r))
    }
}

fn mutation(
    add: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
    remove: &[String],
    kind: &str,
) -> Result<HeaderMutation, CompileError> {
    HeaderMutation::compile(
        add,
        remove,
        &format!("{kind}_headers_to_add"),
        &format!("{kind}_headers_to_remove"),
    )
}

#[allow(deprecated)]
fn route(
    r: &rpb::Route,
    vh_filters: &FilterOverrides,
    inherited: &Inherited,
    max_body: usize,
) -> Result<Route, CompileError> {
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| CompileError::new("match", "is required"))?;
    let matcher = RouteMatcher::compile(m).map_err(|e| e.within("match"))?;
    let action = match &r.action {
        Some(rpb::route::Action::Route(a)) => Action::Forward(Box::new(
            action::forward(a, inherited).map_err(|e| e.within("route"))?,
        )),
        Some(rpb::route::Action::Redirect(a)) => {
            Action::Redirect(action::redirect(a).map_err(|e| e.within("redirect"))?)
        }
        Some(rpb::route::Action::DirectResponse(d)) => {
            Action::Direct(action::direct(d, max_body).map_err(|e| e.within("direct_response"))?)
        }
        Some(_) => {
            return Err(CompileError::new(
                "action",
                "filter and non-forwarding actions are not supported",
            ))
        }
        None => return Err(CompileError::new("action", "is required")),
    };
    if !r.route_specifiers.is_empty() {
        return Err(CompileError::new("route_specifiers", "is not supported"));
    }
    let own = FilterOverrides::compile(&r.typed_per_filter_config)?;
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers: mutation(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            "request",
        )?,
        response_headers: mutation(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            "response",
        )?,
        filters: FilterOverrides {
            fault: own.fault.or(&vh_filters.fault),
            cors: own.cors.or(&vh_filters.cors),
        },
        buffer_limit: BodyBufferLimit::level(
            r.per_request_buffer_limit_bytes.as_ref(),
            r.request_body_buffer_limit.as_ref(),
        )
        .unwrap_or(inherited.buffer_limit),
    })
}

#[allow(deprecated)]
fn virtual_host(
    v: &rpb::VirtualHost,
    rc_filters: &FilterOverrides,
    rc_mirrors: &[action::Mirror],
    max_body: usize,
) -> Result<VirtualHost, CompileError> {
    let unsupported = [
        ("matcher", v.matcher.is_some()),
        ("cors", v.cors.is_some()),
        (
            "retry_policy_typed_config",
            v.retry_policy_typed_config.is_some(),
        ),
        ("hedge_policy", v.hedge_policy.is_some()),
        ("route_specifiers", !v.route_specifiers.is_empty()),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*f, "is not supported"));
    }
    let own = FilterOverrides::compile(&v.typed_per_filter_config)?;
    let filters = FilterOverrides {
        fault: own.fault.or(&rc_filters.fault),
        cors: own.cors.or(&rc_filters.cors),
    };
    let mirrors = action::mirrors(&v.request_mirror_policies, "request_mirror_policies")?;
    let inherited = Inherited {
        retry: v
            .retry_policy
            .as_ref()
            .map(|r| retry::RetryPolicy::compile(r).map_err(|e| e.within("retry_policy")))
            .transpose()?,
        mirrors: if mirrors.is_empty() {
            rc_mirrors.to_vec()
        } else {
            mirrors
        },
        buffer_limit: BodyBufferLimit::level(
            v.per_request_buffer_limit_bytes.as_ref(),
            v.request_body_buffer_limit.as_ref(),
        )
        .unwrap_or_default(),
    };
    let routes = v
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            route(r, &filters, &inherited, max_body).map_err(|e| e.within(&format!("routes[{i}]")))
        })
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost {
        name: v.name.clone(),
        routes,
        require_tls: match v.require_tls {
            1 => RequireTls::ExternalOnly,
            2 => RequireTls::All,
            _ => RequireTls::None,
        },
        request_headers: mutation(
            &v.request_headers_to_add,
            &v.request_headers_to_remove,
            "request",
        )?,
        response_headers: mutation(
            &v.response_headers_to_add,
            &v.response_headers_to_remove,
            "response",
        )?,
        include_attempt_count: v.include_request_attempt_count,
        include_attempt_count_in_response: v.include_attempt_count_in_response,
    })
}

/// Compiles a route configuration.
pub fn compile(rc: &RouteConfiguration) -> Result<RouteTable, CompileError> {
    let unsupported = [
        ("vhds", rc.vhds.is_some()),
        (
            "internal_only_headers",
            !rc.internal_only_headers.is_empty(),
        ),
        (
            "cluster_specifier_plugins",
            !rc.cluster_specifier_plugins.is_empty(),
        ),
        (
            "ignore_path_parameters_in_path_matching",
            rc.ignore_path_parameters_in_path_matching,
        ),
        ("route_specifiers", !rc.route_specifiers.is_empty()),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*f, "is not supported"));
    }
    let max_body = rc
        .max_direct_response_body_size_bytes
        .map_or(MAX_DIRECT_BODY, |v| v.value as usize);
    let filters = FilterOverrides::compile(&rc.typed_per_filter_config)?;
    let mirrors = action::mirrors(&rc.request_mirror_policies, "request_mirror_policies")?;
    let mut table = RouteTable {
        name: rc.name.clone(),
        virtual_hosts: Vec::with_capacity(rc.virtual_hosts.len()),
        request_headers: mutation(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            "request",
        )?,
        response_headers: mutation(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            "response",
        )?,
        most_specific_wins: rc.most_specific_header_mutations_wins,
        ignore_port: rc.ignore_port_in_host_matching,
        vhost_header: (!rc.vhost_header.is_empty()).then(|| rc.vhost_header.to_ascii_lowercase()),
        exact: Default::default(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        default: None,
    };
    let mut seen = std::collections::HashSet::new();
    for (i, v) in rc.virtual_hosts.iter().enumerate() {
        let path = format!("virtual_hosts[{i}]");
        table
            .virtual_hosts
            .push(virtual_host(v, &filters, &mirrors, max_body).map_err(|e| e.within(&path))?);
        for (j, d) in v.domains.iter().enumerate() {
            let d = d.to_ascii_lowercase();
            let err = |m: &str| CompileError::new(format!("{path}.domains[{j}]"), m);
            if !seen.insert(d.clone()) {
                return Err(err(&format!(
                    "domain {d} appears in more than one virtual host"
                )));
            }
            if d == "*" {
                table.default = Some(i);
            } else if let Some(s) = d.strip_prefix('*') {
                table.suffixes.push((s.to_string(), i));
            } else if let Some(p) = d.strip_suffix('*') {
                table.prefixes.push((p.to_string(), i));
            } else if d.contains('*') || d.is_empty() {
                return Err(err("a wildcard must be the first or last character"));
            } else {
                table.exact.insert(d, i);
            }
        }
    }
    // Longest first; ties keep configuration order (stable sort).
    table.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    table.prefixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    Ok(table)
}

#[cfg(test)]
mod tests;
