//! A request body read from an HTTP/2 stream, and the response head made fit for HTTP/2.

use crate::http::BoxError;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// A request body over an HTTP/2 stream: DATA frames as they come, each one's flow-control
/// capacity given back as it is handed on (so the client's window reopens as the request is
/// consumed, not as it is received), then the trailers.
pub(super) struct RequestBody {
    recv: ::h2::RecvStream,
    data_done: bool,
    /// What `content-length` announced and is not read yet (h2 checks the two agree).
    remaining: Option<u64>,
}

impl RequestBody {
    pub(super) fn new(recv: ::h2::RecvStream, content_length: Option<u64>) -> Self {
        RequestBody {
            recv,
            data_done: false,
            remaining: content_length,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = &mut *self;
        if !me.data_done {
            match ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    if let Some(n) = &mut me.remaining {
                        *n = n.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => me.data_done = true,
            }
        }
        match ready!(me.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
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
    if *name == header::DATE {
        DATE
    } else if *name == header::CONTENT_LENGTH {
        CONTENT_LENGTH
    } else if *name == header::CONNECTION {
        CONNECTION
    } else if *name == header::TRANSFER_ENCODING {
        TRANSFER_ENCODING
    } else if *name == header::UPGRADE {
        UPGRADE
    } else if *name == header::TE {
        TE
    } else {
        match name.as_str() {
            "keep-alive" => KEEP_ALIVE,
            "proxy-connection" => PROXY_CONNECTION,
            _ => 0,
        }
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
