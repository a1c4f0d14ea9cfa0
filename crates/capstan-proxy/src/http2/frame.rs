//! HTTP/2 frames (RFC 9113 §4 and §6), server side: the client's connection preface, a decoder
//! that splits whole frames off the read buffer (payloads share its memory, nothing is copied)
//! and checks every rule a frame can be checked against on its own, and encoders that write
//! frames into the write buffer. Pure: no I/O and no connection state; stream states, flow
//! control and HPACK belong to the connection, which also keeps the one cross-frame rule here
//! through [`field_block_after`] (a header block's CONTINUATION frames come next, §6.10).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use std::ops::Range;

/// What a client sends first (§3.4), before its SETTINGS frame.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Every frame starts with this many octets: length (24 bits), type, flags, stream id (§4.1).
pub(crate) const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and the least it may be set to (§6.5.2).
pub(crate) const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;
/// The largest SETTINGS_MAX_FRAME_SIZE allowed (§6.5.2).
pub(crate) const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1), so SETTINGS_INITIAL_WINDOW_SIZE's limit too.
pub(crate) const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
/// Flow-control windows start at this size until SETTINGS say otherwise (§6.9.2).
pub(crate) const DEFAULT_WINDOW_SIZE: u32 = 65_535;
/// HPACK's dynamic table size until SETTINGS say otherwise (§6.5.2).
pub(crate) const DEFAULT_HEADER_TABLE_SIZE: u32 = 4_096;

/// Clears the reserved bit of stream ids and window increments (§4.1: ignored on receipt).
const U31_MASK: u32 = MAX_WINDOW_SIZE;

/// Frame type codes (§6).
mod kind {
    pub(super) const DATA: u8 = 0x0;
    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const PRIORITY: u8 = 0x2;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const PUSH_PROMISE: u8 = 0x5;
    pub(super) const PING: u8 = 0x6;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const WINDOW_UPDATE: u8 = 0x8;
    pub(super) const CONTINUATION: u8 = 0x9;
}

/// Frame flags (§6); ACK shares END_STREAM's bit on the frames that have it.
mod flag {
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const ACK: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;
    pub(super) const PADDED: u8 = 0x8;
    pub(super) const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (§6.5.2; ENABLE_CONNECT_PROTOCOL is RFC 8441's).
mod setting_id {
    pub(super) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(super) const ENABLE_PUSH: u16 = 0x2;
    pub(super) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(super) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(super) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub(super) const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// A stream identifier (§5.1.1) with the reserved bit cleared; 0 stands for the connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub(crate) struct StreamId(pub(crate) u32);

impl StreamId {
    /// Stream 0: frames about the connection as a whole.
    pub(crate) const CONNECTION: StreamId = StreamId(0);

    /// Whether this is stream 0.
    pub(crate) fn is_connection(self) -> bool {
        self.0 == 0
    }

    /// Clients open the odd-numbered streams (§5.1.1).
    pub(crate) fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }
}

/// An error code of RST_STREAM and GOAWAY (§7); codes this list does not name are kept as
/// numbers, as §7 asks (they must not trigger special behaviour).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ErrorCode(pub(crate) u32);

impl ErrorCode {
    /// Graceful shutdown, or no error to report.
    pub(crate) const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// A protocol rule was broken and no more specific code applies.
    pub(crate) const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// The endpoint failed on its own.
    pub(crate) const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// A flow-control limit was broken.
    pub(crate) const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// SETTINGS were not acknowledged in time.
    pub(crate) const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// A frame arrived on a half-closed stream.
    pub(crate) const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// A frame had the wrong size.
    pub(crate) const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// The stream was refused before any application processing.
    pub(crate) const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// The stream is no longer needed.
    pub(crate) const CANCEL: ErrorCode = ErrorCode(0x8);
    /// HPACK state could not be kept.
    pub(crate) const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// A CONNECT tunnel was reset or closed abnormally.
    pub(crate) const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// The peer is generating excessive load.
    pub(crate) const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// The transport does not meet the minimum security requirements.
    pub(crate) const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// HTTP/1.1 must be used for this request.
    pub(crate) const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The RFC's name of the code, if it has one.
    pub(crate) fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_ERROR => "NO_ERROR",
            Self::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Self::INTERNAL_ERROR => "INTERNAL_ERROR",
            Self::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Self::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            Self::STREAM_CLOSED => "STREAM_CLOSED",
            Self::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Self::REFUSED_STREAM => "REFUSED_STREAM",
            Self::CANCEL => "CANCEL",
            Self::COMPRESSION_ERROR => "COMPRESSION_ERROR",
            Self::CONNECT_ERROR => "CONNECT_ERROR",
            Self::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Self::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            Self::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "error code {:#x}", self.0),
        }
    }
}

/// A frame that breaks the protocol, and what the connection must do about it (§5.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FrameError {
    /// A connection error (§5.4.1): send GOAWAY with this code and close. The read buffer is
    /// left in no particular state.
    Connection(ErrorCode),
    /// A stream error (§5.4.2): reset this stream with this code. The frame was consumed and
    /// the connection goes on with the next one.
    Stream(StreamId, ErrorCode),
}

impl FrameError {
    /// The code to put in the GOAWAY or RST_STREAM frame.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            FrameError::Connection(code) | FrameError::Stream(_, code) => code,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Connection(code) => write!(f, "HTTP/2 connection error: {code}"),
            FrameError::Stream(id, code) => write!(f, "HTTP/2 error on stream {}: {code}", id.0),
        }
    }
}

impl std::error::Error for FrameError {}

/// A stream's priority fields (§5.3.2, §6.3), deprecated by RFC 9113 but still on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Priority {
    /// The stream this one depends on.
    pub(crate) dependency: StreamId,
    /// The E flag: an exclusive dependency.
    pub(crate) exclusive: bool,
    /// The weight as sent, one less than the weight it stands for (1 to 256).
    pub(crate) weight: u8,
}

impl Priority {
    /// Reads the five octets at the start of `field`, which the caller has checked are there.
    fn parse(field: &[u8]) -> Priority {
        let word = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        Priority {
            dependency: StreamId(word & U31_MASK),
            exclusive: word & !U31_MASK != 0,
            weight: field[4],
        }
    }
}

/// One known setting of a SETTINGS frame (§6.5.2), its value already checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Setting {
    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table size the sender's decoder allows.
    HeaderTableSize(u32),
    /// SETTINGS_ENABLE_PUSH: whether the sender accepts server push.
    EnablePush(bool),
    /// SETTINGS_MAX_CONCURRENT_STREAMS: how many streams the sender lets its peer open.
    MaxConcurrentStreams(u32),
    /// SETTINGS_INITIAL_WINDOW_SIZE: the sender's initial stream flow-control window.
    InitialWindowSize(u32),
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload the sender accepts.
    MaxFrameSize(u32),
    /// SETTINGS_MAX_HEADER_LIST_SIZE: advisory limit on a decoded header list's size.
    MaxHeaderListSize(u32),
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): extended CONNECT is supported.
    EnableConnectProtocol(bool),
}

impl Setting {
    /// Reads one identifier/value pair: `None` for identifiers we do not know, which §6.5.2
    /// says to ignore; an error for a known setting with a value out of its range.
    fn parse(id: u16, value: u32) -> Result<Option<Setting>, FrameError> {
        let flag = |value: u32| match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR)),
        };
        Ok(Some(match id {
            setting_id::HEADER_TABLE_SIZE => Setting::HeaderTableSize(value),
            setting_id::ENABLE_PUSH => Setting::EnablePush(flag(value)?),
            setting_id::MAX_CONCURRENT_STREAMS => Setting::MaxConcurrentStreams(value),
            setting_id::INITIAL_WINDOW_SIZE if value > MAX_WINDOW_SIZE => {
                return Err(FrameError::Connection(ErrorCode::FLOW_CONTROL_ERROR))
            }
            setting_id::INITIAL_WINDOW_SIZE => Setting::InitialWindowSize(value),
            setting_id::MAX_FRAME_SIZE
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
            {
                return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR))
            }
            setting_id::MAX_FRAME_SIZE => Setting::MaxFrameSize(value),
            setting_id::MAX_HEADER_LIST_SIZE => Setting::MaxHeaderListSize(value),
            setting_id::ENABLE_CONNECT_PROTOCOL => Setting::EnableConnectProtocol(flag(value)?),
            _ => return Ok(None),
        }))
    }

    fn id_and_value(self) -> (u16, u32) {
        match self {
            Setting::HeaderTableSize(v) => (setting_id::HEADER_TABLE_SIZE, v),
            Setting::EnablePush(v) => (setting_id::ENABLE_PUSH, v.into()),
            Setting::MaxConcurrentStreams(v) => (setting_id::MAX_CONCURRENT_STREAMS, v),
            Setting::InitialWindowSize(v) => (setting_id::INITIAL_WINDOW_SIZE, v),
            Setting::MaxFrameSize(v) => (setting_id::MAX_FRAME_SIZE, v),
            Setting::MaxHeaderListSize(v) => (setting_id::MAX_HEADER_LIST_SIZE, v),
            Setting::EnableConnectProtocol(v) => (setting_id::ENABLE_CONNECT_PROTOCOL, v.into()),
        }
    }
}

/// One decoded frame. Payloads (`Bytes`) share the read buffer's memory; `stream` is never 0
/// but for WINDOW_UPDATE and unknown types.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Frame {
    /// DATA (§6.1), padding removed.
    Data {
        stream: StreamId,
        /// The data, without the padding.
        data: Bytes,
        /// END_STREAM: the sender's last frame on this stream.
        end_stream: bool,
        /// The whole payload's length, padding included: what flow control counts (§6.9.1).
        flow_len: u32,
    },
    /// HEADERS (§6.2), padding removed.
    Headers {
        stream: StreamId,
        /// The header block fragment, for HPACK once the block is complete.
        block: Bytes,
        /// The priority fields, when the PRIORITY flag was set.
        priority: Option<Priority>,
        /// END_STREAM: no DATA follows on this stream.
        end_stream: bool,
        /// END_HEADERS: the block is complete; otherwise CONTINUATION frames follow.
        end_headers: bool,
    },
    /// PRIORITY (§6.3).
    Priority {
        stream: StreamId,
        /// Its new priority.
        priority: Priority,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        stream: StreamId,
        /// Why the stream ends.
        code: ErrorCode,
    },
    /// SETTINGS (§6.5): an acknowledgement (no settings) or the sender's new settings.
    Settings {
        /// ACK: the peer acknowledges our SETTINGS.
        ack: bool,
        /// The known settings, in order; unknown identifiers are left out.
        settings: Vec<Setting>,
    },
    /// PING (§6.7).
    Ping {
        /// ACK: the answer to a PING we sent.
        ack: bool,
        /// Opaque data, echoed in the answer.
        payload: [u8; 8],
    },
    /// GOAWAY (§6.8).
    GoAway {
        /// The last stream the sender may have processed.
        last_stream: StreamId,
        /// Why the connection ends.
        code: ErrorCode,
        /// Opaque diagnostic data.
        debug: Bytes,
    },
    /// WINDOW_UPDATE (§6.9).
    WindowUpdate {
        /// The stream, or 0 for the connection's window.
        stream: StreamId,
        /// How much the window grows: 1 to 2^31-1.
        increment: u32,
    },
    /// CONTINUATION (§6.10).
    Continuation {
        stream: StreamId,
        /// The next header block fragment.
        block: Bytes,
        /// END_HEADERS: the block is complete.
        end_headers: bool,
    },
    /// A frame of a type we do not know (its type code and stream), to be ignored (§5.5)
    /// unless it interrupts a header block ([`field_block_after`]).
    Unknown { kind: u8, stream: StreamId },
}

/// Takes the client's connection preface off the front of `buf` (§3.4): `Ok(true)` once taken,
/// `Ok(false)` while the bytes so far are a beginning of it, a PROTOCOL_ERROR as soon as they
/// are not (an HTTP/1.1 request, say).
pub(crate) fn take_preface(buf: &mut BytesMut) -> Result<bool, FrameError> {
    let seen = buf.len().min(PREFACE.len());
    if buf[..seen] != PREFACE[..seen] {
        return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
    }
    if seen < PREFACE.len() {
        return Ok(false);
    }
    buf.advance(PREFACE.len());
    Ok(true)
}

/// The nine-octet frame header (§4.1).
#[derive(Clone, Copy)]
struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: StreamId,
}

impl Head {
    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// DATA, HEADERS, PRIORITY, RST_STREAM and CONTINUATION belong to a stream (§6.1-§6.4,
    /// §6.10).
    fn require_stream(self) -> Result<(), FrameError> {
        if self.stream.is_connection() {
            return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
        }
        Ok(())
    }

    /// SETTINGS, PING and GOAWAY belong to the connection (§6.5, §6.7, §6.8).
    fn require_connection(self) -> Result<(), FrameError> {
        if !self.stream.is_connection() {
            return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
        }
        Ok(())
    }

    /// RST_STREAM and WINDOW_UPDATE of another length are connection errors (§6.4, §6.9).
    fn require_len(self, len: usize) -> Result<(), FrameError> {
        if self.len != len {
            return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
        }
        Ok(())
    }
}

/// Splits the next whole frame off the front of `buf`: `Ok(None)` until all its bytes are
/// there (the buffer then has room reserved for the rest). `max_frame_size` is the
/// SETTINGS_MAX_FRAME_SIZE we announced; a longer frame is refused from its header alone, as a
/// connection error even where §4.2 would allow a stream error, so that we never buffer it.
/// Frames of unknown types come back as [`Frame::Unknown`], consumed.
pub(crate) fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    let Some(head) = buf.get(..HEAD_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let head = Head {
        len: len as usize,
        kind: head[3],
        flags: head[4],
        stream: StreamId(u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & U31_MASK),
    };
    if len > max_frame_size {
        return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
    }
    let total = HEAD_LEN + head.len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let buffered = buf.len();
    let result = parse(buf, head);
    // The parsers split off a payload they return, no more; the rest of the frame (all of it
    // after an error, so that the connection reads on after a stream error) goes here.
    let consumed = buffered - buf.len();
    if consumed < total {
        buf.advance(total - consumed);
    }
    result.map(Some)
}

/// Parses the frame at the front of `buf`, whole, splitting off at most the payload it returns.
fn parse(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    let payload = &buf[HEAD_LEN..HEAD_LEN + head.len];
    match head.kind {
        kind::DATA => {
            head.require_stream()?;
            let range = unpadded(payload, head, 0)?;
            Ok(Frame::Data {
                stream: head.stream,
                data: take(buf, range),
                end_stream: head.has(flag::END_STREAM),
                flow_len: head.len as u32,
            })
        }
        kind::HEADERS => {
            head.require_stream()?;
            let priority_len = if head.has(flag::PRIORITY) { 5 } else { 0 };
            let range = unpadded(payload, head, priority_len)?;
            let priority = head
                .has(flag::PRIORITY)
                .then(|| Priority::parse(&payload[range.start - priority_len..range.start]));
            // A stream depending on itself is a stream error (§5.3.1), but the block must
            // still reach HPACK to keep its state: refusing the connection is simpler, and
            // allowed (§5.4).
            if priority.is_some_and(|p| p.dependency == head.stream) {
                return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
            }
            Ok(Frame::Headers {
                stream: head.stream,
                block: take(buf, range),
                priority,
                end_stream: head.has(flag::END_STREAM),
                end_headers: head.has(flag::END_HEADERS),
            })
        }
        kind::PRIORITY => {
            head.require_stream()?;
            if head.len != 5 {
                return Err(FrameError::Stream(head.stream, ErrorCode::FRAME_SIZE_ERROR));
            }
            let priority = Priority::parse(payload);
            if priority.dependency == head.stream {
                return Err(FrameError::Stream(head.stream, ErrorCode::PROTOCOL_ERROR));
            }
            Ok(Frame::Priority {
                stream: head.stream,
                priority,
            })
        }
        kind::RST_STREAM => {
            head.require_stream()?;
            head.require_len(4)?;
            let code = ErrorCode(read_u32(payload));
            Ok(Frame::RstStream {
                stream: head.stream,
                code,
            })
        }
        kind::SETTINGS => {
            head.require_connection()?;
            let ack = head.has(flag::ACK);
            if (ack && head.len != 0) || head.len % 6 != 0 {
                return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
            }
            let mut settings = Vec::with_capacity(head.len / 6);
            for pair in payload.chunks_exact(6) {
                let id = u16::from_be_bytes([pair[0], pair[1]]);
                let value = read_u32(&pair[2..]);
                settings.extend(Setting::parse(id, value)?);
            }
            Ok(Frame::Settings { ack, settings })
        }
        // Only servers push (§8.4).
        kind::PUSH_PROMISE => Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR)),
        kind::PING => {
            head.require_connection()?;
            let Ok(payload) = payload.try_into() else {
                return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
            };
            Ok(Frame::Ping {
                ack: head.has(flag::ACK),
                payload,
            })
        }
        kind::GOAWAY => {
            head.require_connection()?;
            if head.len < 8 {
                return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
            }
            let last_stream = StreamId(read_u32(payload) & U31_MASK);
            let code = ErrorCode(read_u32(&payload[4..]));
            Ok(Frame::GoAway {
                last_stream,
                code,
                debug: take(buf, 8..head.len),
            })
        }
        kind::WINDOW_UPDATE => {
            head.require_len(4)?;
            let increment = read_u32(payload) & U31_MASK;
            if increment == 0 {
                return Err(match head.stream {
                    StreamId::CONNECTION => FrameError::Connection(ErrorCode::PROTOCOL_ERROR),
                    stream => FrameError::Stream(stream, ErrorCode::PROTOCOL_ERROR),
                });
            }
            Ok(Frame::WindowUpdate {
                stream: head.stream,
                increment,
            })
        }
        kind::CONTINUATION => {
            head.require_stream()?;
            Ok(Frame::Continuation {
                stream: head.stream,
                block: take(buf, 0..head.len),
                end_headers: head.has(flag::END_HEADERS),
            })
        }
        kind => Ok(Frame::Unknown {
            kind,
            stream: head.stream,
        }),
    }
}

/// Where the content of a DATA or HEADERS payload lies once the Pad Length octet (with
/// PADDED), `skip` fixed octets after it and the padding are set aside (§6.1, §6.2).
fn unpadded(payload: &[u8], head: Head, skip: usize) -> Result<Range<usize>, FrameError> {
    let padded = head.has(flag::PADDED);
    let start = usize::from(padded) + skip;
    if payload.len() < start {
        return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
    }
    let pad = if padded { usize::from(payload[0]) } else { 0 };
    // Padding as long as the payload or longer (§6.1, §6.2).
    if pad > payload.len() - start {
        return Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
    }
    Ok(start..payload.len() - pad)
}

/// Splits `range` of the payload of the frame at the front of `buf` off as shared bytes,
/// dropping what comes before; [`decode`] drops what comes after.
fn take(buf: &mut BytesMut, range: Range<usize>) -> Bytes {
    buf.advance(HEAD_LEN + range.start);
    buf.split_to(range.len()).freeze()
}

/// The big-endian u32 at the start of `bytes`, which the caller has checked holds four.
fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The §4.3 rule that a header block is contiguous: once HEADERS without END_HEADERS arrives
/// on a stream, only CONTINUATION frames of that stream may follow until one has END_HEADERS
/// (§6.10); a CONTINUATION anywhere else is an error too. Given the stream whose block is
/// open, if any, and the next frame, gives the stream whose block is open after it.
pub(crate) fn field_block_after(
    open: Option<StreamId>,
    frame: &Frame,
) -> Result<Option<StreamId>, FrameError> {
    let refused = Err(FrameError::Connection(ErrorCode::PROTOCOL_ERROR));
    let (stream, end_headers, continuation) = match *frame {
        Frame::Headers {
            stream,
            end_headers,
            ..
        } => (stream, end_headers, false),
        Frame::Continuation {
            stream,
            end_headers,
            ..
        } => (stream, end_headers, true),
        _ if open.is_some() => return refused,
        _ => return Ok(None),
    };
    if open != continuation.then_some(stream) {
        return refused;
    }
    Ok((!end_headers).then_some(stream))
}

/// Writes a frame header. Every encoder reserves room for its whole frames first.
fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: StreamId) {
    debug_assert!(
        len <= MAX_MAX_FRAME_SIZE as usize,
        "frame payloads are split"
    );
    let [_, l0, l1, l2] = (len as u32).to_be_bytes();
    let [s0, s1, s2, s3] = stream.0.to_be_bytes();
    dst.put_slice(&[l0, l1, l2, kind, flags, s0, s1, s2, s3]);
}

/// The peer's SETTINGS_MAX_FRAME_SIZE as a chunk size; [`Setting::parse`] keeps it in range,
/// the clamp keeps a caller's mistake from making a zero-length chunk.
fn chunk_size(max_frame_size: u32) -> usize {
    max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE) as usize
}

/// Writes a SETTINGS frame announcing `settings` (§6.5).
pub(crate) fn encode_settings(dst: &mut BytesMut, settings: &[Setting]) {
    let len = settings.len() * 6;
    dst.reserve(HEAD_LEN + len);
    put_head(dst, len, kind::SETTINGS, 0, StreamId::CONNECTION);
    for setting in settings {
        let (id, value) = setting.id_and_value();
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Writes the SETTINGS frame acknowledging the peer's settings (§6.5.3).
pub(crate) fn encode_settings_ack(dst: &mut BytesMut) {
    dst.reserve(HEAD_LEN);
    put_head(dst, 0, kind::SETTINGS, flag::ACK, StreamId::CONNECTION);
}

/// Writes a PING frame (§6.7): `ack` for the answer to the peer's, echoing its payload.
pub(crate) fn encode_ping(dst: &mut BytesMut, payload: [u8; 8], ack: bool) {
    dst.reserve(HEAD_LEN + 8);
    let flags = if ack { flag::ACK } else { 0 };
    put_head(dst, 8, kind::PING, flags, StreamId::CONNECTION);
    dst.put_slice(&payload);
}

/// Writes a GOAWAY frame (§6.8); `debug` must fit in the peer's max frame size less 8.
pub(crate) fn encode_goaway(
    dst: &mut BytesMut,
    last_stream: StreamId,
    code: ErrorCode,
    debug: &[u8],
) {
    dst.reserve(HEAD_LEN + 8 + debug.len());
    put_head(dst, 8 + debug.len(), kind::GOAWAY, 0, StreamId::CONNECTION);
    dst.put_u32(last_stream.0);
    dst.put_u32(code.0);
    dst.put_slice(debug);
}

/// Writes a RST_STREAM frame (§6.4).
pub(crate) fn encode_rst_stream(dst: &mut BytesMut, stream: StreamId, code: ErrorCode) {
    dst.reserve(HEAD_LEN + 4);
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(code.0);
}

/// Writes a WINDOW_UPDATE frame (§6.9); `increment` is 1 to 2^31-1.
pub(crate) fn encode_window_update(dst: &mut BytesMut, stream: StreamId, increment: u32) {
    debug_assert!((1..=MAX_WINDOW_SIZE).contains(&increment));
    dst.reserve(HEAD_LEN + 4);
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

/// Writes an encoded header block as one HEADERS frame, followed by CONTINUATION frames when
/// it is longer than the peer's `max_frame_size` (§4.3); END_HEADERS on the last frame.
pub(crate) fn encode_headers(
    dst: &mut BytesMut,
    stream: StreamId,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let chunk = chunk_size(max_frame_size);
    let frames = block.len().div_ceil(chunk).max(1);
    dst.reserve(frames * HEAD_LEN + block.len());
    let mut flags = flag_if(end_stream);
    let mut kind = kind::HEADERS;
    let mut rest = block;
    loop {
        let (fragment, after) = rest.split_at(rest.len().min(chunk));
        if after.is_empty() {
            flags |= flag::END_HEADERS;
        }
        put_head(dst, fragment.len(), kind, flags, stream);
        dst.put_slice(fragment);
        if after.is_empty() {
            return;
        }
        // END_STREAM belongs on the HEADERS frame only (§6.10 defines no such flag).
        (kind, flags, rest) = (kind::CONTINUATION, 0, after);
    }
}

/// Writes `data` as DATA frames of at most the peer's `max_frame_size` each, END_STREAM on the
/// last when `end_stream` (an empty `data` makes one empty frame). Flow control is the
/// caller's: `data` must fit in the stream's and the connection's windows.
pub(crate) fn encode_data(
    dst: &mut BytesMut,
    stream: StreamId,
    data: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let chunk = chunk_size(max_frame_size);
    let frames = data.len().div_ceil(chunk).max(1);
    dst.reserve(frames * HEAD_LEN + data.len());
    let mut rest = data;
    loop {
        let (piece, after) = rest.split_at(rest.len().min(chunk));
        let last = after.is_empty();
        put_head(
            dst,
            piece.len(),
            kind::DATA,
            flag_if(last && end_stream),
            stream,
        );
        dst.put_slice(piece);
        if last {
            return;
        }
        rest = after;
    }
}

fn flag_if(end_stream: bool) -> u8 {
    if end_stream {
        flag::END_STREAM
    } else {
        0
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
pub(crate) mod tests;
