//! One upstream HTTP/1.1 connection driven by the plain codec: the request written, the
//! response head and body read, all by the task holding the connection (no task of its own,
//! as with hyper's connections in the pool); while idle in the pool, the connection's read
//! readiness wakes the pool's idle watcher instead.

use super::decode::{Decoder, Step};
use super::encode::{encode_head, BodyEncoder, BodyLength};
use super::parse::{parse, Head};
use super::Error;
use crate::cluster::Outgoing;
use crate::http::BoxBody;
use bytes::{Bytes, BytesMut};
use http::{Method, Version};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much the read buffer grows by (hyper's initial read size).
const READ_SIZE: usize = 8192;

/// An HTTP/1.1 client connection over `T`.
pub struct Connection<T> {
    io: T,
    read: BytesMut,
    write: Vec<u8>,
    written: usize,
    /// Bytes were written and not flushed yet (TLS keeps them until flushed).
    unflushed: bool,
    /// The request body still being sent.
    body: Option<BoxBody>,
    encoder: BodyEncoder,
    /// The request's method (the response's framing depends on it).
    method: Method,
    /// Whether it may carry another request once this exchange has ended.
    keep_alive: bool,
    /// The last request's emptied header map, for the response's headers.
    headers: Option<http::HeaderMap>,
    /// The waker an idle connection's read readiness wakes.
    idle: Arc<IdleWake>,
}

/// Wakes the pool's idle watcher for a pooled connection that became readable (the peer
/// closed it, or sent something unasked).
struct IdleWake {
    stirred: AtomicBool,
    watcher: Arc<tokio::sync::Notify>,
}

impl std::task::Wake for IdleWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.stirred.store(true, Ordering::Release);
        self.watcher.notify_one();
    }
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.read.len())
            .field("buffered_out", &(self.write.len() - self.written))
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// A connection over `io`; `watcher` is notified when it is woken while idle.
    pub fn new(io: T, watcher: Arc<tokio::sync::Notify>) -> Connection<T> {
        Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            written: 0,
            unflushed: false,
            body: None,
            encoder: BodyEncoder::Length(0),
            method: Method::GET,
            keep_alive: true,
            headers: None,
            idle: Arc::new(IdleWake {
                stirred: AtomicBool::new(false),
                watcher,
            }),
        }
    }

    /// The socket, for hyper to take over (an idle connection: nothing buffered).
    pub fn into_io(self) -> T {
        self.io
    }

    /// Starts sending the request (which [`super::takes`]): its head is encoded, the framing
    /// headers amended in the lent head; it and the body go out as the response is polled.
    /// The head's emptied header map is kept for the response's headers unless the caller
    /// keeps the head.
    pub fn start(&mut self, out: Outgoing<'_>) {
        let Outgoing { head, body, keep } = out;
        let length = BodyLength::of(&body);
        // hyper's client: a request's `Connection: close` retires the connection whatever the
        // response says.
        if head
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            })
        {
            self.keep_alive = false;
        }
        self.encoder = encode_head(
            &head.method,
            &head.uri,
            &mut head.headers,
            length,
            &mut self.write,
        );
        self.body = (!self.encoder.is_done()).then_some(body);
        self.method.clone_from(&head.method);
        if !keep {
            let mut headers = std::mem::take(&mut head.headers);
            headers.clear();
            self.headers = Some(headers);
        }
    }

    /// Whether the request is still being written (or flushed).
    pub fn sending(&self) -> bool {
        self.body.is_some() || self.written < self.write.len() || self.unflushed
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(|e| {
                self.keep_alive = false;
                Error::with("connection error", e)
            })?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is buffered, then the request body, until it is all written.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while self.written < self.write.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]))
                    .map_err(|e| {
                        self.keep_alive = false;
                        Error::with("connection error", e)
                    })?;
                if n == 0 {
                    self.keep_alive = false;
                    return Poll::Ready(Err(Error::with(
                        "connection error",
                        std::io::Error::from(std::io::ErrorKind::WriteZero),
                    )));
                }
                self.written += n;
                self.unflushed = true;
            }
            self.write.clear();
            self.written = 0;
            let Some(body) = self.body.as_mut() else {
                return self.poll_flush(cx);
            };
            if self.encoder.is_done() {
                // A `Content-Length` body sent whole: the rest is not sent (as hyper).
                self.body = None;
                continue;
            }
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    ready!(self.poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.body = None;
                    if let Err(e) = self.encoder.end(&mut self.write) {
                        self.keep_alive = false;
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not sent (see `BodyEncoder::end`).
                    if let Ok(data) = frame.into_data() {
                        self.encoder.data(&data, &mut self.write);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.body = None;
                    self.keep_alive = false;
                    return Poll::Ready(Err(Error::with("error from user's Body stream", e)));
                }
            }
        }
    }

    /// Reads more into the buffer: the count read, 0 at the peer's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        let spare = self.read.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity (ReadBuf's
        // filled part), right after the buffer's current end.
        unsafe { self.read.set_len(self.read.len() + n) };
        if n == 0 {
            self.keep_alive = false;
        }
        Poll::Ready(Ok(n))
    }

    /// Sends the request while waiting for the response head; None-free: an error when the
    /// connection fails or closes first.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, Error>> {
        loop {
            if self.sending() {
                if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if let Some(head) =
                parse(&mut self.read, &self.method, &mut self.headers).inspect_err(|_| {
                    self.keep_alive = false;
                })?
            {
                // An HTTP/1.0 peer would need the next request in HTTP/1.0 (hyper downgrades
                // it); the connection is retired instead.
                if !head.keep_alive || head.response.version() == Version::HTTP_10 {
                    self.keep_alive = false;
                }
                return Poll::Ready(Ok(head));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(Error::incomplete())),
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Poll::Ready(Err(Error::with("connection error", e)));
                }
            }
        }
    }

    /// The response body's next frame, read with `decoder` (the request still being sent
    /// meanwhile); None at its end.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Decoder,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if self.sending() {
                if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match decoder.decode(&mut self.read) {
                Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(match decoder.eof() {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    })
                }
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(Error::body(e))));
                }
            }
        }
    }

    /// Whether the connection can carry another request now that its response has ended:
    /// kept alive, the request all sent, and nothing read past the response (bytes no request
    /// asked for end it, as hyper ends it).
    pub fn reusable(&self) -> bool {
        self.keep_alive && !self.sending() && self.read.is_empty()
    }

    /// Whether the peer has closed it or sent something unasked, seen without waiting (a
    /// reused connection is checked before a request is written on it).
    pub fn closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_ready()
    }

    /// The connection goes idle: its read readiness now wakes the idle watcher. False when it
    /// is already closed (or has unasked bytes).
    pub fn watch(&mut self) -> bool {
        self.idle.stirred.store(false, Ordering::Release);
        let waker = Waker::from(self.idle.clone());
        let mut cx = Context::from_waker(&waker);
        self.poll_fill(&mut cx).is_pending()
    }

    /// For the idle watcher: true when a woken idle connection turns out closed.
    pub fn reap(&mut self) -> bool {
        if !self.idle.stirred.swap(false, Ordering::AcqRel) {
            return false;
        }
        !self.watch()
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
