//! AuthorizationPolicy → Envoy HTTP RBAC filters (`envoy.filters.http.rbac`) for a sidecar's
//! inbound HTTP chains, as istiod's `authz/builder` and `authz/model` build them: one filter per
//! action in the order AUDIT (action LOG), DENY, ALLOW; one RBAC policy per rule named
//! `ns[<ns>]-policy[<name>]-rule[<i>]`; a rule's permissions are one `and_rules` per `to` entry
//! (hosts, methods, paths, ports, then `when` keys) and its principals one `and_ids` per `from`
//! entry (principals, serviceAccounts, requestPrincipals, namespaces, remoteIpBlocks, ipBlocks,
//! then `when` keys); each key is an `or` of its values and a `not` of the `or` of its
//! notValues.
//!
//! JWT keys (`requestPrincipals`, `request.auth.principal`, `request.auth.audiences`,
//! `request.auth.presenter`, `request.auth.claims[..]`) match the payload the JWT filter
//! ([`super::jwt`]) leaves in its dynamic metadata, as istiod's extended generators do: a
//! request principal `iss/sub` is `and(metadata iss, metadata sub)`, a claim a list-or-string
//! metadata matcher over all the key's values at once.
//!
//! What cannot be expressed for our proxy (`experimental.envoy.*` metadata matchers, path
//! templates, malformed values) fails safe, like istiod's
//! `checkError`: an ALLOW rule with one is dropped (it allows nothing); in a DENY or AUDIT rule
//! the key's values are dropped so the rule matches whatever the rest of it matches (a wider
//! deny), and an unexpressible notValue is dropped (fewer exceptions). istiod drops only the
//! failing value of a DENY key, which can narrow the deny; dropping the key is stricter.

use crate::context::WorkloadAuthz;
use capstan_api::security::{AuthorizationPolicy, Rule};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbacFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, string_matcher::MatchPattern, value_matcher,
    ListMatcher, MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher, StringMatcher,
    ValueMatcher,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use std::collections::HashMap;

/// The HTTP RBAC filter name (Envoy's well-known name, as istiod uses it).
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The network RBAC filter name.
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";

/// Which filter a rule is generated for. istiod builds TCP rules without the HTTP-only keys
/// (hosts, methods, paths, request headers, request principals, JWT conditions): an ALLOW rule
/// using one is dropped (it cannot match a TCP connection), a DENY or AUDIT rule loses the key
/// and so denies every connection the rest of it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `envoy.filters.http.rbac`.
    Http,
    /// `envoy.filters.network.rbac`.
    Tcp,
}

/// The rules of each action that has policies, in istiod's filter order (AUDIT, DENY, ALLOW).
fn rules_by_action(policies: &WorkloadAuthz, layer: Layer) -> Vec<Rbac> {
    let custom = (!policies.custom.is_empty()).then(deny_all_for_custom);
    custom
        .into_iter()
        .chain(
            [
                (&policies.audit, rbac::Action::Log),
                (&policies.deny, rbac::Action::Deny),
                (&policies.allow, rbac::Action::Allow),
            ]
            .into_iter()
            .filter(|(list, _)| !list.is_empty())
            .map(|(list, action)| {
                build_rules(
                    list.iter()
                        .map(|p| (p.namespace.as_str(), p.name.as_str(), &*p.spec)),
                    action,
                    layer,
                )
            }),
        )
        .collect()
}

/// The policy name istiod gives its deny-all when a CUSTOM policy's provider cannot be used.
pub const CUSTOM_DENY_ALL: &str = "default-deny-all-due-to-bad-CUSTOM-action";

/// What a workload selected by a CUSTOM policy gets: Capstan has no `ext_authz`, so, like
/// istiod when the policy's provider is missing or invalid, it fails closed and denies every
/// request (rather than letting through what the provider would have refused).
fn deny_all_for_custom() -> Rbac {
    Rbac {
        action: rbac::Action::Deny as i32,
        policies: HashMap::from([(
            CUSTOM_DENY_ALL.to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![Principal {
                    identifier: Some(principal::Identifier::Any(true)),
                }],
                ..Policy::default()
            },
        )]),
        ..Rbac::default()
    }
}

/// The RBAC filters for a workload's inbound HTTP chains, in istiod's order, to be placed before
/// any other HTTP filter of the chain. Empty when no AUDIT, DENY or ALLOW policy selects it.
pub fn http_filters(policies: &WorkloadAuthz) -> Vec<hcm::HttpFilter> {
    rules_by_action(policies, Layer::Http)
        .iter()
        .map(|rules| hcm::HttpFilter {
            name: RBAC_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(rbac_filter_any(
                rules,
            ))),
            ..hcm::HttpFilter::default()
        })
        .collect()
}

/// The network RBAC filters for a workload's inbound TCP chains (declared TCP ports and the
/// pass-through chains), in istiod's order and with its `tcp.` stat prefix, to be placed
/// before the chain's `tcp_proxy`. Empty when no AUDIT, DENY or ALLOW policy selects it.
pub fn network_filters(policies: &WorkloadAuthz) -> Vec<listener::Filter> {
    rules_by_action(policies, Layer::Tcp)
        .iter()
        .map(|rules| listener::Filter {
            name: NETWORK_RBAC_FILTER.into(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(network_rbac_any(
                rules,
            ))),
        })
        .collect()
}

/// The network filter's config: `rules` (field 1) encoded in name order as for the HTTP
/// filter, then `stat_prefix` (field 3) `tcp.`, as istiod sets it.
fn network_rbac_any(rules: &Rbac) -> Any {
    let http = rbac_filter_any(rules);
    let mut value = http.value;
    prost::encoding::string::encode(3, &"tcp.".to_string(), &mut value);
    Any {
        type_url: <NetworkRbacFilter as prost::Name>::type_url(),
        value,
    }
}

/// The filter config packed with its policies in name order. prost encodes a map in `HashMap`
/// order, which would change the listener's bytes (and version) from one push to the next;
/// concatenated encodings of one-entry messages decode as the merged map.
fn rbac_filter_any(rules: &Rbac) -> Any {
    use prost::Message;
    let mut names: Vec<&String> = rules.policies.keys().collect();
    names.sort();
    let mut inner = Rbac {
        action: rules.action,
        ..Rbac::default()
    }
    .encode_to_vec();
    for name in names {
        Rbac {
            policies: HashMap::from([(name.clone(), rules.policies[name].clone())]),
            ..Rbac::default()
        }
        .encode(&mut inner)
        .expect("a Vec grows as needed");
    }
    let mut value = Vec::with_capacity(inner.len() + 8);
    // RBAC.rules is field 1.
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut value);
    prost::encoding::encode_varint(inner.len() as u64, &mut value);
    value.extend_from_slice(&inner);
    Any {
        type_url: <RbacFilter as prost::Name>::type_url(),
        value,
    }
}

/// A policy that matches nothing: `not any` on both sides (istiod's `rbacPolicyMatchNever`).
fn match_never() -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::NotRule(Box::new(Permission {
                rule: Some(permission::Rule::Any(true)),
            }))),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }))),
        }],
        ..Policy::default()
    }
}

/// The RBAC rules of policies of one action. A policy with no rules matches nothing: an ALLOW
/// filter with only such policies denies everything (Istio's "allow nothing", which an empty
/// spec also is), a DENY one denies nothing. Like istiod's builder it still gets an RBAC policy
/// `...-rule[0]` that never matches, so the filter names the policy (stats, logs).
pub fn build_rules<'a>(
    policies: impl IntoIterator<Item = (&'a str, &'a str, &'a AuthorizationPolicy)>,
    action: rbac::Action,
    layer: Layer,
) -> Rbac {
    let mut out: HashMap<String, Policy> = HashMap::new();
    for (ns, name, spec) in policies {
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let key = format!("ns[{ns}]-policy[{name}]-rule[{i}]");
            // Why rules are left out or widened is logged once per config change, when the
            // policies are indexed (`context::authz`).
            if let Ok(p) = rule_policy(rule, ns, action, layer, &mut Vec::new()) {
                out.insert(key, p);
            }
        }
        if spec.rules.as_ref().is_none_or(|r| r.is_empty()) {
            out.insert(format!("ns[{ns}]-policy[{name}]-rule[0]"), match_never());
        }
    }
    Rbac {
        action: action as i32,
        policies: out,
        ..Rbac::default()
    }
}

/// What one key of a rule generates from one value.
#[derive(Clone, Copy, Debug)]
enum Attr<'a> {
    Host,
    Method,
    Path,
    DestPort,
    DestIp,
    Sni,
    SrcPrincipal,
    SrcServiceAccount,
    SrcNamespace,
    SrcIp,
    RemoteIp,
    RequestHeader(&'a str),
    /// `requestPrincipals` / `request.auth.principal`: `iss/sub` of the verified JWT.
    RequestPrincipal,
    /// `request.auth.audiences`: the `aud` claim.
    RequestAudiences,
    /// `request.auth.presenter`: the `azp` claim.
    RequestPresenter,
    /// `request.auth.claims[a][b]..`: the brackets after `request.auth.claims`, well-formed.
    RequestClaim(&'a str),
    /// A key our proxy cannot match on (the reason).
    Unsupported(&'static str),
}

impl Attr<'_> {
    /// Keys istiod generates only for HTTP (`forTCP` is an error for their generators).
    fn is_http_only(self) -> bool {
        matches!(
            self,
            Attr::Host
                | Attr::Method
                | Attr::Path
                | Attr::RequestHeader(_)
                | Attr::RequestPrincipal
                | Attr::RequestAudiences
                | Attr::RequestPresenter
                | Attr::RequestClaim(_)
        )
    }

    /// Keys istiod's extended generators build from all their values at once (JWT keys).
    fn is_jwt(self) -> bool {
        matches!(
            self,
            Attr::RequestPrincipal
                | Attr::RequestAudiences
                | Attr::RequestPresenter
                | Attr::RequestClaim(_)
        )
    }
}

enum Generated {
    Permission(Permission),
    Principal(Principal),
}

#[derive(Clone, Copy)]
struct Key<'a> {
    attr: Attr<'a>,
    values: &'a [String],
    not_values: &'a [String],
}

fn key<'a>(attr: Attr<'a>, values: &'a [String], not_values: &'a [String]) -> Option<Key<'a>> {
    (!values.is_empty() || !not_values.is_empty()).then_some(Key {
        attr,
        values,
        not_values,
    })
}

/// istiod's `model.New` classification of a `when` key: permission side or principal side.
fn when_attr(k: &str) -> (bool, Attr<'_>) {
    match k {
        "destination.ip" => (true, Attr::DestIp),
        "destination.port" => (true, Attr::DestPort),
        "connection.sni" => (true, Attr::Sni),
        "source.ip" => (false, Attr::SrcIp),
        "remote.ip" => (false, Attr::RemoteIp),
        "source.namespace" => (false, Attr::SrcNamespace),
        "source.principal" => (false, Attr::SrcPrincipal),
        "request.auth.principal" => (false, Attr::RequestPrincipal),
        "request.auth.audiences" => (false, Attr::RequestAudiences),
        "request.auth.presenter" => (false, Attr::RequestPresenter),
        k if k.starts_with("request.auth.claims") => {
            let brackets = &k["request.auth.claims".len()..];
            match claim_path(brackets) {
                Some(_) => (false, Attr::RequestClaim(brackets)),
                None => (
                    false,
                    Attr::Unsupported("malformed request.auth.claims[...] key"),
                ),
            }
        }
        k if k.starts_with("experimental.envoy.filters.") => (
            true,
            Attr::Unsupported("Envoy metadata matchers are not supported"),
        ),
        k if k.starts_with("request.headers") => {
            match k
                .strip_prefix("request.headers[")
                .and_then(|r| r.strip_suffix(']'))
                .filter(|h| !h.is_empty())
            {
                Some(h) => (false, Attr::RequestHeader(h)),
                None => (
                    false,
                    Attr::Unsupported("malformed request.headers[...] key"),
                ),
            }
        }
        _ => (false, Attr::Unsupported("unknown attribute")),
    }
}

/// One rule as an RBAC policy; Err (with the reason) when an ALLOW rule cannot be expressed.
/// `widened` gets what was left out of a DENY or AUDIT rule.
pub(crate) fn rule_policy(
    rule: &Rule,
    ns: &str,
    action: rbac::Action,
    layer: Layer,
    widened: &mut Vec<String>,
) -> Result<Policy, String> {
    // On TCP an HTTP-only key generates nothing: it fails safe as an unsupported one does.
    let attr_for = |a: Attr<'static>| -> Attr<'static> {
        match (layer, a) {
            (Layer::Tcp, a) if a.is_http_only() => {
                Attr::Unsupported("an HTTP attribute on a TCP port")
            }
            _ => a,
        }
    };
    let mut base_permission = Vec::new();
    let mut base_principal = Vec::new();
    for c in &rule.when {
        let (is_permission, attr) = when_attr(&c.key);
        let attr = match (layer, attr) {
            (Layer::Tcp, a) if a.is_http_only() => {
                Attr::Unsupported("an HTTP attribute on a TCP port")
            }
            _ => attr,
        };
        let k = key(attr, &c.values, &c.not_values);
        if is_permission {
            base_permission.extend(k);
        } else {
            base_principal.extend(k);
        }
    }
    let mut permissions = Vec::new();
    let tos: Vec<_> = rule.to.iter().flatten().collect();
    if tos.is_empty() {
        permissions.push(and_permission(generate(
            &base_permission,
            ns,
            action,
            widened,
        )?));
    }
    for to in tos {
        let mut keys = Vec::new();
        if let Some(o) = &to.operation {
            keys.extend(key(attr_for(Attr::Host), &o.hosts, &o.not_hosts));
            keys.extend(key(attr_for(Attr::Method), &o.methods, &o.not_methods));
            keys.extend(key(attr_for(Attr::Path), &o.paths, &o.not_paths));
            keys.extend(key(Attr::DestPort, &o.ports, &o.not_ports));
        }
        keys.extend(base_permission.iter().copied());
        permissions.push(and_permission(generate(&keys, ns, action, widened)?));
    }
    let mut principals = Vec::new();
    let froms: Vec<_> = rule.from.iter().flatten().collect();
    if froms.is_empty() {
        principals.push(and_principal(generate(
            &base_principal,
            ns,
            action,
            widened,
        )?));
    }
    for from in froms {
        let mut keys = Vec::new();
        if let Some(s) = &from.source {
            keys.extend(key(Attr::SrcPrincipal, &s.principals, &s.not_principals));
            keys.extend(key(
                Attr::SrcServiceAccount,
                &s.service_accounts,
                &s.not_service_accounts,
            ));
            keys.extend(key(
                attr_for(Attr::RequestPrincipal),
                &s.request_principals,
                &s.not_request_principals,
            ));
            keys.extend(key(Attr::SrcNamespace, &s.namespaces, &s.not_namespaces));
            keys.extend(key(
                Attr::RemoteIp,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            ));
            keys.extend(key(Attr::SrcIp, &s.ip_blocks, &s.not_ip_blocks));
        }
        keys.extend(base_principal.iter().copied());
        principals.push(and_principal(generate(&keys, ns, action, widened)?));
    }
    Ok(Policy {
        permissions,
        principals,
        ..Policy::default()
    })
}

/// The matchers of a list of keys: per key an `or` of its values and a `not(or)` of its
/// notValues, failing safe as the module says.
fn generate(
    keys: &[Key<'_>],
    ns: &str,
    action: rbac::Action,
    widened: &mut Vec<String>,
) -> Result<Vec<Generated>, String> {
    let mut out = Vec::new();
    for k in keys {
        if k.attr.is_jwt() {
            // istiod's `extendedPrincipal`: one matcher for all values, `not` of one for all
            // notValues. These cannot fail: claim keys were checked when classified.
            if !k.values.is_empty() {
                out.push(Generated::Principal(jwt_principal(k.attr, k.values)));
            }
            if !k.not_values.is_empty() {
                out.push(not(Generated::Principal(jwt_principal(
                    k.attr,
                    k.not_values,
                ))));
            }
            continue;
        }
        let values: Result<Vec<Generated>, String> =
            k.values.iter().map(|v| value(k.attr, v, ns)).collect();
        match values {
            Ok(v) if !v.is_empty() => out.push(or(v)),
            Ok(_) => {}
            Err(e) if action == rbac::Action::Allow => return Err(e),
            // DENY/LOG: leave the key out, so the rule matches whatever else it matches.
            Err(e) => widened.push(format!("{e}: the key's values are left out")),
        }
        let mut nots = Vec::new();
        for v in k.not_values {
            match value(k.attr, v, ns) {
                Ok(g) => nots.push(g),
                Err(e) if action == rbac::Action::Allow => return Err(e),
                Err(e) => widened.push(format!("{e}: the notValue is left out")),
            }
        }
        if !nots.is_empty() {
            out.push(not(or(nots)));
        }
    }
    Ok(out)
}

fn or(mut v: Vec<Generated>) -> Generated {
    let first_is_permission = matches!(v.first(), Some(Generated::Permission(_)));
    if first_is_permission {
        let rules = v
            .drain(..)
            .filter_map(|g| match g {
                Generated::Permission(p) => Some(p),
                Generated::Principal(_) => None,
            })
            .collect();
        Generated::Permission(Permission {
            rule: Some(permission::Rule::OrRules(permission::Set { rules })),
        })
    } else {
        let ids = v
            .drain(..)
            .filter_map(|g| match g {
                Generated::Principal(p) => Some(p),
                Generated::Permission(_) => None,
            })
            .collect();
        Generated::Principal(Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
        })
    }
}

fn not(g: Generated) -> Generated {
    match g {
        Generated::Permission(p) => Generated::Permission(Permission {
            rule: Some(permission::Rule::NotRule(Box::new(p))),
        }),
        Generated::Principal(p) => Generated::Principal(Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(p))),
        }),
    }
}

fn and_permission(v: Vec<Generated>) -> Permission {
    let mut rules: Vec<Permission> = v
        .into_iter()
        .filter_map(|g| match g {
            Generated::Permission(p) => Some(p),
            Generated::Principal(_) => None,
        })
        .collect();
    if rules.is_empty() {
        rules.push(Permission {
            rule: Some(permission::Rule::Any(true)),
        });
    }
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn and_principal(v: Vec<Generated>) -> Principal {
    let mut ids: Vec<Principal> = v
        .into_iter()
        .filter_map(|g| match g {
            Generated::Principal(p) => Some(p),
            Generated::Permission(_) => None,
        })
        .collect();
    if ids.is_empty() {
        ids.push(Principal {
            identifier: Some(principal::Identifier::Any(true)),
        });
    }
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

/// istiod's `StringMatcherWithPrefix`: `*` is `.+`, `*x` a suffix (with a prefix, the regex
/// `<prefix>.*x`; istiod leaves `x` unescaped, so its dots match any character: we escape it),
/// `x*` a prefix, else exact.
fn string_matcher(v: &str, prefix: &str, ignore_case: bool) -> StringMatcher {
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(regex(".+"))
    } else if let Some(s) = v.strip_prefix('*') {
        if prefix.is_empty() {
            MatchPattern::Suffix(s.to_string())
        } else {
            MatchPattern::SafeRegex(regex(&format!(
                "{}.*{}",
                regex_escape(prefix),
                regex_escape(s)
            )))
        }
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{p}"))
    } else {
        MatchPattern::Exact(format!("{prefix}{v}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

/// Escapes RE2 metacharacters.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..RegexMatcher::default()
    }
}

fn regex_matcher(r: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(regex(&r))),
        ignore_case: false,
    }
}

/// istiod's `HeaderMatcher` (`*` is presence) and `HostMatcher` (case-insensitive).
fn header(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let spec = if v == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(v, "", ignore_case))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..HeaderMatcher::default()
    }
}

/// istiod's `AddrStrToCidrRange`: an address, or a CIDR.
fn cidr(v: &str) -> Result<CidrRange, String> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{v:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{v:?} has a bad prefix length"))?,
        None => max,
    };
    Ok(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

fn authenticated(m: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(m),
            },
        )),
    }
}

fn value(attr: Attr<'_>, v: &str, ns: &str) -> Result<Generated, String> {
    use permission::Rule as R;
    use principal::Identifier as I;
    let perm = |rule| Ok(Generated::Permission(Permission { rule: Some(rule) }));
    let id = |identifier| {
        Ok(Generated::Principal(Principal {
            identifier: Some(identifier),
        }))
    };
    match attr {
        Attr::Host => perm(R::Header(header(":authority", v, true))),
        Attr::Method => perm(R::Header(header(":method", v, false))),
        Attr::Path => {
            // Path templates (`{*}`, `{**}`) need `uri_template`, which our proxy rejects.
            if v.contains('{') {
                return Err(format!("path template {v:?} is not supported"));
            }
            perm(R::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(string_matcher(v, "", false))),
            }))
        }
        Attr::DestPort => match v.parse::<u16>() {
            Ok(p) => perm(R::DestinationPort(u32::from(p))),
            Err(_) => Err(format!("{v:?} is not a port")),
        },
        Attr::DestIp => perm(R::DestinationIp(cidr(v)?)),
        Attr::Sni => perm(R::RequestedServerName(string_matcher(v, "", false))),
        Attr::SrcPrincipal => Ok(Generated::Principal(authenticated(string_matcher(
            v,
            "spiffe://",
            false,
        )))),
        Attr::SrcServiceAccount => {
            let (sa_ns, sa) = v.split_once('/').unwrap_or((ns, v));
            Ok(Generated::Principal(authenticated(regex_matcher(format!(
                "spiffe://.+/ns/{sa_ns}/(.+/|)sa/{sa}(/.+)?"
            )))))
        }
        Attr::SrcNamespace => Ok(Generated::Principal(authenticated(regex_matcher(format!(
            ".*/ns/{}/.*",
            v.replace('*', ".*")
        ))))),
        Attr::SrcIp => id(I::DirectRemoteIp(cidr(v)?)),
        Attr::RemoteIp => id(I::RemoteIp(cidr(v)?)),
        Attr::RequestHeader(h) => id(I::Header(header(h, v, false))),
        Attr::RequestPrincipal
        | Attr::RequestAudiences
        | Attr::RequestPresenter
        | Attr::RequestClaim(_) => Ok(Generated::Principal(jwt_principal(
            attr,
            std::slice::from_ref(&v.to_string()),
        ))),
        Attr::Unsupported(reason) => Err(reason.to_string()),
    }
}

/// istiod's `extractNameInNestedBrackets`: `[a][b]` is `a`, `b`; anything else must be one
/// `[name]` (kept whole, inner brackets included). None when malformed.
fn claim_path(s: &str) -> Option<Vec<&str>> {
    let whole = || {
        s.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .map(|n| vec![n])
    };
    let bytes = s.as_bytes();
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < bytes.len() {
        if bytes[begin] != b'[' {
            return whole();
        }
        let end = bytes[begin + 1..]
            .iter()
            .position(|b| *b == b'[' || *b == b']')
            .map(|i| begin + 1 + i)
            .filter(|i| bytes[*i] == b']');
        let Some(end) = end else {
            return whole();
        };
        claims.push(&s[begin + 1..end]);
        begin = end + 1;
    }
    // istiod accepts an empty remainder as no claim at all; a key with no claim names nothing
    // to match, which is malformed here.
    (!claims.is_empty()).then_some(claims)
}

fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

/// istiod's `StringOrMatcher`: one string matcher, or an `or_match` of several.
fn string_or(values: &[String]) -> ValueMatcher {
    let mut matchers: Vec<ValueMatcher> = values
        .iter()
        .map(|v| string_value(string_matcher(v, "", false)))
        .collect();
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: matchers,
        })),
    }
}

/// A matcher on the JWT filter's metadata at `payload` then `claims`. Envoy deprecates
/// `Principal.metadata` for `sourced_metadata`, but istiod still emits `metadata` (both read the
/// dynamic metadata): we match its output.
#[allow(deprecated)]
fn jwt_metadata(claims: &[&str], value: ValueMatcher) -> Principal {
    use super::jwt::{JWT_FILTER, JWT_PAYLOAD_KEY};
    let path = std::iter::once(JWT_PAYLOAD_KEY)
        .chain(claims.iter().copied())
        .map(|k| metadata_matcher::PathSegment {
            segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
        })
        .collect();
    Principal {
        identifier: Some(principal::Identifier::Metadata(MetadataMatcher {
            filter: JWT_FILTER.to_string(),
            path,
            value: Some(value),
            ..MetadataMatcher::default()
        })),
    }
}

/// istiod's `MetadataListValueMatcherForJWTClaims` (extended JWT): the claim is either a list
/// with one element matching `value`, or a string matching it.
fn jwt_claim_list(claims: &[&str], value: ValueMatcher) -> Principal {
    let list = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(value.clone()))),
            },
        ))),
    };
    jwt_metadata(
        claims,
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: vec![list, value],
            })),
        },
    )
}

/// istiod's `requestPrincipalGenerator.extendedPrincipal` for one `iss/sub` value (split at
/// the last `/`, the issuer being a URL): exact both; `*` any both; `*x` a suffix of the issuer
/// (sub exact) or, without `/`, any issuer and a suffix of the subject; `x*` a prefix of the
/// subject (issuer exact) or, without `/`, a prefix of the issuer and any subject.
fn request_principal(v: &str) -> Principal {
    let any = || regex_matcher(".+".into());
    let exact = |s: &str| StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_string())),
        ignore_case: false,
    };
    let (iss, sub, found) = match v.rfind('/') {
        Some(i) => (&v[..i], &v[i + 1..], true),
        None => (v, "", false),
    };
    let (iss_m, sub_m) = if v == "*" {
        (any(), any())
    } else if let Some(rest) = v.strip_prefix('*') {
        if found {
            let iss_m = if iss == "*" {
                any()
            } else {
                StringMatcher {
                    match_pattern: Some(MatchPattern::Suffix(
                        iss.strip_prefix('*').unwrap_or(iss).to_string(),
                    )),
                    ignore_case: false,
                }
            };
            (iss_m, exact(sub))
        } else {
            let suffix = StringMatcher {
                match_pattern: Some(MatchPattern::Suffix(rest.to_string())),
                ignore_case: false,
            };
            (any(), suffix)
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        let prefix = |p: &str| StringMatcher {
            match_pattern: Some(MatchPattern::Prefix(p.to_string())),
            ignore_case: false,
        };
        if found {
            let sub_m = if sub == "*" {
                any()
            } else {
                prefix(sub.strip_suffix('*').unwrap_or(sub))
            };
            (exact(iss), sub_m)
        } else {
            (prefix(rest), any())
        }
    } else {
        (exact(iss), exact(sub))
    };
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![
                jwt_metadata(&["iss"], string_value(iss_m)),
                jwt_metadata(&["sub"], string_value(sub_m)),
            ],
        })),
    }
}

/// The principal of a JWT key over all its values (`values` non-empty).
fn jwt_principal(attr: Attr<'_>, values: &[String]) -> Principal {
    match attr {
        Attr::RequestPrincipal => {
            let mut ids: Vec<Principal> = values.iter().map(|v| request_principal(v)).collect();
            if ids.len() == 1 {
                ids.remove(0)
            } else {
                Principal {
                    identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
                }
            }
        }
        Attr::RequestAudiences => jwt_claim_list(&["aud"], string_or(values)),
        Attr::RequestPresenter => jwt_claim_list(&["azp"], string_or(values)),
        Attr::RequestClaim(brackets) => {
            let claims = claim_path(brackets).expect("claim keys are checked when classified");
            jwt_claim_list(&claims, string_or(values))
        }
        _ => unreachable!("only JWT keys reach jwt_principal"),
    }
}

#[cfg(test)]
mod tests;
