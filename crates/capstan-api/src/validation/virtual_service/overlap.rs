//! Istio's unreachable-rule analysis: later rules shadowed by earlier ones are reported as warnings.

use super::*;

/// Above this many URI-prefix matches the pairwise overlap analysis (quadratic, warnings only)
/// is skipped, so hostile input stays cheap.
pub(super) const MAX_PREFIX_OVERLAP_MATCHES: usize = 2048;

pub(super) fn route_name(route: &HttpRoute, i: usize) -> String {
    if route.name.is_empty() {
        format!("#{i}")
    } else {
        format!("{:?}", route.name)
    }
}

pub(super) fn request_name(m: &HttpMatchRequest, j: usize) -> String {
    if m.name.is_empty() {
        format!("#{j}")
    } else {
        format!("{:?}", m.name)
    }
}

/// Two HTTP matches select the same traffic (names are ignored, defaults are normalised),
/// as Istio's comparison of their JSON forms.
pub(super) fn same_http_match(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
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

pub(super) fn hash_string_match<H: Hasher>(m: &Option<StringMatch>, h: &mut H) {
    if let Some(m) = m {
        m.exact.hash(h);
        m.prefix.hash(h);
        m.regex.hash(h);
    } else {
        0u8.hash(h);
    }
}

pub(super) fn hash_string_match_map<H: Hasher>(map: &BTreeMap<String, StringMatch>, h: &mut H) {
    map.len().hash(h);
    for (k, v) in map {
        k.hash(h);
        v.exact.hash(h);
        v.prefix.hash(h);
        v.regex.hash(h);
    }
}

/// A hash consistent with [`same_http_match`].
pub(super) fn hash_http_match(m: &HttpMatchRequest) -> u64 {
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

pub(super) fn warn_unused(out: &mut Report, path: &Path<'_>, rule: &str, reason: &str) {
    out.warn(
        path,
        format!("virtualService rule {rule} not used ({reason})"),
    );
}

pub(super) fn warn_ineffective(out: &mut Report, path: &Path<'_>, rule: &str, m: &str, dup: &str) {
    out.warn(
        path,
        format!(
            "virtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})"
        ),
    );
}

/// Istio's `assignExactOrPrefix` without building strings: `Some((is_exact, value))` stands for
/// `"exact:value"` / `"prefix:value"`, `None` for `""`.
pub(super) type ExactOrPrefix<'a> = Option<(bool, &'a str)>;

pub(super) fn exact_or_prefix(m: Option<&StringMatch>) -> ExactOrPrefix<'_> {
    let m = m?;
    match (m.exact.as_deref(), m.prefix.as_deref()) {
        (Some(e), _) if !e.is_empty() => Some((true, e)),
        (_, Some(p)) if !p.is_empty() => Some((false, p)),
        _ => None,
    }
}

/// `a == b || strings.HasPrefix(a, b)` on the string forms.
pub(super) fn eop_covers(a: ExactOrPrefix<'_>, b: ExactOrPrefix<'_>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((ka, va)), Some((kb, vb))) => ka == kb && va.starts_with(vb),
    }
}

pub(super) fn maps_covered(
    a: &BTreeMap<String, StringMatch>,
    b: &BTreeMap<String, StringMatch>,
) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, va)| {
            b.get(k)
                .is_some_and(|vb| eop_covers(exact_or_prefix(Some(va)), exact_or_prefix(Some(vb))))
        })
}

/// A match with a non-empty URI prefix, which takes part in the overlap analysis.
pub(super) struct PrefixMatch<'a> {
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

pub(super) fn prefix_of(m: &HttpMatchRequest) -> Option<&str> {
    m.uri.as_ref()?.prefix.as_deref().filter(|p| !p.is_empty())
}

/// Istio's `coveredValidation`: the earlier prefix match `a` also catches what `b` would.
pub(super) fn covered(a: &PrefixMatch<'_>, b: &PrefixMatch<'_>) -> bool {
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
pub(super) fn find_duplicate<'a, T: 'a>(
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
pub(super) fn analyze_unreachable_http_rules(
    routes: &[HttpRoute],
    path: &Path<'_>,
    out: &mut Report,
) {
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
pub(super) fn analyze_unreachable_l4_rules<R, M: PartialEq + Hash>(
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
