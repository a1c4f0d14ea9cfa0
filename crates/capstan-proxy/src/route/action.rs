//! Route actions: forwarding (`RouteAction`), `redirect` and `direct_response`, compiled.

use super::filters::FilterOverrides;
use super::hash::HashPolicy;
use super::headers::HeaderMutation;
use super::matcher::{rewrite_regex, Fraction};
use super::retry::RetryPolicy;
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3 as rpb;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use regex::Regex;
use std::time::Duration;

/// One cluster of `weighted_clusters`.
#[derive(Debug, Clone)]
pub struct WeightedTarget {
    /// Cluster name.
    pub cluster: String,
    /// Weight.
    pub weight: u32,
    /// Request header mutations for this cluster.
    pub request_headers: HeaderMutation,
    /// Response header mutations for this cluster.
    pub response_headers: HeaderMutation,
    /// `host_rewrite_literal` for this cluster.
    pub host_rewrite: Option<String>,
}

/// Where a route sends requests.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// One cluster.
    Single(String),
    /// Weighted clusters (weights summed at compile time).
    Weighted {
        /// The targets in order.
        targets: Vec<WeightedTarget>,
        /// The sum of weights (> 0).
        total: u64,
    },
    /// `cluster_header`: the cluster named by this request header.
    Header(String),
}

impl ClusterChoice {
    /// The weighted target for random value `r` in `0..total`, as Envoy walks the list.
    pub fn pick_weighted(targets: &[WeightedTarget], r: u64) -> Option<&WeightedTarget> {
        let mut acc = 0u64;
        targets.iter().find(|t| {
            acc += u64::from(t.weight);
            r < acc
        })
    }
}

/// How the Host header is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// Unchanged.
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the upstream host's address (hostname for DNS clusters).
    Auto,
}

/// A `request_mirror_policies` entry.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The mirror cluster.
    pub cluster: String,
    /// The fraction of requests mirrored.
    pub fraction: Fraction,
    /// `disable_shadow_host_suffix_append`.
    pub keep_host: bool,
}

/// The deprecated `max_grpc_timeout`, with `grpc_timeout_offset`: a gRPC request's route timeout
/// is its `grpc-timeout` header instead of the route's `timeout`
/// ([`crate::http::stream_deadline::grpc_route_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRouteTimeout {
    /// `max_grpc_timeout`: the cap; 0 leaves the header uncapped.
    pub max: Duration,
    /// `grpc_timeout_offset`: taken off the header's value when smaller than it.
    pub offset: Option<Duration>,
}

/// A compiled `RouteAction`.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Target cluster(s).
    pub clusters: ClusterChoice,
    /// `cluster_not_found_response_code` (503 by default).
    pub cluster_not_found_status: u16,
    /// `prefix_rewrite` (with the prefix it replaces: the route's prefix match).
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`.
    pub regex_rewrite: Option<(Regex, String)>,
    /// Host rewrite.
    pub host_rewrite: HostRewrite,
    /// `append_x_forwarded_host`.
    pub append_x_forwarded_host: bool,
    /// Route timeout: None = disabled (`0s`); Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    /// `max_grpc_timeout`: gRPC requests take their route timeout from `grpc-timeout` instead
    /// of [`Forward::timeout`].
    pub grpc_route_timeout: Option<GrpcRouteTimeout>,
    /// `idle_timeout`: overrides the connection manager's `stream_idle_timeout` when set; zero
    /// disables it. Enforced on upgraded streams ([`crate::http::upgrade`]).
    pub idle_timeout: Option<Duration>,
    /// `upgrade_configs`: upgrade types this route enables or disables, over the connection
    /// manager's.
    pub upgrades: crate::http::upgrade::UpgradeSettings,
    /// `max_stream_duration.grpc_timeout_header_max`: when set, a gRPC request's
    /// `grpc-timeout` bounds its stream, capped at this unless it is 0
    /// ([`crate::http::stream_deadline`]).
    pub grpc_timeout_header_max: Option<Duration>,
    /// Retry policy (route-level, else the virtual host's).
    pub retry: Option<RetryPolicy>,
    /// Hash policies.
    pub hash: Vec<HashPolicy>,
    /// Mirrors (route-level, else the virtual host's, else the route configuration's).
    pub mirrors: Vec<Mirror>,
}

/// A compiled `RedirectAction`.
#[derive(Debug, Clone, Default)]
pub struct Redirect {
    /// New scheme (`https_redirect` gives `https`).
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// How the path changes.
    pub path: PathRedirect,
    /// Response status.
    pub status: u16,
    /// `strip_query`.
    pub strip_query: bool,
}

/// How a redirect changes the path.
#[derive(Debug, Clone, Default)]
pub enum PathRedirect {
    /// Unchanged.
    #[default]
    Keep,
    /// `path_redirect` (may carry its own query).
    Path(String),
    /// `prefix_rewrite`: the route's matched prefix replaced.
    Prefix(String),
    /// `regex_rewrite`.
    Regex(Regex, String),
}

/// A compiled `DirectResponseAction`.
#[derive(Debug, Clone)]
pub struct Direct {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: bytes::Bytes,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to a cluster.
    Forward(Box<Forward>),
    /// Redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct(Direct),
}

/// Defaults inherited from the virtual host and route configuration.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    /// The virtual host's retry policy.
    pub retry: Option<RetryPolicy>,
    /// The virtual host's (else route configuration's) mirrors.
    pub mirrors: Vec<Mirror>,
    /// The virtual host's request-body buffer limit.
    pub buffer_limit: super::BodyBufferLimit,
}

fn dur(
    d: &Option<envoy_types::pb::google::protobuf::Duration>,
    f: &str,
) -> Result<Option<Duration>, CompileError> {
    d.as_ref()
        .map(|d| crate::listener::duration(d).map_err(|e| e.within(f)))
        .transpose()
}

/// `max_stream_duration` as istiod sends it: no duration of its own (`0s` or unset: the proxy
/// has no connection-manager default to override), the `grpc-timeout` header's cap.
fn stream_duration(
    m: &rpb::route_action::MaxStreamDuration,
) -> Result<Option<Duration>, CompileError> {
    if dur(&m.max_stream_duration, "max_stream_duration")?.is_some_and(|d| !d.is_zero()) {
        return Err(CompileError::new(
            "max_stream_duration",
            "only 0s (no limit) is supported",
        ));
    }
    if m.grpc_timeout_header_offset.is_some() {
        return Err(CompileError::new(
            "grpc_timeout_header_offset",
            "is not supported",
        ));
    }
    dur(&m.grpc_timeout_header_max, "grpc_timeout_header_max")
}

/// Compiles `request_mirror_policies`.
pub fn mirrors(
    m: &[rpb::route_action::RequestMirrorPolicy],
    field: &str,
) -> Result<Vec<Mirror>, CompileError> {
    m.iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("{field}[{i}]");
            if p.cluster.is_empty() {
                return Err(CompileError::new(
                    format!("{path}.cluster"),
                    "is required (cluster_header is not supported)",
                ));
            }
            if !p.request_headers_mutations.is_empty() || !p.host_rewrite_literal.is_empty() {
                return Err(CompileError::new(
                    path,
                    "mirror header mutations are not supported",
                ));
            }
            let fraction = match p
                .runtime_fraction
                .as_ref()
                .and_then(|r| r.default_value.as_ref())
            {
                Some(f) => Fraction::compile(f)
                    .map_err(|e| e.within(&format!("{path}.runtime_fraction")))?,
                None => Fraction::ALL,
            };
            Ok(Mirror {
                cluster: p.cluster.clone(),
                fraction,
                keep_host: p.disable_shadow_host_suffix_append,
            })
        })
        .collect()
}

/// Compiles a `RouteAction`; `overrides` receives weighted-cluster per-filter configs.
#[allow(deprecated)]
pub fn forward(a: &rpb::RouteAction, inherited: &Inherited) -> Result<Forward, CompileError> {
    let clusters = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => ClusterChoice::Single(c.clone()),
        Some(ClusterSpecifier::Cluster(_)) | None => {
            return Err(CompileError::new("cluster_specifier", "is required"))
        }
        Some(ClusterSpecifier::ClusterHeader(h)) => ClusterChoice::Header(h.to_ascii_lowercase()),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            weighted(w).map_err(|e| e.within("weighted_clusters"))?
        }
        Some(_) => {
            return Err(CompileError::new(
                "cluster_specifier",
                "cluster specifier plugins are not supported",
            ))
        }
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => HostRewrite::None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) if b.value => {
            return Err(CompileError::new(
                "host_rewrite_specifier",
                "auto_host_rewrite is not supported",
            ))
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(_)) => HostRewrite::None,
        Some(_) => {
            return Err(CompileError::new(
                "host_rewrite_specifier",
                "only host_rewrite_literal and auto_host_rewrite are supported",
            ))
        }
    };
    let timeout = match dur(&a.timeout, "timeout")? {
        None => Some(Duration::from_secs(15)),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    let unsupported = [
        ("metadata_match", a.metadata_match.is_some()),
        ("path_rewrite_policy", a.path_rewrite_policy.is_some()),
        ("path_rewrite", !a.path_rewrite.is_empty()),
        (
            "retry_policy_typed_config",
            a.retry_policy_typed_config.is_some(),
        ),
        (
            "internal_redirect_policy",
            a.internal_redirect_policy.is_some(),
        ),
        ("hedge_policy", a.hedge_policy.is_some()),
        ("cors", a.cors.is_some()),
        ("flush_timeout", a.flush_timeout.is_some()),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*f, "is not supported"));
    }
    let max_grpc_timeout = dur(&a.max_grpc_timeout, "max_grpc_timeout")?;
    let grpc_timeout_offset = dur(&a.grpc_timeout_offset, "grpc_timeout_offset")?;
    // Envoy reads the deprecated fields only on routes without `max_stream_duration`, whose
    // "new timeouts" take their place; the offset only adjusts `max_grpc_timeout`'s header.
    let grpc_route_timeout = match max_grpc_timeout {
        Some(max) if a.max_stream_duration.is_none() => Some(GrpcRouteTimeout {
            max,
            offset: grpc_timeout_offset,
        }),
        _ => None,
    };
    let grpc_timeout_header_max = match &a.max_stream_duration {
        None => None,
        Some(m) => stream_duration(m).map_err(|e| e.within("max_stream_duration"))?,
    };
    let retry = match &a.retry_policy {
        Some(r) => Some(RetryPolicy::compile(r).map_err(|e| e.within("retry_policy"))?),
        None => inherited.retry.clone(),
    };
    let hash = a
        .hash_policy
        .iter()
        .enumerate()
        .map(|(i, h)| HashPolicy::compile(h).map_err(|e| e.within(&format!("hash_policy[{i}]"))))
        .collect::<Result<_, _>>()?;
    let m = mirrors(&a.request_mirror_policies, "request_mirror_policies")?;
    Ok(Forward {
        clusters,
        cluster_not_found_status: match a.cluster_not_found_response_code {
            1 => 404,
            2 => 500,
            _ => 503,
        },
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        regex_rewrite: a
            .regex_rewrite
            .as_ref()
            .map(|r| rewrite_regex(r).map_err(|e| e.within("regex_rewrite")))
            .transpose()?,
        host_rewrite,
        append_x_forwarded_host: a.append_x_forwarded_host,
        timeout,
        grpc_route_timeout,
        idle_timeout: dur(&a.idle_timeout, "idle_timeout")?,
        upgrades: crate::http::upgrade::compile_route(&a.upgrade_configs)
            .map_err(|e| e.within("upgrade_configs"))?,
        grpc_timeout_header_max,
        retry,
        hash,
        mirrors: if m.is_empty() {
            inherited.mirrors.clone()
        } else {
            m
        },
    })
}

fn weighted(w: &rpb::WeightedCluster) -> Result<ClusterChoice, CompileError> {
    if w.random_value_specifier.is_some() {
        return Err(CompileError::new(
            "random_value_specifier",
            "is not supported",
        ));
    }
    let mut targets = Vec::new();
    for (i, c) in w.clusters.iter().enumerate() {
        let path = format!("clusters[{i}]");
        if c.name.is_empty() {
            return Err(CompileError::new(
                format!("{path}.name"),
                "is required (cluster_header is not supported)",
            ));
        }
        if c.metadata_match.is_some() {
            return Err(CompileError::new(
                format!("{path}.metadata_match"),
                "is not supported",
            ));
        }
        if !FilterOverrides::compile(&c.typed_per_filter_config)
            .map_err(|e| e.within(&path))
            .map(|_| c.typed_per_filter_config.is_empty())?
        {
            return Err(CompileError::new(
                format!("{path}.typed_per_filter_config"),
                "is not supported",
            ));
        }
        use rpb::weighted_cluster::cluster_weight::HostRewriteSpecifier as H;
        let host_rewrite = c
            .host_rewrite_specifier
            .as_ref()
            .map(|H::HostRewriteLiteral(h)| h.clone());
        targets.push(WeightedTarget {
            cluster: c.name.clone(),
            weight: c.weight.map_or(0, |w| w.value),
            request_headers: HeaderMutation::compile(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                "request_headers_to_add",
                "request_headers_to_remove",
            )
            .map_err(|e| e.within(&path))?,
            response_headers: HeaderMutation::compile(
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
                "response_headers_to_add",
                "response_headers_to_remove",
            )
            .map_err(|e| e.within(&path))?,
            host_rewrite,
        });
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return Err(CompileError::new(
            "clusters",
            "the sum of weights must be greater than 0",
        ));
    }
    #[allow(deprecated)]
    if let Some(t) = w.total_weight {
        if u64::from(t.value) != total {
            return Err(CompileError::new(
                "total_weight",
                format!("{} differs from the sum of weights {total}", t.value),
            ));
        }
    }
    Ok(ClusterChoice::Weighted { targets, total })
}

/// Compiles a `RedirectAction`.
pub fn redirect(r: &rpb::RedirectAction) -> Result<Redirect, CompileError> {
    use rpb::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let scheme = match &r.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::HttpsRedirect(false)) | None => None,
        Some(S::SchemeRedirect(s)) if s.is_empty() => None,
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let path = match &r.path_rewrite_specifier {
        None => PathRedirect::Keep,
        Some(P::PathRedirect(p)) => PathRedirect::Path(p.clone()),
        Some(P::PrefixRewrite(p)) => PathRedirect::Prefix(p.clone()),
        Some(P::RegexRewrite(rr)) => {
            let (re, sub) = rewrite_regex(rr).map_err(|e| e.within("regex_rewrite"))?;
            PathRedirect::Regex(re, sub)
        }
        Some(P::PathRewrite(_)) => {
            return Err(CompileError::new("path_rewrite", "is not supported"))
        }
    };
    let status = match r.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        c => {
            return Err(CompileError::new(
                "response_code",
                format!("unknown value {c}"),
            ))
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => {
            Some(u16::try_from(p).map_err(|_| CompileError::new("port_redirect", "out of range"))?)
        }
    };
    Ok(Redirect {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path,
        status,
        strip_query: r.strip_query,
    })
}

/// Compiles a `DirectResponseAction`.
pub fn direct(d: &rpb::DirectResponseAction, max_body: usize) -> Result<Direct, CompileError> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| CompileError::new("status", "must be in [200, 600)"))?;
    if d.body_format.is_some() {
        return Err(CompileError::new("body_format", "is not supported"));
    }
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => bytes::Bytes::new(),
        Some(Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
        Some(_) => {
            return Err(CompileError::new(
                "body",
                "only inline bodies are supported",
            ))
        }
    };
    if body.len() > max_body {
        return Err(CompileError::new(
            "body",
            format!("is larger than {max_body} bytes"),
        ));
    }
    Ok(Direct { status, body })
}

/// The redirect's `Location` for a request with `scheme`, `host` (authority) and `path` (with
/// query); `matched_prefix` is the route's prefix match, for `prefix_rewrite`.
pub fn location(
    r: &Redirect,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    matched_prefix: Option<&str>,
) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (hostname, orig_port) = split_host_port(host);
    let mut hostname = hostname.to_string();
    let mut port: Option<String> = orig_port.map(str::to_string);
    if let Some(h) = &r.host {
        let (hn, hp) = split_host_port(h);
        hostname = hn.to_string();
        if hp.is_some() {
            port = hp.map(str::to_string);
        }
    }
    if let Some(p) = r.port {
        port = Some(p.to_string());
    } else if r.scheme.is_some() && new_scheme != scheme {
        // Envoy drops the original port when the scheme changes and it is a default port.
        if matches!(port.as_deref(), Some("80") | Some("443")) {
            port = None;
        }
    }
    if (new_scheme == "http" && port.as_deref() == Some("80"))
        || (new_scheme == "https" && port.as_deref() == Some("443"))
    {
        port = None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_and_query.to_string(), None),
    };
    let (new_path, own_query) = match &r.path {
        PathRedirect::Keep => (path, None),
        PathRedirect::Path(p) => match p.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (p.clone(), None),
        },
        PathRedirect::Prefix(p) => match matched_prefix {
            Some(m) if path.starts_with(m) => (format!("{p}{}", &path[m.len()..]), None),
            _ => (path, None),
        },
        PathRedirect::Regex(re, sub) => (re.replace_all(&path, sub.as_str()).into_owned(), None),
    };
    let query = if r.strip_query {
        None
    } else {
        own_query.or(query)
    };
    let mut out = format!("{new_scheme}://{hostname}");
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    out.push_str(&new_path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&q);
    }
    out
}

/// Splits `host[:port]` (IPv6 literals in brackets keep their brackets).
pub fn split_host_port(h: &str) -> (&str, Option<&str>) {
    if h.starts_with('[') {
        return match h.rfind("]:") {
            Some(i) => (&h[..=i], Some(&h[i + 2..])),
            None => (h, None),
        };
    }
    match h.rsplit_once(':') {
        Some((a, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (a, Some(p)),
        _ => (h, None),
    }
}
