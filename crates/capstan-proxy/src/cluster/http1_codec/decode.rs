//! A response body read from the connection's buffer, framed as hyper's HTTP/1 decoder reads it
//! (`proto/h1/decode.rs`): a `Content-Length` body, a chunked one (chunk extensions skipped up
//! to hyper's 16 KiB, trailers up to 16 KiB and 100 fields, the same refusals of malformed size
//! lines), or one that runs to the connection's close. Bytes after the body stay in the buffer.

use super::parse::Framing;
use super::Error;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;

/// hyper's limit on a body's chunk-extension bytes.
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// hyper's limit on the trailer section's bytes.
const TRAILER_LIMIT: usize = 16 * 1024;
/// hyper's limit on the trailer section's fields.
const MAX_TRAILERS: usize = 100;

/// What the decoder has next.
#[derive(Debug)]
pub enum Step {
    /// A frame of the body.
    Frame(Frame<Bytes>),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

/// A response body's decoder.
#[derive(Debug)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    /// A chunked body.
    Chunked(Box<Chunked>),
    /// Up to the close.
    Close,
    /// Ended.
    Done,
}

/// Where a chunked body's reader is (hyper's `ChunkedState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// A chunked body's reading state.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    extensions: u64,
    trailers: Option<BytesMut>,
    trailer_count: usize,
}

fn invalid(what: &'static str) -> Error {
    Error::body(std::io::Error::new(std::io::ErrorKind::InvalidInput, what))
}

fn incomplete() -> Error {
    Error::body(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "end of file before message length reached",
    ))
}

impl Decoder {
    /// The decoder for `framing`.
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Box::new(Chunked {
                state: State::Start,
                size: 0,
                extensions: 0,
                trailers: None,
                trailer_count: 0,
            })),
            Framing::Close => Decoder::Close,
        }
    }

    /// Whether the body has ended.
    pub fn is_end(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// How many bytes are still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next frame (or the end) from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        match self {
            Decoder::Done => Ok(Step::End),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = Decoder::Done;
                }
                Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())))
            }
            Decoder::Close if buf.is_empty() => Ok(Step::More),
            Decoder::Close => Ok(Step::Frame(Frame::data(buf.split().freeze()))),
            Decoder::Chunked(c) => {
                let step = c.decode(buf)?;
                if matches!(step, Step::End) {
                    *self = Decoder::Done;
                }
                Ok(step)
            }
        }
    }

    /// The connection's read side has closed: the end of a body delimited by it, else an error.
    pub fn eof(&mut self) -> Result<(), Error> {
        match self {
            Decoder::Close | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            Decoder::Length(_) => Err(incomplete()),
            Decoder::Chunked(c) if c.state == State::Body => Err(incomplete()),
            Decoder::Chunked(_) => Err(Error::body(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "unexpected EOF during chunk size line",
            ))),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        loop {
            match self.state {
                State::Body => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(self.size).map_or(buf.len(), |r| r.min(buf.len()));
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::BodyCr;
                    }
                    return Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                State::End => {
                    return match self.trailers.take() {
                        Some(t) => Ok(Step::Frame(Frame::trailers(decode_trailers(
                            &t,
                            self.trailer_count,
                        )?))),
                        None => Ok(Step::End),
                    };
                }
                _ => {}
            }
            let Some(&b) = buf.first() else {
                return Ok(Step::More);
            };
            buf.advance(1);
            self.state = self.step(b)?;
        }
    }

    /// hyper's `ChunkedState::step` for one byte (not of a chunk's data).
    fn step(&mut self, b: u8) -> Result<State, Error> {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b + 10 - b'a'),
            b'A'..=b'F' => Some(b + 10 - b'A'),
            _ => None,
        };
        let overflow = || {
            Error::body(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid chunk size: overflow",
            ))
        };
        Ok(match self.state {
            State::Start | State::Size => match (digit(b), self.state) {
                (Some(d), _) => {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or_else(overflow)?;
                    State::Size
                }
                (None, State::Start) => {
                    return Err(invalid("Invalid chunk size line: missing size digit"))
                }
                (None, _) => match b {
                    b'\t' | b' ' => State::SizeLws,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(invalid("Invalid chunk size line: Invalid Size")),
                },
            },
            State::SizeLws => match b {
                b'\t' | b' ' => State::SizeLws,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(invalid("Invalid chunk size linear white space")),
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                b'\n' => {
                    return Err(Error::body(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "invalid chunk extension contains newline",
                    )))
                }
                _ => {
                    self.extensions += 1;
                    if self.extensions >= EXTENSIONS_LIMIT {
                        return Err(Error::body(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "chunk extensions over limit",
                        )));
                    }
                    State::Extension
                }
            },
            State::SizeLf => match b {
                b'\n' if self.size == 0 => State::EndCr,
                b'\n' => State::Body,
                _ => return Err(invalid("Invalid chunk size LF")),
            },
            State::BodyCr => match b {
                b'\r' => State::BodyLf,
                _ => return Err(invalid("Invalid chunk body CR")),
            },
            State::BodyLf => match b {
                b'\n' => State::Start,
                _ => return Err(invalid("Invalid chunk body LF")),
            },
            State::Trailer => {
                self.put_trailer(b)?;
                if b == b'\r' {
                    State::TrailerLf
                } else {
                    State::Trailer
                }
            }
            State::TrailerLf => match b {
                b'\n' => {
                    if self.trailer_count >= MAX_TRAILERS {
                        return Err(Error::body(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "chunk trailers count overflow",
                        )));
                    }
                    self.trailer_count += 1;
                    self.put_trailer(b)?;
                    State::EndCr
                }
                _ => return Err(invalid("Invalid trailer end LF")),
            },
            State::EndCr => {
                if b == b'\r' {
                    if self.trailers.is_some() {
                        self.put_trailer(b)?;
                    }
                    State::EndLf
                } else {
                    match self.trailers.as_mut() {
                        None => {
                            let mut t = BytesMut::with_capacity(64);
                            t.extend_from_slice(&[b]);
                            self.trailers = Some(t);
                        }
                        Some(_) => self.put_trailer(b)?,
                    }
                    State::Trailer
                }
            }
            State::EndLf => match b {
                b'\n' => {
                    if self.trailers.is_some() {
                        self.put_trailer(b)?;
                    }
                    State::End
                }
                _ => return Err(invalid("Invalid chunk end LF")),
            },
            // Not reached: the caller handles these without a byte.
            State::Body | State::End => self.state,
        })
    }

    fn put_trailer(&mut self, b: u8) -> Result<(), Error> {
        let t = self.trailers.get_or_insert_with(BytesMut::new);
        t.extend_from_slice(&[b]);
        if t.len() >= TRAILER_LIMIT {
            return Err(Error::body(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "chunk trailers bytes over limit",
            )));
        }
        Ok(())
    }
}

/// hyper's `decode_trailers`: the trailer section parsed by httparse, each field checked.
fn decode_trailers(buf: &[u8], count: usize) -> Result<HeaderMap, Error> {
    let mut fields = vec![httparse::EMPTY_HEADER; count];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = http::HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| invalid("Invalid header name"))?;
                let value = http::HeaderValue::from_bytes(f.value)
                    .map_err(|_| invalid("Invalid header value"))?;
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(invalid("Partial header")),
        Err(e) => Err(Error::body(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e,
        ))),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
