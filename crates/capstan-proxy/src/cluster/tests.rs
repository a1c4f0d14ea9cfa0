//! The cluster runtime against real upstreams started on 127.0.0.1:0.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::time::Duration;

type Handler = Arc<dyn Fn(&http::Request<Incoming>) -> (u16, String) + Send + Sync>;

/// An HTTP/1.1 + HTTP/2 (prior knowledge) server answering with `handler`'s status and body;
/// `gate`, when set, holds each response until notified.
async fn server(handler: Handler, gate: Option<Arc<tokio::sync::Notify>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let handler = handler.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let handler = handler.clone();
                    let gate = gate.clone();
                    async move {
                        let (status, body) = handler(&req);
                        if let Some(g) = gate {
                            g.notified().await;
                        }
                        let resp = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                            .expect("valid response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                .await;
            });
        }
    });
    addr
}

/// Echoes the authority the upstream saw (Host header, else the URI's) and the path.
fn echo() -> Handler {
    Arc::new(|req| {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let path = req.uri().path_and_query().map_or("", |p| p.as_str());
        (200, format!("{:?} {host} {path}", req.version()))
    })
}

fn request(path: &str) -> http::Request<BoxBody> {
    http::Request::builder()
        .uri(path)
        .header(http::header::HOST, "reviews:9080")
        .body(
            Empty::<Bytes>::new()
                .map_err(|e: Infallible| -> crate::http::BoxError { match e {} })
                .boxed(),
        )
        .expect("valid request")
}

fn cluster(config: ClusterConfig, addrs: &[SocketAddr]) -> Arc<Cluster> {
    let c = Cluster::new(Arc::new(config), Arc::default());
    c.set_endpoints(EndpointSet::from_addrs(addrs));
    c
}

async fn body(resp: http::Response<UpstreamBody>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn http1_request_reaches_endpoint_with_callers_host() {
    let addr = server(echo(), None).await;
    let c = cluster(ClusterConfig::new("c", Discovery::Eds("c".into())), &[addr]);
    let (resp, picked) = c
        .request(request("/hello?x=1"), &LbContext::default())
        .await
        .expect("response");
    assert_eq!((resp.status().as_u16(), picked), (200, addr));
    assert_eq!(body(resp).await, "HTTP/1.1 reviews:9080 /hello?x=1");
    let s = c.stats();
    assert_eq!(s.upstream_rq_total.get(), 1);
    assert_eq!(s.upstream_rq_class[1].get(), 1);
    assert_eq!(
        (s.upstream_cx_total.get(), s.upstream_rq_active.get()),
        (1, 0)
    );
}

#[tokio::test]
async fn http2_request_keeps_authority() {
    let addr = server(echo(), None).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.pool.protocol = pool::UpstreamProtocol::Http2;
    let c = cluster(config, &[addr]);
    for _ in 0..3 {
        let (resp, _) = c
            .request(request("/grpc.Service/Method"), &LbContext::default())
            .await
            .expect("response");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(
            body(resp).await,
            "HTTP/2.0 reviews:9080 /grpc.Service/Method"
        );
    }
    assert_eq!(
        c.stats().upstream_cx_total.get(),
        1,
        "one multiplexed connection"
    );
}

#[tokio::test]
async fn max_requests_per_connection_retires_connections() {
    let addr = server(echo(), None).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.pool.max_requests_per_connection = Some(2);
    let c = cluster(config, &[addr]);
    for _ in 0..4 {
        let (resp, _) = c
            .request(request("/"), &LbContext::default())
            .await
            .expect("response");
        body(resp).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.stats().upstream_cx_total.get(), 2);
}

/// HTTP/1.1 connections are reused once their response has been read, and closed after the
/// cluster's `idle_timeout` with nothing to do.
#[tokio::test]
async fn http1_connections_are_reused_then_close_when_idle() {
    let addr = server(echo(), None).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.pool.idle_timeout = Some(Duration::from_millis(200));
    let c = cluster(config, &[addr]);
    for _ in 0..5 {
        let (resp, _) = c
            .request(request("/"), &LbContext::default())
            .await
            .expect("response");
        assert_eq!(body(resp).await, "HTTP/1.1 reviews:9080 /");
    }
    let s = c.stats();
    assert_eq!(
        (s.upstream_cx_total.get(), s.upstream_cx_active.get()),
        (1, 1)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.upstream_cx_active.get() != 0 {
        assert!(Instant::now() < deadline, "the idle connection stays open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (resp, _) = c
        .request(request("/"), &LbContext::default())
        .await
        .expect("response on a new connection");
    body(resp).await;
    assert_eq!(s.upstream_cx_total.get(), 2);
}

#[tokio::test]
async fn connect_failures_count_and_eject() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let good = server(echo(), None).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.lb.policy = LbPolicy::RoundRobin;
    config.outlier = Some(OutlierConfig {
        consecutive_5xx: 1,
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    });
    let c = cluster(config, &[closed, good]);
    let mut failures = 0;
    for _ in 0..6 {
        match c.request(request("/"), &LbContext::default()).await {
            Ok((_, a)) => assert_eq!(a, good),
            Err(UpstreamError::ConnectFailure(_)) => failures += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        failures, 1,
        "the closed endpoint is ejected after one failure"
    );
    let s = c.stats();
    assert_eq!(
        (s.upstream_cx_connect_fail.get(), s.ejections_active.get()),
        (1, 1)
    );
    assert!(c.hosts().iter().any(|h| h.addr == closed && h.ejected));
    // Ejection ends after base_ejection_time (30s).
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(c.hosts().iter().all(|h| !h.ejected));
    assert_eq!(s.ejections_active.get(), 0);
}

#[tokio::test]
async fn five_xx_responses_eject_the_host() {
    let bad = server(Arc::new(|_| (503, String::new())), None).await;
    let good = server(echo(), None).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.outlier = Some(OutlierConfig {
        consecutive_5xx: 2,
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    });
    let c = cluster(config, &[bad, good]);
    let mut to_bad = 0;
    for _ in 0..20 {
        let (resp, a) = c
            .request(request("/"), &LbContext::default())
            .await
            .expect("response");
        body(resp).await;
        to_bad += usize::from(a == bad);
    }
    assert_eq!(to_bad, 2, "two 503s, then ejected");
    assert_eq!(c.stats().upstream_rq_class[4].get(), 2);
    assert_eq!(c.stats().ejections_enforced_total.get(), 1);
}

#[tokio::test]
async fn breakers_overflow() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let addr = server(echo(), Some(gate.clone())).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.breaker = BreakerConfig {
        max_requests: 1,
        max_retries: 1,
        ..BreakerConfig::default()
    };
    let c = cluster(config, &[addr]);
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.request(request("/"), &LbContext::default())
                .await
                .map(|(r, _)| r.status())
        }
    });
    while c.stats().upstream_rq_active.get() == 0 {
        tokio::task::yield_now().await;
    }
    let second = c.request(request("/"), &LbContext::default()).await;
    assert!(matches!(second, Err(UpstreamError::Overflow)), "{second:?}");
    assert_eq!(c.stats().upstream_rq_pending_overflow.get(), 1);
    gate.notify_waiters();
    while !first.is_finished() {
        gate.notify_waiters();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        first.await.expect("task").expect("response"),
        http::StatusCode::OK
    );

    let permit = c.try_retry().expect("one retry allowed");
    assert!(c.try_retry().is_none());
    assert_eq!(c.stats().upstream_rq_retry_overflow.get(), 1);
    drop(permit);
    assert!(c.try_retry().is_some());
}

#[tokio::test]
async fn max_connections_queue_requests() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let addr = server(echo(), Some(gate.clone())).await;
    let mut config = ClusterConfig::new("c", Discovery::Static);
    config.breaker.max_connections = 1;
    let c = cluster(config, &[addr]);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let (r, _) = c.request(request("/"), &LbContext::default()).await?;
                Ok::<_, UpstreamError>(body(r).await)
            })
        })
        .collect();
    while tasks.iter().any(|t| !t.is_finished()) {
        gate.notify_waiters();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await
            .expect("task")
            .expect("both answered on one connection");
    }
    let s = c.stats();
    assert_eq!(
        (s.upstream_cx_total.get(), s.upstream_cx_overflow.get()),
        (1, 1)
    );
}

#[tokio::test]
async fn original_dst_connects_to_the_destination() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dst = listener.local_addr().expect("addr");
    let c = Cluster::new(
        Arc::new(ClusterConfig::new(
            "PassthroughCluster",
            Discovery::OriginalDst,
        )),
        Arc::default(),
    );
    let ctx = LbContext {
        original_dst: Some(dst),
        ..LbContext::default()
    };
    let (conn, addr) = c.connect_tracked(&ctx).await.expect("connected");
    assert_eq!(addr, dst);
    assert_eq!(c.stats().upstream_cx_active.get(), 1);
    drop(conn);
    assert_eq!(c.stats().upstream_cx_active.get(), 0);
    let (_stream, _) = c.connect(&ctx).await.expect("plain stream");
    let none = c.connect(&LbContext::default()).await;
    assert!(matches!(none, Err(UpstreamError::NoHealthyUpstream)));
    assert_eq!(c.stats().upstream_cx_none_healthy.get(), 1);
}

#[tokio::test]
async fn static_and_dns_clusters_find_their_endpoints() {
    let addr = server(echo(), None).await;
    let mut config = ClusterConfig::new("static", Discovery::Static);
    config.endpoints = Some(EndpointSet::from_addrs(&[addr]));
    let c = Cluster::new(Arc::new(config), Arc::default());
    assert!(c.request(request("/"), &LbContext::default()).await.is_ok());

    let mut dns = ClusterConfig::new("dns", Discovery::Dns);
    dns.endpoints = Some(
        endpoints::compile_with(
            &endpoints::tests::cla(vec![endpoints::tests::lb_endpoint(
                "localhost",
                u32::from(addr.port()),
            )]),
            true,
        )
        .expect("names allowed"),
    );
    dns.dns = Some(DnsConfig {
        refresh: Duration::from_secs(5),
        failure_refresh: Duration::from_secs(1),
        jitter: Duration::ZERO,
        family: LookupFamily::V4Only,
        logical: false,
    });
    let c = Cluster::new(Arc::new(dns), Arc::default());
    let (_, picked) = c
        .request(request("/"), &LbContext::default())
        .await
        .expect("resolved");
    assert_eq!(picked, addr);
}

/// A raw HTTP/1.1 upstream: on each connection, reads request heads and answers each with
/// `parts` (written one by one, `pause` apart); with `close`, closes the connection that long
/// after the first response (without saying so in the response).
async fn raw_server(
    parts: &'static [&'static str],
    pause: Duration,
    close: Option<Duration>,
) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.clear();
                    for (i, p) in parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(pause).await;
                        }
                        if io.write_all(p.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if let Some(after) = close {
                        tokio::time::sleep(after).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An idle connection the upstream closes is closed here too (no longer counted active), and
/// the next request goes on a new one.
#[tokio::test]
async fn http1_connection_closed_by_the_upstream_while_idle_is_dropped() {
    let addr = raw_server(
        &["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        Duration::ZERO,
        // Well after the response: the connection is idle in the pool by then.
        Some(Duration::from_millis(100)),
    )
    .await;
    let c = cluster(ClusterConfig::new("c", Discovery::Static), &[addr]);
    let s = c.stats();
    for n in 1..=2 {
        let (resp, _) = c
            .request(request("/"), &LbContext::default())
            .await
            .expect("response");
        assert_eq!(body(resp).await, "ok");
        assert_eq!(
            (s.upstream_cx_total.get(), s.upstream_cx_active.get()),
            (n, 1)
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.upstream_cx_active.get() != 0 {
            assert!(
                Instant::now() < deadline,
                "the closed connection stays open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A response body arriving in pieces is read in the task that polls it, whichever task that
/// is: one connection serves requests from successive tasks, on any worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_bodies_in_pieces_on_one_connection_across_tasks() {
    let addr = raw_server(
        &[
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n",
            "1\r\nb\r\n",
            "0\r\n\r\n",
        ],
        Duration::from_millis(20),
        None,
    )
    .await;
    let c = cluster(ClusterConfig::new("c", Discovery::Static), &[addr]);
    for _ in 0..3 {
        let c = c.clone();
        let got = tokio::spawn(async move {
            let (resp, _) = c
                .request(request("/"), &LbContext::default())
                .await
                .expect("response");
            body(resp).await
        })
        .await
        .expect("task");
        assert_eq!(got, "ab");
    }
    let s = c.stats();
    assert_eq!(
        (s.upstream_cx_total.get(), s.upstream_cx_active.get()),
        (1, 1)
    );
}

/// Requests the proxy's codec does not take (here an upgrade the upstream declines) go with
/// hyper on the same pooled connection, which stays hyper's; plain ones reuse it either way.
#[tokio::test]
async fn http1_plain_and_hyper_requests_share_one_connection() {
    let addr = server(echo(), None).await;
    let c = cluster(ClusterConfig::new("c", Discovery::Static), &[addr]);
    let upgrade = || {
        let mut r = request("/up");
        r.headers_mut()
            .insert(http::header::UPGRADE, http::HeaderValue::from_static("foo"));
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        r
    };
    for (n, r) in [request("/a"), upgrade(), request("/b"), request("/c")]
        .into_iter()
        .enumerate()
    {
        let path = r.uri().path().to_string();
        let (resp, _) = c
            .request(r, &LbContext::default())
            .await
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(body(resp).await, format!("HTTP/1.1 reviews:9080 {path}"));
    }
    let s = c.stats();
    assert_eq!(
        (s.upstream_cx_total.get(), s.upstream_cx_active.get()),
        (1, 1)
    );
}

/// A connection is given back only after a kept-alive response read exactly to its end:
/// bytes after it, `Connection: close` and HTTP/1.0 each cost a new connection per request.
#[tokio::test]
async fn http1_connections_not_reusable_are_not_reused() {
    let cases: &[&'static [&'static str]] = &[
        &["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"],
        &["HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
        &["HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"],
    ];
    for parts in cases {
        let addr = raw_server(parts, Duration::ZERO, None).await;
        let c = cluster(ClusterConfig::new("c", Discovery::Static), &[addr]);
        for _ in 0..3 {
            let (resp, _) = c
                .request(request("/"), &LbContext::default())
                .await
                .expect("response");
            assert_eq!(body(resp).await, "ok", "{parts:?}");
        }
        assert_eq!(c.stats().upstream_cx_total.get(), 3, "{parts:?}");
    }
}

/// A response head hyper's client refuses is refused the same way: a reset with hyper's words.
#[tokio::test]
async fn http1_malformed_response_heads_are_resets() {
    let cases: &[(&'static [&'static str], &str)] = &[
        (
            &["HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n"],
            "invalid HTTP header parsed",
        ),
        (
            &["HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"],
            "invalid content-length parsed",
        ),
    ];
    for (parts, want) in cases {
        let addr = raw_server(parts, Duration::ZERO, None).await;
        let c = cluster(ClusterConfig::new("c", Discovery::Static), &[addr]);
        match c.request(request("/"), &LbContext::default()).await {
            Err(UpstreamError::Reset(m)) => assert!(m.contains(want), "{parts:?}: {m}"),
            Ok((r, _)) => panic!("{parts:?}: answered {}", r.status()),
            Err(e) => panic!("{parts:?}: {e}"),
        }
    }
}
