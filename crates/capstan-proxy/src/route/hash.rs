//! A route's `hash_policy`: header, cookie (generated when absent and a TTL is set), source IP
//! and query parameter hashes combined as Envoy does, for ring-hash and Maglev balancers.

use super::matcher::header_value;
use crate::cluster::hash::xxhash64;
use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy as Pb};
use regex::Regex;
use std::net::SocketAddr;
use std::time::Duration;

/// What one policy hashes.
#[derive(Debug, Clone)]
pub enum HashKey {
    /// A request header (values joined), optionally rewritten by a regex.
    Header(String, Option<(Regex, String)>),
    /// A cookie; when absent and `ttl` is set, a cookie is generated and set on the response.
    Cookie {
        /// Cookie name.
        name: String,
        /// Max-Age of a generated cookie.
        ttl: Option<Duration>,
        /// Path of a generated cookie.
        path: String,
    },
    /// The downstream source IP.
    SourceIp,
    /// A query parameter's first value.
    Query(String),
}

/// One compiled hash policy.
#[derive(Debug, Clone)]
pub struct HashPolicy {
    /// What it hashes.
    pub key: HashKey,
    /// `terminal`: stop at this policy when it produced a hash.
    pub terminal: bool,
}

/// A cookie to set on the response (`Set-Cookie`), generated for a cookie hash policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCookie {
    /// The full `Set-Cookie` value.
    pub header: String,
}

impl HashPolicy {
    /// Compiles a `HashPolicy`.
    pub fn compile(p: &Pb) -> Result<HashPolicy, CompileError> {
        use hash_policy::PolicySpecifier as S;
        let key = match &p.policy_specifier {
            Some(S::Header(h)) => {
                let rw = match &h.regex_rewrite {
                    Some(r) => Some(
                        super::matcher::rewrite_regex(r)
                            .map_err(|e| e.within("header.regex_rewrite"))?,
                    ),
                    None => None,
                };
                HashKey::Header(h.header_name.to_ascii_lowercase(), rw)
            }
            Some(S::Cookie(c)) => {
                if !c.attributes.is_empty() {
                    return Err(CompileError::new("cookie.attributes", "is not supported"));
                }
                let ttl = c
                    .ttl
                    .as_ref()
                    .map(|d| crate::listener::duration(d).map_err(|e| e.within("cookie.ttl")))
                    .transpose()?;
                HashKey::Cookie {
                    name: c.name.clone(),
                    ttl,
                    path: c.path.clone(),
                }
            }
            Some(S::ConnectionProperties(c)) if c.source_ip => HashKey::SourceIp,
            Some(S::ConnectionProperties(_)) => {
                return Err(CompileError::new(
                    "connection_properties.source_ip",
                    "must be true",
                ))
            }
            Some(S::QueryParameter(q)) => HashKey::Query(q.name.clone()),
            Some(S::FilterState(_)) => {
                return Err(CompileError::new("filter_state", "is not supported"))
            }
            None => return Err(CompileError::new("policy_specifier", "is required")),
        };
        Ok(HashPolicy {
            key,
            terminal: p.terminal,
        })
    }
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
}

fn query(path_and_query: &str, name: &str) -> Option<String> {
    let q = path_and_query.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

/// Computes the request's hash over `policies` (Envoy: each new hash is combined as
/// `rotl(h, 1) ^ new`; a terminal policy that produced a hash ends the walk). Also returns a
/// cookie to set when a cookie policy with a TTL found no cookie.
pub fn compute(
    policies: &[HashPolicy],
    headers: &http::HeaderMap,
    path_and_query: &str,
    peer: SocketAddr,
) -> (Option<u64>, Option<NewCookie>) {
    let mut hash: Option<u64> = None;
    let mut new_cookie = None;
    for p in policies {
        let one = match &p.key {
            HashKey::Header(name, rw) => header_value(headers, name).map(|v| {
                let v = match rw {
                    Some((re, sub)) => re.replace_all(&v, sub.as_str()).into_owned(),
                    None => v,
                };
                xxhash64(v.as_bytes(), 0)
            }),
            HashKey::Cookie { name, ttl, path } => match cookie(headers, name) {
                Some(v) => Some(xxhash64(v.as_bytes(), 0)),
                None => ttl.map(|ttl| {
                    // Envoy: the value is the hex xxHash64 of the downstream address.
                    let value = format!("{:016x}", xxhash64(peer.to_string().as_bytes(), 0));
                    let mut header = format!("{name}=\"{value}\"; Max-Age={}", ttl.as_secs());
                    if !path.is_empty() {
                        header.push_str(&format!("; Path={path}"));
                    }
                    header.push_str("; HttpOnly");
                    new_cookie = Some(NewCookie { header });
                    xxhash64(value.as_bytes(), 0)
                }),
            },
            HashKey::SourceIp => Some(xxhash64(peer.ip().to_string().as_bytes(), 0)),
            HashKey::Query(name) => query(path_and_query, name).map(|v| xxhash64(v.as_bytes(), 0)),
        };
        if let Some(h) = one {
            hash = Some(hash.map_or(h, |old| old.rotate_left(1) ^ h));
            if p.terminal {
                break;
            }
        }
    }
    (hash, new_cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(key: HashKey, terminal: bool) -> HashPolicy {
        HashPolicy { key, terminal }
    }

    #[test]
    fn hash_table() {
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("cookie", "a=1; session=abc".parse().unwrap());
        let x = |s: &str| xxhash64(s.as_bytes(), 0);
        let cookie_none = HashKey::Cookie {
            name: "missing".into(),
            ttl: None,
            path: String::new(),
        };
        let cases: Vec<(Vec<HashPolicy>, &str, Option<u64>)> = vec![
            (
                vec![pol(HashKey::Header("x-user".into(), None), false)],
                "/",
                Some(x("alice")),
            ),
            (
                vec![pol(HashKey::Header("x-none".into(), None), false)],
                "/",
                None,
            ),
            (
                vec![pol(
                    HashKey::Cookie {
                        name: "session".into(),
                        ttl: None,
                        path: String::new(),
                    },
                    false,
                )],
                "/",
                Some(x("abc")),
            ),
            (vec![pol(cookie_none, false)], "/", None),
            (
                vec![pol(HashKey::SourceIp, false)],
                "/",
                Some(x("10.0.0.1")),
            ),
            (
                vec![pol(HashKey::Query("u".into()), false)],
                "/p?a=b&u=bob",
                Some(x("bob")),
            ),
            (
                vec![
                    pol(HashKey::Header("x-user".into(), None), true),
                    pol(HashKey::SourceIp, false),
                ],
                "/",
                Some(x("alice")),
            ),
            (
                vec![
                    pol(HashKey::Header("x-user".into(), None), false),
                    pol(HashKey::SourceIp, false),
                ],
                "/",
                Some(x("alice").rotate_left(1) ^ x("10.0.0.1")),
            ),
        ];
        for (i, (p, path, want)) in cases.into_iter().enumerate() {
            assert_eq!(compute(&p, &h, path, peer).0, want, "case {i}");
        }
    }

    #[test]
    fn generates_cookie_with_ttl() {
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let p = vec![pol(
            HashKey::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: "/".into(),
            },
            false,
        )];
        let (hash, c) = compute(&p, &http::HeaderMap::new(), "/", peer);
        let c = c.unwrap();
        assert!(c.header.starts_with("sticky=\""), "{}", c.header);
        assert!(c.header.contains("Max-Age=60; Path=/; HttpOnly"));
        let value = c.header.split('"').nth(1).unwrap();
        assert_eq!(hash, Some(xxhash64(value.as_bytes(), 0)));
    }
}
