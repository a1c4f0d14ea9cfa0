//! A route's `max_stream_duration` in the form istiod sends on inbound routes (`0s`, with
//! `grpc_timeout_header_max`): no limit of the proxy's own, and a gRPC request's `grpc-timeout`
//! as its stream's deadline, capped by `grpc_timeout_header_max` unless that is 0 (Envoy's
//! `ConnectionManagerImpl::ActiveStream::refreshDurationTimeout`). A stream past its deadline
//! is answered `grpc-status: 4` (DEADLINE_EXCEEDED, "downstream duration timeout") before the
//! response has started, and reset after.

use super::{BoxBody, BoxError};
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

const EXPIRED: &str = "downstream duration timeout";

/// Parses a `grpc-timeout` value (gRPC over HTTP/2: 1 to 8 digits, then `H`, `M`, `S`, `m`,
/// `u` or `n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if !(2..=9).contains(&v.len()) || !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long a request's stream may last: with `header_max` set (the route honours the header;
/// 0 leaves it uncapped), a gRPC request's `grpc-timeout`, capped; `None` is no limit (also for
/// a `grpc-timeout` of 0, as Envoy).
pub fn stream_limit(header_max: Option<Duration>, headers: &http::HeaderMap) -> Option<Duration> {
    let max = header_max?;
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return None;
    }
    let t = parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)?;
    let t = if max.is_zero() { t } else { t.min(max) };
    (!t.is_zero()).then_some(t)
}

/// The answer to a gRPC request whose deadline passed before the response started: a
/// trailers-only response with DEADLINE_EXCEEDED, as Envoy's gRPC local replies.
pub fn expired() -> Response<BoxBody> {
    let mut r = super::local_reply(200, "");
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static("4"));
    h.insert("grpc-message", HeaderValue::from_static(EXPIRED));
    r
}

/// A response body that fails (resetting the stream) once `deadline` passes.
struct Deadline {
    inner: BoxBody,
    sleep: Pin<Box<Sleep>>,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(EXPIRED.into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with its body cut off at `deadline`.
pub fn bounded(resp: Response<BoxBody>, deadline: Instant) -> Response<BoxBody> {
    resp.map(|inner| {
        BoxBody::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn grpc_timeout_values() {
        let cases = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("10u", Some(Duration::from_micros(10))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("1s", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_grpc_timeout(v), want, "{v}");
        }
    }

    #[test]
    fn limits() {
        let headers = |ct: &str, t: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            if let Some(t) = t {
                h.insert("grpc-timeout", t.parse().unwrap());
            }
            h
        };
        let s = Duration::from_secs;
        let grpc = "application/grpc+proto";
        let cases = [
            (Some(s(0)), headers(grpc, Some("5S")), Some(s(5))),
            (Some(s(2)), headers(grpc, Some("5S")), Some(s(2))),
            (Some(s(10)), headers(grpc, Some("5S")), Some(s(5))),
            (None, headers(grpc, Some("5S")), None),
            (Some(s(0)), headers(grpc, None), None),
            (Some(s(0)), headers(grpc, Some("0S")), None),
            (Some(s(0)), headers("application/json", Some("5S")), None),
        ];
        for (i, (max, h, want)) in cases.into_iter().enumerate() {
            assert_eq!(stream_limit(max, &h), want, "case {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_deadline_fails() {
        let (mut tx, rx) = channel(1);
        let resp = Response::new(BoxBody::new(rx));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut body = bounded(resp, deadline).into_body();
        tx.send(Bytes::from_static(b"a")).await;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), EXPIRED);
        drop(tx);
    }

    /// A streaming body fed through a channel.
    fn channel(n: usize) -> (Sender, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(n);
        (Sender(tx), ChannelBody(rx))
    }

    struct Sender(tokio::sync::mpsc::Sender<Bytes>);

    impl Sender {
        async fn send(&mut self, b: Bytes) {
            self.0.send(b).await.unwrap();
        }
    }

    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }
}
