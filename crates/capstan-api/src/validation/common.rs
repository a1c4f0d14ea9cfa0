//! Checks shared by several kinds, following Istio's `pkg/config/validation` and
//! `pkg/config/labels` helpers. Each returns `Err(message)`; callers attach the path.

use crate::common::{Duration, Percent, StringMatch, WorkloadSelector};
use crate::path::Path;
use crate::report::Report;

/// The result of a single check: the message a user sees on failure.
pub type Check = Result<(), String>;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const HOSTNAME_MAX: usize = 255;

/// RFC 1123 label: `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Lower-case RFC 1123 label, as Kubernetes requires for namespace names.
pub fn is_namespace_name(s: &str) -> bool {
    is_dns1123_label(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// A first label that may be `*` or start with `*` / `*-` (`*.example.com`, `*-foo.example.com`).
pub fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    if s.len() > DNS1123_LABEL_MAX {
        return false;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

/// Lower-case RFC 1123 subdomain (Kubernetes object names, label-key prefixes).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.split('.')
            .all(|l| is_dns1123_label(l) && !l.bytes().any(|c| c.is_ascii_uppercase()))
}

fn dns_preconditions(name: &str) -> Check {
    if name.len() > HOSTNAME_MAX {
        return Err(format!(
            "domain name {name:?} too long (max {HOSTNAME_MAX})"
        ));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Dot-separated labels; the top-level label may not be all-numeric; a trailing dot is allowed.
pub fn validate_dns1123_labels(domain: &str) -> Check {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts[parts.len() - 1];
    if !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {last:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // Istio allows the last label to be empty (`istio.io.`); for the empty string, reached
        // as the rest of `*.`, that makes the whole host valid, as istioctl agrees.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name without wildcards (Istio `ValidateFQDN`).
pub fn validate_fqdn(fqdn: &str) -> Check {
    dns_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A host that may carry a wildcard in its first label only (Istio `ValidateWildcardDomain`).
pub fn validate_wildcard_domain(domain: &str) -> Check {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// Like [`validate_wildcard_domain`] but also accepts an IP address (Istio `ValidateWildcardDomainForVirtualServiceBoundToGateway`
/// accepts IPs in hosts of gateway-bound VirtualServices; `ValidatePartialWildCard` variants).
pub fn validate_wildcard_domain_or_ip(domain: &str) -> Check {
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// Istio's `ValidatePort`: 1..=65535.
pub fn validate_port(port: u32) -> Check {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// Istio's `ValidatePortName`: a DNS-1123 label.
pub fn validate_port_name(name: &str) -> Check {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid port name: {name:?} (must be a DNS-1123 label)"
        ))
    }
}

/// Protocols Istio recognises on ports (case-insensitive), as in `protocol.Parse`.
pub const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

/// Istio's `ValidateProtocol`: a protocol from [`PROTOCOLS`], any case.
pub fn validate_protocol(protocol: &str) -> Check {
    if PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
        Ok(())
    } else {
        Err(format!(
            "unrecognized protocol {protocol:?} (one of {})",
            PROTOCOLS.join(", ")
        ))
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    s.len() <= 63 && is_qualified_name_syntax(s)
}

/// Istio's `qualifiedNameFmt` with no length limit: alphanumerics, `-`, `_`, `.`, starting and
/// ending with an alphanumeric.
fn is_qualified_name_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Kubernetes label key: optional DNS-subdomain prefix, `/`, and a name of at most 63 characters.
pub fn validate_label_key(key: &str) -> Check {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns1123_subdomain(prefix) {
            return Err(format!(
                "invalid label key {key:?}: prefix must be a DNS-1123 subdomain"
            ));
        }
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "invalid label key {key:?}: name must be at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// Istio's `labels.Instance.Validate` for a value: empty, or alphanumerics, `-`, `_`, `.`,
/// starting and ending with an alphanumeric. Istio's `labelValueRegexp` sets no length limit
/// (unlike Kubernetes' 63 for `metadata.labels`), and neither do the CRD schemas of the fields
/// checked with it (subset labels, endpoint labels, `sourceLabels`).
pub fn validate_label_value(value: &str) -> Check {
    if value.is_empty() || is_qualified_name_syntax(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be empty or alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ))
    }
}

/// Validates every key and value of a label map, reporting under `path[key]`.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &Path<'_>,
    out: &mut Report,
) {
    for (k, v) in labels {
        let p = path.key(k);
        if let Err(e) = validate_label_key(k) {
            out.error(&p, e);
        }
        if let Err(e) = validate_label_value(v) {
            out.error(&p, e);
        }
    }
}

/// Istio's `validateWorkloadSelector` for `matchLabels` selectors.
pub fn validate_workload_selector(selector: &WorkloadSelector, path: &Path<'_>, out: &mut Report) {
    validate_selector_labels(&selector.match_labels, &path.field("matchLabels"), out);
}

/// Istio's `validateWorkloadSelector` / `ValidateAlphaWorkloadSelector` over a label map
/// (`labels` of networking selectors, `matchLabels` of security ones): no empty keys, no
/// wildcards. Istio checks no other syntax; the CRD schemas add only `maxLength: 63` on values,
/// which the API server enforces and so does this.
pub fn validate_selector_labels(
    map: &std::collections::BTreeMap<String, String>,
    labels: &Path<'_>,
    out: &mut Report,
) {
    for (k, v) in map {
        let p = labels.key(k);
        if k.is_empty() {
            out.error(&p, "empty key is not supported in selector");
            continue;
        }
        if k.contains('*') || v.contains('*') {
            out.error(
                &p,
                format!("wildcard is not supported in selector: {k:?}={v:?}"),
            );
            continue;
        }
        check(validate_selector_value_length(v), &p, out);
    }
}

/// The CRD schemas' `maxLength: 63` on selector label values (checked by the API server, not
/// by Istio's webhook).
pub fn validate_selector_value_length(value: &str) -> Check {
    if value.len() > 63 {
        Err(format!(
            "selector label value {value:?} is longer than 63 characters (the CRD schema's maxLength)"
        ))
    } else {
        Ok(())
    }
}

/// Istio's `validateExportTo`: `.`, `*`, `~` (service entries and selector-less rules) or namespace names;
/// no duplicates; `*` and `~` stand alone.
pub fn validate_export_to(
    namespace: &str,
    export_to: &[String],
    allow_none: bool,
    path: &Path<'_>,
    out: &mut Report,
) {
    if export_to.is_empty() {
        return;
    }
    let mut seen: Vec<&str> = Vec::with_capacity(export_to.len());
    for (i, e) in export_to.iter().enumerate() {
        let p = path.index(i);
        // "." means this namespace, so "." and the namespace's own name are duplicates.
        let effective = if e == "." && !namespace.is_empty() {
            namespace
        } else {
            e.as_str()
        };
        if seen.contains(&effective) {
            out.error(&p, format!("duplicate entries in exportTo: {e}"));
            continue;
        }
        seen.push(effective);
        match e.as_str() {
            "." | "*" => {}
            "~" if allow_none => {}
            "~" => out.error(
                &p,
                "exportTo ~ (no one) is only allowed for service entries",
            ),
            ns => {
                if !is_namespace_name(ns) {
                    out.error(&p, format!("only . or * or valid namespace names are allowed in exportTo, got {ns:?}"));
                }
            }
        }
    }
    if export_to.len() > 1 {
        if seen.contains(&"*") {
            out.error(
                path,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if seen.contains(&"~") {
            out.error(path, "cannot export to no one (~) and someone");
        }
    }
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
pub fn validate_duration(d: &Duration) -> Check {
    let nanos = d.as_nanos();
    if nanos < 1_000_000 {
        return Err(format!("duration must be greater than 1ms, got {d}"));
    }
    if nanos % 1_000_000 != 0 {
        return Err(format!(
            "only durations to ms precision are supported, got {d}"
        ));
    }
    Ok(())
}

/// Istio's `ValidateDurationRange`: min <= d <= max.
pub fn validate_duration_range(d: &Duration, min: Duration, max: Duration) -> Check {
    if *d < min || *d > max {
        return Err(format!("duration {d} must be between {min} and {max}"));
    }
    Ok(())
}

/// Non-negative duration (Istio's `validateTimeout`-style checks allow 0 to mean "disabled").
pub fn validate_non_negative_duration(d: &Duration) -> Check {
    if d.as_nanos() < 0 {
        return Err(format!("duration must be non-negative, got {d}"));
    }
    Ok(())
}

/// Istio's `validatePercentage`: 0.0 ..= 100.0.
pub fn validate_percent(p: &Percent) -> Check {
    if !(0.0..=100.0).contains(&p.value) || p.value.is_nan() {
        return Err(format!("percentage {} is not in range 0..100", p.value));
    }
    Ok(())
}

/// HTTP header names: `[-_A-Za-z0-9]+` (Istio `ValidateHTTPHeaderName`).
pub fn validate_header_name(name: &str) -> Check {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(format!("header name {name:?} is not a valid header name"));
    }
    Ok(())
}

/// Istio validates regexes by compiling them with Go's RE2; Rust's regex syntax is the same
/// family (no look-around, no back-references), so its parser rejects what RE2 rejects.
pub fn validate_regex(re: &str) -> Check {
    if re.is_empty() {
        return Err("regex string match should not be empty".into());
    }
    // Istio caps regex program size (Envoy's max_program_size default 100); a length cap keeps
    // hostile input cheap to parse.
    if re.len() > 4096 {
        return Err(format!("regex is too long ({} bytes, max 4096)", re.len()));
    }
    regex_syntax::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(re)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{re:?} is not a valid regex: {}",
                first_line(&e.to_string())
            )
        })
}

fn first_line(s: &str) -> String {
    // regex-syntax errors are multi-line with a caret diagram; keep the explanation line.
    s.lines()
        .filter(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .next()
        .unwrap_or_else(|| s.replace('\n', " "))
}

/// `StringMatch` is a oneof: exactly one of exact/prefix/regex, and a regex must be valid RE2.
/// Istio allows an empty StringMatch object only where the field is optional; callers decide.
pub fn validate_string_match(m: &StringMatch, path: &Path<'_>, out: &mut Report) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        out.error(path, "only one of exact, prefix or regex may be set");
    }
    if let Some(re) = &m.regex {
        if let Err(e) = validate_regex(re) {
            out.error(&path.field("regex"), e);
        }
    }
}

/// Records `Err` results of a check at `path`.
pub fn check(result: Check, path: &Path<'_>, out: &mut Report) {
    if let Err(e) = result {
        out.error(path, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(validate_fqdn("reviews.default.svc.cluster.local").is_ok());
        assert!(validate_fqdn("istio.io.").is_ok());
        assert!(validate_fqdn("foo.123").is_err());
        assert!(validate_fqdn("-foo.com").is_err());
        assert!(validate_fqdn("").is_err());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*-foo.example.com").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn regexes_follow_re2() {
        assert!(validate_regex("^/api/v[0-9]+/.*$").is_ok());
        assert!(validate_regex("(?!foo)bar").is_err());
        assert!(validate_regex(r"(a)\1").is_err());
        assert!(validate_regex("[").is_err());
        assert!(validate_regex("").is_err());
    }

    #[test]
    fn labels() {
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("-app").is_err());
        assert!(validate_label_key("UPPER.io/x").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_3").is_ok());
        assert!(validate_label_value("has space").is_err());
        assert!(validate_label_value("-dash").is_err());
    }

    #[test]
    fn a_bare_wildcard_with_a_trailing_dot_is_a_domain_as_in_istio() {
        // ValidateWildcardDomain("*.") checks "" as the rest, which Istio accepts (found by
        // differential fuzzing against istioctl).
        assert!(validate_wildcard_domain("*.").is_ok());
        assert!(validate_wildcard_domain("*.example.com.").is_ok());
        assert!(validate_wildcard_domain("*..").is_err());
        assert!(validate_fqdn("").is_err());
        assert!(validate_fqdn(".").is_err());
    }

    #[test]
    fn label_values_have_no_length_limit_as_in_istio() {
        // Istio's labelValueRegexp has no length bound (found by differential fuzzing).
        assert!(validate_label_value(&format!("{}.example.com", "a".repeat(64))).is_ok());
        assert!(validate_label_value(&"x".repeat(300)).is_ok());
    }

    #[test]
    fn selectors_check_only_what_istio_and_the_crd_check() {
        let check = |k: &str, v: &str| {
            let mut out = Report::default();
            let map = std::collections::BTreeMap::from([(k.to_string(), v.to_string())]);
            validate_selector_labels(&map, &Path::root("spec").field("selector"), &mut out);
            out.errors.len()
        };
        // Accepted by istioctl and by the CRD schema: no label syntax is imposed.
        assert_eq!(check("app", "-dash.example.com"), 0);
        assert_eq!(check("app", "ns/host.example.com"), 0);
        assert_eq!(check("UPPER.io/x", "trailing.dot."), 0);
        // Rejected by Istio's webhook or the CRD schema.
        assert_eq!(check("app", "a*"), 1);
        assert_eq!(check("", "v"), 1);
        assert_eq!(check("app", &"x".repeat(64)), 1);
    }
}
