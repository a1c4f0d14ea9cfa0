//! Request heads: the plain ones parsed into what hyper's server hands its service, everything
//! else left untouched for hyper.

use super::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// What hyper's HTTP/1.1 server makes of `raw`: method, URI, version, headers and body.
async fn by_hyper(raw: &'static [u8]) -> (http::request::Parts, Bytes) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let _ = tx.send((parts, body));
            Ok::<_, std::convert::Infallible>(http::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
    );
    client.write_all(raw).await.expect("request written");
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("in time")
        .expect("a request")
}

fn ours(raw: &'static [u8]) -> (http::request::Parts, Bytes, bool, BytesMut) {
    let mut buf = BytesMut::from(raw);
    match parse(&mut buf, &mut None) {
        Ok((req, head)) => {
            let (parts, body) = req.into_parts();
            let body = futures::executor::block_on(body.collect())
                .map(|c| c.to_bytes())
                .expect("a body in memory");
            (parts, body, head, buf)
        }
        Err(NotPlain::Partial) => panic!("partial: {}", String::from_utf8_lossy(raw)),
        Err(NotPlain::Other) => panic!("other: {}", String::from_utf8_lossy(raw)),
    }
}

#[tokio::test]
async fn plain_requests_are_what_hyper_makes_of_them() {
    let plain: &[&'static [u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /p/q?x=1&y=%20 HTTP/1.1\r\nhost: reviews:9080\r\nUser-Agent: oha\r\nAccept: */*\r\nX-Custom-Thing: v\r\nx-custom-thing: w\r\n\r\n",
        b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        b"PUT http://a.example:8080/abs HTTP/1.1\r\nHost: a.example:8080\r\nContent-Length: 0\r\n\r\n",
        b"DELETE * HTTP/1.1\r\nhost: a\r\nvalue-with-spaces:   padded value  \r\nempty:\r\n\r\n",
        b"OPTIONS / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\nobs: caf\xc3\xa9\r\n\r\n",
        b"PATCH /x HTTP/1.1\nHost: a\nContent-Length: 2\n\nok",
    ];
    for raw in plain {
        let (want, want_body) = by_hyper(raw).await;
        let (got, body, head, rest) = ours(raw);
        let what = String::from_utf8_lossy(raw);
        assert_eq!(got.method, want.method, "{what}");
        assert_eq!(got.uri, want.uri, "{what}");
        assert_eq!(got.version, want.version, "{what}");
        assert_eq!(got.headers, want.headers, "{what}");
        assert_eq!(body, want_body, "{what}");
        assert_eq!(head, got.method == Method::HEAD);
        assert!(rest.is_empty(), "{what}");
    }
}

#[test]
fn a_pipelined_request_stays_in_the_buffer() {
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET /next HTTP/1.1\r\n"[..],
    );
    assert!(parse(&mut buf, &mut None).is_ok());
    assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
    assert!(matches!(parse(&mut buf, &mut None), Err(NotPlain::Partial)));
    assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
}

#[test]
fn anything_but_the_plain_case_is_left_for_hyper() {
    let other: &[&'static [u8]] = &[
        // Malformed: hyper answers 400.
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad\x01value: x\r\n\r\n",
        // HTTP/2's preface, HTTP/1.0.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        // Upgrades, CONNECT, 100-continue, trailers, connection close.
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
        // Bodies: chunked, lengths hyper checks, a body not yet read.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
    ];
    for raw in other {
        let mut buf = BytesMut::from(*raw);
        let what = String::from_utf8_lossy(raw);
        assert!(
            matches!(parse(&mut buf, &mut None), Err(NotPlain::Other)),
            "{what}"
        );
        assert_eq!(&buf[..], *raw, "{what}: the buffer is as it was");
    }
    let mut too_many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        too_many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    too_many.extend_from_slice(b"\r\n");
    let mut buf = BytesMut::from(&too_many[..]);
    assert!(matches!(parse(&mut buf, &mut None), Err(NotPlain::Other)));
    assert_eq!(buf.len(), too_many.len());
}

#[test]
fn a_head_not_yet_complete_is_partial() {
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
        b"GET",
        b"PRI * HTTP/",
    ] {
        let mut buf = BytesMut::from(raw);
        assert!(matches!(parse(&mut buf, &mut None), Err(NotPlain::Partial)));
        assert_eq!(&buf[..], raw);
    }
}
