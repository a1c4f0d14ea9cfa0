//! The connection driven as a client would: frames laid out by hand (§4.1), header blocks as
//! HPACK literals (RFC 7541 §6.2), and what the server writes decoded back with `frame::decode`
//! and an HPACK decoder, as the client would see it.

use super::*;
use crate::http2::frame::tests::{raw, settings_payload};
use crate::http2::hpack::Field;
use http::{Method, StatusCode, Version};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    raw(SETTINGS, 0, 0, &settings_payload(pairs))
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    raw(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

fn rst(stream: u32, code: ErrorCode) -> Vec<u8> {
    raw(RST_STREAM, 0, stream, &code.0.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1) after `first`'s flag bits.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literals with a literal name; `index` enters them in the dynamic table.
fn block_with(fields: &[(&str, &str)], index: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(if index { 0x40 } else { 0x00 });
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    block_with(fields, false)
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "example.com"),
    (":path", "/index?q=1"),
];

fn post(length: Option<&str>) -> Vec<(&str, &str)> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/upload"),
    ];
    if let Some(length) = length {
        fields.push(("content-length", length));
    }
    fields
}

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    raw(HEADERS, flags, stream, &block(fields))
}

fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    raw(
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
        payload,
    )
}

/// A client's view of the connection.
struct Client {
    conn: Conn,
    decoder: hpack::Decoder,
}

impl Client {
    /// Preface and an empty SETTINGS sent, the server's opening frames and ACK taken.
    fn new(config: ConnConfig) -> Client {
        Client::with_settings(config, &[])
    }

    fn with_settings(config: ConnConfig, pairs: &[(u16, u32)]) -> Client {
        let mut client = Client {
            conn: Conn::new(config),
            decoder: hpack::Decoder::new(4096),
        };
        let mut bytes = frame::PREFACE.to_vec();
        bytes.extend(settings(pairs));
        client.send(&bytes).expect("a valid opening");
        client.conn.take_output();
        client.events();
        client
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let mut buf = BytesMut::from(bytes);
        let result = self.conn.recv(&mut buf);
        if result.is_ok() {
            assert!(buf.is_empty(), "whole frames are consumed");
        }
        result
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// The frames the server wrote.
    fn frames(&mut self) -> Vec<Frame> {
        let mut out = self.conn.take_output();
        let mut frames = Vec::new();
        while let Some(frame) = frame::decode(&mut out, frame::MAX_MAX_FRAME_SIZE).unwrap() {
            frames.push(frame);
        }
        assert!(out.is_empty(), "the server writes whole frames");
        frames
    }

    /// A response header block as the client decodes it.
    fn fields(&mut self, block: &Bytes) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        self.decoder
            .decode(block, usize::MAX, |field| {
                fields.push(match field {
                    Field::Pseudo(p, v) => (p.as_str().to_owned(), utf8(&v)),
                    Field::Header(n, v) => (n.to_string(), utf8(v.as_bytes())),
                });
                Ok(())
            })
            .unwrap();
        fields
    }

    fn request(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        self.send(&headers(stream, fields, end_stream)).unwrap();
        match &self.events()[..] {
            [Event::Request { stream: s, .. }] => assert_eq!(s.0, stream),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    /// The only frame written is RST_STREAM on `stream`: its code.
    fn reset_code(&mut self, stream: u32) -> ErrorCode {
        match &self.frames()[..] {
            [Frame::RstStream { stream: s, code }] if s.0 == stream => *code,
            other => panic!("expected RST_STREAM on {stream}, got {other:?}"),
        }
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The GOAWAY a connection error wrote, last of the output.
fn goaway_code(client: &mut Client) -> ErrorCode {
    match client.frames().last() {
        Some(Frame::GoAway { code, .. }) => *code,
        other => panic!("expected GOAWAY, got {other:?}"),
    }
}

fn expect_conn_error(client: &mut Client, bytes: &[u8], code: ErrorCode) {
    let err = client.send(bytes).expect_err("a connection error");
    assert_eq!(err.code, code, "{err}");
    assert_eq!(goaway_code(client), code);
    assert_eq!(client.send(&[]), Err(err), "the connection stays failed");
}

#[test]
fn get_exchange() {
    let mut conn = Conn::new(ConnConfig::default());
    let mut opening = conn.take_output();
    let frames: Vec<_> =
        std::iter::from_fn(|| frame::decode(&mut opening, 1 << 14).unwrap()).collect();
    match &frames[..] {
        [Frame::Settings {
            ack: false,
            settings,
        }, Frame::WindowUpdate { stream, increment }] => {
            assert!(settings.contains(&Setting::InitialWindowSize(1 << 20)));
            assert!(settings.contains(&Setting::MaxConcurrentStreams(200)));
            assert!(settings.contains(&Setting::MaxHeaderListSize(16 << 10)));
            assert!(settings.contains(&Setting::MaxFrameSize(1 << 14)));
            assert_eq!((stream.0, *increment), (0, (1 << 20) - 65_535));
        }
        other => panic!("unexpected opening {other:?}"),
    }

    let mut client = Client {
        conn,
        decoder: hpack::Decoder::new(4096),
    };
    // The preface and SETTINGS in pieces: nothing happens until they are whole.
    let mut bytes = frame::PREFACE.to_vec();
    bytes.extend(settings(&[]));
    bytes.extend(headers(1, &[GET, &[("accept", "*/*")]].concat(), true));
    let mut buf = BytesMut::from(&bytes[..10]);
    client.conn.recv(&mut buf).unwrap();
    assert!(client.conn.take_output().is_empty());
    buf.extend_from_slice(&bytes[10..]);
    client.conn.recv(&mut buf).unwrap();
    assert!(matches!(
        &client.frames()[..],
        [Frame::Settings { ack: true, .. }]
    ));
    let events = client.events();
    let [Event::Request {
        stream,
        head,
        end_stream: true,
    }] = &events[..]
    else {
        panic!("expected a request, got {events:?}");
    };
    assert_eq!(stream.0, 1);
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.uri, "http://example.com/index?q=1");
    assert_eq!(head.version, Version::HTTP_2);
    assert_eq!(head.headers["accept"], "*/*");
    assert_eq!(client.conn.active_streams(), 1);

    let mut response = HeaderMap::new();
    response.insert("content-type", "text/plain".parse().unwrap());
    client
        .conn
        .send_headers(*stream, StatusCode::OK, &response, false)
        .unwrap();
    assert_eq!(client.conn.send_data(*stream, b"hello", true), Ok(5));
    let frames = client.frames();
    let [Frame::Headers {
        stream: s1,
        block,
        end_stream: false,
        end_headers: true,
        ..
    }, Frame::Data {
        stream: s2,
        data,
        end_stream: true,
        ..
    }] = &frames[..]
    else {
        panic!("expected HEADERS and DATA, got {frames:?}");
    };
    assert_eq!((s1.0, s2.0), (1, 1));
    assert_eq!(&data[..], b"hello");
    assert_eq!(
        client.fields(block),
        [
            (":status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "text/plain".to_owned())
        ]
    );
    assert_eq!(client.conn.active_streams(), 0, "both sides closed");
    assert_eq!(
        client.conn.send_data(*stream, b"late", true),
        Err(SendError::StreamClosed)
    );
}

#[test]
fn post_body_flow_control_and_release() {
    let mut client = Client::new(ConnConfig::default());
    let chunk = vec![7u8; 1 << 14];
    let frames = 40; // 640 KiB: past half of both 1 MiB windows.
    let total = (frames * chunk.len()).to_string();
    client.request(1, &post(Some(&total)), false);
    let mut received = 0;
    for i in 0..frames {
        let last = i == frames - 1;
        client.send(&data(1, &chunk, last)).unwrap();
        for event in client.events() {
            let Event::Data {
                stream,
                data,
                end_stream,
            } = event
            else {
                panic!("expected data, got {event:?}");
            };
            assert_eq!((stream.0, end_stream), (1, last));
            received += data.len();
        }
    }
    assert_eq!(received, frames * chunk.len());
    assert!(client.frames().is_empty(), "nothing released yet");

    // The stream's remote side is closed: only the connection window reopens.
    client.conn.release(StreamId(1), received as u32);
    match &client.frames()[..] {
        [Frame::WindowUpdate { stream, increment }] => {
            assert_eq!((stream.0, *increment as usize), (0, received));
        }
        other => panic!("expected a connection WINDOW_UPDATE, got {other:?}"),
    }

    // On an open stream, both windows, once half of each is consumed.
    client.request(3, &post(None), false);
    client.send(&data(3, &chunk, false)).unwrap();
    client.events();
    client.conn.release(StreamId(3), chunk.len() as u32);
    assert!(client.frames().is_empty(), "batched until half a window");
    for _ in 0..32 {
        client.send(&data(3, &chunk, false)).unwrap();
        client.conn.release(StreamId(3), chunk.len() as u32);
    }
    let updates: Vec<_> = client
        .frames()
        .into_iter()
        .map(|f| match f {
            Frame::WindowUpdate { stream, increment } => (stream.0, increment),
            other => panic!("expected WINDOW_UPDATE, got {other:?}"),
        })
        .collect();
    assert_eq!(updates, [(0, 1 << 19), (3, 1 << 19)]);
}

#[test]
fn padding_is_released_by_the_connection() {
    let config = ConnConfig {
        initial_window_size: 1000,
        ..ConnConfig::default()
    };
    let mut client = Client::new(config);
    client.request(1, &post(None), false);
    // One octet of data and 255 of padding (PADDED, §6.1), ten times: 2,560 flow-controlled
    // octets through a 1,000-octet window, as the padding is released as it comes.
    let mut padded = vec![255, b'x'];
    padded.extend([0; 255]);
    for _ in 0..10 {
        client.send(&raw(DATA, 0x8, 1, &padded)).unwrap();
    }
    let events = client.events();
    assert_eq!(events.len(), 10);
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::Data { data, .. } if &data[..] == b"x")));
    let frames = client.frames();
    assert!(!frames.is_empty());
    for frame in frames {
        assert!(
            matches!(frame, Frame::WindowUpdate { stream: StreamId(1), increment } if increment >= 500),
            "{frame:?}"
        );
    }
    // The window now holds 990 octets (10 of padding not yet announced): use them all, then
    // release more than was received: the window reopens to its configured size, no more.
    client.send(&data(1, &[0; 990], false)).unwrap();
    assert_eq!(client.events().len(), 1);
    client.conn.release(StreamId(1), u32::MAX);
    assert!(matches!(
        &client.frames()[..],
        [Frame::WindowUpdate {
            stream: StreamId(1),
            increment: 1000
        }]
    ));
    client.send(&data(1, &[0; 1000], false)).unwrap();
    assert!(client.frames().is_empty());
    client.send(&data(1, &[0; 1], false)).unwrap();
    assert_eq!(client.reset_code(1), ErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn content_length_mismatch_resets_the_stream() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, &post(Some("10")), false);
    client.send(&data(1, b"short", true)).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::Reset {
            code: ErrorCode::PROTOCOL_ERROR,
            ..
        }]
    ));
    assert_eq!(client.reset_code(1), ErrorCode::PROTOCOL_ERROR);

    client.request(3, &post(Some("3")), false);
    client.send(&data(3, b"toolong", false)).unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::PROTOCOL_ERROR);
    client.events();

    // A length with END_STREAM on HEADERS: no body at all.
    client.send(&headers(5, &post(Some("3")), true)).unwrap();
    assert_eq!(client.reset_code(5), ErrorCode::PROTOCOL_ERROR);
    assert!(client.events().is_empty(), "no request for a refused head");
}

#[test]
fn trailers_end_the_body() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, &post(None), false);
    client.send(&data(1, b"body", false)).unwrap();
    client
        .send(&headers(1, &[("grpc-status", "0")], true))
        .unwrap();
    let events = client.events();
    let [Event::Data { .. }, Event::Trailers {
        stream,
        headers: fields,
    }] = &events[..]
    else {
        panic!("expected data then trailers, got {events:?}");
    };
    assert_eq!(stream.0, 1);
    assert_eq!(fields["grpc-status"], "0");

    // Trailers must end the stream and carry no pseudo-header.
    client.request(3, &post(None), false);
    client.send(&headers(3, &[("x", "y")], false)).unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::PROTOCOL_ERROR);
    client.events();
    client.request(5, &post(None), false);
    client.send(&headers(5, &[(":path", "/")], true)).unwrap();
    assert_eq!(client.reset_code(5), ErrorCode::PROTOCOL_ERROR);

    // Trailers on our response.
    client
        .conn
        .send_headers(StreamId(1), StatusCode::OK, &HeaderMap::new(), false)
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    client.conn.send_trailers(StreamId(1), &trailers).unwrap();
    let frames = client.frames();
    let [Frame::Headers {
        block: head,
        end_stream: false,
        ..
    }, Frame::Headers {
        block: trailers,
        end_stream: true,
        ..
    }] = &frames[..]
    else {
        panic!("expected head and trailers, got {frames:?}");
    };
    // In order: the client's HPACK state follows the blocks as sent.
    assert_eq!(
        client.fields(head),
        [(":status".to_owned(), "200".to_owned())]
    );
    assert_eq!(
        client.fields(trailers),
        [("grpc-status".to_owned(), "0".to_owned())]
    );
}

#[test]
fn client_reset() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, &post(None), false);
    client.send(&rst(1, ErrorCode::CANCEL)).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::Reset {
            stream: StreamId(1),
            code: ErrorCode::CANCEL
        }]
    ));
    assert_eq!(
        client
            .conn
            .send_headers(StreamId(1), StatusCode::OK, &HeaderMap::new(), true),
        Err(SendError::StreamClosed)
    );
    assert_eq!(client.conn.active_streams(), 0);
    // Frames on the closed stream: WINDOW_UPDATE and RST_STREAM ignored, DATA refused.
    client.send(&window_update(1, 10)).unwrap();
    client.send(&rst(1, ErrorCode::CANCEL)).unwrap();
    assert!(client.frames().is_empty());
    client.send(&data(1, b"x", false)).unwrap();
    assert_eq!(client.reset_code(1), ErrorCode::STREAM_CLOSED);

    // Half-closed (remote): HEADERS and DATA are stream errors (§5.1).
    client.request(3, GET, true);
    client.send(&data(3, b"x", false)).unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::STREAM_CLOSED);
    assert!(matches!(
        &client.events()[..],
        [Event::Reset {
            stream: StreamId(3),
            code: ErrorCode::STREAM_CLOSED
        }]
    ));
    client.request(5, GET, true);
    client.send(&headers(5, GET, true)).unwrap();
    assert_eq!(client.reset_code(5), ErrorCode::STREAM_CLOSED);
    assert!(matches!(
        &client.events()[..],
        [Event::Reset {
            stream: StreamId(5),
            code: ErrorCode::STREAM_CLOSED
        }]
    ));
}

#[test]
fn frames_on_streams_we_reset_are_tolerated() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, &post(None), false);
    client.conn.reset(StreamId(1), ErrorCode::CANCEL);
    assert_eq!(client.reset_code(1), ErrorCode::CANCEL);
    client.send(&data(1, b"in flight", false)).unwrap();
    client.send(&headers(1, &[("x", "y")], true)).unwrap();
    assert!(client.frames().is_empty());
    assert!(client.events().is_empty());
}

#[test]
fn malformed_requests_reset_the_stream() {
    let cases: &[(&str, Vec<(&str, &str)>)] = &[
        ("no :method", GET[1..].to_vec()),
        ("repeated :path", [GET, &[(":path", "/again")]].concat()),
        ("pseudo after regular", [&[("accept", "*/*")], GET].concat()),
        (":status", [GET, &[(":status", "200")]].concat()),
        ("unknown pseudo", [GET, &[(":foo", "bar")]].concat()),
        ("connection", [GET, &[("connection", "close")]].concat()),
        ("keep-alive", [GET, &[("keep-alive", "5")]].concat()),
        (
            "transfer-encoding",
            [GET, &[("transfer-encoding", "chunked")]].concat(),
        ),
        ("upgrade", [GET, &[("upgrade", "h2c")]].concat()),
        ("te gzip", [GET, &[("te", "gzip")]].concat()),
        ("uppercase name", [GET, &[("Accept", "*/*")]].concat()),
        (
            "bad content-length",
            [GET, &[("content-length", "1x")]].concat(),
        ),
        (
            "empty :path",
            vec![(":method", "GET"), (":scheme", "http"), (":path", "")],
        ),
        (
            "userinfo",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "user@example.com"),
                (":path", "/"),
            ],
        ),
        (
            "relative :path",
            vec![(":method", "GET"), (":scheme", "http"), (":path", "a/b")],
        ),
        (
            "* :path without OPTIONS",
            vec![(":method", "GET"), (":scheme", "http"), (":path", "*")],
        ),
        (
            "CONNECT with :path",
            vec![
                (":method", "CONNECT"),
                (":authority", "a:443"),
                (":path", "/"),
            ],
        ),
        ("CONNECT without :authority", vec![(":method", "CONNECT")]),
        (
            ":protocol not advertised",
            vec![
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "/chat"),
            ],
        ),
    ];
    let mut client = Client::new(ConnConfig::default());
    let mut stream = 1;
    for (name, fields) in cases {
        client.send(&headers(stream, fields, true)).unwrap();
        assert!(client.events().is_empty(), "{name}: no request");
        assert_eq!(
            client.reset_code(stream),
            ErrorCode::PROTOCOL_ERROR,
            "{name}"
        );
        stream += 2;
    }
    // The valid neighbours of those cases.
    let valid: &[Vec<(&str, &str)>] = &[
        [GET, &[("te", "trailers")]].concat(),
        vec![(":method", "CONNECT"), (":authority", "a:443")],
        vec![(":method", "OPTIONS"), (":scheme", "http"), (":path", "*")],
    ];
    for fields in valid {
        client.request(stream, fields, false);
        stream += 2;
    }
}

#[test]
fn extended_connect_when_advertised() {
    let config = ConnConfig {
        enable_connect_protocol: true,
        ..ConnConfig::default()
    };
    let mut client = Client::new(config);
    let fields = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "a"),
        (":path", "/chat"),
    ];
    client.request(1, &fields, false);
    client
        .send(&headers(
            3,
            &[(":method", "GET"), (":protocol", "websocket")],
            true,
        ))
        .unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn malformed_block_still_advances_hpack() {
    let mut client = Client::new(ConnConfig::default());
    // Indexed into the dynamic table, then refused for its `connection` field.
    let bad = block_with(&[GET, &[("connection", "close")]].concat(), true);
    client
        .send(&raw(HEADERS, END_HEADERS | END_STREAM, 1, &bad))
        .unwrap();
    assert_eq!(client.reset_code(1), ErrorCode::PROTOCOL_ERROR);
    // The four pseudo-headers are at dynamic indexes 63 to 66 (newest first, 62 `connection`).
    let good = [0x80 | 63, 0x80 | 64, 0x80 | 65, 0x80 | 66];
    client
        .send(&raw(HEADERS, END_HEADERS | END_STREAM, 3, &good))
        .unwrap();
    let events = client.events();
    let [Event::Request { head, .. }] = &events[..] else {
        panic!("expected a request from table references, got {events:?}");
    };
    assert_eq!(head.uri, "http://example.com/index?q=1");
}

#[test]
fn connection_errors() {
    let get = headers(1, GET, true);
    let cases: Vec<(&str, Vec<Vec<u8>>, ErrorCode)> = vec![
        (
            "DATA on idle",
            vec![data(1, b"x", false)],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "WINDOW_UPDATE on idle",
            vec![window_update(5, 1)],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "RST_STREAM on idle",
            vec![rst(3, ErrorCode::CANCEL)],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "even stream",
            vec![headers(2, GET, true)],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "decreasing id",
            vec![headers(5, GET, true), headers(3, GET, true)],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "HEADERS on a closed stream",
            vec![get.clone(), rst(1, ErrorCode::CANCEL), get.clone()],
            ErrorCode::STREAM_CLOSED,
        ),
        (
            "connection window overflow",
            vec![window_update(0, frame::MAX_WINDOW_SIZE)],
            ErrorCode::FLOW_CONTROL_ERROR,
        ),
        (
            "block interrupted",
            vec![raw(HEADERS, 0, 1, &block(GET)), raw(PING, 0, 0, &[0; 8])],
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "bad HPACK",
            vec![raw(HEADERS, END_HEADERS, 1, &[0x80 | 70])],
            ErrorCode::COMPRESSION_ERROR,
        ),
    ];
    for (name, frames, code) in cases {
        let mut client = Client::new(ConnConfig::default());
        let (last, before) = frames.split_last().unwrap();
        for frame in before {
            client.send(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        client.frames();
        let err = client.send(last).expect_err(name);
        assert_eq!(err.code, code, "{name}: {err}");
        assert_eq!(goaway_code(&mut client), code, "{name}");
    }

    // Before SETTINGS, nothing else.
    let mut client = Client {
        conn: Conn::new(ConnConfig::default()),
        decoder: hpack::Decoder::new(4096),
    };
    client.conn.take_output();
    let mut bytes = frame::PREFACE.to_vec();
    bytes.extend(raw(PING, 0, 0, &[0; 8]));
    expect_conn_error(&mut client, &bytes, ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn stream_window_exceeded() {
    let config = ConnConfig {
        initial_window_size: 100,
        ..ConnConfig::default()
    };
    let mut client = Client::new(config);
    client.request(1, &post(None), false);
    client.send(&data(1, &[0; 101], false)).unwrap();
    assert_eq!(client.reset_code(1), ErrorCode::FLOW_CONTROL_ERROR);
    assert!(matches!(
        &client.events()[..],
        [Event::Reset {
            stream: StreamId(1),
            code: ErrorCode::FLOW_CONTROL_ERROR
        }]
    ));
    // A stream window overflow by WINDOW_UPDATE: a stream error too.
    client.request(3, &post(None), false);
    client
        .send(&window_update(3, frame::MAX_WINDOW_SIZE))
        .unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn concurrency_limit_refuses_streams() {
    let config = ConnConfig {
        max_concurrent_streams: 2,
        ..ConnConfig::default()
    };
    let mut client = Client::new(config);
    client.request(1, GET, true);
    client.request(3, GET, true);
    client.send(&headers(5, GET, true)).unwrap();
    assert_eq!(client.reset_code(5), ErrorCode::REFUSED_STREAM);
    assert!(client.events().is_empty());
    client
        .conn
        .send_headers(StreamId(1), StatusCode::OK, &HeaderMap::new(), true)
        .unwrap();
    client.frames();
    client.request(7, GET, true);
}

#[test]
fn send_window_exhausted_and_reopened() {
    // INITIAL_WINDOW_SIZE (4) of 10.
    let mut client = Client::with_settings(ConnConfig::default(), &[(4, 10)]);
    client.request(1, GET, true);
    let stream = StreamId(1);
    client
        .conn
        .send_headers(stream, StatusCode::OK, &HeaderMap::new(), false)
        .unwrap();
    let body = [1u8; 40];
    assert_eq!(client.conn.send_data(stream, &body, true), Ok(10));
    assert_eq!(client.conn.send_capacity(stream), 0);
    assert_eq!(client.conn.send_data(stream, &body[10..], true), Ok(0));
    let frames = client.frames();
    assert!(
        matches!(&frames[..], [Frame::Headers { .. }, Frame::Data { data, end_stream: false, .. }] if data.len() == 10)
    );

    client.send(&window_update(1, 2)).unwrap();
    client.send(&window_update(1, 3)).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::WindowOpened {
            stream: StreamId(1)
        }]
    ));
    assert_eq!(client.conn.send_capacity(stream), 5);

    // A smaller initial window takes the stream's below zero, a larger one reopens it.
    client.send(&settings(&[(4, 0)])).unwrap();
    assert_eq!(client.conn.send_capacity(stream), 0);
    client.send(&settings(&[(4, 20)])).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::WindowOpened {
            stream: StreamId::CONNECTION
        }]
    ));
    assert_eq!(client.conn.send_capacity(stream), 15);
    assert_eq!(client.conn.send_data(stream, &body[10..], true), Ok(15));
    assert_eq!(client.conn.send_data(stream, &body[25..], true), Ok(0));
    client.send(&window_update(1, 100)).unwrap();
    assert_eq!(client.conn.send_data(stream, &body[25..], true), Ok(15));
    let frames = client.frames();
    assert!(matches!(
        frames.last(),
        Some(Frame::Data {
            end_stream: true,
            ..
        })
    ));
    // An overflowing INITIAL_WINDOW_SIZE change is a connection error.
    let mut client = Client::new(ConnConfig::default());
    client.request(1, GET, true);
    client
        .send(&window_update(1, frame::MAX_WINDOW_SIZE - 65_535))
        .unwrap();
    expect_conn_error(
        &mut client,
        &settings(&[(4, 65_536)]),
        ErrorCode::FLOW_CONTROL_ERROR,
    );
}

#[test]
fn connection_send_window_bounds_all_streams() {
    let mut client = Client::with_settings(ConnConfig::default(), &[(4, 1 << 20)]);
    client.request(1, GET, true);
    let stream = StreamId(1);
    client
        .conn
        .send_headers(stream, StatusCode::OK, &HeaderMap::new(), false)
        .unwrap();
    let body = vec![0u8; 100_000];
    assert_eq!(client.conn.send_data(stream, &body, false), Ok(65_535));
    let frames = client.frames();
    assert_eq!(
        frames.len(),
        1 + 4,
        "head and 65,535 bytes in 16 KiB frames"
    );
    client.send(&window_update(0, 1000)).unwrap();
    assert_eq!(client.conn.send_capacity(stream), 1000);
}

#[test]
fn continuation_assembly_and_cap() {
    let mut client = Client::new(ConnConfig::default());
    let full = block(&[GET, &[("accept", "*/*")]].concat());
    let (a, rest) = full.split_at(10);
    let (b, c) = rest.split_at(10);
    let mut bytes = raw(HEADERS, END_STREAM, 1, a);
    bytes.extend(raw(CONTINUATION, 0, 1, b));
    bytes.extend(raw(CONTINUATION, 0, 1, &[]));
    bytes.extend(raw(CONTINUATION, END_HEADERS, 1, c));
    client.send(&bytes).unwrap();
    let events = client.events();
    let [Event::Request {
        head,
        end_stream: true,
        ..
    }] = &events[..]
    else {
        panic!("expected the assembled request, got {events:?}");
    };
    assert_eq!(head.headers["accept"], "*/*");

    // Empty CONTINUATION frames count their headers: a flood of them ends the connection.
    let mut client = Client::new(ConnConfig::default());
    client.send(&raw(HEADERS, 0, 1, &block(GET))).unwrap();
    let empty = raw(CONTINUATION, 0, 1, &[]);
    let allowed = (2 * (16 << 10) - frame::HEAD_LEN - block(GET).len()) / frame::HEAD_LEN;
    for _ in 0..allowed {
        client.send(&empty).unwrap();
    }
    expect_conn_error(&mut client, &empty, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn request_too_large() {
    let mut client = Client::new(ConnConfig::default());
    let big = "v".repeat(17 << 10);
    let full = block(&[GET, &[("cookie", big.as_str())]].concat());
    let (a, b) = full.split_at(1 << 14);
    let mut bytes = raw(HEADERS, 0, 1, a);
    bytes.extend(raw(CONTINUATION, END_HEADERS, 1, b));
    client.send(&bytes).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::RequestTooLarge {
            stream: StreamId(1)
        }]
    ));
    // Its body is dropped and released.
    client.send(&data(1, &[0; 100], true)).unwrap();
    assert!(client.events().is_empty());
    client
        .conn
        .send_headers(
            StreamId(1),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &HeaderMap::new(),
            true,
        )
        .unwrap();
    assert_eq!(client.conn.active_streams(), 0);
}

#[test]
fn rapid_reset_limit() {
    let mut client = Client::new(ConnConfig::default());
    let mut stream = 1;
    let mut open_and_reset = |client: &mut Client| {
        let mut bytes = headers(stream, GET, true);
        bytes.extend(rst(stream, ErrorCode::CANCEL));
        stream += 2;
        client.send(&bytes)
    };
    for _ in 1..RAPID_RESET_LIMIT {
        open_and_reset(&mut client).unwrap();
    }
    client.frames();
    let err = open_and_reset(&mut client).expect_err("rapid reset");
    assert_eq!(err.code, ErrorCode::ENHANCE_YOUR_CALM);
    assert_eq!(goaway_code(&mut client), ErrorCode::ENHANCE_YOUR_CALM);

    // Resets we make the server send count too: here DATA after END_STREAM (CVE-2025-8671).
    let mut client = Client::new(ConnConfig::default());
    let mut bytes = Vec::new();
    for i in 0..RAPID_RESET_LIMIT {
        bytes.extend(headers(2 * i + 1, GET, true));
        bytes.extend(data(2 * i + 1, b"x", false));
    }
    let err = client.send(&bytes).expect_err("reset streams counted");
    assert_eq!(err.code, ErrorCode::ENHANCE_YOUR_CALM);

    // Resets of answered streams do not count.
    let mut client = Client::new(ConnConfig::default());
    for i in 0..2 * RAPID_RESET_LIMIT {
        let stream = 2 * i + 1;
        client.request(stream, &post(None), false);
        client
            .conn
            .send_headers(StreamId(stream), StatusCode::OK, &HeaderMap::new(), true)
            .unwrap();
        client.send(&rst(stream, ErrorCode::NO_ERROR)).unwrap();
        client.events();
    }
}

#[test]
fn ping_and_settings_flood() {
    let mut client = Client::new(ConnConfig::default());
    let ping = raw(PING, 0, 0, b"12345678");
    // Answered while the output is taken.
    for _ in 0..3 * MAX_OWED_ACKS {
        client.send(&ping).unwrap();
        assert!(matches!(
            &client.frames()[..],
            [Frame::Ping { ack: true, payload }] if payload == b"12345678"
        ));
    }
    let mut flood: Vec<u8> = Vec::new();
    for _ in 0..MAX_OWED_ACKS / 2 {
        flood.extend(&ping);
        flood.extend(settings(&[]));
    }
    client.send(&flood).unwrap();
    expect_conn_error(&mut client, &ping, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn empty_data_flood() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, &post(None), false);
    let empty = data(1, &[], false);
    for _ in 0..MAX_EMPTY_FRAMES {
        client.send(&empty).unwrap();
    }
    expect_conn_error(&mut client, &empty, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn graceful_goaway() {
    let mut client = Client::new(ConnConfig::default());
    client.request(1, GET, true);
    client.conn.go_away(ErrorCode::NO_ERROR);
    assert!(matches!(
        &client.frames()[..],
        [Frame::GoAway {
            last_stream: StreamId(1),
            code: ErrorCode::NO_ERROR,
            ..
        }]
    ));
    client.send(&headers(3, GET, true)).unwrap();
    assert_eq!(client.reset_code(3), ErrorCode::REFUSED_STREAM);
    assert!(client.events().is_empty());
    assert!(!client.conn.is_drained());
    client
        .conn
        .send_headers(StreamId(1), StatusCode::OK, &HeaderMap::new(), true)
        .unwrap();
    assert!(client.conn.is_drained());

    // The client's GOAWAY is an event.
    let mut client = Client::new(ConnConfig::default());
    let mut payload = 7u32.to_be_bytes().to_vec();
    payload.extend(ErrorCode::NO_ERROR.0.to_be_bytes());
    client.send(&raw(0x7, 0, 0, &payload)).unwrap();
    assert!(matches!(
        &client.events()[..],
        [Event::GoAway {
            last_stream: StreamId(7),
            code: ErrorCode::NO_ERROR
        }]
    ));
}

/// The cost of one GET exchange, to be measured with callgrind in release mode (the number of
/// exchanges from `CAPSTAN_H2_EXCHANGES`; two runs' difference divided by theirs is the
/// per-exchange count): the request as a client sends it once its HPACK table is warm (all
/// fields indexed references), a small response head and body, the output taken each time.
#[test]
#[ignore = "a measurement: run under callgrind with --ignored"]
fn per_request_cost() {
    let exchanges: u32 = std::env::var("CAPSTAN_H2_EXCHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let fields = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "127.0.0.1:8080"),
        (":path", "/"),
        ("user-agent", "oha/1.8.0"),
        ("accept", "*/*"),
    ];
    let mut client = Client::new(ConnConfig::default());
    let warm: Vec<u8> = (0..fields.len())
        .map(|j| 0x80 | (62 + fields.len() - 1 - j) as u8)
        .collect();
    let mut response = HeaderMap::new();
    response.insert("content-type", "text/plain".parse().unwrap());
    response.insert("server", "capstan".parse().unwrap());
    let mut buf = BytesMut::new();
    let mut written = 0;
    for i in 0..exchanges {
        let stream = 2 * i + 1;
        let flags = END_HEADERS | END_STREAM;
        if i == 0 {
            buf.extend_from_slice(&raw(HEADERS, flags, stream, &block_with(&fields, true)));
        } else {
            buf.extend_from_slice(&raw(HEADERS, flags, stream, &warm));
        }
        // The client hands back the connection window it was sent, now and then.
        if i % 1000 == 999 {
            buf.extend_from_slice(&window_update(0, 13 * 1000));
        }
        client.conn.recv(&mut buf).unwrap();
        let Some(Event::Request { stream, .. }) = client.conn.poll_event() else {
            panic!("expected a request");
        };
        client
            .conn
            .send_headers(stream, StatusCode::OK, &response, false)
            .unwrap();
        let sent = client.conn.send_data(stream, b"Hello, world!", true);
        assert_eq!(sent, Ok(13));
        client.conn.poll_event();
        written += client.conn.take_output().len();
    }
    assert_eq!(client.conn.active_streams(), 0);
    assert!(written > 0);
}

/// Written output is consumed in pieces; once all of it is written, the next frames go to the
/// start of the same buffer (the lines the last response used), not further along it.
#[test]
fn written_output_starts_over_at_the_buffers_start() {
    let mut client = Client::new(ConnConfig::default());
    let mut starts = Vec::new();
    for stream in [1, 3, 5] {
        client.request(stream, GET, true);
        client
            .conn
            .send_headers(StreamId(stream), StatusCode::OK, &HeaderMap::new(), false)
            .unwrap();
        client
            .conn
            .send_data(StreamId(stream), b"hello", true)
            .unwrap();
        starts.push(client.conn.output().as_ptr());
        let len = client.conn.output_len();
        client.conn.advance_output(len - 3);
        assert_eq!(
            client.conn.output_len(),
            3,
            "a partial write leaves the rest"
        );
        client.conn.advance_output(3);
        assert_eq!(client.conn.output_len(), 0);
    }
    // (The first response followed the opening frames the client took.)
    assert!(starts[1] < starts[0], "the buffer starts over once written");
    assert_eq!(starts[1], starts[2]);
}

/// A recycled header map takes the next request's head, with nothing of what it held.
#[test]
fn a_recycled_header_map_holds_only_the_next_request() {
    let mut client = Client::new(ConnConfig::default());
    let mut old = HeaderMap::new();
    old.insert("x-old", http::HeaderValue::from_static("1"));
    old.insert("server", http::HeaderValue::from_static("upstream"));
    client.conn.recycle_headers(old);
    client
        .send(&headers(1, &[GET, &[("accept", "*/*")]].concat(), true))
        .unwrap();
    match &client.events()[..] {
        [Event::Request { head, .. }] => {
            assert_eq!(head.headers.len(), 1, "{:?}", head.headers);
            assert_eq!(head.headers["accept"], "*/*");
        }
        other => panic!("expected one request, got {other:?}"),
    }
}
