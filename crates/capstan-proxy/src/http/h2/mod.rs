//! The downstream HTTP/2 server: our sans-I/O connection ([`crate::http2::conn`]) driven over
//! the socket by the connection's own task. Each stream's request runs as a future inside that
//! task (no task spawned per stream), its body fed by the DATA frames the task reads, its
//! response written by the task within the client's flow-control windows.
//!
//! Connections whose listener allows RFC 8441 extended CONNECT (`allow_connect`) stay on
//! hyper's server, whose upgrade (`hyper::upgrade::on`) carries those tunnels.
//!
//! The settings are the connection manager's `http2_protocol_options` (stream and connection
//! windows, concurrent streams, HPACK table), else those hyper's HTTP/2 server used for us
//! before (1 MiB windows, 200 concurrent streams); 16 KiB frames and a 16 KiB header list. As hyper did, a response gets a `date` header if it has none and a
//! `content-length` when its body's size is known.
//!
//! Memory is bounded by design, not by how fast the client reads: request bodies by the
//! receive windows (a body's window reopens only as its reader consumes it); what waits for
//! the socket by [`HIGH_WATER`] — past it, no more is read from the client and no response
//! body is polled until the socket takes what is queued; each response body is read at most
//! one chunk ahead of the client's window.

mod body;
mod slot;

use super::{BoxBody, Ctx};
use crate::http2::conn::{Conn, ConnConfig, Event};
use crate::http2::frame::{ErrorCode, StreamId};
use body::{Inbox, Releases, RequestBody};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use slot::FutureSlot;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Octets queued for the socket past which the connection stops reading requests and
/// polling response bodies until the socket has taken them.
const HIGH_WATER: usize = 128 * 1024;
/// Room made in the read buffer before each read: one largest frame and its header.
const READ_RESERVE: usize = 16 * 1024 + 9;
/// Rounds of reading, serving and writing in one poll of the task before it yields to the
/// others (and is woken again at once).
const MAX_ROUNDS: usize = 32;

/// The client connection preface's first line; enough of it, at the start of what the HTTP/1
/// codec read, says the client speaks HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether bytes read by the HTTP/1 codec before it handed the connection off begin HTTP/2's
/// connection preface. Too short to tell, the connection stays with hyper's codec, which reads on.
pub(super) fn starts_preface(read: &[u8]) -> bool {
    let n = read.len().min(PREFACE.len());
    n >= b"PRI * HTTP/2.0".len() && read[..n] == PREFACE[..n]
}

/// Serves one HTTP/2 connection, whose first bytes (`read`) were already read, until it
/// closes, or until its listener's drain: then GOAWAY, in-flight streams finish, and what
/// still runs when the drain window ends is cut.
pub(super) async fn serve<IO>(read: Bytes, io: IO, ctx: &Arc<Ctx>, drain: &mut crate::drain::Drain)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut server = Server::new(read, io, ctx, super::serve_request);
    let mut started = pin!(drain.started());
    let mut window_end: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let outcome = poll_fn(|cx| {
        if window_end.is_none() {
            if let Poll::Ready(end) = started.as_mut().poll(cx) {
                server.conn.go_away(ErrorCode::NO_ERROR);
                window_end = Some(Box::pin(tokio::time::sleep_until(end)));
            }
        }
        if let Some(end) = window_end.as_mut() {
            if end.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Closed::DrainWindow));
            }
        }
        server.poll(cx)
    })
    .await;
    match outcome {
        Ok(()) => {}
        Err(Closed::Io(e)) => tracing::debug!("http/2 connection: {e}"),
        Err(Closed::Protocol(e)) => tracing::debug!("http/2 connection: {e}"),
        Err(Closed::DrainWindow) => {
            tracing::debug!("http connection still busy at the end of the drain window: closed")
        }
    }
}

/// Why a connection ended other than by its natural end.
enum Closed {
    Io(io::Error),
    Protocol(crate::http2::conn::ConnError),
    DrainWindow,
}

/// A response body waiting for the client's window or for the socket: `pending` is what of its
/// last chunk is not sent yet, `end` whether that chunk ends the body.
struct Parked {
    stream: StreamId,
    body: BoxBody,
    pending: Bytes,
    end: bool,
}

struct Server<'a, IO, M, Fut> {
    io: IO,
    conn: Conn,
    ctx: &'a Arc<Ctx>,
    /// Makes a request's future: the connection manager's request path.
    serve: M,
    rbuf: BytesMut,
    /// The client closed its side, or the connection failed: nothing more is read.
    read_closed: bool,
    /// A connection error: once its GOAWAY is written, the connection closes.
    failed: Option<crate::http2::conn::ConnError>,
    /// The client sent GOAWAY: once its streams are done, the connection closes.
    peer_going_away: bool,
    /// The request served while it is the only one (see [`FutureSlot`]), and its stream.
    solo: FutureSlot<Fut>,
    solo_stream: Option<StreamId>,
    /// The others, each boxed where it is made: a request's future is moved as a pointer, not
    /// copied into the set's node.
    requests: FuturesUnordered<Cancellable<Pin<Box<Fut>>>>,
    bodies: FuturesUnordered<Cancellable<NextFrame>>,
    parked: Vec<Parked>,
    /// A window opened or the socket took what was queued: parked bodies may go on.
    unpark: bool,
    /// Request bodies still arriving.
    inboxes: Vec<Arc<Inbox>>,
    releases: Arc<Releases>,
    released: Vec<(StreamId, u32)>,
}

impl<'a, IO, M, Fut> Server<'a, IO, M, Fut>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    M: Fn(Arc<Ctx>, Request<BoxBody>) -> Fut,
    Fut: Future<Output = Response<BoxBody>>,
{
    fn new(read: Bytes, io: IO, ctx: &'a Arc<Ctx>, serve: M) -> Self {
        let mut rbuf = BytesMut::with_capacity(READ_RESERVE.max(read.len()));
        rbuf.extend_from_slice(&read);
        let mut server = Server {
            io,
            conn: Conn::new(conn_config(&ctx.hcm.http2)),
            ctx,
            serve,
            rbuf,
            read_closed: false,
            failed: None,
            peer_going_away: false,
            solo: FutureSlot::new(),
            solo_stream: None,
            requests: FuturesUnordered::new(),
            bodies: FuturesUnordered::new(),
            parked: Vec::new(),
            unpark: false,
            inboxes: Vec::new(),
            releases: Arc::default(),
            released: Vec::new(),
        };
        // What the HTTP/1 codec read before the hand-off.
        server.receive();
        server
    }

    /// Reads, serves and writes until nothing moves; `Ready` when the connection is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        self.releases.task.register(cx.waker());
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            if self.failed.is_none() && !self.read_closed && self.queued() < HIGH_WATER {
                match self.read(cx) {
                    Poll::Ready(Ok(0)) => {
                        // The client is gone: its streams with it.
                        self.read_closed = true;
                        moved = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        self.receive();
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Closed::Io(e))),
                    Poll::Pending => {}
                }
            }
            moved |= self.give_back();
            if let Some(stream) = self.solo_stream {
                // Polled whenever the task is, woken for it or not: a spurious poll of a
                // waiting request is cheaper than a waker of its own.
                if let Poll::Ready(resp) = self.solo.poll(cx) {
                    self.solo_stream = None;
                    moved = true;
                    self.respond(stream, resp, cx);
                }
            }
            while let Poll::Ready(Some((stream, resp))) = self.requests.poll_next_unpin(cx) {
                moved = true;
                if let Some(resp) = resp {
                    self.respond(stream, resp, cx);
                }
            }
            while let Poll::Ready(Some((stream, next))) = self.bodies.poll_next_unpin(cx) {
                moved = true;
                if let Some((body, frame)) = next {
                    self.on_body_frame(stream, body, frame, cx);
                }
            }
            if self.unpark {
                self.unpark = false;
                moved |= self.unpark_bodies(cx);
            }
            match self.write(cx) {
                Poll::Ready(Ok(true)) => moved = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Closed::Io(e))),
            }
            if self.read_closed && self.failed.is_none() {
                // Nothing can reach the client but what is already written.
                return Poll::Ready(Ok(()));
            }
            if self.finished() {
                if self.conn.output_len() > 0 {
                    return Poll::Pending;
                }
                return match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready(match self.failed {
                        Some(e) => Err(Closed::Protocol(e)),
                        None => Ok(()),
                    }),
                };
            }
            if !moved {
                return Poll::Pending;
            }
        }
        // Busy: let the other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Nothing more will happen on the connection: a connection error, a drain done, or the
    /// client's GOAWAY with its streams done.
    fn finished(&self) -> bool {
        self.failed.is_some()
            || ((self.conn.is_drained() || self.peer_going_away)
                && self.conn.active_streams() == 0
                && self.solo_stream.is_none()
                && self.requests.is_empty()
                && self.bodies.is_empty()
                && self.parked.is_empty())
    }

    fn queued(&self) -> usize {
        self.conn.output_len()
    }

    fn read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.is_empty() {
            crate::net::rewind(&mut self.rbuf);
        }
        self.rbuf.reserve(READ_RESERVE);
        let spare = self.rbuf.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        // SAFETY: `poll_read` initialized the first `n` octets of the spare capacity.
        unsafe { self.rbuf.set_len(self.rbuf.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// Writes what is queued until the socket would block; true if it took anything.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.conn.output_len() == 0 {
            return Poll::Ready(Ok(false));
        }
        let was_high = self.conn.output_len() >= HIGH_WATER;
        let mut wrote = false;
        while self.conn.output_len() > 0 {
            match Pin::new(&mut self.io).poll_write(cx, self.conn.output()) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.conn.advance_output(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if self.conn.output_len() == 0 {
            // TLS streams hold records until flushed.
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        }
        if wrote && (was_high || !self.parked.is_empty()) {
            self.unpark = true;
        }
        Poll::Ready(Ok(wrote))
    }

    /// Turns the octets read into events and handles them.
    fn receive(&mut self) {
        if let Err(e) = self.conn.recv(&mut self.rbuf) {
            self.fail(e);
        }
        while let Some(event) = self.conn.poll_event() {
            self.on_event(event);
        }
    }

    /// A connection error: every stream ends with it, the GOAWAY goes out, then the close.
    fn fail(&mut self, e: crate::http2::conn::ConnError) {
        self.failed = Some(e);
        self.solo.clear();
        self.solo_stream = None;
        self.requests.clear();
        self.bodies.clear();
        self.parked.clear();
        for inbox in self.inboxes.drain(..) {
            inbox.reset(e.code);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Request {
                stream,
                head,
                end_stream,
            } => {
                let body = if end_stream {
                    // Boxing a zero-sized body allocates nothing.
                    http_body_util::Empty::new()
                        .map_err(|e: std::convert::Infallible| -> super::BoxError { match e {} })
                        .boxed()
                } else {
                    let length = body::content_length(&head.headers);
                    let inbox = Inbox::new(stream, length, self.releases.clone());
                    self.inboxes.push(inbox.clone());
                    RequestBody(inbox).boxed()
                };
                let ctx = self.ctx.clone();
                let req = Request::from_parts(head, body);
                let serve = &self.serve;
                if self.solo_stream.is_none() {
                    self.solo.put(|| serve(ctx, req));
                    self.solo_stream = Some(stream);
                } else {
                    let fut = box_in_place(|| serve(ctx, req));
                    self.requests.push(Cancellable::new(stream, fut));
                }
            }
            Event::RequestTooLarge { stream } => {
                let mut headers = HeaderMap::new();
                headers.insert(header::DATE, super::h1::date::header_value());
                let _ = self.conn.send_headers(
                    stream,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    &headers,
                    true,
                );
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let n = data.len() as u32;
                let taken = match self.inboxes.iter().position(|i| i.stream == stream) {
                    Some(index) => {
                        let taken = self.inboxes[index].push_data(data, end_stream);
                        if end_stream {
                            self.inboxes.swap_remove(index);
                        }
                        taken
                    }
                    None => false,
                };
                if !taken {
                    self.conn.release(stream, n);
                    // Nobody reads the body and the response is complete: the client is
                    // told to stop sending it (RFC 9113 §8.1).
                    if !end_stream && !self.conn.can_send(stream) {
                        self.conn.reset(stream, ErrorCode::NO_ERROR);
                        self.inboxes.retain(|i| i.stream != stream);
                    }
                }
            }
            Event::Trailers { stream, headers } => {
                if let Some(index) = self.inboxes.iter().position(|i| i.stream == stream) {
                    self.inboxes.swap_remove(index).push_trailers(headers);
                }
            }
            Event::Reset { stream, code } => {
                tracing::debug!(stream = stream.0, %code, "http/2 stream reset");
                if let Some(index) = self.inboxes.iter().position(|i| i.stream == stream) {
                    self.inboxes.swap_remove(index).reset(code);
                }
                // The request's future (or its response body) is dropped: what it waits
                // for upstream is cancelled.
                if self.solo_stream == Some(stream) {
                    self.solo.clear();
                    self.solo_stream = None;
                } else if let Some(c) = self.requests.iter_mut().find(|c| c.stream == stream) {
                    c.cancel();
                }
                if let Some(c) = self.bodies.iter_mut().find(|c| c.stream == stream) {
                    c.cancel();
                }
                self.parked.retain(|p| p.stream != stream);
            }
            Event::GoAway { last_stream, code } => {
                tracing::debug!(last_stream = last_stream.0, %code, "http/2 client going away");
                self.peer_going_away = true;
            }
            Event::WindowOpened { .. } => self.unpark = true,
        }
    }

    /// Gives the client back the window of what request bodies consumed.
    fn give_back(&mut self) -> bool {
        self.releases.take(&mut self.released);
        for &(stream, n) in &self.released {
            self.conn.release(stream, n);
        }
        !self.released.is_empty()
    }

    /// Sends a response's head, and as much of its body as is ready and fits.
    fn respond(&mut self, stream: StreamId, resp: Response<BoxBody>, cx: &mut Context<'_>) {
        let (mut head, body) = resp.into_parts();
        let present = body::strip_connection_headers(&mut head.headers);
        if !present.date {
            head.headers
                .insert(header::DATE, super::h1::date::header_value());
        }
        let end = body.is_end_stream();
        if !end && !present.content_length {
            if let Some(n) = body.size_hint().exact() {
                head.headers.insert(header::CONTENT_LENGTH, n.into());
            }
        }
        let sent = self
            .conn
            .send_headers(stream, head.status, &head.headers, end);
        // The map's allocation serves the next request's head.
        self.conn.recycle_headers(head.headers);
        if let Err(e) = sent {
            tracing::debug!(stream = stream.0, "http/2 response head: {e:?}");
            return;
        }
        if !end {
            self.pump(stream, body, cx);
        }
    }

    /// Polls a response body and sends its frames while it has them ready and the windows and
    /// the socket have room; then leaves it waiting, for a frame or for room.
    fn pump(&mut self, stream: StreamId, mut body: BoxBody, cx: &mut Context<'_>) {
        if !self.conn.can_send(stream) {
            return;
        }
        if self.conn.send_capacity(stream) == 0 || self.queued() >= HIGH_WATER {
            self.parked.push(Parked {
                stream,
                body,
                pending: Bytes::new(),
                end: false,
            });
            return;
        }
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => self.on_body_frame(stream, body, frame, cx),
            Poll::Pending => self
                .bodies
                .push(Cancellable::new(stream, NextFrame(Some(body)))),
        }
    }

    fn on_body_frame(
        &mut self,
        stream: StreamId,
        body: BoxBody,
        frame: Option<Result<Frame<Bytes>, super::BoxError>>,
        cx: &mut Context<'_>,
    ) {
        let frame = match frame {
            None => {
                let _ = self.conn.send_data(stream, &[], true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(stream = stream.0, "http/2 response body: {e}");
                self.conn.reset(stream, ErrorCode::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                self.send_chunk(stream, body, data, end, cx);
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = self.conn.send_trailers(stream, &trailers);
                } else {
                    self.pump(stream, body, cx);
                }
            }
        }
    }

    /// Sends what of `data` the windows and the socket take; parks the body with the rest.
    fn send_chunk(
        &mut self,
        stream: StreamId,
        body: BoxBody,
        data: Bytes,
        end: bool,
        cx: &mut Context<'_>,
    ) {
        if data.is_empty() && !end {
            return self.pump(stream, body, cx);
        }
        let room = HIGH_WATER.saturating_sub(self.queued()).min(data.len());
        let sent = match self
            .conn
            .send_data(stream, &data[..room], end && room == data.len())
        {
            Ok(n) => n,
            // Reset meanwhile: the body is dropped.
            Err(_) => return,
        };
        if sent < data.len() {
            self.parked.push(Parked {
                stream,
                body,
                pending: data.slice(sent..),
                end,
            });
        } else if !end {
            self.pump(stream, body, cx);
        }
    }

    /// Sends on the parked bodies whose stream has a window again, while the socket has room.
    fn unpark_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let mut i = 0;
        while i < self.parked.len() && self.queued() < HIGH_WATER {
            let stream = self.parked[i].stream;
            if !self.conn.can_send(stream) {
                self.parked.swap_remove(i);
                continue;
            }
            if self.conn.send_capacity(stream) == 0 {
                i += 1;
                continue;
            }
            let p = self.parked.swap_remove(i);
            moved = true;
            if p.pending.is_empty() && !p.end {
                self.pump(p.stream, p.body, cx);
            } else {
                self.send_chunk(p.stream, p.body, p.pending, p.end, cx);
            }
        }
        moved
    }
}

/// The connection's settings from the connection manager's.
fn conn_config(h: &super::Http2Settings) -> ConnConfig {
    ConnConfig {
        initial_window_size: h.initial_stream_window_size,
        connection_window_size: h.initial_connection_window_size,
        max_concurrent_streams: h.max_concurrent_streams,
        header_table_size: h.hpack_table_size,
        ..ConnConfig::default()
    }
}

/// A stream's future that the connection can drop before it completes (the client reset the
/// stream): it then completes with `None` the next time the set polls it, which its waker,
/// woken on cancelling, makes happen at once.
struct Cancellable<F> {
    stream: StreamId,
    fut: Option<F>,
    waker: Option<Waker>,
}

impl<F> Cancellable<F> {
    fn new(stream: StreamId, fut: F) -> Self {
        Cancellable {
            stream,
            fut: Some(fut),
            waker: None,
        }
    }

    fn cancel(&mut self) {
        self.fut = None;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl<F: Future + Unpin> Future for Cancellable<F> {
    type Output = (StreamId, Option<F::Output>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = &mut *self;
        let Some(fut) = me.fut.as_mut() else {
            return Poll::Ready((me.stream, None));
        };
        match Pin::new(fut).poll(cx) {
            Poll::Ready(out) => {
                me.fut = None;
                Poll::Ready((me.stream, Some(out)))
            }
            Poll::Pending => {
                if !me.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    me.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// A response body's next frame, with the body.
struct NextFrame(Option<BoxBody>);

impl Future for NextFrame {
    type Output = (BoxBody, Option<Result<Frame<Bytes>, super::BoxError>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let body = self.0.as_mut().expect("NextFrame polled after completion");
        let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
        Poll::Ready((self.0.take().expect("taken once"), frame))
    }
}

/// Boxes the future `make` returns, built in its heap slot. `Box::pin(make())` builds it on the
/// stack and then copies all of it into the box: a request's future is some 6.7 KB, nearly all
/// of it space for later states, copied for every stream.
fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the slot was written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

#[cfg(test)]
mod tests;
