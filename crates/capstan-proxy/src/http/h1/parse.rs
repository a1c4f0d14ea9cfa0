//! A request head read for the fast path, with `httparse` (the parser hyper itself uses), into
//! the `http::Request` hyper would have made. Only the plain case is taken: an HTTP/1.1 request
//! that keeps its connection, is not `CONNECT`, asks for no upgrade, no `100-continue` and no
//! trailers, and whose body is absent or a `Content-Length` already in the buffer. Anything
//! else, malformed heads included, is left in the buffer for hyper's codec, which answers it as
//! it always did.

use super::encode::{has_token, parse_length};
use crate::http::{BoxBody, BoxError};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::BodyExt;
use smallvec::SmallVec;
use std::mem::MaybeUninit;
use std::ops::Range;

/// hyper's default limit on a request's header count.
const MAX_HEADERS: usize = 100;
/// hyper's limit on the request target (longer: 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// A plain request, taken from the buffer with its body, and whether it is a `HEAD`.
pub type Plain = (Request<BoxBody>, bool);

/// Why the buffer holds no plain request.
#[derive(Debug, PartialEq, Eq)]
pub enum NotPlain {
    /// Not a whole head yet.
    Partial,
    /// Something for hyper's codec; the buffer is as it was.
    Other,
}

struct Indices {
    name: Range<usize>,
    value: Range<usize>,
}

fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Request headers the proxy typically adds before the request goes upstream.
const ADDED_ON_THE_WAY: usize = 8;

/// Parses the request at the start of `buf`; its headers go into `headers` (an empty map
/// whose allocation is reused, or a new one).
pub fn parse(buf: &mut BytesMut, headers: &mut Option<HeaderMap>) -> Result<Plain, NotPlain> {
    let mut uninit = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let bytes: &[u8] = buf;
    let len = match req.parse_with_uninit_headers(bytes, &mut uninit) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(NotPlain::Partial),
        Err(_) => return Err(NotPlain::Other),
    };
    if req.version != Some(1) {
        return Err(NotPlain::Other);
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(NotPlain::Other);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(NotPlain::Other);
    };
    if method == Method::CONNECT || path.len() > MAX_URI_LEN {
        return Err(NotPlain::Other);
    }
    let path = range_in(bytes, path.as_bytes());
    // Filled where it lies: `collect` would build it elsewhere and copy all 24 slots over.
    let mut indices: SmallVec<[Indices; 24]> = SmallVec::new();
    indices.extend(req.headers.iter().map(|h| Indices {
        name: range_in(bytes, h.name.as_bytes()),
        value: range_in(bytes, h.value),
    }));
    let head = buf.split_to(len).freeze();
    let map = headers.take().unwrap_or_default();
    match build(&head, method, path, &indices, map, buf) {
        Some(r) => Ok(r),
        None => {
            // Put the head back for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Err(NotPlain::Other)
        }
    }
}

fn build(
    head: &Bytes,
    method: Method,
    path: Range<usize>,
    indices: &[Indices],
    mut headers: HeaderMap,
    rest: &mut BytesMut,
) -> Option<Plain> {
    let uri = http::Uri::from_maybe_shared(head.slice(path)).ok()?;
    headers.clear();
    // Room for what the connection manager and the router add on the way (x-forwarded-*,
    // x-request-id, x-envoy-*): growing the map later copies every entry already in it.
    headers.reserve(indices.len() + ADDED_ON_THE_WAY);
    let mut length = None;
    for h in indices {
        let name = HeaderName::from_bytes(&head[h.name.clone()]).ok()?;
        // SAFETY: httparse accepted these bytes as a field value: its `HEADER_VALUE_MAP`
        // (tab, 0x20-0x7e, 0x80-0xff) is exactly the set `HeaderValue` allows, so the check
        // `from_maybe_shared` would repeat cannot fail (hyper's server takes the same path).
        let value =
            unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(h.value.clone())) };
        match name {
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => return None,
            header::CONTENT_LENGTH => {
                if length.is_some() {
                    return None;
                }
                length = Some(parse_length(value.as_bytes())?);
            }
            header::CONNECTION if has_token(&value, "close") => return None,
            header::TE if has_token(&value, "trailers") => return None,
            _ => {}
        }
        headers.append(name, value);
    }
    let body = match length {
        None | Some(0) => http_body_util::Empty::new()
            .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
            .boxed(),
        Some(n) => {
            let n = usize::try_from(n).ok().filter(|n| *n <= rest.len())?;
            http_body_util::Full::new(rest.split_to(n).freeze())
                .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
                .boxed()
        }
    };
    let head_request = method == Method::HEAD;
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some((req, head_request))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
