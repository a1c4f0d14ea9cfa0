//! Upgrades through `serve_connection` over loopback: an echoing upstream that accepts any
//! `Upgrade`, a hyper client that upgrades, and the cases Envoy refuses with a 403.

use super::tests::{apply_static_cluster, hcm_config, prefix_route, start_with};
use super::*;
use crate::stats::Stats;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::google::protobuf::BoolValue;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers an upgrade request with `101` and then echoes every byte, and a
/// plain request with 200 and the `connection` / `upgrade` headers it received, after
/// `x-delay-ms` when the request has it.
pub(super) async fn echo_upstream() -> SocketAddr {
    echo_upstream_counting().await.0
}

/// [`echo_upstream`], and how many upgraded streams it has open.
async fn echo_upstream_counting() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let count = count.clone();
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let seen = |name| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let (connection, kind) = (seen("connection"), seen("upgrade"));
                let delay = seen("x-delay-ms").parse().map(Duration::from_millis).ok();
                let upgrade = (kind != "-").then(|| hyper::upgrade::on(&mut req));
                let count = count.clone();
                async move {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        format!("connection={connection} upgrade={kind}"),
                    )));
                    if let Some(upgrade) = upgrade {
                        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("connection", HeaderValue::from_static("upgrade"));
                        r.headers_mut()
                            .insert("upgrade", HeaderValue::from_str(&kind).unwrap());
                        tokio::spawn(async move {
                            let Ok(io) = upgrade.await else { return };
                            count.fetch_add(1, Ordering::SeqCst);
                            let (mut rd, mut wr) = tokio::io::split(TokioIo::new(io));
                            let _ = tokio::io::copy(&mut rd, &mut wr).await;
                            let _ = wr.shutdown().await;
                            count.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .with_upgrades(),
            );
        }
    });
    (addr, open)
}

fn forward(prefix: &str, upgrades: Vec<route_action::UpgradeConfig>) -> route::Action {
    route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
        // A route timeout shorter than the tunnels' life: it must not cut them.
        timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        upgrade_configs: upgrades,
        prefix_rewrite: prefix.into(),
        ..RouteAction::default()
    })
}

fn route_upgrade(kind: &str, enabled: bool) -> route_action::UpgradeConfig {
    route_action::UpgradeConfig {
        upgrade_type: kind.into(),
        enabled: Some(BoolValue { value: enabled }),
        ..route_action::UpgradeConfig::default()
    }
}

/// A store with cluster `up` (the echo upstream) and route `80`: `/ws` (the connection
/// manager decides), `/no-ws` (WebSocket disabled on the route), `/foo` (upgrade `foo` enabled
/// on the route only), `/plain` (no route timeout).
async fn store() -> Arc<Store> {
    store_for(echo_upstream().await)
}

/// [`store`] with cluster `up` at `upstream`.
pub(super) fn store_for(upstream: SocketAddr) -> Arc<Store> {
    let store = Store::new(Arc::new(Stats::default()));
    apply_static_cluster(&store, "up", upstream);
    let rc = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["*".into()],
            routes: vec![
                prefix_route("/ws", forward("", vec![])),
                prefix_route(
                    "/no-ws",
                    forward("", vec![route_upgrade("websocket", false)]),
                ),
                prefix_route("/foo", forward("", vec![route_upgrade("foo", true)])),
                prefix_route(
                    "/plain",
                    route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            "up".into(),
                        )),
                        ..RouteAction::default()
                    }),
                ),
            ],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    super::tests::apply_routes(&store, &rc.name, "1", &rc);
    store
}

pub(super) fn hcm(websocket: bool, idle: Option<Duration>) -> HcmConfig {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig;
    let configs = if websocket {
        vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..UpgradeConfig::default()
        }]
    } else {
        Vec::new()
    };
    HcmConfig {
        upgrades: upgrade::compile_hcm(&configs).unwrap(),
        stream_idle_timeout: idle,
        ..hcm_config()
    }
}

/// Sends one request with `headers` on a new HTTP/1.1 connection; the response, and the
/// upgraded connection when it is a 101.
pub(super) async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (
    u16,
    http::HeaderMap,
    String,
    Option<TokioIo<hyper::upgrade::Upgraded>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(c.with_upgrades());
    let mut req = Request::builder().uri(path).header("host", "app");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = s
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let head = resp.headers().clone();
    if status == 101 {
        let io = hyper::upgrade::on(&mut resp).await.unwrap();
        return (status, head, String::new(), Some(TokioIo::new(io)));
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        head,
        String::from_utf8_lossy(&body).into_owned(),
        None,
    )
}

pub(super) const WS: [(&str, &str); 2] = [("connection", "Upgrade"), ("upgrade", "websocket")];

/// Half-closes the client's side of a tunnel whose upstream echoes: the upstream's echo ends,
/// so does its half, and the tunnel closes with nothing more to read and is no longer counted
/// active (each wait bounded to 5 s).
pub(super) async fn close_tunnel<T>(mut io: T, stats: &crate::stats::HttpStats)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes")
        .unwrap();
    assert!(rest.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.downstream_cx_upgrades_active.get() != 0 {
        assert!(Instant::now() < deadline, "tunnel still counted as active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) async fn echo(io: &mut TokioIo<hyper::upgrade::Upgraded>, msg: &[u8]) -> Vec<u8> {
    io.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut got))
        .await
        .expect("echo within 5 s")
        .unwrap();
    got
}

#[tokio::test]
async fn websocket_upgrades_tunnel_bytes_both_ways() {
    let store = store().await;
    let (addr, _drain) = start_with(store.clone(), hcm(true, None)).await;
    let (status, head, _, io) = request(addr, "/ws", &WS).await;
    assert_eq!(status, 101);
    assert_eq!(head["upgrade"], "websocket");
    assert!(head.contains_key("x-envoy-upstream-service-time"));
    let mut io = io.expect("upgraded");
    assert_eq!(echo(&mut io, b"hello").await, b"hello");
    // The 200 ms route timeout does not apply to the upgraded stream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(echo(&mut io, b"still there").await, b"still there");
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_cx_upgrades_total.get(), 1);
    assert_eq!(stats.downstream_cx_upgrades_active.get(), 1);
    // Closing our side: the upstream echo ends, and so does the tunnel.
    close_tunnel(io, &stats).await;
    assert_eq!(stats.downstream_cx_active.get(), 0);
}

#[tokio::test]
async fn refused_upgrades_get_a_403_and_plain_requests_lose_their_upgrade_headers() {
    let store = store().await;
    let (addr, _drain) = start_with(store.clone(), hcm(true, None)).await;
    // (path, headers, status): the route disables WebSocket; `foo` is not in the connection
    // manager's list but the `/foo` route enables it; CONNECT is never configured.
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Headers, u16)> = vec![
        ("/no-ws", WS.to_vec(), 403),
        (
            "/ws",
            vec![("connection", "upgrade"), ("upgrade", "foo")],
            403,
        ),
        (
            "/foo",
            vec![("connection", "upgrade"), ("upgrade", "foo")],
            101,
        ),
        ("/foo", WS.to_vec(), 101),
    ];
    for (path, headers, want) in cases {
        let (status, _, body, _) = request(addr, path, &headers).await;
        assert_eq!(status, want, "{path} {headers:?}");
        if want == 403 {
            assert_eq!(body, "", "Envoy's upgrade refusal has no body");
        }
    }
    // Without `Connection: upgrade` it is a plain request, sent without its upgrade headers.
    let (status, _, body, _) = request(
        addr,
        "/no-ws",
        &[("upgrade", "websocket"), ("connection", "keep-alive")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "connection=- upgrade=-"));
    // A connection manager without `upgrade_configs` refuses WebSocket.
    let (addr, _drain2) = start_with(store, hcm(false, None)).await;
    assert_eq!(request(addr, "/ws", &WS).await.0, 403);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(c);
    let connect = Request::builder()
        .method(http::Method::CONNECT)
        .uri("app:443")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(s.send_request(connect).await.unwrap().status(), 403);
}

#[tokio::test]
async fn the_stream_idle_timeout_closes_an_idle_tunnel() {
    let store = store().await;
    let (addr, _drain) = start_with(store, hcm(true, Some(Duration::from_millis(300)))).await;
    let (status, _, _, io) = request(addr, "/ws", &WS).await;
    assert_eq!(status, 101);
    let mut io = io.expect("upgraded");
    assert_eq!(echo(&mut io, b"x").await, b"x");
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// Envoy closes what is left of a draining listener's connections when the drain time ends:
/// an upgraded stream open through the drain works on within the window and is closed, on both
/// sides, when it ends, while a plain request in flight finishes.
#[tokio::test]
async fn a_drain_closes_an_upgraded_stream_when_its_window_ends() {
    use std::sync::atomic::Ordering;
    let (upstream, upstream_open) = echo_upstream_counting().await;
    let store = store_for(upstream);
    let (addr, drainer) = start_with(store.clone(), hcm(true, None)).await;
    let (status, _, _, io) = request(addr, "/ws", &WS).await;
    assert_eq!(status, 101);
    let mut io = io.expect("upgraded");
    assert_eq!(echo(&mut io, b"before").await, b"before");
    assert_eq!(upstream_open.load(Ordering::SeqCst), 1);
    // A plain request in flight when the drain begins, answered 300 ms after it was sent.
    let slow = tokio::spawn(request(addr, "/plain", &[("x-delay-ms", "300")]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let window = Duration::from_millis(1000);
    let begun = Instant::now();
    drainer.start(window);
    assert_eq!(
        echo(&mut io, b"during").await,
        b"during",
        "the stream goes on within the window"
    );
    let (status, _, body, _) = slow.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "connection=- upgrade=-"),
        "the in-flight request finishes"
    );
    assert!(begun.elapsed() < window);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest))
        .await
        .expect("the end of the drain window closes the upgraded stream");
    assert!(
        begun.elapsed() >= window - Duration::from_millis(50),
        "closed at the end of the window, not before: {:?}",
        begun.elapsed()
    );
    let stats = store.stats().http("test");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.downstream_cx_upgrades_active.get() != 0
        || stats.downstream_cx_active.get() != 0
        || upstream_open.load(Ordering::SeqCst) != 0
    {
        assert!(
            Instant::now() < deadline,
            "upgrades active {}, connections active {}, upstream streams open {}",
            stats.downstream_cx_upgrades_active.get(),
            stats.downstream_cx_active.get(),
            upstream_open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
