//! Frames: every type through the encoder and back (or from hand-laid bytes where the server
//! only receives it), every rule of §4 and §6 as an error table, partial reads, splitting.

use super::*;

const MAX: u32 = DEFAULT_MAX_FRAME_SIZE;

/// A frame laid out by hand from §4.1, independent of the encoders.
pub(crate) fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS payload of identifier/value pairs.
pub(crate) fn settings_payload(pairs: &[(u16, u32)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
        .collect()
}

/// Decodes `bytes` as exactly one frame.
fn decode_one(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let frame = decode(&mut buf, MAX)?.expect("the whole frame is in the buffer");
    assert!(buf.is_empty(), "one frame, all consumed: {frame:?}");
    Ok(frame)
}

/// Decodes every frame in `buf`, stopping at the first connection error.
fn decode_all(buf: &mut BytesMut) -> Vec<Result<Frame, FrameError>> {
    let mut out = Vec::new();
    loop {
        match decode(buf, MAX) {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => return out,
            Err(err) => {
                out.push(Err(err));
                if let FrameError::Connection(_) = err {
                    return out;
                }
            }
        }
    }
}

fn encoded(write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut dst = BytesMut::new();
    write(&mut dst);
    dst
}

fn data(stream: u32, data: &'static [u8], end_stream: bool, flow_len: u32) -> Frame {
    Frame::Data {
        stream: StreamId(stream),
        data: Bytes::from_static(data),
        end_stream,
        flow_len,
    }
}

fn headers(stream: u32, block: &'static [u8], end_stream: bool, end_headers: bool) -> Frame {
    Frame::Headers {
        stream: StreamId(stream),
        block: Bytes::from_static(block),
        priority: None,
        end_stream,
        end_headers,
    }
}

fn all_settings() -> Vec<Setting> {
    vec![
        Setting::HeaderTableSize(0),
        Setting::EnablePush(false),
        Setting::MaxConcurrentStreams(100),
        Setting::InitialWindowSize(MAX_WINDOW_SIZE),
        Setting::MaxFrameSize(MAX_MAX_FRAME_SIZE),
        Setting::MaxHeaderListSize(16 << 10),
        Setting::EnableConnectProtocol(true),
    ]
}

#[test]
fn preface_is_taken_whole_or_refused() {
    let mut buf = BytesMut::from(&[&PREFACE[..], b"rest"].concat()[..]);
    assert_eq!(take_preface(&mut buf), Ok(true));
    assert_eq!(&buf[..], b"rest");

    for end in 0..PREFACE.len() {
        let mut buf = BytesMut::from(&PREFACE[..end]);
        assert_eq!(take_preface(&mut buf), Ok(false), "{end} bytes");
        assert_eq!(buf.len(), end, "nothing taken before the whole preface");
    }

    let refused: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r",
        b"PRI * HTTP/1.1",
        b"X",
    ];
    for bytes in refused {
        assert_eq!(
            take_preface(&mut BytesMut::from(bytes)),
            Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn encoded_frames_decode_back() {
    let ping = *b"12345678";
    let cases: Vec<(BytesMut, Frame)> = vec![
        (
            encoded(|d| encode_settings(d, &all_settings())),
            Frame::Settings {
                ack: false,
                settings: all_settings(),
            },
        ),
        (
            encoded(|d| encode_settings(d, &[])),
            Frame::Settings {
                ack: false,
                settings: vec![],
            },
        ),
        (
            encoded(encode_settings_ack),
            Frame::Settings {
                ack: true,
                settings: vec![],
            },
        ),
        (
            encoded(|d| encode_ping(d, ping, true)),
            Frame::Ping {
                ack: true,
                payload: ping,
            },
        ),
        (
            encoded(|d| encode_ping(d, ping, false)),
            Frame::Ping {
                ack: false,
                payload: ping,
            },
        ),
        (
            encoded(|d| encode_goaway(d, StreamId(7), ErrorCode::ENHANCE_YOUR_CALM, b"slow")),
            Frame::GoAway {
                last_stream: StreamId(7),
                code: ErrorCode::ENHANCE_YOUR_CALM,
                debug: Bytes::from_static(b"slow"),
            },
        ),
        (
            encoded(|d| encode_goaway(d, StreamId(0), ErrorCode::NO_ERROR, b"")),
            Frame::GoAway {
                last_stream: StreamId(0),
                code: ErrorCode::NO_ERROR,
                debug: Bytes::new(),
            },
        ),
        (
            encoded(|d| encode_rst_stream(d, StreamId(3), ErrorCode(0x1234))),
            Frame::RstStream {
                stream: StreamId(3),
                code: ErrorCode(0x1234),
            },
        ),
        (
            encoded(|d| encode_window_update(d, StreamId(0), MAX_WINDOW_SIZE)),
            Frame::WindowUpdate {
                stream: StreamId(0),
                increment: MAX_WINDOW_SIZE,
            },
        ),
        (
            encoded(|d| encode_window_update(d, StreamId(5), 1)),
            Frame::WindowUpdate {
                stream: StreamId(5),
                increment: 1,
            },
        ),
        (
            encoded(|d| encode_headers(d, StreamId(1), b"\x82\x86", true, MAX)),
            headers(1, b"\x82\x86", true, true),
        ),
        (
            encoded(|d| encode_headers(d, StreamId(3), b"\x88", false, MAX)),
            headers(3, b"\x88", false, true),
        ),
        (
            encoded(|d| encode_data(d, StreamId(1), b"hello", true, MAX)),
            data(1, b"hello", true, 5),
        ),
        (
            encoded(|d| encode_data(d, StreamId(1), b"", true, MAX)),
            data(1, b"", true, 0),
        ),
        (
            encoded(|d| encode_data(d, StreamId(9), b"part", false, MAX)),
            data(9, b"part", false, 4),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_one(&bytes), Ok(want.clone()), "{bytes:?}");
    }
}

#[test]
fn encoders_lay_out_frames_as_the_rfc_does() {
    let cases: [(BytesMut, Vec<u8>); 5] = [
        (
            encoded(|d| encode_window_update(d, StreamId(3), 0x10)),
            raw(8, 0, 3, &[0, 0, 0, 0x10]),
        ),
        (encoded(encode_settings_ack), raw(4, 1, 0, &[])),
        (
            encoded(|d| encode_settings(d, &[Setting::MaxConcurrentStreams(100)])),
            raw(4, 0, 0, &settings_payload(&[(3, 100)])),
        ),
        (
            encoded(|d| encode_headers(d, StreamId(1), b"\x82", true, MAX)),
            raw(1, 0x1 | 0x4, 1, b"\x82"),
        ),
        (
            encoded(|d| encode_goaway(d, StreamId(5), ErrorCode::PROTOCOL_ERROR, b"x")),
            raw(7, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 1, b'x']),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(&got[..], &want[..]);
    }
}

#[test]
fn received_only_frames_decode() {
    let priority = |dependency, exclusive, weight| Priority {
        dependency: StreamId(dependency),
        exclusive,
        weight,
    };
    let cases: Vec<(&str, Vec<u8>, Frame)> = vec![
        (
            "padded DATA",
            raw(0, 0x8 | 0x1, 1, b"\x03abc\0\0\0"),
            data(1, b"abc", true, 7),
        ),
        (
            "DATA padded to its whole length",
            raw(0, 0x8, 1, b"\x02\0\0"),
            data(1, b"", false, 3),
        ),
        (
            "padded HEADERS with priority",
            raw(1, 0x8 | 0x20 | 0x4, 3, b"\x01\x80\0\0\x01\x0f\x82\0"),
            Frame::Headers {
                stream: StreamId(3),
                block: Bytes::from_static(b"\x82"),
                priority: Some(priority(1, true, 15)),
                end_stream: false,
                end_headers: true,
            },
        ),
        (
            "HEADERS with priority, unpadded",
            raw(1, 0x20, 3, b"\0\0\0\x05\xff\x82\x84"),
            Frame::Headers {
                stream: StreamId(3),
                block: Bytes::from_static(b"\x82\x84"),
                priority: Some(priority(5, false, 255)),
                end_stream: false,
                end_headers: false,
            },
        ),
        (
            "PRIORITY",
            raw(2, 0, 5, b"\x80\0\0\x03\x10"),
            Frame::Priority {
                stream: StreamId(5),
                priority: priority(3, true, 16),
            },
        ),
        (
            "CONTINUATION",
            raw(9, 0x4, 1, b"\x84"),
            Frame::Continuation {
                stream: StreamId(1),
                block: Bytes::from_static(b"\x84"),
                end_headers: true,
            },
        ),
        (
            "unknown type",
            raw(0xfa, 0xff, 0, b"anything"),
            Frame::Unknown {
                kind: 0xfa,
                stream: StreamId(0),
            },
        ),
        (
            "reserved bit of the stream id",
            raw(3, 0, 0x8000_0001, &[0, 0, 0, 8]),
            Frame::RstStream {
                stream: StreamId(1),
                code: ErrorCode::CANCEL,
            },
        ),
        (
            "reserved bit of an increment",
            raw(8, 0, 0, &[0x80, 0, 0, 1]),
            Frame::WindowUpdate {
                stream: StreamId(0),
                increment: 1,
            },
        ),
        (
            "reserved bit of GOAWAY's last stream",
            raw(7, 0, 0, &[0x80, 0, 0, 3, 0, 0, 0, 0]),
            Frame::GoAway {
                last_stream: StreamId(3),
                code: ErrorCode::NO_ERROR,
                debug: Bytes::new(),
            },
        ),
        (
            "unknown settings ignored, duplicates kept in order",
            raw(
                4,
                0,
                0,
                &settings_payload(&[(0x4, 10), (0xff, 7), (0x9, 1), (0x4, 20)]),
            ),
            Frame::Settings {
                ack: false,
                settings: vec![
                    Setting::InitialWindowSize(10),
                    Setting::InitialWindowSize(20),
                ],
            },
        ),
        (
            "setting values at their limits",
            raw(
                4,
                0,
                0,
                &settings_payload(&[(0x5, 1 << 14), (0x2, 1), (0x4, 0), (0x8, 0)]),
            ),
            Frame::Settings {
                ack: false,
                settings: vec![
                    Setting::MaxFrameSize(1 << 14),
                    Setting::EnablePush(true),
                    Setting::InitialWindowSize(0),
                    Setting::EnableConnectProtocol(false),
                ],
            },
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode_one(&bytes), Ok(want), "{name}");
    }
}

#[test]
fn broken_frames_give_the_rfc_error() {
    use ErrorCode as E;
    let conn = FrameError::Connection;
    let stream = |id, code| FrameError::Stream(StreamId(id), code);
    let ping = raw(6, 0, 0, &[0; 8]);
    let cases: Vec<(&str, Vec<u8>, FrameError)> = vec![
        (
            "DATA on stream 0",
            raw(0, 0, 0, b"x"),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "HEADERS on stream 0",
            raw(1, 4, 0, b"\x82"),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "PRIORITY on stream 0",
            raw(2, 0, 0, &[0, 0, 0, 1, 0]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "RST_STREAM on stream 0",
            raw(3, 0, 0, &[0; 4]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "CONTINUATION on stream 0",
            raw(9, 4, 0, b"\x82"),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "SETTINGS on a stream",
            raw(4, 0, 1, &[]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "PING on a stream",
            raw(6, 0, 1, &[0; 8]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "GOAWAY on a stream",
            raw(7, 0, 1, &[0; 8]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "PUSH_PROMISE",
            raw(5, 4, 1, &[0, 0, 0, 2, 0x82]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "PRIORITY of 4 bytes",
            raw(2, 0, 1, &[0; 4]),
            stream(1, E::FRAME_SIZE_ERROR),
        ),
        (
            "PRIORITY of 6 bytes",
            raw(2, 0, 3, &[0; 6]),
            stream(3, E::FRAME_SIZE_ERROR),
        ),
        (
            "PRIORITY on itself",
            raw(2, 0, 3, &[0, 0, 0, 3, 0]),
            stream(3, E::PROTOCOL_ERROR),
        ),
        (
            "HEADERS depending on itself",
            raw(1, 0x20 | 0x4, 3, &[0, 0, 0, 3, 0, 0x82]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "RST_STREAM of 3 bytes",
            raw(3, 0, 1, &[0; 3]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "RST_STREAM of 5 bytes",
            raw(3, 0, 1, &[0; 5]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "SETTINGS ACK with a payload",
            raw(4, 1, 0, &[0; 6]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "SETTINGS of 5 bytes",
            raw(4, 0, 0, &[0; 5]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "ENABLE_PUSH 2",
            raw(4, 0, 0, &settings_payload(&[(0x2, 2)])),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "INITIAL_WINDOW_SIZE 2^31",
            raw(4, 0, 0, &settings_payload(&[(0x4, 1 << 31)])),
            conn(E::FLOW_CONTROL_ERROR),
        ),
        (
            "MAX_FRAME_SIZE 2^14-1",
            raw(4, 0, 0, &settings_payload(&[(0x5, (1 << 14) - 1)])),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "MAX_FRAME_SIZE 2^24",
            raw(4, 0, 0, &settings_payload(&[(0x5, 1 << 24)])),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "ENABLE_CONNECT_PROTOCOL 2",
            raw(4, 0, 0, &settings_payload(&[(0x8, 2)])),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "a bad setting after a good one",
            raw(4, 0, 0, &settings_payload(&[(0x3, 10), (0x2, 7)])),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "PING of 7 bytes",
            raw(6, 0, 0, &[0; 7]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "PING ACK of 9 bytes",
            raw(6, 1, 0, &[0; 9]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "GOAWAY of 7 bytes",
            raw(7, 0, 0, &[0; 7]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "WINDOW_UPDATE of 5 bytes",
            raw(8, 0, 1, &[0, 0, 0, 0, 1]),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "WINDOW_UPDATE of 0 on the connection",
            raw(8, 0, 0, &[0; 4]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "WINDOW_UPDATE of 0 on a stream",
            raw(8, 0, 5, &[0; 4]),
            stream(5, E::PROTOCOL_ERROR),
        ),
        (
            "WINDOW_UPDATE of only the reserved bit",
            raw(8, 0, 5, &[0x80, 0, 0, 0]),
            stream(5, E::PROTOCOL_ERROR),
        ),
        (
            "DATA padding as long as the payload",
            raw(0, 8, 1, b"\x03ab"),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "DATA padding past the payload",
            raw(0, 8, 1, b"\xff"),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "DATA padded without a pad length",
            raw(0, 8, 1, b""),
            conn(E::FRAME_SIZE_ERROR),
        ),
        (
            "HEADERS padding over the priority fields",
            raw(1, 0x8 | 0x20, 1, &[2, 0, 0, 0, 0, 0, 0x82]),
            conn(E::PROTOCOL_ERROR),
        ),
        (
            "HEADERS too short for its priority fields",
            raw(1, 0x20, 1, &[0, 0, 0, 0]),
            conn(E::FRAME_SIZE_ERROR),
        ),
    ];
    for (name, bytes, want) in cases {
        let mut buf = BytesMut::from(&[&bytes[..], &ping[..]].concat()[..]);
        assert_eq!(decode(&mut buf, MAX), Err(want), "{name}");
        if let FrameError::Stream(..) = want {
            // The broken frame is consumed: the connection reads on.
            assert_eq!(
                decode(&mut buf, MAX),
                Ok(Some(Frame::Ping {
                    ack: false,
                    payload: [0; 8]
                })),
                "{name}: the next frame"
            );
        }
    }
}

#[test]
fn a_frame_longer_than_max_frame_size_is_refused_from_its_header() {
    let head_only = &raw(0, 0, 1, &vec![0; MAX as usize + 1])[..HEAD_LEN];
    assert_eq!(
        decode(&mut BytesMut::from(head_only), MAX),
        Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR))
    );
    // A larger setting of ours lets it in; a frame of exactly the limit is fine.
    let whole = raw(0, 0, 1, &vec![7; MAX as usize + 1]);
    assert!(matches!(
        decode(&mut BytesMut::from(&whole[..]), MAX + 1),
        Ok(Some(Frame::Data { flow_len, .. })) if flow_len == MAX + 1
    ));
    let at_limit = raw(0, 0, 1, &vec![7; MAX as usize]);
    assert!(matches!(decode_one(&at_limit), Ok(Frame::Data { .. })));
}

#[test]
fn a_partial_frame_waits_with_room_reserved() {
    let frame = raw(0, 1, 1, &[1; 100]);
    let mut buf = BytesMut::from(&frame[..20]);
    assert_eq!(decode(&mut buf, MAX), Ok(None));
    assert_eq!(&buf[..], &frame[..20], "nothing consumed");
    assert!(buf.capacity() >= frame.len(), "room for the rest reserved");
    buf.extend_from_slice(&frame[20..]);
    assert_eq!(
        decode(&mut buf, MAX),
        Ok(Some(data(1, &[1; 100], true, 100)))
    );
}

#[test]
fn byte_at_a_time_gives_the_same_frames() {
    let mut wire = BytesMut::new();
    encode_settings(&mut wire, &all_settings());
    encode_settings_ack(&mut wire);
    encode_headers(&mut wire, StreamId(1), &[0x82; 20_000], false, MAX);
    encode_data(&mut wire, StreamId(1), &[9; 17_000], true, MAX);
    wire.extend_from_slice(&raw(0, 0x8, 3, b"\x01ab\0"));
    wire.extend_from_slice(&raw(2, 0, 3, &[0; 4]));
    wire.extend_from_slice(&raw(0x20, 0, 3, b"ext"));
    encode_ping(&mut wire, *b"pingpong", false);
    encode_window_update(&mut wire, StreamId(0), 1 << 20);
    encode_rst_stream(&mut wire, StreamId(1), ErrorCode::CANCEL);
    encode_goaway(&mut wire, StreamId(1), ErrorCode::NO_ERROR, b"bye");

    let whole = decode_all(&mut wire.clone());
    assert_eq!(whole.len(), 13, "{whole:?}");
    assert!(whole.contains(&Err(FrameError::Stream(
        StreamId(3),
        ErrorCode::FRAME_SIZE_ERROR
    ))));

    let mut buf = BytesMut::new();
    let mut trickled = Vec::new();
    for byte in wire.iter() {
        buf.put_u8(*byte);
        trickled.extend(decode_all(&mut buf));
    }
    assert!(buf.is_empty());
    assert_eq!(trickled, whole);
}

#[test]
fn a_large_header_block_goes_on_in_continuation_frames() {
    let block: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = encoded(|d| encode_headers(d, StreamId(5), &block, true, MAX));
    assert_eq!(wire.len(), block.len() + 3 * HEAD_LEN);
    // END_STREAM on the HEADERS frame only, END_HEADERS on the last.
    let flags: Vec<u8> = [0, 1, 2]
        .map(|i| wire[i * (HEAD_LEN + 16_384) + 4])
        .to_vec();
    assert_eq!(flags, [flag::END_STREAM, 0, flag::END_HEADERS]);
    let frames: Vec<Frame> = decode_all(&mut wire)
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let shape: Vec<(u8, usize, bool, bool)> = frames
        .iter()
        .map(|frame| match frame {
            Frame::Headers {
                block,
                end_stream,
                end_headers,
                ..
            } => (kind::HEADERS, block.len(), *end_stream, *end_headers),
            Frame::Continuation {
                block, end_headers, ..
            } => (kind::CONTINUATION, block.len(), false, *end_headers),
            other => panic!("not a header block frame: {other:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        [
            (kind::HEADERS, 16_384, true, false),
            (kind::CONTINUATION, 16_384, false, false),
            (kind::CONTINUATION, 7_232, false, true),
        ]
    );
    let rejoined: Vec<u8> = frames
        .iter()
        .flat_map(|frame| match frame {
            Frame::Headers { block, .. } | Frame::Continuation { block, .. } => block.to_vec(),
            _ => vec![],
        })
        .collect();
    assert_eq!(rejoined, block);

    let mut open = None;
    for frame in &frames {
        open = field_block_after(open, frame).unwrap();
    }
    assert_eq!(open, None, "the block ends with the last CONTINUATION");

    // A block of exactly the peer's limit, or under a larger limit, is one HEADERS frame.
    for (len, max) in [(16_384, MAX), (40_000, 1 << 16)] {
        let wire = encoded(|d| encode_headers(d, StreamId(5), &block[..len], false, max));
        assert_eq!(wire.len(), HEAD_LEN + len);
        assert_eq!(wire[4], flag::END_HEADERS);
    }
}

#[test]
fn large_data_is_split_by_the_peer_max_frame_size() {
    for (len, end_stream, want) in [
        (
            40_000,
            true,
            vec![(16_384, false), (16_384, false), (7_232, true)],
        ),
        (32_768, true, vec![(16_384, false), (16_384, true)]),
        (20_000, false, vec![(16_384, false), (3_616, false)]),
    ] {
        let body = vec![0xab; len];
        let mut wire = encoded(|d| encode_data(d, StreamId(1), &body, end_stream, MAX));
        let got: Vec<(usize, bool)> = decode_all(&mut wire)
            .into_iter()
            .map(|frame| match frame {
                Ok(Frame::Data {
                    data, end_stream, ..
                }) => {
                    assert!(data.iter().all(|b| *b == 0xab));
                    (data.len(), end_stream)
                }
                other => panic!("not DATA: {other:?}"),
            })
            .collect();
        assert_eq!(got, want, "{len} bytes");
    }
}

#[test]
fn decoded_payloads_share_the_read_buffer() {
    let mut buf = BytesMut::from(&raw(0, 0x8, 1, b"\x01abc\0")[..]);
    let base = buf.as_ptr() as usize;
    let Ok(Some(Frame::Data { data, .. })) = decode(&mut buf, MAX) else {
        panic!("a DATA frame");
    };
    assert_eq!(data.as_ptr() as usize, base + HEAD_LEN + 1);
}

#[test]
fn small_frames_are_written_without_reallocating() {
    let mut dst = BytesMut::with_capacity(256);
    let base = dst.as_ptr();
    encode_headers(&mut dst, StreamId(1), &[0x88, 0x5f, 0x87], false, MAX);
    encode_data(&mut dst, StreamId(1), b"hello world", true, MAX);
    assert_eq!(dst.as_ptr(), base);
    assert_eq!(dst.len(), 2 * HEAD_LEN + 3 + 11);
}

#[test]
fn a_header_block_is_not_interrupted() {
    let open_headers = headers(1, b"", false, false);
    let closed_headers = headers(1, b"", true, true);
    let continuation = |stream, end_headers| Frame::Continuation {
        stream: StreamId(stream),
        block: Bytes::new(),
        end_headers,
    };
    let refused = Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
    let some = |id| Ok(Some(StreamId(id)));
    type After = Result<Option<StreamId>, FrameError>;
    let cases: Vec<(Option<u32>, Frame, After)> = vec![
        (None, closed_headers.clone(), Ok(None)),
        (None, open_headers.clone(), some(1)),
        (Some(1), continuation(1, false), some(1)),
        (Some(1), continuation(1, true), Ok(None)),
        (Some(1), continuation(3, true), refused),
        (None, continuation(1, true), refused),
        (Some(1), closed_headers, refused),
        (Some(1), data(1, b"", false, 0), refused),
        (
            Some(1),
            Frame::Unknown {
                kind: 0x20,
                stream: StreamId(0),
            },
            refused,
        ),
        (None, data(1, b"", false, 0), Ok(None)),
        (
            None,
            Frame::Unknown {
                kind: 0x20,
                stream: StreamId(0),
            },
            Ok(None),
        ),
    ];
    for (open, frame, want) in cases {
        assert_eq!(
            field_block_after(open.map(StreamId), &frame),
            want,
            "{open:?} then {frame:?}"
        );
    }
}

#[test]
fn error_codes_keep_unknown_values_and_print_the_rfc_names() {
    let named: Vec<Option<&str>> = (0..=0xe).map(|code| ErrorCode(code).name()).collect();
    assert!(named[..=0xd].iter().all(Option::is_some));
    assert_eq!(named[0xe], None);
    assert_eq!(
        ErrorCode::HTTP_1_1_REQUIRED.to_string(),
        "HTTP_1_1_REQUIRED"
    );
    assert_eq!(format!("{:?}", ErrorCode(0x1234)), "error code 0x1234");
    let stream_error = FrameError::Stream(StreamId(3), ErrorCode::STREAM_CLOSED);
    assert_eq!(stream_error.code(), ErrorCode::STREAM_CLOSED);
    assert_eq!(
        stream_error.to_string(),
        "HTTP/2 error on stream 3: STREAM_CLOSED"
    );
    assert_eq!(
        FrameError::Connection(ErrorCode::SETTINGS_TIMEOUT).to_string(),
        "HTTP/2 connection error: SETTINGS_TIMEOUT"
    );
    for code in [
        ErrorCode::INTERNAL_ERROR,
        ErrorCode::REFUSED_STREAM,
        ErrorCode::COMPRESSION_ERROR,
        ErrorCode::CONNECT_ERROR,
        ErrorCode::INADEQUATE_SECURITY,
    ] {
        assert!(code.name().is_some());
    }
}

#[test]
fn streams_know_their_side() {
    assert!(StreamId(1).is_client_initiated());
    assert!(!StreamId(2).is_client_initiated());
    assert!(StreamId::CONNECTION.is_connection());
}
