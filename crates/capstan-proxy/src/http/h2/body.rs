//! A request body fed by the connection's task as DATA frames arrive, and the response head
//! made fit for HTTP/2.

use crate::http::BoxError;
use crate::http2::frame::{ErrorCode, StreamId};
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What request bodies consumed (or dropped unread) and the connection has not yet given back
/// to the client as flow-control window: a body may be read by another task (an upstream
/// connection's), so it is handed over under a lock and the connection's task woken.
#[derive(Default)]
pub(super) struct Releases {
    /// The connection's task.
    pub(super) task: AtomicWaker,
    /// Something is in `consumed`: the connection's task looks without taking the lock.
    any: AtomicBool,
    consumed: Mutex<Vec<(StreamId, u32)>>,
}

impl Releases {
    fn add(&self, stream: StreamId, n: usize) {
        if n == 0 {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        lock(&self.consumed).push((stream, n));
        self.any.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Takes what was consumed since the last call into `into` (emptied first).
    pub(super) fn take(&self, into: &mut Vec<(StreamId, u32)>) {
        into.clear();
        if self.any.swap(false, Ordering::AcqRel) {
            std::mem::swap(&mut *lock(&self.consumed), into);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one holds consistent state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request body between the connection's task, which feeds it, and its reader.
pub(super) struct Inbox {
    pub(super) stream: StreamId,
    state: Mutex<InboxState>,
    releases: Arc<Releases>,
}

#[derive(Default)]
struct InboxState {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The client ended the body (END_STREAM, or trailers).
    end: bool,
    /// The stream was reset before the body ended.
    reset: Option<ErrorCode>,
    /// The reader is gone: what arrives is released unread.
    dropped: bool,
    reader: Option<Waker>,
    /// What `content-length` announced and is not read yet (the connection checks the two
    /// agree).
    remaining: Option<u64>,
}

impl Inbox {
    pub(super) fn new(
        stream: StreamId,
        content_length: Option<u64>,
        releases: Arc<Releases>,
    ) -> Arc<Inbox> {
        Arc::new(Inbox {
            stream,
            state: Mutex::new(InboxState {
                remaining: content_length,
                ..InboxState::default()
            }),
            releases,
        })
    }

    /// Hands a DATA frame's payload to the reader; false if there is none any more (the caller
    /// then releases it at once).
    pub(super) fn push_data(&self, data: Bytes, end: bool) -> bool {
        let mut s = lock(&self.state);
        if s.dropped {
            return false;
        }
        if !data.is_empty() {
            s.chunks.push_back(data);
        }
        s.end |= end;
        wake(&mut s);
        true
    }

    /// The trailers, which end the body.
    pub(super) fn push_trailers(&self, trailers: HeaderMap) {
        let mut s = lock(&self.state);
        s.trailers = Some(trailers);
        s.end = true;
        wake(&mut s);
    }

    /// The stream was reset: the reader gets an error once it has read what arrived before.
    pub(super) fn reset(&self, code: ErrorCode) {
        let mut s = lock(&self.state);
        if !s.end {
            s.reset = Some(code);
        }
        wake(&mut s);
    }
}

fn wake(s: &mut InboxState) {
    if let Some(w) = s.reader.take() {
        w.wake();
    }
}

/// The stream was reset before its request body ended.
#[derive(Debug)]
pub(super) struct StreamReset(pub(super) ErrorCode);

impl std::fmt::Display for StreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http/2 stream reset: {}", self.0)
    }
}

impl std::error::Error for StreamReset {}

/// A request body over an HTTP/2 stream: DATA frames as they come, each one's flow-control
/// window given back as it is handed on (so the client's window reopens as the request is
/// consumed, not as it is received), then the trailers.
pub(super) struct RequestBody(pub(super) Arc<Inbox>);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let inbox = &self.0;
        let mut s = lock(&inbox.state);
        if let Some(data) = s.chunks.pop_front() {
            if let Some(n) = &mut s.remaining {
                *n = n.saturating_sub(data.len() as u64);
            }
            drop(s);
            inbox.releases.add(inbox.stream, data.len());
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if s.end {
            return Poll::Ready(None);
        }
        if let Some(code) = s.reset {
            return Poll::Ready(Some(Err(Box::new(StreamReset(code)))));
        }
        if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.0.state);
        s.end && s.chunks.is_empty() && s.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.0.state).remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let unread = {
            let mut s = lock(&self.0.state);
            s.dropped = true;
            s.reader = None;
            std::mem::take(&mut s.chunks)
        };
        let n: usize = unread.iter().map(Bytes::len).sum();
        self.0.releases.add(self.0.stream, n);
    }
}

/// The `content-length` a request announces, if it is one number.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// The headers of an HTTP/1 hop HTTP/2 forbids in a message (RFC 9113 §8.2.2), one bit each;
/// `te` is allowed as `trailers` only.
const CONNECTION: u8 = 1;
const KEEP_ALIVE: u8 = 2;
const PROXY_CONNECTION: u8 = 4;
const TRANSFER_ENCODING: u8 = 8;
const UPGRADE: u8 = 16;
const TE: u8 = 32;
const HOP_BY_HOP: u8 =
    CONNECTION | KEEP_ALIVE | PROXY_CONNECTION | TRANSFER_ENCODING | UPGRADE | TE;
/// Not forbidden, but the pass notes them for the caller.
const DATE: u8 = 64;
const CONTENT_LENGTH: u8 = 128;

fn classify(name: &HeaderName) -> u8 {
    // By length first: most names are none of these, and are told so by one comparison.
    let s = name.as_str();
    match s.len() {
        2 if s == "te" => TE,
        4 if s == "date" => DATE,
        7 if s == "upgrade" => UPGRADE,
        10 if s == "connection" => CONNECTION,
        10 if s == "keep-alive" => KEEP_ALIVE,
        14 if s == "content-length" => CONTENT_LENGTH,
        16 if s == "proxy-connection" => PROXY_CONNECTION,
        17 if s == "transfer-encoding" => TRANSFER_ENCODING,
        _ => 0,
    }
}

/// Which of `date` and `content-length` a response head has.
pub(super) struct Present {
    pub(super) date: bool,
    pub(super) content_length: bool,
}

/// Removes the headers of an HTTP/1 hop an HTTP/2 response may not carry (h2 refuses to send
/// them): `connection` and the headers it names, `keep-alive`, `proxy-connection`,
/// `transfer-encoding`, `upgrade`, and `te` unless it is `trailers`. One pass over the names
/// finds which are there; only those are looked up again (a response from an HTTP/2 upstream
/// or a local reply has none; an HTTP/1.1 upstream's usually has `connection` alone). The same
/// pass tells whether `date` and `content-length` are there.
pub(super) fn strip_connection_headers(headers: &mut HeaderMap) -> Present {
    let found = headers.keys().fold(0, |f, k| f | classify(k));
    let mut present = Present {
        date: found & DATE != 0,
        content_length: found & CONTENT_LENGTH != 0,
    };
    if found & HOP_BY_HOP == 0 {
        return present;
    }
    if found & CONNECTION != 0 {
        // Every `connection` line names headers (RFC 9110 §7.6.1), and `remove` returns the
        // first line only: the lines after it are read first (a clone of a value is a count on
        // shared bytes), then the first is taken out with them. A response has one line as a
        // rule, which is then looked up once more and not cloned.
        let mut line = 1;
        while let Some(named) = headers
            .get_all(header::CONNECTION)
            .iter()
            .nth(line)
            .cloned()
        {
            line += 1;
            remove_named(headers, &named, &mut present);
        }
        if let Some(named) = headers.remove(header::CONNECTION) {
            remove_named(headers, &named, &mut present);
        }
    }
    if found & KEEP_ALIVE != 0 {
        headers.remove("keep-alive");
    }
    if found & PROXY_CONNECTION != 0 {
        headers.remove("proxy-connection");
    }
    if found & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found & UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
    if found & TE != 0
        && headers
            .get(header::TE)
            .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
    present
}

/// Removes the headers a `connection` value names, and notes when `date` or `content-length`
/// is one of them.
fn remove_named(headers: &mut HeaderMap, named: &HeaderValue, present: &mut Present) {
    for name in named.to_str().unwrap_or("").split(',') {
        let name = name.trim();
        // The usual tokens: a header already handled, or none at all.
        if name.eq_ignore_ascii_case("keep-alive")
            || name.eq_ignore_ascii_case("close")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("connection")
            || name.is_empty()
        {
            continue;
        }
        if headers.remove(name).is_some() {
            present.date &= !name.eq_ignore_ascii_case("date");
            present.content_length &= !name.eq_ignore_ascii_case("content-length");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_specific_headers_are_stripped() {
        for (input, want) in [
            (
                &[("content-type", "text/plain"), ("x-a", "1")][..],
                &[("content-type", "text/plain"), ("x-a", "1")][..],
            ),
            (
                &[
                    ("connection", "keep-alive, x-hop, close"),
                    ("keep-alive", "timeout=5"),
                    ("x-hop", "1"),
                    ("x-end", "2"),
                ][..],
                &[("x-end", "2")][..],
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "websocket"),
                    ("proxy-connection", "keep-alive"),
                    ("te", "trailers"),
                ][..],
                &[("te", "trailers")][..],
            ),
            (&[("te", "gzip"), ("x-a", "1")][..], &[("x-a", "1")][..]),
            (
                &[("connection", "Upgrade"), ("upgrade", "h2c"), ("x-a", "1")][..],
                &[("x-a", "1")][..],
            ),
            (
                &[("connection", "te"), ("te", "trailers"), ("x-a", "1")][..],
                &[("x-a", "1")][..],
            ),
            // Every line names headers, not only the first.
            (
                &[
                    ("connection", "keep-alive"),
                    ("connection", "x-a, x-b"),
                    ("connection", "x-c"),
                    ("x-a", "1"),
                    ("x-b", "2"),
                    ("x-c", "3"),
                    ("x-end", "4"),
                ][..],
                &[("x-end", "4")][..],
            ),
            // A line naming `connection` itself does not hide the others' names.
            (
                &[
                    ("connection", "x-a"),
                    ("connection", "connection, x-b"),
                    ("x-a", "1"),
                    ("x-b", "2"),
                    ("x-end", "3"),
                ][..],
                &[("x-end", "3")][..],
            ),
        ] {
            let mut h = map(input);
            let present = strip_connection_headers(&mut h);
            assert_eq!(h, map(want), "{input:?}");
            assert!(!present.date && !present.content_length, "{input:?}");
        }
    }

    #[test]
    fn date_and_content_length_are_noted() {
        for (input, date, length) in [
            (&[("date", "x"), ("content-length", "1")][..], true, true),
            (&[("date", "x"), ("connection", "close")][..], true, false),
            (
                &[("content-length", "1"), ("upgrade", "x")][..],
                false,
                true,
            ),
            (&[("x-a", "1")][..], false, false),
            // Named by `connection`: removed, so absent.
            (
                &[
                    ("date", "x"),
                    ("connection", "Date"),
                    ("content-length", "1"),
                ][..],
                false,
                true,
            ),
            (
                &[
                    ("date", "x"),
                    ("content-length", "1"),
                    ("connection", "close"),
                    ("connection", "x-a, content-length"),
                ][..],
                true,
                false,
            ),
        ] {
            let present = strip_connection_headers(&mut map(input));
            assert_eq!(
                (present.date, present.content_length),
                (date, length),
                "{input:?}"
            );
        }
    }

    #[test]
    fn content_length_is_one_number() {
        for (input, want) in [
            (&[("content-length", "42")][..], Some(42)),
            (&[][..], None),
            (&[("content-length", "x")][..], None),
            (
                &[("content-length", "1"), ("content-length", "1")][..],
                None,
            ),
        ] {
            assert_eq!(content_length(&map(input)), want, "{input:?}");
        }
    }
}
