//! Request bodies without a length through `serve_connection` (chunked HTTP/1.1, HTTP/2 without
//! `content-length`, as every gRPC call): retried after a 503, a reset midway and a connect
//! failure by replaying what was recorded; over the buffer limit neither retried nor mirrored
//! (`retry_or_shadow_abandoned`); mirrored whole once complete; and a body that never ends
//! still streams.

use super::tests::{hcm_config, prefix_route, start_with};
use super::*;
use crate::resources::{ResourceSink, Update, CLUSTER, ROUTE};
use crate::stats::Stats;
use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster as ClusterPb};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, RetryPolicy, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use http_body::Frame;
use hyper::body::Incoming;
use prost::Message;
use std::sync::Mutex;
use tokio::sync::mpsc;

pub(super) const WITHIN: Duration = Duration::from_secs(5);

/// How the upstream answers its n-th request.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Answer {
    /// Reads the whole body, then 200.
    Ok,
    /// Reads the whole body, then 503.
    Unavailable,
    /// Reads one frame, then resets (HTTP/1.1: closes the connection).
    ResetAfterFirstFrame,
    /// Reads one frame, then 200 (the rest is drained in the background).
    OkAfterFirstFrame,
}

/// A request as the upstream read it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    host: String,
    pub(super) body: Bytes,
    trailers: Option<http::HeaderMap>,
}

#[derive(Default)]
pub(super) struct Upstream {
    seen: Mutex<Vec<Seen>>,
}

impl Upstream {
    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Waits (bounded) until `n` requests were seen.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let seen = self.seen();
            if seen.len() >= n || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An HTTP/1.1 + HTTP/2 upstream answering request n with `script[n]` (then `Ok`).
pub(super) async fn upstream(script: Vec<Answer>) -> (SocketAddr, Arc<Upstream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(Upstream::default());
    let state = up.clone();
    let script = Arc::new(script);
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (state, script, count) = (state.clone(), script.clone(), count.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = script.get(n).copied().unwrap_or(Answer::Ok);
                answer_with(req, answer, state.clone())
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
            });
        }
    });
    (addr, up)
}

async fn answer_with(
    req: Request<Incoming>,
    answer: Answer,
    up: Arc<Upstream>,
) -> Result<Response<http_body_util::Full<Bytes>>, BoxError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut body = req.into_body();
    let (data, trailers) = match answer {
        Answer::Ok | Answer::Unavailable => {
            let c = (&mut body).collect().await?;
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Answer::ResetAfterFirstFrame | Answer::OkAfterFirstFrame => {
            let first = body.frame().await.transpose()?;
            let data = first.and_then(|f| f.into_data().ok()).unwrap_or_default();
            (data, None)
        }
    };
    up.seen.lock().unwrap().push(Seen {
        host,
        body: data,
        trailers,
    });
    let status = match answer {
        Answer::ResetAfterFirstFrame => return Err("reset after the first frame".into()),
        Answer::OkAfterFirstFrame => {
            tokio::spawn(async move { while body.frame().await.is_some() {} });
            200
        }
        Answer::Unavailable => 503,
        Answer::Ok => 200,
    };
    Ok(Response::builder()
        .status(status)
        .body(http_body_util::Full::new(Bytes::from_static(b"answered")))
        .unwrap())
}

pub(super) fn apply(store: &Store, type_url: &str, name: &str, value: Vec<u8>) {
    store
        .apply(
            type_url,
            vec![Update {
                name: name.into(),
                version: "1".into(),
                resource: Any {
                    type_url: type_url.into(),
                    value,
                },
            }],
            &[],
            false,
        )
        .unwrap();
}

/// A static cluster of `endpoints` (round robin, in this order), HTTP/2 upstream when `h2`.
pub(super) fn apply_cluster(store: &Store, name: &str, endpoints: &[SocketAddr], h2: bool) {
    use crate::cluster::endpoints::tests::{cla, lb_endpoint};
    let mut c = ClusterPb {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla(endpoints
            .iter()
            .map(|a| lb_endpoint("127.0.0.1", u32::from(a.port())))
            .collect())),
        ..ClusterPb::default()
    };
    if h2 {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            )),
            ..HttpProtocolOptions::default()
        };
        let key = crate::cluster::protocol::HTTP_OPTIONS;
        c.typed_extension_protocol_options.insert(
            key.into(),
            Any {
                type_url: format!("type.googleapis.com/{key}"),
                value: options.encode_to_vec(),
            },
        );
    }
    apply(store, CLUSTER, name, c.encode_to_vec());
}

/// Route `80`: host `app`, everything to cluster `up` with two retries on `retry_on` (none
/// when None), mirrored whole to cluster `shadow` when `mirror`.
fn apply_route(store: &Store, retry_on: Option<&str>, mirror: bool) {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
        retry_policy: retry_on.map(|on| RetryPolicy {
            retry_on: on.into(),
            num_retries: Some(UInt32Value { value: 2 }),
            ..RetryPolicy::default()
        }),
        request_mirror_policies: if mirror {
            vec![route_action::RequestMirrorPolicy {
                cluster: "shadow".into(),
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..RouteAction::default()
    };
    let rc = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["app".into()],
            routes: vec![prefix_route("/", route::Action::Route(action))],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    apply(store, ROUTE, "80", rc.encode_to_vec());
}

type Feed = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A request body the test feeds frame by frame: no length, so chunked over HTTP/1.1 and
/// without `content-length` over HTTP/2.
fn streamed() -> (Feed, BoxBody) {
    let (tx, rx) = mpsc::channel(4);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, body.boxed())
}

/// Feeds `chunks` then, if any, `trailers`, and ends the body.
fn feed(tx: Feed, chunks: Vec<Bytes>, trailers: Option<http::HeaderMap>) {
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(Ok(Frame::data(c))).await.is_err() {
                return;
            }
        }
        if let Some(t) = trailers {
            let _ = tx.send(Ok(Frame::trailers(t))).await;
        }
    });
}

/// A `POST /upload` for host `app` with `body` over HTTP/1.1 or HTTP/2; the response head and
/// the handle keeping the connection's task.
pub(super) async fn post(
    addr: SocketAddr,
    body: BoxBody,
    h2: bool,
) -> Result<Response<Incoming>, BoxError> {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await?);
    let req = Request::post("http://app/upload")
        .header(http::header::HOST, "app")
        .body(body)?;
    let resp = if h2 {
        let (mut s, c) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(c);
        s.send_request(req).await?
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(c);
        s.send_request(req).await?
    };
    Ok(resp)
}

/// Sends `chunks` (and `trailers`) as a streamed body; the status.
pub(super) async fn post_all(
    addr: SocketAddr,
    chunks: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    h2: bool,
) -> u16 {
    let (tx, body) = streamed();
    feed(tx, chunks, trailers);
    let resp = tokio::time::timeout(WITHIN, post(addr, body, h2))
        .await
        .expect("answered in time")
        .expect("a response");
    resp.status().as_u16()
}

pub(super) fn chunks(n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; size]))
        .collect()
}

pub(super) fn concat(chunks: &[Bytes]) -> Bytes {
    chunks.concat().into()
}

/// A proxy in front of cluster `up` = `endpoints`; the store holds its stats, the sender its
/// listener (drained when dropped).
async fn proxy(
    endpoints: &[SocketAddr],
    h2_upstream: bool,
) -> (SocketAddr, Arc<Store>, crate::drain::Drainer) {
    let store = Store::new(Arc::new(Stats::default()));
    apply_cluster(&store, "up", endpoints, h2_upstream);
    let (addr, drain) = start_with(store.clone(), hcm_config()).await;
    (addr, store, drain)
}

#[tokio::test]
async fn a_streamed_body_is_retried_after_a_503_with_the_whole_body() {
    for h2 in [false, true] {
        let (up, seen) = upstream(vec![Answer::Unavailable]).await;
        let (addr, store, _drain) = proxy(&[up], h2).await;
        apply_route(&store, Some("5xx"), false);
        let body = chunks(3, 10_000);
        // Trailers (as gRPC may send) go over HTTP/2 only.
        let trailers = h2.then(|| {
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", "abc".parse().unwrap());
            t
        });
        let status = post_all(addr, body.clone(), trailers.clone(), h2).await;
        assert_eq!(status, 200, "h2={h2}");
        let seen = seen.seen();
        assert_eq!(seen.len(), 2, "h2={h2}: one retry");
        for s in &seen {
            assert_eq!(s.body, concat(&body), "h2={h2}: the whole body each time");
            assert_eq!(s.trailers, trailers, "h2={h2}");
        }
        let stats = store.stats().cluster("up");
        assert_eq!(stats.upstream_rq_retry.get(), 1);
        assert_eq!(stats.retry_or_shadow_abandoned.get(), 0);
    }
}

#[tokio::test]
async fn a_streamed_body_is_retried_after_a_reset_midway() {
    for h2 in [false, true] {
        let (up, seen) = upstream(vec![Answer::ResetAfterFirstFrame]).await;
        let (addr, store, _drain) = proxy(&[up], h2).await;
        apply_route(&store, Some("reset"), false);
        let (tx, body) = streamed();
        let response = tokio::spawn(post(addr, body, h2));
        tx.send(Ok(Frame::data(Bytes::from_static(b"first,"))))
            .await
            .unwrap();
        // The first attempt has read the first frame (and failed) before the rest is sent, so
        // the retry must replay it and then read on.
        assert_eq!(seen.wait_for(1).await.len(), 1, "h2={h2}");
        feed(tx, vec![Bytes::from_static(b"second")], None);
        let resp = tokio::time::timeout(WITHIN, response)
            .await
            .expect("answered in time")
            .unwrap()
            .expect("a response");
        assert_eq!(resp.status(), 200, "h2={h2}");
        let seen = seen.seen();
        assert_eq!(seen.len(), 2, "h2={h2}");
        assert_eq!(seen[0].body, "first,");
        assert_eq!(
            seen[1].body, "first,second",
            "h2={h2}: replayed, then read on"
        );
        assert_eq!(store.stats().cluster("up").upstream_rq_retry.get(), 1);
    }
}

#[tokio::test]
async fn a_streamed_body_is_retried_after_a_connect_failure() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (live, seen) = upstream(vec![]).await;
    // Round robin starts with the first endpoint: the closed port.
    let (addr, store, _drain) = proxy(&[dead, live], false).await;
    apply_route(&store, Some("connect-failure"), false);
    let body = chunks(4, 5_000);
    assert_eq!(post_all(addr, body.clone(), None, false).await, 200);
    let stats = store.stats().cluster("up");
    assert_eq!(
        stats.upstream_cx_connect_fail.get(),
        1,
        "the first attempt failed"
    );
    assert_eq!(stats.upstream_rq_retry.get(), 1);
    let seen = seen.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, concat(&body));
}

#[tokio::test]
async fn a_body_over_the_limit_is_neither_retried_nor_mirrored() {
    let (up, seen) = upstream(vec![Answer::Unavailable]).await;
    let (shadow, shadowed) = upstream(vec![]).await;
    let (addr, store, _drain) = proxy(&[up], false).await;
    apply_cluster(&store, "shadow", &[shadow], false);
    apply_route(&store, Some("5xx"), true);
    // 1.5 MiB in 64 KiB chunks: past the 1 MiB limit before the upstream answers.
    let body = chunks(24, 64 << 10);
    assert_eq!(post_all(addr, body.clone(), None, false).await, 503);
    let seen = seen.seen();
    assert_eq!(seen.len(), 1, "not retried");
    assert_eq!(seen[0].body, concat(&body), "streamed whole all the same");
    let stats = store.stats().cluster("up");
    assert_eq!(stats.retry_or_shadow_abandoned.get(), 1);
    assert_eq!(stats.upstream_rq_retry.get(), 0);
    // A mirror would have been sent when the body ended, before the answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(shadowed.seen().is_empty(), "not mirrored");
}

#[tokio::test]
async fn a_body_that_never_ends_still_streams_upstream() {
    for h2 in [false, true] {
        let (up, seen) = upstream(vec![Answer::OkAfterFirstFrame]).await;
        let (addr, store, _drain) = proxy(&[up], h2).await;
        // Retries and a mirror: the body is recorded as it streams.
        let (shadow, _) = upstream(vec![]).await;
        apply_cluster(&store, "shadow", &[shadow], h2);
        apply_route(&store, Some("5xx"), true);
        let (tx, body) = streamed();
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello"))))
            .await
            .unwrap();
        // `tx` is kept: the body never ends.
        let resp = tokio::time::timeout(WITHIN, post(addr, body, h2))
            .await
            .expect("answered while the body still streams")
            .expect("a response");
        assert_eq!(resp.status(), 200, "h2={h2}");
        assert_eq!(seen.seen()[0].body, "hello", "h2={h2}");
        drop(tx);
    }
}

#[tokio::test]
async fn a_mirror_gets_a_streamed_body_once_complete() {
    for h2 in [false, true] {
        let (up, seen) = upstream(vec![]).await;
        let (shadow, shadowed) = upstream(vec![]).await;
        let (addr, store, _drain) = proxy(&[up], h2).await;
        apply_cluster(&store, "shadow", &[shadow], h2);
        apply_route(&store, None, true);
        let body = chunks(3, 20_000);
        assert_eq!(post_all(addr, body.clone(), None, h2).await, 200);
        assert_eq!(seen.seen()[0].body, concat(&body));
        let copies = shadowed.wait_for(1).await;
        assert_eq!(copies.len(), 1, "h2={h2}: mirrored");
        assert_eq!(copies[0].body, concat(&body), "h2={h2}");
        assert_eq!(copies[0].host, "app-shadow");
    }
}
