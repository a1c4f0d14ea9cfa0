//! RFC 8441 extended CONNECT through `serve_connection` over loopback, Envoy's "WebSocket over
//! HTTP/2 hops": an HTTP/1.1 upgrade to an HTTP/2 cluster (sent as an extended CONNECT), and
//! an HTTP/2 client's extended CONNECT under `allow_connect` (carried as an HTTP/1.1 upgrade,
//! or as an extended CONNECT again to an HTTP/2 cluster).

use super::tests::{apply_cluster, start_with};
use super::upgrade_tests::{close_tunnel, echo, echo_upstream, hcm, request, store_for, WS};
use super::*;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What an HTTP/2 upstream saw of one request: method, `:protocol`, path, authority, headers.
#[derive(Debug, Clone)]
struct SeenH2 {
    method: http::Method,
    protocol: Option<String>,
    path: String,
    authority: Option<String>,
    headers: http::HeaderMap,
}

/// An HTTP/2 (prior knowledge) upstream that accepts an extended CONNECT with `200` and echoes
/// the stream's bytes, refuses one whose path contains `refuse` with a `403` and a body, and
/// records what it saw. Without `extended_connect` it does not advertise
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (h2 then resets a `:protocol` request).
async fn h2_upstream(extended_connect: bool) -> (SocketAddr, Arc<std::sync::Mutex<Vec<SeenH2>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let log = log.clone();
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                log.lock().unwrap().push(SeenH2 {
                    method: req.method().clone(),
                    protocol: req
                        .extensions()
                        .get::<hyper::ext::Protocol>()
                        .map(|p| p.as_str().to_string()),
                    path: req.uri().path().to_string(),
                    authority: req.uri().authority().map(|a| a.to_string()),
                    headers: req.headers().clone(),
                });
                let refuse = req.uri().path().contains("refuse");
                let upgrade = (req.method() == http::Method::CONNECT && !refuse)
                    .then(|| hyper::upgrade::on(&mut req));
                async move {
                    let Some(upgrade) = upgrade else {
                        let mut r =
                            Response::new(http_body_util::Full::new(bytes::Bytes::from("no")));
                        *r.status_mut() = http::StatusCode::FORBIDDEN;
                        return Ok::<_, std::convert::Infallible>(r);
                    };
                    tokio::spawn(async move {
                        let Ok(io) = upgrade.await else { return };
                        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(io));
                        let _ = tokio::io::copy(&mut rd, &mut wr).await;
                        let _ = wr.shutdown().await;
                    });
                    Ok(Response::new(
                        http_body_util::Full::new(bytes::Bytes::new()),
                    ))
                }
            });
            let mut b =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            if extended_connect {
                b.enable_connect_protocol();
            }
            tokio::spawn(b.serve_connection(TokioIo::new(sock), svc));
        }
    });
    (addr, seen)
}

/// Replaces cluster `up` with one speaking HTTP/2 upstream (explicit `http2_protocol_options`,
/// as istiod writes for an `http2` or `grpc` port or `h2UpgradePolicy: UPGRADE`) at `upstream`.
fn apply_h2_cluster(store: &Store, upstream: SocketAddr) {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{
            explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions,
        },
        HttpProtocolOptions,
    };
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Default::default(),
                )),
            },
        )),
        ..HttpProtocolOptions::default()
    };
    let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let c = Cluster {
        name: "up".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(crate::cluster::endpoints::tests::cla(vec![
            crate::cluster::endpoints::tests::lb_endpoint("127.0.0.1", u32::from(upstream.port())),
        ])),
        typed_extension_protocol_options: [(
            key.to_string(),
            envoy_types::pb::google::protobuf::Any {
                type_url: format!("type.googleapis.com/{key}"),
                value: h2.encode_to_vec(),
            },
        )]
        .into(),
        ..Cluster::default()
    };
    apply_cluster(store, &c, "2");
}

/// Envoy's "WebSocket over HTTP/2 hops": an HTTP/1.1 upgrade routed to an HTTP/2 cluster goes
/// as an extended CONNECT, its `200` comes back as a `101`, and the stream carries the bytes.
#[tokio::test]
async fn an_upgrade_to_an_http2_upstream_goes_as_an_extended_connect() {
    let (upstream, seen) = h2_upstream(true).await;
    let store = store_for(upstream);
    apply_h2_cluster(&store, upstream);
    let (addr, _drain) = start_with(store.clone(), hcm(true, None)).await;
    let ws = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let (status, head, _, io) = request(addr, "/ws/chat?room=1", &ws).await;
    assert_eq!(status, 101, "{head:?}");
    assert_eq!(head["upgrade"], "websocket");
    assert_eq!(head["connection"], "upgrade");
    assert!(head.contains_key("x-envoy-upstream-service-time"));
    assert!(
        !head.contains_key("sec-websocket-accept"),
        "Envoy makes up no accept key: the upstream sent none"
    );
    let mut io = io.expect("upgraded");
    assert_eq!(echo(&mut io, b"hello over h2").await, b"hello over h2");
    // Past the 200 ms route timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(echo(&mut io, b"still there").await, b"still there");
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.method, http::Method::CONNECT);
    assert_eq!(got.protocol.as_deref(), Some("websocket"));
    assert_eq!(got.path, "/ws/chat");
    assert_eq!(got.authority.as_deref(), Some("app"));
    assert_eq!(got.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(got.headers["sec-websocket-version"], "13");
    for hop in ["connection", "upgrade", "content-length"] {
        assert!(
            !got.headers.contains_key(hop),
            "{hop} sent: {:?}",
            got.headers
        );
    }
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_cx_upgrades_active.get(), 1);
    // Our half-close ends the upstream's echo, which ends its half: the tunnel closes.
    close_tunnel(io, &stats).await;
    // The upstream's refusal is passed on as it is, no tunnel.
    let (status, head, body, io) = request(addr, "/ws/refuse", &ws).await;
    assert_eq!((status, body.as_str()), (403, "no"));
    assert!(io.is_none() && !head.contains_key("upgrade"), "{head:?}");
    assert_eq!(stats.downstream_cx_upgrades_total.get(), 2);
}

/// An HTTP/2 upstream that does not offer extended CONNECT resets the stream: Envoy's 503
/// for a remote reset before the response headers, counted in `upstream_rq_rx_reset`.
#[tokio::test]
async fn an_http2_upstream_without_extended_connect_resets_it_and_gets_503() {
    let (upstream, seen) = h2_upstream(false).await;
    let store = store_for(upstream);
    apply_h2_cluster(&store, upstream);
    let (addr, _drain) = start_with(store.clone(), hcm(true, None)).await;
    let (status, _, body, io) = request(addr, "/ws", &WS).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
    );
    assert!(io.is_none());
    assert!(
        seen.lock().unwrap().is_empty(),
        "h2 refuses it before the service"
    );
    let cluster = store.stats().cluster("up");
    assert_eq!(cluster.upstream_rq_rx_reset.get(), 1);
    assert_eq!(cluster.upstream_rq_total.get(), 1);
    // The connection lives on: a plain request goes through on it.
    let (status, _, body, _) = request(addr, "/plain/refuse", &[]).await;
    assert_eq!((status, body.as_str()), (403, "no"));
    assert_eq!(seen.lock().unwrap()[0].method, http::Method::GET);
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, c) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(c);
    s
}

type H2Opened = (
    u16,
    http::HeaderMap,
    Option<TokioIo<hyper::upgrade::Upgraded>>,
);

/// Opens an extended CONNECT for `protocol` to `path` on authority `app`: the status, the
/// response headers and, on a 200, the stream; Err when the stream is reset.
async fn extended_connect(
    s: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
    protocol: &str,
) -> Result<H2Opened, hyper::Error> {
    let mut req = Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://app{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from(protocol));
    let mut resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let head = resp.headers().clone();
    let io = if status == 200 {
        Some(TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap()))
    } else {
        None
    };
    Ok((status, head, io))
}

fn allow_connect() -> HcmConfig {
    HcmConfig {
        allow_connect: true,
        ..hcm(true, None)
    }
}

/// With `allow_connect`, an HTTP/2 client's extended CONNECT is an HTTP/1.1 upgrade to an
/// HTTP/1.1 cluster; its `101` reaches the client as a `200`, and the tunnel is one stream of
/// a connection that goes on serving others.
#[tokio::test]
async fn an_http2_extended_connect_is_carried_as_an_http1_upgrade() {
    let store = store_for(echo_upstream().await);
    let (addr, _drain) = start_with(store.clone(), allow_connect()).await;
    let mut s = h2_client(addr).await;
    let (status, head, io) = extended_connect(&mut s, "/ws", "websocket").await.unwrap();
    assert_eq!(status, 200, "{head:?}");
    for hop in ["upgrade", "connection", "content-length"] {
        assert!(!head.contains_key(hop), "{hop} in {head:?}");
    }
    assert!(head.contains_key("x-envoy-upstream-service-time"));
    let mut io = io.expect("a tunnel");
    assert_eq!(echo(&mut io, b"hello from h2").await, b"hello from h2");
    // Another stream of the same connection, while the tunnel is open.
    let plain = s
        .send_request(
            Request::get("http://app/plain")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let body = plain.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"connection=- upgrade=-");
    assert_eq!(echo(&mut io, b"still there").await, b"still there");
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_cx_upgrades_active.get(), 1);
    // A route that disables WebSocket refuses it with Envoy's 403, on its own stream.
    let (status, _, io2) = extended_connect(&mut s, "/no-ws", "websocket")
        .await
        .unwrap();
    assert_eq!((status, io2.is_none()), (403, true));
    close_tunnel(io, &stats).await;
    assert_eq!(stats.downstream_cx_upgrades_total.get(), 1);
}

/// Without `allow_connect` the server does not offer extended CONNECT: the stream is reset
/// (h2's PROTOCOL_ERROR, as nghttp2 in Envoy); a plain CONNECT is refused with a 403.
#[tokio::test]
async fn without_allow_connect_an_http2_extended_connect_is_reset() {
    let store = store_for(echo_upstream().await);
    let (addr, _drain) = start_with(store.clone(), hcm(true, None)).await;
    let mut s = h2_client(addr).await;
    assert!(extended_connect(&mut s, "/ws", "websocket").await.is_err());
    let (addr, _drain2) = start_with(store, allow_connect()).await;
    let mut s = h2_client(addr).await;
    let connect = Request::builder()
        .method(http::Method::CONNECT)
        .uri("app:443")
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(s.send_request(connect).await.unwrap().status(), 403);
}

/// To an HTTP/2 cluster the upgrade goes on as an extended CONNECT (Envoy turns it into an
/// upgrade and back at each hop).
#[tokio::test]
async fn an_http2_extended_connect_to_an_http2_cluster_stays_one() {
    let (upstream, seen) = h2_upstream(true).await;
    let store = store_for(upstream);
    apply_h2_cluster(&store, upstream);
    let (addr, _drain) = start_with(store, allow_connect()).await;
    let mut s = h2_client(addr).await;
    let (status, head, io) = extended_connect(&mut s, "/ws/x", "websocket")
        .await
        .unwrap();
    assert_eq!(status, 200, "{head:?}");
    assert!(!head.contains_key("upgrade"));
    let mut io = io.expect("a tunnel");
    assert_eq!(echo(&mut io, b"h2 to h2").await, b"h2 to h2");
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.method, http::Method::CONNECT);
    assert_eq!(got.protocol.as_deref(), Some("websocket"));
    assert_eq!(got.path, "/ws/x");
    assert!(!got.headers.contains_key("upgrade") && !got.headers.contains_key("connection"));
}

/// An extended CONNECT's tunnel is closed when the listener's drain window ends, as an
/// HTTP/1.1 upgrade's.
#[tokio::test]
async fn a_drain_closes_an_http2_tunnel_when_its_window_ends() {
    let store = store_for(echo_upstream().await);
    let (addr, drainer) = start_with(store.clone(), allow_connect()).await;
    let mut s = h2_client(addr).await;
    let (status, _, io) = extended_connect(&mut s, "/ws", "websocket").await.unwrap();
    assert_eq!(status, 200);
    let mut io = io.expect("a tunnel");
    assert_eq!(echo(&mut io, b"before").await, b"before");
    let window = Duration::from_millis(500);
    let begun = Instant::now();
    drainer.start(window);
    assert_eq!(echo(&mut io, b"during").await, b"during");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest))
        .await
        .expect("the end of the drain window closes the tunnel");
    assert!(begun.elapsed() >= window - Duration::from_millis(50));
    let stats = store.stats().http("test");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.downstream_cx_upgrades_active.get() != 0 {
        assert!(Instant::now() < deadline, "tunnel still counted as active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
