//! The decoder's tables: the static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2,
//! §4), indexed together (§2.3.3). Entries hold what the server consumes ([`HeaderName`],
//! [`HeaderValue`], [`Pseudo`]), so a field found in a table is a pair of cheap clones.

use super::{DecodeError, Field, Pseudo};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use std::collections::VecDeque;

/// A field name as the tables hold it.
#[derive(Clone, Debug)]
pub(super) enum Name {
    Pseudo(Pseudo),
    Header(HeaderName),
    /// Not a valid name (uppercase, bad characters, unknown pseudo-header): a field with it is
    /// malformed (RFC 9113 §8.2), but the entry still counts in the table (of this length).
    Invalid(usize),
}

impl Name {
    /// The name of a literal (§6.2): a pseudo-header, or a lowercase [`HeaderName`].
    pub(super) fn parse(raw: &[u8]) -> Name {
        let name = if raw.first() == Some(&b':') {
            Pseudo::from_bytes(raw).map(Name::Pseudo)
        } else {
            // Unlike `from_bytes`, `from_lowercase` refuses uppercase instead of folding it.
            HeaderName::from_lowercase(raw).ok().map(Name::Header)
        };
        name.unwrap_or(Name::Invalid(raw.len()))
    }

    fn len(&self) -> usize {
        match self {
            Name::Pseudo(p) => p.as_str().len(),
            Name::Header(h) => h.as_str().len(),
            Name::Invalid(len) => *len,
        }
    }
}

/// A field value as the tables hold it.
#[derive(Clone, Debug)]
pub(super) enum Value {
    /// A header's value, already validated.
    Header(HeaderValue),
    /// A pseudo-header's value, which the server parses itself (method, URI parts).
    Pseudo(Bytes),
    /// A header's value that is not a valid [`HeaderValue`], of this length.
    Invalid(usize),
}

/// One (name, value) pair of a table.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) name: Name,
    pub(super) value: Value,
}

impl Entry {
    /// The entry of `name` and the value `raw`; `sensitive` marks it never to be indexed again.
    pub(super) fn new(name: Name, raw: Bytes, sensitive: bool) -> Entry {
        let value = match name {
            Name::Pseudo(_) => Value::Pseudo(raw),
            Name::Header(_) => {
                let len = raw.len();
                // Zero-copy: `from_maybe_shared` takes a `Bytes` as it is.
                match HeaderValue::from_maybe_shared(raw) {
                    Ok(mut v) => {
                        v.set_sensitive(sensitive);
                        Value::Header(v)
                    }
                    Err(_) => Value::Invalid(len),
                }
            }
            Name::Invalid(_) => Value::Invalid(raw.len()),
        };
        Entry { name, value }
    }

    /// The size the table accounts for (§4.1).
    pub(super) fn size(&self) -> usize {
        let value = match &self.value {
            Value::Header(v) => v.len(),
            Value::Pseudo(v) => v.len(),
            Value::Invalid(len) => *len,
        };
        self.name.len() + value + 32
    }

    /// The field to hand to the server, or why it is malformed; without cloning.
    pub(super) fn into_field(self) -> Result<Field, DecodeError> {
        match (self.name, self.value) {
            (Name::Pseudo(p), Value::Pseudo(v)) => Ok(Field::Pseudo(p, v)),
            (Name::Header(n), Value::Header(v)) => Ok(Field::Header(n, v)),
            (Name::Invalid(_), _) => Err(DecodeError::Malformed("invalid field name")),
            _ => Err(DecodeError::Malformed("invalid field value")),
        }
    }

    /// The field to hand to the server, or why it is malformed.
    pub(super) fn field(&self) -> Result<Field, DecodeError> {
        match (&self.name, &self.value) {
            (Name::Pseudo(p), Value::Pseudo(v)) => Ok(Field::Pseudo(*p, v.clone())),
            (Name::Header(n), Value::Header(v)) => Ok(Field::Header(n.clone(), v.clone())),
            (Name::Invalid(_), _) => Err(DecodeError::Malformed("invalid field name")),
            _ => Err(DecodeError::Malformed("invalid field value")),
        }
    }
}

const fn pseudo(p: Pseudo, value: &'static str) -> Entry {
    Entry {
        name: Name::Pseudo(p),
        value: Value::Pseudo(Bytes::from_static(value.as_bytes())),
    }
}

const fn header(name: HeaderName, value: &'static str) -> Entry {
    Entry {
        name: Name::Header(name),
        value: Value::Header(HeaderValue::from_static(value)),
    }
}

/// Appendix A: indexes 1 to 61.
static STATIC: [Entry; 61] = [
    pseudo(Pseudo::Authority, ""),
    pseudo(Pseudo::Method, "GET"),
    pseudo(Pseudo::Method, "POST"),
    pseudo(Pseudo::Path, "/"),
    pseudo(Pseudo::Path, "/index.html"),
    pseudo(Pseudo::Scheme, "http"),
    pseudo(Pseudo::Scheme, "https"),
    pseudo(Pseudo::Status, "200"),
    pseudo(Pseudo::Status, "204"),
    pseudo(Pseudo::Status, "206"),
    pseudo(Pseudo::Status, "304"),
    pseudo(Pseudo::Status, "400"),
    pseudo(Pseudo::Status, "404"),
    pseudo(Pseudo::Status, "500"),
    header(header::ACCEPT_CHARSET, ""),
    header(header::ACCEPT_ENCODING, "gzip, deflate"),
    header(header::ACCEPT_LANGUAGE, ""),
    header(header::ACCEPT_RANGES, ""),
    header(header::ACCEPT, ""),
    header(header::ACCESS_CONTROL_ALLOW_ORIGIN, ""),
    header(header::AGE, ""),
    header(header::ALLOW, ""),
    header(header::AUTHORIZATION, ""),
    header(header::CACHE_CONTROL, ""),
    header(header::CONTENT_DISPOSITION, ""),
    header(header::CONTENT_ENCODING, ""),
    header(header::CONTENT_LANGUAGE, ""),
    header(header::CONTENT_LENGTH, ""),
    header(header::CONTENT_LOCATION, ""),
    header(header::CONTENT_RANGE, ""),
    header(header::CONTENT_TYPE, ""),
    header(header::COOKIE, ""),
    header(header::DATE, ""),
    header(header::ETAG, ""),
    header(header::EXPECT, ""),
    header(header::EXPIRES, ""),
    header(header::FROM, ""),
    header(header::HOST, ""),
    header(header::IF_MATCH, ""),
    header(header::IF_MODIFIED_SINCE, ""),
    header(header::IF_NONE_MATCH, ""),
    header(header::IF_RANGE, ""),
    header(header::IF_UNMODIFIED_SINCE, ""),
    header(header::LAST_MODIFIED, ""),
    header(header::LINK, ""),
    header(header::LOCATION, ""),
    header(header::MAX_FORWARDS, ""),
    header(header::PROXY_AUTHENTICATE, ""),
    header(header::PROXY_AUTHORIZATION, ""),
    header(header::RANGE, ""),
    header(header::REFERER, ""),
    header(header::REFRESH, ""),
    header(header::RETRY_AFTER, ""),
    header(header::SERVER, ""),
    header(header::SET_COOKIE, ""),
    header(header::STRICT_TRANSPORT_SECURITY, ""),
    header(header::TRANSFER_ENCODING, ""),
    header(header::USER_AGENT, ""),
    header(header::VARY, ""),
    header(header::VIA, ""),
    header(header::WWW_AUTHENTICATE, ""),
];

/// The static index of a header name (for the encoder's literals), if it has one.
pub(super) fn static_name_index(name: &HeaderName) -> Option<usize> {
    let index = match name.as_str() {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    };
    Some(index)
}

/// The static table and the dynamic table of a decoder, one index space (§2.3.3).
#[derive(Debug)]
pub(super) struct Table {
    /// Newest first, as indexes count.
    dynamic: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl Table {
    pub(super) fn new(max_size: usize) -> Table {
        Table {
            dynamic: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at `index` (from 1), if there is one.
    pub(super) fn get(&self, index: usize) -> Result<&Entry, DecodeError> {
        match index {
            1..=61 => Ok(&STATIC[index - 1]),
            0 => Err(DecodeError::Compression("index 0")),
            _ => self
                .dynamic
                .get(index - 62)
                .ok_or(DecodeError::Compression("index out of range")),
        }
    }

    /// Adds an entry, evicting the oldest to make room (§4.4); one larger than the table empties it.
    pub(super) fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict(self.max_size - size);
        self.size += size;
        self.dynamic.push_front(entry);
    }

    /// A dynamic table size update (§4.3, §6.3).
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict(max_size);
    }

    fn evict(&mut self, to: usize) {
        while self.size > to {
            let entry = self
                .dynamic
                .pop_back()
                .expect("a non-zero size has entries");
            self.size -= entry.size();
        }
    }

    #[cfg(test)]
    pub(super) fn dynamic(&self) -> (&VecDeque<Entry>, usize) {
        (&self.dynamic, self.size)
    }
}
