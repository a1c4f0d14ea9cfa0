//! Decoding a header block (RFC 7541 §3, §6).

use super::table::{Entry, Name, Table};
use super::{huffman, DecodeError, Field};
use bytes::Bytes;

/// The HPACK decoder of one connection: its dynamic table and the limit the server advertised.
#[derive(Debug)]
pub(crate) struct Decoder {
    table: Table,
    /// Our SETTINGS_HEADER_TABLE_SIZE: a size update above it is an error (§6.3).
    max_table_size: usize,
    /// Huffman-decoded strings, reused from one literal to the next.
    scratch: Vec<u8>,
}

/// Where a string literal's octets are.
enum Str {
    /// `block[start..end]`, sent raw.
    Raw(usize, usize),
    /// In `scratch`, Huffman-decoded.
    Decoded,
}

impl Decoder {
    /// A decoder for a connection whose SETTINGS_HEADER_TABLE_SIZE is `max_table_size`.
    pub(crate) fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: Table::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block, handing each field to `emit` in order.
    ///
    /// A malformed field, the list growing past `max_header_list_size` (each field counting its
    /// [`Field::size`]) or an error from `emit` stops the emitting but not the decoding: the
    /// block is read to its end so that the dynamic table stays in step with the peer's encoder,
    /// and the first such error is returned. A [`DecodeError::Compression`] ends at once. Work is
    /// linear in the block's length (every representation consumes at least one byte, a Huffman
    /// string yields at most 8/5 of its length); once emitting has stopped, literals are still
    /// read and indexed ones enter the table, but no field is handed over. The caller bounds the
    /// block's length (HEADERS plus CONTINUATION).
    pub(crate) fn decode(
        &mut self,
        block: &Bytes,
        max_header_list_size: usize,
        emit: impl FnMut(Field) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut pos = 0;
        let mut fields_seen = false;
        let mut sink = Sink {
            emit,
            list_size: 0,
            limit: max_header_list_size,
            refused: None,
        };
        while let Some(&first) = block.get(pos) {
            if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), only before the first field (§4.2).
                if fields_seen {
                    return Err(DecodeError::Compression("table size update after a field"));
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.max_table_size {
                    return Err(DecodeError::Compression(
                        "table size update above the limit",
                    ));
                }
                self.table.set_max_size(size);
                continue;
            }
            fields_seen = true;
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let entry = self.table.get(integer(block, &mut pos, 7)?)?;
                sink.accept(|| entry.field());
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let entry = self.literal(block, &mut pos, 6, false)?;
                sink.accept(|| entry.field());
                self.table.insert(entry);
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3).
                let entry = self.literal(block, &mut pos, 4, first & 0x10 != 0)?;
                sink.accept(|| entry.into_field());
            }
        }
        sink.refused.map_or(Ok(()), Err)
    }

    /// A literal field (§6.2) whose index prefix has `prefix_bits` bits. Its value is a slice of
    /// the block, unless it enters the table (`prefix_bits == 6`), where it is copied so that the
    /// table does not keep whole blocks alive.
    fn literal(
        &mut self,
        block: &Bytes,
        pos: &mut usize,
        prefix_bits: u8,
        sensitive: bool,
    ) -> Result<Entry, DecodeError> {
        let index = integer(block, pos, prefix_bits)?;
        let name = if index == 0 {
            match self.string(block, pos)? {
                Str::Raw(start, end) => Name::parse(&block[start..end]),
                Str::Decoded => Name::parse(&self.scratch),
            }
        } else {
            self.table.get(index)?.name.clone()
        };
        let value = match self.string(block, pos)? {
            Str::Raw(start, end) if prefix_bits != 6 => block.slice(start..end),
            Str::Raw(start, end) => Bytes::copy_from_slice(&block[start..end]),
            Str::Decoded => Bytes::copy_from_slice(&self.scratch),
        };
        Ok(Entry::new(name, value, sensitive))
    }

    /// A string literal (§5.2).
    fn string(&mut self, block: &[u8], pos: &mut usize) -> Result<Str, DecodeError> {
        let huffman = block
            .get(*pos)
            .ok_or(DecodeError::Compression("truncated string"))?
            & 0x80;
        let len = integer(block, pos, 7)?;
        let start = *pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= block.len())
            .ok_or(DecodeError::Compression("truncated string"))?;
        *pos = end;
        if huffman == 0 {
            return Ok(Str::Raw(start, end));
        }
        self.scratch.clear();
        huffman::decode(&block[start..end], &mut self.scratch)?;
        Ok(Str::Decoded)
    }

    #[cfg(test)]
    pub(super) fn table(&self) -> &Table {
        &self.table
    }
}

/// Where the fields go, until one is refused.
struct Sink<F> {
    emit: F,
    list_size: usize,
    limit: usize,
    refused: Option<DecodeError>,
}

impl<F: FnMut(Field) -> Result<(), DecodeError>> Sink<F> {
    /// Emits a field, built only if nothing was refused yet.
    #[inline]
    fn accept(&mut self, field: impl FnOnce() -> Result<Field, DecodeError>) {
        if self.refused.is_some() {
            return;
        }
        let emitted = field().and_then(|field| {
            self.list_size += field.size();
            if self.list_size > self.limit {
                return Err(DecodeError::HeaderListTooLarge);
            }
            (self.emit)(field)
        });
        if let Err(e) = emitted {
            self.refused = Some(e);
        }
    }
}

/// An integer with a `prefix_bits`-bit prefix (§5.1) at `block[*pos]`, which exists. At most four
/// continuation bytes are read: values stay below 2^28, far above any limit here.
#[inline]
fn integer(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, DecodeError> {
    let mask = (1u8 << prefix_bits) - 1;
    let first = block[*pos] & mask;
    *pos += 1;
    if first < mask {
        return Ok(first as usize);
    }
    let mut value = mask as usize;
    let mut shift = 0;
    loop {
        let &byte = block
            .get(*pos)
            .ok_or(DecodeError::Compression("truncated integer"))?;
        *pos += 1;
        value += ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 21 {
            return Err(DecodeError::Compression("integer too large"));
        }
    }
}
