//! Responses written by the fast path compared byte for byte with what hyper's HTTP/1.1
//! server writes for the same response (the `date` value aside).

use super::*;
use crate::http::{BoxBody, BoxError};
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type MakeResp = fn() -> Response<BoxBody>;

fn full(s: &'static str) -> BoxBody {
    http_body_util::Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|e| match e {})
        .boxed()
}

fn empty() -> BoxBody {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

/// A body of unknown length: two chunks, then trailers when asked.
fn streamed(trailers: bool) -> BoxBody {
    let mut frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"hello "))),
        Ok(http_body::Frame::data(Bytes::from_static(b"world"))),
    ];
    if trailers {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push(Ok(http_body::Frame::trailers(t)));
    }
    http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed()
}

fn with(status: u16, body: BoxBody, headers: &[(&'static str, &'static str)]) -> Response<BoxBody> {
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).expect("a status");
    for (n, v) in headers {
        r.headers_mut()
            .append(*n, http::HeaderValue::from_static(v));
    }
    r
}

fn cases() -> Vec<(&'static str, &'static str, MakeResp)> {
    vec![
        ("full body", "GET", || {
            with(200, full("hello"), &[("x-a", "1")])
        }),
        ("no body", "GET", || with(404, empty(), &[])),
        ("length header and body", "GET", || {
            with(
                200,
                full("hello"),
                &[("content-length", "5"), ("server", "envoy")],
            )
        }),
        ("streamed", "GET", || with(200, streamed(false), &[])),
        ("streamed with trailers", "GET", || {
            with(200, streamed(true), &[("trailer", "grpc-status")])
        }),
        ("upstream chunked", "GET", || {
            with(200, streamed(false), &[("transfer-encoding", "chunked")])
        }),
        ("upstream length, unknown body", "GET", || {
            with(200, streamed(false), &[("content-length", "11")])
        }),
        ("chunked header, no body", "GET", || {
            with(200, empty(), &[("transfer-encoding", "chunked")])
        }),
        ("encoding not chunked", "GET", || {
            with(200, streamed(false), &[("transfer-encoding", "gzip")])
        }),
        ("no content", "GET", || with(204, full("dropped"), &[])),
        ("not modified", "GET", || {
            with(304, empty(), &[("etag", "\"x\"")])
        }),
        ("head, full", "HEAD", || with(200, full("hello"), &[])),
        ("head, empty", "HEAD", || with(200, empty(), &[])),
        ("head, length header", "HEAD", || {
            with(200, empty(), &[("content-length", "42")])
        }),
        ("connection close", "GET", || {
            with(200, full("bye"), &[("connection", "close")])
        }),
        ("connection values", "GET", || {
            with(
                200,
                full("x"),
                &[("connection", "keep-alive"), ("connection", "x-foo")],
            )
        }),
        ("date given", "GET", || {
            with(
                503,
                full("no"),
                &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")],
            )
        }),
        ("repeated headers", "GET", || {
            with(
                302,
                empty(),
                &[
                    ("set-cookie", "a=1"),
                    ("location", "/x"),
                    ("set-cookie", "b=2"),
                ],
            )
        }),
        ("reason phrase", "GET", || {
            let mut r = with(200, full("x"), &[]);
            r.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"Fine"));
            r
        }),
        ("non-canonical status", "GET", || with(599, empty(), &[])),
        ("HTTP/1.0 response", "GET", || {
            let mut r = with(200, full("old"), &[]);
            *r.version_mut() = http::Version::HTTP_10;
            r
        }),
        ("HTTP/1.0 response, unknown length", "GET", || {
            let mut r = with(200, streamed(false), &[]);
            *r.version_mut() = http::Version::HTTP_10;
            r
        }),
        ("HTTP/2 response", "GET", || {
            let mut r = with(201, full("new"), &[]);
            *r.version_mut() = http::Version::HTTP_2;
            r
        }),
    ]
}

/// `date: <29 characters>` made comparable.
fn undated(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b).into_owned();
    match s.find("date: ") {
        Some(i) if s.len() >= i + 6 + 29 && !s[i..].starts_with("date: Sun, 06 Nov 1994") => {
            format!("{}date: <now>{}", &s[..i], &s[i + 6 + 29..])
        }
        _ => s,
    }
}

async fn by_hyper(method: &str, make: MakeResp) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let svc =
        hyper::service::service_fn(
            move |_req| async move { Ok::<_, std::convert::Infallible>(make()) },
        );
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
    );
    let mut client = client;
    client
        .write_all(format!("{method} / HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes())
        .await
        .expect("request written");
    // Read until the connection is quiet for a while (the response is small).
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(150), client.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

async fn by_fast_path(method: &str, resp: Response<BoxBody>, keep_alive: bool) -> (Vec<u8>, bool) {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let (drainer, drain) = crate::drain::channel();
    if !keep_alive {
        drainer.start(Duration::from_secs(5));
    }
    let mut own = drain.clone();
    let started = own.started();
    tokio::pin!(started);
    let mut draining = super::super::Draining {
        started,
        ends: None,
    };
    if !keep_alive {
        draining.next().await;
    }
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    let open = super::super::respond(
        &mut server,
        &mut buf,
        &mut out,
        &mut draining,
        resp,
        method == "HEAD",
        &mut None,
    )
    .await
    .expect("written");
    drop(server);
    let mut got = Vec::new();
    let mut client = client;
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    (got, open)
}

#[tokio::test]
async fn responses_are_written_as_hyper_writes_them() {
    for (name, method, make) in cases() {
        let want = by_hyper(method, make).await;
        let (got, _) = by_fast_path(method, make(), true).await;
        assert_eq!(undated(&got), undated(&want), "{name}");
    }
}

#[tokio::test]
async fn a_response_that_closes_ends_the_connection() {
    let (_, open) = by_fast_path("GET", with(200, full("x"), &[]), true).await;
    assert!(open);
    let (_, open) = by_fast_path(
        "GET",
        with(200, full("x"), &[("connection", "close")]),
        true,
    )
    .await;
    assert!(!open);
    // An HTTP/1.0 response of unknown length ends with its connection.
    let mut old = with(200, streamed(false), &[]);
    *old.version_mut() = http::Version::HTTP_10;
    let (got, open) = by_fast_path("GET", old, true).await;
    assert!(!open);
    assert!(got.ends_with(b"\r\n\r\nhello world"), "{}", undated(&got));
}

#[tokio::test]
async fn a_draining_listener_closes_after_the_response_as_hyper_does() {
    // hyper's graceful shutdown disables keep-alive: `connection: close` is added (once).
    let (got, open) = by_fast_path("GET", with(200, full("x"), &[]), false).await;
    assert!(!open);
    let s = undated(&got);
    assert_eq!(
        s,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\ndate: <now>\r\n\r\nx"
    );
    let (got, _) = by_fast_path(
        "GET",
        with(200, full("x"), &[("connection", "Close")]),
        false,
    )
    .await;
    assert_eq!(
        undated(&got),
        "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\ndate: <now>\r\n\r\nx"
    );
}

#[test]
fn lengths_and_chunk_sizes() {
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(parse_length(b"123"), Some(123));
    assert_eq!(parse_length(b""), None);
    assert_eq!(parse_length(b"1 "), None);
    assert_eq!(parse_length(b"+1"), None);
    assert_eq!(parse_length(b"99999999999999999999999"), None);
    let mut v = Vec::new();
    chunk_size_line(&mut v, 255);
    chunk_size_line(&mut v, 0);
    chunk_size_line(&mut v, 4096);
    assert_eq!(v, b"FF\r\n0\r\n1000\r\n");
    let mut v = Vec::new();
    push_decimal(&mut v, 0);
    push_decimal(&mut v, 18_446_744_073_709_551_615);
    assert_eq!(v, b"018446744073709551615");
}
