//! Facts of the filters that decide who may talk to a workload: the HTTP and network RBAC
//! filters (action, and per policy, keyed by name, its permissions and principals rendered as
//! normalised matcher expressions) and the JWT filter (providers with their issuer, audiences,
//! JWKS keys by `kid`/`kty`, token locations and outputs; requirement rules).
//!
//! Normalised: a one-element `and`/`or` is its element, and the members of an `and`/`or` are
//! sorted (RBAC evaluates them as sets), so two generators that nest or order the same
//! conditions differently agree; a policy's permissions and principals are sorted likewise
//! (each list is an OR).

use super::{child, dbg, decode, put, Facts};
use anyhow::Result;
use envoy_types::pb::envoy::config::core::v3::{data_source, CidrRange};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, Permission, Principal, Rbac,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider, jwt_requirement, requirement_rule, JwtAuthentication, JwtProvider, JwtRequirement,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher, MetadataMatcher,
    PathMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::Any;

/// The action of an RBAC rule set, by name.
fn action(rules: &Option<Rbac>) -> String {
    match rules {
        None => "no rules".into(),
        Some(r) => envoy_types::pb::envoy::config::rbac::v3::rbac::Action::try_from(r.action)
            .map(|a| a.as_str_name().to_string())
            .unwrap_or_else(|_| r.action.to_string()),
    }
}

/// The name shown in a chain's filter list: RBAC filters with their action, so the order of
/// the DENY and ALLOW filters is compared.
pub fn filter_label(name: &str, any: Option<&Any>) -> String {
    let Some(any) = any else {
        return name.to_string();
    };
    if any.type_url.ends_with("filters.http.rbac.v3.RBAC") {
        if let Ok(r) = decode::<HttpRbac>(any) {
            return format!("{name}({})", action(&r.rules));
        }
    } else if any.type_url.ends_with("filters.network.rbac.v3.RBAC") {
        if let Ok(r) = decode::<NetworkRbac>(any) {
            return format!("{name}({})", action(&r.rules));
        }
    }
    name.to_string()
}

/// Facts of one filter's config under `at` (`http` or `tcp` filters of a chain), when it is
/// an RBAC or JWT filter; `seen` numbers repeated filters of one action.
pub fn filter_facts(
    at: &str,
    layer: &str,
    any: &Any,
    seen: &mut std::collections::BTreeMap<String, usize>,
    f: &mut Facts,
) -> Result<()> {
    let mut key = |base: String| {
        let n = seen.entry(base.clone()).or_default();
        let k = if *n == 0 { base } else { format!("{base}#{n}") };
        *n += 1;
        k
    };
    if any.type_url.ends_with("filters.http.rbac.v3.RBAC") {
        let r: HttpRbac = decode(any)?;
        let at = child(at, &key(format!("{layer}.rbac[{}]", action(&r.rules))));
        rbac_facts(&at, &r.rules, f);
        if r.matcher.is_some() {
            put(f, &at, "matcher", "matcher tree");
        }
        if let Some(s) = &r.shadow_rules {
            rbac_facts(&child(&at, "shadow"), &Some(s.clone()), f);
        }
    } else if any.type_url.ends_with("filters.network.rbac.v3.RBAC") {
        let r: NetworkRbac = decode(any)?;
        let at = child(at, &key(format!("{layer}.rbac[{}]", action(&r.rules))));
        rbac_facts(&at, &r.rules, f);
        if r.matcher.is_some() {
            put(f, &at, "matcher", "matcher tree");
        }
        if let Some(s) = &r.shadow_rules {
            rbac_facts(&child(&at, "shadow"), &Some(s.clone()), f);
        }
    } else if any.type_url.ends_with("JwtAuthentication") {
        let j: JwtAuthentication = decode(any)?;
        jwt_facts(&child(at, &key(format!("{layer}.jwt_authn"))), &j, f);
    }
    Ok(())
}

fn rbac_facts(at: &str, rules: &Option<Rbac>, f: &mut Facts) {
    put(f, at, "exists", "yes");
    let Some(r) = rules else {
        put(f, at, "rules", "none (allows everything)");
        return;
    };
    put(f, at, "policies", r.policies.len().to_string());
    for (name, p) in &r.policies {
        let at = child(at, &format!("policy[{name}]"));
        put(f, &at, "exists", "yes");
        let mut perms: Vec<String> = p.permissions.iter().map(perm).collect();
        perms.sort();
        put(f, &at, "permissions", format!("or[{}]", perms.join(", ")));
        let mut ids: Vec<String> = p.principals.iter().map(id).collect();
        ids.sort();
        put(f, &at, "principals", format!("or[{}]", ids.join(", ")));
        if p.condition.is_some() || p.checked_condition.is_some() {
            put(f, &at, "condition", "CEL");
        }
    }
}

/// `op(a, b)` with sorted members; one member is itself.
fn set(op: &str, mut members: Vec<String>) -> String {
    if members.len() == 1 {
        return members.remove(0);
    }
    members.sort();
    format!("{op}({})", members.join(", "))
}

/// A permission as a compact expression.
pub fn perm(p: &Permission) -> String {
    use permission::Rule as R;
    match &p.rule {
        None => "none".into(),
        Some(R::Any(true)) => "any".into(),
        Some(R::Any(false)) => "none".into(),
        Some(R::AndRules(s)) => set("and", s.rules.iter().map(perm).collect()),
        Some(R::OrRules(s)) => set("or", s.rules.iter().map(perm).collect()),
        Some(R::NotRule(r)) => format!("not({})", perm(r)),
        Some(R::Header(h)) => header(h),
        Some(R::UrlPath(u)) => path(u),
        Some(R::DestinationIp(c)) => format!("dst_ip={}", cidr(c)),
        Some(R::DestinationPort(p)) => format!("dst_port={p}"),
        Some(R::DestinationPortRange(r)) => format!("dst_port={}..{}", r.start, r.end),
        Some(R::Metadata(m)) => metadata(m),
        Some(R::RequestedServerName(s)) => format!("sni {}", string(s)),
        Some(other) => dbg(other),
    }
}

/// A principal as a compact expression.
#[allow(deprecated)]
pub fn id(p: &Principal) -> String {
    use principal::Identifier as I;
    match &p.identifier {
        None => "none".into(),
        Some(I::Any(true)) => "any".into(),
        Some(I::Any(false)) => "none".into(),
        Some(I::AndIds(s)) => set("and", s.ids.iter().map(id).collect()),
        Some(I::OrIds(s)) => set("or", s.ids.iter().map(id).collect()),
        Some(I::NotId(i)) => format!("not({})", id(i)),
        Some(I::Authenticated(a)) => match &a.principal_name {
            None => "authenticated".into(),
            Some(m) => format!("peer {}", string(m)),
        },
        Some(I::SourceIp(c)) => format!("source_ip={}", cidr(c)),
        Some(I::DirectRemoteIp(c)) => format!("direct_remote_ip={}", cidr(c)),
        Some(I::RemoteIp(c)) => format!("remote_ip={}", cidr(c)),
        Some(I::Header(h)) => header(h),
        Some(I::UrlPath(u)) => path(u),
        Some(I::Metadata(m)) => metadata(m),
        Some(other) => dbg(other),
    }
}

fn cidr(c: &CidrRange) -> String {
    format!(
        "{}/{}",
        c.address_prefix,
        c.prefix_len.as_ref().map_or(0, |l| l.value)
    )
}

/// A string matcher: `exact:x`, `prefix:x`, `suffix:x`, `contains:x`, `regex:x`; `/i` when
/// case-insensitive.
pub fn string(m: &StringMatcher) -> String {
    use string_matcher::MatchPattern as P;
    let s = match &m.match_pattern {
        Some(P::Exact(x)) => format!("exact:{x}"),
        Some(P::Prefix(x)) => format!("prefix:{x}"),
        Some(P::Suffix(x)) => format!("suffix:{x}"),
        Some(P::Contains(x)) => format!("contains:{x}"),
        Some(P::SafeRegex(r)) => format!("regex:{}", r.regex),
        other => dbg(other),
    };
    if m.ignore_case {
        format!("{s}/i")
    } else {
        s
    }
}

#[allow(deprecated)]
fn header(h: &HeaderMatcher) -> String {
    use header_matcher::HeaderMatchSpecifier as S;
    let spec = match &h.header_match_specifier {
        None => "present".into(),
        Some(S::PresentMatch(true)) => "present".into(),
        Some(S::PresentMatch(false)) => "absent".into(),
        Some(S::StringMatch(s)) => string(s),
        Some(S::ExactMatch(x)) => format!("exact:{x}"),
        Some(S::PrefixMatch(x)) => format!("prefix:{x}"),
        Some(S::SuffixMatch(x)) => format!("suffix:{x}"),
        Some(S::ContainsMatch(x)) => format!("contains:{x}"),
        Some(S::SafeRegexMatch(r)) => format!("regex:{}", r.regex),
        other => dbg(other),
    };
    let s = format!("header[{}] {spec}", h.name);
    if h.invert_match {
        format!("not({s})")
    } else {
        s
    }
}

fn path(p: &PathMatcher) -> String {
    match &p.rule {
        Some(path_matcher::Rule::Path(s)) => format!("path {}", string(s)),
        other => dbg(other),
    }
}

fn value(v: &ValueMatcher) -> String {
    use value_matcher::MatchPattern as P;
    match &v.match_pattern {
        None => "none".into(),
        Some(P::StringMatch(s)) => string(s),
        Some(P::PresentMatch(b)) => format!("present={b}"),
        Some(P::BoolMatch(b)) => format!("bool={b}"),
        Some(P::NullMatch(_)) => "null".into(),
        Some(P::DoubleMatch(d)) => dbg(&d.match_pattern),
        Some(P::ListMatch(l)) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(v)) => format!("list_one_of({})", value(v)),
            None => "list".into(),
        },
        Some(P::OrMatch(o)) => set("or", o.value_matchers.iter().map(value).collect()),
    }
}

fn metadata(m: &MetadataMatcher) -> String {
    let path: Vec<String> = m
        .path
        .iter()
        .map(|s| match &s.segment {
            Some(metadata_matcher::path_segment::Segment::Key(k)) => k.clone(),
            None => "?".into(),
        })
        .collect();
    let s = format!(
        "metadata[{}:{}] {}",
        m.filter,
        path.join("."),
        m.value.as_ref().map_or("none".into(), value)
    );
    if m.invert {
        format!("not({s})")
    } else {
        s
    }
}

fn jwt_facts(at: &str, j: &JwtAuthentication, f: &mut Facts) {
    put(f, at, "exists", "yes");
    for (name, p) in &j.providers {
        provider_facts(&child(at, &format!("provider[{name}]")), p, f);
    }
    for (i, r) in j.rules.iter().enumerate() {
        let req = match &r.requirement_type {
            Some(requirement_rule::RequirementType::Requires(q)) => requirement(q),
            Some(requirement_rule::RequirementType::RequirementName(n)) => format!("name:{n}"),
            None => "none".into(),
        };
        put(
            f,
            at,
            &format!("rule[{i}]"),
            format!("{} => {req}", route_match(&r.r#match)),
        );
    }
    if !j.requirement_map.is_empty() {
        let mut m: Vec<String> = j
            .requirement_map
            .iter()
            .map(|(k, v)| format!("{k}={}", requirement(v)))
            .collect();
        m.sort();
        put(f, at, "requirement_map", m.join("; "));
    }
    if j.filter_state_rules.is_some() {
        put(f, at, "filter_state_rules", "set");
    }
    put(
        f,
        at,
        "bypass_cors_preflight",
        j.bypass_cors_preflight.to_string(),
    );
}

fn route_match(m: &Option<RouteMatch>) -> String {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier as P;
    let Some(m) = m else {
        return "any".into();
    };
    let mut s = match &m.path_specifier {
        Some(P::Prefix(p)) => format!("prefix:{p}"),
        Some(P::Path(p)) => format!("path:{p}"),
        Some(P::SafeRegex(r)) => format!("regex:{}", r.regex),
        other => dbg(other),
    };
    for h in &m.headers {
        s.push_str(&format!(" {}", header(h)));
    }
    s
}

fn requirement(r: &JwtRequirement) -> String {
    use jwt_requirement::RequiresType as R;
    match &r.requires_type {
        None => "none".into(),
        Some(R::ProviderName(n)) => n.clone(),
        Some(R::ProviderAndAudiences(p)) => {
            format!("{}(aud {})", p.provider_name, p.audiences.join(","))
        }
        Some(R::RequiresAny(l)) => set("any", l.requirements.iter().map(requirement).collect()),
        Some(R::RequiresAll(l)) => set("all", l.requirements.iter().map(requirement).collect()),
        Some(R::AllowMissing(_)) => "allow_missing".into(),
        Some(R::AllowMissingOrFailed(_)) => "allow_missing_or_failed".into(),
        Some(R::ExtractOnlyWithoutValidation(_)) => "extract_only_without_validation".into(),
    }
}

/// The keys of an inline JWKS as sorted `kid/kty` (`-` without a `kid`).
fn jwks_keys(json: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return "inline (not JSON)".into();
    };
    let mut keys: Vec<String> = v
        .get("keys")
        .and_then(|k| k.as_array())
        .map(|a| {
            a.iter()
                .map(|k| {
                    let s = |f: &str| k.get(f).and_then(|x| x.as_str()).unwrap_or("-").to_string();
                    format!("{}/{}", s("kid"), s("kty"))
                })
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    format!("inline [{}]", keys.join(", "))
}

fn provider_facts(at: &str, p: &JwtProvider, f: &mut Facts) {
    put(f, at, "exists", "yes");
    put(f, at, "issuer", p.issuer.clone());
    let mut aud = p.audiences.clone();
    aud.sort();
    put(f, at, "audiences", aud.join(","));
    let jwks = match &p.jwks_source_specifier {
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(d)) => match &d.specifier {
            Some(data_source::Specifier::InlineString(s)) => jwks_keys(s),
            Some(data_source::Specifier::InlineBytes(b)) => jwks_keys(&String::from_utf8_lossy(b)),
            other => format!("local {other:?}"),
        },
        Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(r)) => format!(
            "remote {}",
            r.http_uri.as_ref().map_or("-", |u| u.uri.as_str())
        ),
        None => "none".into(),
    };
    put(f, at, "jwks", jwks);
    let headers: Vec<String> = p
        .from_headers
        .iter()
        .map(|h| format!("{}:{:?}", h.name, h.value_prefix))
        .collect();
    put(f, at, "from_headers", headers.join(","));
    put(f, at, "from_params", p.from_params.join(","));
    put(f, at, "from_cookies", p.from_cookies.join(","));
    put(f, at, "forward", p.forward.to_string());
    put(
        f,
        at,
        "forward_payload_header",
        p.forward_payload_header.clone(),
    );
    put(f, at, "payload_in_metadata", p.payload_in_metadata.clone());
    let claims = p
        .normalize_payload_in_metadata
        .as_ref()
        .map_or_else(Vec::new, |n| {
            let mut c = n.space_delimited_claims.clone();
            c.sort();
            c
        });
    put(f, at, "space_delimited_claims", claims.join(","));
    let c2h: Vec<String> = p
        .claim_to_headers
        .iter()
        .map(|c| format!("{}<-{}", c.header_name, c.claim_name))
        .collect();
    put(f, at, "claim_to_headers", c2h.join(","));
    if p.clear_route_cache {
        put(f, at, "clear_route_cache", "true");
    }
    if !p.header_in_metadata.is_empty() {
        put(f, at, "header_in_metadata", p.header_in_metadata.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> StringMatcher {
        StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
            ignore_case: false,
        }
    }

    #[test]
    fn one_member_sets_are_their_member_and_members_are_sorted() {
        let p = |rule| Permission { rule: Some(rule) };
        let and = p(permission::Rule::AndRules(permission::Set {
            rules: vec![
                p(permission::Rule::DestinationPort(9080)),
                p(permission::Rule::OrRules(permission::Set {
                    rules: vec![p(permission::Rule::UrlPath(PathMatcher {
                        rule: Some(path_matcher::Rule::Path(exact("/x"))),
                    }))],
                })),
            ],
        }));
        assert_eq!(perm(&and), "and(dst_port=9080, path exact:/x)");
    }
}
