//! Where tokens are read (Envoy's `Extractor`): `from_headers` (with `value_prefix`),
//! `from_params` and `from_cookies` of a set of providers, each location remembering which
//! issuers may send a token there. Without any location a provider reads
//! `Authorization: Bearer <token>` and the `access_token` query parameter.

use http::header::HeaderName;
use http::HeaderMap;
use std::collections::BTreeSet;

/// The issuers allowed to use a location (any, when one of its providers names no issuer).
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    any: bool,
    names: BTreeSet<String>,
}

impl Issuers {
    fn add(&mut self, issuer: &str) {
        if issuer.is_empty() {
            self.any = true;
        } else {
            self.names.insert(issuer.to_string());
        }
    }

    /// Whether a token with this `iss` may come from the location.
    pub fn allows(&self, iss: &str) -> bool {
        self.any || self.names.contains(iss)
    }
}

/// One provider's locations, as configured.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// `from_headers`: lower-case name and `value_prefix`.
    pub headers: Vec<(HeaderName, String)>,
    /// `from_params`.
    pub params: Vec<String>,
    /// `from_cookies`.
    pub cookies: Vec<String>,
}

/// A token found in a request.
#[derive(Debug, Clone)]
pub struct Found {
    /// The token text.
    pub token: String,
    /// The header it came from (the one `forward: false` removes; parameters and cookies are
    /// left in place, as Envoy does).
    pub header: Option<HeaderName>,
    /// Who may send a token there.
    pub issuers: Issuers,
}

/// The merged locations of some providers.
#[derive(Debug, Clone, Default)]
pub struct Extractor {
    headers: Vec<(HeaderName, String, Issuers)>,
    params: Vec<(String, Issuers)>,
    cookies: Vec<(String, Issuers)>,
}

fn entry<K: PartialEq>(v: &mut Vec<(K, Issuers)>, k: K) -> &mut Issuers {
    let i = match v.iter().position(|(x, _)| *x == k) {
        Some(i) => i,
        None => {
            v.push((k, Issuers::default()));
            v.len() - 1
        }
    };
    &mut v[i].1
}

impl Extractor {
    /// Adds a provider's locations under its issuer.
    pub fn add(&mut self, issuer: &str, l: &Locations) {
        for (name, prefix) in &l.headers {
            let i = match self
                .headers
                .iter()
                .position(|(n, p, _)| n == name && p == prefix)
            {
                Some(i) => i,
                None => {
                    self.headers
                        .push((name.clone(), prefix.clone(), Issuers::default()));
                    self.headers.len() - 1
                }
            };
            self.headers[i].2.add(issuer);
        }
        for p in &l.params {
            entry(&mut self.params, p.clone()).add(issuer);
        }
        for c in &l.cookies {
            entry(&mut self.cookies, c.clone()).add(issuer);
        }
    }

    /// The tokens of a request, headers first, then parameters, then cookies.
    pub fn extract(&self, headers: &HeaderMap, path_and_query: &str) -> Vec<Found> {
        let mut out = Vec::new();
        for (name, prefix, issuers) in &self.headers {
            let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let token = if prefix.is_empty() {
                value.to_string()
            } else {
                // Envoy looks for the prefix anywhere in the value and takes the JWT characters
                // that follow it.
                let Some(pos) = value.find(prefix.as_str()) else {
                    continue;
                };
                jwt_chars(&value[pos + prefix.len()..])
            };
            out.push(Found {
                token,
                header: Some(name.clone()),
                issuers: issuers.clone(),
            });
        }
        if !self.params.is_empty() {
            let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
            for (param, issuers) in &self.params {
                let value = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| v);
                if let Some(v) = value {
                    out.push(Found {
                        token: v.to_string(),
                        header: None,
                        issuers: issuers.clone(),
                    });
                }
            }
        }
        if !self.cookies.is_empty() {
            let cookies: Vec<(&str, &str)> = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .collect();
            for (cookie, issuers) in &self.cookies {
                if let Some((_, v)) = cookies.iter().find(|(k, _)| k == cookie) {
                    out.push(Found {
                        token: v.trim_matches('"').to_string(),
                        header: None,
                        issuers: issuers.clone(),
                    });
                }
            }
        }
        out
    }
}

/// The leading run of characters a compact JWS can hold (base64url and dots), after any
/// separator characters.
fn jwt_chars(s: &str) -> String {
    let is_jwt = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=');
    let start = s.find(is_jwt).unwrap_or(s.len());
    let rest = &s[start..];
    let end = rest.find(|c: char| !is_jwt(c)).unwrap_or(rest.len());
    rest[..end].to_string()
}
