//! VirtualService delegation (Istio's `mergeVirtualServicesIfNeeded`): an http route of a root
//! VirtualService with `delegate` is replaced by the delegate VirtualService's http routes, each
//! merged with the root route. A delegate route's matches must each fall within one of the root
//! route's matches (a prefix inside the root's prefix, equal exact values, no regex on both
//! sides, no conflicting headers, ports, source namespace, labels or gateways); a delegate
//! route with a match outside the root's is dropped. Fields the delegate route leaves unset
//! (rewrite, timeout, retries, fault, mirror, CORS, headers) come from the root route. Short
//! host names in a delegate resolve in the delegate's namespace. Delegation is one level deep.

use super::resolve_host;
use crate::fast::FastMap;
use capstan_api::common::StringMatch;
use capstan_api::networking::{Destination, HttpMatchRequest, HttpRoute, VirtualService};
use std::sync::Arc;

/// Delegates by `(namespace, name)`.
pub(crate) type Delegates<'a> = FastMap<(&'a str, &'a str), &'a VirtualService>;

/// A string match field that is set and not empty.
fn set(m: &Option<String>) -> Option<&str> {
    m.as_deref().filter(|s| !s.is_empty())
}

/// Whether a delegate's string match cannot narrow the root's (Istio's `stringMatchConflict`).
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (r_exact, r_prefix, r_regex) = (set(&root.exact), set(&root.prefix), set(&root.regex));
    let (l_exact, l_prefix, l_regex) = (set(&leaf.exact), set(&leaf.prefix), set(&leaf.regex));
    if r_regex.is_some() && (l_regex.is_some() || l_prefix.is_some() || l_exact.is_some()) {
        return true;
    }
    if l_regex.is_some() && (r_regex.is_some() || r_prefix.is_some() || r_exact.is_some()) {
        return true;
    }
    if let Some(exact) = r_exact {
        if l_prefix.is_some_and(|p| !exact.starts_with(p)) || l_exact.is_some_and(|e| e != exact) {
            return true;
        }
    }
    if let Some(prefix) = r_prefix {
        if l_prefix.is_some_and(|p| !p.starts_with(prefix))
            || l_exact.is_some_and(|e| !e.starts_with(prefix))
        {
            return true;
        }
    }
    false
}

/// Whether a delegate match falls outside a root match (Istio's `hasConflict`).
fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    for (r, l) in maps {
        if l.iter().any(|(k, v)| string_conflict(r.get(k), Some(v))) {
            return true;
        }
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port) {
        if r != l {
            return true;
        }
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        return leaf.gateways.iter().any(|g| !root.gateways.contains(g));
    }
    false
}

/// The delegate match narrowed by the root match (Istio's `mergeHTTPMatchRequest`).
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (true, false) => leaf.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
    };
    out.uri = leaf.uri.clone().or_else(|| root.uri.clone());
    out.scheme = leaf.scheme.clone().or_else(|| root.scheme.clone());
    out.method = leaf.method.clone().or_else(|| root.method.clone());
    out.authority = leaf.authority.clone().or_else(|| root.authority.clone());
    for (into, from) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in from {
            into.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out.port = leaf.port.or(root.port);
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    if out.source_namespace.is_empty() {
        out.source_namespace = root.source_namespace.clone();
    }
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Every delegate match merged with each root match it falls within; `None` when one of the
/// delegate's matches falls within none (the route is dropped).
fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let merged: Vec<_> = root
            .iter()
            .filter(|r| !conflict(r, l))
            .map(|r| merge_match(r, l))
            .collect();
        if merged.is_empty() {
            return None;
        }
        out.extend(merged);
    }
    Some(out)
}

/// A delegate route merged into the root route (Istio's `mergeHTTPRoute`).
fn merge_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.r#match = merge_matches(&root.r#match, &leaf.r#match)?;
    out.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (true, false) => leaf.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
    };
    out.delegate = None;
    out.rewrite = leaf.rewrite.clone().or_else(|| root.rewrite.clone());
    out.timeout = leaf.timeout.or(root.timeout);
    out.retries = leaf.retries.clone().or_else(|| root.retries.clone());
    out.fault = leaf.fault.clone().or_else(|| root.fault.clone());
    out.mirror = leaf.mirror.clone().or_else(|| root.mirror.clone());
    out.mirror_percent = leaf.mirror_percent.or(root.mirror_percent);
    out.mirror_percentage = leaf.mirror_percentage.or(root.mirror_percentage);
    out.cors_policy = leaf
        .cors_policy
        .clone()
        .or_else(|| root.cors_policy.clone());
    out.headers = leaf.headers.clone().or_else(|| root.headers.clone());
    Some(out)
}

/// Resolves a destination's short host name in `namespace` (the delegate's), so that it keeps
/// its meaning inside the root.
fn resolve(d: &mut Destination, namespace: &str, suffix: &str) {
    d.host = resolve_host(&d.host, namespace, suffix);
}

/// The root VirtualService with its delegating routes expanded; `None` when it delegates
/// nothing. Delegates that are missing or not exported to the root's namespace contribute no
/// routes (as in Istio, the delegating route disappears).
pub(crate) fn expand(
    root: &VirtualService,
    root_ns: &str,
    delegates: &Delegates<'_>,
    suffix: &str,
) -> Option<Arc<VirtualService>> {
    if root.http.iter().all(|r| r.delegate.is_none()) {
        return None;
    }
    let mut out = root.clone();
    out.http = Vec::new();
    for route in &root.http {
        let Some(d) = &route.delegate else {
            out.http.push(route.clone());
            continue;
        };
        let ns = if d.namespace.is_empty() {
            root_ns
        } else {
            d.namespace.as_str()
        };
        let Some(delegate) = delegates.get(&(ns, d.name.as_str())) else {
            tracing::warn!(delegate = %format!("{ns}/{}", d.name), "VirtualService delegate not found; its routes are left out");
            continue;
        };
        if !super::exported_to(&delegate.export_to, ns, root_ns) {
            tracing::warn!(delegate = %format!("{ns}/{}", d.name), root_ns, "VirtualService delegate is not exported to the root's namespace");
            continue;
        }
        for leaf in &delegate.http {
            if leaf.delegate.is_some() {
                continue;
            }
            let mut leaf = leaf.clone();
            for dst in leaf.route.iter_mut().filter_map(|r| r.destination.as_mut()) {
                resolve(dst, ns, suffix);
            }
            if let Some(m) = leaf.mirror.as_mut() {
                resolve(m, ns, suffix);
            }
            for m in leaf
                .mirrors
                .iter_mut()
                .filter_map(|m| m.destination.as_mut())
            {
                resolve(m, ns, suffix);
            }
            match merge_route(route, &leaf) {
                Some(merged) => out.http.push(merged),
                None => tracing::warn!(delegate = %format!("{ns}/{}", d.name), route = %leaf.name,
                    "delegate route matches outside its root route; left out"),
            }
        }
    }
    Some(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            prefix: Some(p.into()),
            ..StringMatch::default()
        })
    }

    fn exact(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            exact: Some(p.into()),
            ..StringMatch::default()
        })
    }

    #[test]
    fn string_matches_narrow_or_conflict_like_istio() {
        assert!(!string_conflict(
            prefix("/a").as_ref(),
            prefix("/a/b").as_ref()
        ));
        assert!(string_conflict(
            prefix("/a").as_ref(),
            prefix("/b").as_ref()
        ));
        assert!(!string_conflict(
            prefix("/a").as_ref(),
            exact("/a/x").as_ref()
        ));
        assert!(string_conflict(exact("/a").as_ref(), exact("/b").as_ref()));
        assert!(!string_conflict(
            exact("/a/x").as_ref(),
            prefix("/a").as_ref()
        ));
        let regex = Some(StringMatch {
            regex: Some("/a.*".into()),
            ..StringMatch::default()
        });
        assert!(string_conflict(regex.as_ref(), prefix("/a").as_ref()));
        assert!(!string_conflict(None, prefix("/a").as_ref()));
    }

    #[test]
    fn matches_merge_with_the_root_and_conflicts_drop_the_route() {
        let root = HttpMatchRequest {
            name: "r".into(),
            uri: prefix("/products"),
            headers: [("x".to_string(), exact("1").unwrap())].into(),
            ..HttpMatchRequest::default()
        };
        let leaf = HttpMatchRequest {
            name: "l".into(),
            uri: prefix("/products/v2"),
            ..HttpMatchRequest::default()
        };
        let merged =
            merge_matches(std::slice::from_ref(&root), std::slice::from_ref(&leaf)).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].name, "r-l");
        assert_eq!(merged[0].uri, prefix("/products/v2"));
        assert!(merged[0].headers.contains_key("x"));
        let outside = HttpMatchRequest {
            uri: prefix("/other"),
            ..HttpMatchRequest::default()
        };
        assert!(merge_matches(&[root], &[outside]).is_none());
    }
}
