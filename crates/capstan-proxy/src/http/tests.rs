//! End-to-end tests of `serve_connection` with a real hyper client over loopback.

use super::*;
use crate::resources::{ResourceSink, Update, ROUTE};
use crate::stats::Stats;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, DirectResponseAction, RedirectAction, Route as RoutePb,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use prost::Message;

/// An HCM config with Envoy's defaults reading RDS route `80`.
pub(crate) fn hcm_config() -> HcmConfig {
    HcmConfig {
        stat_prefix: "test".into(),
        routes: RouteSource::Rds("80".into()),
        codec: Codec::Auto,
        filters: Vec::new(),
        stream_idle_timeout: None,
        request_timeout: None,
        use_remote_address: false,
        xff_num_trusted_hops: 0,
        skip_xff_append: false,
        generate_request_id: true,
        preserve_external_request_id: false,
        always_set_request_id_in_response: false,
        server_name: "envoy".into(),
        server_header: 0,
        strip_port: StripPort::None,
        normalize_path: false,
        merge_slashes: false,
        xfcc: crate::http::headers::Xfcc::default(),
        upgrades: Default::default(),
        allow_connect: false,
        http2: crate::http::Http2Settings::default(),
    }
}

pub(crate) fn prefix_route(p: &str, action: route::Action) -> RoutePb {
    RoutePb {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
            ..RouteMatch::default()
        }),
        action: Some(action),
        ..RoutePb::default()
    }
}

pub(crate) fn routes() -> RouteConfiguration {
    RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["app".into(), "app:80".into()],
            routes: vec![
                prefix_route(
                    "/direct",
                    route::Action::DirectResponse(DirectResponseAction {
                        status: 418,
                        body: Some(DataSource {
                            specifier: Some(data_source::Specifier::InlineString("teapot".into())),
                            ..DataSource::default()
                        }),
                        ..DirectResponseAction::default()
                    }),
                ),
                prefix_route(
                    "/old",
                    route::Action::Redirect(RedirectAction {
                        host_redirect: "new.example.com".into(),
                        ..RedirectAction::default()
                    }),
                ),
                prefix_route(
                    "/missing",
                    route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            "outbound|80||nowhere".into(),
                        )),
                        ..RouteAction::default()
                    }),
                ),
            ],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

async fn start(store: Arc<Store>) -> (SocketAddr, crate::drain::Drainer) {
    start_with(store, hcm_config()).await
}

/// Serves `hcm` on a loopback port (plaintext), as a listener with Envoy's default buffer
/// limit; the drainer drains its connections.
pub(crate) async fn start_with(
    store: Arc<Store>,
    hcm: HcmConfig,
) -> (SocketAddr, crate::drain::Drainer) {
    start_limited(store, hcm, crate::listener::DEFAULT_BUFFER_LIMIT).await
}

/// [`start_with`], as a listener whose `per_connection_buffer_limit_bytes` is `buffer_limit`.
pub(crate) async fn start_limited(
    store: Arc<Store>,
    hcm: HcmConfig,
    buffer_limit: usize,
) -> (SocketAddr, crate::drain::Drainer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = crate::drain::channel();
    let hcm = Arc::new(hcm);
    tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            let down = Downstream {
                peer_cert: None,
                peer,
                local: addr,
                tls: false,
                buffer_limit,
                alpn_h2: false,
            };
            tokio::spawn(serve_connection(
                sock,
                hcm.clone(),
                store.clone(),
                down,
                rx.clone(),
            ));
        }
    });
    (addr, tx)
}

/// Serves one connection with `hcm` on a loopback port; the connection's task, to await its end.
pub(crate) async fn serve_one(
    store: Arc<Store>,
    hcm: HcmConfig,
    drain: crate::drain::Drain,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve_one_as(store, hcm, drain, false).await
}

/// [`serve_one`], the connection taken as one whose TLS handshake agreed on `h2` when `alpn_h2`.
pub(crate) async fn serve_one_as(
    store: Arc<Store>,
    hcm: HcmConfig,
    drain: crate::drain::Drain,
    alpn_h2: bool,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (sock, peer) = listener.accept().await.unwrap();
        let down = Downstream {
            peer_cert: None,
            peer,
            local: addr,
            tls: false,
            buffer_limit: crate::listener::DEFAULT_BUFFER_LIMIT,
            alpn_h2,
        };
        serve_connection(sock, Arc::new(hcm), store, down, drain).await;
    });
    (addr, task)
}

/// Waits until `downstream_rq_active` of [`hcm_config`]'s stat prefix is `want`; false if it
/// is not within a few seconds.
pub(crate) async fn rq_active_becomes(store: &Store, want: i64) -> bool {
    let stats = store.stats().http("test");
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while stats.downstream_rq_active.get() != want {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok()
}

/// A store holding route `80`: `/direct` → 418 `teapot`, `/old` → redirect, `/missing` → 503.
pub(crate) fn store_with_routes() -> Arc<Store> {
    let store = Store::new(Arc::new(Stats::default()));
    let rc = routes();
    apply_routes(&store, &rc.name, "1", &rc);
    store
}

async fn get(addr: SocketAddr, host: &str, path: &str, h2: bool) -> (u16, http::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let req = Request::builder()
        .uri(format!("http://{host}{path}"))
        .header(http::header::HOST, host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut s, c) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(c);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(c);
        s.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn serves_local_replies_over_http1_and_http2() {
    let store = store_with_routes();
    let (addr, _drain) = start(store.clone()).await;
    for h2 in [false, true] {
        let (s, h, b) = get(addr, "app", "/direct/x", h2).await;
        assert_eq!((s, b.as_str()), (418, "teapot"), "h2={h2}");
        assert_eq!(h["server"], "envoy");
        let (s, h, _) = get(addr, "app:80", "/old/path?q=1", h2).await;
        assert_eq!(s, 301);
        assert_eq!(
            h["location"],
            "http://new.example.com:80/old/path?q=1".replace(":80", "")
        );
        let (s, _, _) = get(addr, "app", "/nothing", h2).await;
        assert_eq!(s, 404);
        let (s, _, _) = get(addr, "other", "/direct", h2).await;
        assert_eq!(s, 404);
        let (s, _, _) = get(addr, "app", "/missing", h2).await;
        assert_eq!(s, 503);
    }
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_rq_total.get(), 10);
    assert_eq!(stats.no_route.get(), 4);
    assert_eq!(stats.downstream_rq_class[3].get(), 6);
}

#[tokio::test]
async fn drain_closes_idle_connections() {
    let store = store_with_routes();
    let (tx, rx) = crate::drain::channel();
    let (addr, server) = serve_one(store, hcm_config(), rx).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(c);
    let req = Request::builder()
        .uri("/direct")
        .header("host", "app")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(s.send_request(req).await.unwrap().status(), 418);
    tx.start(Duration::from_secs(60));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("connection closes on drain")
        .unwrap();
}

/// A TLS connection whose handshake agreed on `h2` speaks HTTP/2 from its first byte (Envoy's
/// codec AUTO decides by ALPN): bytes that are not the preface close it, where a connection
/// without ALPN is served as HTTP/1.1.
#[tokio::test]
async fn alpn_h2_connections_are_http2_from_the_first_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for alpn_h2 in [false, true] {
        let (_tx, rx) = crate::drain::channel();
        let (addr, server) = serve_one_as(store_with_routes(), hcm_config(), rx, alpn_h2).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /direct HTTP/1.1\r\nhost: app\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut got))
            .await
            .expect("an answer or the connection's end")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&got[..n]).into_owned();
        if alpn_h2 {
            assert!(
                !answer.starts_with("HTTP/1.1"),
                "served as HTTP/1.1: {answer}"
            );
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the connection closes")
                .unwrap();
        } else {
            assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
        }
    }
}

#[test]
fn path_normalization() {
    for (p, dots, merge, want) in [
        ("/a/./b/../c", true, false, "/a/c"),
        ("/a//b///c?x=//", false, true, "/a/b/c?x=//"),
        ("/../a", true, false, "/a"),
        ("/a/b/..", true, false, "/a/"),
        ("a/b", true, true, "/a/b"),
        ("", true, true, "/"),
        ("/a/..b/.c?x=/./", true, true, "/a/..b/.c?x=/./"),
        ("/a//b", true, false, "/a//b"),
        ("/a/./b", false, true, "/a/./b"),
        ("/", true, true, "/"),
    ] {
        let got = normalize(p, dots, merge);
        assert_eq!(got, want, "{p}");
        // Nothing is allocated for a path that is normal already.
        assert_eq!(
            matches!(got, std::borrow::Cow::Borrowed(_)),
            p == want,
            "{p}"
        );
    }
}

/// Normalizing the path keeps the URI's scheme and authority: an HTTP/2 request's
/// `:authority` is only there (istiod turns `normalize_path` on in every HCM it sends).
#[test]
fn normalized_uri_keeps_its_authority() {
    for (uri, pq, want) in [
        ("http://app:81/a/./b", "/a/b", "http://app:81/a/b"),
        ("/a//b?q=1", "/a/b?q=1", "/a/b?q=1"),
        ("https://[::1]:8443/x/../y", "/y", "https://[::1]:8443/y"),
        ("http://app/a", "not a path\n", "http://app/a"),
    ] {
        let got = with_path_and_query(&uri.parse().unwrap(), pq);
        assert_eq!(got.to_string(), want, "{uri}");
    }
}

/// With `normalize_path` on, an HTTP/2 request without a `Host` header (as h2 clients send
/// it) is still routed by its `:authority`.
#[tokio::test]
async fn http2_routes_by_authority_after_normalization() {
    let store = store_with_routes();
    let mut hcm = hcm_config();
    hcm.normalize_path = true;
    hcm.merge_slashes = true;
    let (addr, _drain) = start_with(store, hcm).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for path in ["/direct/x", "/x/../direct//x"] {
        let req = Request::builder()
            .uri(format!("http://app:80{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert!(req.headers().get(http::header::HOST).is_none());
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 418, "{path}");
    }
}

/// An upstream answering 503 to the first `fail` requests, then 200 with the path it saw.
async fn flaky_upstream(fail: usize) -> SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let status = if n < fail { 503 } else { 200 };
                    let body = format!(
                        "{} {}",
                        req.uri().path(),
                        req.headers()["host"].to_str().unwrap()
                    );
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
            });
        }
    });
    addr
}

pub(crate) fn apply_static_cluster(store: &Store, name: &str, upstream: SocketAddr) {
    use crate::cluster::endpoints::tests::{cla, lb_endpoint};
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla(vec![lb_endpoint(
            "127.0.0.1",
            u32::from(upstream.port()),
        )])),
        ..Cluster::default()
    };
    apply_cluster(store, &c, "1");
}

/// Applies `cluster` to the store as a CDS update at `version`.
pub(crate) fn apply_cluster(
    store: &Store,
    cluster: &envoy_types::pb::envoy::config::cluster::v3::Cluster,
    version: &str,
) {
    store
        .apply(
            crate::resources::CLUSTER,
            vec![Update {
                name: cluster.name.clone(),
                version: version.into(),
                resource: envoy_types::pb::google::protobuf::Any {
                    type_url: crate::resources::CLUSTER.into(),
                    value: cluster.encode_to_vec(),
                },
            }],
            &[],
            false,
        )
        .unwrap();
}

/// Applies `rc` as the route configuration `name` at `version`.
pub(crate) fn apply_routes(
    store: &Store,
    name: &str,
    version: &str,
    rc: &envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
) {
    store
        .apply(
            ROUTE,
            vec![Update {
                name: name.into(),
                version: version.into(),
                resource: envoy_types::pb::google::protobuf::Any {
                    type_url: ROUTE.into(),
                    value: rc.encode_to_vec(),
                },
            }],
            &[],
            false,
        )
        .expect("routes applied");
}

#[tokio::test]
async fn retries_a_503_and_rewrites_prefix() {
    use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
    let upstream = flaky_upstream(1).await;
    let store = store_with_routes();
    apply_static_cluster(&store, "up", upstream);
    let mut rc = routes();
    rc.virtual_hosts[0].routes.insert(
        0,
        prefix_route(
            "/api/",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
                prefix_rewrite: "/v2/".into(),
                retry_policy: Some(RetryPolicy {
                    retry_on: "5xx".into(),
                    num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
                    ..RetryPolicy::default()
                }),
                ..RouteAction::default()
            }),
        ),
    );
    apply_routes(&store, "80", "2", &rc);
    let (addr, _drain) = start(store.clone()).await;
    let (s, h, b) = get(addr, "app", "/api/users", false).await;
    assert_eq!((s, b.as_str()), (200, "/v2/users app"));
    assert!(h.contains_key("x-envoy-upstream-service-time"));
    assert_eq!(store.stats().cluster("up").upstream_rq_retry.get(), 1);
}

/// An upstream answering after the `x-delay-ms` it is sent, with the `grpc-timeout` it saw.
async fn slow_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let delay = header("x-delay-ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let seen = header("grpc-timeout").unwrap_or_else(|| "none".into());
                    async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(seen),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
            });
        }
    });
    addr
}

/// Sends a request over HTTP/2 with `headers`; the status and body.
async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut s, c) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(c);
    let mut req = Request::builder().uri(format!("http://app{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = s
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// istiod's outbound form (`timeout: 0s`, `max_grpc_timeout: 0s`) and a route timeout with
/// `max_grpc_timeout`: a gRPC request's `grpc-timeout` is its route timeout (no limit without
/// one) and reaches the upstream as the timeout the proxy applies; other requests keep the
/// route's `timeout`.
#[tokio::test]
async fn max_grpc_timeout_makes_grpc_timeout_the_route_timeout() {
    use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    let pb = |ms: i64| PbDuration {
        seconds: ms / 1000,
        nanos: (ms % 1000) as i32 * 1_000_000,
    };
    let store = store_with_routes();
    apply_static_cluster(&store, "slow", slow_upstream().await);
    let mut rc = routes();
    #[allow(deprecated)]
    let grpc_route = |p: &str, timeout_ms: i64, per_try_ms: Option<i64>| {
        prefix_route(
            p,
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("slow".into())),
                timeout: Some(pb(timeout_ms)),
                max_grpc_timeout: Some(pb(0)),
                retry_policy: per_try_ms.map(|ms| RetryPolicy {
                    per_try_timeout: Some(pb(ms)),
                    ..RetryPolicy::default()
                }),
                ..RouteAction::default()
            }),
        )
    };
    rc.virtual_hosts[0]
        .routes
        .insert(0, grpc_route("/istio", 0, None));
    rc.virtual_hosts[0]
        .routes
        .insert(0, grpc_route("/timed", 300, None));
    rc.virtual_hosts[0]
        .routes
        .insert(0, grpc_route("/per-try", 0, Some(2000)));
    apply_routes(&store, "80", "2", &rc);
    let (addr, _drain) = start(store.clone()).await;
    let grpc = ("content-type", "application/grpc");
    /// Path, request headers, expected status and body.
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        (u16, &'static str),
    );
    let cases: Vec<Case> = vec![
        // The header bounds the request...
        (
            "/istio",
            vec![grpc, ("grpc-timeout", "100m"), ("x-delay-ms", "3000")],
            (504, "upstream request timeout"),
        ),
        // ...and is passed on as the timeout applied.
        ("/istio", vec![grpc, ("grpc-timeout", "5S")], (200, "5000m")),
        // Without one there is no limit, and the upstream is told none.
        ("/istio", vec![grpc, ("x-delay-ms", "500")], (200, "none")),
        ("/timed", vec![grpc, ("x-delay-ms", "500")], (200, "none")),
        // Not gRPC: the route's own timeout.
        (
            "/timed",
            vec![
                ("content-type", "application/grpc-web"),
                ("x-delay-ms", "3000"),
            ],
            (504, "upstream request timeout"),
        ),
        // A shorter per-try timeout is what the upstream is told.
        (
            "/per-try",
            vec![grpc, ("grpc-timeout", "1M")],
            (200, "2000m"),
        ),
    ];
    for (i, (path, headers, want)) in cases.into_iter().enumerate() {
        let (status, body) = send(addr, path, &headers).await;
        assert_eq!(
            (status, body.as_str()),
            want,
            "case {i}: {path} {headers:?}"
        );
    }
}

#[test]
fn routed_host_strips_ports_as_configured() {
    let table = crate::route::compile(&RouteConfiguration::default()).expect("empty routes");
    let local: SocketAddr = "10.0.0.1:8080".parse().expect("address");
    let cases: Vec<(StripPort, &[u8], &str)> = vec![
        (StripPort::None, b"example.com:8080", "example.com:8080"),
        (StripPort::Matching, b"example.com:8080", "example.com"),
        (
            StripPort::Matching,
            b"example.com:08080",
            "example.com:08080",
        ),
        (StripPort::Matching, b"example.com:80", "example.com:80"),
        (StripPort::Any, b"example.com:80", "example.com"),
        (StripPort::Any, b"[::1]:80", "[::1]"),
        (StripPort::Any, b"example.com", "example.com"),
        // Not visible ASCII: no host, as before.
        (StripPort::None, b"\xffexample.com", ""),
    ];
    for (i, (strip, host, want)) in cases.into_iter().enumerate() {
        let hcm = HcmConfig {
            strip_port: strip,
            ..hcm_config()
        };
        let (parts, _) = Request::builder()
            .uri("/")
            .header("host", HeaderValue::from_bytes(host).expect("header value"))
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(
            authority(&parts, &hcm, &table, local).as_str(),
            want,
            "case {i}"
        );
    }
    // An absolute URI's authority (HTTP/2's :authority) is the host, not the Host header.
    let hcm = HcmConfig {
        strip_port: StripPort::Matching,
        ..hcm_config()
    };
    let (parts, _) = Request::builder()
        .uri("http://a.example:8080/x")
        .header("host", "b.example")
        .body(())
        .expect("request")
        .into_parts();
    assert_eq!(authority(&parts, &hcm, &table, local).as_str(), "a.example");
}
