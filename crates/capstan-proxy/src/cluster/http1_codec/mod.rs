//! The proxy's own HTTP/1.1 client codec for the plain upstream request, on the pool's
//! connections ([`super::http1_pool`]): hyper's `client::conn::http1` cost a dispatcher, a
//! request channel, a body channel and their wake-ups per request (docs/benchmarks.md), which
//! a request that needs none of its special cases does not use.
//!
//! The head is written byte for byte as hyper's client writes it ([`encode`]), the response
//! head parsed with `httparse` into the `http::Response` hyper would make, with its framing
//! decided as hyper's client decides it ([`parse`]), and the body read off the same
//! connection ([`decode`]): `Content-Length`, chunked (trailers included) or to the close.
//! [`Connection`] ties them to a socket. What this codec does not take ([`takes`]) is sent
//! with hyper over the same socket, so upgrades, `CONNECT`, `Expect` and request trailers
//! behave exactly as before.

mod conn;
pub mod decode;
pub mod encode;
pub mod parse;

pub use conn::Connection;

/// Whether the plain codec sends a request of `head` and `body`: an HTTP/1.1 request that is
/// not `CONNECT`, asks for no upgrade and no `100-continue`, announces no trailers, and whose
/// body (if any) hyper's client would send (hyper sends a `GET` or `HEAD` body of unknown length
/// as no body at all).
pub fn takes<B: http_body::Body>(head: &http::request::Parts, body: &B) -> bool {
    let h = &head.headers;
    head.version == http::Version::HTTP_11
        && head.method != http::Method::CONNECT
        && !h.contains_key(http::header::UPGRADE)
        && !h.contains_key(http::header::EXPECT)
        && !h.contains_key(http::header::TRAILER)
        && (body.is_end_stream()
            || body.size_hint().exact().is_some()
            || h.contains_key(http::header::CONTENT_LENGTH)
            || h.contains_key(http::header::TRANSFER_ENCODING)
            || !matches!(head.method, http::Method::GET | http::Method::HEAD))
}

/// A failure of the codec, worded as hyper words the same failure (the text reaches the
/// downstream in the 503's body, as hyper's did).
#[derive(Debug)]
pub struct Error {
    what: &'static str,
    source: Option<crate::http::BoxError>,
}

impl Error {
    pub(crate) fn new(what: &'static str) -> Error {
        Error { what, source: None }
    }

    pub(crate) fn with(what: &'static str, source: impl Into<crate::http::BoxError>) -> Error {
        Error {
            what,
            source: Some(source.into()),
        }
    }

    /// The connection closed before a whole response head came.
    pub(crate) fn incomplete() -> Error {
        Error::new("connection closed before message completed")
    }

    /// Reading the body failed (hyper's `Kind::Body`).
    pub(crate) fn body(source: impl Into<crate::http::BoxError>) -> Error {
        Error::with("error reading a body from connection", source)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests;
