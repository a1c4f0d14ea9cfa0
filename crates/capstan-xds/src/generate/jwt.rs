//! RequestAuthentication → Envoy's JWT filter (`envoy.filters.http.jwt_authn`), as istiod's
//! `convertToEnvoyJwtConfig` (pilot/pkg/security/authn/policy_applier.go) builds it: one
//! provider `origins-<i>` per JWT rule (the rules of every applicable policy, sorted by issuer),
//! the verified payload kept in the filter's dynamic metadata under `payload` (what the RBAC
//! metadata matchers of `requestPrincipals` and `request.auth.*` read, [`super::authz`]), keys
//! inlined (`local_jwks`): the rule's `jwks` as given, else what the control plane fetched from
//! its `jwksUri`, else istiod's fake key set so that tokens are refused until the keys arrive.
//!
//! A request without a token passes (RequestAuthentication only rejects invalid tokens;
//! AuthorizationPolicy requires one): with one provider the requirement is `provider OR
//! allow_missing`; with several, `p1 OR .. OR pn OR AND(p1 OR allow_missing, ..)`, the outer
//! ORs covering providers that read the same header.

use crate::context::{JwksKeys, JwksSource, FAKE_JWKS};
use capstan_api::security::JwtRule;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::route::v3::{route_match, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider, jwt_requirement, requirement_rule, JwtAuthentication, JwtClaimToHeader,
    JwtHeader, JwtProvider, JwtRequirement, JwtRequirementAndList, JwtRequirementOrList,
    RequirementRule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, Empty};
use std::collections::{BTreeSet, HashMap};

/// The JWT filter's name (istiod's `EnvoyJwtFilterName`); RBAC metadata matchers name it.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The dynamic-metadata key of the verified payload (istiod's `EnvoyJwtFilterPayload`).
pub const JWT_PAYLOAD_KEY: &str = "payload";

/// The JWT filter for a workload validating `rules` (already merged and sorted by issuer),
/// with the control plane's fetched `keys`; None when there is no rule. `clear_route_cache`
/// for gateways (istiod's `JwtFilter(proxy.Type != SidecarProxy)`): their routes may match
/// the claim headers the filter adds, so the route is picked again after it.
pub fn jwt_filter(
    rules: &[JwtRule],
    keys: &JwksKeys,
    clear_route_cache: bool,
) -> Option<hcm::HttpFilter> {
    let config = jwt_authentication(rules, keys, clear_route_cache)?;
    Some(hcm::HttpFilter {
        name: JWT_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(jwt_any(&config))),
        ..hcm::HttpFilter::default()
    })
}

/// istiod's `buildSpaceDelimitedClaims`: `permission` and `scope` always, plus the rule's
/// own, deduplicated and sorted.
fn space_delimited_claims(rule: &JwtRule) -> Vec<String> {
    let mut claims: BTreeSet<String> = ["permission", "scope"].map(String::from).into();
    claims.extend(rule.space_delimited_claims.iter().cloned());
    claims.into_iter().collect()
}

/// The inline JWKS of a rule: its `jwks`, the fetched keys of its source, or the fake set.
fn local_jwks(rule: &JwtRule, keys: &JwksKeys) -> String {
    if !rule.jwks.is_empty() {
        return rule.jwks.clone();
    }
    JwksSource::of(rule)
        .and_then(|s| keys.get(&s))
        .cloned()
        .unwrap_or_else(|| FAKE_JWKS.to_string())
}

fn provider(rule: &JwtRule, keys: &JwksKeys, clear_route_cache: bool) -> JwtProvider {
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        forward_payload_header: rule.output_payload_to_header.clone(),
        payload_in_metadata: JWT_PAYLOAD_KEY.into(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: space_delimited_claims(rule),
        }),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..JwtClaimToHeader::default()
            })
            .collect(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(local_jwks(rule, keys))),
            ..DataSource::default()
        })),
        clear_route_cache,
        ..JwtProvider::default()
    }
}

fn provider_name(name: &str) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
    }
}

fn requires_any(requirements: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList { requirements },
        )),
    }
}

/// The filter config istiod builds for `rules`; None when there is none.
pub fn jwt_authentication(
    rules: &[JwtRule],
    keys: &JwksKeys,
    clear_route_cache: bool,
) -> Option<JwtAuthentication> {
    if rules.is_empty() {
        return None;
    }
    let mut providers = HashMap::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule, keys, clear_route_cache));
        inner_and.push(requires_any(vec![
            provider_name(&name),
            JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
            },
        ]));
        outer_or.push(provider_name(&name));
    }
    let requires = if inner_and.len() == 1 {
        inner_and.remove(0)
    } else {
        outer_or.push(JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
                JwtRequirementAndList {
                    requirements: inner_and,
                },
            )),
        });
        requires_any(outer_or)
    };
    Some(JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..RouteMatch::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..JwtAuthentication::default()
    })
}

/// The config packed with its providers in name order. prost encodes a map in `HashMap`
/// order, which would change the listener's bytes (and version) from one push to the next;
/// concatenated encodings of one-entry messages decode as the merged map.
fn jwt_any(config: &JwtAuthentication) -> Any {
    use prost::Message;
    let mut names: Vec<&String> = config.providers.keys().collect();
    names.sort();
    let mut value = Vec::new();
    for name in names {
        JwtAuthentication {
            providers: HashMap::from([(name.clone(), config.providers[name].clone())]),
            ..JwtAuthentication::default()
        }
        .encode(&mut value)
        .expect("a Vec grows as needed");
    }
    JwtAuthentication {
        providers: HashMap::new(),
        ..config.clone()
    }
    .encode(&mut value)
    .expect("a Vec grows as needed");
    Any {
        type_url: <JwtAuthentication as prost::Name>::type_url(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::security::{ClaimToHeader, JwtHeader as ApiHeader};
    use prost::Message;

    fn rule(issuer: &str) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            jwks_uri: format!("{issuer}/jwks"),
            ..JwtRule::default()
        }
    }

    fn decode(f: &hcm::HttpFilter) -> JwtAuthentication {
        assert_eq!(f.name, JWT_FILTER);
        let Some(hcm::http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
            panic!("typed config")
        };
        assert_eq!(
            a.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
        );
        JwtAuthentication::decode(a.value.as_slice()).expect("a JwtAuthentication")
    }

    fn inline(p: &JwtProvider) -> &str {
        match &p.jwks_source_specifier {
            Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..
            })) => s,
            other => panic!("inline JWKS expected, got {other:?}"),
        }
    }

    /// Requirements as text: `p` a provider, `missing` allow_missing, any(..), all(..).
    fn req(r: &JwtRequirement) -> String {
        use jwt_requirement::RequiresType as R;
        match r.requires_type.as_ref().expect("a requirement type") {
            R::ProviderName(n) => n.clone(),
            R::AllowMissing(_) => "missing".into(),
            R::RequiresAny(l) => format!(
                "any({})",
                l.requirements.iter().map(req).collect::<Vec<_>>().join(",")
            ),
            R::RequiresAll(l) => format!(
                "all({})",
                l.requirements.iter().map(req).collect::<Vec<_>>().join(",")
            ),
            other => format!("{other:?}"),
        }
    }

    fn requirement(c: &JwtAuthentication) -> String {
        assert_eq!(c.rules.len(), 1);
        let r = &c.rules[0];
        assert_eq!(
            r.r#match.as_ref().and_then(|m| m.path_specifier.clone()),
            Some(route_match::PathSpecifier::Prefix("/".into()))
        );
        match &r.requirement_type {
            Some(requirement_rule::RequirementType::Requires(q)) => req(q),
            other => panic!("requires expected, got {other:?}"),
        }
    }

    #[test]
    fn no_rule_no_filter() {
        assert!(jwt_filter(&[], &JwksKeys::new(), false).is_none());
    }

    /// One provider: `provider OR allow_missing`; every JwtRule field lands where istiod puts it.
    #[test]
    fn one_rule_maps_every_field() {
        let r = JwtRule {
            issuer: "https://issuer.example".into(),
            audiences: vec!["a1".into(), "a2".into()],
            jwks: r#"{"keys":[]}"#.into(),
            from_headers: vec![ApiHeader {
                name: "x-jwt".into(),
                prefix: "Bearer ".into(),
            }],
            from_params: vec!["tok".into()],
            from_cookies: vec!["session".into()],
            output_payload_to_header: "x-payload".into(),
            forward_original_token: true,
            output_claim_to_headers: vec![ClaimToHeader {
                header: "x-sub".into(),
                claim: "sub".into(),
            }],
            space_delimited_claims: vec!["roles".into(), "scope".into()],
            ..JwtRule::default()
        };
        let c = decode(&jwt_filter(&[r], &JwksKeys::new(), false).expect("a filter"));
        assert!(c.bypass_cors_preflight);
        assert_eq!(requirement(&c), "any(origins-0,missing)");
        let p = &c.providers["origins-0"];
        assert_eq!(p.issuer, "https://issuer.example");
        assert_eq!(p.audiences, vec!["a1", "a2"]);
        assert!(p.forward);
        assert_eq!(p.forward_payload_header, "x-payload");
        assert_eq!(p.payload_in_metadata, "payload");
        assert_eq!(
            p.normalize_payload_in_metadata
                .as_ref()
                .expect("normalized")
                .space_delimited_claims,
            vec!["permission", "roles", "scope"]
        );
        assert_eq!(
            (
                p.claim_to_headers[0].header_name.as_str(),
                p.claim_to_headers[0].claim_name.as_str()
            ),
            ("x-sub", "sub")
        );
        assert_eq!(
            (
                p.from_headers[0].name.as_str(),
                p.from_headers[0].value_prefix.as_str()
            ),
            ("x-jwt", "Bearer ")
        );
        assert_eq!(p.from_params, vec!["tok"]);
        assert_eq!(p.from_cookies, vec!["session"]);
        assert_eq!(inline(p), r#"{"keys":[]}"#, "inline jwks is used as is");
    }

    /// Several providers: `p0 OR p1 OR p2 OR AND(p0 OR missing, p1 OR missing, p2 OR missing)`.
    #[test]
    fn several_rules_or_providers_and_and_their_optional_forms() {
        let rules = [rule("a"), rule("b"), rule("c")];
        let c = decode(&jwt_filter(&rules, &JwksKeys::new(), false).expect("a filter"));
        assert_eq!(
            requirement(&c),
            "any(origins-0,origins-1,origins-2,all(any(origins-0,missing),any(origins-1,missing),any(origins-2,missing)))"
        );
        let mut names: Vec<&String> = c.providers.keys().collect();
        names.sort();
        assert_eq!(names, ["origins-0", "origins-1", "origins-2"]);
        assert_eq!(c.providers["origins-1"].issuer, "b");
        let defaults = &c.providers["origins-0"];
        assert_eq!(
            defaults
                .normalize_payload_in_metadata
                .as_ref()
                .expect("normalized")
                .space_delimited_claims,
            vec!["permission", "scope"]
        );
    }

    /// Fetched keys are inlined; a source not fetched (yet, or failing) gets the fake set.
    #[test]
    fn fetched_keys_else_the_fake_jwks() {
        let fetched = r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB"}]}"#;
        let keys = JwksKeys::from([(JwksSource::Uri("a/jwks".into()), fetched.to_string())]);
        let c = decode(&jwt_filter(&[rule("a"), rule("b")], &keys, false).expect("a filter"));
        assert_eq!(inline(&c.providers["origins-0"]), fetched);
        assert_eq!(inline(&c.providers["origins-1"]), FAKE_JWKS);
        let discovery = JwtRule {
            issuer: "https://idp".into(),
            ..JwtRule::default()
        };
        let keys = JwksKeys::from([(
            JwksSource::Discovery("https://idp".into()),
            fetched.to_string(),
        )]);
        let c = decode(&jwt_filter(&[discovery], &keys, false).expect("a filter"));
        assert_eq!(inline(&c.providers["origins-0"]), fetched);
    }

    /// Gateways re-pick the route after the filter (istiod's `clearRouteCache` for
    /// non-sidecars); sidecars do not.
    #[test]
    fn gateways_clear_the_route_cache() {
        let rules = [rule("a"), rule("b")];
        for (gateway, want) in [(true, true), (false, false)] {
            let c = decode(&jwt_filter(&rules, &JwksKeys::new(), gateway).expect("a filter"));
            assert!(c.providers.values().all(|p| p.clear_route_cache == want));
        }
    }

    /// Providers are a map: the bytes must not follow `HashMap` order.
    #[test]
    fn encoding_is_deterministic_and_complete() {
        let rules: Vec<JwtRule> = (0..12).map(|i| rule(&format!("iss{i:02}"))).collect();
        let first = jwt_filter(&rules, &JwksKeys::new(), false).expect("a filter");
        for _ in 0..8 {
            assert_eq!(
                jwt_filter(&rules, &JwksKeys::new(), false).as_ref(),
                Some(&first)
            );
        }
        let c = decode(&first);
        assert_eq!(c.providers.len(), 12);
        assert_eq!(
            c,
            jwt_authentication(&rules, &JwksKeys::new(), false).unwrap()
        );
    }
}
