//! Which requests the codec takes.

use super::takes;
use crate::http::{BoxBody, BoxError};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

fn body(kind: &str) -> BoxBody {
    match kind {
        "empty" => Empty::new().map_err(|e| -> BoxError { match e {} }).boxed(),
        "full" => Full::new(Bytes::from_static(b"abc"))
            .map_err(|e| -> BoxError { match e {} })
            .boxed(),
        _ => StreamBody::new(futures::stream::iter(vec![Ok::<_, BoxError>(
            http_body::Frame::data(Bytes::from_static(b"abc")),
        )]))
        .boxed(),
    }
}

#[test]
fn plain_requests_are_taken_and_the_others_left_to_hyper() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, bool);
    let cases: &[Case] = &[
        ("GET", &[], "empty", true),
        ("POST", &[], "full", true),
        ("POST", &[], "stream", true),
        ("PUT", &[("transfer-encoding", "chunked")], "stream", true),
        ("GET", &[("content-length", "3")], "stream", true),
        // hyper sends a GET or HEAD body of unknown length as no body: left to it.
        ("GET", &[], "stream", false),
        ("HEAD", &[], "stream", false),
        ("CONNECT", &[], "empty", false),
        (
            "GET",
            &[("upgrade", "websocket"), ("connection", "upgrade")],
            "empty",
            false,
        ),
        ("POST", &[("expect", "100-continue")], "full", false),
        ("POST", &[("trailer", "x-checksum")], "stream", false),
    ];
    for (method, headers, kind, want) in cases {
        let mut b = http::Request::builder().method(*method).uri("/");
        for (n, v) in *headers {
            b = b.header(*n, *v);
        }
        let (head, body) = b.body(body(kind)).expect("valid request").into_parts();
        assert_eq!(takes(&head, &body), *want, "{method} {headers:?} {kind}");
    }
    let (mut head, body) = http::Request::new(body("empty")).into_parts();
    head.version = http::Version::HTTP_10;
    assert!(!takes(&head, &body), "HTTP/1.0");
}
