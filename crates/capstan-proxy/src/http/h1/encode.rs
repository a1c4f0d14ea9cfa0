//! A response head written as hyper's HTTP/1.1 server writes it (hyper 1.x `proto::h1::role`,
//! `Server::encode`, lower-case header names), and its body framed the same way, so a client
//! cannot tell which of the two codecs answered.

use super::date;
use http::header::{self, HeaderValue};
use http::{StatusCode, Version};

/// How long a message's body is, as hyper asks the body before writing the head (of a
/// response here, of a request in the upstream codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `size_hint().exact()`.
    Known(u64),
    /// A body of unknown length.
    Unknown,
}

impl BodyLength {
    /// What `body` says of its length before it is polled; None when it has ended already (no
    /// body at all).
    pub fn of<B: http_body::Body>(body: &B) -> Option<BodyLength> {
        (!body.is_end_stream()).then(|| {
            body.size_hint()
                .exact()
                .map_or(BodyLength::Unknown, BodyLength::Known)
        })
    }
}

/// How the body that follows the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes, then the message ends (0: no body at all).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 response of unknown length).
    CloseDelimited,
}

/// A head written: how its body is framed, and whether the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The body's framing.
    pub framing: Framing,
    /// The connection ends with this response.
    pub last: bool,
}

/// A response head hyper would refuse to write (it closes the connection instead).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// hyper's `Server::can_chunked` and `can_have_body`, for requests other than `CONNECT`.
fn can_have_body(head_request: bool, status: StatusCode) -> bool {
    !head_request
        && !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(status: StatusCode) -> bool {
    !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// Whether a comma-separated header value carries `token` (hyper's `connection_has`).
pub fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn is_chunked(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|s| {
        s.rsplit(',')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// ASCII digits only, as hyper's `content_length_parse`.
pub fn parse_length(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Writes the head of `resp` (an answer to an HTTP/1.1 request, `HEAD` or not) to `dst`.
/// `keep_alive` false (the listener drains) adds `connection: close`, as hyper's graceful
/// shutdown does. `body` is None for a body already at its end.
pub fn encode_head(
    dst: &mut Vec<u8>,
    resp: &mut http::response::Parts,
    body: Option<BodyLength>,
    head_request: bool,
    keep_alive: bool,
) -> Result<Head, Refused> {
    if !keep_alive {
        match resp.headers.entry(header::CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| has_token(v, "close")) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    let mut body = body;
    let mut refused = false;
    let mut is_last = !keep_alive;
    if resp.status == StatusCode::SWITCHING_PROTOCOLS {
        is_last = true;
    } else if resp.status.is_informational() {
        // hyper answers 500 in place of an informational response, then closes.
        resp.status = StatusCode::INTERNAL_SERVER_ERROR;
        resp.version = Version::HTTP_11;
        resp.headers.clear();
        body = None;
        refused = true;
        is_last = true;
    }
    let status = resp.status;
    let reason = resp.extensions.get::<hyper::ext::ReasonPhrase>();
    if resp.version == Version::HTTP_11 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if resp.version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let http10 = resp.version == Version::HTTP_10;
    let chunkable = !http10 && can_have_body(head_request, status);
    let mut framing = Framing::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut name_written = false;
    let mut must_write_chunked = false;
    let mut prev_len = None;
    let mut cur: Option<header::HeaderName> = None;
    // Ends a line left open for values joined with ", ".
    let close_line = |dst: &mut Vec<u8>, name_written: bool, must_write_chunked: bool| {
        if name_written {
            dst.extend_from_slice(if must_write_chunked {
                b", chunked\r\n"
            } else {
                b"\r\n"
            });
        }
    };
    // Drained, not consumed: the emptied map keeps its allocation for the next request's
    // headers (as hyper's `cached_headers`).
    for (name, value) in resp.headers.drain() {
        if let Some(n) = name {
            cur = Some(n);
            close_line(dst, name_written, must_write_chunked);
            name_written = false;
        }
        let Some(name) = cur.as_ref() else {
            continue;
        };
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_len && !name_written {
                    return Err(Refused);
                }
                match body {
                    Some(BodyLength::Known(len)) => {
                        if !name_written {
                            framing = Framing::Length(len);
                            dst.extend_from_slice(b"content-length: ");
                            dst.extend_from_slice(value.as_bytes());
                            wrote_len = true;
                            name_written = true;
                        }
                        continue;
                    }
                    Some(BodyLength::Unknown) => {
                        let Some(len) = parse_length(value.as_bytes()) else {
                            return Err(Refused);
                        };
                        match prev_len {
                            Some(prev) if prev != len => return Err(Refused),
                            Some(_) => continue,
                            None => {
                                framing = Framing::Length(len);
                                dst.extend_from_slice(b"content-length: ");
                                dst.extend_from_slice(value.as_bytes());
                                wrote_len = true;
                                name_written = true;
                                prev_len = Some(len);
                                continue;
                            }
                        }
                    }
                    None => {
                        if !head_request {
                            continue;
                        }
                    }
                }
                wrote_len = true;
            }
            header::TRANSFER_ENCODING => {
                if wrote_len && !name_written {
                    return Err(Refused);
                }
                if !chunkable {
                    continue;
                }
                wrote_len = true;
                must_write_chunked = !is_chunked(&value);
                if !name_written {
                    framing = Framing::Chunked;
                    name_written = true;
                    dst.extend_from_slice(b"transfer-encoding: ");
                } else {
                    dst.extend_from_slice(b", ");
                }
                dst.extend_from_slice(value.as_bytes());
                continue;
            }
            header::CONNECTION => {
                if !is_last && has_token(&value, "close") {
                    is_last = true;
                }
                if !name_written {
                    name_written = true;
                    dst.extend_from_slice(b"connection: ");
                } else {
                    dst.extend_from_slice(b", ");
                }
                dst.extend_from_slice(value.as_bytes());
                continue;
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if !chunkable {
                    continue;
                }
                if !name_written {
                    name_written = true;
                    dst.extend_from_slice(b"trailer: ");
                } else {
                    dst.extend_from_slice(b", ");
                }
                dst.extend_from_slice(value.as_bytes());
                continue;
            }
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    close_line(dst, name_written, must_write_chunked);
    if !wrote_len {
        framing = match body {
            Some(BodyLength::Unknown) => {
                if chunkable {
                    dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                } else {
                    // An HTTP/1.0 response (or one that has no body, cut to nothing below).
                    Framing::CloseDelimited
                }
            }
            None | Some(BodyLength::Known(0)) => {
                if can_have_content_length(status) && !head_request {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(BodyLength::Known(len)) => {
                if can_have_content_length(status) {
                    dst.extend_from_slice(b"content-length: ");
                    push_decimal(dst, len);
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(len)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !can_have_body(head_request, status) {
        framing = Framing::Length(0);
    }
    if framing == Framing::CloseDelimited {
        is_last = true;
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        date::extend(dst);
        dst.extend_from_slice(b"\r\n\r\n");
    } else {
        dst.extend_from_slice(b"\r\n");
    }
    if refused {
        // The 500 is written, then the connection ends.
        return Ok(Head {
            framing: Framing::Length(0),
            last: true,
        });
    }
    Ok(Head {
        framing,
        last: is_last,
    })
}

/// `n` in decimal ASCII (no formatting machinery: this is on every response's path).
fn push_decimal(dst: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
}

/// The line that opens a chunk of `len` bytes: its size in upper-case hex, as hyper writes it.
pub fn chunk_size_line(dst: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
