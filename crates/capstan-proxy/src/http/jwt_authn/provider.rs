//! One `JwtProvider`: its issuer and audiences, token locations, key set, and what a verified
//! token of it does to the request (headers, metadata).

use super::extract::Locations;
use super::token::{Jwks, Jwt};
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as pb;
use http::header::HeaderName;
use pb::jwt_provider::JwksSourceSpecifier;
use serde_json::Value;

/// `jwt_verify_lib`'s default clock skew.
const CLOCK_SKEW_SECS: u64 = 60;

/// One compiled `JwtProvider`.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its key in `providers`.
    pub name: String,
    /// `issuer` (empty: any).
    pub issuer: String,
    pub(super) audiences: Vec<String>,
    pub(super) forward: bool,
    pub(super) forward_payload_header: Option<HeaderName>,
    pub(super) pad_forward_payload_header: bool,
    pub(super) payload_in_metadata: String,
    pub(super) header_in_metadata: String,
    pub(super) space_delimited_claims: Vec<String>,
    pub(super) claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    pub(super) locations: Locations,
    pub(super) jwks: Jwks,
    pub(super) clock_skew: u64,
}

fn header_name(s: &str, path: &str) -> Result<HeaderName, CompileError> {
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
        .map_err(|_| CompileError::new(path, format!("{s:?} is not a valid header name")))
}

/// `CheckAudience`: audiences compare without their scheme and trailing slash.
pub(super) fn sanitize_audience(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

impl Provider {
    pub(super) fn compile(name: &str, p: &pb::JwtProvider) -> Result<Provider, CompileError> {
        let unsupported = [
            ("subjects", p.subjects.is_some()),
            ("require_expiration", p.require_expiration),
            ("max_lifetime", p.max_lifetime.is_some()),
            (
                "failed_status_in_metadata",
                !p.failed_status_in_metadata.is_empty(),
            ),
        ];
        if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CompileError::new(*f, "is not supported"));
        }
        let jwks_text = match &p.jwks_source_specifier {
            Some(JwksSourceSpecifier::LocalJwks(ds)) => match &ds.specifier {
                Some(Specifier::InlineString(s)) => s.clone(),
                Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
                    .map_err(|_| CompileError::new("local_jwks.inline_bytes", "is not UTF-8"))?,
                _ => {
                    return Err(CompileError::new(
                        "local_jwks",
                        "only inline_string and inline_bytes are supported",
                    ))
                }
            },
            Some(JwksSourceSpecifier::RemoteJwks(_)) => {
                return Err(CompileError::new(
                    "remote_jwks",
                    "is not supported: the proxy needs the JWKS inlined (local_jwks), as istiod \
                     does unless PILOT_JWT_ENABLE_REMOTE_JWKS is set",
                ))
            }
            None => return Err(CompileError::new("jwks_source_specifier", "is required")),
        };
        let jwks = Jwks::parse(&jwks_text)
            .map_err(|e| CompileError::new("local_jwks.inline_string", format!("the JWKS {e}")))?;
        let mut locations = Locations::default();
        for (i, h) in p.from_headers.iter().enumerate() {
            let name = header_name(&h.name, &format!("from_headers[{i}].name"))?;
            locations.headers.push((name, h.value_prefix.clone()));
        }
        locations.params = p.from_params.clone();
        locations.cookies = p.from_cookies.clone();
        if locations.headers.is_empty()
            && locations.params.is_empty()
            && locations.cookies.is_empty()
        {
            locations
                .headers
                .push((http::header::AUTHORIZATION, "Bearer ".into()));
            locations.params.push("access_token".into());
        }
        let claim_to_headers = p
            .claim_to_headers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("claim_to_headers[{i}]");
                let name = header_name(&c.header_name, &format!("{at}.header_name"))?;
                let path: Vec<String> = if !c.claim_path.is_empty() {
                    c.claim_path.iter().map(|s| s.key.clone()).collect()
                } else if !c.claim_name.is_empty() {
                    c.claim_name.split('.').map(str::to_string).collect()
                } else {
                    return Err(CompileError::new(
                        format!("{at}.claim_name"),
                        "claim_name or claim_path is required",
                    ));
                };
                Ok((name, path))
            })
            .collect::<Result<_, _>>()?;
        let forward_payload_header = match p.forward_payload_header.as_str() {
            "" => None,
            h => Some(header_name(h, "forward_payload_header")?),
        };
        Ok(Provider {
            name: name.to_string(),
            issuer: p.issuer.clone(),
            audiences: p
                .audiences
                .iter()
                .map(|a| sanitize_audience(a).to_string())
                .collect(),
            forward: p.forward,
            forward_payload_header,
            pad_forward_payload_header: p.pad_forward_payload_header,
            payload_in_metadata: p.payload_in_metadata.clone(),
            header_in_metadata: p.header_in_metadata.clone(),
            space_delimited_claims: p
                .normalize_payload_in_metadata
                .as_ref()
                .map(|n| n.space_delimited_claims.clone())
                .unwrap_or_default(),
            claim_to_headers,
            locations,
            jwks,
            clock_skew: if p.clock_skew_seconds > 0 {
                u64::from(p.clock_skew_seconds)
            } else {
                CLOCK_SKEW_SECS
            },
        })
    }

    /// The payload as it goes into metadata: `space_delimited_claims` strings become lists.
    pub(super) fn normalized_payload(&self, jwt: &Jwt) -> Value {
        let mut payload = jwt.payload.clone();
        for claim in &self.space_delimited_claims {
            if let Some(Value::String(s)) = payload.get(claim) {
                let list = s
                    .split(' ')
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.to_string()))
                    .collect();
                payload.insert(claim.clone(), Value::Array(list));
            }
        }
        Value::Object(payload)
    }
}

/// A claim as a header value (`addJWTClaimToHeader`): strings, numbers and booleans only.
pub(super) fn claim_text(
    payload: &serde_json::Map<String, Value>,
    path: &[String],
) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = payload.get(first)?;
    for k in rest {
        v = v.as_object()?.get(k)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => format!("{f:.6}"),
            _ => n.to_string(),
        }),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}
