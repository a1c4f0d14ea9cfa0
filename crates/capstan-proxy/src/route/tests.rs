use super::action::{location, Action, ClusterChoice};
use super::*;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route as RoutePb,
    RouteAction, RouteMatch, VirtualHost as VhPb, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

fn to(cluster: &str) -> Option<route::Action> {
    Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..RouteAction::default()
    }))
}

fn rt(name: &str, m: RouteMatch) -> RoutePb {
    RoutePb {
        name: name.into(),
        r#match: Some(m),
        action: to(name),
        ..RoutePb::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..RouteMatch::default()
    }
}

fn vh(name: &str, domains: &[&str], routes: Vec<RoutePb>) -> VhPb {
    VhPb {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..VhPb::default()
    }
}

fn table(vhs: Vec<VhPb>) -> RouteTable {
    compile(&RouteConfiguration {
        name: "t".into(),
        virtual_hosts: vhs,
        ..RouteConfiguration::default()
    })
    .unwrap()
}

#[test]
fn domain_matching_order() {
    let t = table(vec![
        vh("exact", &["www.foo.com", "reviews", "reviews:9080"], vec![]),
        vh("suffix", &["*.foo.com"], vec![]),
        vh("longer-suffix", &["*.bar.foo.com"], vec![]),
        vh("prefix", &["foo.*"], vec![]),
        vh("longer-prefix", &["foo.bar.*"], vec![]),
        vh("gw", &["gw.example.com", "gw.example.com:*"], vec![]),
        vh("default", &["*"], vec![]),
    ]);
    let cases = [
        ("www.foo.com", "exact"),
        ("WWW.Foo.com", "exact"),
        ("a.foo.com", "suffix"),
        ("a.bar.foo.com", "longer-suffix"),
        ("foo.com", "prefix"),
        ("foo.x", "prefix"),
        ("foo.bar.x", "longer-prefix"),
        ("foo.", "default"),
        ("reviews", "exact"),
        ("reviews:9080", "exact"),
        ("reviews:80", "exact"),
        ("www.foo.com:8080", "exact"),
        ("gw.example.com:443", "gw"),
        ("unknown", "default"),
    ];
    for (host, want) in cases {
        assert_eq!(t.virtual_host(host).unwrap().name, want, "host {host}");
    }
    let no_default = table(vec![vh("a", &["a"], vec![])]);
    assert!(no_default.virtual_host("b").is_none());
}

#[test]
fn duplicate_and_bad_domains_are_errors() {
    let rc = |vhs| RouteConfiguration {
        virtual_hosts: vhs,
        ..RouteConfiguration::default()
    };
    let e = compile(&rc(vec![vh("a", &["x"], vec![]), vh("b", &["x"], vec![])])).unwrap_err();
    assert_eq!(e.path, "virtual_hosts[1].domains[0]");
    let e = compile(&rc(vec![vh("a", &["a*b"], vec![])])).unwrap_err();
    assert_eq!(e.path, "virtual_hosts[0].domains[0]");
}

fn header(name: &str, spec: header_matcher::HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..HeaderMatcher::default()
    }
}

fn sm(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..StringMatcher::default()
    }
}

#[test]
fn route_matching_table() {
    use header_matcher::HeaderMatchSpecifier as H;
    use string_matcher::MatchPattern as P;
    let path = |p: &str| RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(p.into())),
        ..RouteMatch::default()
    };
    let regex = |r: &str| RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..RegexMatcher::default()
        })),
        ..RouteMatch::default()
    };
    let sep = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
            "/sep".into(),
        )),
        ..RouteMatch::default()
    };
    let nocase = RouteMatch {
        case_sensitive: Some(BoolValue { value: false }),
        ..prefix("/CASE")
    };
    let with_headers = |hs: Vec<HeaderMatcher>| RouteMatch {
        headers: hs,
        ..prefix("/h")
    };
    let with_query = |qs: Vec<QueryParameterMatcher>| RouteMatch {
        query_parameters: qs,
        ..prefix("/q")
    };
    let qp = |n: &str, s: Option<query_parameter_matcher::QueryParameterMatchSpecifier>| {
        QueryParameterMatcher {
            name: n.into(),
            query_parameter_match_specifier: s,
        }
    };
    let grpc = RouteMatch {
        grpc: Some(Default::default()),
        ..prefix("/g")
    };
    let t = table(vec![vh(
        "v",
        &["*"],
        vec![
            rt("exact", path("/exact")),
            rt("regex", regex("/re/[0-9]+")),
            rt("sep", sep),
            rt("nocase", nocase),
            rt(
                "h-exact",
                with_headers(vec![header(
                    "x-v",
                    H::StringMatch(sm(P::Exact("1".into()))),
                    false,
                )]),
            ),
            rt(
                "h-prefix",
                with_headers(vec![header(
                    "x-p",
                    H::StringMatch(sm(P::Prefix("ab".into()))),
                    false,
                )]),
            ),
            rt(
                "h-suffix",
                with_headers(vec![header(
                    "x-s",
                    H::StringMatch(sm(P::Suffix("yz".into()))),
                    false,
                )]),
            ),
            rt(
                "h-contains",
                with_headers(vec![header(
                    "x-c",
                    H::StringMatch(sm(P::Contains("mid".into()))),
                    false,
                )]),
            ),
            rt(
                "h-regex",
                with_headers(vec![header(
                    "x-r",
                    H::StringMatch(sm(P::SafeRegex(RegexMatcher {
                        regex: "v[0-9]".into(),
                        ..RegexMatcher::default()
                    }))),
                    false,
                )]),
            ),
            rt(
                "h-present",
                with_headers(vec![header("x-any", H::PresentMatch(true), false)]),
            ),
            rt(
                "h-invert",
                with_headers(vec![header("x-no", H::PresentMatch(true), true)]),
            ),
            rt(
                "q-exact",
                with_query(vec![qp(
                    "u",
                    Some(
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm(
                            P::Exact("bob".into()),
                        )),
                    ),
                )]),
            ),
            rt(
                "q-present",
                with_query(vec![qp(
                    "debug",
                    Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)),
                )]),
            ),
            rt("grpc", grpc),
            rt("root", prefix("/")),
        ],
    )]);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("/exact", vec![], "exact"),
        ("/exact?x=1", vec![], "exact"),
        ("/exactly", vec![], "root"),
        ("/re/12", vec![], "regex"),
        ("/re/12x", vec![], "root"),
        ("/sep", vec![], "sep"),
        ("/sep/a", vec![], "sep"),
        ("/sep?x", vec![], "sep"),
        ("/separate", vec![], "root"),
        ("/case/x", vec![], "nocase"),
        ("/h", vec![("x-v", "1")], "h-exact"),
        ("/h", vec![("x-v", "2"), ("x-p", "abc")], "h-prefix"),
        ("/h", vec![("x-s", "xyz")], "h-suffix"),
        ("/h", vec![("x-c", "amidb")], "h-contains"),
        ("/h", vec![("x-r", "v1")], "h-regex"),
        ("/h", vec![("x-r", "v10")], "h-invert"),
        ("/h", vec![("x-any", "")], "h-present"),
        ("/h", vec![("x-no", "1")], "root"),
        ("/q?u=bob", vec![], "q-exact"),
        ("/q?u=bobby", vec![], "root"),
        ("/q?a=1&debug", vec![], "q-present"),
        (
            "/g",
            vec![("content-type", "application/grpc+proto")],
            "grpc",
        ),
        ("/g", vec![], "root"),
    ];
    for (p, hs, want) in cases {
        let mut h = http::HeaderMap::new();
        for (k, v) in hs {
            h.append(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        let (_, r) = t.route("any", p, &h).unwrap();
        assert_eq!(r.name, want, "path {p}");
    }
}

#[test]
fn weighted_choice_distribution() {
    let cw = |n: &str, w: u32| weighted_cluster::ClusterWeight {
        name: n.into(),
        weight: Some(UInt32Value { value: w }),
        ..Default::default()
    };
    let t = table(vec![vh(
        "v",
        &["*"],
        vec![RoutePb {
            r#match: Some(prefix("/")),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                    WeightedCluster {
                        clusters: vec![cw("a", 10), cw("b", 0), cw("c", 30)],
                        ..WeightedCluster::default()
                    },
                )),
                ..RouteAction::default()
            })),
            ..RoutePb::default()
        }],
    )]);
    let Action::Forward(f) = &t.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    let ClusterChoice::Weighted { targets, total } = &f.clusters else {
        panic!("weighted")
    };
    assert_eq!(*total, 40);
    let mut counts = std::collections::HashMap::new();
    for r in 0..40 {
        let c = ClusterChoice::pick_weighted(targets, r).unwrap();
        *counts.entry(c.cluster.as_str()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&10));
    assert_eq!(counts.get("b"), None);
    assert_eq!(counts.get("c"), Some(&30));
    assert_eq!(f.timeout, Some(std::time::Duration::from_secs(15)));
}

#[test]
fn redirect_locations() {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier as P, SchemeRewriteSpecifier as S,
    };
    let r = |f: fn(&mut RedirectAction)| {
        let mut a = RedirectAction::default();
        f(&mut a);
        action::redirect(&a).unwrap()
    };
    let cases: Vec<(action::Redirect, &str, &str, &str)> = vec![
        (
            r(|a| a.scheme_rewrite_specifier = Some(S::HttpsRedirect(true))),
            "foo.com:80",
            "/a?b=1",
            "https://foo.com/a?b=1",
        ),
        (
            r(|a| a.host_redirect = "bar.com".into()),
            "foo.com",
            "/a",
            "http://bar.com/a",
        ),
        (
            r(|a| {
                a.port_redirect = 8443;
                a.path_rewrite_specifier = Some(P::PathRedirect("/new".into()));
            }),
            "foo.com",
            "/a?q",
            "http://foo.com:8443/new?q",
        ),
        (
            r(|a| {
                a.path_rewrite_specifier = Some(P::PrefixRewrite("/v2/".into()));
                a.strip_query = true;
            }),
            "foo.com",
            "/v1/x?q=1",
            "http://foo.com/v2/x",
        ),
        (
            r(|a| a.path_rewrite_specifier = Some(P::PathRedirect("/p?z=9".into()))),
            "foo.com",
            "/a?q=1",
            "http://foo.com/p?z=9",
        ),
    ];
    for (i, (red, host, path, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            location(&red, "http", host, path, Some("/v1/")),
            want,
            "case {i}"
        );
    }
    assert_eq!(r(|a| a.response_code = 4).status, 308);
}

#[test]
fn unsupported_fields_name_their_path() {
    let bad_route = |a: RouteAction| {
        table_err(vec![vh(
            "v",
            &["*"],
            vec![
                rt("ok", prefix("/")),
                RoutePb {
                    r#match: Some(prefix("/")),
                    action: Some(route::Action::Route(a)),
                    ..RoutePb::default()
                },
            ],
        )])
    };
    let e = bad_route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::ClusterSpecifierPlugin(
            "p".into(),
        )),
        ..RouteAction::default()
    });
    assert_eq!(e.path, "virtual_hosts[0].routes[1].route.cluster_specifier");
    let e = bad_route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
        hedge_policy: Some(Default::default()),
        ..RouteAction::default()
    });
    assert_eq!(e.path, "virtual_hosts[0].routes[1].route.hedge_policy");
    let direct = RoutePb {
        r#match: Some(prefix("/")),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 99,
            ..Default::default()
        })),
        ..RoutePb::default()
    };
    let e = table_err(vec![vh("v", &["*"], vec![direct])]);
    assert_eq!(e.path, "virtual_hosts[0].routes[0].direct_response.status");
}

/// `max_stream_duration`: istiod's inbound form (0 s, `grpc_timeout_header_max`) compiles to
/// the header's cap; a duration of the proxy's own or an offset is refused by path.
#[test]
fn max_stream_duration_as_istiod_sends_it() {
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    use std::time::Duration;
    let d = |seconds| Some(PbDuration { seconds, nanos: 0 });
    let compiled = |m: route_action::MaxStreamDuration| {
        let action = RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
            max_stream_duration: Some(m),
            ..RouteAction::default()
        };
        let r = RoutePb {
            r#match: Some(prefix("/")),
            action: Some(route::Action::Route(action)),
            ..RoutePb::default()
        };
        compile(&RouteConfiguration {
            virtual_hosts: vec![vh("v", &["*"], vec![r])],
            ..RouteConfiguration::default()
        })
        .map(|t| match &t.virtual_hosts[0].routes[0].action {
            Action::Forward(f) => f.grpc_timeout_header_max,
            _ => panic!("a forwarding route"),
        })
        .map_err(|e| e.path)
    };
    let at = "virtual_hosts[0].routes[0].route.max_stream_duration";
    let cases: Vec<(
        route_action::MaxStreamDuration,
        Result<Option<Duration>, String>,
    )> = vec![
        (
            route_action::MaxStreamDuration {
                max_stream_duration: d(0),
                grpc_timeout_header_max: d(0),
                ..Default::default()
            },
            Ok(Some(Duration::ZERO)),
        ),
        (
            route_action::MaxStreamDuration {
                grpc_timeout_header_max: d(5),
                ..Default::default()
            },
            Ok(Some(Duration::from_secs(5))),
        ),
        (
            route_action::MaxStreamDuration {
                max_stream_duration: d(0),
                ..Default::default()
            },
            Ok(None),
        ),
        (
            route_action::MaxStreamDuration {
                max_stream_duration: d(3),
                ..Default::default()
            },
            Err(format!("{at}.max_stream_duration")),
        ),
        (
            route_action::MaxStreamDuration {
                grpc_timeout_header_max: d(0),
                grpc_timeout_header_offset: d(1),
                ..Default::default()
            },
            Err(format!("{at}.grpc_timeout_header_offset")),
        ),
    ];
    for (i, (m, want)) in cases.into_iter().enumerate() {
        assert_eq!(compiled(m), want, "case {i}");
    }
}

/// The deprecated `max_grpc_timeout` (istiod's outbound and gateway routes: `0s`) compiles
/// with its offset; beside `max_stream_duration` it is not used, as in Envoy.
#[test]
#[allow(deprecated)]
fn max_grpc_timeout_compiles_unless_max_stream_duration_is_set() {
    use super::action::GrpcRouteTimeout;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    use std::time::Duration;
    let d = |seconds| Some(PbDuration { seconds, nanos: 0 });
    let compiled = |action: RouteAction| {
        let action = RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
            ..action
        };
        let r = RoutePb {
            r#match: Some(prefix("/")),
            action: Some(route::Action::Route(action)),
            ..RoutePb::default()
        };
        compile(&RouteConfiguration {
            virtual_hosts: vec![vh("v", &["*"], vec![r])],
            ..RouteConfiguration::default()
        })
        .map(|t| match &t.virtual_hosts[0].routes[0].action {
            Action::Forward(f) => f.grpc_route_timeout,
            _ => panic!("a forwarding route"),
        })
        .map_err(|e| e.path)
    };
    let at = "virtual_hosts[0].routes[0].route";
    let cases: Vec<(RouteAction, Result<Option<GrpcRouteTimeout>, String>)> = vec![
        (
            RouteAction {
                timeout: d(0),
                max_grpc_timeout: d(0),
                ..RouteAction::default()
            },
            Ok(Some(GrpcRouteTimeout {
                max: Duration::ZERO,
                offset: None,
            })),
        ),
        (
            RouteAction {
                max_grpc_timeout: d(10),
                grpc_timeout_offset: d(1),
                ..RouteAction::default()
            },
            Ok(Some(GrpcRouteTimeout {
                max: Duration::from_secs(10),
                offset: Some(Duration::from_secs(1)),
            })),
        ),
        (
            RouteAction {
                grpc_timeout_offset: d(1),
                ..RouteAction::default()
            },
            Ok(None),
        ),
        (
            RouteAction {
                max_grpc_timeout: d(0),
                max_stream_duration: Some(route_action::MaxStreamDuration {
                    grpc_timeout_header_max: d(0),
                    ..Default::default()
                }),
                ..RouteAction::default()
            },
            Ok(None),
        ),
        (
            RouteAction {
                max_grpc_timeout: d(-1),
                ..RouteAction::default()
            },
            Err(format!("{at}.max_grpc_timeout")),
        ),
        (
            RouteAction {
                max_grpc_timeout: d(0),
                grpc_timeout_offset: d(-1),
                ..RouteAction::default()
            },
            Err(format!("{at}.grpc_timeout_offset")),
        ),
    ];
    for (i, (action, want)) in cases.into_iter().enumerate() {
        assert_eq!(compiled(action), want, "case {i}");
    }
}

fn table_err(vhs: Vec<VhPb>) -> CompileError {
    compile(&RouteConfiguration {
        virtual_hosts: vhs,
        ..RouteConfiguration::default()
    })
    .unwrap_err()
}

#[test]
fn per_filter_config_unknown_is_error_unless_optional() {
    use envoy_types::pb::envoy::config::route::v3::FilterConfig;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;
    let unknown = Any {
        type_url: "type.googleapis.com/some.Filter".into(),
        value: vec![],
    };
    let mut v = vh("v", &["*"], vec![rt("r", prefix("/"))]);
    v.typed_per_filter_config
        .insert("some.filter".into(), unknown.clone());
    let e = table_err(vec![v.clone()]);
    assert_eq!(
        e.path,
        "virtual_hosts[0].typed_per_filter_config[some.filter]"
    );
    let wrapped = FilterConfig {
        config: Some(unknown),
        is_optional: true,
        disabled: false,
    };
    v.typed_per_filter_config.insert(
        "some.filter".into(),
        Any {
            type_url: filters::FILTER_CONFIG_TYPE.into(),
            value: wrapped.encode_to_vec(),
        },
    );
    table(vec![v]);
}

#[test]
#[allow(deprecated)]
fn body_buffer_limits_route_over_virtual_host() {
    use envoy_types::pb::google::protobuf::UInt64Value;
    type Level = (Option<u32>, Option<u64>);
    // (virtual host's (per_request_buffer_limit_bytes, request_body_buffer_limit), route's,
    // compiled limit, effective under a 32 KiB listener limit).
    let cases: Vec<(Level, Level, BodyBufferLimit, usize)> = vec![
        (
            (None, None),
            (None, None),
            BodyBufferLimit::Connection,
            32768,
        ),
        (
            (Some(1000), None),
            (None, None),
            BodyBufferLimit::AtMost(1000),
            1000,
        ),
        // `per_request_buffer_limit_bytes` never raises the listener's limit.
        (
            (None, None),
            (Some(1 << 20), None),
            BodyBufferLimit::AtMost(1 << 20),
            32768,
        ),
        // `request_body_buffer_limit` does, and wins over the older field.
        (
            (None, None),
            (Some(10), Some(1 << 20)),
            BodyBufferLimit::Exactly(1 << 20),
            1 << 20,
        ),
        // The route's field replaces the virtual host's, even when larger.
        (
            (Some(1000), None),
            (Some(2000), None),
            BodyBufferLimit::AtMost(2000),
            2000,
        ),
        (
            (None, Some(5000)),
            (Some(100), None),
            BodyBufferLimit::AtMost(100),
            100,
        ),
        (
            (Some(100), None),
            (None, Some(5000)),
            BodyBufferLimit::Exactly(5000),
            5000,
        ),
    ];
    for (i, (vhost, route, want, effective)) in cases.into_iter().enumerate() {
        let mut r = rt("r", prefix("/"));
        r.per_request_buffer_limit_bytes = route.0.map(|value| UInt32Value { value });
        r.request_body_buffer_limit = route.1.map(|value| UInt64Value { value });
        let mut v = vh("v", &["*"], vec![r]);
        v.per_request_buffer_limit_bytes = vhost.0.map(|value| UInt32Value { value });
        v.request_body_buffer_limit = vhost.1.map(|value| UInt64Value { value });
        let t = table(vec![v]);
        let got = t.virtual_hosts[0].routes[0].buffer_limit;
        assert_eq!(got, want, "case {i}");
        assert_eq!(got.effective(32768), effective, "case {i}");
    }
}
