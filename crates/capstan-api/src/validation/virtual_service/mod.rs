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

mod http;
mod l4;
mod overlap;

use http::*;
use l4::*;
use overlap::*;

/// The reserved gateway name meaning "all sidecars in the mesh".
pub(super) const MESH_GATEWAY: &str = "mesh";
/// Envoy regex programs are approximated by length, as Istio does.
pub(super) const MAX_REGEX_LEN: usize = 1024;
pub(super) const KB: usize = 1024;
pub(super) const MB: usize = 1024 * KB;

/// `x-envoy-retry-on` and `x-envoy-retry-grpc-on` policies Istio accepts in `retryOn`.
pub(super) const RETRY_ON_POLICIES: &[&str] = &[
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
pub(super) const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// gRPC status names accepted in `fault.abort.grpcStatus`.
pub(super) const GRPC_STATUSES: &[&str] = &crate::common::GRPC_STATUS_CODES;

/// HTTP/2 pseudo-headers that may be matched on.
pub(super) const PSEUDO_HEADERS: &[&str] =
    &[":method", ":scheme", ":authority", ":path", ":status"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RouteType {
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
pub(super) fn is_gateway(vs: &VirtualService) -> bool {
    !vs.gateways.iter().any(|g| g == MESH_GATEWAY)
}

/// Istio's `isSniHost`: some TLS match names SNI hosts.
pub(super) fn is_sni_host(vs: &VirtualService) -> bool {
    vs.tls
        .iter()
        .any(|t| t.r#match.iter().any(|m| !m.sni_hosts.is_empty()))
}

pub(super) fn is_ip_address(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: like a wildcard domain, but
/// SNI hosts may use the auto-generated `outbound_.<port>_._.<hostname>` form.
pub(super) fn validate_wildcard_domain_for_gateway(sni: bool, domain: &str) -> Result<(), String> {
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

pub(super) fn is_wildcarded(h: &str) -> bool {
    h.starts_with('*')
}

/// Istio's `host.Name.Matches`: the two hosts overlap (either may be a wildcard).
pub(super) fn host_matches(a: &str, b: &str) -> bool {
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
pub(super) fn host_subset_of(a: &str, b: &str) -> bool {
    match (is_wildcarded(a), is_wildcarded(b)) {
        (true, true) => a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Above this many hosts, host-overlap checks use label-suffix lookups instead of comparing
/// every pair (Istio compares pairs; for huge lists this would be quadratic).
pub(super) const MAX_PAIRWISE_HOSTS: usize = 1024;

/// The suffixes of `h` that start at a `.`: `a.b.c` → `.b.c`, `.c`.
pub(super) fn dot_suffixes(h: &str) -> impl Iterator<Item = &str> {
    h.char_indices()
        .filter(|(_, c)| *c == '.')
        .map(move |(k, _)| &h[k..])
}

/// Istio's duplicate-host check: no two hosts may overlap (`*.foo.com` and `*.com` do).
pub(super) fn check_duplicate_hosts(hosts: &[String], path: &Path<'_>, out: &mut Report) {
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
pub(super) enum HostIndex<'a> {
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
pub(super) fn is_jwt_claim_route(name: &str) -> bool {
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
pub(super) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Istio's `ValidateHTTPHeaderNameOrJwtClaimRoute` (header names in matches).
pub(super) fn validate_match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) || is_token(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

/// Istio's `ValidateCORSHTTPHeaderName`.
pub(super) fn validate_cors_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name == "*" || is_token(name) {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

pub(super) fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (request add/set).
pub(super) fn validate_header_op_name_with_authority(name: &str) -> Result<(), String> {
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
pub(super) fn validate_header_op_name(name: &str) -> Result<(), String> {
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
pub(super) fn validate_header_value(value: &str) -> Result<(), String> {
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
pub(super) fn validate_gateway_names(names: &[String], path: &Path<'_>, out: &mut Report) {
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

pub(super) fn route_type(route: &HttpRoute, delegate: bool) -> RouteType {
    if delegate {
        RouteType::Delegate
    } else if route.delegate.is_some() {
        RouteType::Root
    } else {
        RouteType::Independent
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
