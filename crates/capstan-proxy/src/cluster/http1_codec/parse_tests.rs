//! Response heads: framing decisions, split reads, malformed heads.

use super::*;

fn parse_all(wire: &[u8], method: &Method) -> Result<Option<Head>, Error> {
    let mut buf = BytesMut::from(wire);
    parse(&mut buf, method, &mut None)
}

#[test]
fn framing_follows_hypers_client() {
    use Framing::*;
    let cases: &[(&str, &str, Framing, bool)] = &[
        (
            "GET",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
            Length(3),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
            Length(3),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
            Length(3),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            Chunked,
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Close,
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Chunked,
            true,
        ),
        ("GET", "HTTP/1.1 200 OK\r\n\r\n", Close, true),
        (
            "HEAD",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
            Length(0),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\n",
            Length(0),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            Length(0),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            Length(0),
            false,
        ),
        (
            "GET",
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
            Length(0),
            false,
        ),
        (
            "GET",
            "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
            Length(0),
            false,
        ),
        (
            "GET",
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            Length(0),
            true,
        ),
        (
            "GET",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n",
            Length(1),
            true,
        ),
    ];
    for (method, wire, framing, keep_alive) in cases {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let head = parse_all(wire.as_bytes(), &m)
            .unwrap_or_else(|e| panic!("{wire:?}: {e}"))
            .unwrap_or_else(|| panic!("{wire:?}: partial"));
        assert_eq!(
            (head.framing, head.keep_alive),
            (*framing, *keep_alive),
            "{wire:?}"
        );
    }
}

#[test]
fn refusals_are_worded_as_hypers() {
    let cases: &[(&str, &str)] = &[
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "invalid content-length parsed",
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "invalid content-length parsed",
        ),
        (
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "unexpected transfer-encoding parsed",
        ),
        (
            "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n",
            "invalid HTTP header parsed",
        ),
        (
            "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
            "invalid HTTP header parsed",
        ),
        (
            "HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n",
            "invalid HTTP header parsed",
        ),
        (
            "HTTP/1.1 2000 OK\r\n\r\n",
            "invalid HTTP status-code parsed",
        ),
        ("HTTP/1.1 099 OK\r\n\r\n", "invalid HTTP status-code parsed"),
        ("HTTP/2 200 OK\r\n\r\n", "invalid HTTP version parsed"),
    ];
    for (wire, want) in cases {
        let got = parse_all(wire.as_bytes(), &Method::GET).map(|h| h.map(|h| h.framing));
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Err(want.to_string()),
            "{wire:?}"
        );
    }
    let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
    let wire = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    let got = parse_all(wire.as_bytes(), &Method::GET).map(|h| h.is_some());
    assert_eq!(
        got.map_err(|e| e.to_string()),
        Err("message head is too large".into())
    );
}

#[test]
fn a_head_read_one_byte_at_a_time_is_whole_once_complete() {
    let wire = b"HTTP/1.1 201 Made\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 2\r\n\r\nokHTTP";
    let mut buf = BytesMut::new();
    let mut head = None;
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        if let Some(h) = parse(&mut buf, &Method::GET, &mut None).expect("valid so far") {
            assert_eq!(i, wire.len() - 7, "complete at the blank line");
            head = Some(h);
            break;
        }
    }
    let head = head.expect("a whole head");
    let r = &head.response;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a: Vec<_> = r.headers().get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);
    let reason = r
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .expect("custom reason");
    assert_eq!(reason.as_bytes(), b"Made");
    // The head is taken from the buffer; nothing after it.
    assert!(buf.is_empty());
}

#[test]
fn an_unending_head_is_refused_at_hypers_buffer_limit() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-a: "[..]);
    buf.resize(MAX_HEAD, b'a');
    let got = parse(&mut buf, &Method::GET, &mut None).map(|h| h.is_some());
    assert_eq!(
        got.map_err(|e| e.to_string()),
        Err("message head is too large".into())
    );
}
