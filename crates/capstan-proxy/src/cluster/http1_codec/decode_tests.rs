//! Bodies of each framing, whole and one byte at a time; what follows them stays.

use super::*;

/// The data, the trailers and what is left in the buffer.
type Decoded = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

/// Decodes `wire` fed in pieces of `step` bytes: the data, the trailers, what is left.
fn run(framing: Framing, wire: &[u8], step: usize, eof: bool) -> Result<Decoded, String> {
    let mut d = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut trailers = None;
    let mut fed = 0;
    loop {
        match d.decode(&mut buf).map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })? {
            Step::Frame(f) => match f.into_data() {
                Ok(b) => data.extend_from_slice(&b),
                Err(f) => trailers = f.into_trailers().ok(),
            },
            Step::End => {
                // What was not fed yet follows what is left.
                let mut left = buf.to_vec();
                left.extend_from_slice(&wire[fed..]);
                return Ok((data, trailers, left));
            }
            Step::More if fed < wire.len() => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Step::More if eof => {
                d.eof().map_err(|e| {
                    format!(
                        "{e}: {}",
                        std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    )
                })?;
            }
            Step::More => return Err("more".into()),
        }
    }
}

#[test]
fn bodies_of_each_framing_whole_and_byte_by_byte() {
    let cases: &[(Framing, &str, bool, &str, &str)] = &[
        (Framing::Length(5), "hello", false, "hello", ""),
        (
            Framing::Length(5),
            "helloHTTP/1.1",
            false,
            "hello",
            "HTTP/1.1",
        ),
        (Framing::Length(0), "x", false, "", "x"),
        (
            Framing::Chunked,
            "5\r\nhello\r\n0\r\n\r\n",
            false,
            "hello",
            "",
        ),
        (
            Framing::Chunked,
            "3;a=b\r\nabc\r\nA \t\r\n0123456789\r\n0\r\n\r\nrest",
            false,
            "abc0123456789",
            "rest",
        ),
        (
            Framing::Chunked,
            "2\r\nab\r\n0\r\nx-t: 1\r\nx-u: 2\r\n\r\nrest",
            false,
            "ab",
            "rest",
        ),
        (Framing::Close, "all of it", true, "all of it", ""),
    ];
    for (framing, wire, eof, data, rest) in cases {
        for step in [wire.len().max(1), 1] {
            let (got, _, left) = run(*framing, wire.as_bytes(), step, *eof)
                .unwrap_or_else(|e| panic!("{wire:?} by {step}: {e}"));
            assert_eq!(
                (got.as_slice(), left.as_slice()),
                (data.as_bytes(), rest.as_bytes()),
                "{wire:?} by {step}"
            );
        }
    }
}

#[test]
fn chunked_trailers_come_as_a_frame() {
    for step in [64, 1] {
        let (_, trailers, _) = run(
            Framing::Chunked,
            b"1\r\na\r\n0\r\nx-t: 1\r\nx-u: 2\r\n\r\n",
            step,
            false,
        )
        .expect("valid");
        let t = trailers.expect("trailers");
        assert_eq!(
            (
                t.get("x-t").map(|v| v.as_bytes()),
                t.get("x-u").map(|v| v.as_bytes())
            ),
            (Some(&b"1"[..]), Some(&b"2"[..]))
        );
    }
}

#[test]
fn malformed_and_cut_bodies_fail() {
    let cases: &[(Framing, &str, &str)] = &[
        (
            Framing::Chunked,
            "zz\r\n",
            "Invalid chunk size line: missing size digit",
        ),
        (
            Framing::Chunked,
            "1X\r\n",
            "Invalid chunk size line: Invalid Size",
        ),
        (
            Framing::Chunked,
            "1 A\r\n",
            "Invalid chunk size linear white space",
        ),
        (Framing::Chunked, "1\rX", "Invalid chunk size LF"),
        (Framing::Chunked, "1\r\naXX", "Invalid chunk body CR"),
        (
            Framing::Chunked,
            "1;a\nb",
            "invalid chunk extension contains newline",
        ),
        (
            Framing::Chunked,
            "FFFFFFFFFFFFFFFFF\r\n",
            "invalid chunk size: overflow",
        ),
        (Framing::Chunked, "0\r\n\rX", "Invalid chunk end LF"),
        (
            Framing::Chunked,
            "0\r\nbad name: 1\r\n\r\n",
            "invalid header name",
        ),
        (
            Framing::Chunked,
            "5\r\nab",
            "end of file before message length reached",
        ),
        (
            Framing::Chunked,
            "5\r\nabcde\r",
            "unexpected EOF during chunk size line",
        ),
        (
            Framing::Length(5),
            "abc",
            "end of file before message length reached",
        ),
    ];
    for (framing, wire, want) in cases {
        for step in [wire.len(), 1] {
            let got = run(*framing, wire.as_bytes(), step, true).map(|(d, _, _)| d);
            let err = got.expect_err(wire);
            assert!(
                err.starts_with("error reading a body from connection") && err.contains(want),
                "{wire:?} by {step}: {err}"
            );
        }
    }
}
