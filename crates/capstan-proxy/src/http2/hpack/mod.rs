//! HPACK (RFC 7541): the header compression of HTTP/2, pure logic.
//!
//! - [`Decoder`] decodes one complete header block (HEADERS plus CONTINUATION) into [`Field`]s
//!   made for the server: table hits are clones of `http` types (no allocation), pseudo-headers
//!   an enum to switch on, raw literal values slices of the block;
//! - [`Encoder`] writes a response head or trailers, indexing the (name, value) pairs that repeat
//!   from one response to the next.

mod decoder;
mod encoder;
mod huffman;
mod table;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

pub(crate) use decoder::Decoder;
pub(crate) use encoder::Encoder;

/// The default (and initial) dynamic table size, SETTINGS_HEADER_TABLE_SIZE's (RFC 9113 §6.5.2).
pub(crate) const DEFAULT_TABLE_SIZE: usize = 4096;

/// A pseudo-header field (RFC 9113 §8.3, RFC 8441 §4 for `:protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    Status,
    Protocol,
}

impl Pseudo {
    /// The name, colon included.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Status => ":status",
            Pseudo::Protocol => ":protocol",
        }
    }

    fn from_bytes(name: &[u8]) -> Option<Pseudo> {
        Some(match name {
            b":method" => Pseudo::Method,
            b":scheme" => Pseudo::Scheme,
            b":authority" => Pseudo::Authority,
            b":path" => Pseudo::Path,
            b":status" => Pseudo::Status,
            b":protocol" => Pseudo::Protocol,
            _ => return None,
        })
    }
}

/// One decoded field. A header's value is marked sensitive ([`HeaderValue::is_sensitive`]) when
/// the peer sent it never-indexed (§6.2.3), so that a proxy re-encodes it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// A pseudo-header and its raw value, which the server parses (method, URI parts, status).
    Pseudo(Pseudo, Bytes),
    Header(HeaderName, HeaderValue),
}

impl Field {
    /// The size that counts against SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2).
    pub(crate) fn size(&self) -> usize {
        match self {
            Field::Pseudo(p, v) => p.as_str().len() + v.len() + 32,
            Field::Header(n, v) => n.as_str().len() + v.len() + 32,
        }
    }
}

/// Why a header block was refused, and so what the server does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The block cannot be decoded, so the decoder's state is lost: a connection error of type
    /// COMPRESSION_ERROR (RFC 9113 §4.3).
    #[error("HPACK decoding failed: {0}")]
    Compression(&'static str),
    /// A field is malformed (RFC 9113 §8.1.1, §8.2): a stream error of type PROTOCOL_ERROR. The
    /// block was decoded to its end, so the connection goes on.
    #[error("malformed header field: {0}")]
    Malformed(&'static str),
    /// The fields add up past the header list size limit (RFC 9113 §6.5.2, §10.5.1): the server
    /// answers 431 or resets the stream. The block was decoded to its end.
    #[error("header list too large")]
    HeaderListTooLarge,
}
