//! The server side of one HTTP/2 connection (RFC 9113), sans I/O: the bytes read go into
//! [`Conn::recv`], which turns them into [`Event`]s; responses go in through `send_*`; what to
//! write comes out of [`Conn::output`]. It keeps stream states (§5.1), flow control in both
//! directions (§5.2, §6.9), SETTINGS, PING and GOAWAY, validates requests (§8) and bounds the
//! known floods (CONTINUATION, rapid reset, PING/SETTINGS, empty frames).
//!
//! The application's duties: release every byte of every [`Event::Data`] it got with
//! [`Conn::release`] once consumed (even after the stream is gone: the connection window
//! counts them), answer every request (or reset it), and retry what [`Conn::send_data`] could
//! not send after an [`Event::WindowOpened`].

use super::frame::{self, ErrorCode, Frame, FrameError, Setting, StreamId};
use super::head::HeadBuilder;
use super::hpack::{self, DecodeError};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Client resets of streams still being answered (CVE-2023-44487, "rapid reset"): this many
/// within [`RAPID_RESET_WINDOW`] end the connection with ENHANCE_YOUR_CALM. 200 per 30 s is
/// one full set of concurrent streams per 30 s, far above what a browser or gRPC client
/// cancels, far below the thousands per second of the attack.
const RAPID_RESET_LIMIT: u32 = 200;
/// The window over which [`RAPID_RESET_LIMIT`] counts.
const RAPID_RESET_WINDOW: Duration = Duration::from_secs(30);
/// PING and SETTINGS ACKs written but not yet taken by the socket: past this, the
/// peer makes us write faster than we are read (a PING/SETTINGS flood) and the connection ends
/// with ENHANCE_YOUR_CALM. 64 leaves ample room for keepalive PINGs batched in one read.
const MAX_OWED_ACKS: u32 = 64;
/// Empty DATA frames without END_STREAM in a row, with no HEADERS or non-empty DATA between:
/// they cost work and carry nothing (CVE-2019-9518). 100 in a row is no legitimate pattern.
const MAX_EMPTY_FRAMES: u32 = 100;
/// Streams we reset whose late frames are tolerated (§5.1 "closed": frames in flight when the
/// RST_STREAM was sent); older ones get STREAM_CLOSED. A connection's worth of concurrent
/// streams and some.
const RECENT_RESETS: usize = 256;

/// Our side of the connection's settings (the values hyper's server used, which this replaces).
/// They are enforced from the start, before the client acknowledges them: values below the
/// protocol's defaults (65,535-octet windows) could then refuse a client that is within its
/// rights, so only tests use them.
#[derive(Clone, Debug)]
pub(crate) struct ConnConfig {
    /// SETTINGS_INITIAL_WINDOW_SIZE: each stream's receive window.
    pub(crate) initial_window_size: u32,
    /// The connection's receive window, raised from 65,535 by a WINDOW_UPDATE at start.
    pub(crate) connection_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload we accept.
    pub(crate) max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a request head beyond it gets [`Event::RequestTooLarge`].
    pub(crate) max_header_list_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond it are refused (REFUSED_STREAM).
    pub(crate) max_concurrent_streams: u32,
    /// SETTINGS_HEADER_TABLE_SIZE: our HPACK decoder's dynamic table.
    pub(crate) header_table_size: u32,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): accept extended CONNECT.
    pub(crate) enable_connect_protocol: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            initial_window_size: 1 << 20,
            connection_window_size: 1 << 20,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: 16 << 10,
            max_concurrent_streams: 200,
            header_table_size: frame::DEFAULT_HEADER_TABLE_SIZE,
            enable_connect_protocol: false,
        }
    }
}

/// What happened on the connection, for the application.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new request; `end_stream`: it has no body.
    Request {
        stream: StreamId,
        head: http::request::Parts,
        end_stream: bool,
    },
    /// A request whose head is larger than SETTINGS_MAX_HEADER_LIST_SIZE: the application
    /// answers 431 (RFC 6585) with `send_headers`. Its body, if any, is released and dropped.
    RequestTooLarge { stream: StreamId },
    /// A piece of a request body; `end_stream`: the last one.
    Data {
        stream: StreamId,
        data: Bytes,
        end_stream: bool,
    },
    /// A request's trailers, which end its body.
    Trailers {
        stream: StreamId,
        headers: HeaderMap,
    },
    /// The stream is gone: the client reset it, or we did because it broke a rule (`code` is
    /// then the one we sent). Nothing more can be sent on it.
    Reset { stream: StreamId, code: ErrorCode },
    /// The client is going away (§6.8).
    GoAway {
        last_stream: StreamId,
        code: ErrorCode,
    },
    /// Send capacity grew on this stream, or on all of them ([`StreamId::CONNECTION`]): retry
    /// what [`Conn::send_data`] left.
    WindowOpened { stream: StreamId },
}

/// A connection error (§5.4.1): a GOAWAY with `code` is in the output; write it and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnError {
    pub(crate) code: ErrorCode,
    /// What went wrong, for logs.
    pub(crate) reason: &'static str,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP/2 connection error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ConnError {}

/// Why a `send_*` call did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The stream was reset or its response already ended.
    StreamClosed,
    /// Data or trailers before the response head, or a second head.
    OutOfOrder,
}

/// One open or half-closed stream (§5.1); closed streams are not kept.
#[derive(Debug)]
struct Stream {
    id: StreamId,
    /// The client may still send (open or half-closed(local)).
    recv_open: bool,
    /// We may still send (open or half-closed(remote)).
    send_open: bool,
    /// A final response head was sent.
    head_sent: bool,
    /// What the client may still send before our next WINDOW_UPDATE.
    recv_window: u32,
    /// Released by the application, not yet announced.
    unreleased: u32,
    /// What we may still send; negative after a SETTINGS_INITIAL_WINDOW_SIZE decrease.
    send_window: i64,
    content_length: Option<u64>,
    received: u64,
    /// The head was too large: the body is dropped, not delivered.
    discard: bool,
}

type Result<T, E = ConnError> = std::result::Result<T, E>;

/// A header block split across HEADERS and CONTINUATION frames, being assembled.
struct PendingBlock {
    stream: StreamId,
    end_stream: bool,
    block: BytesMut,
    /// Octets on the wire so far, frame headers included so that empty CONTINUATION frames
    /// count too.
    wire_len: usize,
}

/// The server side of one HTTP/2 connection.
pub(crate) struct Conn {
    config: ConnConfig,
    out: BytesMut,
    events: VecDeque<Event>,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    /// Reused for each response's header block.
    block_scratch: BytesMut,
    preface_seen: bool,
    settings_seen: bool,
    pending: Option<PendingBlock>,
    /// Small and scanned linearly: at most `max_concurrent_streams`, usually a handful.
    streams: Vec<Stream>,
    /// The highest client stream id seen: ids up to it are not idle.
    last_client_stream: StreamId,
    recent_resets: VecDeque<StreamId>,
    recv_window: u32,
    unreleased: u32,
    send_window: i64,
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    owed_acks: u32,
    empty_frames: u32,
    rapid_resets: u32,
    rapid_reset_since: Option<Instant>,
    going_away: bool,
    failed: Option<ConnError>,
    /// A header map the application is done with, for the next request's head.
    spare_headers: Option<HeaderMap>,
}

impl Conn {
    /// A connection with our `config`; our SETTINGS and the connection WINDOW_UPDATE are queued.
    pub(crate) fn new(config: ConnConfig) -> Conn {
        let mut out = BytesMut::with_capacity(4096);
        let mut settings = vec![
            Setting::MaxConcurrentStreams(config.max_concurrent_streams),
            Setting::InitialWindowSize(config.initial_window_size),
            Setting::MaxFrameSize(config.max_frame_size),
            Setting::MaxHeaderListSize(config.max_header_list_size),
        ];
        if config.header_table_size != frame::DEFAULT_HEADER_TABLE_SIZE {
            settings.push(Setting::HeaderTableSize(config.header_table_size));
        }
        if config.enable_connect_protocol {
            settings.push(Setting::EnableConnectProtocol(true));
        }
        frame::encode_settings(&mut out, &settings);
        let raise = config
            .connection_window_size
            .saturating_sub(frame::DEFAULT_WINDOW_SIZE);
        if raise > 0 {
            frame::encode_window_update(&mut out, StreamId::CONNECTION, raise);
        }
        Conn {
            decoder: hpack::Decoder::new(config.header_table_size as usize),
            encoder: hpack::Encoder::new(),
            recv_window: config
                .connection_window_size
                .max(frame::DEFAULT_WINDOW_SIZE),
            config,
            out,
            events: VecDeque::new(),
            block_scratch: BytesMut::new(),
            preface_seen: false,
            settings_seen: false,
            pending: None,
            streams: Vec::new(),
            last_client_stream: StreamId::CONNECTION,
            recent_resets: VecDeque::new(),
            unreleased: 0,
            send_window: i64::from(frame::DEFAULT_WINDOW_SIZE),
            peer_initial_window: frame::DEFAULT_WINDOW_SIZE,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            owed_acks: 0,
            empty_frames: 0,
            rapid_resets: 0,
            rapid_reset_since: None,
            going_away: false,
            failed: None,
            spare_headers: None,
        }
    }

    /// Consumes the whole frames at the front of `buf` (the preface first), leaving a partial
    /// one. On a connection error the GOAWAY is queued and every later call fails the same.
    pub(crate) fn recv(&mut self, buf: &mut BytesMut) -> Result<()> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.recv_frames(buf);
        if let Err(err) = result {
            frame::encode_goaway(&mut self.out, self.last_client_stream, err.code, &[]);
            self.failed = Some(err);
        }
        result
    }

    fn recv_frames(&mut self, buf: &mut BytesMut) -> Result<()> {
        if !self.preface_seen {
            if !frame::take_preface(buf).map_err(|e| fail(e.code(), "bad preface"))? {
                return Ok(());
            }
            self.preface_seen = true;
        }
        loop {
            let frame = match frame::decode(buf, self.config.max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(FrameError::Connection(code)) => return Err(fail(code, "invalid frame")),
                Err(FrameError::Stream(stream, code)) => {
                    if self.pending.is_some() {
                        return Err(fail(ErrorCode::PROTOCOL_ERROR, "header block interrupted"));
                    }
                    self.stream_error(stream, code)?;
                    continue;
                }
            };
            self.on_frame(frame)?;
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<()> {
        if !self.settings_seen {
            if !matches!(frame, Frame::Settings { ack: false, .. }) {
                return Err(fail(ErrorCode::PROTOCOL_ERROR, "first frame not SETTINGS"));
            }
            self.settings_seen = true;
        }
        frame::field_block_after(self.pending.as_ref().map(|p| p.stream), &frame)
            .map_err(|e| fail(e.code(), "header block interrupted"))?;
        match frame {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len),
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                ..
            } => {
                self.empty_frames = 0;
                if end_headers {
                    return self.on_header_block(stream, &block, end_stream);
                }
                let pending = PendingBlock {
                    stream,
                    end_stream,
                    block: BytesMut::from(&block[..]),
                    wire_len: frame::HEAD_LEN + block.len(),
                };
                self.check_block_len(pending.wire_len)?;
                self.pending = Some(pending);
                Ok(())
            }
            Frame::Continuation {
                block, end_headers, ..
            } => {
                let mut pending = self
                    .pending
                    .take()
                    .expect("field_block_after admits CONTINUATION only after an open block");
                pending.wire_len += frame::HEAD_LEN + block.len();
                self.check_block_len(pending.wire_len)?;
                pending.block.extend_from_slice(&block);
                if end_headers {
                    let block = pending.block.freeze();
                    return self.on_header_block(pending.stream, &block, pending.end_stream);
                }
                self.pending = Some(pending);
                Ok(())
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, code } => self.on_rst_stream(stream, code),
            Frame::Settings { ack, settings } => self.on_settings(ack, &settings),
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::encode_ping(&mut self.out, payload, true);
                    self.owe_ack()?;
                }
                Ok(())
            }
            Frame::GoAway {
                last_stream, code, ..
            } => {
                self.events.push_back(Event::GoAway { last_stream, code });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
        }
    }

    /// The CONTINUATION-flood defence: a block past twice the header list limit is no request
    /// we would take, and HPACK cannot skip it, so the connection ends.
    fn check_block_len(&self, wire_len: usize) -> Result<()> {
        if wire_len > 2 * self.config.max_header_list_size as usize {
            return Err(fail(ErrorCode::ENHANCE_YOUR_CALM, "header block too large"));
        }
        Ok(())
    }

    fn owe_ack(&mut self) -> Result<()> {
        self.owed_acks += 1;
        if self.owed_acks > MAX_OWED_ACKS {
            return Err(fail(ErrorCode::ENHANCE_YOUR_CALM, "PING or SETTINGS flood"));
        }
        Ok(())
    }

    fn position(&self, stream: StreamId) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    /// Idle streams (§5.1): ids the client has not opened yet, and every even id (we push none).
    fn is_idle(&self, stream: StreamId) -> bool {
        !stream.is_client_initiated() || stream > self.last_client_stream
    }

    fn on_header_block(&mut self, stream: StreamId, block: &Bytes, end_stream: bool) -> Result<()> {
        self.pending = None;
        if let Some(index) = self.position(stream) {
            return self.on_trailers(index, block, end_stream);
        }
        if !self.is_idle(stream) {
            self.decode_ignored(block)?;
            if self.recent_resets.contains(&stream) {
                return Ok(());
            }
            // Ids below the last opened may never have been used: the ids must increase
            // (§5.1.1); the last one itself was, and is closed (§5.1).
            if stream < self.last_client_stream {
                return Err(fail(ErrorCode::PROTOCOL_ERROR, "stream id decreased"));
            }
            return Err(fail(ErrorCode::STREAM_CLOSED, "HEADERS on a closed stream"));
        }
        if !stream.is_client_initiated() {
            return Err(fail(ErrorCode::PROTOCOL_ERROR, "even stream id"));
        }
        self.last_client_stream = stream;
        let mut builder = HeadBuilder::request(self.spare_headers.take());
        let decoded =
            self.decoder
                .decode(block, self.config.max_header_list_size as usize, |field| {
                    builder.field(field)
                });
        if let Err(DecodeError::Compression(why)) = decoded {
            return Err(fail(ErrorCode::COMPRESSION_ERROR, why));
        }
        if self.going_away || self.streams.len() >= self.config.max_concurrent_streams as usize {
            self.send_reset(stream, ErrorCode::REFUSED_STREAM);
            return Ok(());
        }
        let head = match decoded {
            Ok(()) => builder.into_request(self.config.enable_connect_protocol),
            Err(err) => Err(err),
        };
        let (head, content_length, discard) = match head {
            Ok(head) => (Some(head.parts), head.content_length, false),
            Err(DecodeError::HeaderListTooLarge) => (None, None, true),
            Err(_) => {
                self.send_reset(stream, ErrorCode::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        if end_stream && content_length.is_some_and(|n| n != 0) {
            self.send_reset(stream, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        self.streams.push(Stream {
            id: stream,
            recv_open: !end_stream,
            send_open: true,
            head_sent: false,
            recv_window: self.config.initial_window_size,
            unreleased: 0,
            send_window: i64::from(self.peer_initial_window),
            content_length,
            received: 0,
            discard,
        });
        self.events.push_back(match head {
            Some(head) => Event::Request {
                stream,
                head,
                end_stream,
            },
            None => Event::RequestTooLarge { stream },
        });
        Ok(())
    }

    /// A second header block on an open stream: trailers (§8.1), which must end it.
    fn on_trailers(&mut self, index: usize, block: &Bytes, end_stream: bool) -> Result<()> {
        let mut builder = HeadBuilder::trailers();
        let decoded =
            self.decoder
                .decode(block, self.config.max_header_list_size as usize, |field| {
                    builder.field(field)
                });
        if let Err(DecodeError::Compression(why)) = decoded {
            return Err(fail(ErrorCode::COMPRESSION_ERROR, why));
        }
        let s = &self.streams[index];
        if !s.recv_open {
            return self.reset_index(index, ErrorCode::STREAM_CLOSED);
        }
        // Too large trailers are reset like malformed ones: there is no status to answer with.
        let length_ok = s.content_length.is_none_or(|n| n == s.received);
        if decoded.is_err() || !end_stream || !length_ok {
            return self.reset_index(index, ErrorCode::PROTOCOL_ERROR);
        }
        let (stream, discard) = (s.id, s.discard);
        if !discard {
            self.events.push_back(Event::Trailers {
                stream,
                headers: builder.into_trailers(),
            });
        }
        self.close_recv(index);
        Ok(())
    }

    /// Decodes a block nobody will read, to keep HPACK's state in step with the client's.
    fn decode_ignored(&mut self, block: &Bytes) -> Result<()> {
        match self
            .decoder
            .decode(block, self.config.max_header_list_size as usize, |_| Ok(()))
        {
            Err(DecodeError::Compression(why)) => Err(fail(ErrorCode::COMPRESSION_ERROR, why)),
            _ => Ok(()),
        }
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        data: Bytes,
        end_stream: bool,
        flow_len: u32,
    ) -> Result<()> {
        if flow_len == 0 && !end_stream {
            self.empty_frames += 1;
            if self.empty_frames > MAX_EMPTY_FRAMES {
                return Err(fail(ErrorCode::ENHANCE_YOUR_CALM, "empty DATA flood"));
            }
        } else {
            self.empty_frames = 0;
        }
        if self.is_idle(stream) {
            return Err(fail(ErrorCode::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        if flow_len > self.recv_window {
            return Err(fail(
                ErrorCode::FLOW_CONTROL_ERROR,
                "connection window exceeded",
            ));
        }
        self.recv_window -= flow_len;
        let Some(index) = self.position(stream) else {
            // Closed: the flow-controlled bytes are ours to release (§6.9).
            self.release_connection(flow_len);
            if !self.recent_resets.contains(&stream) {
                self.send_reset(stream, ErrorCode::STREAM_CLOSED);
            }
            return Ok(());
        };
        let s = &mut self.streams[index];
        if !s.recv_open || flow_len > s.recv_window {
            let code = if s.recv_open {
                ErrorCode::FLOW_CONTROL_ERROR
            } else {
                ErrorCode::STREAM_CLOSED
            };
            self.release_connection(flow_len);
            return self.reset_index(index, code);
        }
        s.recv_window -= flow_len;
        s.received += data.len() as u64;
        let length_ok = match s.content_length {
            Some(n) if end_stream => s.received == n,
            Some(n) => s.received <= n,
            None => true,
        };
        // Padding is ours to release, the data the application's unless it is dropped.
        let (delivered, discard) = (data.len() as u32, s.discard);
        let ours = if discard {
            flow_len
        } else {
            flow_len - delivered
        };
        if !length_ok {
            self.release_connection(flow_len);
            return self.reset_index(index, ErrorCode::PROTOCOL_ERROR);
        }
        // The stream's window matters no more once the client has ended it.
        if end_stream {
            self.release_connection(ours);
        } else if ours > 0 {
            self.release(stream, ours);
        }
        if !discard {
            self.events.push_back(Event::Data {
                stream,
                data,
                end_stream,
            });
        }
        if end_stream {
            self.close_recv(index);
        }
        Ok(())
    }

    fn on_rst_stream(&mut self, stream: StreamId, code: ErrorCode) -> Result<()> {
        if self.is_idle(stream) {
            return Err(fail(
                ErrorCode::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(index) = self.position(stream) else {
            return Ok(());
        };
        let s = self.streams.swap_remove(index);
        self.events.push_back(Event::Reset { stream, code });
        if s.send_open {
            self.count_rapid_reset()?;
        }
        Ok(())
    }

    fn on_settings(&mut self, ack: bool, settings: &[Setting]) -> Result<()> {
        if ack {
            // Our settings are in force; the receive limits already assumed them, as they only
            // raise the defaults.
            return Ok(());
        }
        for setting in settings {
            match *setting {
                Setting::HeaderTableSize(size) => self.encoder.set_max_table_size(size as usize),
                Setting::InitialWindowSize(size) => {
                    let delta = i64::from(size) - i64::from(self.peer_initial_window);
                    self.peer_initial_window = size;
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                            return Err(fail(ErrorCode::FLOW_CONTROL_ERROR, "window overflow"));
                        }
                    }
                    if delta > 0 {
                        self.window_opened(StreamId::CONNECTION);
                    }
                }
                Setting::MaxFrameSize(size) => self.peer_max_frame_size = size,
                // Push is never used, MAX_CONCURRENT_STREAMS bounds pushed streams only, the
                // header list size is advisory, and CONNECT protocol is the server's to offer.
                Setting::EnablePush(_)
                | Setting::MaxConcurrentStreams(_)
                | Setting::MaxHeaderListSize(_)
                | Setting::EnableConnectProtocol(_) => {}
            }
        }
        frame::encode_settings_ack(&mut self.out);
        self.owe_ack()
    }

    fn on_window_update(&mut self, stream: StreamId, increment: u32) -> Result<()> {
        if stream.is_connection() {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
                return Err(fail(ErrorCode::FLOW_CONTROL_ERROR, "window overflow"));
            }
            self.window_opened(stream);
            return Ok(());
        }
        if self.is_idle(stream) {
            return Err(fail(
                ErrorCode::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(index) = self.position(stream) else {
            return Ok(());
        };
        let s = &mut self.streams[index];
        s.send_window += i64::from(increment);
        if s.send_window > i64::from(frame::MAX_WINDOW_SIZE) {
            return self.reset_index(index, ErrorCode::FLOW_CONTROL_ERROR);
        }
        if s.send_open {
            self.window_opened(stream);
        }
        Ok(())
    }

    /// A stream error found while decoding a frame (§5.4.2).
    fn stream_error(&mut self, stream: StreamId, code: ErrorCode) -> Result<()> {
        if self.is_idle(stream) {
            // No RST_STREAM on an idle stream (§5.1).
            return Err(fail(
                ErrorCode::PROTOCOL_ERROR,
                "invalid frame on an idle stream",
            ));
        }
        match self.position(stream) {
            Some(index) => self.reset_index(index, code),
            None => {
                self.send_reset(stream, code);
                Ok(())
            }
        }
    }

    /// Resets a stream the application knows, telling it. A stream still being answered
    /// counts as a rapid reset: a client can make us reset the streams it opens by breaking a
    /// rule on them as well as by resetting them itself ("MadeYouReset", CVE-2025-8671).
    fn reset_index(&mut self, index: usize, code: ErrorCode) -> Result<()> {
        let s = self.streams.swap_remove(index);
        self.send_reset(s.id, code);
        self.events.push_back(Event::Reset { stream: s.id, code });
        if s.send_open {
            self.count_rapid_reset()?;
        }
        Ok(())
    }

    /// Counts a stream the client opened and had reset before its response was complete.
    fn count_rapid_reset(&mut self) -> Result<()> {
        let now = Instant::now();
        let since = *self.rapid_reset_since.get_or_insert(now);
        if now.duration_since(since) > RAPID_RESET_WINDOW {
            self.rapid_reset_since = Some(now);
            self.rapid_resets = 0;
        }
        self.rapid_resets += 1;
        if self.rapid_resets >= RAPID_RESET_LIMIT {
            return Err(fail(ErrorCode::ENHANCE_YOUR_CALM, "rapid reset"));
        }
        Ok(())
    }

    /// Queues [`Event::WindowOpened`] unless the last event already says as much: a burst of
    /// WINDOW_UPDATE frames makes one event.
    fn window_opened(&mut self, stream: StreamId) {
        if let Some(Event::WindowOpened { stream: last }) = self.events.back() {
            if *last == stream || last.is_connection() {
                return;
            }
        }
        self.events.push_back(Event::WindowOpened { stream });
    }

    /// Queues RST_STREAM and tolerates the frames already in flight on the stream.
    fn send_reset(&mut self, stream: StreamId, code: ErrorCode) {
        frame::encode_rst_stream(&mut self.out, stream, code);
        if self.recent_resets.len() == RECENT_RESETS {
            self.recent_resets.pop_front();
        }
        self.recent_resets.push_back(stream);
    }

    fn close_recv(&mut self, index: usize) {
        let s = &mut self.streams[index];
        s.recv_open = false;
        if !s.send_open {
            self.streams.swap_remove(index);
        }
    }

    fn close_send(&mut self, index: usize) {
        let s = &mut self.streams[index];
        s.send_open = false;
        if !s.recv_open {
            self.streams.swap_remove(index);
        }
    }

    fn release_connection(&mut self, n: u32) {
        let target = self
            .config
            .connection_window_size
            .max(frame::DEFAULT_WINDOW_SIZE);
        if let Some(increment) = credit(&mut self.recv_window, &mut self.unreleased, target, n) {
            frame::encode_window_update(&mut self.out, StreamId::CONNECTION, increment);
        }
    }

    /// The application consumed `n` bytes of `stream`'s body: the windows reopen, a
    /// WINDOW_UPDATE going out once half of one is consumed. Call it for every byte of every
    /// [`Event::Data`], even once the stream is gone.
    pub(crate) fn release(&mut self, stream: StreamId, n: u32) {
        if n == 0 {
            return;
        }
        self.release_connection(n);
        let target = self.config.initial_window_size;
        let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) else {
            return;
        };
        if !s.recv_open {
            return;
        }
        if let Some(increment) = credit(&mut s.recv_window, &mut s.unreleased, target, n) {
            frame::encode_window_update(&mut self.out, stream, increment);
        }
    }

    /// The next event, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Everything to write to the socket since the last call.
    #[cfg(test)]
    pub(crate) fn take_output(&mut self) -> BytesMut {
        self.owed_acks = 0;
        self.out.split()
    }

    /// What is queued for the socket: write a prefix of it, then [`Conn::advance_output`].
    pub(crate) fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` octets of [`Conn::output`] were written. Once all of it is, the buffer starts over
    /// from its first octet: the next frames are written to the cache lines just used, not to
    /// the next ones along (a connection cycling through its whole buffer touches a cold line
    /// for each small response).
    pub(crate) fn advance_output(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.out, n);
        if self.out.is_empty() {
            self.owed_acks = 0;
            crate::net::rewind(&mut self.out);
        }
    }

    /// Gives back a header map the application is done with (a response's, once sent): the
    /// next request's head is decoded into it, reusing its allocation.
    pub(crate) fn recycle_headers(&mut self, map: HeaderMap) {
        self.spare_headers = Some(map);
    }

    /// Octets queued for the socket, not yet written.
    pub(crate) fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Streams open or half-closed, which count against the concurrency limit.
    pub(crate) fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// After [`Conn::go_away`]: every stream is done, the connection can close.
    pub(crate) fn is_drained(&self) -> bool {
        self.going_away && self.streams.is_empty()
    }
}

/// Adds `n` released octets to a receive window's `unreleased` count, never past what reopens
/// the window to its `target` size (so that an application releasing too much cannot make us
/// offer more than we meant, nor overflow); once half the target is released, moves it into
/// the window and gives the WINDOW_UPDATE increment: updates are batched.
fn credit(window: &mut u32, unreleased: &mut u32, target: u32, n: u32) -> Option<u32> {
    let room = target.saturating_sub(*window);
    *unreleased = unreleased.saturating_add(n).min(room);
    if *unreleased == 0 || *unreleased < target / 2 {
        return None;
    }
    *window += *unreleased;
    Some(std::mem::take(unreleased))
}

fn fail(code: ErrorCode, reason: &'static str) -> ConnError {
    ConnError { code, reason }
}

#[path = "conn_send.rs"]
mod send;
#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
