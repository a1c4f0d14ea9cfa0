//! The codec's connection against hyper's HTTP/1.1 client over in-memory pipes: the same
//! requests give the same bytes on the wire, the same wire gives the same responses, bodies,
//! trailers and errors.

use super::*;
use crate::http::BoxError;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

fn empty() -> BoxBody {
    Empty::new().map_err(|e| -> BoxError { match e {} }).boxed()
}

fn full(b: &'static str) -> BoxBody {
    Full::new(Bytes::from_static(b.as_bytes()))
        .map_err(|e| -> BoxError { match e {} })
        .boxed()
}

/// A body of unknown length sent in these pieces.
fn stream(pieces: &'static [&'static str]) -> BoxBody {
    StreamBody::new(futures::stream::iter(pieces.iter().map(|p| {
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(p.as_bytes())))
    })))
    .boxed()
}

/// Reads what the other end writes until it has been quiet for a while.
async fn read_quiet(io: &mut DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = tokio::time::Instant::now();
    while start.elapsed() < WAIT {
        match tokio::time::timeout(Duration::from_millis(150), io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
    }
    got
}

async fn hyper_writes(req: Request<BoxBody>) -> Vec<u8> {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let sent = tokio::spawn(async move { tx.send_request(req).await });
    let got = read_quiet(&mut server).await;
    sent.abort();
    conn.abort();
    got
}

async fn codec_writes(req: Request<BoxBody>) -> Vec<u8> {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let mut c = Connection::new(client, Arc::default());
    start(&mut c, req);
    written(&mut c, &mut server).await
}

/// The bytes `c` writes for the request started on it.
async fn written<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Connection<T>,
    peer: &mut DuplexStream,
) -> Vec<u8> {
    tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_send(cx)))
        .await
        .expect("written in time")
        .expect("written");
    read_quiet(peer).await
}

#[tokio::test]
async fn a_kept_head_is_written_as_hyper_writes_it_and_left_for_the_next_attempt() {
    for (method, body, what) in [
        ("GET", empty as fn() -> BoxBody, "no body"),
        ("POST", || full("hello"), "known length"),
        ("POST", || stream(&["he", "llo"]), "chunked"),
    ] {
        let make = || req(method, "/a?b=c", &[("host", "svc"), ("x-a", "1")], body());
        let want = hyper_writes(make()).await;
        let (mut head, _) = make().into_parts();
        for attempt in 1..=2 {
            let (client, mut server) = tokio::io::duplex(1 << 16);
            let mut c = Connection::new(client, Arc::default());
            c.start(Outgoing {
                head: &mut head,
                body: body(),
                keep: true,
            });
            let got = written(&mut c, &mut server).await;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{what}, attempt {attempt}"
            );
            assert_eq!(head.headers["x-a"], "1", "{what}: the head is left whole");
            assert_eq!(head.uri, "/a?b=c");
        }
        // Not kept: the head's header map goes to the connection (the response's headers).
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut c = Connection::new(client, Arc::default());
        c.start(Outgoing {
            head: &mut head,
            body: body(),
            keep: false,
        });
        assert_eq!(
            written(&mut c, &mut server).await,
            want,
            "{what}, last attempt"
        );
        assert!(head.headers.is_empty(), "{what}: the map was taken");
    }
}

type MakeRequest = fn() -> Request<BoxBody>;

/// Starts `req` on `c`, its head not kept.
fn start<T: AsyncRead + AsyncWrite + Unpin>(c: &mut Connection<T>, req: Request<BoxBody>) {
    let (mut head, body) = req.into_parts();
    c.start(Outgoing {
        head: &mut head,
        body,
        keep: false,
    });
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: BoxBody) -> Request<BoxBody> {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).expect("valid request")
}

#[tokio::test]
async fn requests_are_written_byte_for_byte_as_hyper_writes_them() {
    let cases: &[(&str, MakeRequest)] = &[
        ("GET, no body", || {
            req(
                "GET",
                "/",
                &[("host", "a:80"), ("x-b", "1"), ("X-C", "2"), ("x-b", "3")],
                empty(),
            )
        }),
        ("GET with a query, content-length: 0", || {
            req(
                "GET",
                "/p/q?x=1&y=%20",
                &[("host", "a"), ("content-length", "0")],
                empty(),
            )
        }),
        ("transfer-encoding on an empty body is dropped", || {
            req("GET", "/", &[("transfer-encoding", "chunked")], empty())
        }),
        ("POST, known length", || {
            req("POST", "/up", &[("host", "a")], full("hello"))
        }),
        ("POST, known length and its header", || {
            req("POST", "/", &[("content-length", "5")], full("hello"))
        }),
        ("POST, a shorter content-length cuts the body", || {
            req("POST", "/", &[("content-length", "3")], full("hello"))
        }),
        ("POST, unknown length: chunked", || {
            req(
                "POST",
                "/",
                &[("host", "a")],
                stream(&["ab", "", "cde", "f"]),
            )
        }),
        ("PUT, unknown length with content-length", || {
            req(
                "PUT",
                "/",
                &[("content-length", "4")],
                stream(&["ab", "cd"]),
            )
        }),
        ("PATCH, transfer-encoding not ending in chunked", || {
            req(
                "PATCH",
                "/",
                &[("transfer-encoding", "gzip"), ("content-length", "2")],
                stream(&["xy"]),
            )
        }),
        ("DELETE, chunked asked for a known body", || {
            req(
                "DELETE",
                "/",
                &[("transfer-encoding", "chunked")],
                full("zz"),
            )
        }),
        ("OPTIONS *", || {
            req("OPTIONS", "*", &[("host", "a")], empty())
        }),
        ("connection: close", || {
            req("GET", "/", &[("connection", "close")], empty())
        }),
        ("absolute form", || {
            req("GET", "http://a.example:8080/x?y", &[], empty())
        }),
    ];
    for (name, make) in cases {
        let want = hyper_writes(make()).await;
        let got = codec_writes(make()).await;
        assert!(!want.is_empty(), "{name}: hyper wrote nothing");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{name}"
        );
    }
}

/// What a client made of a response.
#[derive(Debug, PartialEq)]
enum Outcome {
    Failed(String),
    Response {
        status: StatusCode,
        version: http::Version,
        headers: Vec<(String, Vec<u8>)>,
        reason: Option<Vec<u8>>,
        body: Result<(Vec<u8>, Option<HeaderMap>), String>,
    },
}

/// Answers one request head with `wire` (in its pieces), then closes or holds the pipe.
async fn serve(mut server: DuplexStream, wire: Vec<Vec<u8>>, close: bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    for p in wire {
        if server.write_all(&p).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    if !close {
        tokio::time::sleep(WAIT * 2).await;
    }
}

/// A response head's status, version, headers and reason phrase.
type SeenHead = (
    StatusCode,
    http::Version,
    Vec<(String, Vec<u8>)>,
    Option<Vec<u8>>,
);

fn outcome_head(parts: &http::response::Parts) -> SeenHead {
    (
        parts.status,
        parts.version,
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| r.as_bytes().to_vec()),
    )
}

async fn hyper_reads(method: &str, wire: Vec<Vec<u8>>, close: bool) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let serving = tokio::spawn(serve(server, wire, close));
    let out = tokio::time::timeout(WAIT, async {
        let resp = match tx
            .send_request(req(method, "/", &[("host", "a")], empty()))
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let (parts, mut body) = resp.into_parts();
        let (status, version, headers, reason) = outcome_head(&parts);
        let mut data = Vec::new();
        let mut trailers = None;
        let body = loop {
            match body.frame().await {
                None => break Ok((data, trailers)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Some(Err(e)) => break Err(e.to_string()),
            }
        };
        Outcome::Response {
            status,
            version,
            headers,
            reason,
            body,
        }
    })
    .await
    .expect("hyper's read in time");
    serving.abort();
    conn.abort();
    out
}

async fn codec_reads(method: &str, wire: Vec<Vec<u8>>, close: bool) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(serve(server, wire, close));
    let mut c = Connection::new(client, Arc::default());
    start(&mut c, req(method, "/", &[("host", "a")], empty()));
    let out = tokio::time::timeout(WAIT, async {
        let head = match poll_fn(|cx| c.poll_head(cx)).await {
            Ok(h) => h,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let (parts, ()) = head.response.into_parts();
        let (status, version, headers, reason) = outcome_head(&parts);
        let mut decoder = Decoder::new(head.framing);
        let mut data = Vec::new();
        let mut trailers = None;
        let body = loop {
            match poll_fn(|cx| c.poll_body(cx, &mut decoder)).await {
                None => break Ok((data, trailers)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Some(Err(e)) => break Err(e.to_string()),
            }
        };
        Outcome::Response {
            status,
            version,
            headers,
            reason,
            body,
        }
    })
    .await
    .expect("the codec's read in time");
    serving.abort();
    out
}

/// The response wire of each case, whole and (when `bytewise`) one byte per write.
#[tokio::test]
async fn responses_are_read_as_hyper_reads_them() {
    let cases: &[(&str, &str, bool)] = &[
        ("GET", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\nX-A: 2\r\n\r\nok", false),
        ("GET", "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", false),
        ("GET", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", false),
        ("GET", "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok", false),
        ("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nx-t: 1\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw until close", true),
        ("GET", "HTTP/1.1 200 OK\r\n\r\nuntil close", true),
        ("GET", "HTTP/1.0 200 OK\r\n\r\nten bytes.", true),
        ("GET", "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", true),
        ("HEAD", "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", false),
        ("GET", "HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n", false),
        ("GET", "HTTP/1.1 304 Not Modified\r\n\r\n", false),
        ("GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx", false),
        ("GET", "HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n", false),
        ("GET", "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-o: caf\u{e9}\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n", false),
        ("GET", "HTTP/1.1 2000 OK\r\n\r\n", false),
        ("GET", "HTTP/2 200\r\n\r\n", false),
        ("GET", "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
        ("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab", true),
        ("GET", "HTTP/1.1 200 OK\r\ncontent-le", true),
        ("GET", "", true),
    ];
    for (method, wire, close) in cases {
        for bytewise in [false, true] {
            let pieces: Vec<Vec<u8>> = if bytewise {
                wire.bytes().map(|b| vec![b]).collect()
            } else {
                vec![wire.as_bytes().to_vec()]
            };
            let want = hyper_reads(method, pieces.clone(), *close).await;
            let got = codec_reads(method, pieces, *close).await;
            assert_eq!(got, want, "{method} {wire:?} bytewise={bytewise}");
        }
    }
}

/// The connection is reusable only after a kept-alive response read exactly to its end.
#[tokio::test]
async fn reuse_needs_a_kept_alive_response_read_to_its_end() {
    let cases: &[(&str, &str, bool)] = &[
        (
            "GET",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            true,
        ),
        ("HEAD", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", true),
        // Bytes nobody asked for after the response.
        (
            "GET",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
            false,
        ),
        (
            "HEAD",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (
            "GET",
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
    ];
    for (method, wire, reusable) in cases {
        let (client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve(server, vec![wire.as_bytes().to_vec()], false));
        let mut c = Connection::new(client, Arc::default());
        start(&mut c, req(method, "/", &[], empty()));
        let head = tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_head(cx)))
            .await
            .expect("in time")
            .expect("a head");
        let mut decoder = Decoder::new(head.framing);
        // Let everything arrive before the body is read.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Some(f) = tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_body(cx, &mut decoder)))
            .await
            .expect("in time")
        {
            f.expect("a frame");
        }
        assert_eq!(c.reusable(), *reusable, "{method} {wire:?}");
        serving.abort();
    }
}

/// A response that ends while the request body is still being written: the connection is
/// not reusable until the body is all written.
#[tokio::test]
async fn a_response_before_the_request_body_is_written() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(serve(
        server,
        vec![b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n".to_vec()],
        false,
    ));
    let (body_tx, body_rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let mut c = Connection::new(client, Arc::default());
    start(
        &mut c,
        req(
            "POST",
            "/",
            &[("content-length", "4")],
            StreamBody::new(body_rx).boxed(),
        ),
    );
    let head = tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_head(cx)))
        .await
        .expect("in time")
        .expect("a head");
    assert_eq!(head.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(c.sending() && !c.reusable());
    let mut body_tx = body_tx;
    use futures::SinkExt;
    body_tx
        .send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
        .await
        .expect("body sent");
    tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_send(cx)))
        .await
        .expect("in time")
        .expect("written");
    assert!(!c.sending() && c.reusable());
    serving.abort();
}

/// An idle connection notices its peer's close (or unasked bytes) through its idle waker.
#[tokio::test]
async fn an_idle_connection_is_reaped_once_its_peer_closes() {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let watcher = Arc::new(tokio::sync::Notify::new());
    let mut c = Connection::new(client, watcher.clone());
    assert!(c.watch(), "open");
    assert!(!c.reap(), "not woken: not polled");
    server.write_all(b"x").await.expect("written");
    tokio::time::timeout(WAIT, watcher.notified())
        .await
        .expect("the watcher is woken");
    assert!(c.reap(), "unasked bytes end it");
    let (client, server) = tokio::io::duplex(1 << 16);
    let mut c = Connection::new(client, watcher.clone());
    assert!(!c.closed() && c.watch());
    drop(server);
    tokio::time::timeout(WAIT, watcher.notified())
        .await
        .expect("the watcher is woken");
    assert!(c.reap(), "the close ends it");
    // A close the watcher has not seen yet is seen as the connection leaves the pool.
    let (client, server) = tokio::io::duplex(1 << 16);
    let mut c = Connection::new(client, Arc::default());
    assert!(!c.closed(), "open");
    drop(server);
    assert!(c.closed(), "closed by its peer");
}

/// An I/O holding written bytes until flushed, its first flush pending (as a TLS stream whose
/// socket is momentarily full).
struct HeldUntilFlushed {
    inner: DuplexStream,
    held: Vec<u8>,
    flushes: usize,
}

impl AsyncRead for HeldUntilFlushed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HeldUntilFlushed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.flushes == 0 {
            self.flushes += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let this = &mut *self;
        while !this.held.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A head written but not yet flushed is flushed while the response is awaited.
#[tokio::test]
async fn a_request_is_flushed_while_its_response_is_awaited() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(serve(
        server,
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()],
        false,
    ));
    let io = HeldUntilFlushed {
        inner: client,
        held: Vec::new(),
        flushes: 0,
    };
    let mut c = Connection::new(io, Arc::default());
    start(&mut c, req("GET", "/", &[("host", "a")], empty()));
    let head = tokio::time::timeout(WAIT, poll_fn(|cx| c.poll_head(cx)))
        .await
        .expect("the request reached the server")
        .expect("a head");
    assert_eq!(head.response.status(), StatusCode::OK);
    assert!(!c.sending());
    serving.abort();
}
