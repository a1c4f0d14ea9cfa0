//! The downstream HTTP/1.1 codec for the plain request, without hyper's server connection:
//! a keep-alive request with no body or a `Content-Length` body already read, answered in the
//! connection's own task (no body channel, no dispatcher). The first request that is not plain
//! ([`parse`]: upgrades, `CONNECT`, `Expect`, chunked bodies, `Connection: close`, HTTP/1.0,
//! a malformed or oversized head, HTTP/2's preface) hands the connection, with the bytes
//! already read (replayed by [`Prefixed`]), to hyper's codec for the rest of its life, so
//! everything beyond the plain case, error answers included, is hyper's as before. Responses are written as
//! hyper writes them ([`encode`]).

pub mod date;
pub mod encode;
pub mod parse;

use super::{BoxBody, Ctx};
use crate::net::Prefixed;
use bytes::{Buf, Bytes, BytesMut};
use encode::{BodyLength, Framing};
use http_body::Body;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

/// What the first read asks for; grown as hyper grows its buffer when a head is larger.
const READ_SIZE: usize = 8 * 1024;
/// A head not complete in this many bytes goes to hyper, which applies its own limits (431).
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read ahead (pipelined requests) while a response is pending, at most.
const MAX_BUFFERED: usize = 400 * 1024;
/// Body chunks up to this size are copied next to the head or chunk framing (one write);
/// larger ones are written on their own.
const COPY_LIMIT: usize = 16 * 1024;

/// How the fast path ended.
pub(super) enum Served<IO> {
    /// The connection is done.
    Closed,
    /// hyper's codec serves the rest of the connection, starting with these bytes.
    Handoff(Prefixed<IO>),
}

/// The listener's drain as the connection sees it: begun or not, and the end of its window.
struct Draining<'d> {
    started: Pin<&'d mut (dyn std::future::Future<Output = tokio::time::Instant> + Send)>,
    ends: Option<Pin<Box<Sleep>>>,
}

impl Draining<'_> {
    fn begun(&self) -> bool {
        self.ends.is_some()
    }

    /// Resolves when the drain begins (false), or, once it has, when its window ends (true).
    async fn next(&mut self) -> bool {
        match self.ends.as_mut() {
            Some(s) => {
                s.as_mut().await;
                true
            }
            None => {
                let end = self.started.as_mut().await;
                self.ends = Some(Box::pin(tokio::time::sleep_until(end)));
                false
            }
        }
    }
}

/// What happened while waiting for something else on the connection.
enum Waited<T> {
    Done(T),
    /// The client closed or broke the connection, or the drain window ended.
    Gone,
    /// Something else: bytes read ahead, the drain begun; wait again.
    Again,
}

/// Waits for `fut` while reading ahead, so that a client closing its connection cancels the
/// request as hyper's dispatcher does (it reads while the response is pending).
async fn wait<IO, F>(
    io: &mut IO,
    buf: &mut BytesMut,
    drain: &mut Draining<'_>,
    fut: F,
) -> Waited<F::Output>
where
    IO: AsyncRead + Unpin,
    F: std::future::Future,
{
    let room = buf.len() < MAX_BUFFERED;
    if room && buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_SIZE);
    }
    tokio::select! {
        biased;
        out = fut => Waited::Done(out),
        r = io.read_buf(buf), if room => match r {
            Ok(0) | Err(_) => Waited::Gone,
            Ok(_) => Waited::Again,
        },
        ended = drain.next() => if ended { Waited::Gone } else { Waited::Again },
    }
}

/// Serves `io`'s requests while they are plain; see the module's description.
pub(super) async fn serve<IO>(
    mut io: IO,
    ctx: &Arc<Ctx>,
    drain: &mut crate::drain::Drain,
) -> Served<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut own = drain.clone();
    let started = own.started();
    tokio::pin!(started);
    let mut drain = Draining {
        started,
        ends: None,
    };
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // The last response's header map, emptied, for the next request's headers.
    let mut headers = None;
    loop {
        let (req, head_request) = loop {
            if !buf.is_empty() {
                match parse::parse(&mut buf, &mut headers) {
                    Ok(plain) => break plain,
                    Err(parse::NotPlain::Partial) if buf.len() < MAX_HEAD => {}
                    _ => return Served::Handoff(Prefixed::new(buf.freeze(), io)),
                }
            }
            // hyper's graceful shutdown closes a connection between requests.
            if drain.begun() {
                return Served::Closed;
            }
            if buf.is_empty() {
                crate::net::rewind(&mut buf);
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return Served::Closed,
                    Ok(_) => {}
                },
                _ = drain.next() => {}
            }
        };
        let resp = {
            let mut handler = std::pin::pin!(super::serve_request(ctx.clone(), req));
            loop {
                match wait(&mut io, &mut buf, &mut drain, handler.as_mut()).await {
                    Waited::Done(r) => break r,
                    Waited::Gone => return Served::Closed,
                    Waited::Again => {}
                }
            }
        };
        match respond(
            &mut io,
            &mut buf,
            &mut out,
            &mut drain,
            resp,
            head_request,
            &mut headers,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return Served::Closed;
            }
            Err(()) => return Served::Closed,
        }
    }
}

/// Writes `resp`; whether the connection stays open after it (Err: it broke).
async fn respond<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    drain: &mut Draining<'_>,
    resp: http::Response<BoxBody>,
    head_request: bool,
    cache: &mut Option<http::HeaderMap>,
) -> Result<bool, ()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut parts, mut body) = resp.into_parts();
    let length = BodyLength::of(&body);
    out.clear();
    let head = encode::encode_head(out, &mut parts, length, head_request, !drain.begun())
        .map_err(|_| tracing::debug!("response head refused"))?;
    *cache = Some(std::mem::take(&mut parts.headers));
    let mut remaining = match head.framing {
        Framing::Length(n) => n,
        Framing::Chunked | Framing::CloseDelimited => u64::MAX,
    };
    let chunked = head.framing == Framing::Chunked;
    // The body ends where it ends; the connection closes after it.
    let delimited = head.framing == Framing::CloseDelimited;
    // A chunked head with a body already at its end still gets its last chunk, read from the
    // ended body below.
    let mut ended = !chunked && remaining == 0;
    while !ended {
        let frame = if out.is_empty() {
            match wait(io, buf, drain, body.frame()).await {
                Waited::Done(f) => f,
                Waited::Gone => return Err(()),
                Waited::Again => continue,
            }
        } else {
            // The body not ready: what is written so far goes out first.
            let polled = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(f) => Poll::Ready(Some(f)),
            })
            .await;
            match polled {
                Some(f) => f,
                None => {
                    write(io, out).await?;
                    continue;
                }
            }
        };
        let Some(frame) = frame else {
            // The body ended: short of its length, hyper breaks the connection.
            if chunked {
                out.extend_from_slice(b"0\r\n\r\n");
                break;
            }
            if delimited {
                break;
            }
            return Err(());
        };
        let Ok(frame) = frame else {
            tracing::debug!("response body failed: connection closed");
            return Err(());
        };
        let eos = body.is_end_stream();
        // Trailers are not sent: the fast path takes no request that asked for them.
        if let Ok(mut data) = frame.into_data() {
            if !chunked && !delimited && (data.len() as u64) > remaining {
                data.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
            }
            if !data.is_empty() {
                if chunked {
                    encode::chunk_size_line(out, data.len());
                } else if !delimited {
                    remaining -= data.len() as u64;
                }
                put(io, out, data).await?;
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
            if !chunked && remaining == 0 {
                ended = true;
                continue;
            }
            if !eos {
                continue;
            }
        }
        // End of the body (trailers, or data at the end of the stream).
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        } else if remaining > 0 && !delimited {
            return Err(());
        }
        ended = true;
    }
    drop(body);
    write(io, out).await?;
    Ok(!head.last && !drain.begun())
}

/// Appends `data` to what is to be written, or writes both when it is large.
async fn put<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    data: Bytes,
) -> Result<(), ()> {
    if data.len() <= COPY_LIMIT {
        out.extend_from_slice(&data);
        return Ok(());
    }
    write(io, out).await?;
    let mut data = data;
    while data.has_remaining() {
        let n = io.write(&data).await.map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        data.advance(n);
    }
    Ok(())
}

async fn write<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>) -> Result<(), ()> {
    if !out.is_empty() {
        io.write_all(out).await.map_err(|_| ())?;
        out.clear();
    }
    io.flush().await.map_err(|_| ())
}

#[cfg(test)]
mod tests;
