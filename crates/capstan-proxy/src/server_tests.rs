//! The accept path over loopback: an inspector turned off by `filter_disabled` does not hold a
//! server-first protocol's connection back, as istiod relies on for virtualInbound.

use super::*;
use crate::resources::{ResourceSink, Update, LISTENER};
use crate::stats::Stats;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, listener_filter_chain_match_predicate::Rule, Filter, FilterChain,
    Listener, ListenerFilter, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::io::AsyncWriteExt;

const GREETING: &[u8] = b"220 ready\r\n";

/// An upstream that speaks first, as MySQL or SMTP servers do.
async fn greeting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.write_all(GREETING).await;
                let mut sink = [0u8; 64];
                while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A free port below the ephemeral range (the listener binds it right after; see
/// `capstan_e2e::free_port`).
pub(super) fn free_port() -> u16 {
    capstan_e2e::free_port()
}

/// A listener on `port` whose HTTP inspector is disabled on `disabled_ports` (`[start, end)`),
/// in front of a TCP proxy to cluster `greeter`; its inspectors wait up to 10 s.
fn listener(port: u16, disabled_ports: Option<(i32, i32)>) -> Listener {
    let tcp = TcpProxy {
        stat_prefix: "greeter".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("greeter".into())),
        ..TcpProxy::default()
    };
    Listener {
        name: "server-first".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..SocketAddress::default()
            })),
        }),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.http_inspector".into(),
            filter_disabled: disabled_ports.map(|(start, end)| ListenerFilterChainMatchPredicate {
                rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
            }),
            config_type: Some(listener_filter::ConfigType::TypedConfig(Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
                        .into(),
                value: vec![],
            })),
        }],
        listener_filters_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 10,
            nanos: 0,
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy".into(),
                    value: tcp.encode_to_vec(),
                })),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// Runs `l` in front of the greeting upstream; the client's first read, if it comes within
/// `wait`.
async fn first_read(l: Listener, wait: Duration) -> Option<Vec<u8>> {
    let store = Store::new(Arc::new(Stats::default()));
    crate::http::tests::apply_static_cluster(&store, "greeter", greeting_upstream().await);
    let port = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(SocketAddress {
            port_specifier: Some(socket_address::PortSpecifier::PortValue(p)),
            ..
        })) => *p as u16,
        _ => unreachable!("the test listener has a port"),
    };
    store
        .apply(
            LISTENER,
            vec![Update {
                name: l.name.clone(),
                version: "1".into(),
                resource: Any {
                    type_url: LISTENER.into(),
                    value: l.encode_to_vec(),
                },
            }],
            &[],
            false,
        )
        .unwrap();
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(run(store, rx, Duration::from_millis(100)));
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("the listener binds its port");
    let mut buf = vec![0u8; GREETING.len()];
    let got = tokio::time::timeout(wait, client.read_exact(&mut buf))
        .await
        .ok()
        .map(|r| r.map(|_| buf).unwrap_or_default());
    drop(client);
    shutdown.send_replace(true);
    let _ = server.await;
    got
}

#[tokio::test]
async fn an_inspector_disabled_on_the_port_lets_the_server_speak_first() {
    // Enabled, the HTTP inspector waits for the client's first bytes, which never come.
    let port = free_port();
    let held = first_read(
        listener(port, Some((1, i32::from(port)))),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(held, None, "the inspector should hold the connection");
    // Disabled on this port (`[port, port + 1)`), the greeting arrives at once.
    let port = free_port();
    let range = (i32::from(port), i32::from(port) + 1);
    let greeted = first_read(listener(port, Some(range)), Duration::from_secs(5)).await;
    assert_eq!(greeted.as_deref(), Some(GREETING));
}
