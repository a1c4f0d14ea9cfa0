//! The downstream HTTP/2 server on the `h2` crate, without hyper's server glue: each stream's
//! request runs as a future inside the connection's own task (no task spawned, no future copied
//! into one), its body read straight from the stream, its response written straight to it.
//!
//! Connections whose listener allows RFC 8441 extended CONNECT (`allow_connect`) stay on
//! hyper's server, whose upgrade (`hyper::upgrade::on`) carries those tunnels.
//!
//! The settings are those hyper's HTTP/2 server used for us: 1 MiB stream and connection
//! windows, 16 KiB frames, a 16 KiB header list, 200 concurrent streams, a 400 KiB send buffer
//! per stream, at most 1024 locally reset streams; like hyper, a response gets a `date` header
//! if it has none and a `content-length` when its body's size is known.

mod body;

use super::{BoxBody, Ctx};
use body::RequestBody;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::{header, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};

const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 200;
const MAX_SEND_BUFFER_SIZE: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The client connection preface's first line; enough of it, at the start of what the HTTP/1
/// codec read, says the client speaks HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether bytes read by the HTTP/1 codec before it handed the connection off begin HTTP/2's
/// connection preface. Too short to tell, the connection stays with hyper's codec, which reads on.
pub(super) fn starts_preface(read: &[u8]) -> bool {
    let n = read.len().min(PREFACE.len());
    n >= b"PRI * HTTP/2.0".len() && read[..n] == PREFACE[..n]
}

/// Serves one HTTP/2 connection until it closes, or until its listener's drain: then GOAWAY,
/// in-flight streams finish, and what still runs when the drain window ends is cut.
pub(super) async fn serve<IO>(io: IO, ctx: &Arc<Ctx>, drain: &mut crate::drain::Drain)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut builder = ::h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS));
    // A drain begun before the handshake is done closes the connection (as hyper does).
    let mut conn = tokio::select! {
        r = builder.handshake::<_, Bytes>(io) => match r {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("http/2 handshake: {e}");
                return;
            }
        },
        _ = drain.started() => return,
    };
    let mut streams = FuturesUnordered::new();
    let mut started = pin!(drain.started());
    let mut window_end: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let quiet = Arc::new(QuietWaker {
        task: futures::task::AtomicWaker::new(),
        quiet: AtomicBool::new(false),
        // The handshake may have read frames already.
        woken: AtomicBool::new(true),
    });
    let conn_waker = Waker::from(quiet.clone());
    let outcome = poll_fn(|cx| {
        if window_end.is_none() {
            if let Poll::Ready(end) = started.as_mut().poll(cx) {
                conn.graceful_shutdown();
                // GOAWAY goes out on the connection's next poll.
                quiet.woken.store(true, Ordering::Release);
                window_end = Some(Box::pin(tokio::time::sleep_until(end)));
            }
        }
        if let Some(end) = window_end.as_mut() {
            if end.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(None));
            }
        }
        quiet.task.register(cx.waker());
        let mut conn_cx = Context::from_waker(&conn_waker);
        loop {
            // The streams first: what they send, the connection then writes. Meanwhile the
            // connection's wake-ups are redundant (it is polled next) and not passed on, which
            // spares a poll of the task after each response and each new stream.
            quiet.quiet.store(true, Ordering::Release);
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            quiet.quiet.store(false, Ordering::Release);
            // Polled only when something woke it (its socket, a stream's frames or drop, the
            // drain): the task is also woken for its streams alone (an upstream's answer, h2
            // telling a stream about capacity), and a poll of the connection costs thousands
            // of instructions.
            if !quiet.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            match conn.poll_accept(&mut conn_cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    // Boxed where it is made: the stream's future (the whole request path) is
                    // then moved as a pointer, not copied into the set's node.
                    streams.push(box_in_place(|| serve_stream(ctx.clone(), req, respond)));
                    // There may be more: poll it again.
                    quiet.woken.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Some(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    match outcome {
        Ok(()) => {}
        Err(Some(e)) => tracing::debug!("http/2 connection: {e}"),
        Err(None) => {
            tracing::debug!("http connection still busy at the end of the drain window: closed")
        }
    }
}

/// Boxes the future `make` returns, built in its heap slot. `Box::pin(make())` builds it on the
/// stack and then copies all of it into the box: a request's future is some 6.7 KB, nearly all
/// of it space for later states, copied for every stream.
fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the slot was written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// The waker the h2 connection is polled with: it records that the connection has something
/// to do, and wakes the connection's task, except while the task polls its streams, right
/// before it polls the connection anyway.
struct QuietWaker {
    task: futures::task::AtomicWaker,
    quiet: AtomicBool,
    woken: AtomicBool,
}

impl std::task::Wake for QuietWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if !self.quiet.load(Ordering::Acquire) {
            self.task.wake();
        }
    }
}

/// Serves one stream: the request through the connection manager, cancelled (dropped) if the
/// client resets the stream first, then the response.
async fn serve_stream(
    ctx: Arc<Ctx>,
    req: Request<::h2::RecvStream>,
    mut respond: ::h2::server::SendResponse<Bytes>,
) {
    let length = body::content_length(req.headers());
    // A request that ended with its headers (a GET) gets an empty body: boxing a zero-sized
    // body allocates nothing, and reading it does not lock h2's stream store as the stream's
    // would. The receiving half is dropped; the response half keeps the stream.
    let req = req.map(|recv| {
        if recv.is_end_stream() {
            http_body_util::Empty::new()
                .map_err(|e: std::convert::Infallible| -> super::BoxError { match e {} })
                .boxed()
        } else {
            RequestBody::new(recv, length).boxed()
        }
    });
    let resp = {
        let mut serving = pin!(super::serve_request(ctx, req));
        poll_fn(|cx| {
            if let Poll::Ready(r) = serving.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            match respond.poll_reset(cx) {
                Poll::Ready(reason) => {
                    tracing::debug!(?reason, "http/2 stream reset by the client");
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    };
    let Some(resp) = resp else { return };
    let (mut head, body) = resp.into_parts();
    let present = body::strip_connection_headers(&mut head.headers);
    if !present.date {
        head.headers
            .insert(header::DATE, super::h1::date::header_value());
    }
    let end = body.is_end_stream();
    if !end && !present.content_length {
        if let Some(n) = body.size_hint().exact() {
            head.headers.insert(header::CONTENT_LENGTH, n.into());
        }
    }
    let tx = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!("http/2 response: {e}");
            respond.send_reset(::h2::Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !end {
        send_body(tx, body).await;
    }
}

/// Writes a response body to its stream as the client's flow control allows: each chunk but
/// the last once the stream has some capacity (h2 holds the rest, up to its send buffer), then
/// the trailers or the end of the stream. A body error resets the stream.
async fn send_body(mut tx: ::h2::SendStream<Bytes>, mut body: BoxBody) {
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(f) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Some(f));
            }
            // Waiting for the body, a client reset ends the stream (and drops the body).
            match tx.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let frame = match frame {
            None => return,
            Some(None) => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(e))) => {
                tracing::debug!("http/2 response body: {e}");
                tx.send_reset(::h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Some(Ok(f))) => f,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    tx.reserve_capacity(0);
                    let _ = tx.send_trailers(trailers);
                    return;
                }
                continue;
            }
        };
        let end = body.is_end_stream();
        // The last chunk goes straight to h2, which asks for the capacity it lacks and holds
        // the rest meanwhile (the usual answer is one chunk: no reservation to make). Before
        // the others, the stream must have room, so that the body is not read ahead of what
        // the client takes.
        if !data.is_empty() && !end {
            tx.reserve_capacity(data.len());
            while tx.capacity() == 0 {
                match poll_fn(|cx| tx.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    // Reset or closed.
                    Some(Err(_)) | None => return,
                }
            }
        } else if !end {
            continue;
        }
        if tx.send_data(data, end).is_err() || end {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
