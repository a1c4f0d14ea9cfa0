//! A response head read with `httparse` into the `http::Response` hyper's HTTP/1.1 client makes
//! of it (`Client::parse` and `Client::decoder` in hyper's `proto/h1/role.rs`, with its default
//! parser settings): the same status, version, headers and reason phrase, the same framing
//! decision, and the same errors for what it refuses (obsolete line folding, invalid names,
//! differing `Content-Length`s, `Transfer-Encoding` in HTTP/1.0, ...).

use super::Error;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use std::mem::MaybeUninit;
use std::ops::Range;

/// hyper's default limit on a head's header count.
const MAX_HEADERS: usize = 100;
/// hyper's default read buffer limit: a head not complete within it is refused.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (none: no body).
    Length(u64),
    /// Chunked.
    Chunked,
    /// Up to the connection's close.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// The response, bodiless.
    pub response: http::Response<()>,
    /// Its body's framing.
    pub framing: Framing,
    /// Whether the connection may carry another request after it (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `keep-alive`).
    pub keep_alive: bool,
    /// A `101`: the connection is the upgrade's now.
    pub upgrade: bool,
}

fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Response headers the proxy typically adds before the response goes downstream.
const ADDED_ON_THE_WAY: usize = 4;

/// Parses the response to a `method` request at the start of `buf`, skipping informational
/// (1xx but 101) responses before it as hyper does; Ok(None) until a whole head is in. The head
/// is taken from the buffer; what follows stays. Its headers go into `headers` (an emptied map
/// whose allocation is reused, as hyper reuses the request's, or a new one).
pub fn parse(
    buf: &mut BytesMut,
    method: &Method,
    headers: &mut Option<http::HeaderMap>,
) -> Result<Option<Head>, Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut uninit = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let bytes: &[u8] = buf;
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            bytes,
            &mut uninit,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(Error::new("message head is too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(parse_error(e)),
        };
        let code = res.code.expect("httparse sets the code of a complete head");
        let status = StatusCode::from_u16(code)
            .map_err(|_| Error::new("invalid HTTP status-code parsed"))?;
        let reason = res
            .reason
            .expect("httparse sets the reason of a complete head");
        let reason =
            (Some(reason) != status.canonical_reason()).then(|| range_in(bytes, reason.as_bytes()));
        let version = if res.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let indices: smallvec::SmallVec<[(Range<usize>, Range<usize>); 24]> = res
            .headers
            .iter()
            .map(|h| (range_in(bytes, h.name.as_bytes()), range_in(bytes, h.value)))
            .collect();
        let head = buf.split_to(len).freeze();
        let mut keep_alive = version == Version::HTTP_11;
        let mut saw_close = false;
        // The framing headers, noted on the way (not looked up again in the map).
        let mut chunked = None;
        let mut length = Length::Absent;
        let mut map = headers.take().unwrap_or_default();
        // Room for what the router and the connection manager add on the way down
        // (`x-envoy-upstream-service-time`, `server`, a route's response headers): growing the
        // map later copies every entry already in it.
        map.reserve(indices.len() + ADDED_ON_THE_WAY);
        for (name, value) in indices {
            // hyper's parser refuses a name `HeaderName` does not take (in release builds).
            let name = HeaderName::from_bytes(&head[name]).map_err(|_| {
                Error::new("internal error inside Hyper and/or its dependencies, please report")
            })?;
            // SAFETY: httparse accepted these bytes as a field value: its `HEADER_VALUE_MAP`
            // (tab, 0x20-0x7e, 0x80-0xff) is exactly the set `HeaderValue` allows (hyper's
            // client takes the same path).
            let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(value)) };
            if name == header::CONNECTION {
                if saw_close || has_token(&value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(&value, "keep-alive");
                }
            } else if name == header::CONTENT_LENGTH {
                length = length.and(&value);
            } else if name == header::TRANSFER_ENCODING {
                // The last value decides (hyper's `is_chunked`).
                chunked = Some(super::encode::is_chunked(&value));
            }
            map.append(name, value);
        }
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        if let Some(r) = reason {
            if let Ok(r) = hyper::ext::ReasonPhrase::try_from(head.slice(r)) {
                response.extensions_mut().insert(r);
            }
        }
        if let Some((framing, upgrade)) = framing(&response, method, chunked, length)? {
            return Ok(Some(Head {
                response,
                framing,
                keep_alive: keep_alive && !upgrade,
                upgrade,
            }));
        }
        // An informational response, dropped (hyper's client without `on_informational`).
        let _: Bytes = head;
    }
}

/// hyper's mapping of httparse's errors.
fn parse_error(e: httparse::Error) -> Error {
    Error::new(match e {
        httparse::Error::Status => "invalid HTTP status-code parsed",
        httparse::Error::TooManyHeaders => "message head is too large",
        httparse::Error::Version => "invalid HTTP version parsed",
        _ => "invalid HTTP header parsed",
    })
}

/// hyper's `Client::decoder` (RFC 9112 section 6.3): the framing and whether it is an upgrade;
/// None for an informational response.
/// `chunked`: whether the last `Transfer-Encoding` ends in `chunked` (None: no such header).
fn framing(
    res: &http::Response<()>,
    method: &Method,
    chunked: Option<bool>,
    length: Length,
) -> Result<Option<(Framing, bool)>, Error> {
    match res.status().as_u16() {
        101 => return Ok(Some((Framing::Length(0), true))),
        100..=199 => return Ok(None),
        204 | 304 => return Ok(Some((Framing::Length(0), false))),
        _ => {}
    }
    if *method == Method::HEAD {
        return Ok(Some((Framing::Length(0), false)));
    }
    if *method == Method::CONNECT && res.status().is_success() {
        return Ok(Some((Framing::Length(0), true)));
    }
    if let Some(chunked) = chunked {
        if res.version() == Version::HTTP_10 {
            return Err(Error::new("unexpected transfer-encoding parsed"));
        }
        return Ok(Some((
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            },
            false,
        )));
    }
    match length {
        // hyper's `DecodedLength::checked_new`: its two top values are its markers.
        Length::Valid(n) if n > u64::MAX - 2 => Err(Error::new("message head is too large")),
        Length::Valid(n) => Ok(Some((Framing::Length(n), false))),
        Length::Invalid => Err(Error::new("invalid content-length parsed")),
        Length::Absent => Ok(Some((Framing::Close, false))),
    }
}

/// What a response's `Content-Length` fields say together (hyper's `content_length_parse_all`:
/// every value of every field, comma lists included, must be the same number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Absent,
    Valid(u64),
    Invalid,
}

impl Length {
    /// With one more field.
    fn and(self, value: &HeaderValue) -> Length {
        if self == Length::Invalid {
            return self;
        }
        let Ok(line) = value.to_str() else {
            return Length::Invalid;
        };
        let mut now = self;
        for v in line.split(',') {
            now = match (super::encode::from_digits(v.trim().as_bytes()), now) {
                (None, _) => return Length::Invalid,
                (Some(n), Length::Valid(l)) if l != n => return Length::Invalid,
                (Some(n), _) => Length::Valid(n),
            };
        }
        now
    }
}

/// Whether a comma-separated header value has `token` (hyper's `connection_has`).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
