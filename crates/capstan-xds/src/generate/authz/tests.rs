use super::*;
use crate::context::ConfigEntry;
use std::sync::Arc;

/// A rule from its JSON form (the AuthorizationPolicy API's field names).
fn rule(json: &str) -> Rule {
    serde_json::from_str(json).expect("test rules are valid JSON rules")
}

fn sm(m: &StringMatcher) -> String {
    let ic = if m.ignore_case { "/i" } else { "" };
    match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => format!("exact:{s}{ic}"),
        Some(MatchPattern::Prefix(s)) => format!("prefix:{s}{ic}"),
        Some(MatchPattern::Suffix(s)) => format!("suffix:{s}{ic}"),
        Some(MatchPattern::SafeRegex(r)) => format!("regex:{}", r.regex),
        other => format!("{other:?}"),
    }
}

fn hdr(h: &HeaderMatcher) -> String {
    use header_matcher::HeaderMatchSpecifier as S;
    match &h.header_match_specifier {
        Some(S::PresentMatch(true)) => format!("hdr({} present)", h.name),
        Some(S::StringMatch(m)) => format!("hdr({} {})", h.name, sm(m)),
        other => format!("hdr({} {other:?})", h.name),
    }
}

fn cidr_text(c: &CidrRange) -> String {
    format!(
        "{}/{}",
        c.address_prefix,
        c.prefix_len.as_ref().map_or(0, |l| l.value)
    )
}

fn perm(p: &Permission) -> String {
    use permission::Rule as R;
    let list = |s: &permission::Set| s.rules.iter().map(perm).collect::<Vec<_>>().join(",");
    match p.rule.as_ref().expect("a permission has a rule") {
        R::Any(true) => "any".into(),
        R::AndRules(s) => format!("and({})", list(s)),
        R::OrRules(s) => format!("or({})", list(s)),
        R::NotRule(n) => format!("not({})", perm(n)),
        R::Header(h) => hdr(h),
        R::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(m)),
        }) => format!("path({})", sm(m)),
        R::DestinationPort(n) => format!("port({n})"),
        R::DestinationIp(c) => format!("dip({})", cidr_text(c)),
        R::RequestedServerName(m) => format!("sni({})", sm(m)),
        other => format!("{other:?}"),
    }
}

fn vm(v: &ValueMatcher) -> String {
    use value_matcher::MatchPattern as V;
    match v
        .match_pattern
        .as_ref()
        .expect("a value matcher has a pattern")
    {
        V::StringMatch(m) => sm(m),
        V::OrMatch(o) => format!(
            "or({})",
            o.value_matchers
                .iter()
                .map(vm)
                .collect::<Vec<_>>()
                .join(",")
        ),
        V::ListMatch(l) => match l.match_pattern.as_ref().expect("a list matcher") {
            list_matcher::MatchPattern::OneOf(one) => format!("list({})", vm(one)),
        },
        other => format!("{other:?}"),
    }
}

/// `md(<filter-less path> <value>)`, checking the filter is the JWT filter's.
fn md(m: &MetadataMatcher) -> String {
    assert_eq!(m.filter, "envoy.filters.http.jwt_authn");
    assert!(!m.invert);
    let path: Vec<&str> = m
        .path
        .iter()
        .map(|p| match &p.segment {
            Some(metadata_matcher::path_segment::Segment::Key(k)) => k.as_str(),
            None => "?",
        })
        .collect();
    format!(
        "md({} {})",
        path.join("."),
        vm(m.value.as_ref().expect("a value"))
    )
}

#[allow(deprecated)]
fn princ(p: &Principal) -> String {
    use principal::Identifier as I;
    let list = |s: &principal::Set| s.ids.iter().map(princ).collect::<Vec<_>>().join(",");
    match p
        .identifier
        .as_ref()
        .expect("a principal has an identifier")
    {
        I::Any(true) => "any".into(),
        I::AndIds(s) => format!("and({})", list(s)),
        I::OrIds(s) => format!("or({})", list(s)),
        I::NotId(n) => format!("not({})", princ(n)),
        I::Authenticated(a) => format!("auth({})", sm(a.principal_name.as_ref().unwrap())),
        I::DirectRemoteIp(c) => format!("ip({})", cidr_text(c)),
        I::RemoteIp(c) => format!("rip({})", cidr_text(c)),
        I::Header(h) => hdr(h),
        I::Metadata(m) => md(m),
        other => format!("{other:?}"),
    }
}

fn render(p: &Policy) -> String {
    let ps: Vec<String> = p.permissions.iter().map(perm).collect();
    let is: Vec<String> = p.principals.iter().map(princ).collect();
    format!("{} <- {}", ps.join(" | "), is.join(" | "))
}

fn generated(json: &str, action: rbac::Action) -> Result<String, String> {
    rule_policy(&rule(json), "ns", action, Layer::Http, &mut Vec::new()).map(|p| render(&p))
}

fn generated_tcp(json: &str, action: rbac::Action) -> Result<String, String> {
    rule_policy(&rule(json), "ns", action, Layer::Tcp, &mut Vec::new()).map(|p| render(&p))
}

const ALLOW: rbac::Action = rbac::Action::Allow;
const DENY: rbac::Action = rbac::Action::Deny;

/// Each rule field as istiod's `authz/model` translates it: rule JSON → policy text.
#[test]
fn rule_fields_translate_like_istiod() {
    let cases: &[(&str, &str, &str)] = &[
        ("empty rule matches everything", "{}", "and(any) <- and(any)"),
        (
            "principals: exact, prefix, suffix, any",
            r#"{"from":[{"source":{"principals":["cluster.local/ns/a/sa/b","cluster.local/ns/a/*","*/sa/b","*"]}}]}"#,
            "and(any) <- and(or(auth(exact:spiffe://cluster.local/ns/a/sa/b),auth(prefix:spiffe://cluster.local/ns/a/),auth(regex:spiffe://.*/sa/b),auth(regex:.+)))",
        ),
        (
            "notPrincipals",
            r#"{"from":[{"source":{"notPrincipals":["cluster.local/ns/a/sa/b"]}}]}"#,
            "and(any) <- and(not(or(auth(exact:spiffe://cluster.local/ns/a/sa/b))))",
        ),
        (
            "namespaces",
            r#"{"from":[{"source":{"namespaces":["foo","ba*"]}}]}"#,
            "and(any) <- and(or(auth(regex:.*/ns/foo/.*),auth(regex:.*/ns/ba.*/.*)))",
        ),
        (
            "serviceAccounts default to the policy's namespace",
            r#"{"from":[{"source":{"serviceAccounts":["sa1","other/sa2"]}}]}"#,
            "and(any) <- and(or(auth(regex:spiffe://.+/ns/ns/(.+/|)sa/sa1(/.+)?),auth(regex:spiffe://.+/ns/other/(.+/|)sa/sa2(/.+)?)))",
        ),
        (
            "ipBlocks and remoteIpBlocks",
            r#"{"from":[{"source":{"ipBlocks":["10.0.0.0/8"],"notIpBlocks":["10.1.2.3"],"remoteIpBlocks":["2001:db8::/32"]}}]}"#,
            "and(any) <- and(or(rip(2001:db8::/32)),or(ip(10.0.0.0/8)),not(or(ip(10.1.2.3/32))))",
        ),
        (
            "source fields in istiod's order",
            r#"{"from":[{"source":{"ipBlocks":["1.2.3.4"],"namespaces":["a"],"principals":["p"]}}]}"#,
            "and(any) <- and(or(auth(exact:spiffe://p)),or(auth(regex:.*/ns/a/.*)),or(ip(1.2.3.4/32)))",
        ),
        (
            "several from entries are ORed",
            r#"{"from":[{"source":{"namespaces":["a"]}},{"source":{"namespaces":["b"]}}]}"#,
            "and(any) <- and(or(auth(regex:.*/ns/a/.*))) | and(or(auth(regex:.*/ns/b/.*)))",
        ),
        (
            "operation: hosts, methods, paths, ports",
            r#"{"to":[{"operation":{"hosts":["Example.com","*.example.com"],"methods":["GET"],"paths":["/a","/b*","*/c"],"ports":["8080"]}}]}"#,
            "and(or(hdr(:authority exact:Example.com/i),hdr(:authority suffix:.example.com/i)),or(hdr(:method exact:GET)),or(path(exact:/a),path(prefix:/b),path(suffix:/c)),or(port(8080))) <- and(any)",
        ),
        (
            "not operations",
            r#"{"to":[{"operation":{"notMethods":["DELETE"],"notPaths":["/admin*"],"notPorts":["9090"],"notHosts":["*"]}}]}"#,
            "and(not(or(hdr(:authority present))),not(or(hdr(:method exact:DELETE))),not(or(path(prefix:/admin))),not(or(port(9090)))) <- and(any)",
        ),
        (
            "when: mapped keys go to their side, after from/to",
            r#"{"to":[{"operation":{"methods":["GET"]}}],"when":[
                {"key":"source.ip","values":["10.0.0.1"]},
                {"key":"source.namespace","values":["x"]},
                {"key":"source.principal","values":["cluster.local/ns/x/sa/y"]},
                {"key":"destination.port","values":["80"],"notValues":["81"]},
                {"key":"destination.ip","values":["10.9.0.0/16"]},
                {"key":"connection.sni","values":["*.local"]},
                {"key":"remote.ip","values":["1.1.1.1"]},
                {"key":"request.headers[X-Token]","values":["abc","*"]}]}"#,
            "and(or(hdr(:method exact:GET)),or(port(80)),not(or(port(81))),or(dip(10.9.0.0/16)),or(sni(suffix:.local))) <- and(or(ip(10.0.0.1/32)),or(auth(regex:.*/ns/x/.*)),or(auth(exact:spiffe://cluster.local/ns/x/sa/y)),or(rip(1.1.1.1/32)),or(hdr(X-Token exact:abc),hdr(X-Token present)))",
        ),
    ];
    for (name, json, want) in cases {
        assert_eq!(generated(json, ALLOW).as_deref(), Ok(*want), "{name}");
    }
}

/// What our proxy cannot match on: an ALLOW rule is dropped (allows nothing); a DENY rule
/// keeps matching what the rest of it matches.
#[test]
fn unexpressible_keys_fail_safe() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "malformed JWT claim key",
            r#"{"to":[{"operation":{"methods":["POST"]}}],"when":[{"key":"request.auth.claims[groups","values":["admin"]}]}"#,
            "and(or(hdr(:method exact:POST))) <- and(any)",
        ),
        (
            "JWT claim key naming no claim",
            r#"{"from":[{"source":{"namespaces":["a"]}}],"when":[{"key":"request.auth.claims","values":["x"]}]}"#,
            "and(any) <- and(or(auth(regex:.*/ns/a/.*)))",
        ),
        (
            "a path template among plain paths drops the whole key",
            r#"{"to":[{"operation":{"paths":["/a","/x/{*}/y"],"methods":["GET"]}}]}"#,
            "and(or(hdr(:method exact:GET))) <- and(any)",
        ),
        (
            "an unexpressible notValue only removes that exception",
            r#"{"to":[{"operation":{"notPaths":["/a","/x/{**}"]}}]}"#,
            "and(not(or(path(exact:/a)))) <- and(any)",
        ),
        (
            "bad port",
            r#"{"to":[{"operation":{"ports":["http"]}}]}"#,
            "and(any) <- and(any)",
        ),
        (
            "experimental metadata key",
            r#"{"when":[{"key":"experimental.envoy.filters.network.mysql_proxy[db.table]","values":["[update]"]}]}"#,
            "and(any) <- and(any)",
        ),
    ];
    for (name, json, deny_want) in cases {
        assert!(
            generated(json, ALLOW).is_err(),
            "{name}: ALLOW must be dropped"
        );
        assert_eq!(generated(json, DENY).as_deref(), Ok(*deny_want), "{name}");
        assert_eq!(
            generated(json, rbac::Action::Log).as_deref(),
            Ok(*deny_want),
            "{name}: AUDIT widens like DENY"
        );
    }
}

/// JWT keys as istiod's extended generators translate them: metadata matchers on the JWT
/// filter's `payload`, built over all of a key's values at once.
#[test]
fn jwt_keys_translate_like_istiod() {
    let p = |iss: &str, sub: &str| format!("and(md(payload.iss {iss}),md(payload.sub {sub}))");
    let any = "regex:.+";
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "requestPrincipals: exact iss/sub, split at the last slash",
            r#"{"from":[{"source":{"requestPrincipals":["https://issuer.example/tenant/alice"]}}]}"#,
            format!(
                "and(any) <- and({})",
                p("exact:https://issuer.example/tenant", "exact:alice")
            ),
        ),
        (
            "requestPrincipals: several values are ORed, wildcards as istiod",
            r#"{"from":[{"source":{"requestPrincipals":["*","*.example/bob","iss/*","iss/ad*","*alice","pre*"]}}]}"#,
            format!(
                "and(any) <- and(or({},{},{},{},{},{}))",
                p(any, any),
                p("suffix:.example", "exact:bob"),
                p("exact:iss", any),
                p("exact:iss", "prefix:ad"),
                p(any, "suffix:alice"),
                p("prefix:pre", any),
            ),
        ),
        (
            "requestPrincipals: a star issuer before a slash",
            r#"{"from":[{"source":{"requestPrincipals":["*/carol"]}}]}"#,
            format!("and(any) <- and({})", p(any, "exact:carol")),
        ),
        (
            "notRequestPrincipals: one not over all values",
            r#"{"from":[{"source":{"notRequestPrincipals":["a/b","c/d"]}}]}"#,
            format!(
                "and(any) <- and(not(or({},{})))",
                p("exact:a", "exact:b"),
                p("exact:c", "exact:d")
            ),
        ),
        (
            "requestPrincipals among other source keys, in istiod's order",
            r#"{"from":[{"source":{"namespaces":["a"],"requestPrincipals":["i/s"],"principals":["p"]}}]}"#,
            format!(
                "and(any) <- and(or(auth(exact:spiffe://p)),{},or(auth(regex:.*/ns/a/.*)))",
                p("exact:i", "exact:s")
            ),
        ),
        (
            "request.auth.principal when key",
            r#"{"when":[{"key":"request.auth.principal","values":["i/s"]}]}"#,
            format!("and(any) <- and({})", p("exact:i", "exact:s")),
        ),
        (
            "request.auth.audiences: list or string, one value",
            r#"{"when":[{"key":"request.auth.audiences","values":["api"]}]}"#,
            "and(any) <- and(md(payload.aud or(list(exact:api),exact:api)))".into(),
        ),
        (
            "request.auth.presenter: several values",
            r#"{"when":[{"key":"request.auth.presenter","values":["web","cli*"]}]}"#,
            "and(any) <- and(md(payload.azp or(list(or(exact:web,prefix:cli)),or(exact:web,prefix:cli))))".into(),
        ),
        (
            "request.auth.claims: nested path, notValues",
            r#"{"when":[{"key":"request.auth.claims[realm][roles]","values":["admin"],"notValues":["guest","*-ro"]}]}"#,
            "and(any) <- and(md(payload.realm.roles or(list(exact:admin),exact:admin)),not(md(payload.realm.roles or(list(or(exact:guest,suffix:-ro)),or(exact:guest,suffix:-ro)))))".into(),
        ),
        (
            "request.auth.claims: a dotted name is one claim",
            r#"{"when":[{"key":"request.auth.claims[a.b]","values":["*"]}]}"#,
            "and(any) <- and(md(payload.a.b or(list(regex:.+),regex:.+)))".into(),
        ),
    ];
    for (name, json, want) in cases {
        assert_eq!(generated(json, ALLOW), Ok(want.clone()), "{name}");
        assert_eq!(generated(json, DENY), Ok(want), "{name}: DENY alike");
    }
}

#[test]
fn claim_paths_follow_istiods_bracket_parsing() {
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("[a]", Some(&["a"])),
        ("[a][b][c]", Some(&["a", "b", "c"])),
        ("[a.b]", Some(&["a.b"])),
        ("[a[b]]", Some(&["a[b]"])),
        ("[]", Some(&[""])),
        ("[a", None),
        ("[a]b", None),
        ("a", None),
        ("", None),
    ];
    for (key, want) in cases {
        assert_eq!(claim_path(key).as_deref(), *want, "{key:?}");
    }
}

fn entry(name: &str, action: &str, rules: &str) -> Arc<ConfigEntry<AuthorizationPolicy>> {
    let spec = format!(r#"{{"action":"{action}"{rules}}}"#);
    Arc::new(ConfigEntry {
        name: name.into(),
        namespace: "ns".into(),
        spec: Arc::new(serde_json::from_str(&spec).expect("test specs are valid")),
    })
}

fn filter_rules(f: &hcm::HttpFilter) -> Rbac {
    use prost::Message;
    assert_eq!(f.name, RBAC_FILTER);
    let Some(hcm::http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("typed config")
    };
    assert_eq!(
        a.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
    );
    RbacFilter::decode(a.value.as_slice())
        .expect("an RBAC filter")
        .rules
        .expect("rules")
}

/// Policy-level semantics: empty ALLOW denies all, `{}` allows all, DENY without rules denies
/// nothing; filters in istiod's order AUDIT, DENY, ALLOW.
#[test]
fn filters_per_action_in_istiod_order() {
    let authz = WorkloadAuthz {
        audit: vec![entry("audit", "AUDIT", r#","rules":[{}]"#)],
        deny: vec![entry("deny-none", "DENY", "")],
        allow: vec![
            entry("allow-nothing", "ALLOW", ""),
            entry(
                "allow-all",
                "ALLOW",
                r#","rules":[{}, {"to":[{"operation":{"paths":["/x/{*}"]}}]}]"#,
            ),
        ],
        custom: vec![entry("ext", "CUSTOM", r#","rules":[{}]"#)],
    };
    let filters = http_filters(&authz);
    let rules: Vec<Rbac> = filters.iter().map(filter_rules).collect();
    let summary: Vec<(i32, Vec<String>)> = rules
        .iter()
        .map(|r| {
            let mut names: Vec<String> = r.policies.keys().cloned().collect();
            names.sort();
            (r.action, names)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (rbac::Action::Deny as i32, vec![CUSTOM_DENY_ALL.to_string()]),
            (
                rbac::Action::Log as i32,
                vec!["ns[ns]-policy[audit]-rule[0]".to_string()]
            ),
            (
                rbac::Action::Deny as i32,
                vec!["ns[ns]-policy[deny-none]-rule[0]".to_string()]
            ),
            (
                rbac::Action::Allow as i32,
                vec![
                    "ns[ns]-policy[allow-all]-rule[0]".to_string(),
                    "ns[ns]-policy[allow-nothing]-rule[0]".to_string()
                ]
            ),
        ],
        "CUSTOM fails closed first; the template rule of ALLOW is dropped; policies without \
         rules match nothing, by name"
    );
    assert_eq!(
        render(&rules[2].policies["ns[ns]-policy[deny-none]-rule[0]"]),
        render(&rules[3].policies["ns[ns]-policy[allow-nothing]-rule[0]"]),
    );
    assert_eq!(render(&rules[0].policies[CUSTOM_DENY_ALL]), "any <- any");
    let tcp = network_filters(&authz);
    assert_eq!(tcp.len(), 4, "the deny-all guards TCP too");
    assert_eq!(
        render(&rules[3].policies["ns[ns]-policy[allow-all]-rule[0]"]),
        "and(any) <- and(any)"
    );
    assert!(http_filters(&WorkloadAuthz::default()).is_empty());
    let again = http_filters(&authz);
    assert_eq!(again, filters, "the encoding is deterministic");
    let many = WorkloadAuthz {
        allow: (0..8)
            .map(|i| entry(&format!("p{i}"), "ALLOW", r#","rules":[{},{}]"#))
            .collect(),
        ..WorkloadAuthz::default()
    };
    let rules = filter_rules(&http_filters(&many)[0]);
    assert_eq!(
        rules.policies.len(),
        16,
        "every policy survives the sorted encoding"
    );
    assert_eq!(rules.action, ALLOW as i32);
    assert_eq!(http_filters(&many), http_filters(&many));
    let empty_spec: AuthorizationPolicy = serde_json::from_str("{}").unwrap();
    let only = build_rules([("ns", "deny-all", &empty_spec)], ALLOW, Layer::Http);
    assert_eq!(only.action, ALLOW as i32);
    assert_eq!(
        only.policies.keys().collect::<Vec<_>>(),
        ["ns[ns]-policy[deny-all]-rule[0]"],
        "an empty spec is an ALLOW policy allowing nothing"
    );
    assert_eq!(
        render(&only.policies["ns[ns]-policy[deny-all]-rule[0]"]),
        "not(any) <- not(any)",
        "istiod's rbacPolicyMatchNever"
    );
}

/// The proto rules Envoy validates (`validate.rules`): sets and policies non-empty, `any` true,
/// prefixes, suffixes and regexes non-empty, ports in range.
#[test]
fn generated_policies_satisfy_envoy_validation() {
    fn check_sm(m: &StringMatcher) {
        match m.match_pattern.as_ref().expect("match_pattern is required") {
            MatchPattern::Prefix(s) | MatchPattern::Suffix(s) => assert!(!s.is_empty()),
            MatchPattern::SafeRegex(r) => assert!(!r.regex.is_empty()),
            _ => {}
        }
    }
    fn check_h(h: &HeaderMatcher) {
        assert!(!h.name.is_empty());
        if let Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) =
            &h.header_match_specifier
        {
            check_sm(m);
        }
    }
    fn check_p(p: &Permission) {
        use permission::Rule as R;
        match p.rule.as_ref().expect("rule is required") {
            R::Any(b) => assert!(*b),
            R::AndRules(s) | R::OrRules(s) => {
                assert!(!s.rules.is_empty());
                s.rules.iter().for_each(check_p);
            }
            R::NotRule(n) => check_p(n),
            R::Header(h) => check_h(h),
            R::UrlPath(u) => match u.rule.as_ref().expect("path") {
                path_matcher::Rule::Path(m) => check_sm(m),
            },
            R::DestinationPort(n) => assert!(*n <= 65535),
            R::DestinationIp(c) => assert!(!c.address_prefix.is_empty()),
            R::RequestedServerName(m) => check_sm(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    #[allow(deprecated)]
    fn check_i(p: &Principal) {
        use principal::Identifier as I;
        match p.identifier.as_ref().expect("identifier is required") {
            I::Any(b) => assert!(*b),
            I::AndIds(s) | I::OrIds(s) => {
                assert!(!s.ids.is_empty());
                s.ids.iter().for_each(check_i);
            }
            I::NotId(n) => check_i(n),
            I::Authenticated(a) => check_sm(a.principal_name.as_ref().unwrap()),
            I::DirectRemoteIp(c) | I::RemoteIp(c) => {
                assert!(!c.address_prefix.is_empty())
            }
            I::Header(h) => check_h(h),
            I::Metadata(m) => {
                // MetadataMatcher: filter min_len 1, path min_items 1, value required;
                // PathSegment key min_len 1; OrMatcher min_items 2.
                assert!(!m.filter.is_empty());
                assert!(!m.path.is_empty());
                for seg in &m.path {
                    let Some(metadata_matcher::path_segment::Segment::Key(k)) = &seg.segment else {
                        panic!("a key segment")
                    };
                    assert!(!k.is_empty());
                }
                check_v(m.value.as_ref().expect("value is required"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    fn check_v(v: &ValueMatcher) {
        use value_matcher::MatchPattern as V;
        match v.match_pattern.as_ref().expect("match_pattern is required") {
            V::StringMatch(m) => check_sm(m),
            V::OrMatch(o) => {
                assert!(o.value_matchers.len() >= 2);
                o.value_matchers.iter().for_each(check_v);
            }
            V::ListMatch(l) => match l.match_pattern.as_ref().expect("one_of is required") {
                list_matcher::MatchPattern::OneOf(one) => check_v(one),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    let everything = r#"{"from":[{"source":{"principals":["*","a*","*b"],"notNamespaces":["*"],"ipBlocks":["::1"],
            "requestPrincipals":["*","i/*","*/s","x*","*y"],"notRequestPrincipals":["a/b"]}}],
        "to":[{"operation":{"hosts":["*"],"methods":["*"],"paths":["*"],"ports":["0","65535"]}}],
        "when":[{"key":"request.headers[x]","values":["*"]},
            {"key":"request.auth.claims[a][b]","values":["*","v"],"notValues":["w"]},
            {"key":"request.auth.audiences","values":["aud"]},
            {"key":"request.auth.presenter","values":["p1","p2"]}]}"#;
    for json in ["{}", everything] {
        for action in [ALLOW, DENY] {
            let p = rule_policy(&rule(json), "ns", action, Layer::Http, &mut Vec::new()).unwrap();
            assert!(!p.permissions.is_empty() && !p.principals.is_empty());
            p.permissions.iter().for_each(check_p);
            p.principals.iter().for_each(check_i);
        }
    }
}

/// On TCP, istiod drops an ALLOW rule that names an HTTP attribute (it could never match a
/// connection) and leaves the attribute out of a DENY rule (which then refuses every connection
/// the rest of it matches); connection attributes translate as on HTTP.
#[test]
fn tcp_rules_drop_http_attributes_like_istiod() {
    let http_only = [
        r#"{"to":[{"operation":{"methods":["GET"]}}]}"#,
        r#"{"to":[{"operation":{"paths":["/x"]}}]}"#,
        r#"{"to":[{"operation":{"hosts":["a.com"]}}]}"#,
        r#"{"to":[{"operation":{"notPaths":["/x"]}}]}"#,
        r#"{"when":[{"key":"request.headers[x-a]","values":["1"]}]}"#,
        r#"{"from":[{"source":{"requestPrincipals":["iss/sub"]}}]}"#,
        r#"{"from":[{"source":{"notRequestPrincipals":["iss/sub"]}}]}"#,
        r#"{"when":[{"key":"request.auth.claims[groups]","values":["a"]}]}"#,
        r#"{"when":[{"key":"request.auth.audiences","values":["a"]}]}"#,
        r#"{"when":[{"key":"request.auth.presenter","values":["a"]}]}"#,
        r#"{"when":[{"key":"request.auth.principal","values":["a/b"]}]}"#,
    ];
    for json in http_only {
        assert!(generated_tcp(json, ALLOW).is_err(), "ALLOW {json}");
        assert!(generated(json, DENY).is_ok());
        assert_eq!(
            generated_tcp(json, DENY).unwrap(),
            "and(any) <- and(any)",
            "DENY {json} loses the HTTP key"
        );
    }
    let mixed = r#"{"from":[{"source":{"namespaces":["foo"]}}],"to":[{"operation":{"ports":["9000"],"methods":["GET"]}}]}"#;
    assert!(generated_tcp(mixed, ALLOW).is_err());
    assert_eq!(
        generated_tcp(mixed, DENY).unwrap(),
        "and(or(port(9000))) <- and(or(auth(regex:.*/ns/foo/.*)))"
    );
    let tcp_only = r#"{"from":[{"source":{"principals":["cluster.local/ns/a/sa/b"],"ipBlocks":["10.0.0.0/8"]}}],"to":[{"operation":{"ports":["9000"]}}],"when":[{"key":"connection.sni","values":["x.local"]}]}"#;
    assert_eq!(generated_tcp(tcp_only, ALLOW), generated(tcp_only, ALLOW));
}

/// The network filters: one per action in istiod's order, `tcp.` stat prefix, an ALLOW
/// policy whose only rule names HTTP attributes allows no connection.
#[test]
fn network_filters_in_istiods_shape() {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetRbac;
    use prost::Message;
    let authz = WorkloadAuthz {
        deny: vec![entry(
            "deny-get",
            "DENY",
            r#","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]"#,
        )],
        allow: vec![entry(
            "allow-get",
            "ALLOW",
            r#","rules":[{"to":[{"operation":{"methods":["GET"]}}]}]"#,
        )],
        ..WorkloadAuthz::default()
    };
    let filters = network_filters(&authz);
    let decoded: Vec<NetRbac> = filters
        .iter()
        .map(|f| {
            assert_eq!(f.name, NETWORK_RBAC_FILTER);
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("typed config")
            };
            assert_eq!(
                any.type_url,
                "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
            );
            NetRbac::decode(any.value.as_slice()).unwrap()
        })
        .collect();
    assert_eq!(decoded.len(), 2);
    assert!(decoded.iter().all(|r| r.stat_prefix == "tcp."));
    let deny = decoded[0].rules.as_ref().unwrap();
    assert_eq!(deny.action, DENY as i32);
    assert_eq!(
        render(&deny.policies["ns[ns]-policy[deny-get]-rule[0]"]),
        "and(any) <- and(any)",
        "the DENY denies every connection"
    );
    let allow = decoded[1].rules.as_ref().unwrap();
    assert_eq!(allow.action, ALLOW as i32);
    assert!(allow.policies.is_empty(), "the ALLOW allows no connection");
    assert!(network_filters(&WorkloadAuthz::default()).is_empty());
}
