//! Encoding a response head or trailers (RFC 7541 §6), cheaply: `:status` from the static table
//! when it is there, and one hash probe per field into the dynamic table, which holds the pairs
//! that repeat from one response to the next (`server: istio-envoy`, `content-type: ...`,
//! `date` within a second).

use super::table::static_name_index;
use super::{huffman, DEFAULT_TABLE_SIZE};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// Slots of the (name, value) -> entry index; a collision only costs a literal.
const SLOTS: usize = 64;

/// The HPACK encoder of one connection.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// What the peer's decoder holds in its dynamic table, oldest first.
    entries: VecDeque<(HeaderName, HeaderValue, u64)>,
    size: usize,
    max_size: usize,
    /// Entries ever inserted: entry `n` (from 0) is at index `62 + inserted - 1 - n` while it
    /// lasts.
    inserted: u64,
    /// By hash of (name, value): `n + 1` of the entry last inserted with that hash, or 0.
    slots: [u64; SLOTS],
    hasher: foldhash::fast::FixedState,
    /// A name that changes value with every response and has no static index, and its entry
    /// (`n`): later fields of that name refer to it.
    named: Option<(HeaderName, u64)>,
    /// The block being written (pushing to a `Vec` is cheaper than to a `BytesMut`), kept for
    /// the next one.
    buf: Vec<u8>,
    /// Table size changes not yet signalled: the smallest since the last block, and the last.
    pending_size: Option<(usize, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a peer with the default SETTINGS_HEADER_TABLE_SIZE.
    pub(crate) fn new() -> Encoder {
        Encoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            inserted: 0,
            slots: [0; SLOTS],
            hasher: foldhash::fast::FixedState::with_seed(0x6870_6163),
            named: None,
            buf: Vec::new(),
            pending_size: None,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed: the table follows it (up to the default,
    /// all a response needs), signalled at the start of the next block (§4.2, §6.3).
    pub(crate) fn set_max_table_size(&mut self, size: usize) {
        let size = size.min(DEFAULT_TABLE_SIZE);
        let smallest = self
            .pending_size
            .map_or(size, |(smallest, _)| smallest.min(size));
        self.pending_size = Some((smallest, size));
    }

    /// Appends the header block of a response head.
    pub(crate) fn encode(&mut self, status: StatusCode, headers: &HeaderMap, dst: &mut BytesMut) {
        let mut buf = std::mem::take(&mut self.buf);
        self.start_block(&mut buf);
        let index = match status.as_u16() {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            buf.push(0x80 | index);
        } else {
            // Literal without indexing, `:status`'s name (index 8).
            buf.push(0x08);
            string(status.as_str().as_bytes(), &mut buf);
        }
        self.fields(headers, &mut buf);
        self.flush(buf, dst);
    }

    /// Appends the header block of trailers.
    pub(crate) fn encode_trailers(&mut self, headers: &HeaderMap, dst: &mut BytesMut) {
        let mut buf = std::mem::take(&mut self.buf);
        self.start_block(&mut buf);
        self.fields(headers, &mut buf);
        self.flush(buf, dst);
    }

    fn flush(&mut self, mut buf: Vec<u8>, dst: &mut BytesMut) {
        dst.extend_from_slice(&buf);
        buf.clear();
        self.buf = buf;
    }

    fn start_block(&mut self, dst: &mut Vec<u8>) {
        if let Some((smallest, last)) = self.pending_size.take() {
            // A reduction then a growth must both be seen by the decoder (§4.2).
            if smallest < last {
                integer(smallest, 0x20, 5, dst);
                self.set_size(smallest);
            }
            integer(last, 0x20, 5, dst);
            self.set_size(last);
        }
    }

    fn fields(&mut self, headers: &HeaderMap, dst: &mut Vec<u8>) {
        for (name, value) in headers {
            if value.is_sensitive() {
                // Never indexed (§6.2.3), here and by any intermediary after us.
                literal(0x10, 4, (name, static_name_index(name)), value, dst);
            } else if cacheable(name) {
                self.cached_field(name, value, dst);
            } else {
                self.uncached_field(name, value, dst);
            }
        }
    }

    /// A field indexed when it is in the table, else added to it if small enough.
    fn cached_field(&mut self, name: &HeaderName, value: &HeaderValue, dst: &mut Vec<u8>) {
        let hash = self.hash(name, value);
        if let Some(index) = self.find(hash, name, value) {
            return integer(index, 0x80, 7, dst);
        }
        let name_ref = (name, static_name_index(name));
        if self.worth_an_entry(name, value) {
            literal(0x40, 6, name_ref, value, dst);
            self.insert(hash, name, value);
        } else {
            literal(0x00, 4, name_ref, value, dst);
        }
    }

    /// A field whose value changes with every response: a literal, its name by index. A name
    /// without a static index (`x-envoy-upstream-service-time`) gets an entry once, for its
    /// name's sake: the next responses refer to it.
    fn uncached_field(&mut self, name: &HeaderName, value: &HeaderValue, dst: &mut Vec<u8>) {
        let index = static_name_index(name).or_else(|| self.named_index(name));
        if index.is_some() || !self.worth_an_entry(name, value) {
            return literal(0x00, 4, (name, index), value, dst);
        }
        literal(0x40, 6, (name, None), value, dst);
        let hash = self.hash(name, value);
        self.insert(hash, name, value);
        self.named = Some((name.clone(), self.inserted - 1));
    }

    /// The slot hash of a pair: the value's, mixed with the name's length, which is cheaper
    /// than hashing the name and tells most names apart (a collision only costs a literal).
    fn hash(&self, name: &HeaderName, value: &HeaderValue) -> u64 {
        let h = self.hasher.hash_one(value.as_bytes());
        h ^ (name.as_str().len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// A large entry would push out several small ones that repeat more often.
    fn worth_an_entry(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        name.as_str().len() + value.len() + 32 <= self.max_size / 4
    }

    /// The index of the entry kept for its name ([`Encoder::named`]), if it is still there.
    fn named_index(&self, name: &HeaderName) -> Option<usize> {
        let (named, n) = self.named.as_ref()?;
        let oldest = self.inserted - self.entries.len() as u64;
        (named == name && *n >= oldest).then(|| 62 + (self.inserted - 1 - n) as usize)
    }

    /// The index of (name, value) in the peer's dynamic table, if it is there.
    fn find(&self, hash: u64, name: &HeaderName, value: &HeaderValue) -> Option<usize> {
        let n = self.slots[hash as usize % SLOTS].checked_sub(1)?;
        let oldest = self.inserted - self.entries.len() as u64;
        let (n_name, n_value, n_hash) = self.entries.get(n.checked_sub(oldest)? as usize)?;
        (*n_hash == hash && n_name == name && n_value == value)
            .then(|| 62 + (self.inserted - 1 - n) as usize)
    }

    /// Adds an entry as the peer's decoder will (§4.4); it fits in the table.
    fn insert(&mut self, hash: u64, name: &HeaderName, value: &HeaderValue) {
        let size = name.as_str().len() + value.len() + 32;
        self.evict(self.max_size - size);
        self.entries.push_back((name.clone(), value.clone(), hash));
        self.size += size;
        self.inserted += 1;
        self.slots[hash as usize % SLOTS] = self.inserted;
    }

    fn set_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict(max_size);
    }

    fn evict(&mut self, to: usize) {
        while self.size > to {
            let (name, value, _) = self
                .entries
                .pop_front()
                .expect("a non-zero size has entries");
            self.size -= name.as_str().len() + value.len() + 32;
        }
    }
}

/// Whether a field is worth a table entry: not those whose value changes with every response.
/// (`date` is: it changes once a second, and all responses in that second index it.)
fn cacheable(name: &HeaderName) -> bool {
    // Compared as `HeaderName`s: a standard name and a custom one differ without a memcmp.
    static UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
    name != header::CONTENT_LENGTH && *name != UPSTREAM_TIME
}

/// A literal field (§6.2) with the representation's bits `first` and an index prefix of
/// `prefix_bits`: the name by its index when it has one.
fn literal(
    first: u8,
    prefix_bits: u8,
    (name, name_index): (&HeaderName, Option<usize>),
    value: &HeaderValue,
    dst: &mut Vec<u8>,
) {
    match name_index {
        Some(index) => integer(index, first, prefix_bits, dst),
        None => {
            dst.push(first);
            string(name.as_str().as_bytes(), dst);
        }
    }
    string(value.as_bytes(), dst);
}

/// A string literal (§5.2), Huffman-coded when that is shorter.
fn string(src: &[u8], dst: &mut Vec<u8>) {
    let coded = huffman::encoded_len(src);
    if coded < src.len() {
        integer(coded, 0x80, 7, dst);
        huffman::encode(src, coded, dst);
    } else {
        integer(src.len(), 0, 7, dst);
        dst.extend_from_slice(src);
    }
}

/// An integer with a `prefix_bits`-bit prefix (§5.1), after the bits `first`.
#[inline]
fn integer(value: usize, first: u8, prefix_bits: u8, dst: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.push(first | value as u8);
    } else {
        long_integer(value, first, prefix_bits, dst);
    }
}

fn long_integer(mut value: usize, first: u8, prefix_bits: u8, dst: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    dst.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        dst.push(value as u8 | 0x80);
        value >>= 7;
    }
    dst.push(value as u8);
}
