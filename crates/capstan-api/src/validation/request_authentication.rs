//! `RequestAuthentication` validation, following Istio's `ValidateRequestAuthentication` and
//! `validateJwtRule`.

use super::authorization_policy::validate_policy_targets;
use super::common::{check, validate_duration, validate_header_name};
use super::{Context, Validate};
use crate::path::Path;
use crate::report::Report;
use crate::security::{JwtRule, RequestAuthentication};

/// Istio's `security.ParseJwksURI`: an `http` or `https` URL with an optional numeric port.
fn validate_jwks_uri(uri: &str) -> Result<(), String> {
    if uri.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("jwksUri {uri:?} contains invalid characters"));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("URI scheme \"\" is not supported".into());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("URI scheme {scheme:?} is not supported"));
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(format!(
            "jwksUri {uri:?} must be an absolute URL (scheme://host/path)"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((_, after)) => after.strip_prefix(':'),
            None => return Err(format!("jwksUri {uri:?}: missing ']' in host")),
        }
    } else {
        host_port.rsplit_once(':').map(|(_, p)| p)
    };
    if let Some(port) = port {
        if !port.is_empty()
            && (!port.bytes().all(|b| b.is_ascii_digit())
                || port.len() > 5
                || port.parse::<u32>().map_or(true, |p| p > 65535))
        {
            return Err(format!("jwksUri {uri:?}: invalid port {port:?}"));
        }
    }
    Ok(())
}

/// A JSON Web Key or key set, as `jwk.Parse` accepts: an object with `kty`, or with `keys`
/// holding such objects.
fn validate_jwks(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("jwks parse error: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("jwks parse error: expected a JSON object".into());
    };
    let key_ok = |k: &serde_json::Value| {
        k.get("kty")
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.is_empty())
    };
    if let Some(keys) = obj.get("keys") {
        let Some(keys) = keys.as_array() else {
            return Err("jwks parse error: \"keys\" must be a list".into());
        };
        if let Some(i) = keys.iter().position(|k| !key_ok(k)) {
            return Err(format!("jwks parse error: keys[{i}] has no \"kty\""));
        }
        Ok(())
    } else if key_ok(&value) {
        Ok(())
    } else {
        Err("jwks parse error: expected a key (with \"kty\") or a key set (with \"keys\")".into())
    }
}

fn validate_jwt_rule(rule: &JwtRule, path: &Path<'_>, out: &mut Report) {
    let aud = path.field("audiences");
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            out.error(&aud.index(i), "audience must be non-empty string");
        }
    }
    if rule.issuer.is_empty() && rule.jwks_uri.is_empty() {
        out.error(
            &path.field("issuer"),
            "issuer or jwksUri must be non-empty string",
        );
    }
    if !rule.jwks_uri.is_empty() {
        check(
            validate_jwks_uri(&rule.jwks_uri),
            &path.field("jwksUri"),
            out,
        );
    }
    if !rule.jwks.is_empty() {
        check(validate_jwks(&rule.jwks), &path.field("jwks"), out);
        if !rule.jwks_uri.is_empty() {
            out.warn(
                &path.field("jwks"),
                "only one of jwksUri and jwks should be set; jwks is used and jwksUri ignored",
            );
        }
    }
    let headers = path.field("fromHeaders");
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            out.error(
                &headers.index(i).field("name"),
                "location header name must be non-empty string",
            );
        }
    }
    let params = path.field("fromParams");
    for (i, p) in rule.from_params.iter().enumerate() {
        if p.is_empty() {
            out.error(&params.index(i), "location query must be non-empty string");
        }
    }
    let cookies = path.field("fromCookies");
    for (i, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            out.error(&cookies.index(i), "cookie name must be non-empty string");
        }
    }
    let claims = path.field("outputClaimToHeaders");
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let p = claims.index(i);
        if c.claim.is_empty() || c.header.is_empty() {
            out.error(
                &p,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
            continue;
        }
        check(validate_header_name(&c.header), &p.field("header"), out);
    }
    if let Some(t) = &rule.timeout {
        check(validate_duration(t), &path.field("timeout"), out);
    }
}

impl Validate for RequestAuthentication {
    fn validate(&self, _cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        validate_policy_targets(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            &spec,
            out,
        );
        let rules = spec.field("jwtRules");
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            validate_jwt_rule(rule, &rules.index(i), out);
        }
    }
}
