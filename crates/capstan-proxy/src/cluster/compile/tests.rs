//! Tables: Istio-shaped clusters compile to the expected config; unsupported fields are NACKed
//! with their path.

use super::*;
use crate::cluster::pool::UpstreamProtocol;
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, OutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket, BindConfig, HealthCheck, Http2ProtocolOptions, SocketAddress,
    TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::Message;

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn secs(seconds: i64) -> Option<envoy_types::pb::google::protobuf::Duration> {
    Some(envoy_types::pb::google::protobuf::Duration { seconds, nanos: 0 })
}

fn typed(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

/// Istio's outbound EDS cluster with a DestinationRule's pool and outlier settings.
fn istio_outbound() -> Cluster {
    Cluster {
        name: "outbound|9080||reviews.default.svc.cluster.local".into(),
        connect_timeout: secs(10),
        cluster_discovery_type: typed(cluster::DiscoveryType::Eds),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: None,
            service_name: "outbound|9080||reviews.default.svc.cluster.local".into(),
        }),
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: u32v(10),
                max_pending_requests: u32v(u32::MAX),
                max_requests: u32v(u32::MAX),
                max_retries: u32v(u32::MAX),
                track_remaining: true,
                ..Thresholds::default()
            }],
            ..CircuitBreakers::default()
        }),
        outlier_detection: Some(OutlierDetection {
            enforcing_success_rate: u32v(0),
            consecutive_5xx: u32v(3),
            enforcing_consecutive_5xx: u32v(100),
            interval: secs(1),
            base_ejection_time: secs(60),
            max_ejection_percent: u32v(100),
            ..OutlierDetection::default()
        }),
        ..Cluster::default()
    }
}

fn cares(c: CaresDnsResolverConfig) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: "envoy.network.dns_resolver.cares".into(),
        typed_config: Some(Any {
            type_url: "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig".into(),
            value: c.encode_to_vec(),
        }),
    }
}

fn h2_options() -> std::collections::HashMap<String, Any> {
    let o = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions {
                        max_concurrent_streams: u32v(1000),
                        ..Http2ProtocolOptions::default()
                    },
                )),
            },
        )),
        ..HttpProtocolOptions::default()
    };
    [(
        protocol::HTTP_OPTIONS.to_string(),
        Any {
            type_url: format!("type.googleapis.com/{}", protocol::HTTP_OPTIONS),
            value: o.encode_to_vec(),
        },
    )]
    .into()
}

#[test]
fn istio_clusters_compile() {
    let c = compile(&istio_outbound()).expect("Istio's outbound cluster");
    assert_eq!(c.discovery, Discovery::Eds(c.name.clone()));
    assert_eq!(c.lb.policy, LbPolicy::LeastRequest { choice_count: 2 });
    assert_eq!(c.breaker.max_connections, 10);
    assert_eq!(c.pool.connect_timeout, Duration::from_secs(10));
    let o = c.outlier.expect("outlier detection");
    assert_eq!(
        (o.consecutive_5xx, o.base_ejection_time),
        (3, Duration::from_secs(60))
    );

    let passthrough = compile(&Cluster {
        name: "InboundPassthroughCluster".into(),
        cluster_discovery_type: typed(cluster::DiscoveryType::OriginalDst),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        upstream_bind_config: Some(BindConfig {
            source_address: Some(SocketAddress {
                address: "127.0.0.6".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..SocketAddress::default()
            }),
            ..BindConfig::default()
        }),
        ..Cluster::default()
    })
    .expect("passthrough");
    assert_eq!(passthrough.discovery, Discovery::OriginalDst);
    assert_eq!(passthrough.pool.bind, Some([127, 0, 0, 6].into()));

    let h2 = compile(&Cluster {
        typed_extension_protocol_options: h2_options(),
        ..istio_outbound()
    })
    .expect("h2 cluster");
    assert_eq!(h2.pool.protocol, UpstreamProtocol::Http2);

    let dns = compile(&Cluster {
        name: "outbound|443||example.com".into(),
        cluster_discovery_type: typed(cluster::DiscoveryType::StrictDns),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        load_assignment: Some(crate::cluster::endpoints::tests::cla(vec![
            crate::cluster::endpoints::tests::lb_endpoint("example.com", 443),
        ])),
        // istiod's resolver config for every DNS cluster.
        typed_dns_resolver_config: Some(cares(CaresDnsResolverConfig {
            udp_max_queries: u32v(100),
            ..CaresDnsResolverConfig::default()
        })),
        respect_dns_ttl: true,
        ..Cluster::default()
    })
    .expect("dns cluster");
    assert_eq!(dns.discovery, Discovery::Dns);
    assert_eq!(dns.dns.expect("dns settings").family, LookupFamily::V4Only);
}

#[test]
fn unsupported_fields_are_rejected_with_their_path() {
    let tls = TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url:
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
                    .into(),
            value: prost::Message::encode_to_vec(
                &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext {
                    common_tls_context: Some(
                        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext {
                            tls_certificate_sds_secret_configs: vec![
                                envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
                                    name: "kubernetes://client-cred".into(),
                                    sds_config: None,
                                },
                            ],
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                },
            ),
        })),
    };
    let raw = TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: None,
    };
    let mut high = istio_outbound();
    if let Some(cb) = &mut high.circuit_breakers {
        cb.thresholds[0].priority = RoutingPriority::High as i32;
    }
    let cases: Vec<(Cluster, &str, &str)> = vec![
        (
            Cluster {
                transport_socket: Some(tls.clone()),
                ..istio_outbound()
            },
            "transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name",
            "is not served by this proxy",
        ),
        (
            Cluster {
                transport_socket_matches: vec![
                    cluster::TransportSocketMatch {
                        name: "plain".into(),
                        transport_socket: Some(raw.clone()),
                        ..Default::default()
                    },
                    cluster::TransportSocketMatch {
                        name: "tls".into(),
                        transport_socket: Some(tls),
                        ..Default::default()
                    },
                ],
                ..istio_outbound()
            },
            "transport_socket_matches[1].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name",
            "is not served by this proxy",
        ),
        (
            Cluster {
                health_checks: vec![HealthCheck::default()],
                ..istio_outbound()
            },
            "health_checks",
            "not supported",
        ),
        (high, "circuit_breakers.thresholds[0]", "DEFAULT"),
        (
            Cluster {
                outlier_detection: Some(OutlierDetection::default()),
                ..istio_outbound()
            },
            "outlier_detection.enforcing_success_rate",
            "success-rate",
        ),
        (
            Cluster {
                lb_policy: cluster::LbPolicy::Maglev as i32,
                lb_config: Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                    table_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                        value: 1000,
                    }),
                })),
                ..istio_outbound()
            },
            "maglev_lb_config.table_size",
            "prime",
        ),
        (
            Cluster {
                lb_policy: cluster::LbPolicy::ClusterProvided as i32,
                ..istio_outbound()
            },
            "lb_policy",
            "ORIGINAL_DST",
        ),
        (
            Cluster {
                cluster_discovery_type: typed(cluster::DiscoveryType::Static),
                load_assignment: Some(crate::cluster::endpoints::tests::cla(vec![
                    crate::cluster::endpoints::tests::lb_endpoint("not-an-ip", 80),
                ])),
                ..istio_outbound()
            },
            "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
            "not an IP",
        ),
        (
            Cluster {
                common_http_protocol_options: Some(
                    envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
                        max_stream_duration: secs(1),
                        ..Default::default()
                    },
                ),
                ..istio_outbound()
            },
            "common_http_protocol_options",
            "only idle_timeout",
        ),
        (
            Cluster {
                typed_dns_resolver_config: Some(cares(CaresDnsResolverConfig {
                    resolvers: vec![envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(
                            envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                                SocketAddress {
                                    address: "127.0.0.1".into(),
                                    port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                        15053,
                                    )),
                                    ..SocketAddress::default()
                                },
                            ),
                        ),
                    }],
                    ..CaresDnsResolverConfig::default()
                })),
                ..istio_outbound()
            },
            "typed_dns_resolver_config.typed_config.resolvers",
            "custom name servers",
        ),
    ];
    for (input, path, message) in cases {
        let e = compile(&input).expect_err(path);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    // Plaintext-only socket matches are fine.
    let plain = Cluster {
        transport_socket_matches: vec![cluster::TransportSocketMatch {
            name: "plain".into(),
            transport_socket: Some(raw),
            ..Default::default()
        }],
        ..istio_outbound()
    };
    assert!(compile(&plain).is_ok());
}
