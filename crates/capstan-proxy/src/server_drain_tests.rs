//! Drains over loopback through [`run`]: an upgraded (WebSocket) stream open when its listener
//! is updated, or when the proxy shuts down, works on within the drain window and is closed on
//! both sides when the window ends, as Envoy closes a draining listener's last connections; so
//! is a plain HTTP connection whose response has not ended by then.

use super::*;
use crate::resources::{ResourceSink, Update, LISTENER};
use crate::stats::Stats;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{RouteSpecifier, UpgradeConfig},
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;

const DRAIN: Duration = Duration::from_millis(800);
const WITHIN: Duration = Duration::from_secs(5);

/// An upstream that answers any request with `head` and then, with `echo`, echoes every byte,
/// or else holds the connection until the proxy closes it; how many of its streams are open.
async fn upstream(head: &'static str, echo: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                if read_head(&mut sock).await.is_none() {
                    return;
                }
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if echo {
                    let (mut rd, mut wr) = sock.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                } else {
                    let mut rest = Vec::new();
                    let _ = sock.read_to_end(&mut rest).await;
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Answers with `101` and echoes (a WebSocket's upstream).
async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let head =
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
    upstream(head, true).await
}

/// Answers with `200` and one chunk of a body it never ends.
async fn endless_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    upstream(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        false,
    )
    .await
}

/// Reads up to the end of an HTTP/1.1 head; the head.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An HTTP listener on `port` allowing WebSocket, everything routed to cluster `up`;
/// `stat_prefix` tells its versions apart.
fn http_listener(port: u16, stat_prefix: &str) -> Listener {
    let routes = RouteConfiguration {
        name: "inline".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["*".into()],
            routes: vec![crate::http::tests::prefix_route(
                "/",
                route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
                    ..RouteAction::default()
                }),
            )],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    .into(),
                value: vec![],
            })),
            ..HttpFilter::default()
        }],
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..UpgradeConfig::default()
        }],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: "http".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager".into(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

fn apply_listener(store: &Store, l: &Listener, version: &str) {
    store
        .apply(
            LISTENER,
            vec![Update {
                name: l.name.clone(),
                version: version.into(),
                resource: Any {
                    type_url: LISTENER.into(),
                    value: l.encode_to_vec(),
                },
            }],
            &[],
            false,
        )
        .unwrap();
}

/// Connects to the proxy on `port`, waiting (bounded) for it to listen.
async fn connect(port: u16) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the listener never bound 127.0.0.1:{port}");
}

/// Opens a WebSocket through the proxy on `port` (waiting for it to listen); the upgraded
/// connection.
async fn websocket(port: u16) -> TcpStream {
    let mut sock = connect(port).await;
    let req =
        "GET /chat HTTP/1.1\r\nhost: app\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
    sock.write_all(req.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(WITHIN, read_head(&mut sock))
        .await
        .expect("answered in time")
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    sock
}

async fn echo(sock: &mut TcpStream, msg: &[u8]) {
    sock.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(WITHIN, sock.read_exact(&mut got))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(got, msg);
}

/// Waits for the stream to be closed (EOF or reset); when it was, counted from `begun`.
async fn closed_after(sock: &mut TcpStream, begun: Instant) -> Duration {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WITHIN, sock.read_to_end(&mut rest))
        .await
        .expect("the end of the drain window closes the upgraded stream");
    begun.elapsed()
}

/// Waits until the upstream has `left` streams open and the `stat_prefix` version none.
async fn streams_left(upstream_open: &AtomicUsize, left: usize, store: &Store, stat_prefix: &str) {
    let stats = store.stats().http(stat_prefix);
    let deadline = Instant::now() + WITHIN;
    while upstream_open.load(Ordering::SeqCst) != left
        || stats.downstream_cx_upgrades_active.get() != 0
    {
        assert!(
            Instant::now() < deadline,
            "upstream streams open {}, upgrades active {}",
            upstream_open.load(Ordering::SeqCst),
            stats.downstream_cx_upgrades_active.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy serving [`http_listener`] on a free port, in front of the echo upstream.
async fn proxy() -> (
    u16,
    Arc<Store>,
    Arc<AtomicUsize>,
    watch::Sender<bool>,
    JoinHandle<()>,
) {
    proxy_to(echo_upstream().await).await
}

async fn proxy_to(
    (up, open): (SocketAddr, Arc<AtomicUsize>),
) -> (
    u16,
    Arc<Store>,
    Arc<AtomicUsize>,
    watch::Sender<bool>,
    JoinHandle<()>,
) {
    let store = Store::new(Arc::new(Stats::default()));
    crate::http::tests::apply_static_cluster(&store, "up", up);
    let port = super::filter_disabled_tests::free_port();
    apply_listener(&store, &http_listener(port, "v1"), "1");
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(run(store.clone(), rx, DRAIN));
    (port, store, open, shutdown, server)
}

#[tokio::test]
async fn a_listener_update_closes_an_upgraded_stream_when_the_drain_window_ends() {
    let (port, store, upstream_open, shutdown, server) = proxy().await;
    let mut ws = websocket(port).await;
    echo(&mut ws, b"v1").await;
    let begun = Instant::now();
    apply_listener(&store, &http_listener(port, "v2"), "2");
    // The new version serves new connections at once.
    let mut fresh = websocket(port).await;
    echo(&mut fresh, b"v2").await;
    assert_eq!(
        store.stats().http("v2").downstream_cx_upgrades_total.get(),
        1
    );
    echo(&mut ws, b"still v1, within the window").await;
    let after = closed_after(&mut ws, begun).await;
    assert!(
        after >= DRAIN - Duration::from_millis(100),
        "closed at the end of the window, not before: {after:?}"
    );
    streams_left(&upstream_open, 1, &store, "v1").await;
    // The new version's stream is not drained.
    echo(&mut fresh, b"v2 goes on").await;
    drop(fresh);
    shutdown.send_replace(true);
    tokio::time::timeout(WITHIN, server)
        .await
        .expect("drained")
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_an_upgraded_stream_when_the_drain_window_ends() {
    let (port, store, upstream_open, shutdown, server) = proxy().await;
    let mut ws = websocket(port).await;
    echo(&mut ws, b"hello").await;
    let begun = Instant::now();
    shutdown.send_replace(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    echo(&mut ws, b"within the window").await;
    let after = closed_after(&mut ws, begun).await;
    assert!(
        after >= DRAIN - Duration::from_millis(100),
        "closed at the end of the window, not before: {after:?}"
    );
    streams_left(&upstream_open, 0, &store, "v1").await;
    tokio::time::timeout(WITHIN, server)
        .await
        .expect("drained")
        .unwrap();
}

#[tokio::test]
async fn a_listener_update_closes_a_response_still_open_when_the_drain_window_ends() {
    let (port, store, upstream_open, shutdown, server) = proxy_to(endless_upstream().await).await;
    let mut sock = connect(port).await;
    sock.write_all(b"GET /stream HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let head = tokio::time::timeout(WITHIN, read_head(&mut sock))
        .await
        .expect("answered in time")
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let begun = Instant::now();
    apply_listener(&store, &http_listener(port, "v2"), "2");
    // The response is still open; the drain lets it run for the window, then closes.
    let after = closed_after(&mut sock, begun).await;
    assert!(
        after >= DRAIN - Duration::from_millis(100),
        "closed at the end of the window, not before: {after:?}"
    );
    let deadline = Instant::now() + WITHIN;
    while upstream_open.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream is closed too"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.stats().http("v1").downstream_cx_active.get(), 0);
    shutdown.send_replace(true);
    tokio::time::timeout(WITHIN, server)
        .await
        .expect("drained")
        .unwrap();
}
