use super::*;
use envoy_types::pb::envoy::config::core::v3::SocketAddress;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, FilterChainMatch, ListenerFilter,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

fn any<M: Message>(type_url: &str, m: &M) -> envoy_types::pb::google::protobuf::Any {
    envoy_types::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn tcp_filter(cluster: &str) -> Filter {
    let p = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(TCP_PROXY_TYPE, &p))),
    }
}

fn chain(name: &str, m: Option<FilterChainMatch>) -> FilterChainProto {
    FilterChainProto {
        name: name.to_string(),
        filter_chain_match: m,
        filters: vec![tcp_filter(name)],
        ..Default::default()
    }
}

fn listener(chains: Vec<FilterChainProto>) -> Listener {
    Listener {
        name: "l".into(),
        address: Some(addr("0.0.0.0", 15006)),
        filter_chains: chains,
        ..Default::default()
    }
}

fn conn(dst: &str, sni: Option<&str>, transport: &'static str, alpn: &[&str]) -> ConnectionInfo {
    ConnectionInfo {
        destination: dst.parse().unwrap(),
        source: "10.0.0.9:40000".parse().unwrap(),
        server_name: sni.map(str::to_string),
        transport_protocol: transport,
        application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
    }
}

fn port_match(p: u32) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(UInt32Value { value: p }),
        ..Default::default()
    }
}

fn cidr_range(prefix: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: prefix.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

#[test]
fn filter_chain_selection_follows_envoy_order() {
    let l = compile(&listener(vec![
        chain("port-9080", Some(port_match(9080))),
        chain(
            "port-9080-tls",
            Some(FilterChainMatch {
                transport_protocol: "tls".into(),
                ..port_match(9080)
            }),
        ),
        chain(
            "http",
            Some(FilterChainMatch {
                application_protocols: vec!["http/1.1".into(), "h2c".into()],
                ..Default::default()
            }),
        ),
        chain(
            "narrow-ip",
            Some(FilterChainMatch {
                prefix_ranges: vec![cidr_range("10.1.2.0", 24)],
                ..port_match(8000)
            }),
        ),
        chain(
            "wide-ip",
            Some(FilterChainMatch {
                prefix_ranges: vec![cidr_range("10.1.0.0", 16)],
                ..port_match(8000)
            }),
        ),
        chain(
            "sni-exact",
            Some(FilterChainMatch {
                server_names: vec!["a.example.com".into()],
                ..port_match(443)
            }),
        ),
        chain(
            "sni-wild",
            Some(FilterChainMatch {
                server_names: vec!["*.example.com".into()],
                ..port_match(443)
            }),
        ),
        chain("catchall", None),
    ]))
    .unwrap();
    // (destination, SNI, transport, ALPN, expected chain)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'static str,
        &'a [&'a str],
        &'a str,
    );
    let cases: &[Case] = &[
        ("10.0.0.1:9080", None, "raw_buffer", &[], "port-9080"),
        ("10.0.0.1:9080", Some("x"), "tls", &[], "port-9080-tls"),
        // A port match beats an application-protocol match (port is compared first).
        (
            "10.0.0.1:9080",
            None,
            "raw_buffer",
            &["http/1.1"],
            "port-9080",
        ),
        ("10.0.0.1:7000", None, "raw_buffer", &["h2c"], "http"),
        ("10.0.0.1:7000", None, "raw_buffer", &[], "catchall"),
        ("10.1.2.3:8000", None, "raw_buffer", &[], "narrow-ip"),
        ("10.1.9.3:8000", None, "raw_buffer", &[], "wide-ip"),
        (
            "10.1.2.3:443",
            Some("a.example.com"),
            "tls",
            &[],
            "sni-exact",
        ),
        (
            "10.1.2.3:443",
            Some("b.example.com"),
            "tls",
            &[],
            "sni-wild",
        ),
    ];
    for (dst, sni, t, alpn, want) in cases {
        let got = l.select(&conn(dst, *sni, t, alpn)).map(|c| c.name.as_str());
        assert_eq!(got, Some(*want), "{dst} {sni:?} {t} {alpn:?}");
    }
    // Port 443 with an SNI no chain names: the SNI chains are skipped, nothing else names 443,
    // so no chain matches at all (Envoy does not back off to an earlier criterion).
    assert!(l
        .select(&conn("10.1.2.3:443", Some("other.org"), "tls", &[]))
        .is_none());
}

#[test]
fn default_chain_when_nothing_matches() {
    let mut proto = listener(vec![chain("only-80", Some(port_match(80)))]);
    proto.default_filter_chain = Some(chain("default", None));
    let l = compile(&proto).unwrap();
    let c = l
        .select(&conn("1.2.3.4:81", None, "raw_buffer", &[]))
        .unwrap();
    assert_eq!(c.name, "default");
}

#[test]
fn unsupported_fields_are_named() {
    let mut bad_filter = listener(vec![chain("c", None)]);
    bad_filter.filter_chains[0].filters[0] = Filter {
        name: "envoy.filters.network.redis_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
                        .into(),
                value: vec![],
            },
        )),
    };
    let mut bad_lf = listener(vec![chain("c", None)]);
    bad_lf.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.proxy_protocol".into(),
        ..Default::default()
    }];
    let mut transparent = listener(vec![chain("c", None)]);
    transparent.transparent = Some(BoolValue { value: true });
    let mut no_chain = listener(vec![]);
    no_chain.filter_chains.clear();
    let mut bad_port = listener(vec![chain("c", Some(port_match(70000)))]);
    bad_port.name = "l".into();
    let cases = [
        (bad_filter, "filter_chains[0].filters[0].typed_config: network filter envoy.filters.network.redis_proxy"),
        (bad_lf, "listener_filters[0]: listener filter envoy.filters.listener.proxy_protocol"),
        (transparent, "transparent: is not supported"),
        (no_chain, "filter_chains: no filter chain"),
        (bad_port, "filter_chains[0].filter_chain_match.destination_port: 70000 is out of range"),
    ];
    for (proto, want) in cases {
        let err = compile(&proto).unwrap_err().to_string();
        assert!(
            err.starts_with(want),
            "{err:?} does not start with {want:?}"
        );
    }
}

#[test]
fn istio_virtual_outbound_shape_compiles() {
    let mut proto = listener(vec![chain("virtualOutbound-catchall-tcp", None)]);
    proto.name = "virtualOutbound".into();
    proto.address = Some(addr("0.0.0.0", 15001));
    proto.use_original_dst = Some(BoolValue { value: true });
    proto.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
                        .into(),
                value: vec![],
            },
        )),
        ..Default::default()
    }];
    let l = compile(&proto).unwrap();
    assert!(l.use_original_dst && l.bind_to_port && l.listener_filters.lists_original_dst());
    assert_eq!(l.address, "0.0.0.0:15001".parse().unwrap());
    assert_eq!(l.filters_timeout, Some(DEFAULT_FILTERS_TIMEOUT));
    match &l.chains[0].filter {
        NetworkFilter::Tcp(t) => {
            assert_eq!(
                t.clusters,
                vec![("virtualOutbound-catchall-tcp".to_string(), 1)]
            );
            assert_eq!(t.idle_timeout, Some(DEFAULT_TCP_IDLE));
        }
        other => panic!("expected a TCP proxy, got {other:?}"),
    }
    assert_eq!(l.rds_names().count(), 0);
}

#[test]
fn tcp_weights_pick_by_roll() {
    let t = TcpProxyConfig {
        stat_prefix: "s".into(),
        clusters: vec![("a".into(), 80), ("b".into(), 20)],
        idle_timeout: None,
    };
    assert_eq!(t.total_weight(), 100);
    assert_eq!(t.pick(0), Some("a"));
    assert_eq!(t.pick(79), Some("a"));
    assert_eq!(t.pick(80), Some("b"));
    assert_eq!(t.pick(99), Some("b"));
}

#[test]
fn cidr_containment() {
    let c = cidr(&cidr_range("10.1.0.0", 16)).unwrap();
    assert!(c.contains("10.1.255.1".parse().unwrap()));
    assert!(!c.contains("10.2.0.1".parse().unwrap()));
    let all = cidr(&cidr_range("0.0.0.0", 0)).unwrap();
    assert!(all.contains("192.168.1.1".parse().unwrap()));
    let v6 = cidr(&cidr_range("fd00::", 8)).unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
}

fn network_rbac_filter(
    r: &envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac,
) -> Filter {
    Filter {
        name: "envoy.filters.network.rbac".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(NETWORK_RBAC_TYPE, r))),
    }
}

/// Istio's inbound TCP chain: network RBAC filters, then `tcp_proxy`. Other filters before the
/// terminal one, and RBAC fields we do not implement, are NACKed by path.
#[test]
fn network_rbac_before_tcp_proxy() {
    use envoy_types::pb::envoy::config::rbac::v3 as rbac;
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetRbac;
    let deny_port = NetRbac {
        stat_prefix: "tcp.".into(),
        rules: Some(rbac::Rbac {
            action: rbac::rbac::Action::Deny as i32,
            policies: [(
                "p".to_string(),
                rbac::Policy {
                    permissions: vec![rbac::Permission {
                        rule: Some(rbac::permission::Rule::DestinationPort(9000)),
                    }],
                    principals: vec![rbac::Principal {
                        identifier: Some(rbac::principal::Identifier::Any(true)),
                    }],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }),
        delay_deny: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut l = listener(vec![chain("c", None)]);
    l.filter_chains[0]
        .filters
        .insert(0, network_rbac_filter(&deny_port));
    let compiled = compile(&l).unwrap();
    let c = &compiled.chains[0];
    assert_eq!(c.rbac.len(), 1);
    assert_eq!(c.rbac[0].stats_instance, "rbac");
    assert_eq!(c.rbac[0].delay_deny, Some(Duration::from_secs(1)));
    assert!(matches!(c.filter, NetworkFilter::Tcp(_)));

    let mut with_matcher = deny_port.clone();
    with_matcher.matcher = Some(Default::default());
    let mut l = listener(vec![chain("c", None)]);
    l.filter_chains[0]
        .filters
        .insert(0, network_rbac_filter(&with_matcher));
    let err = compile(&l).unwrap_err().to_string();
    assert!(
        err.starts_with("filter_chains[0].filters[0].typed_config.matcher"),
        "{err}"
    );

    let mut l = listener(vec![chain("c", None)]);
    l.filter_chains[0].filters.insert(0, tcp_filter("first"));
    let err = compile(&l).unwrap_err().to_string();
    assert!(
        err.contains("filters[0]") && err.contains("not supported before the terminal filter"),
        "{err}"
    );
}

#[test]
fn per_connection_buffer_limit() {
    // (per_connection_buffer_limit_bytes, compiled limit): Envoy's 1 MiB by default, and a
    // limit of 0 (none) leaves the router's at its maximum, `u32::MAX`.
    let cases = [
        (None, 1 << 20),
        (Some(32 * 1024), 32 * 1024),
        (Some(0), u32::MAX as usize),
    ];
    for (set, want) in cases {
        let l = Listener {
            per_connection_buffer_limit_bytes: set.map(|value| UInt32Value { value }),
            ..listener(vec![chain("a", None)])
        };
        assert_eq!(compile(&l).unwrap().buffer_limit, want, "{set:?}");
    }
}
