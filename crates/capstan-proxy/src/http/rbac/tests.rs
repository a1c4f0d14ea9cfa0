use super::*;
use crate::identity::PeerCert;
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher as HeaderPb};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, PathMatcher, RegexMatcher, StringMatcher as SmPb,
};

fn exact(s: &str) -> SmPb {
    SmPb {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

fn method(m: &str) -> pb::Permission {
    pb::Permission {
        rule: Some(pb::permission::Rule::Header(HeaderPb {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
                m,
            ))),
            ..Default::default()
        })),
    }
}

fn path_prefix(p: &str) -> pb::Permission {
    pb::Permission {
        rule: Some(pb::permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(SmPb {
                match_pattern: Some(MatchPattern::Prefix(p.into())),
                ..Default::default()
            })),
        })),
    }
}

fn or_rules(v: Vec<pb::Permission>) -> pb::Permission {
    pb::Permission {
        rule: Some(pb::permission::Rule::OrRules(pb::permission::Set {
            rules: v,
        })),
    }
}

fn and_rules(v: Vec<pb::Permission>) -> pb::Permission {
    pb::Permission {
        rule: Some(pb::permission::Rule::AndRules(pb::permission::Set {
            rules: v,
        })),
    }
}

fn principal_name(m: SmPb) -> pb::Principal {
    pb::Principal {
        identifier: Some(pb::principal::Identifier::Authenticated(
            pb::principal::Authenticated {
                principal_name: Some(m),
            },
        )),
    }
}

fn regex(r: &str) -> SmPb {
    SmPb {
        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn filter(action: pb::rbac::Action, policies: Vec<(&str, pb::Policy)>) -> RbacFilter {
    RbacFilter::compile(&RbacFilterPb {
        rules: Some(pb::Rbac {
            action: action as i32,
            policies: policies
                .into_iter()
                .map(|(n, p)| (n.to_string(), p))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap()
}

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const EVIL: &str = "spiffe://cluster.local/ns/evil/sa/default";

fn request<'a>(
    headers: &'a http::HeaderMap,
    method: &'a str,
    path: &'a str,
    peer: Option<&'a PeerCert>,
) -> RbacRequest<'a> {
    RbacRequest {
        headers,
        method,
        path,
        authority: "reviews:9080",
        scheme: "http",
        destination: "10.0.0.2:9080".parse().unwrap(),
        direct_remote: "10.0.0.1".parse().unwrap(),
        remote: "10.0.0.1".parse().unwrap(),
        peer,
        server_name: None,
        metadata: &NO_METADATA,
    }
}

static NO_METADATA: std::sync::LazyLock<DynamicMetadata> =
    std::sync::LazyLock::new(DynamicMetadata::default);

fn peer(id: &str) -> PeerCert {
    PeerCert {
        hash: "00".into(),
        uris: vec![id.into()],
        dns: vec![],
        subject: String::new(),
        chain: vec![],
    }
}

#[test]
fn istio_shaped_allow_and_deny() {
    // AuthorizationPolicy ALLOW from principals [cluster.local/ns/default/sa/sleep] to
    // methods [GET] paths [/api*].
    let allow = filter(
        pb::rbac::Action::Allow,
        vec![(
            "ns[default]-policy[allow-get]-rule[0]",
            pb::Policy {
                permissions: vec![and_rules(vec![
                    or_rules(vec![method("GET")]),
                    or_rules(vec![path_prefix("/api")]),
                ])],
                principals: vec![principal_name(exact(SLEEP))],
                ..Default::default()
            },
        )],
    );
    // DENY from namespaces [evil] (Istio: a regex on the principal).
    let deny = filter(
        pb::rbac::Action::Deny,
        vec![(
            "ns[default]-policy[deny-evil]-rule[0]",
            pb::Policy {
                permissions: vec![pb::Permission {
                    rule: Some(pb::permission::Rule::Any(true)),
                }],
                principals: vec![principal_name(regex(".*/ns/evil/.*"))],
                ..Default::default()
            },
        )],
    );
    let h = http::HeaderMap::new();
    let (sleep, evil) = (peer(SLEEP), peer(EVIL));
    let decide = |m: &str, p: &str, who: Option<&PeerCert>| {
        let r = request(&h, m, p, who);
        deny.check(&r).0 && allow.check(&r).0
    };
    assert!(decide("GET", "/api/v1?x=1", Some(&sleep)));
    assert!(
        !decide("POST", "/api/v1", Some(&sleep)),
        "method not allowed"
    );
    assert!(!decide("GET", "/admin", Some(&sleep)), "path not allowed");
    assert!(!decide("GET", "/api", None), "plaintext has no principal");
    assert!(!decide("GET", "/api", Some(&evil)), "denied namespace");
    let r = request(&h, "GET", "/api", Some(&evil));
    assert_eq!(
        deny.check(&r),
        (false, Some("ns[default]-policy[deny-evil]-rule[0]"))
    );
}

#[test]
fn empty_allow_denies_everything_and_absent_rules_allow() {
    let h = http::HeaderMap::new();
    let r = request(&h, "GET", "/", None);
    assert!(!filter(pb::rbac::Action::Allow, vec![]).check(&r).0);
    assert!(filter(pb::rbac::Action::Deny, vec![]).check(&r).0);
    assert!(
        RbacFilter::compile(&RbacFilterPb::default())
            .unwrap()
            .check(&r)
            .0
    );
}

#[test]
fn addresses_ports_and_not() {
    let c = |p: &str, l: u32| {
        Cidr::compile(&CidrRange {
            address_prefix: p.into(),
            prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value { value: l }),
        })
        .unwrap()
    };
    assert!(c("10.0.0.0", 8).contains("10.9.8.7".parse().unwrap()));
    assert!(!c("10.0.0.0", 8).contains("11.0.0.1".parse().unwrap()));
    assert!(c("0.0.0.0", 0).contains("1.2.3.4".parse().unwrap()));
    assert!(c("10.0.0.1", 32).contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(c("fd00::", 8).contains("fd12::1".parse().unwrap()));
    let h = http::HeaderMap::new();
    let r = request(&h, "GET", "/", None);
    assert!(Permission::DestinationPort(9080).matches(&r));
    assert!(!Permission::Not(Box::new(Permission::DestinationPort(9080))).matches(&r));
    assert!(Permission::DestinationPortRange(9000, 9081).matches(&r));
    assert!(Principal::DirectRemoteIp(c("10.0.0.0", 24)).matches(&r));
    assert!(!Principal::Authenticated(None).matches(&r));
}

#[test]
#[allow(deprecated)]
fn unsupported_fields_name_their_path() {
    let with_condition = RbacFilterPb {
        rules: Some(pb::Rbac {
            action: pb::rbac::Action::Allow as i32,
            policies: [(
                "p".to_string(),
                pb::Policy {
                    permissions: vec![method("GET")],
                    principals: vec![principal_name(exact(SLEEP))],
                    condition: Some(Default::default()),
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = RbacFilter::compile(&with_condition)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("rules.policies[p].condition"), "{e}");
    let with_metadata = RbacFilterPb {
        rules: Some(pb::Rbac {
            action: pb::rbac::Action::Allow as i32,
            policies: [(
                "jwt".to_string(),
                pb::Policy {
                    permissions: vec![method("GET")],
                    principals: vec![pb::Principal {
                        identifier: Some(
                            pb::principal::Identifier::FilterState(Default::default()),
                        ),
                    }],
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = RbacFilter::compile(&with_metadata).unwrap_err().to_string();
    assert!(
        e.contains("principals[0]") && e.contains("not supported"),
        "{e}"
    );
}
