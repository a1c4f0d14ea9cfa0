//! Envoy's JWT authentication filter (`envoy.filters.http.jwt_authn`) as istiod generates it
//! from RequestAuthentication: providers `origins-<i>` with an issuer, audiences, token
//! locations and an inline JWKS; one rule for prefix `/` whose requirement accepts a valid token
//! of any provider or no token at all, and refuses an invalid one.
//!
//! A verified token's payload goes into the request's dynamic metadata under
//! `payload_in_metadata` (where RBAC's metadata matchers read `requestPrincipals` and
//! `request.auth.claims`); a refusal is Envoy's local reply (401, or 403 for a wrong audience)
//! with its status string as body and a `www-authenticate: Bearer realm=...` header.
//!
//! - [`token`]: JWT and JWKS parsing, key selection and signature check;
//! - [`extract`]: where tokens are read; [`provider`]: one provider's config and effects.

pub mod extract;
pub mod provider;
pub mod token;

use super::metadata::DynamicMetadata;
use crate::route::matcher::RouteMatcher;
use crate::CompileError;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as pb;
use extract::{Extractor, Found};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use pb::jwt_requirement::RequiresType;
pub use provider::Provider;
use provider::{claim_text, sanitize_audience};
use serde_json::Value;
use token::{Jwt, Status};

/// The filter's type URL.
pub const JWT_AUTHN_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
/// The filter's name: its dynamic-metadata namespace.
pub const JWT_AUTHN_NAME: &str = "envoy.filters.http.jwt_authn";

/// A compiled `JwtRequirement`.
#[derive(Debug, Clone)]
enum Requirement {
    /// `provider_name` / `provider_and_audiences` (audiences replacing the provider's).
    Provider {
        index: usize,
        audiences: Option<Vec<String>>,
        extractor: Extractor,
    },
    /// `requires_any`: its regular children and the bypass flags found among them.
    Any {
        children: Vec<Requirement>,
        allow_missing: bool,
        allow_failed: bool,
    },
    /// `requires_all`.
    All(Vec<Requirement>),
    /// `allow_missing`: tokens of any provider must be valid, none is fine.
    AllowMissing(Extractor),
    /// `allow_missing_or_failed`: tokens are verified (payloads kept), nothing is refused.
    AllowFailed(Extractor),
    /// An empty requirement.
    AllowAll,
}

/// A compiled `JwtAuthentication`.
#[derive(Debug, Clone)]
pub struct JwtAuthnFilter {
    /// Providers by name.
    pub providers: Vec<Provider>,
    rules: Vec<(RouteMatcher, Option<Requirement>)>,
    bypass_cors_preflight: bool,
    sanitize: Vec<HeaderName>,
}

/// What verifying one request left behind.
struct Run<'a> {
    headers: &'a mut HeaderMap,
    path: &'a str,
    now: u64,
    /// `(metadata key, value)` of each verified token, written when the request passes.
    extracted: Vec<(String, Value)>,
}

impl JwtAuthnFilter {
    /// Compiles the filter's typed config.
    pub fn compile(f: &pb::JwtAuthentication) -> Result<JwtAuthnFilter, CompileError> {
        let unsupported = [
            ("filter_state_rules", f.filter_state_rules.is_some()),
            ("strip_failure_response", f.strip_failure_response),
            ("stat_prefix", !f.stat_prefix.is_empty()),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CompileError::new(*field, "is not supported"));
        }
        // Sorted by name: the order `allow_missing` looks a provider up by issuer.
        let mut names: Vec<&String> = f.providers.keys().collect();
        names.sort();
        let providers = names
            .iter()
            .map(|n| {
                Provider::compile(n, &f.providers[*n])
                    .map_err(|e| e.within(&format!("providers[{n}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sanitize = Vec::new();
        for p in &providers {
            sanitize.extend(p.forward_payload_header.iter().cloned());
            sanitize.extend(p.claim_to_headers.iter().map(|(h, _)| h.clone()));
        }
        let mut filter = JwtAuthnFilter {
            providers,
            rules: Vec::new(),
            bypass_cors_preflight: f.bypass_cors_preflight,
            sanitize,
        };
        for (i, r) in f.rules.iter().enumerate() {
            let at = |e: CompileError| e.within(&format!("rules[{i}]"));
            let matcher = match &r.r#match {
                Some(m) => RouteMatcher::compile(m).map_err(|e| at(e.within("match")))?,
                None => return Err(at(CompileError::new("match", "is required"))),
            };
            use pb::requirement_rule::RequirementType;
            let requirement = match &r.requirement_type {
                None => None,
                Some(RequirementType::Requires(req)) => Some(
                    filter
                        .requirement(req)
                        .map_err(|e| at(e.within("requires")))?,
                ),
                Some(RequirementType::RequirementName(n)) => match f.requirement_map.get(n) {
                    Some(req) => Some(
                        filter
                            .requirement(req)
                            .map_err(|e| at(e.within(&format!("requirement_map[{n}]"))))?,
                    ),
                    None => {
                        return Err(at(CompileError::new(
                            "requirement_name",
                            format!("{n:?} is not in requirement_map"),
                        )))
                    }
                },
            };
            filter.rules.push((matcher, requirement));
        }
        Ok(filter)
    }

    fn extractor_of(&self, indices: impl IntoIterator<Item = usize>) -> Extractor {
        let mut e = Extractor::default();
        for i in indices {
            let p = &self.providers[i];
            e.add(&p.issuer, &p.locations);
        }
        e
    }

    fn requirement(&self, r: &pb::JwtRequirement) -> Result<Requirement, CompileError> {
        let provider = |name: &str| {
            self.providers
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| {
                    CompileError::new(
                        "provider_name",
                        format!("required provider {name:?} is not configured"),
                    )
                })
        };
        let all = || self.extractor_of(0..self.providers.len());
        Ok(match &r.requires_type {
            Some(RequiresType::ProviderName(n)) => {
                let index = provider(n)?;
                Requirement::Provider {
                    index,
                    audiences: None,
                    extractor: self.extractor_of([index]),
                }
            }
            Some(RequiresType::ProviderAndAudiences(pa)) => {
                let index =
                    provider(&pa.provider_name).map_err(|e| e.within("provider_and_audiences"))?;
                Requirement::Provider {
                    index,
                    audiences: Some(
                        pa.audiences
                            .iter()
                            .map(|a| sanitize_audience(a).to_string())
                            .collect(),
                    ),
                    extractor: self.extractor_of([index]),
                }
            }
            Some(RequiresType::RequiresAny(l)) => {
                let (mut allow_missing, mut allow_failed) = (false, false);
                let mut children = Vec::new();
                for (i, c) in l.requirements.iter().enumerate() {
                    match &c.requires_type {
                        Some(RequiresType::AllowMissing(_)) => allow_missing = true,
                        Some(RequiresType::AllowMissingOrFailed(_)) => allow_failed = true,
                        _ => {
                            children.push(self.requirement(c).map_err(|e| {
                                e.within(&format!("requires_any.requirements[{i}]"))
                            })?)
                        }
                    }
                }
                if children.is_empty() && allow_failed {
                    children.push(Requirement::AllowFailed(all()));
                } else if children.is_empty() && allow_missing {
                    children.push(Requirement::AllowMissing(all()));
                }
                Requirement::Any {
                    children,
                    allow_missing,
                    allow_failed,
                }
            }
            Some(RequiresType::RequiresAll(l)) => Requirement::All(
                l.requirements
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        self.requirement(c)
                            .map_err(|e| e.within(&format!("requires_all.requirements[{i}]")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(RequiresType::AllowMissing(_)) => Requirement::AllowMissing(all()),
            Some(RequiresType::AllowMissingOrFailed(_)) => Requirement::AllowFailed(all()),
            Some(RequiresType::ExtractOnlyWithoutValidation(_)) => {
                return Err(CompileError::new(
                    "extract_only_without_validation",
                    "is not supported",
                ))
            }
            None => Requirement::AllowAll,
        })
    }

    /// Runs the filter on a request: strips headers only the filter may set, finds the rule,
    /// verifies its requirement. On success the verified payloads are in `metadata` and the
    /// headers are as the providers say (token removed unless `forward`, payload and claim
    /// headers added); on failure, the status to refuse the request with.
    pub fn on_request(
        &self,
        method: &http::Method,
        path_and_query: &str,
        headers: &mut HeaderMap,
        metadata: &mut DynamicMetadata,
        now: u64,
    ) -> Result<(), Status> {
        for h in &self.sanitize {
            headers.remove(h);
        }
        if self.bypass_cors_preflight && is_cors_preflight(method, headers) {
            return Ok(());
        }
        let Some((_, requirement)) = self
            .rules
            .iter()
            .find(|(m, _)| m.matches(path_and_query, headers))
        else {
            return Ok(());
        };
        let Some(requirement) = requirement else {
            return Ok(());
        };
        let mut run = Run {
            headers,
            path: path_and_query,
            now,
            extracted: Vec::new(),
        };
        self.evaluate(requirement, &mut run)?;
        for (key, value) in run.extracted {
            metadata.set(JWT_AUTHN_NAME, &key, value);
        }
        Ok(())
    }

    fn evaluate(&self, r: &Requirement, run: &mut Run<'_>) -> Result<(), Status> {
        match r {
            Requirement::AllowAll => Ok(()),
            Requirement::Provider {
                index,
                audiences,
                extractor,
            } => {
                let tokens = extractor.extract(run.headers, run.path);
                if tokens.is_empty() {
                    return Err(Status::Missed);
                }
                // Envoy verifies the last location first and stops at the first failure: every
                // token present must be valid.
                for t in tokens.iter().rev() {
                    self.verify(t, Some(*index), audiences.as_deref(), run)?;
                }
                Ok(())
            }
            Requirement::AllowMissing(extractor) => {
                for t in extractor.extract(run.headers, run.path).iter().rev() {
                    self.verify(t, None, None, run)?;
                }
                Ok(())
            }
            Requirement::AllowFailed(extractor) => {
                for t in extractor.extract(run.headers, run.path).iter().rev() {
                    let _ = self.verify(t, None, None, run);
                }
                Ok(())
            }
            Requirement::All(children) => {
                for c in children {
                    self.evaluate(c, run)?;
                }
                Ok(())
            }
            Requirement::Any {
                children,
                allow_missing,
                allow_failed,
            } => {
                let mut statuses = Vec::with_capacity(children.len());
                for c in children {
                    match self.evaluate(c, run) {
                        Ok(()) => return Ok(()),
                        Err(s) => statuses.push(s),
                    }
                }
                // AnyVerifierImpl: prefer a real failure, then an unknown issuer, then missing.
                let mut status = Status::Missed;
                for s in statuses {
                    if !matches!(s, Status::Missed | Status::UnknownIssuer)
                        || status == Status::Missed
                    {
                        status = s;
                    }
                }
                if *allow_failed || (*allow_missing && status == Status::Missed) {
                    return Ok(());
                }
                Err(status)
            }
        }
    }

    /// One token (`AuthenticatorImpl::startVerify` … `handleGoodJwt`).
    fn verify(
        &self,
        found: &Found,
        provider: Option<usize>,
        audiences: Option<&[String]>,
        run: &mut Run<'_>,
    ) -> Result<(), Status> {
        let jwt = Jwt::parse(&found.token)?;
        if !found.issuers.allows(&jwt.iss) {
            return Err(Status::UnknownIssuer);
        }
        let p = match provider {
            Some(i) => &self.providers[i],
            None => self
                .providers
                .iter()
                .find(|p| p.issuer == jwt.iss)
                .or_else(|| self.providers.iter().find(|p| p.issuer.is_empty()))
                .ok_or(Status::UnknownIssuer)?,
        };
        jwt.check_time(run.now, p.clock_skew)?;
        let allowed = audiences.unwrap_or(&p.audiences);
        if !allowed.is_empty()
            && !jwt
                .audiences
                .iter()
                .any(|a| allowed.iter().any(|x| x == sanitize_audience(a)))
        {
            return Err(Status::AudienceNotAllowed);
        }
        jwt.verify(&p.jwks)?;
        if let Some(h) = &p.forward_payload_header {
            let mut v = jwt.payload_b64.clone();
            if p.pad_forward_payload_header {
                while v.len() % 4 != 0 {
                    v.push('=');
                }
            }
            if let Ok(v) = HeaderValue::from_str(&v) {
                run.headers.insert(h.clone(), v);
            }
        }
        for (h, path) in &p.claim_to_headers {
            if let Some(v) =
                claim_text(&jwt.payload, path).and_then(|v| HeaderValue::from_str(&v).ok())
            {
                run.headers.insert(h.clone(), v);
            }
        }
        if !p.forward {
            if let Some(h) = &found.header {
                run.headers.remove(h);
            }
        }
        if !p.header_in_metadata.is_empty() {
            run.extracted.push((
                p.header_in_metadata.clone(),
                Value::Object(jwt.header.clone()),
            ));
        }
        if !p.payload_in_metadata.is_empty() {
            run.extracted
                .push((p.payload_in_metadata.clone(), p.normalized_payload(&jwt)));
        }
        Ok(())
    }
}

fn is_cors_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    let non_empty = |h: &str| headers.get(h).is_some_and(|v| !v.is_empty());
    method == http::Method::OPTIONS
        && non_empty("origin")
        && non_empty("access-control-request-method")
}

/// Envoy's refusal: 401 (403 when the audience is wrong) with the status string as body and
/// `www-authenticate: Bearer realm="<scheme>://<host><path>"` (plus `error="invalid_token"`
/// unless the token is missing). `uri` is the request's URL without its query.
pub fn refusal(status: Status, uri: &str) -> http::Response<super::BoxBody> {
    let code = if status == Status::AudienceNotAllowed {
        403
    } else {
        401
    };
    let mut r = super::local_reply(code, status.message());
    let mut value = format!("Bearer realm=\"{uri}\"");
    if status != Status::Missed {
        value.push_str(", error=\"invalid_token\"");
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    r
}

#[cfg(test)]
mod tests;
