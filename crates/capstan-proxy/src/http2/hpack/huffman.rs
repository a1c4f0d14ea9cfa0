//! The static Huffman code of string literals (RFC 7541 §5.2, Appendix B).
//!
//! Decoding is a state machine that consumes four bits at a time: a state is an internal node of
//! the code tree, and [`DECODER`] (built at compile time from [`CODES`]) says, for each state and
//! nibble, the next state and the symbol completed on the way, if any. The shortest code has five
//! bits, so a nibble completes at most one symbol.

use super::DecodeError;

/// Appendix B, symbol by symbol (0-255, then EOS): the code aligned to the least significant bit,
/// and its length in bits.
#[rustfmt::skip]
pub(super) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    // ' ' to '/'
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    // '0' to '?'
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    // '@' to 'O'
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    // 'P' to '_'
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    // '`' to 'o'
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    // 'p' to 127
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    // 128 to 255
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    // EOS
    (0x3fffffff, 30),
];

const EOS: u16 = 256;
/// A child in the tree that is a leaf: the symbol in the low bits.
const LEAF: u16 = 0x8000;
/// A transition completes a symbol (in bits 8-15).
const EMIT: u32 = 1 << 16;
/// A transition runs into EOS, which must not appear in a literal (§5.2).
const FAIL: u32 = 1 << 17;

/// The nibble state machine: `table[state * 16 + nibble]` packs the next state (bits 0-7), the
/// symbol (bits 8-15) with [`EMIT`], or [`FAIL`]; `accepts[state]` says whether a literal may end
/// in that state: at a symbol boundary, or in at most seven bits of EOS's prefix (all ones).
pub(super) struct Decoder {
    table: [u32; 256 * 16],
    accepts: [bool; 256],
}

pub(super) static DECODER: Decoder = build_decoder();

const fn build_decoder() -> Decoder {
    // 257 leaves make 256 internal nodes; node 0 is the root and 0 as a child means none yet.
    let mut tree = [[0u16; 2]; 256];
    let mut nodes = 1;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0;
        let mut bit = len;
        while bit > 1 {
            bit -= 1;
            let b = ((code >> bit) & 1) as usize;
            if tree[node][b] == 0 {
                tree[node][b] = nodes as u16;
                nodes += 1;
            }
            assert!(tree[node][b] & LEAF == 0, "a code is the prefix of another");
            node = tree[node][b] as usize;
        }
        assert!(tree[node][(code & 1) as usize] == 0, "two codes are equal");
        tree[node][(code & 1) as usize] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(nodes == 256, "the code is not complete");

    let mut table = [0u32; 256 * 16];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut out = 0u32;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = tree[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child & !LEAF == EOS {
                    out = FAIL;
                    break;
                } else {
                    out = EMIT | ((child & 0xff) as u32) << 8;
                    node = 0;
                }
            }
            table[state * 16 + nibble] = out | node as u32;
            nibble += 1;
        }
        state += 1;
    }

    let mut accepts = [false; 256];
    accepts[0] = true;
    let mut node = 0;
    let mut depth = 0;
    while depth < 7 {
        node = tree[node][1] as usize;
        accepts[node] = true;
        depth += 1;
    }
    Decoder { table, accepts }
}

/// Appends the decoding of `src` to `out`. Errors (§5.2): EOS inside, padding longer than seven
/// bits or not a prefix of EOS.
pub(super) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    // Every code has at least five bits.
    out.reserve(src.len() * 8 / 5);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0xf] {
            let t = DECODER.table[state * 16 + nibble as usize];
            if t & FAIL != 0 {
                return Err(DecodeError::Compression("EOS in a Huffman-coded string"));
            }
            if t & EMIT != 0 {
                out.push((t >> 8) as u8);
            }
            state = (t & 0xff) as usize;
        }
    }
    if DECODER.accepts[state] {
        Ok(())
    } else {
        Err(DecodeError::Compression("invalid Huffman padding"))
    }
}

/// The length of `src` Huffman-coded, padding included.
pub(super) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| CODES[b as usize].1 as usize).sum();
    bits.div_ceil(8)
}

/// Appends `src` Huffman-coded, `len` ([`encoded_len`]) bytes padded with the most significant
/// bits of EOS (ones).
pub(super) fn encode(src: &[u8], len: usize, dst: &mut Vec<u8>) {
    let start = dst.len();
    dst.resize(start + len, 0);
    let out = &mut dst[start..];
    // `acc` holds `bits` pending bits in its low end (fewer than 32 + 30), written 32 at a time.
    let mut acc = 0u64;
    let mut bits = 0u32;
    let mut at = 0;
    for &b in src {
        let (code, n) = CODES[b as usize];
        acc = (acc << n) | code as u64;
        bits += n as u32;
        if bits >= 32 {
            bits -= 32;
            out[at..at + 4].copy_from_slice(&((acc >> bits) as u32).to_be_bytes());
            at += 4;
        }
    }
    let pad = (8 - bits % 8) % 8;
    acc = (acc << pad) | ((1 << pad) - 1);
    bits += pad;
    while bits > 0 {
        bits -= 8;
        out[at] = (acc >> bits) as u8;
        at += 1;
    }
}
