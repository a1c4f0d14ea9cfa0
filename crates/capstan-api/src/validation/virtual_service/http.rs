//! HTTP routes: matches, destinations, retries, faults, CORS, redirects, rewrites, direct responses, mirrors and header operations.

use super::*;

/// Istio's `validateHTTPRoute`.
pub(super) fn validate_http_route(
    route: &HttpRoute,
    delegate: bool,
    path: &Path<'_>,
    out: &mut Report,
) {
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
pub(super) fn validate_http_route_conflict(
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
pub(super) fn validate_string_match(
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
pub(super) fn validate_string_regexp(re: &str, where_: &str) -> Result<(), String> {
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
pub(super) fn validate_http_match(m: &HttpMatchRequest, path: &Path<'_>, out: &mut Report) {
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

pub(super) fn validate_source_namespace(ns: &str, path: &Path<'_>, out: &mut Report) {
    if !ns.is_empty() && !is_dns1123_label(ns) {
        out.error(path, format!("sourceNamespace match {ns} is invalid"));
    }
}

/// Header operations on a route or a destination.
pub(super) fn validate_headers(h: &Headers, path: &Path<'_>, out: &mut Report) {
    if let Some(req) = &h.request {
        validate_header_ops(req, true, &path.field("request"), out);
    }
    if let Some(resp) = &h.response {
        validate_header_ops(resp, false, &path.field("response"), out);
    }
}

pub(super) fn validate_header_ops(
    ops: &HeaderOperations,
    request: bool,
    path: &Path<'_>,
    out: &mut Report,
) {
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
pub(super) fn validate_authority_rewrite(route: &HttpRoute, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn validate_destination(d: &Destination, path: &Path<'_>, out: &mut Report) {
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

pub(super) fn validate_weight(weight: Option<i32>, path: &Path<'_>, out: &mut Report) -> i64 {
    let w = weight.unwrap_or(0);
    if w < 0 {
        out.error(&path.field("weight"), format!("weight {w} < 0"));
    }
    i64::from(w)
}

/// Istio's `validateHTTPRouteDestinations`: weights are relative (Envoy normalises them), so
/// only negative weights and an all-zero split are errors.
pub(super) fn validate_http_route_destinations(
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
pub(super) fn validate_route_destinations(
    routes: &[RouteDestination],
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
        total += validate_weight(r.weight, &p, out);
    }
    if routes.len() > 1 && total == 0 {
        out.error(path, "total destination weight = 0");
    }
}

/// Istio's `validatePercentage`: 0, or within [0.0001, 100].
pub(super) fn validate_percentage(p: &Percent, path: &Path<'_>, out: &mut Report) {
    let v = p.value;
    if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        out.error(
            path,
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

pub(super) fn validate_mirror_percentage(
    p: &Percent,
    what: &str,
    path: &Path<'_>,
    out: &mut Report,
) {
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
pub(super) fn validate_mirrors(mirrors: &[HttpMirrorPolicy], path: &Path<'_>, out: &mut Report) {
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
pub(super) fn validate_cors_policy(c: &CorsPolicy, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn validate_fault(f: &HttpFaultInjection, path: &Path<'_>, out: &mut Report) {
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

/// The deprecated integer `percent` of a delay (or of an abort, which Istio no longer has).
/// Istio does not range-check it, so neither does this beyond a warning: the route clamps it.
pub(super) fn validate_deprecated_percent(percent: Option<i32>, path: &Path<'_>, out: &mut Report) {
    if let Some(v) = percent {
        let p = path.field("percent");
        if !(0..=100).contains(&v) {
            out.warn(
                &p,
                format!("percentage {v} is not in range 0..100; it is clamped"),
            );
        }
        out.warn(
            &p,
            "using deprecated setting \"percent\", use \"percentage\" instead",
        );
    }
}

/// Istio's `validateHTTPStatus` (it accepts 200..=600).
pub(super) fn validate_http_status(status: i64) -> Result<(), String> {
    if !(200..=600).contains(&status) {
        return Err(format!("HTTP status {status} is not in range 200-599"));
    }
    Ok(())
}

pub(super) fn validate_abort(a: &FaultAbort, path: &Path<'_>, out: &mut Report) {
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

pub(super) fn validate_delay(d: &FaultDelay, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103
        | 200..=208 | 226
        | 300..=305 | 307 | 308
        | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

/// Istio's `validateHTTPRetry`.
pub(super) fn validate_retry(r: &HttpRetry, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn validate_redirect(r: &HttpRedirect, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn base64_decoded_len(s: &str) -> Option<usize> {
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
pub(super) fn validate_direct_response(d: &HttpDirectResponse, path: &Path<'_>, out: &mut Report) {
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
pub(super) fn validate_rewrite(r: &HttpRewrite, path: &Path<'_>, out: &mut Report) {
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
