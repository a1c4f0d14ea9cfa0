//! Envoy's RBAC HTTP filter (`envoy.filters.http.rbac`), as Istio generates it from
//! AuthorizationPolicy: policies of permissions (what is asked: method, path, host, port, …)
//! and principals (who asks: the peer certificate's SPIFFE id, addresses, headers). ALLOW lets
//! a request through only when some policy matches; DENY refuses it when one does; LOG only
//! counts. Istio puts a DENY filter before an ALLOW one, so DENY wins.
//!
//! `metadata` permissions and principals match the request's dynamic metadata (the JWT filter's
//! verified payload: Istio's `requestPrincipals` and `request.auth.*`). Fields with behaviour
//! not implemented (CEL conditions, `sourced_metadata`, `filter_state`, matcher trees) are
//! compile errors naming the field.

use super::metadata::{DynamicMetadata, MetadataMatcher};
use crate::route::matcher::{HeaderMatcher, StringMatcher};
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilterPb;
use std::net::{IpAddr, SocketAddr};

/// The filter's type URL.
pub const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// What a matching policy means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Only requests some policy matches pass.
    Allow,
    /// Requests some policy matches are refused.
    Deny,
    /// Nothing is enforced (matches are counted).
    Log,
}

/// An address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    fn compile(c: &CidrRange) -> Result<Cidr, CompileError> {
        let net: IpAddr = c.address_prefix.parse().map_err(|_| {
            CompileError::new(
                "address_prefix",
                format!("{:?} is not an IP address", c.address_prefix),
            )
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = c.prefix_len.map_or(max, |p| p.value);
        if len > max {
            return Err(CompileError::new(
                "prefix_len",
                format!("{len} is longer than {max}"),
            ));
        }
        Ok(Cidr {
            net,
            len: len as u8,
        })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What is asked.
#[derive(Debug, Clone)]
pub enum Permission {
    /// `any`.
    Any,
    /// `and_rules`.
    And(Vec<Permission>),
    /// `or_rules`.
    Or(Vec<Permission>),
    /// `not_rule`.
    Not(Box<Permission>),
    /// `header` (pseudo-headers `:method`, `:path`, `:authority`, `:scheme` included).
    Header(HeaderMatcher),
    /// `url_path` (the path without the query).
    UrlPath(StringMatcher),
    /// `destination_ip`.
    DestinationIp(Cidr),
    /// `destination_port`.
    DestinationPort(u32),
    /// `destination_port_range` `[start, end)`.
    DestinationPortRange(i32, i32),
    /// `requested_server_name` (SNI).
    ServerName(StringMatcher),
    /// `metadata`: the request's dynamic metadata.
    Metadata(MetadataMatcher),
}

/// Who asks.
#[derive(Debug, Clone)]
pub enum Principal {
    /// `any`.
    Any,
    /// `and_ids`.
    And(Vec<Principal>),
    /// `or_ids`.
    Or(Vec<Principal>),
    /// `not_id`.
    Not(Box<Principal>),
    /// `authenticated`: a peer certificate, its URI SAN (else DNS SAN, else subject) matching.
    Authenticated(Option<StringMatcher>),
    /// `direct_remote_ip` (and the deprecated `source_ip`): the connection's peer.
    DirectRemoteIp(Cidr),
    /// `remote_ip`: the client as `x-forwarded-for` and `xff_num_trusted_hops` say.
    RemoteIp(Cidr),
    /// `header`.
    Header(HeaderMatcher),
    /// `url_path`.
    UrlPath(StringMatcher),
    /// `metadata`: the request's dynamic metadata (JWT claims).
    Metadata(MetadataMatcher),
}

/// One named policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name (stats, logs).
    pub name: String,
    /// Any of these permissions …
    pub permissions: Vec<Permission>,
    /// … asked by any of these principals.
    pub principals: Vec<Principal>,
}

/// A compiled RBAC filter.
#[derive(Debug, Clone)]
pub struct RbacFilter {
    /// `rules` (None: nothing enforced).
    pub rules: Option<(Action, Vec<Policy>)>,
}

/// What a request shows the filter.
pub struct RbacRequest<'a> {
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// `:method`.
    pub method: &'a str,
    /// `:path` with the query.
    pub path: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// The address the connection was made to.
    pub destination: SocketAddr,
    /// The connection's peer address.
    pub direct_remote: IpAddr,
    /// The client address (XFF-derived when trusted).
    pub remote: IpAddr,
    /// The peer certificate (mTLS).
    pub peer: Option<&'a crate::identity::PeerCert>,
    /// SNI of a TLS connection.
    pub server_name: Option<&'a str>,
    /// Dynamic metadata earlier filters set (the JWT payload).
    pub metadata: &'a DynamicMetadata,
}

impl RbacRequest<'_> {
    fn header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => Some(self.method.to_string()),
            ":path" => Some(self.path.to_string()),
            ":authority" | "host" => Some(self.authority.to_string()),
            ":scheme" => Some(self.scheme.to_string()),
            n => crate::route::matcher::header_value(self.headers, n),
        }
    }

    fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or(self.path)
    }
}

impl Permission {
    fn matches(&self, r: &RbacRequest<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(v) => v.iter().all(|p| p.matches(r)),
            Permission::Or(v) => v.iter().any(|p| p.matches(r)),
            Permission::Not(p) => !p.matches(r),
            Permission::Header(h) => h.matches_value(r.header(&h.name)),
            Permission::UrlPath(m) => m.matches(r.path_only()),
            Permission::DestinationIp(c) => c.contains(r.destination.ip()),
            Permission::DestinationPort(p) => u32::from(r.destination.port()) == *p,
            Permission::DestinationPortRange(a, b) => {
                let p = i32::from(r.destination.port());
                p >= *a && p < *b
            }
            Permission::ServerName(m) => m.matches(r.server_name.unwrap_or("")),
            Permission::Metadata(m) => m.matches(r.metadata),
        }
    }
}

impl Principal {
    fn matches(&self, r: &RbacRequest<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(v) => v.iter().all(|p| p.matches(r)),
            Principal::Or(v) => v.iter().any(|p| p.matches(r)),
            Principal::Not(p) => !p.matches(r),
            Principal::Authenticated(m) => match (r.peer, m) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(peer), Some(m)) => {
                    if !peer.uris.is_empty() {
                        peer.uris.iter().any(|u| m.matches(u))
                    } else if !peer.dns.is_empty() {
                        peer.dns.iter().any(|d| m.matches(d))
                    } else {
                        m.matches(&peer.subject)
                    }
                }
            },
            Principal::DirectRemoteIp(c) => c.contains(r.direct_remote),
            Principal::RemoteIp(c) => c.contains(r.remote),
            Principal::Header(h) => h.matches_value(r.header(&h.name)),
            Principal::UrlPath(m) => m.matches(r.path_only()),
            Principal::Metadata(m) => m.matches(r.metadata),
        }
    }
}

impl RbacFilter {
    /// Whether the request may pass, and the policy that decided (if one matched).
    pub fn check(&self, r: &RbacRequest<'_>) -> (bool, Option<&str>) {
        let Some((action, policies)) = &self.rules else {
            return (true, None);
        };
        let matched = policies.iter().find(|p| {
            p.permissions.iter().any(|x| x.matches(r)) && p.principals.iter().any(|x| x.matches(r))
        });
        let name = matched.map(|p| p.name.as_str());
        match action {
            Action::Allow => (matched.is_some(), name),
            Action::Deny => (matched.is_none(), name),
            Action::Log => (true, name),
        }
    }

    /// Compiles the filter's typed config.
    pub fn compile(f: &RbacFilterPb) -> Result<RbacFilter, CompileError> {
        Self::from_rules(f.rules.as_ref(), f.matcher.is_some())
    }

    /// Compiles `rules` (of the HTTP or the network filter); `matcher`: whether the config
    /// has a matcher tree instead.
    pub fn from_rules(rules: Option<&pb::Rbac>, matcher: bool) -> Result<RbacFilter, CompileError> {
        if matcher {
            return Err(CompileError::new(
                "matcher",
                "matcher trees are not supported",
            ));
        }
        // Shadow rules only log and count in Envoy; they never change a decision.
        let rules = match rules {
            None => None,
            Some(rules) => Some(compile_rules(rules).map_err(|e| e.within("rules"))?),
        };
        Ok(RbacFilter { rules })
    }
}

fn compile_rules(r: &pb::Rbac) -> Result<(Action, Vec<Policy>), CompileError> {
    let action = match pb::rbac::Action::try_from(r.action) {
        Ok(pb::rbac::Action::Allow) => Action::Allow,
        Ok(pb::rbac::Action::Deny) => Action::Deny,
        Ok(pb::rbac::Action::Log) => Action::Log,
        Err(_) => {
            return Err(CompileError::new(
                "action",
                format!("unknown action {}", r.action),
            ))
        }
    };
    if r.audit_logging_options.is_some() {
        return Err(CompileError::new("audit_logging_options", "not supported"));
    }
    // Policy order does not change the decision; sort by name for stable logs.
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let p = &r.policies[name];
        let at = |e: CompileError| e.within(&format!("policies[{name}]"));
        if p.condition.is_some() || p.checked_condition.is_some() {
            return Err(at(CompileError::new(
                "condition",
                "CEL conditions are not supported",
            )));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(i, x)| permission(x).map_err(|e| e.within(&format!("permissions[{i}]"))))
            .collect::<Result<_, _>>()
            .map_err(at)?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(i, x)| principal(x).map_err(|e| e.within(&format!("principals[{i}]"))))
            .collect::<Result<_, _>>()
            .map_err(at)?;
        policies.push(Policy {
            name: name.clone(),
            permissions,
            principals,
        });
    }
    Ok((action, policies))
}

fn path_matcher(
    p: &envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher,
) -> Result<StringMatcher, CompileError> {
    use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule;
    match &p.rule {
        Some(Rule::Path(m)) => StringMatcher::compile(m).map_err(|e| e.within("path")),
        None => Err(CompileError::new("path", "is required")),
    }
}

#[allow(deprecated)]
fn permission(p: &pb::Permission) -> Result<Permission, CompileError> {
    use pb::permission::Rule as R;
    let set = |s: &pb::permission::Set, f: &str| -> Result<Vec<Permission>, CompileError> {
        s.rules
            .iter()
            .enumerate()
            .map(|(i, x)| permission(x).map_err(|e| e.within(&format!("{f}.rules[{i}]"))))
            .collect()
    };
    Ok(match &p.rule {
        Some(R::Any(true)) => Permission::Any,
        Some(R::Any(false)) => return Err(CompileError::new("any", "must be true")),
        Some(R::AndRules(s)) => Permission::And(set(s, "and_rules")?),
        Some(R::OrRules(s)) => Permission::Or(set(s, "or_rules")?),
        Some(R::NotRule(n)) => {
            Permission::Not(Box::new(permission(n).map_err(|e| e.within("not_rule"))?))
        }
        Some(R::Header(h)) => {
            Permission::Header(HeaderMatcher::compile(h).map_err(|e| e.within("header"))?)
        }
        Some(R::UrlPath(u)) => {
            Permission::UrlPath(path_matcher(u).map_err(|e| e.within("url_path"))?)
        }
        Some(R::DestinationIp(c)) => {
            Permission::DestinationIp(Cidr::compile(c).map_err(|e| e.within("destination_ip"))?)
        }
        Some(R::DestinationPort(p)) => Permission::DestinationPort(*p),
        Some(R::DestinationPortRange(r)) => Permission::DestinationPortRange(r.start, r.end),
        Some(R::RequestedServerName(m)) => Permission::ServerName(
            StringMatcher::compile(m).map_err(|e| e.within("requested_server_name"))?,
        ),
        Some(R::Metadata(m)) => {
            Permission::Metadata(MetadataMatcher::compile(m).map_err(|e| e.within("metadata"))?)
        }
        Some(R::SourcedMetadata(_)) => {
            return Err(CompileError::new(
                "sourced_metadata",
                "sourced metadata permissions are not supported",
            ))
        }
        Some(R::Matcher(_)) | Some(R::UriTemplate(_)) => {
            return Err(CompileError::new(
                "rule",
                "extension permissions are not supported",
            ))
        }
        None => return Err(CompileError::new("rule", "is required")),
    })
}

fn principal(p: &pb::Principal) -> Result<Principal, CompileError> {
    use pb::principal::Identifier as I;
    let set = |s: &pb::principal::Set, f: &str| -> Result<Vec<Principal>, CompileError> {
        s.ids
            .iter()
            .enumerate()
            .map(|(i, x)| principal(x).map_err(|e| e.within(&format!("{f}.ids[{i}]"))))
            .collect()
    };
    #[allow(deprecated)]
    Ok(match &p.identifier {
        Some(I::Any(true)) => Principal::Any,
        Some(I::Any(false)) => return Err(CompileError::new("any", "must be true")),
        Some(I::AndIds(s)) => Principal::And(set(s, "and_ids")?),
        Some(I::OrIds(s)) => Principal::Or(set(s, "or_ids")?),
        Some(I::NotId(n)) => {
            Principal::Not(Box::new(principal(n).map_err(|e| e.within("not_id"))?))
        }
        Some(I::Authenticated(a)) => Principal::Authenticated(match &a.principal_name {
            Some(m) => Some(
                StringMatcher::compile(m).map_err(|e| e.within("authenticated.principal_name"))?,
            ),
            None => None,
        }),
        Some(I::SourceIp(c)) | Some(I::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(Cidr::compile(c).map_err(|e| e.within("direct_remote_ip"))?)
        }
        Some(I::RemoteIp(c)) => {
            Principal::RemoteIp(Cidr::compile(c).map_err(|e| e.within("remote_ip"))?)
        }
        Some(I::Header(h)) => {
            Principal::Header(HeaderMatcher::compile(h).map_err(|e| e.within("header"))?)
        }
        Some(I::UrlPath(u)) => {
            Principal::UrlPath(path_matcher(u).map_err(|e| e.within("url_path"))?)
        }
        Some(I::Metadata(m)) => {
            Principal::Metadata(MetadataMatcher::compile(m).map_err(|e| e.within("metadata"))?)
        }
        Some(I::SourcedMetadata(_)) | Some(I::FilterState(_)) => {
            return Err(CompileError::new(
                "identifier",
                "sourced_metadata and filter_state principals are not supported",
            ))
        }
        Some(I::Custom(_)) => {
            return Err(CompileError::new(
                "custom",
                "extension principals are not supported",
            ))
        }
        None => return Err(CompileError::new("identifier", "is required")),
    })
}

#[cfg(test)]
mod tests;
