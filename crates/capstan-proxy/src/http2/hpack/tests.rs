//! RFC 7541 Appendix C, round trips of random header maps, and the errors a peer can cause.

use super::table::{Name, Value};
use super::{huffman, DecodeError, Decoder, Encoder, Field, Pseudo};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

fn hex(s: &str) -> Bytes {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// A field as the RFC prints it: `name: value`.
fn text(field: &Field) -> String {
    match field {
        Field::Pseudo(p, v) => format!("{}: {}", p.as_str(), std::str::from_utf8(v).unwrap()),
        Field::Header(n, v) => format!("{}: {}", n, v.to_str().unwrap()),
    }
}

fn decode(decoder: &mut Decoder, block: &Bytes) -> Result<Vec<String>, DecodeError> {
    let mut fields = Vec::new();
    decoder.decode(block, 16 << 10, |f| {
        fields.push(text(&f));
        Ok(())
    })?;
    Ok(fields)
}

/// The dynamic table as the RFC prints it, newest first, and its size.
fn table(decoder: &Decoder) -> (Vec<String>, usize) {
    let (entries, size) = decoder.table().dynamic();
    let shown = entries
        .iter()
        .map(|e| {
            let name = match &e.name {
                Name::Pseudo(p) => p.as_str().to_string(),
                Name::Header(n) => n.to_string(),
                Name::Invalid(_) => "<invalid>".to_string(),
            };
            let value = match &e.value {
                Value::Header(v) => v.to_str().unwrap().to_string(),
                Value::Pseudo(v) => String::from_utf8(v.to_vec()).unwrap(),
                Value::Invalid(_) => "<invalid>".to_string(),
            };
            format!("{name}: {value}")
        })
        .collect();
    (shown, size)
}

struct Step {
    block: &'static str,
    fields: &'static [&'static str],
    table: &'static [&'static str],
    size: usize,
}

fn run(table_size: usize, steps: &[Step]) {
    let mut decoder = Decoder::new(table_size);
    for (i, step) in steps.iter().enumerate() {
        let fields = decode(&mut decoder, &hex(step.block)).unwrap();
        assert_eq!(fields, step.fields, "step {i}");
        assert_eq!(
            table(&decoder),
            (
                step.table.iter().map(|s| s.to_string()).collect(),
                step.size
            ),
            "step {i}"
        );
    }
}

#[test]
fn c2_field_representations() {
    run(
        4096,
        &[Step {
            block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            fields: &["custom-key: custom-header"],
            table: &["custom-key: custom-header"],
            size: 55,
        }],
    );
    run(
        4096,
        &[Step {
            block: "040c 2f73 616d 706c 652f 7061 7468",
            fields: &[":path: /sample/path"],
            table: &[],
            size: 0,
        }],
    );
    run(
        4096,
        &[Step {
            block: "82",
            fields: &[":method: GET"],
            table: &[],
            size: 0,
        }],
    );
    // C.2.3: never indexed, so marked sensitive.
    let mut decoder = Decoder::new(4096);
    let mut fields = Vec::new();
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    decoder
        .decode(&block, 1024, |f| {
            fields.push(f);
            Ok(())
        })
        .unwrap();
    let mut secret = HeaderValue::from_static("secret");
    secret.set_sensitive(true);
    assert_eq!(
        fields,
        [Field::Header(HeaderName::from_static("password"), secret)]
    );
    let Field::Header(_, value) = &fields[0] else {
        unreachable!()
    };
    assert!(value.is_sensitive());
    assert_eq!(table(&decoder).1, 0);
}

const REQ1: &[&str] = &[
    ":method: GET",
    ":scheme: http",
    ":path: /",
    ":authority: www.example.com",
];
const REQ2: &[&str] = &[
    ":method: GET",
    ":scheme: http",
    ":path: /",
    ":authority: www.example.com",
    "cache-control: no-cache",
];
const REQ3: &[&str] = &[
    ":method: GET",
    ":scheme: https",
    ":path: /index.html",
    ":authority: www.example.com",
    "custom-key: custom-value",
];
const REQ_TABLE1: &[&str] = &[":authority: www.example.com"];
const REQ_TABLE2: &[&str] = &["cache-control: no-cache", ":authority: www.example.com"];
const REQ_TABLE3: &[&str] = &[
    "custom-key: custom-value",
    "cache-control: no-cache",
    ":authority: www.example.com",
];

#[test]
fn c3_requests_without_huffman() {
    run(
        4096,
        &[
            Step {
                block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                fields: REQ1,
                table: REQ_TABLE1,
                size: 57,
            },
            Step {
                block: "8286 84be 5808 6e6f 2d63 6163 6865",
                fields: REQ2,
                table: REQ_TABLE2,
                size: 110,
            },
            Step {
                block: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                fields: REQ3,
                table: REQ_TABLE3,
                size: 164,
            },
        ],
    );
}

#[test]
fn c4_requests_with_huffman() {
    run(
        4096,
        &[
            Step {
                block: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                fields: REQ1,
                table: REQ_TABLE1,
                size: 57,
            },
            Step {
                block: "8286 84be 5886 a8eb 1064 9cbf",
                fields: REQ2,
                table: REQ_TABLE2,
                size: 110,
            },
            Step {
                block: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                fields: REQ3,
                table: REQ_TABLE3,
                size: 164,
            },
        ],
    );
}

const DATE1: &str = "date: Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "date: Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "location: https://www.example.com";
const COOKIE: &str = "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP1: &[&str] = &[":status: 302", "cache-control: private", DATE1, LOCATION];
const RESP2: &[&str] = &[":status: 307", "cache-control: private", DATE1, LOCATION];
const RESP3: &[&str] = &[
    ":status: 200",
    "cache-control: private",
    DATE2,
    LOCATION,
    "content-encoding: gzip",
    COOKIE,
];
const RESP_TABLE1: &[&str] = &[LOCATION, DATE1, "cache-control: private", ":status: 302"];
const RESP_TABLE2: &[&str] = &[":status: 307", LOCATION, DATE1, "cache-control: private"];
const RESP_TABLE3: &[&str] = &[COOKIE, "content-encoding: gzip", DATE2];

#[test]
fn c5_responses_without_huffman() {
    run(
        256,
        &[
            Step {
                block:
                    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                    2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                    6c65 2e63 6f6d",
                fields: RESP1,
                table: RESP_TABLE1,
                size: 222,
            },
            Step {
                block: "4803 3330 37c1 c0bf",
                fields: RESP2,
                table: RESP_TABLE2,
                size: 222,
            },
            Step {
                block:
                    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                    54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                    5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                    3d31",
                fields: RESP3,
                table: RESP_TABLE3,
                size: 215,
            },
        ],
    );
}

#[test]
fn c6_responses_with_huffman() {
    run(
        256,
        &[
            Step {
                block:
                    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                    2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                fields: RESP1,
                table: RESP_TABLE1,
                size: 222,
            },
            Step {
                block: "4883 640e ffc1 c0bf",
                fields: RESP2,
                table: RESP_TABLE2,
                size: 222,
            },
            Step {
                block:
                    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                    77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                    9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                fields: RESP3,
                table: RESP_TABLE3,
                size: 215,
            },
        ],
    );
}

fn headers(fields: &[&str]) -> (StatusCode, HeaderMap) {
    let mut map = HeaderMap::new();
    let mut status = StatusCode::OK;
    for field in fields {
        let (name, value) = field.split_once(": ").unwrap();
        if name == ":status" {
            status = value.parse().unwrap();
        } else {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
    }
    (status, map)
}

/// Our encoder on C.6's responses: its bytes are the RFC's where it makes the RFC's choices
/// (cache-control and location indexed, Huffman everywhere), and otherwise what §6 prescribes
/// for ours (`:status` 302 not indexed, nor `date`, too large for a quarter of this small
/// table). Each block decodes to the response.
#[test]
fn encoder_on_c6_responses() {
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(256);
    let mut decoder = Decoder::new(256);
    let date1 = "0f12 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff";
    let expected = [
        // Size update to 256, :status 302 literal, cache-control and location as in C.6.1.
        format!("3fe101 0882 6402 5885 aec3 771a 4b {date1} 6e91 9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"),
        // :status 307 literal (raw: Huffman is no shorter, where the RFC takes it anyway), then
        // cache-control (63), date literal, location (62).
        format!("0803 333037 bf {date1} be"),
    ];
    for (i, resp) in [RESP1, RESP2, RESP3].iter().enumerate() {
        let (status, map) = headers(resp);
        let mut dst = BytesMut::new();
        encoder.encode(status, &map, &mut dst);
        if let Some(expected) = expected.get(i) {
            assert_eq!(hex(expected), dst, "response {i}");
        }
        assert_eq!(
            decode(&mut decoder, &dst.freeze()).unwrap(),
            *resp,
            "response {i}"
        );
    }
}

/// Random responses and trailers on one connection, with repeats (the table's hits), table size
/// changes, sensitive values and every byte a value may hold.
#[test]
fn random_round_trips() {
    let mut rng = fastrand::Rng::with_seed(7541);
    let names: Vec<HeaderName> = [
        "server",
        "content-type",
        "date",
        "x-custom",
        "set-cookie",
        "content-length",
        "vary",
    ]
    .iter()
    .map(|n| HeaderName::from_static(n))
    .collect();
    let values = ["istio-envoy", "text/plain", "", "a b\tc", "0"];
    for connection in 0..20 {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::new(4096);
        for block in 0..50 {
            if rng.u8(..20) == 0 {
                encoder.set_max_table_size(rng.usize(..5000));
            }
            let mut map = HeaderMap::new();
            for _ in 0..rng.usize(..12) {
                let name = if rng.bool() {
                    names[rng.usize(..names.len())].clone()
                } else {
                    let len = rng.usize(1..40);
                    let name: String = (0..len)
                        .map(|_| {
                            rng.choice(b"abcxyz0189-_".iter())
                                .map(|&c| c as char)
                                .unwrap()
                        })
                        .collect();
                    HeaderName::from_bytes(name.as_bytes()).unwrap()
                };
                let mut value = if rng.bool() {
                    HeaderValue::from_static(values[rng.usize(..values.len())])
                } else {
                    let bytes: Vec<u8> = (0..rng.usize(..300))
                        .map(|_| loop {
                            let b = rng.u8(..);
                            if b == b'\t' || (b >= 0x20 && b != 0x7f) {
                                break b;
                            }
                        })
                        .collect();
                    HeaderValue::from_bytes(&bytes).unwrap()
                };
                value.set_sensitive(rng.u8(..10) == 0);
                map.append(name, value);
            }
            let mut dst = BytesMut::new();
            let status = StatusCode::from_u16(rng.u16(100..600)).unwrap();
            let trailers = rng.u8(..5) == 0;
            if trailers {
                encoder.encode_trailers(&map, &mut dst);
            } else {
                encoder.encode(status, &map, &mut dst);
            }
            let mut fields = Vec::new();
            decoder
                .decode(&dst.freeze(), usize::MAX, |f| {
                    fields.push(f);
                    Ok(())
                })
                .unwrap();
            let mut expected: Vec<Field> = map
                .iter()
                .map(|(n, v)| Field::Header(n.clone(), v.clone()))
                .collect();
            if !trailers {
                expected.insert(
                    0,
                    Field::Pseudo(
                        Pseudo::Status,
                        Bytes::copy_from_slice(status.as_str().as_bytes()),
                    ),
                );
            }
            assert_eq!(fields, expected, "connection {connection}, block {block}");
            for (field, (_, value)) in fields.iter().skip(usize::from(!trailers)).zip(map.iter()) {
                let Field::Header(_, decoded) = field else {
                    panic!("a header expected")
                };
                assert_eq!(decoded.is_sensitive(), value.is_sensitive());
            }
        }
    }
}

#[test]
fn repeated_fields_are_indexed() {
    let mut encoder = Encoder::new();
    let (status, map) = headers(&[
        ":status: 200",
        "server: istio-envoy",
        "content-type: text/plain",
        "date: Mon, 21 Oct 2013 20:13:21 GMT",
        "content-length: 5",
        "x-envoy-upstream-service-time: 1",
    ]);
    let mut first = BytesMut::new();
    encoder.encode(status, &map, &mut first);
    let mut second = BytesMut::new();
    encoder.encode(status, &map, &mut second);
    // :status 200, server (65), content-type (64), date (63), content-length as a literal, and
    // x-envoy-upstream-service-time's value with its name from the table (62).
    assert_eq!(second, hex("88 c1 c0 bf 0f0d 0135 0f2f 0131"));
    let mut decoder = Decoder::new(4096);
    decode(&mut decoder, &first.freeze()).unwrap();
    assert_eq!(decode(&mut decoder, &second.freeze()).unwrap().len(), 6);
}

#[test]
fn huffman_codes_every_byte() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut inputs: Vec<Vec<u8>> = vec![(0..=255).collect(), vec![]];
    inputs.extend((0..200).map(|len| (0..len).map(|_| rng.u8(..)).collect()));
    inputs.extend((0..50).map(|len| (0..len).map(|_| rng.u8(b'a'..=b'z')).collect()));
    for input in inputs {
        let mut coded = b"x".to_vec();
        huffman::encode(&input, huffman::encoded_len(&input), &mut coded);
        let mut decoded = Vec::new();
        huffman::decode(&coded[1..], &mut decoded).unwrap();
        assert_eq!(decoded, input);
    }
    // The code is canonical: ordered by length, then by symbol.
    for pair in huffman::CODES.windows(2) {
        let ((a, a_len), (b, b_len)) = (pair[0], pair[1]);
        if a_len == b_len {
            assert_eq!(a + 1, b);
        }
    }
}

/// Errors: (block, decoder's table size, header list limit, expected error).
#[test]
fn errors() {
    use DecodeError::*;
    let cases: &[(&str, usize, usize, DecodeError)] = &[
        ("80", 4096, 1024, Compression("index 0")),
        ("be", 4096, 1024, Compression("index out of range")),
        ("0f2f 00", 4096, 1024, Compression("index out of range")),
        ("ff", 4096, 1024, Compression("truncated integer")),
        ("ff 80", 4096, 1024, Compression("truncated integer")),
        (
            "ff ff ff ff ff 0f",
            4096,
            1024,
            Compression("integer too large"),
        ),
        ("04 05 2f61", 4096, 1024, Compression("truncated string")),
        ("04", 4096, 1024, Compression("truncated string")),
        // '0' (00000) padded with zeros.
        (
            "04 81 00",
            4096,
            1024,
            Compression("invalid Huffman padding"),
        ),
        // 'a' (00011) and its padding, then eight more ones.
        (
            "04 82 1fff",
            4096,
            1024,
            Compression("invalid Huffman padding"),
        ),
        // EOS (thirty ones).
        (
            "04 84 ffff ffff",
            4096,
            1024,
            Compression("EOS in a Huffman-coded string"),
        ),
        (
            "3fe2 1f",
            4096,
            1024,
            Compression("table size update above the limit"),
        ),
        (
            "82 20",
            4096,
            1024,
            Compression("table size update after a field"),
        ),
        (
            "20 3f46",
            100,
            1024,
            Compression("table size update above the limit"),
        ),
        ("8284", 4096, 79, HeaderListTooLarge),
        // Uppercase name, bad value byte, unknown pseudo-header.
        (
            "0003 466f6f 0161",
            4096,
            1024,
            Malformed("invalid field name"),
        ),
        (
            "0003 666f6f 0101",
            4096,
            1024,
            Malformed("invalid field value"),
        ),
        (
            "0004 3a666f6f 0161",
            4096,
            1024,
            Malformed("invalid field name"),
        ),
    ];
    for (block, table_size, limit, expected) in cases {
        let mut decoder = Decoder::new(*table_size);
        let got = decoder.decode(&hex(block), *limit, |_| Ok(()));
        assert_eq!(got, Err(expected.clone()), "{block}");
    }
}

#[test]
fn size_updates_at_the_start() {
    let mut decoder = Decoder::new(4096);
    // Two updates (to 0, then to 4096, the limit), then a field.
    assert_eq!(
        decode(&mut decoder, &hex("20 3fe11f 82")).unwrap(),
        [":method: GET"]
    );
    decode(
        &mut decoder,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(table(&decoder).1, 55);
    // An update below the table's size evicts.
    decode(&mut decoder, &hex("3f17")).unwrap();
    assert_eq!(table(&decoder), (vec![], 0));
}

/// After a malformed field, the list limit or the server's refusal, the block is still decoded
/// to its end: the entries it adds are in the table for the next block.
#[test]
fn refused_blocks_keep_the_table_in_step() {
    // An uppercase name indexed, then `custom-key: custom-header` indexed.
    let block =
        hex("4003 466f6f 0161 400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    let mut decoder = Decoder::new(4096);
    assert_eq!(
        decode(&mut decoder, &block),
        Err(DecodeError::Malformed("invalid field name"))
    );
    assert_eq!(
        table(&decoder),
        (
            vec![
                "custom-key: custom-header".into(),
                "<invalid>: <invalid>".into()
            ],
            55 + 36
        )
    );
    // The invalid entry, referenced, is malformed again; the valid one is fine.
    assert_eq!(
        decode(&mut decoder, &hex("be")).unwrap(),
        ["custom-key: custom-header"]
    );
    assert_eq!(
        decode(&mut decoder, &hex("bf")),
        Err(DecodeError::Malformed("invalid field name"))
    );

    let mut decoder = Decoder::new(4096);
    let mut seen = 0;
    let got = decoder.decode(&block.slice(7..), 1024, |_| {
        seen += 1;
        Err(DecodeError::Malformed("refused by the server"))
    });
    assert_eq!(
        (got, seen),
        (Err(DecodeError::Malformed("refused by the server")), 1)
    );
    assert_eq!(table(&decoder).1, 55);

    let mut decoder = Decoder::new(4096);
    let got = decoder.decode(
        &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        60,
        |_| Ok(()),
    );
    assert_eq!(got, Err(DecodeError::HeaderListTooLarge));
    assert_eq!(
        table(&decoder),
        (vec![":authority: www.example.com".into()], 57)
    );
}

/// Raw values not indexed are slices of the block; indexed ones are copies, so the table does not
/// keep blocks alive.
#[test]
fn raw_values_share_the_block() {
    let block = hex("040c 2f73 616d 706c 652f 7061 7468 4103 6162 63");
    let mut decoder = Decoder::new(4096);
    let mut fields = Vec::new();
    decoder
        .decode(&block, 1024, |f| {
            fields.push(f);
            Ok(())
        })
        .unwrap();
    let inside = |v: &Bytes| block.as_ptr_range().contains(&v.as_ptr());
    let [Field::Pseudo(Pseudo::Path, path), Field::Pseudo(Pseudo::Authority, authority)] =
        &fields[..]
    else {
        panic!("{fields:?}")
    };
    assert!(inside(path));
    assert!(!inside(authority));
}

/// A reduction then a growth of the peer's table size between two blocks: both are signalled,
/// the smallest first (§4.2), and the entries the reduction evicted are gone on both sides.
#[test]
fn encoder_signals_the_smallest_size_then_the_last() {
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new(4096);
    let (status, map) = headers(&[":status: 200", "server: istio-envoy"]);
    let mut dst = BytesMut::new();
    encoder.encode(status, &map, &mut dst);
    decode(&mut decoder, &dst.split().freeze()).unwrap();
    encoder.set_max_table_size(0);
    encoder.set_max_table_size(8192);
    encoder.encode(status, &map, &mut dst);
    // Sizes 0 and 4096 (our most), then `server` added again (literal, static name 54).
    assert_eq!(dst[..5], hex("20 3fe11f 88")[..]);
    assert_eq!(dst[5], 0x40 | 54);
    assert_eq!(
        decode(&mut decoder, &dst.freeze()).unwrap(),
        [":status: 200", "server: istio-envoy"]
    );
    assert_eq!(table(&decoder), (vec!["server: istio-envoy".into()], 49));
}
