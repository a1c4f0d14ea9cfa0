//! A request's head written as hyper's HTTP/1.1 client writes it (`Client::encode` and
//! `Client::set_length` in hyper's `proto/h1/role.rs`): the request line, the headers in the
//! map's order with their names as stored (lower case), and the framing headers fixed up the
//! same way. Then the body's framing ([`BodyEncoder`]).

use bytes::{BufMut, Bytes};
use http::header::{self, Entry, HeaderMap, HeaderValue};
use http::Method;

/// What is known of a body before it is sent (hyper's `BodyLength`), as the downstream codec
/// asks it.
pub use crate::http::h1::encode::BodyLength;

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoder {
    /// This many bytes still to send (none: nothing, or all sent).
    Length(u64),
    /// Chunked.
    Chunked,
}

/// Writes the head of an HTTP/1.1 request to `dst` (its headers are taken), given its body's
/// length (None: no body); returns how the body is framed.
pub fn encode_head(
    method: &Method,
    uri: &http::Uri,
    headers: &mut HeaderMap,
    body: Option<BodyLength>,
    dst: &mut Vec<u8>,
) -> BodyEncoder {
    let encoder = set_length(method, headers, body);
    dst.reserve(30 + headers.len() * 32);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    if uri.scheme().is_none() && uri.authority().is_none() {
        // Origin form: what `Uri`'s `Display` writes for it, without the formatter.
        dst.extend_from_slice(uri.path().as_bytes());
        if let Some(q) = uri.query() {
            dst.push(b'?');
            dst.extend_from_slice(q.as_bytes());
        }
    } else {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(dst, "{uri}");
    }
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter() {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    encoder
}

/// hyper's `Client::set_length` for HTTP/1.1: the user's framing headers are respected, a
/// `Transfer-Encoding` not ending in `chunked` gets it appended (and `Content-Length` goes),
/// a known length without headers gets `content-length`, an unknown one `transfer-encoding:
/// chunked` (except for `GET`, `HEAD`, `CONNECT`: no body).
fn set_length(method: &Method, headers: &mut HeaderMap, body: Option<BodyLength>) -> BodyEncoder {
    let Some(body) = body else {
        headers.remove(header::TRANSFER_ENCODING);
        return BodyEncoder::Length(0);
    };
    let existing = content_length_parse_all(headers);
    let mut remove_length = false;
    let encoder = match headers.entry(header::TRANSFER_ENCODING) {
        Entry::Occupied(mut te) => {
            remove_length = true;
            let chunked = te.iter().next_back().is_some_and(is_chunked);
            if !chunked {
                if let Some(last) = te.iter_mut().next_back() {
                    let mut v = Vec::with_capacity(last.len() + 9);
                    v.extend_from_slice(last.as_bytes());
                    v.extend_from_slice(b", chunked");
                    *last = HeaderValue::from_maybe_shared(Bytes::from(v))
                        .expect("a header value plus ASCII is a header value");
                }
            }
            Some(BodyEncoder::Chunked)
        }
        Entry::Vacant(te) => match (existing, body) {
            (Some(len), _) => Some(BodyEncoder::Length(len)),
            (None, BodyLength::Unknown) => {
                if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
                    Some(BodyEncoder::Length(0))
                } else {
                    te.insert(HeaderValue::from_static("chunked"));
                    remove_length = true;
                    Some(BodyEncoder::Chunked)
                }
            }
            (None, BodyLength::Known(_)) => None,
        },
    };
    match (encoder, body) {
        (Some(e), _) => {
            if remove_length {
                headers.remove(header::CONTENT_LENGTH);
            }
            e
        }
        (None, BodyLength::Known(len)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            BodyEncoder::Length(len)
        }
        (None, BodyLength::Unknown) => BodyEncoder::Chunked,
    }
}

/// Whether the last of a `Transfer-Encoding` value's codings is `chunked` (hyper's
/// `is_chunked_`).
pub fn is_chunked(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"))
}

/// The one length all `Content-Length` values (comma lists included) agree on, as hyper's
/// `content_length_parse_all`: None when absent, malformed or differing.
pub fn content_length_parse_all(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for h in headers.get_all(header::CONTENT_LENGTH) {
        for v in h.to_str().ok()?.split(',') {
            let n = from_digits(v.trim().as_bytes())?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// A non-empty run of decimal digits, without overflow (hyper's `from_digits`).
pub(super) fn from_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

impl BodyEncoder {
    /// Whether the body is all sent (or there is none).
    pub fn is_done(&self) -> bool {
        matches!(self, BodyEncoder::Length(0))
    }

    /// Frames a data chunk into `dst` (a `Content-Length` body past its length is cut there, as
    /// hyper cuts it). Empty chunks are skipped, as hyper's dispatcher skips them.
    pub fn data(&mut self, data: &[u8], dst: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        match self {
            BodyEncoder::Chunked => {
                use std::io::Write;
                // Writing to a Vec cannot fail.
                let _ = write!(dst, "{:X}\r\n", data.len());
                dst.extend_from_slice(data);
                dst.extend_from_slice(b"\r\n");
            }
            BodyEncoder::Length(remaining) => {
                let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                dst.put_slice(&data[..n]);
                *remaining -= n as u64;
            }
        }
    }

    /// Ends the body: the last chunk for a chunked body (trailers are dropped, as hyper drops
    /// those the request's `Trailer` header does not list, and [`super::takes`] leaves requests
    /// with one to hyper); an error when a `Content-Length` body ended short (hyper's "user
    /// body write aborted").
    pub fn end(&mut self, dst: &mut Vec<u8>) -> Result<(), super::Error> {
        match *self {
            BodyEncoder::Chunked => {
                dst.extend_from_slice(b"0\r\n\r\n");
                *self = BodyEncoder::Length(0);
                Ok(())
            }
            BodyEncoder::Length(0) => Ok(()),
            BodyEncoder::Length(_) => Err(super::Error::new("user body write aborted")),
        }
    }
}
