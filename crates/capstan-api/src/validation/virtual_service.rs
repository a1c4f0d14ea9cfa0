//! `VirtualService` validation, following Istio's `ValidateVirtualService` and the helpers in
//! `pkg/config/validation/virtualservice.go` / `validation.go` (routes, matches, destinations,
//! retries, faults, CORS, redirects, rewrites, direct responses, mirrors, header operations),
//! plus the unreachable-rule analysis Istio reports as warnings.

use super::common::{
    is_dns1123_label, validate_duration, validate_export_to, validate_fqdn, validate_labels,
    validate_port, validate_regex, validate_wildcard_domain,
};
use super::{Context, Validate};
use crate::common::{Percent, StringMatch};
use crate::networking::{
    CorsPolicy, Destination, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpDirectResponse,
    HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute, HttpRouteDestination, L4MatchAttributes, RouteDestination, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualService,
};
use crate::path::Path;
use crate::report::Report;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// The reserved gateway name meaning "all sidecars in the mesh".
const MESH_GATEWAY: &str = "mesh";
/// Envoy regex programs are approximated by length, as Istio does.
const MAX_REGEX_LEN: usize = 1024;
const KB: usize = 1024;
const MB: usize = 1024 * KB;

/// `x-envoy-retry-on` and `x-envoy-retry-grpc-on` policies Istio accepts in `retryOn`.
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Methods accepted in `corsPolicy.allowMethods` (Go's `net/http` methods plus `*`).
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// gRPC status names accepted in `fault.abort.grpcStatus`.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// HTTP/2 pseudo-headers that may be matched on.
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteType {
    Independent,
    Root,
    Delegate,
}

impl Validate for VirtualService {
    fn validate(&self, cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        // A VirtualService without hosts is a delegate: only HTTP routes, no gateways. With
        // delegation turned off (PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE=false) hosts are required.
        let is_delegate = self.is_delegate() && cx.virtual_service_delegate;
        if self.is_delegate() && !cx.virtual_service_delegate {
            out.error(
                &spec.field("hosts"),
                "virtual service must have at least one host",
            );
        }
        if is_delegate {
            if !self.gateways.is_empty() {
                out.error(
                    &spec.field("gateways"),
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !self.tls.is_empty() {
                out.error(
                    &spec.field("tls"),
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !self.tcp.is_empty() {
                out.error(
                    &spec.field("tcp"),
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }

        let mut applies_to_gateway = false;
        if !self.gateways.is_empty() {
            validate_gateway_names(&self.gateways, &spec.field("gateways"), out);
            applies_to_gateway = is_gateway(self);
        }
        let applies_to_mesh = !applies_to_gateway;

        if !applies_to_gateway {
            let http = spec.field("http");
            for (i, route) in self.http.iter().enumerate() {
                let rp = http.index(i);
                let mp = rp.field("match");
                for (j, m) in route.r#match.iter().enumerate() {
                    let jp = mp.index(j);
                    for (field, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        let fp = jp.field(field);
                        for key in map.keys() {
                            if is_jwt_claim_route(key) {
                                out.error(
                                    &fp.key(key),
                                    format!(
                                        "JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {:?}",
                                        self.gateways
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }

        let hosts = spec.field("hosts");
        let sni = is_sni_host(self);
        let mut all_hosts_valid = true;
        for (i, host) in self.hosts.iter().enumerate() {
            let result = if applies_to_gateway {
                validate_wildcard_domain_for_gateway(sni, host)
            } else {
                validate_wildcard_domain(host)
            };
            match result {
                Err(e) => {
                    if !is_ip_address(host) {
                        out.error(&hosts.index(i), e);
                        all_hosts_valid = false;
                    }
                }
                Ok(()) => {
                    if applies_to_mesh && host == "*" {
                        out.error(
                            &hosts.index(i),
                            "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                        );
                        all_hosts_valid = false;
                    }
                }
            }
        }
        // Duplicates include wildcard overlaps: *.foo.com and *.com are duplicates.
        if all_hosts_valid {
            check_duplicate_hosts(&self.hosts, &hosts, out);
        }

        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            out.error(
                &spec,
                "http, tcp or tls must be provided in virtual service",
            );
        }
        let http = spec.field("http");
        for (i, route) in self.http.iter().enumerate() {
            validate_http_route(route, is_delegate, &http.index(i), out);
        }
        let tls = spec.field("tls");
        if !self.tls.is_empty() {
            let index = HostIndex::new(&self.hosts);
            for (i, route) in self.tls.iter().enumerate() {
                validate_tls_route(route, self, &index, &tls.index(i), out);
            }
        }
        let tcp = spec.field("tcp");
        for (i, route) in self.tcp.iter().enumerate() {
            validate_tcp_route(route, &tcp.index(i), out);
        }

        validate_export_to(
            cx.namespace,
            &self.export_to,
            false,
            &spec.field("exportTo"),
            out,
        );

        analyze_unreachable_http_rules(&self.http, &http, out);
        analyze_unreachable_l4_rules(&self.tcp, |r: &TcpRoute| &r.r#match, &tcp, out);
        analyze_unreachable_l4_rules(&self.tls, |r: &TlsRoute| &r.r#match, &tls, out);
    }
}

/// Istio's `isGateway`: true unless the reserved `mesh` gateway is listed.
fn is_gateway(vs: &VirtualService) -> bool {
    !vs.gateways.iter().any(|g| g == MESH_GATEWAY)
}

/// Istio's `isSniHost`: some TLS match names SNI hosts.
fn is_sni_host(vs: &VirtualService) -> bool {
    vs.tls
        .iter()
        .any(|t| t.r#match.iter().any(|m| !m.sni_hosts.is_empty()))
}

fn is_ip_address(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: like a wildcard domain, but
/// SNI hosts may use the auto-generated `outbound_.<port>_._.<hostname>` form.
fn validate_wildcard_domain_for_gateway(sni: bool, domain: &str) -> Result<(), String> {
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if sni && domain.starts_with("outbound_") {
        const FORMAT: &str = "outbound_.<PORT>_._.<HOSTNAME>";
        let parts: Vec<&str> = domain.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {domain} invalid, should follow '{FORMAT}' format"
            ));
        }
        let direction = parts[0];
        let port = parts[1].trim_matches('.');
        let hostname = parts[3].trim_matches('.');
        if direction != "outbound" {
            return Err(format!(
                "domain name {domain:?} invalid (label {direction:?} invalid)"
            ));
        }
        if !port.bytes().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
            ));
        }
        if !hostname.bytes().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {hostname:?} invalid). should follow {FORMAT} format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

fn is_wildcarded(h: &str) -> bool {
    h.starts_with('*')
}

/// Istio's `host.Name.Matches`: the two hosts overlap (either may be a wildcard).
fn host_matches(a: &str, b: &str) -> bool {
    match (is_wildcarded(a), is_wildcarded(b)) {
        (true, true) => {
            let (a, b) = (&a[1..], &b[1..]);
            if a.len() < b.len() {
                b.ends_with(a)
            } else {
                a.ends_with(b)
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every name matched by `a` is matched by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    match (is_wildcarded(a), is_wildcarded(b)) {
        (true, true) => a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Above this many hosts, host-overlap checks use label-suffix lookups instead of comparing
/// every pair (Istio compares pairs; for huge lists this would be quadratic).
const MAX_PAIRWISE_HOSTS: usize = 1024;

/// The suffixes of `h` that start at a `.`: `a.b.c` → `.b.c`, `.c`.
fn dot_suffixes(h: &str) -> impl Iterator<Item = &str> {
    h.char_indices()
        .filter(|(_, c)| *c == '.')
        .map(move |(k, _)| &h[k..])
}

/// Istio's duplicate-host check: no two hosts may overlap (`*.foo.com` and `*.com` do).
fn check_duplicate_hosts(hosts: &[String], path: &Path<'_>, out: &mut Report) {
    let report = |out: &mut Report, j: usize, a: &str, b: &str| {
        out.error(
            &path.index(j),
            format!("duplicate hosts in virtual service: {a} & {b}"),
        );
    };
    if hosts.len() <= MAX_PAIRWISE_HOSTS {
        for (i, a) in hosts.iter().enumerate() {
            for (j, b) in hosts.iter().enumerate().skip(i + 1) {
                if host_matches(a, b) {
                    report(out, j, a, b);
                }
            }
        }
        return;
    }
    // Large lists: exact duplicates and label-aligned wildcard overlaps, in linear time.
    let mut exact: HashMap<&str, usize> = HashMap::new();
    let mut wild: HashMap<&str, usize> = HashMap::new();
    let mut suffixes: HashMap<&str, usize> = HashMap::new();
    for (j, h) in hosts.iter().enumerate() {
        let earlier = if let Some(body) = h.strip_prefix('*') {
            if body.is_empty() && j > 0 {
                Some(0)
            } else {
                wild.get("")
                    .or_else(|| wild.get(body))
                    .or_else(|| dot_suffixes(body).find_map(|s| wild.get(s)))
                    .or_else(|| suffixes.get(body))
                    .copied()
            }
        } else {
            exact
                .get(h.as_str())
                .or_else(|| wild.get(""))
                .or_else(|| dot_suffixes(h).find_map(|s| wild.get(s)))
                .copied()
        };
        if let Some(i) = earlier {
            if let Some(a) = hosts.get(i) {
                report(out, j, a, h);
            }
        }
        match h.strip_prefix('*') {
            Some(body) => {
                wild.entry(body).or_insert(j);
                for s in dot_suffixes(body) {
                    suffixes.entry(s).or_insert(j);
                }
            }
            None => {
                exact.entry(h.as_str()).or_insert(j);
                for s in dot_suffixes(h) {
                    suffixes.entry(s).or_insert(j);
                }
            }
        }
    }
}

/// Answers "is this SNI host a subset of one of the VirtualService's hosts?".
enum HostIndex<'a> {
    /// Few hosts: compare against each.
    List(&'a [String]),
    /// Many hosts: exact names and wildcard bodies (`*.foo.com` → `.foo.com`).
    Sets {
        exact: HashSet<&'a str>,
        wild: HashSet<&'a str>,
    },
}

impl<'a> HostIndex<'a> {
    fn new(hosts: &'a [String]) -> HostIndex<'a> {
        if hosts.len() <= MAX_PAIRWISE_HOSTS {
            return HostIndex::List(hosts);
        }
        let mut exact = HashSet::new();
        let mut wild = HashSet::new();
        for h in hosts {
            match h.strip_prefix('*') {
                Some(body) => wild.insert(body),
                None => exact.insert(h.as_str()),
            };
        }
        HostIndex::Sets { exact, wild }
    }

    fn has_superset_of(&self, sni: &str) -> bool {
        match self {
            HostIndex::List(hosts) => hosts.iter().any(|h| host_subset_of(sni, h)),
            HostIndex::Sets { exact, wild } => {
                if wild.contains("") {
                    return true;
                }
                match sni.strip_prefix('*') {
                    Some(body) => {
                        wild.contains(body) || dot_suffixes(body).any(|s| wild.contains(s))
                    }
                    None => exact.contains(sni) || dot_suffixes(sni).any(|s| wild.contains(s)),
                }
            }
        }
    }
}

/// Istio's `jwt.ToRoutingClaim(..).Match`: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`.
fn is_jwt_claim_route(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    let Some(head) = name.get(..PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    if let Some(dotted) = rest.strip_prefix('.') {
        return dotted.split('.').all(|c| !c.is_empty());
    }
    if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .split("][")
            .all(|c| !c.is_empty() && !c.contains('[') && !c.contains(']'));
    }
    false
}

/// RFC 7230 `tchar`: the characters of a header field name.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Istio's `ValidateHTTPHeaderNameOrJwtClaimRoute` (header names in matches).
fn validate_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) || is_token(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

/// Istio's `ValidateCORSHTTPHeaderName`.
fn validate_cors_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name == "*" || is_token(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (request add/set).
fn validate_header_op_name_with_authority(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Istio's `ValidateHTTPHeaderOperationName` (request remove, all response operations).
fn validate_header_op_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters (tab allowed), and `%` must be
/// escaped (`%%`) or introduce a well-formed `%VARIABLE%` / `%VARIABLE(args)%` expression,
/// as Envoy's header formatter parses it.
fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .bytes()
        .any(|c| (c <= 0x08) || (0x0A..=0x1F).contains(&c) || c == 0x7F)
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    #[derive(PartialEq)]
    enum State {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectArrayDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let b = value.as_bytes();
    let mut state = State::Literal;
    let mut pos = 0;
    let err = |m: &str| Err(format!("header value configuration: {m}"));
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            State::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return err("invalid header configuration. Un-escaped %");
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = State::VariableName;
                    }
                }
            }
            State::VariableName => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch == b'(' {
                    state = State::ExpectArray;
                }
            }
            State::ExpectArray => {
                if ch == b'[' {
                    state = State::ExpectString;
                } else if ch != b' ' {
                    state = State::String;
                }
            }
            State::ExpectArrayDelimiterOrEnd => {
                if ch == b',' {
                    state = State::ExpectString;
                } else if ch == b']' {
                    state = State::ExpectArgsEnd;
                } else if ch != b' ' {
                    return err("invalid header configuration. Expecting ',', ']', or whitespace");
                }
            }
            State::ExpectString => {
                if ch == b'"' {
                    state = State::String;
                } else if ch != b' ' {
                    return err("invalid header configuration. Expecting '\"'");
                }
            }
            State::String => {
                if ch == b'\\' {
                    if !has_next {
                        return err(
                            "invalid header configuration. Un-terminated backslash in JSON string",
                        );
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = State::ExpectArrayDelimiterOrEnd;
                }
            }
            State::ExpectArgsEnd => {
                if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch != b' ' {
                    return err("invalid header configuration. Expecting ')' or whitespace");
                }
            }
            State::ExpectVariableEnd => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch != b' ' {
                    return err("invalid header configuration. Expecting '%' or whitespace");
                }
            }
        }
        pos += 1;
    }
    if state != State::Literal {
        return Err(format!(
            "header value configuration: invalid header configuration. Un-terminated variable expression '{value}'"
        ));
    }
    Ok(())
}

/// Istio's `validateGatewayNames`: `namespace/name`, or a plain name (`mesh`, legacy FQDN form).
fn validate_gateway_names(names: &[String], path: &Path<'_>, out: &mut Report) {
    for (i, name) in names.iter().enumerate() {
        let p = path.index(i);
        match name.split_once('/') {
            None => {
                if let Some((short, rest)) = name.split_once('.') {
                    let ns = rest.split('.').next().unwrap_or_default();
                    out.warn(
                        &p,
                        format!(
                            "using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: \"{ns}/{short}\""
                        ),
                    );
                }
                if let Err(e) = validate_fqdn(name) {
                    out.error(&p, e);
                }
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    out.error(&p, "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    out.error(&p, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(gw) {
                    out.error(&p, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

fn route_type(route: &HttpRoute, delegate: bool) -> RouteType {
    if delegate {
        RouteType::Delegate
    } else if route.delegate.is_some() {
        RouteType::Root
    } else {
        RouteType::Independent
    }
}

/// Istio's `validateHTTPRoute`.
fn validate_http_route(route: &HttpRoute, delegate: bool, path: &Path<'_>, out: &mut Report) {
    validate_http_route_conflict(route, route_type(route, delegate), path, out);
    let mp = path.field("match");
    for (j, m) in route.r#match.iter().enumerate() {
        validate_http_match(m, &mp.index(j), out);
    }
    if let Some(h) = &route.headers {
        validate_headers(h, &path.field("headers"), out);
    }
    if let Some(c) = &route.cors_policy {
        validate_cors_policy(c, &path.field("corsPolicy"), out);
    }
    if let Some(f) = &route.fault {
        validate_fault(f, &path.field("fault"), out);
    }
    if let Some(v) = route.mirror_percent {
        let p = path.field("mirrorPercent");
        if v > 100 {
            out.error(
                &p,
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        out.warn(
            &p,
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &route.mirror_percentage {
        validate_mirror_percentage(p, "mirror_percentage", &path.field("mirrorPercentage"), out);
    }
    if let Some(m) = &route.mirror {
        validate_destination(m, &path.field("mirror"), out);
    }
    validate_mirrors(&route.mirrors, &path.field("mirrors"), out);
    if let Some(r) = &route.redirect {
        validate_redirect(r, &path.field("redirect"), out);
    }
    if let Some(d) = &route.direct_response {
        validate_direct_response(d, &path.field("directResponse"), out);
    }
    if let Some(r) = &route.retries {
        validate_retry(r, &path.field("retries"), out);
    }
    if let Some(r) = &route.rewrite {
        validate_rewrite(r, &path.field("rewrite"), out);
    }
    validate_authority_rewrite(route, path, out);
    validate_http_route_destinations(&route.route, &path.field("route"), out);
    if let Some(t) = &route.timeout {
        if let Err(e) = validate_duration(t) {
            out.error(&path.field("timeout"), e);
        }
    }
}

/// Istio's `validateHTTPRouteConflict`: which of route/redirect/directResponse/delegate may combine.
fn validate_http_route_conflict(
    route: &HttpRoute,
    kind: RouteType,
    path: &Path<'_>,
    out: &mut Report,
) {
    let name = &route.name;
    if kind == RouteType::Root {
        if route.redirect.is_some() {
            out.error(
                &path.field("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !route.route.is_empty() {
            out.error(
                &path.field("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if kind == RouteType::Delegate && route.delegate.is_some() {
        out.error(
            &path.field("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if route.redirect.is_some() {
        if !route.route.is_empty() {
            out.error(
                &path.field("route"),
                "HTTP route cannot contain both route and redirect",
            );
        }
        if route.fault.is_some() {
            out.error(
                &path.field("fault"),
                "HTTP route cannot contain both fault and redirect",
            );
        }
        if route.rewrite.is_some() {
            out.error(
                &path.field("rewrite"),
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if route.direct_response.is_some() {
            out.error(
                &path.field("directResponse"),
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if route.direct_response.is_some() {
        if !route.route.is_empty() {
            out.error(
                &path.field("route"),
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if route.fault.is_some() {
            out.error(
                &path.field("fault"),
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if route.rewrite.is_some() {
            out.error(
                &path.field("rewrite"),
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if route.route.is_empty() {
        out.error(path, "HTTP route, redirect or direct_response is required");
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        out.error(
            &path.field("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
}

/// Istio's `validateStringMatch`: one alternative only; prefixes non-empty (unless
/// `allow_empty_prefix`, as for `uri`); regexes valid RE2 of bounded size.
fn validate_string_match(
    m: &StringMatch,
    where_: &str,
    allow_empty_prefix: bool,
    path: &Path<'_>,
    out: &mut Report,
) {
    let set = usize::from(m.exact.is_some())
        + usize::from(m.prefix.is_some())
        + usize::from(m.regex.is_some());
    if set > 1 {
        out.error(path, "only one of exact, prefix or regex may be set");
    }
    if let Some(prefix) = &m.prefix {
        if prefix.is_empty() && !allow_empty_prefix {
            out.error(
                &path.field("prefix"),
                format!("{where_:?}: prefix string match should not be empty"),
            );
        }
    }
    if let Some(re) = &m.regex {
        if let Err(e) = validate_string_regexp(re, where_) {
            out.error(&path.field("regex"), e);
        }
    }
}

/// Istio's `validateStringRegexp`: non-empty, at most 1024 bytes, valid RE2.
fn validate_string_regexp(re: &str, where_: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err(format!(
            "{where_:?}: regex string match should not be empty"
        ));
    }
    if re.len() > MAX_REGEX_LEN {
        return Err(format!(
            "{where_:?}: regex is too large, max length allowed is {MAX_REGEX_LEN}"
        ));
    }
    validate_regex(re).map_err(|e| {
        format!("{where_:?}: {e}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
    })
}

/// Istio's `validateHTTPRouteMatchRequest` for one match.
fn validate_http_match(m: &HttpMatchRequest, path: &Path<'_>, out: &mut Report) {
    let hp = path.field("headers");
    for (name, sm) in &m.headers {
        let p = hp.key(name);
        if let Err(e) = validate_match_header_name(name) {
            out.error(&p, e);
        }
        validate_string_match(sm, "headers", false, &p, out);
    }
    let wp = path.field("withoutHeaders");
    for (name, sm) in &m.without_headers {
        let p = wp.key(name);
        if let Err(e) = validate_match_header_name(name) {
            out.error(&p, e);
        }
        // `regex: "*"` is not RE2: Istio translates it to a presence match.
        if sm.regex.as_deref() != Some("*") {
            validate_string_match(sm, "withoutHeaders", false, &p, out);
        }
    }
    // Envoy allows an empty URI prefix, but not an empty scheme/method/authority prefix.
    if let Some(sm) = &m.uri {
        validate_string_match(sm, "uri", true, &path.field("uri"), out);
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            validate_string_match(sm, field, false, &path.field(field), out);
        }
    }
    let qp = path.field("queryParams");
    for (name, sm) in &m.query_params {
        validate_string_match(sm, "queryParams", false, &qp.key(name), out);
    }
    if let Some(port) = m.port {
        if port != 0 {
            if let Err(e) = validate_port(port) {
                out.error(&path.field("port"), e);
            }
        }
    }
    validate_labels(&m.source_labels, &path.field("sourceLabels"), out);
    validate_gateway_names(&m.gateways, &path.field("gateways"), out);
    validate_source_namespace(&m.source_namespace, &path.field("sourceNamespace"), out);
}

fn validate_source_namespace(ns: &str, path: &Path<'_>, out: &mut Report) {
    if !ns.is_empty() && !is_dns1123_label(ns) {
        out.error(path, format!("sourceNamespace match {ns} is invalid"));
    }
}

/// Header operations on a route or a destination.
fn validate_headers(h: &Headers, path: &Path<'_>, out: &mut Report) {
    if let Some(req) = &h.request {
        validate_header_ops(req, true, &path.field("request"), out);
    }
    if let Some(resp) = &h.response {
        validate_header_ops(resp, false, &path.field("response"), out);
    }
}

fn validate_header_ops(ops: &HeaderOperations, request: bool, path: &Path<'_>, out: &mut Report) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        let fp = path.field(field);
        for (name, value) in map {
            let p = fp.key(name);
            let name_check = if request {
                validate_header_op_name_with_authority(name)
            } else {
                validate_header_op_name(name)
            };
            if let Err(e) = name_check {
                out.error(&p, e);
            }
            if let Err(e) = validate_header_value(value) {
                out.error(&p, e);
            }
        }
    }
    let rp = path.field("remove");
    for (i, name) in ops.remove.iter().enumerate() {
        if let Err(e) = validate_header_op_name(name) {
            out.error(&rp.index(i), e);
        }
    }
}

/// Istio's `validateAuthorityRewrite`: the authority may be rewritten in one place only.
fn validate_authority_rewrite(route: &HttpRoute, path: &Path<'_>, out: &mut Report) {
    let mut current: &str = route
        .rewrite
        .as_ref()
        .map(|r| r.authority.as_str())
        .unwrap_or_default();
    let Some(req) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    let hp = path.field("headers");
    let rp = hp.field("request");
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        for (name, value) in map {
            if !is_authority_header(name) {
                continue;
            }
            if !current.is_empty() {
                let fp = rp.field(field);
                out.error(
                    &fp.key(name),
                    format!(
                        "authority header cannot be set multiple times: have {current:?}, attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = value;
        }
    }
}

/// Istio's `validateDestination`.
fn validate_destination(d: &Destination, path: &Path<'_>, out: &mut Report) {
    if d.host == "*" {
        out.error(
            &path.field("host"),
            format!("invalid destination host {}", d.host),
        );
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        out.error(&path.field("host"), e);
    }
    if !d.subset.is_empty() && !is_dns1123_label(&d.subset) {
        out.error(
            &path.field("subset"),
            format!("subset name is invalid: {}", d.subset),
        );
    }
    if let Some(port) = &d.port {
        if let Err(e) = validate_port(port.number) {
            let pp = path.field("port");
            out.error(&pp.field("number"), e);
        }
    }
}

fn validate_weight(weight: Option<i32>, path: &Path<'_>, out: &mut Report) -> i64 {
    let w = weight.unwrap_or(0);
    if w < 0 {
        out.error(&path.field("weight"), format!("weight {w} < 0"));
    }
    i64::from(w)
}

/// Istio's `validateHTTPRouteDestinations`: weights are relative (Envoy normalises them), so
/// only negative weights and an all-zero split are errors.
fn validate_http_route_destinations(
    routes: &[HttpRouteDestination],
    path: &Path<'_>,
    out: &mut Report,
) {
    let mut total: i64 = 0;
    for (i, r) in routes.iter().enumerate() {
        let p = path.index(i);
        match &r.destination {
            None => out.error(&p.field("destination"), "destination is required"),
            Some(d) => validate_destination(d, &p.field("destination"), out),
        }
        if let Some(h) = &r.headers {
            validate_headers(h, &p.field("headers"), out);
        }
        total += validate_weight(r.weight, &p, out);
    }
    if routes.len() > 1 && total == 0 {
        out.error(path, "total destination weight = 0");
    }
}

/// Istio's `validateRouteDestinations` (TLS and TCP routes).
fn validate_route_destinations(routes: &[RouteDestination], path: &Path<'_>, out: &mut Report) {
    let mut total: i64 = 0;
    for (i, r) in routes.iter().enumerate() {
        let p = path.index(i);
        match &r.destination {
            None => out.error(&p.field("destination"), "destination is required"),
            Some(d) => validate_destination(d, &p.field("destination"), out),
        }
        total += validate_weight(r.weight, &p, out);
    }
    if routes.len() > 1 && total == 0 {
        out.error(path, "total destination weight = 0");
    }
}

/// Istio's `validatePercentage`: 0, or within [0.0001, 100].
fn validate_percentage(p: &Percent, path: &Path<'_>, out: &mut Report) {
    let v = p.value;
    if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        out.error(
            path,
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn validate_mirror_percentage(p: &Percent, what: &str, path: &Path<'_>, out: &mut Report) {
    let v = p.value;
    if v > 100.0 {
        out.error(
            path,
            format!("{what} must have a max value of 100 (it has {v:.6})"),
        );
    }
    if v < 0.0 {
        out.error(
            path,
            format!("{what} must have a min value of 0 (it has {v:.6})"),
        );
    }
    if v.is_nan() {
        out.error(path, format!("{what} must be a number"));
    }
}

/// Istio's `validateHTTPMirrors`.
fn validate_mirrors(mirrors: &[HttpMirrorPolicy], path: &Path<'_>, out: &mut Report) {
    for (i, m) in mirrors.iter().enumerate() {
        let p = path.index(i);
        let Some(d) = &m.destination else {
            out.error(
                &p.field("destination"),
                "destination is required for mirrors",
            );
            continue;
        };
        validate_destination(d, &p.field("destination"), out);
        if let Some(pct) = &m.percentage {
            validate_mirror_percentage(pct, "mirror percentage", &p.field("percentage"), out);
        }
    }
}

/// Istio's `validateCORSPolicy`.
fn validate_cors_policy(c: &CorsPolicy, path: &Path<'_>, out: &mut Report) {
    if !c.allow_origin.is_empty() {
        out.warn(
            &path.field("allowOrigin"),
            "allowOrigin is deprecated, use allowOrigins (a list of string matches) instead",
        );
    }
    let op = path.field("allowOrigins");
    for (i, origin) in c.allow_origins.iter().enumerate() {
        let p = op.index(i);
        let value = origin
            .exact
            .as_deref()
            .or(origin.prefix.as_deref())
            .or(origin.regex.as_deref())
            .unwrap_or_default();
        if value.is_empty() {
            out.error(
                &p,
                format!("'{value}' is not a valid match type for CORS allow origins"),
            );
            continue;
        }
        validate_string_match(origin, "corsPolicy.allowOrigins", false, &p, out);
    }
    let mp = path.field("allowMethods");
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            out.error(
                &mp.index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        let fp = path.field(field);
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = validate_cors_header_name(name) {
                out.error(&fp.index(i), e);
            }
        }
    }
    if let Some(age) = &c.max_age {
        let p = path.field("maxAge");
        if let Err(e) = validate_duration(age) {
            out.error(&p, e);
        }
        if age.nanos > 0 {
            out.error(&p, "max_age duration is accurate only to seconds precision");
        }
    }
}

/// Istio's `validateHTTPFaultInjection`.
fn validate_fault(f: &HttpFaultInjection, path: &Path<'_>, out: &mut Report) {
    if f.abort.is_none() && f.delay.is_none() {
        out.error(
            path,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(a) = &f.abort {
        validate_abort(a, &path.field("abort"), out);
    }
    if let Some(d) = &f.delay {
        validate_delay(d, &path.field("delay"), out);
    }
}

fn validate_deprecated_percent(percent: Option<i32>, path: &Path<'_>, out: &mut Report) {
    if let Some(v) = percent {
        let p = path.field("percent");
        if !(0..=100).contains(&v) {
            out.error(&p, format!("percentage {v} is not in range 0..100"));
        }
        out.warn(
            &p,
            "using deprecated setting \"percent\", use \"percentage\" instead",
        );
    }
}

/// Istio's `validateHTTPStatus` (it accepts 200..=600).
fn validate_http_status(status: i64) -> Result<(), String> {
    if !(200..=600).contains(&status) {
        return Err(format!("HTTP status {status} is not in range 200-599"));
    }
    Ok(())
}

fn validate_abort(a: &FaultAbort, path: &Path<'_>, out: &mut Report) {
    validate_deprecated_percent(a.percent, path, out);
    if let Some(p) = &a.percentage {
        validate_percentage(p, &path.field("percentage"), out);
    }
    let set = usize::from(a.http_status.is_some())
        + usize::from(a.grpc_status.is_some())
        + usize::from(a.http2_error.is_some());
    if set > 1 {
        out.error(
            path,
            "only one of httpStatus, grpcStatus or http2Error may be set",
        );
    }
    if let Some(s) = &a.grpc_status {
        if !GRPC_STATUSES.contains(&s.as_str()) {
            out.error(
                &path.field("grpcStatus"),
                format!("gRPC status {s:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
            );
        }
    }
    if a.http2_error.is_some() {
        out.error(
            &path.field("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    }
    if let Some(s) = a.http_status {
        if let Err(e) = validate_http_status(i64::from(s)) {
            out.error(&path.field("httpStatus"), e);
        }
    }
    if set == 0 {
        out.warn(path, "abort configured, but error type not set");
    }
}

fn validate_delay(d: &FaultDelay, path: &Path<'_>, out: &mut Report) {
    validate_deprecated_percent(d.percent, path, out);
    if let Some(p) = &d.percentage {
        validate_percentage(p, &path.field("percentage"), out);
    }
    if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
        out.error(
            path,
            "only one of fixedDelay or exponentialDelay may be set",
        );
    }
    if let Some(fd) = &d.fixed_delay {
        if let Err(e) = validate_duration(fd) {
            out.error(&path.field("fixedDelay"), e);
        }
    }
    if let Some(ed) = &d.exponential_delay {
        let p = path.field("exponentialDelay");
        if let Err(e) = validate_duration(ed) {
            out.error(&p, e);
        }
        out.error(&p, "exponentialDelay not supported yet");
    }
}

/// Go's `http.StatusText(code) != ""`: the status codes Go knows by name.
fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103
        | 200..=208 | 226
        | 300..=305 | 307 | 308
        | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

/// Istio's `validateHTTPRetry`.
fn validate_retry(r: &HttpRetry, path: &Path<'_>, out: &mut Report) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        out.error(&path.field("attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        out.error(
            path,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = &r.per_try_timeout {
        if let Err(e) = validate_duration(t) {
            out.error(&path.field("perTryTimeout"), e);
        }
    }
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',') {
            let is_status = policy.parse::<i64>().is_ok_and(is_known_http_status);
            if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                out.error(
                    &path.field("retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
    if let Some(b) = &r.backoff {
        if let Err(e) = validate_duration(b) {
            out.error(&path.field("backoff"), e);
        }
    }
}

/// Istio's `validateHTTPRedirect`.
fn validate_redirect(r: &HttpRedirect, path: &Path<'_>, out: &mut Report) {
    if r.uri.is_empty()
        && r.authority.is_empty()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_empty()
    {
        out.error(
            path,
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    if r.port.is_some() && r.derive_port.is_some() {
        out.error(path, "only one of port or derivePort may be set");
    }
    if let Some(code) = r.redirect_code {
        if code != 0 && !(300..=399).contains(&code) {
            out.error(
                &path.field("redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
    }
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        out.error(
            &path.field("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(port) = r.port {
        if port > 0 {
            if let Err(e) = validate_port(port) {
                out.error(&path.field("port"), e);
            }
        }
    }
}

/// Decoded length of protobuf-JSON `bytes` (standard or URL-safe base64, padding optional),
/// or `None` when the text is not base64.
fn base64_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    if !body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'))
    {
        return None;
    }
    match body.len() % 4 {
        1 => None,
        rem => Some(body.len() / 4 * 3 + rem.saturating_sub(1)),
    }
}

/// Istio's `validateHTTPDirectResponse`.
fn validate_direct_response(d: &HttpDirectResponse, path: &Path<'_>, out: &mut Report) {
    if let Some(body) = &d.body {
        let bp = path.field("body");
        if body.string.is_some() && body.bytes.is_some() {
            out.error(&bp, "only one of string or bytes may be set");
        }
        let mut size = body.string.as_ref().map_or(0, String::len);
        if let Some(bytes) = &body.bytes {
            match base64_decoded_len(bytes) {
                Some(n) => size = size.max(n),
                None => out.error(&bp.field("bytes"), "bytes must be base64-encoded"),
            }
        }
        if size > MB {
            out.error(
                &bp,
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 * KB {
            out.warn(
                &bp,
                "large direct_responses may impact control plane performance",
            );
        }
    }
    if let Err(e) = validate_http_status(i64::from(d.status)) {
        out.error(&path.field("status"), e);
    }
}

/// Istio's `validateHTTPRewrite` and `validateURIRegexRewrite`.
fn validate_rewrite(r: &HttpRewrite, path: &Path<'_>, out: &mut Report) {
    if !r.uri.is_empty() && r.uri_regex_rewrite.is_some() {
        out.error(
            path,
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
    }
    if r.uri.is_empty() && r.uri_regex_rewrite.is_none() && r.authority.is_empty() {
        out.error(
            path,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let p = path.field("uriRegexRewrite");
        if rr.r#match.is_empty() || rr.rewrite.is_empty() {
            out.error(
                &p,
                "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        } else if let Err(e) =
            validate_string_regexp(&rr.r#match, "HTTPRewrite.UriRegexRewrite.Match")
        {
            out.error(
                &p.field("match"),
                format!("UriRegexRewrite has errors: {e}"),
            );
        }
    }
}

/// Istio's `ValidateIPSubnet`: an IP address or a CIDR block.
fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        let ok = subnet.split_once('/').is_some_and(|(addr, len)| {
            let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                return false;
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            !len.is_empty()
                && len.len() <= 3
                && len.bytes().all(|c| c.is_ascii_digit())
                && len.parse::<u32>().is_ok_and(|l| l <= max)
        });
        return if ok {
            Ok(())
        } else {
            Err(format!("{subnet} is not a valid CIDR block"))
        };
    }
    if is_ip_address(subnet) {
        Ok(())
    } else {
        Err(format!("{subnet} is not a valid IP"))
    }
}

/// Match attributes shared by TLS and TCP matches.
fn validate_l4_common(
    subnets: &[String],
    port: Option<u32>,
    labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
    path: &Path<'_>,
    out: &mut Report,
) {
    let sp = path.field("destinationSubnets");
    for (i, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            out.error(&sp.index(i), e);
        }
    }
    if let Some(port) = port {
        if port != 0 {
            if let Err(e) = validate_port(port) {
                out.error(&path.field("port"), e);
            }
        }
    }
    validate_labels(labels, &path.field("sourceLabels"), out);
    validate_gateway_names(gateways, &path.field("gateways"), out);
    validate_source_namespace(source_namespace, &path.field("sourceNamespace"), out);
}

/// Istio's `validateTLSRoute` / `validateTLSMatch` / `validateSniHost`.
fn validate_tls_route(
    route: &TlsRoute,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let mp = path.field("match");
    if route.r#match.is_empty() {
        out.error(&mp, "TLS route must have at least one match condition");
    }
    for (j, m) in route.r#match.iter().enumerate() {
        validate_tls_match(m, vs, index, &mp.index(j), out);
    }
    if route.route.is_empty() {
        out.error(&path.field("route"), "TLS route is required");
    }
    validate_route_destinations(&route.route, &path.field("route"), out);
}

fn validate_tls_match(
    m: &TlsMatchAttributes,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let sp = path.field("sniHosts");
    if m.sni_hosts.is_empty() {
        out.error(&sp, "TLS match must have at least one SNI host");
    }
    for (k, sni) in m.sni_hosts.iter().enumerate() {
        validate_sni_host(sni, vs, index, &sp.index(k), out);
    }
    validate_l4_common(
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        path,
        out,
    );
}

fn validate_sni_host(
    sni: &str,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let result = if is_gateway(vs) {
        validate_wildcard_domain_for_gateway(true, sni)
    } else {
        validate_wildcard_domain(sni)
    };
    if let Err(e) = result {
        if is_ip_address(sni) {
            out.warn(
                path,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            out.error(path, e);
        }
        return;
    }
    if index.has_superset_of(sni) {
        return;
    }
    out.error(
        path,
        format!(
            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
            vs.hosts.join(", ")
        ),
    );
}

/// Istio's `validateTCPRoute` / `validateTCPMatch`.
fn validate_tcp_route(route: &TcpRoute, path: &Path<'_>, out: &mut Report) {
    let mp = path.field("match");
    for (j, m) in route.r#match.iter().enumerate() {
        validate_tcp_match(m, &mp.index(j), out);
    }
    if route.route.is_empty() {
        out.error(&path.field("route"), "TCP route is required");
    }
    validate_route_destinations(&route.route, &path.field("route"), out);
}

fn validate_tcp_match(m: &L4MatchAttributes, path: &Path<'_>, out: &mut Report) {
    validate_l4_common(
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        path,
        out,
    );
    if !m.source_subnet.is_empty() {
        if let Err(e) = validate_ip_subnet(&m.source_subnet) {
            out.error(&path.field("sourceSubnet"), e);
        }
    }
}

// ---- unreachable rules (Istio reports these as warnings) ----

/// Above this many URI-prefix matches the pairwise overlap analysis (quadratic, warnings only)
/// is skipped, so hostile input stays cheap.
const MAX_PREFIX_OVERLAP_MATCHES: usize = 2048;

fn route_name(route: &HttpRoute, i: usize) -> String {
    if route.name.is_empty() {
        format!("#{i}")
    } else {
        format!("{:?}", route.name)
    }
}

fn request_name(m: &HttpMatchRequest, j: usize) -> String {
    if m.name.is_empty() {
        format!("#{j}")
    } else {
        format!("{:?}", m.name)
    }
}

/// Two HTTP matches select the same traffic (names are ignored, defaults are normalised),
/// as Istio's comparison of their JSON forms.
fn same_http_match(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    a.uri == b.uri
        && a.scheme == b.scheme
        && a.method == b.method
        && a.authority == b.authority
        && a.headers == b.headers
        && a.port.unwrap_or(0) == b.port.unwrap_or(0)
        && a.source_labels == b.source_labels
        && a.gateways == b.gateways
        && a.query_params == b.query_params
        && a.ignore_uri_case.unwrap_or(false) == b.ignore_uri_case.unwrap_or(false)
        && a.without_headers == b.without_headers
        && a.source_namespace == b.source_namespace
        && a.stat_prefix == b.stat_prefix
}

fn hash_string_match<H: Hasher>(m: &Option<StringMatch>, h: &mut H) {
    if let Some(m) = m {
        m.exact.hash(h);
        m.prefix.hash(h);
        m.regex.hash(h);
    } else {
        0u8.hash(h);
    }
}

fn hash_string_match_map<H: Hasher>(map: &BTreeMap<String, StringMatch>, h: &mut H) {
    map.len().hash(h);
    for (k, v) in map {
        k.hash(h);
        v.exact.hash(h);
        v.prefix.hash(h);
        v.regex.hash(h);
    }
}

/// A hash consistent with [`same_http_match`].
fn hash_http_match(m: &HttpMatchRequest) -> u64 {
    let mut h = DefaultHasher::new();
    hash_string_match(&m.uri, &mut h);
    hash_string_match(&m.scheme, &mut h);
    hash_string_match(&m.method, &mut h);
    hash_string_match(&m.authority, &mut h);
    hash_string_match_map(&m.headers, &mut h);
    m.port.unwrap_or(0).hash(&mut h);
    m.source_labels.hash(&mut h);
    m.gateways.hash(&mut h);
    hash_string_match_map(&m.query_params, &mut h);
    m.ignore_uri_case.unwrap_or(false).hash(&mut h);
    hash_string_match_map(&m.without_headers, &mut h);
    m.source_namespace.hash(&mut h);
    m.stat_prefix.hash(&mut h);
    h.finish()
}

fn warn_unused(out: &mut Report, path: &Path<'_>, rule: &str, reason: &str) {
    out.warn(
        path,
        format!("virtualService rule {rule} not used ({reason})"),
    );
}

fn warn_ineffective(out: &mut Report, path: &Path<'_>, rule: &str, m: &str, dup: &str) {
    out.warn(
        path,
        format!(
            "virtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})"
        ),
    );
}

/// Istio's `assignExactOrPrefix` without building strings: `Some((is_exact, value))` stands for
/// `"exact:value"` / `"prefix:value"`, `None` for `""`.
type ExactOrPrefix<'a> = Option<(bool, &'a str)>;

fn exact_or_prefix(m: Option<&StringMatch>) -> ExactOrPrefix<'_> {
    let m = m?;
    match (m.exact.as_deref(), m.prefix.as_deref()) {
        (Some(e), _) if !e.is_empty() => Some((true, e)),
        (_, Some(p)) if !p.is_empty() => Some((false, p)),
        _ => None,
    }
}

/// `a == b || strings.HasPrefix(a, b)` on the string forms.
fn eop_covers(a: ExactOrPrefix<'_>, b: ExactOrPrefix<'_>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((ka, va)), Some((kb, vb))) => ka == kb && va.starts_with(vb),
    }
}

fn maps_covered(a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, va)| {
            b.get(k)
                .is_some_and(|vb| eop_covers(exact_or_prefix(Some(va)), exact_or_prefix(Some(vb))))
        })
}

/// A match with a non-empty URI prefix, which takes part in the overlap analysis.
struct PrefixMatch<'a> {
    rule: usize,
    index: usize,
    prefix: &'a str,
    m: &'a HttpMatchRequest,
}

impl PrefixMatch<'_> {
    /// The method, `exact:GET` when unset.
    fn method(&self) -> ExactOrPrefix<'_> {
        exact_or_prefix(self.m.method.as_ref()).or(Some((true, "GET")))
    }
}

fn prefix_of(m: &HttpMatchRequest) -> Option<&str> {
    m.uri.as_ref()?.prefix.as_deref().filter(|p| !p.is_empty())
}

/// Istio's `coveredValidation`: the earlier prefix match `a` also catches what `b` would.
fn covered(a: &PrefixMatch<'_>, b: &PrefixMatch<'_>) -> bool {
    b.prefix.starts_with(a.prefix)
        && a.m.port.unwrap_or(0) == b.m.port.unwrap_or(0)
        && eop_covers(a.method(), b.method())
        && eop_covers(
            exact_or_prefix(a.m.authority.as_ref()),
            exact_or_prefix(b.m.authority.as_ref()),
        )
        && maps_covered(&a.m.headers, &b.m.headers)
        && maps_covered(&a.m.query_params, &b.m.query_params)
        && maps_covered(&a.m.without_headers, &b.m.without_headers)
}

/// Finds the rule of an earlier match equal to `m`, using `first` (hash → first position seen).
fn find_duplicate<'a, T: 'a>(
    m: &T,
    hash: u64,
    first: &HashMap<u64, (usize, usize)>,
    get: impl Fn(usize, usize) -> Option<&'a T>,
    same: impl Fn(&T, &T) -> bool,
) -> Option<usize> {
    let &(ri, mi) = first.get(&hash)?;
    let earlier = get(ri, mi)?;
    if same(earlier, m) {
        Some(ri)
    } else {
        None
    }
}

/// Istio's `analyzeUnreachableHTTPRules`.
fn analyze_unreachable_http_rules(routes: &[HttpRoute], path: &Path<'_>, out: &mut Report) {
    if routes.len() < 2 && routes.iter().all(|r| r.r#match.len() < 2) {
        return;
    }
    let mut first: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut prefixes: Vec<PrefixMatch<'_>> = Vec::new();
    let mut empty_match: Option<usize> = None;
    let get = |ri: usize, mi: usize| routes.get(ri).and_then(|r| r.r#match.get(mi));
    for (i, route) in routes.iter().enumerate() {
        let rp = path.index(i);
        if route.r#match.is_empty() {
            if empty_match.is_some() {
                warn_unused(
                    out,
                    &rp,
                    &route_name(route, i),
                    "only the last rule can have no matches",
                );
            }
            empty_match = Some(i);
            continue;
        }
        if empty_match.is_some() {
            warn_unused(
                out,
                &rp,
                &route_name(route, i),
                "route without matches defined before",
            );
            continue;
        }
        let mp = rp.field("match");
        let mut duplicates = 0;
        for (j, m) in route.r#match.iter().enumerate() {
            let hash = hash_http_match(m);
            if let Some(dup) = find_duplicate(m, hash, &first, get, same_http_match) {
                let dup_name = routes
                    .get(dup)
                    .map_or_else(|| format!("#{dup}"), |r| route_name(r, dup));
                warn_ineffective(
                    out,
                    &mp.index(j),
                    &route_name(route, i),
                    &request_name(m, j),
                    &dup_name,
                );
                duplicates += 1;
                continue;
            }
            first.entry(hash).or_insert((i, j));
            if let Some(prefix) = prefix_of(m) {
                prefixes.push(PrefixMatch {
                    rule: i,
                    index: j,
                    prefix,
                    m,
                });
            }
        }
        if duplicates == route.r#match.len() {
            warn_unused(
                out,
                &rp,
                &route_name(route, i),
                "all matches used by prior rules",
            );
        }
    }
    if prefixes.len() > MAX_PREFIX_OVERLAP_MATCHES {
        return;
    }
    for (a_idx, a) in prefixes.iter().enumerate() {
        for b in prefixes.iter().skip(a_idx + 1) {
            if a.prefix == b.prefix || !covered(a, b) {
                continue;
            }
            let (Some(ra), Some(rb)) = (routes.get(a.rule), routes.get(b.rule)) else {
                continue;
            };
            let rp = path.index(b.rule);
            let mp = rp.field("match");
            warn_ineffective(
                out,
                &mp.index(b.index),
                &route_name(rb, b.rule),
                &format!("{} of prefix {}", request_name(b.m, b.index), b.prefix),
                &format!(
                    "{} of prefix {} on {}",
                    request_name(a.m, a.index),
                    a.prefix,
                    route_name(ra, a.rule)
                ),
            );
        }
    }
}

/// Istio's `analyzeUnreachableTCPRules` / `analyzeUnreachableTLSRules`.
fn analyze_unreachable_l4_rules<R, M: PartialEq + Hash>(
    routes: &[R],
    matches: impl Fn(&R) -> &Vec<M>,
    path: &Path<'_>,
    out: &mut Report,
) {
    if routes.len() < 2 && routes.iter().all(|r| matches(r).len() < 2) {
        return;
    }
    let mut first: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut empty_match: Option<usize> = None;
    let get = |ri: usize, mi: usize| routes.get(ri).and_then(|r| matches(r).get(mi));
    for (i, route) in routes.iter().enumerate() {
        let rp = path.index(i);
        let ms = matches(route);
        if ms.is_empty() {
            if empty_match.is_some() {
                warn_unused(
                    out,
                    &rp,
                    &format!("#{i}"),
                    "only the last rule can have no matches",
                );
            }
            empty_match = Some(i);
            continue;
        }
        if empty_match.is_some() {
            warn_unused(
                out,
                &rp,
                &format!("#{i}"),
                "route without matches defined before",
            );
            continue;
        }
        let mp = rp.field("match");
        let mut duplicates = 0;
        for (j, m) in ms.iter().enumerate() {
            let mut h = DefaultHasher::new();
            m.hash(&mut h);
            let hash = h.finish();
            if let Some(dup) = find_duplicate(m, hash, &first, get, |a, b| a == b) {
                warn_ineffective(
                    out,
                    &mp.index(j),
                    &format!("#{i}"),
                    &format!("#{j}"),
                    &format!("#{dup}"),
                );
                duplicates += 1;
            } else {
                first.entry(hash).or_insert((i, j));
            }
        }
        if duplicates == ms.len() {
            warn_unused(
                out,
                &rp,
                &format!("#{i}"),
                "all matches used by prior rules",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_overlap() {
        assert!(host_matches("*.foo.com", "*.com"));
        assert!(host_matches("a.foo.com", "*.foo.com"));
        assert!(host_matches("*", "x.y"));
        assert!(!host_matches("a.com", "b.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
        assert!(host_subset_of("*.a.com", "*.com"));
    }

    #[test]
    fn header_values_follow_envoy_formatter() {
        assert!(validate_header_value("foo").is_ok());
        assert!(validate_header_value("%HOSTNAME%").is_ok());
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("prefix %HOSTNAME% suffix").is_ok());
        assert!(validate_header_value("%REQ(x-foo)%").is_ok());
        assert!(validate_header_value("abc%123").is_err());
        assert!(validate_header_value("%START_TIME%%").is_err());
        assert!(validate_header_value("a\u{1}b").is_err());
        assert!(validate_header_value("a\tb").is_ok());
    }

    #[test]
    fn jwt_claims() {
        assert!(is_jwt_claim_route("@request.auth.claims.groups"));
        assert!(is_jwt_claim_route("@request.auth.claims[nested][key]"));
        assert!(!is_jwt_claim_route("@request.auth.claims"));
        assert!(!is_jwt_claim_route("@request.auth.claims..x"));
        assert!(!is_jwt_claim_route("x-user"));
    }

    #[test]
    fn subnets_and_base64() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("2001:db8::/32").is_ok());
        assert!(validate_ip_subnet("10.0.0.1").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("foo").is_err());
        assert_eq!(base64_decoded_len("aGVsbG8="), Some(5));
        assert_eq!(base64_decoded_len("aGVsbG8"), Some(5));
        assert_eq!(base64_decoded_len("!!"), None);
    }
}
