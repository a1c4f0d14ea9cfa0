//! The HTTP/2 server through `serve_connection` over loopback, with the `h2` crate's client:
//! concurrent streams, flow control past both windows, trailers, client resets, body errors
//! and the drain's GOAWAY.

use super::starts_preface;
use crate::http::replay_tests::apply_cluster;
use crate::http::tests::{apply_routes, hcm_config, prefix_route, rq_active_becomes, serve_one};
use crate::http::{BoxBody, BoxError, Codec, HcmConfig};
use crate::stats::Stats;
use crate::store::Store;
use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, DirectResponseAction, RouteAction, RouteConfiguration, VirtualHost,
};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WITHIN: Duration = Duration::from_secs(10);

/// What the upstream tells the test: a request arrived (`/slow`), or the proxy dropped one
/// it had not finished (`/hang`'s request, `/endless`'s response body).
#[derive(Debug, PartialEq)]
enum Event {
    Arrived,
    Dropped(&'static str),
}

/// Sends its event when dropped.
struct OnDrop(mpsc::UnboundedSender<Event>, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Dropped(self.1));
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(b.into())
        .map_err(|e| match e {})
        .boxed()
}

/// Octets `/flood` bodies have produced (one test uses it).
static FLOODED: AtomicUsize = AtomicUsize::new(0);
/// Where a `/flood` body stops: far beyond what socket buffers and the server's bound hold.
const FLOOD_LIMIT: usize = 256 << 20;

/// An upstream speaking HTTP/1.1 and HTTP/2: `/echo` streams the request body (trailers too)
/// back; `/slow` answers `done` after 300 ms; `/hang` never answers; `/endless` sends a chunk
/// every 10 ms forever; `/break` sends a chunk and then fails its body; `/flood` sends 64 KiB
/// chunks as fast as they are taken, up to [`FLOOD_LIMIT`], counting them in [`FLOODED`].
async fn upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Event>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let events = events.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let events = events.clone();
                async move {
                    let body = match req.uri().path() {
                        "/echo" => req
                            .into_body()
                            .map_err(|e| -> BoxError { Box::new(e) })
                            .boxed(),
                        "/slow" => {
                            let _ = events.send(Event::Arrived);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            full("done")
                        }
                        "/hang" => {
                            let _guard = OnDrop(events, "/hang");
                            std::future::pending::<BoxBody>().await
                        }
                        "/endless" => {
                            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
                            tokio::spawn(async move {
                                let _guard = OnDrop(events, "/endless");
                                while tx.send(Ok(Frame::data(Bytes::from("tick")))).await.is_ok() {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            });
                            http_body_util::StreamBody::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            )
                            .boxed()
                        }
                        "/break" => {
                            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
                            tokio::spawn(async move {
                                let _ = tx.send(Ok(Frame::data(Bytes::from("partial")))).await;
                                // After the head and the chunk have reached the proxy.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                let _ = tx.send(Err("upstream body failed".into())).await;
                            });
                            http_body_util::StreamBody::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            )
                            .boxed()
                        }
                        "/flood" => {
                            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                            let chunks = futures::stream::unfold((), move |()| {
                                let chunk = chunk.clone();
                                async move {
                                    let before = FLOODED.fetch_add(chunk.len(), Ordering::Relaxed);
                                    (before < FLOOD_LIMIT)
                                        .then(|| (Ok::<_, BoxError>(Frame::data(chunk)), ()))
                                }
                            });
                            http_body_util::StreamBody::new(chunks).boxed()
                        }
                        _ => full("unknown"),
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                }
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
    (addr, rx)
}

/// A store routing everything for host `app` to cluster `up` at `upstream` (HTTP/2 upstream
/// when `h2`).
fn store_for(upstream: SocketAddr, h2: bool) -> Arc<Store> {
    let store = Store::new(Arc::new(Stats::default()));
    apply_cluster(&store, "up", &[upstream], h2);
    let rc = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["app".into()],
            routes: vec![
                prefix_route(
                    "/direct",
                    route::Action::DirectResponse(DirectResponseAction {
                        status: 200,
                        ..DirectResponseAction::default()
                    }),
                ),
                prefix_route(
                    "/",
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
    apply_routes(&store, "80", "1", &rc);
    store
}

fn hcm(codec: Codec) -> HcmConfig {
    HcmConfig {
        codec,
        ..hcm_config()
    }
}

/// An HTTP/2 client connection; its task ends when the connection does.
async fn connect(
    addr: SocketAddr,
) -> (
    ::h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), ::h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = ::h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

/// A backend, a store routing `app` to it (over HTTP/2 when `h2_upstream`), one downstream
/// connection served with `codec`, and an HTTP/2 client on it. The drainer and both tasks are
/// kept so that tests can drain and await the ends.
/// Bind it to a variable before taking fields out with `..`: the fields not taken (the
/// connection, the drain handle, the upstream) then live on in it until the test ends.
struct Fixture {
    store: Arc<Store>,
    events: mpsc::UnboundedReceiver<Event>,
    drainer: crate::drain::Drainer,
    task: tokio::task::JoinHandle<()>,
    send: ::h2::client::SendRequest<Bytes>,
    conn: tokio::task::JoinHandle<Result<(), ::h2::Error>>,
}

async fn fixture(codec: Codec, h2_upstream: bool) -> Fixture {
    fixture_with(hcm(codec), h2_upstream).await
}

/// [`fixture`] with the connection served under `hcm`.
async fn fixture_with(hcm: HcmConfig, h2_upstream: bool) -> Fixture {
    let (up, events) = upstream().await;
    let store = store_for(up, h2_upstream);
    let (drainer, drain) = crate::drain::channel();
    let (addr, task) = serve_one(store.clone(), hcm, drain).await;
    let (send, conn) = connect(addr).await;
    Fixture {
        store,
        events,
        drainer,
        task,
        send,
        conn,
    }
}

fn get(path: &str) -> Request<()> {
    Request::builder()
        .method(if path == "/echo" { "POST" } else { "GET" })
        .uri(format!("http://app{path}"))
        .body(())
        .unwrap()
}

/// Sends `data` as the client's flow control allows, then `trailers` or the end of the stream.
async fn send_body(mut tx: ::h2::SendStream<Bytes>, mut data: Bytes, trailers: Option<HeaderMap>) {
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let n = poll_fn(|cx| tx.poll_capacity(cx))
            .await
            .expect("stream open")
            .expect("capacity");
        let chunk = data.split_to(n.min(data.len()));
        tx.send_data(chunk, false).unwrap();
    }
    match trailers {
        Some(t) => tx.send_trailers(t).unwrap(),
        None => tx.send_data(Bytes::new(), true).unwrap(),
    }
}

/// Reads a response body to its end, giving the window back as it goes; the body and trailers.
async fn read_body(
    mut body: ::h2::RecvStream,
) -> Result<(Vec<u8>, Option<HeaderMap>), ::h2::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        out.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?;
    Ok((out, trailers))
}

/// The connection still serves: `/slow` answers `done`.
async fn assert_serves_slow(send: ::h2::client::SendRequest<Bytes>) {
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/slow"), true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(read_body(resp.into_body()).await.unwrap().0, b"done");
}

#[test]
fn the_preface_is_recognised_from_its_first_line() {
    for (read, want) in [
        (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"[..], true),
        (&b"PRI * HTTP/2.0\r\n"[..], true),
        (&b"PRI * HTTP/2.0"[..], true),
        // Too short to tell: hyper's codec reads on.
        (&b"PRI * HTTP/2"[..], false),
        (&b"PRI * HTTP/2.0\r\n\r\nXX"[..], false),
        (&b"GET / HTTP/1.1\r\n\r\n"[..], false),
        (&b""[..], false),
    ] {
        assert_eq!(starts_preface(read), want, "{read:?}");
    }
}

/// Many streams at once on one connection, each answered with its own body; the connection
/// manager counts each request once.
#[tokio::test]
async fn many_concurrent_streams_on_one_connection() {
    // Auto: the HTTP/1 codec sees the preface and hands the connection over.
    let fx = fixture(Codec::Auto, false).await;
    let Fixture { store, send, .. } = fx;
    let mut calls = Vec::new();
    for i in 0..64 {
        let send = send.clone();
        calls.push(tokio::spawn(async move {
            let mut send = send.ready().await.unwrap();
            let (resp, tx) = send.send_request(get("/echo"), false).unwrap();
            send_body(tx, Bytes::from(format!("request {i}")), None).await;
            let resp = resp.await.unwrap();
            let head = resp.headers().clone();
            assert_eq!(resp.status(), 200);
            let (body, _) = read_body(resp.into_body()).await.unwrap();
            assert_eq!(body, format!("request {i}").as_bytes());
            head
        }));
    }
    for c in calls {
        let head = tokio::time::timeout(WITHIN, c).await.unwrap().unwrap();
        assert_eq!(head["server"], "envoy");
        assert!(head.contains_key("date"), "{head:?}");
        assert!(!head.contains_key("connection"), "{head:?}");
        assert!(!head.contains_key("transfer-encoding"), "{head:?}");
    }
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_rq_total.get(), 64);
    assert_eq!(stats.downstream_rq_class[1].get(), 64);
    assert_eq!(stats.downstream_cx_active.get(), 1);
}

/// A request body and a response body each larger than the receiving side's windows (the
/// proxy's 1 MiB, the client's default 64 KiB): both flow only as the windows reopen.
#[tokio::test]
async fn bodies_larger_than_the_windows_flow_both_ways() {
    for h2_upstream in [false, true] {
        let fx = fixture(Codec::Http2, h2_upstream).await;
        let Fixture { send, .. } = fx;
        let mut send = send.ready().await.unwrap();
        let big: Bytes = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let (resp, tx) = send.send_request(get("/echo"), false).unwrap();
        let sending = tokio::spawn(send_body(tx, big.clone(), None));
        let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        let (body, _) = tokio::time::timeout(WITHIN, read_body(resp.into_body()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), big.len(), "h2 upstream: {h2_upstream}");
        assert!(body == big, "h2 upstream: {h2_upstream}");
        sending.await.unwrap();
    }
}

/// A gRPC-like call: request trailers reach the upstream, which sends them back as the
/// response's trailers.
#[tokio::test]
async fn trailers_flow_both_ways() {
    let fx = fixture(Codec::Http2, true).await;
    let Fixture { send, .. } = fx;
    let mut send = send.ready().await.unwrap();
    let mut req = get("/echo");
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    req.headers_mut().insert("te", "trailers".parse().unwrap());
    let (resp, tx) = send.send_request(req, false).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    send_body(
        tx,
        Bytes::from_static(b"\0\0\0\0\x03abc"),
        Some(trailers.clone()),
    )
    .await;
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let (body, got) = tokio::time::timeout(WITHIN, read_body(resp.into_body()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, b"\0\0\0\0\x03abc");
    let got = got.expect("trailers");
    assert_eq!(got["grpc-status"], "0");
    assert_eq!(got["x-checksum"], "abc");
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WITHIN, events.recv())
        .await
        .expect("an upstream event in time")
        .expect("upstream running")
}

/// A client reset cancels the request: waiting for the upstream's answer, or midway through
/// the response body. The connection serves on.
#[tokio::test]
async fn a_client_reset_cancels_the_request() {
    let fx = fixture(Codec::Http2, true).await;
    let Fixture {
        mut events, send, ..
    } = fx;

    // Before the response: the upstream request is dropped.
    let mut send = send.ready().await.unwrap();
    let (_resp, mut tx) = send.send_request(get("/hang"), true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send_reset(::h2::Reason::CANCEL);
    assert_eq!(next_event(&mut events).await, Event::Dropped("/hang"));

    // Midway through the response body: the upstream's body is dropped.
    let mut send = send.ready().await.unwrap();
    let (resp, mut tx) = send.send_request(get("/endless"), true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    let first = body.data().await.unwrap().unwrap();
    assert_eq!(first, "tick");
    tx.send_reset(::h2::Reason::CANCEL);
    assert_eq!(next_event(&mut events).await, Event::Dropped("/endless"));

    assert_serves_slow(send).await;
}

/// A request cancelled by the client's reset while its response is pending is no longer
/// active: on this server, and on hyper's (`allow_connect`).
#[tokio::test]
async fn a_reset_request_is_no_longer_active() {
    for allow_connect in [false, true] {
        let fx = fixture_with(
            HcmConfig {
                allow_connect,
                ..hcm(Codec::Http2)
            },
            true,
        )
        .await;
        let Fixture {
            store,
            mut events,
            send,
            ..
        } = fx;
        let mut send = send.ready().await.unwrap();
        let (_resp, mut tx) = send.send_request(get("/hang"), true).unwrap();
        assert!(
            rq_active_becomes(&store, 1).await,
            "allow_connect {allow_connect}"
        );
        tx.send_reset(::h2::Reason::CANCEL);
        assert_eq!(next_event(&mut events).await, Event::Dropped("/hang"));
        assert!(
            rq_active_becomes(&store, 0).await,
            "allow_connect {allow_connect}: {} active",
            store.stats().http("test").downstream_rq_active.get()
        );
    }
}

/// A response body that fails midway resets the stream with INTERNAL_ERROR, after the data
/// already sent.
#[tokio::test]
async fn a_response_body_error_resets_the_stream() {
    let fx = fixture(Codec::Http2, true).await;
    let Fixture { send, .. } = fx;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/break"), true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match tokio::time::timeout(WITHIN, body.data()).await.unwrap() {
            Some(Ok(b)) => got.extend_from_slice(&b),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without a reset after {got:?}"),
        }
    };
    assert_eq!(got, b"partial");
    assert_eq!(err.reason(), Some(::h2::Reason::INTERNAL_ERROR), "{err}");
}

/// The drain sends GOAWAY: the request in flight completes, the connection then closes, and
/// the proxy's side of it ends.
#[tokio::test]
async fn drain_sends_goaway_and_in_flight_requests_complete() {
    let fx = fixture(Codec::Http2, false).await;
    let Fixture {
        store,
        mut events,
        drainer,
        task,
        send,
        conn,
    } = fx;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/slow"), true).unwrap();
    assert_eq!(next_event(&mut events).await, Event::Arrived);
    drainer.start(Duration::from_secs(60));
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let (body, _) = read_body(resp.into_body()).await.unwrap();
    assert_eq!(body, b"done");
    // GOAWAY received and no stream left: the client's connection ends cleanly.
    tokio::time::timeout(WITHIN, conn)
        .await
        .expect("the connection closes after GOAWAY")
        .unwrap()
        .unwrap();
    tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
    assert_eq!(store.stats().http("test").downstream_cx_active.get(), 0);
}

/// A stream still open when the drain window ends is cut with its connection.
#[tokio::test]
async fn the_end_of_the_drain_window_cuts_open_streams() {
    let fx = fixture(Codec::Http2, true).await;
    let Fixture {
        store,
        drainer,
        task,
        send,
        ..
    } = fx;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/endless"), true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    drainer.start(Duration::from_millis(200));
    // The body stops short: the connection is closed.
    let r = tokio::time::timeout(WITHIN, read_body(resp.into_body()))
        .await
        .expect("the body ends with the drain window");
    assert!(r.is_err(), "{r:?}");
    tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
    assert_eq!(store.stats().http("test").downstream_cx_active.get(), 0);
}

/// A client that does not read its socket holds the response back: what the server queues
/// for it is bounded (by its high-water mark, then the socket buffers), so the upstream's
/// body is not read on into memory even though the client's windows allow 2 GiB.
#[tokio::test]
async fn a_client_that_does_not_read_holds_the_response_body_back() {
    use crate::http2::frame::tests::{raw, settings_payload};
    let (up, _events) = upstream().await;
    let (_drainer, drain) = crate::drain::channel();
    let (addr, _task) = serve_one(store_for(up, false), hcm(Codec::Http2), drain).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let max_window = (1u32 << 31) - 1;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE, and the connection's window opened as far as it goes.
    hello.extend(raw(0x4, 0, 0, &settings_payload(&[(0x4, max_window)])));
    hello.extend(raw(0x8, 0, 0, &(max_window - 65_535).to_be_bytes()));
    // GET http://app/flood, END_STREAM | END_HEADERS, as literal fields without indexing.
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "app"),
        (":path", "/flood"),
    ] {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    hello.extend(raw(0x1, 0x5, 1, &block));
    tcp.write_all(&hello).await.unwrap();
    // The flood runs until the server stops taking it: no change over half a second.
    let mut last = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = FLOODED.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let held = FLOODED.load(Ordering::Relaxed);
    assert!(
        held < 64 << 20,
        "{} MiB of the body read while the client read none",
        held >> 20
    );
    // The client reads again: the body flows on.
    let mut buf = vec![0; 1 << 20];
    let mut read = 0;
    while read < 2 * held {
        let n = tokio::time::timeout(WITHIN, tcp.read(&mut buf))
            .await
            .expect("the response flows once read")
            .unwrap();
        assert!(n > 0, "the connection closed after {read} octets");
        read += n;
    }
    assert!(FLOODED.load(Ordering::Relaxed) > held);
}

/// Once the response is complete, a request body nobody reads any more is stopped:
/// RST_STREAM with NO_ERROR (RFC 9113 §8.1), not read on to its end.
#[tokio::test]
async fn an_unread_request_body_is_stopped_once_answered() {
    let fx = fixture(Codec::Http2, false).await;
    let Fixture { send, .. } = fx;
    let mut send = send.ready().await.unwrap();
    let req = Request::builder()
        .method("POST")
        .uri("http://app/direct")
        .body(())
        .unwrap();
    let (resp, mut tx) = send.send_request(req, false).unwrap();
    tx.send_data(Bytes::from("first"), false).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    tx.send_data(Bytes::from("more"), false).unwrap();
    let reason = tokio::time::timeout(WITHIN, poll_fn(|cx| tx.poll_reset(cx)))
        .await
        .expect("the body is stopped")
        .unwrap();
    assert_eq!(reason, ::h2::Reason::NO_ERROR);
    // The connection serves on.
    assert_serves_slow(send).await;
}

/// A request head beyond SETTINGS_MAX_HEADER_LIST_SIZE (16 KiB) is answered 431, and the
/// connection serves on.
#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let fx = fixture(Codec::Http2, false).await;
    let Fixture { send, .. } = fx;
    let mut send = send.ready().await.unwrap();
    let mut req = get("/slow");
    req.headers_mut().insert(
        "x-big",
        http::HeaderValue::from_str(&"b".repeat(20 << 10)).unwrap(),
    );
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(WITHIN, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 431);
    assert_serves_slow(send).await;
}

/// The connection manager's `http2_protocol_options` are the settings the client is sent.
#[tokio::test]
async fn the_connection_managers_http2_options_are_the_settings_sent() {
    let fx = fixture_with(
        HcmConfig {
            http2: crate::http::Http2Settings {
                max_concurrent_streams: 3,
                ..crate::http::Http2Settings::default()
            },
            ..hcm(Codec::Http2)
        },
        false,
    )
    .await;
    let Fixture { send, .. } = fx;
    // After one exchange the client has the server's SETTINGS.
    assert_serves_slow(send.clone()).await;
    assert_eq!(send.current_max_send_streams(), 3);
}

/// With two requests in flight (the first served in the connection's own slot, the second in
/// the set of others), a reset cancels the one it names, whichever it is.
#[tokio::test]
async fn a_reset_cancels_the_named_stream_among_several() {
    let fx = fixture(Codec::Http2, true).await;
    let Fixture {
        mut events, send, ..
    } = fx;
    let mut send = send.ready().await.unwrap();
    let (_first, mut first) = send.send_request(get("/hang"), true).unwrap();
    let mut send = send.ready().await.unwrap();
    let (_second, mut second) = send.send_request(get("/hang"), true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    second.send_reset(::h2::Reason::CANCEL);
    assert_eq!(next_event(&mut events).await, Event::Dropped("/hang"));
    // The first still waits: nothing more is dropped until it is reset too.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err(),
        "only the reset stream is cancelled"
    );
    first.send_reset(::h2::Reason::CANCEL);
    assert_eq!(next_event(&mut events).await, Event::Dropped("/hang"));
    assert_serves_slow(send).await;
}
