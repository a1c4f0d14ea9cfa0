//! A request's decoded header block turned into `http::request::Parts`, or its trailers into a
//! `HeaderMap`, checked against RFC 9113 §8.1.1, §8.2 and §8.3 as the fields go by, so that a
//! malformed block stops the emitting early (HPACK still decodes it to its end).

use super::hpack::{DecodeError, Field, Pseudo};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};

/// Collects the fields of one header block, refusing a malformed one.
#[derive(Default)]
pub(crate) struct HeadBuilder {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
    headers: HeaderMap,
    /// A regular field was seen: pseudo-headers must all come before (§8.3).
    regular_seen: bool,
    /// Trailers carry no pseudo-header (§8.1).
    trailers: bool,
    content_length: Option<u64>,
}

/// A request head and what the connection checks against the body.
pub(crate) struct RequestHead {
    pub(crate) parts: http::request::Parts,
    /// The `content-length` value, matched against the DATA sum at END_STREAM (§8.1.1).
    pub(crate) content_length: Option<u64>,
}

fn malformed(why: &'static str) -> DecodeError {
    DecodeError::Malformed(why)
}

/// Room a request's header map is made with: a usual request's fields and the ones the proxy
/// adds on the way (`x-forwarded-*`, `x-request-id`, `x-envoy-*`, `host` for an HTTP/1.1
/// upstream), so that it does not grow, reallocating and rehashing, midway. An HTTP/1.1
/// request's map is sized from its count of fields (`h1::parse`); HPACK's block does not tell
/// the count.
const REQUEST_HEADERS: usize = 12;

impl HeadBuilder {
    /// A builder for a request head, into `spare` (an emptied map, whose allocation is
    /// reused) if there is one.
    pub(crate) fn request(spare: Option<HeaderMap>) -> HeadBuilder {
        let headers = match spare {
            Some(mut map) => {
                map.clear();
                map.reserve(REQUEST_HEADERS);
                map
            }
            None => HeaderMap::with_capacity(REQUEST_HEADERS),
        };
        HeadBuilder {
            headers,
            ..HeadBuilder::default()
        }
    }

    /// A builder for trailers: no pseudo-header allowed.
    pub(crate) fn trailers() -> HeadBuilder {
        HeadBuilder {
            trailers: true,
            ..HeadBuilder::default()
        }
    }

    /// Takes the next field, in block order.
    pub(crate) fn field(&mut self, field: Field) -> Result<(), DecodeError> {
        match field {
            Field::Pseudo(pseudo, value) => {
                if self.trailers {
                    return Err(malformed("pseudo-header in trailers"));
                }
                if self.regular_seen {
                    return Err(malformed("pseudo-header after a regular field"));
                }
                let slot = match pseudo {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Protocol => &mut self.protocol,
                    Pseudo::Status => return Err(malformed(":status in a request")),
                };
                if slot.replace(value).is_some() {
                    return Err(malformed("repeated pseudo-header"));
                }
            }
            Field::Header(name, value) => {
                self.regular_seen = true;
                if is_connection_specific(&name) {
                    return Err(malformed("connection-specific field"));
                }
                if name == header::TE && value != "trailers" {
                    return Err(malformed("te other than trailers"));
                }
                if name == header::CONTENT_LENGTH {
                    let length = parse_length(&value)?;
                    if self.content_length.is_some_and(|seen| seen != length) {
                        return Err(malformed("conflicting content-length"));
                    }
                    self.content_length = Some(length);
                }
                self.headers.append(name, value);
            }
        }
        Ok(())
    }

    /// The trailers collected.
    pub(crate) fn into_trailers(self) -> HeaderMap {
        self.headers
    }

    /// The request, once the block is complete; `connect_protocol` is whether we advertised
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3), without which `:protocol` is refused.
    pub(crate) fn into_request(self, connect_protocol: bool) -> Result<RequestHead, DecodeError> {
        let method = self.method.ok_or(malformed("no :method"))?;
        let method = Method::from_bytes(&method).map_err(|_| malformed("invalid :method"))?;
        let uri = if method == Method::CONNECT && self.protocol.is_none() {
            // Plain CONNECT (§8.5): `:authority` only.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(malformed("CONNECT with :scheme or :path"));
            }
            let authority = self
                .authority
                .ok_or(malformed("CONNECT without :authority"))?;
            let authority = Authority::from_maybe_shared(authority)
                .map_err(|_| malformed("invalid :authority"))?;
            Uri::from(authority)
        } else {
            if self.protocol.is_some() {
                // Extended CONNECT (RFC 8441 §4).
                if !connect_protocol {
                    return Err(malformed(":protocol not enabled"));
                }
                if method != Method::CONNECT {
                    return Err(malformed(":protocol without CONNECT"));
                }
                if self.authority.is_none() {
                    return Err(malformed("extended CONNECT without :authority"));
                }
            }
            let scheme = self.scheme.ok_or(malformed("no :scheme"))?;
            let path = self.path.ok_or(malformed("no :path"))?;
            // §8.3.1: origin-form, or `*` for a server-wide OPTIONS.
            let asterisk = &path[..] == b"*" && method == Method::OPTIONS;
            if path.first() != Some(&b'/') && !asterisk {
                return Err(malformed("empty or relative :path"));
            }
            // §8.3.1: without `:authority`, the Host header names the target, if any.
            let authority = self
                .authority
                .or_else(|| self.headers.get(header::HOST).map(host_bytes));
            // §8.3.1: no userinfo in an http or https authority.
            if authority.as_ref().is_some_and(|a| a.contains(&b'@')) {
                return Err(malformed("userinfo in :authority"));
            }
            build_uri(&scheme, authority, path)?
        };
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers = self.headers;
        Ok(RequestHead {
            parts,
            content_length: self.content_length,
        })
    }
}

fn host_bytes(value: &HeaderValue) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// `scheme://authority/path`, or origin-form `path` when there is no authority to name.
fn build_uri(scheme: &[u8], authority: Option<Bytes>, path: Bytes) -> Result<Uri, DecodeError> {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(path).map_err(|_| malformed("invalid :path"))?);
    if let Some(authority) = authority {
        parts.scheme = Some(Scheme::try_from(scheme).map_err(|_| malformed("invalid :scheme"))?);
        parts.authority = Some(
            Authority::from_maybe_shared(authority).map_err(|_| malformed("invalid :authority"))?,
        );
    }
    Uri::from_parts(parts).map_err(|_| malformed("invalid request target"))
}

/// Fields that HTTP/2 forbids (§8.2.2): their job belongs to the connection.
fn is_connection_specific(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// A `content-length` value: digits only (RFC 9110 §8.6).
fn parse_length(value: &HeaderValue) -> Result<u64, DecodeError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(malformed("invalid content-length"));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(malformed("invalid content-length"))
}
