use super::*;
use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::route::v3::{route_match, RouteMatch};
use envoy_types::pb::google::protobuf::Empty;
use pb::jwt_provider::JwksSourceSpecifier;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::json;
use std::collections::HashMap;
use token::B64URL;

const NOW: u64 = 1_900_000_000;

/// What the filter decides.
type Outcome = Result<(), Status>;
/// A change to a test provider.
type Edit = dyn Fn(&mut pb::JwtProvider);
const ISS: &str = "https://issuer.example.com";
const ISS2: &str = "https://other.example.com";

/// Signs tokens: a fixed RSA key (ring cannot generate RSA) or generated EC / Ed25519 keys.
enum Signer {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

impl Signer {
    fn rsa() -> Signer {
        let der = include_bytes!("../../../testdata/jwt/rsa2048.pkcs1.der");
        Signer::Rsa(sig::RsaKeyPair::from_der(der).expect("the committed test key parses"))
    }

    fn ec() -> Signer {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 keygen");
        Signer::Ec(sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("own key"))
    }

    fn ed() -> Signer {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        Signer::Ed(sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("own key"))
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: Option<&str>) -> Value {
        let mut k = match self {
            Signer::Rsa(k) => {
                let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "n": B64URL.encode(&c.n), "e": B64URL.encode(&c.e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": B64URL.encode(&p[1..33]),
                       "y": B64URL.encode(&p[33..65])})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(k.public_key().as_ref())})
            }
        };
        if let Some(kid) = kid {
            k["kid"] = json!(kid);
        }
        k
    }

    fn sign(&self, kid: Option<&str>, claims: Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            Signer::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut out)
                    .expect("RSA signing");
                out
            }
            Signer::Ec(k) => k
                .sign(&rng, signed.as_bytes())
                .expect("EC signing")
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", B64URL.encode(signature))
    }
}

fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": ["app"], "exp": NOW + 3600, "iat": NOW,
           "groups": ["admin", "dev"], "scope": "read write"})
}

/// A provider as istiod writes it for a RequestAuthentication rule.
fn provider(issuer: &str, jwks: &str) -> pb::JwtProvider {
    pb::JwtProvider {
        issuer: issuer.into(),
        payload_in_metadata: "payload".into(),
        normalize_payload_in_metadata: Some(pb::jwt_provider::NormalizePayload {
            space_delimited_claims: vec!["permission".into(), "scope".into()],
        }),
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(Specifier::InlineString(jwks.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn req(t: RequiresType) -> pb::JwtRequirement {
    pb::JwtRequirement {
        requires_type: Some(t),
    }
}

fn named(n: &str) -> pb::JwtRequirement {
    req(RequiresType::ProviderName(n.into()))
}

fn any(v: Vec<pb::JwtRequirement>) -> pb::JwtRequirement {
    req(RequiresType::RequiresAny(pb::JwtRequirementOrList {
        requirements: v,
    }))
}

fn allow_missing() -> pb::JwtRequirement {
    req(RequiresType::AllowMissing(Empty {}))
}

/// istiod's requirement: one provider `requires_any [p, allow_missing]`; several
/// `requires_any [p1, …, requires_all [requires_any [p1, allow_missing], …]]`.
fn istio_requirement(names: &[&str]) -> pb::JwtRequirement {
    if let [one] = names {
        return any(vec![named(one), allow_missing()]);
    }
    let mut v: Vec<_> = names.iter().map(|n| named(n)).collect();
    v.push(req(RequiresType::RequiresAll(pb::JwtRequirementAndList {
        requirements: names
            .iter()
            .map(|n| any(vec![named(n), allow_missing()]))
            .collect(),
    })));
    any(v)
}

fn config(
    providers: Vec<(&str, pb::JwtProvider)>,
    requires: pb::JwtRequirement,
) -> pb::JwtAuthentication {
    pb::JwtAuthentication {
        providers: providers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<HashMap<_, _>>(),
        rules: vec![pb::RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(pb::requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    }
}

fn compile(c: &pb::JwtAuthentication) -> JwtAuthnFilter {
    JwtAuthnFilter::compile(c).expect("test configs compile")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("tokens are header-safe"),
    );
    h
}

/// Runs the filter on `GET path` with `headers`; the outcome, headers after and metadata.
fn run(
    f: &JwtAuthnFilter,
    path: &str,
    mut headers: HeaderMap,
) -> (Result<(), Status>, HeaderMap, DynamicMetadata) {
    let mut md = DynamicMetadata::default();
    let r = f.on_request(&http::Method::GET, path, &mut headers, &mut md, NOW);
    (r, headers, md)
}

#[test]
fn istio_single_provider_cases() {
    let rsa = Signer::rsa();
    let other = Signer::ec();
    let set = jwks(vec![rsa.jwk(Some("k1"))]);
    let f = compile(&config(
        vec![("origins-0", provider(ISS, &set))],
        istio_requirement(&["origins-0"]),
    ));
    let with = |c: Value| bearer(&rsa.sign(Some("k1"), c));
    let mut expired = claims(ISS, "alice");
    expired["exp"] = json!(NOW - 61);
    let mut within_skew = claims(ISS, "alice");
    within_skew["exp"] = json!(NOW - 30);
    let mut not_yet = claims(ISS, "alice");
    not_yet["nbf"] = json!(NOW + 120);
    let mut wrong_aud = claims(ISS, "alice");
    wrong_aud["aud"] = json!("someone-else");
    let mut url_aud = claims(ISS, "alice");
    url_aud["aud"] = json!("https://app/");
    let good = rsa.sign(Some("k1"), claims(ISS, "alice"));
    let (h, p, _) = {
        let parts: Vec<&str> = good.split('.').collect();
        (
            parts[0].to_string(),
            parts[1].to_string(),
            parts[2].to_string(),
        )
    };
    let tampered = format!(
        "{h}.{}.{}",
        B64URL.encode(claims(ISS, "mallory").to_string()),
        good.rsplit('.').next().expect("three parts")
    );
    let cases: Vec<(&str, HeaderMap, Result<(), Status>)> = vec![
        ("valid", with(claims(ISS, "alice")), Ok(())),
        ("missing is allowed", HeaderMap::new(), Ok(())),
        ("expired", with(expired), Err(Status::Expired)),
        ("expired within the skew", with(within_skew), Ok(())),
        ("not yet valid", with(not_yet), Err(Status::NotYetValid)),
        (
            "wrong issuer",
            with(claims(ISS2, "alice")),
            Err(Status::UnknownIssuer),
        ),
        (
            "wrong audience",
            with(wrong_aud),
            Err(Status::AudienceNotAllowed),
        ),
        ("audience compared without scheme", with(url_aud), Ok(())),
        (
            "signed by another key with the same kid",
            bearer(&other.sign(Some("k1"), claims(ISS, "alice"))),
            Err(Status::KidAlgMismatch),
        ),
        (
            "tampered payload",
            bearer(&tampered),
            Err(Status::VerificationFail),
        ),
        (
            "unknown kid",
            bearer(&rsa.sign(Some("k2"), claims(ISS, "alice"))),
            Err(Status::KidAlgMismatch),
        ),
        ("garbage", bearer("not-a-jwt"), Err(Status::BadFormat)),
        (
            "bad payload",
            bearer(&format!("{h}.{}.{p}", B64URL.encode("[1]"))),
            Err(Status::PayloadBadJson),
        ),
    ];
    let mut f_aud = config(
        vec![("origins-0", provider(ISS, &set))],
        istio_requirement(&["origins-0"]),
    );
    f_aud
        .providers
        .get_mut("origins-0")
        .expect("configured above")
        .audiences = vec!["app".into()];
    let f_aud = compile(&f_aud);
    for (name, headers, want) in cases {
        let filter = if name.contains("audience") {
            &f_aud
        } else {
            &f
        };
        assert_eq!(run(filter, "/api", headers).0, want, "{name}");
    }
    // A required provider without allow_missing refuses a request without a token.
    let strict = compile(&config(
        vec![("origins-0", provider(ISS, &set))],
        named("origins-0"),
    ));
    assert_eq!(run(&strict, "/", HeaderMap::new()).0, Err(Status::Missed));
    assert_eq!(run(&strict, "/", with(claims(ISS, "alice"))).0, Ok(()));
}

#[test]
fn success_sets_metadata_and_headers() {
    let rsa = Signer::rsa();
    let set = jwks(vec![rsa.jwk(Some("k1"))]);
    let token = rsa.sign(Some("k1"), claims(ISS, "alice"));
    let f = compile(&config(
        vec![("origins-0", provider(ISS, &set))],
        istio_requirement(&["origins-0"]),
    ));
    let (r, headers, md) = run(&f, "/", bearer(&token));
    assert_eq!(r, Ok(()));
    assert!(
        !headers.contains_key(http::header::AUTHORIZATION),
        "forward: false removes the token"
    );
    let payload = md
        .lookup(JWT_AUTHN_NAME, &["payload".into()])
        .expect("payload in metadata");
    assert_eq!(payload["sub"], "alice");
    assert_eq!(
        payload["scope"],
        json!(["read", "write"]),
        "space-delimited claim"
    );
    assert_eq!(payload["groups"], json!(["admin", "dev"]));

    let mut p = provider(ISS, &set);
    p.forward = true;
    p.forward_payload_header = "x-jwt-payload".into();
    p.claim_to_headers = vec![pb::JwtClaimToHeader {
        header_name: "x-jwt-sub".into(),
        claim_name: "sub".into(),
        ..Default::default()
    }];
    let f = compile(&config(
        vec![("origins-0", p)],
        istio_requirement(&["origins-0"]),
    ));
    let (r, headers, _) = run(&f, "/", bearer(&token));
    assert_eq!(r, Ok(()));
    assert!(
        headers.contains_key(http::header::AUTHORIZATION),
        "forward: true keeps it"
    );
    assert_eq!(
        headers["x-jwt-payload"],
        token.split('.').nth(1).expect("payload part")
    );
    assert_eq!(headers["x-jwt-sub"], "alice");
    // Without a token, headers only the filter may set are stripped from the request.
    let mut forged = HeaderMap::new();
    forged.insert("x-jwt-sub", HeaderValue::from_static("root"));
    forged.insert("x-jwt-payload", HeaderValue::from_static("e30"));
    let (r, headers, md) = run(&f, "/", forged);
    assert_eq!(r, Ok(()));
    assert!(!headers.contains_key("x-jwt-sub") && !headers.contains_key("x-jwt-payload"));
    assert!(md.filter(JWT_AUTHN_NAME).is_none(), "no token, no payload");
}

#[test]
fn locations_and_key_types() {
    let (ec, ed, rsa) = (Signer::ec(), Signer::ed(), Signer::rsa());
    // Keys without kid are tried in turn.
    let set = jwks(vec![rsa.jwk(None), ec.jwk(None), ed.jwk(None)]);
    let mut custom = provider(ISS, &set);
    custom.from_headers = vec![pb::JwtHeader {
        name: "X-Jwt".into(),
        value_prefix: "Token ".into(),
    }];
    custom.from_params = vec!["jwt".into()];
    let strict = |p: pb::JwtProvider| compile(&config(vec![("origins-0", p)], named("origins-0")));
    let default_locations = strict(provider(ISS, &set));
    let custom = strict(custom);
    let ec_token = ec.sign(None, claims(ISS, "alice"));
    let ed_token = ed.sign(None, claims(ISS, "alice"));
    let header = |n: &'static str, v: String| {
        let mut h = HeaderMap::new();
        h.insert(n, HeaderValue::from_str(&v).expect("header-safe"));
        h
    };
    let cases: Vec<(&str, &JwtAuthnFilter, String, HeaderMap, Outcome)> = vec![
        (
            "ES256 bearer",
            &default_locations,
            "/".into(),
            bearer(&ec_token),
            Ok(()),
        ),
        (
            "EdDSA bearer",
            &default_locations,
            "/".into(),
            bearer(&ed_token),
            Ok(()),
        ),
        (
            "access_token parameter",
            &default_locations,
            format!("/x?a=1&access_token={ec_token}"),
            HeaderMap::new(),
            Ok(()),
        ),
        (
            "custom header with prefix",
            &custom,
            "/".into(),
            header("x-jwt", format!("Token {ec_token}")),
            Ok(()),
        ),
        (
            "custom header without its prefix",
            &custom,
            "/".into(),
            header("x-jwt", ec_token.clone()),
            Err(Status::Missed),
        ),
        (
            "custom provider ignores Authorization",
            &custom,
            "/".into(),
            bearer(&ec_token),
            Err(Status::Missed),
        ),
        (
            "custom parameter",
            &custom,
            format!("/?jwt={ed_token}"),
            HeaderMap::new(),
            Ok(()),
        ),
        (
            "every token present must be valid",
            &default_locations,
            // `{}` as header: no `alg`.
            "/?access_token=e30.e30.c2ln".into(),
            bearer(&ec_token),
            Err(Status::HeaderBadAlg),
        ),
    ];
    for (name, f, path, headers, want) in cases {
        let got = run(f, &path, headers).0;
        assert_eq!(got, want, "{name}");
    }
    let (_, headers, _) = run(&custom, "/", header("x-jwt", format!("Token {ec_token}")));
    assert!(
        !headers.contains_key("x-jwt"),
        "the custom header is removed too"
    );
}

#[test]
fn two_providers_as_istio_generates() {
    let (a, b) = (Signer::rsa(), Signer::ec());
    let f = compile(&config(
        vec![
            ("origins-0", provider(ISS, &jwks(vec![a.jwk(Some("a"))]))),
            ("origins-1", provider(ISS2, &jwks(vec![b.jwk(Some("b"))]))),
        ],
        istio_requirement(&["origins-0", "origins-1"]),
    ));
    let cases: Vec<(&str, HeaderMap, Result<(), Status>)> = vec![
        (
            "first issuer",
            bearer(&a.sign(Some("a"), claims(ISS, "x"))),
            Ok(()),
        ),
        (
            "second issuer",
            bearer(&b.sign(Some("b"), claims(ISS2, "y"))),
            Ok(()),
        ),
        ("no token", HeaderMap::new(), Ok(())),
        (
            "unconfigured issuer",
            bearer(&a.sign(Some("a"), claims("https://evil", "x"))),
            Err(Status::UnknownIssuer),
        ),
        (
            "second issuer's key for the first",
            bearer(&b.sign(Some("b"), claims(ISS, "x"))),
            Err(Status::KidAlgMismatch),
        ),
    ];
    for (name, headers, want) in cases {
        assert_eq!(run(&f, "/", headers).0, want, "{name}");
    }
}

#[test]
fn refusals_and_cors_preflight() {
    let r = refusal(Status::Missed, "http://app/api");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"http://app/api\""
    );
    let r = refusal(Status::Expired, "http://app/api");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"http://app/api\", error=\"invalid_token\""
    );
    assert_eq!(refusal(Status::AudienceNotAllowed, "x").status(), 403);

    let rsa = Signer::rsa();
    let f = compile(&config(
        vec![("origins-0", provider(ISS, &jwks(vec![rsa.jwk(None)])))],
        named("origins-0"),
    ));
    let mut h = HeaderMap::new();
    h.insert("origin", HeaderValue::from_static("https://web"));
    h.insert(
        "access-control-request-method",
        HeaderValue::from_static("GET"),
    );
    let mut md = DynamicMetadata::default();
    assert_eq!(
        f.on_request(&http::Method::OPTIONS, "/", &mut h, &mut md, NOW),
        Ok(())
    );
    assert_eq!(
        f.on_request(&http::Method::GET, "/", &mut h, &mut md, NOW),
        Err(Status::Missed)
    );
}

#[test]
fn unsupported_and_invalid_config_is_nacked_by_path() {
    let good = jwks(vec![Signer::rsa().jwk(None)]);
    let with = |edit: &dyn Fn(&mut pb::JwtProvider)| {
        let mut p = provider(ISS, &good);
        edit(&mut p);
        JwtAuthnFilter::compile(&config(vec![("origins-0", p)], named("origins-0")))
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(with(&|_| {}), None);
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "providers[origins-0].local_jwks.inline_string: the JWKS is not valid JSON",
            Box::new(|p| {
                p.jwks_source_specifier = provider(ISS, "{not json").jwks_source_specifier;
            }),
        ),
        (
            "providers[origins-0].local_jwks.inline_string: the JWKS has no usable key",
            Box::new(|p| {
                p.jwks_source_specifier =
                    provider(ISS, r#"{"keys":[{"kty":"XYZ"}]}"#).jwks_source_specifier;
            }),
        ),
        (
            "providers[origins-0].remote_jwks: is not supported: the proxy needs the JWKS \
             inlined (local_jwks), as istiod does unless PILOT_JWT_ENABLE_REMOTE_JWKS is set",
            Box::new(|p| {
                p.jwks_source_specifier = Some(JwksSourceSpecifier::RemoteJwks(Default::default()));
            }),
        ),
        (
            "providers[origins-0].require_expiration: is not supported",
            Box::new(|p| p.require_expiration = true),
        ),
    ];
    for (want, edit) in cases {
        let got = with(&*edit).unwrap_or_default();
        assert!(got.starts_with(want), "{got}");
    }
    let e = JwtAuthnFilter::compile(&config(
        vec![("origins-0", provider(ISS, &good))],
        any(vec![named("origins-9"), allow_missing()]),
    ))
    .unwrap_err();
    assert_eq!(
        e.path,
        "rules[0].requires.requires_any.requirements[0].provider_name"
    );
}

/// An ALLOW policy with the metadata matchers istiod writes for
/// `requestPrincipals: ["<ISS>/alice"]` and `when: request.auth.claims[groups]: admin`.
#[allow(deprecated)] // `Identifier::Metadata` is what istiod sends.
fn request_principal_policy() -> crate::http::rbac::RbacFilter {
    use crate::http::rbac::RbacFilter;
    use envoy_types::pb::envoy::config::rbac::v3 as rpb;
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacPb;
    use envoy_types::pb::envoy::r#type::matcher::v3 as mpb;

    let claim = |path: &[&str], value: mpb::value_matcher::MatchPattern| rpb::Principal {
        identifier: Some(rpb::principal::Identifier::Metadata(mpb::MetadataMatcher {
            filter: JWT_AUTHN_NAME.into(),
            path: std::iter::once("payload")
                .chain(path.iter().copied())
                .map(|k| mpb::metadata_matcher::PathSegment {
                    segment: Some(mpb::metadata_matcher::path_segment::Segment::Key(k.into())),
                })
                .collect(),
            value: Some(mpb::ValueMatcher {
                match_pattern: Some(value),
            }),
            invert: false,
        })),
    };
    let exact = |s: &str| mpb::StringMatcher {
        match_pattern: Some(mpb::string_matcher::MatchPattern::Exact(s.into())),
        ..Default::default()
    };
    let string = |s: &str| mpb::value_matcher::MatchPattern::StringMatch(exact(s));
    let one_of = |s: &str| {
        mpb::value_matcher::MatchPattern::ListMatch(Box::new(mpb::ListMatcher {
            match_pattern: Some(mpb::list_matcher::MatchPattern::OneOf(Box::new(
                mpb::ValueMatcher {
                    match_pattern: Some(string(s)),
                },
            ))),
        }))
    };
    let and = |ids: Vec<rpb::Principal>| rpb::Principal {
        identifier: Some(rpb::principal::Identifier::AndIds(rpb::principal::Set {
            ids,
        })),
    };
    RbacFilter::compile(&RbacPb {
        rules: Some(rpb::Rbac {
            action: rpb::rbac::Action::Allow as i32,
            policies: [(
                "ns[default]-policy[jwt]-rule[0]".to_string(),
                rpb::Policy {
                    permissions: vec![rpb::Permission {
                        rule: Some(rpb::permission::Rule::Any(true)),
                    }],
                    principals: vec![and(vec![
                        and(vec![
                            claim(&["iss"], string(ISS)),
                            claim(&["sub"], string("alice")),
                        ]),
                        claim(&["groups"], one_of("admin")),
                    ])],
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("Istio-shaped metadata principals compile")
}

/// RBAC after the JWT filter sees the verified payload.
#[test]
fn rbac_matches_the_verified_payload() {
    use crate::http::rbac::RbacRequest;
    let rbac = request_principal_policy();
    let rsa = Signer::rsa();
    let jwt = compile(&config(
        vec![("origins-0", provider(ISS, &jwks(vec![rsa.jwk(None)])))],
        istio_requirement(&["origins-0"]),
    ));
    let allowed = |c: Option<Value>| {
        let headers = c.map_or_else(HeaderMap::new, |c| bearer(&rsa.sign(None, c)));
        let (r, headers, md) = run(&jwt, "/", headers);
        assert_eq!(r, Ok(()));
        let request = RbacRequest {
            headers: &headers,
            method: "GET",
            path: "/",
            authority: "app",
            scheme: "http",
            destination: "10.0.0.2:80".parse().expect("literal"),
            direct_remote: "10.0.0.1".parse().expect("literal"),
            remote: "10.0.0.1".parse().expect("literal"),
            peer: None,
            server_name: None,
            metadata: &md,
        };
        rbac.check(&request).0
    };
    let mut not_admin = claims(ISS, "alice");
    not_admin["groups"] = json!(["dev"]);
    let mut group_string = claims(ISS, "alice");
    group_string["groups"] = json!("admin");
    assert!(allowed(Some(claims(ISS, "alice"))));
    assert!(!allowed(Some(claims(ISS, "bob"))), "another subject");
    assert!(!allowed(Some(not_admin)), "not in the group");
    assert!(
        !allowed(Some(group_string)),
        "a list matcher does not match a string claim"
    );
    assert!(!allowed(None), "no token, no request principal");
}

/// Through the connection manager: the JWT filter, then RBAC, then the route.
#[tokio::test]
async fn end_to_end_through_the_connection_manager() {
    use crate::http::tests::{hcm_config, start_with, store_with_routes};
    use http_body_util::BodyExt;
    let rsa = Signer::rsa();
    let mut hcm = hcm_config();
    hcm.filters = vec![
        crate::http::HttpFilter::JwtAuthn(std::sync::Arc::new(compile(&config(
            vec![("origins-0", provider(ISS, &jwks(vec![rsa.jwk(Some("k"))])))],
            istio_requirement(&["origins-0"]),
        )))),
        crate::http::HttpFilter::Rbac(std::sync::Arc::new(request_principal_policy())),
    ];
    let store = store_with_routes();
    let (addr, _drain) = start_with(store.clone(), hcm).await;
    let send = |auth: Option<String>| async move {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("listening");
        let (mut s, c) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(c);
        let mut b = http::Request::builder()
            .uri("http://app/direct?q=1")
            .header(http::header::HOST, "app");
        if let Some(a) = auth {
            b = b.header(http::header::AUTHORIZATION, a);
        }
        let resp = s
            .send_request(
                b.body(http_body_util::Empty::<bytes::Bytes>::new())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, www, String::from_utf8_lossy(&body).into_owned())
    };
    // The system clock: these tokens are checked against now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = |sub: &str, exp: u64| {
        let mut c = claims(ISS, sub);
        c["exp"] = json!(exp);
        format!("Bearer {}", rsa.sign(Some("k"), c))
    };
    let (status, _, body) = send(Some(token("alice", now + 600))).await;
    assert_eq!(
        (status, body.as_str()),
        (418, "teapot"),
        "valid token, allowed principal"
    );
    let (status, _, body) = send(Some(token("bob", now + 600))).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "RBAC: access denied"),
        "other principal"
    );
    let (status, _, body) = send(None).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "RBAC: access denied"),
        "no token"
    );
    let (status, www, body) = send(Some(token("alice", now - 3600))).await;
    assert_eq!((status, body.as_str()), (401, "Jwt is expired"));
    assert_eq!(
        www.as_deref(),
        Some("Bearer realm=\"http://app/direct\", error=\"invalid_token\"")
    );
    let forged = Signer::ec().sign(Some("k"), claims(ISS, "alice"));
    let (status, _, body) = send(Some(format!("Bearer {forged}"))).await;
    assert_eq!(
        (status, body.as_str()),
        (401, "Jwks doesn't have key to match kid or alg from Jwt"),
        "wrongly signed"
    );
    let stats = store.stats().http("test");
    assert_eq!(
        (stats.jwt_authn_allowed.get(), stats.jwt_authn_denied.get()),
        (3, 2)
    );
    assert_eq!((stats.rbac_allowed.get(), stats.rbac_denied.get()), (1, 2));
}
