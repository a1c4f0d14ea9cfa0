//! A gRPC request's `grpc-timeout` as a deadline, in Envoy's two route forms:
//!
//! - `max_stream_duration` in the form istiod sends on inbound routes (`0s`, with
//!   `grpc_timeout_header_max`): no limit of the proxy's own, and the header as the stream's
//!   deadline, capped by `grpc_timeout_header_max` unless that is 0 (Envoy's
//!   `ConnectionManagerImpl::ActiveStream::refreshDurationTimeout`). A stream past its deadline
//!   is answered `grpc-status: 4` (DEADLINE_EXCEEDED, "downstream duration timeout") before the
//!   response has started, and reset after.
//! - the deprecated `max_grpc_timeout` (istiod's outbound and gateway routes): the header as
//!   the *route timeout* in place of the route's `timeout` ([`grpc_route_timeout`]), so it runs
//!   through the router's timeout as any route timeout does (retries included, `504` when it
//!   fires, `x-envoy-upstream-rq-timeout-ms` over it), and the upstream is told the timeout it
//!   gets in `grpc-timeout` ([`upstream_grpc_timeout`]).

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
    let t = parse_grpc_timeout(headers.get(super::names::GRPC_TIMEOUT)?.to_str().ok()?)?;
    let t = if max.is_zero() { t } else { t.min(max) };
    (!t.is_zero()).then_some(t)
}

/// Whether Envoy's router treats a request as gRPC: `content-type` `application/grpc`, alone
/// or with a `+` subtype (`application/grpc+proto`); `application/grpc-web` is not.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+"))
}

/// A gRPC request's route timeout under `max_grpc_timeout` (`max`, 0 for no cap) and
/// `grpc_timeout_offset`, as Envoy's router computes it: the `grpc-timeout` header (absent or
/// unreadable: no limit), less the offset when the offset is smaller, capped at `max` unless
/// `max` is 0 (so a non-zero `max` also bounds a request without the header). `None` is no
/// limit. The caller checks [`is_grpc`]: other requests keep the route's `timeout`.
pub fn grpc_route_timeout(
    max: Duration,
    offset: Option<Duration>,
    headers: &http::HeaderMap,
) -> Option<Duration> {
    let mut t = headers
        .get(super::names::GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(Duration::ZERO);
    if let Some(o) = offset.filter(|o| *o < t) {
        t -= o;
    }
    if !max.is_zero() && (t.is_zero() || t > max) {
        t = max;
    }
    (!t.is_zero()).then_some(t)
}

/// What the upstream is told in `grpc-timeout` under `max_grpc_timeout` (Envoy's router sets
/// the header to its expected timeout): the per-try timeout when it is shorter than the route
/// timeout (or there is none), else the route timeout; `None` (no limit) leaves the client's
/// header as it is.
pub fn upstream_grpc_timeout(
    route: Option<Duration>,
    per_try: Option<Duration>,
) -> Option<HeaderValue> {
    let expected = match (route, per_try) {
        (Some(r), Some(p)) => Some(r.min(p)),
        (r, p) => r.or(p),
    }
    .filter(|t| !t.is_zero())?;
    HeaderValue::from_str(&format_grpc_timeout(expected)).ok()
}

/// A `grpc-timeout` value: milliseconds (rounded up, so never 0), in a larger unit when they
/// do not fit the 8 digits the header allows.
pub fn format_grpc_timeout(t: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = t.as_nanos().div_ceil(1_000_000);
    [(1, "m"), (1_000, "S"), (60_000, "M"), (3_600_000, "H")]
        .iter()
        .map(|(per, unit)| (ms / per, unit))
        .find(|(n, _)| *n <= MAX)
        .map_or_else(|| format!("{MAX}H"), |(n, unit)| format!("{n}{unit}"))
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

    /// `max_grpc_timeout` with and without `grpc_timeout_offset`: the header, or no limit
    /// without it, offset when the offset is smaller, capped unless the cap is 0.
    #[test]
    fn route_timeouts_from_the_header() {
        let headers = |t: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                "application/grpc".parse().unwrap(),
            );
            if let Some(t) = t {
                h.insert("grpc-timeout", t.parse().unwrap());
            }
            h
        };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            // istiod's outbound form: `max_grpc_timeout: 0s`.
            (s(0), None, Some("5S"), Some(s(5))),
            (s(0), None, None, None),
            (s(0), None, Some("0S"), None),
            (s(0), None, Some("bogus"), None),
            // A cap bounds the header, and a request without one.
            (s(2), None, Some("5S"), Some(s(2))),
            (s(10), None, Some("5S"), Some(s(5))),
            (s(10), None, None, Some(s(10))),
            // The offset applies only when smaller than the header's value.
            (s(0), Some(ms(500)), Some("2S"), Some(ms(1500))),
            (s(0), Some(s(2)), Some("2S"), Some(s(2))),
            (s(0), Some(s(3)), Some("2S"), Some(s(2))),
            (s(0), Some(s(1)), None, None),
            (s(1), Some(ms(500)), Some("5S"), Some(s(1))),
        ];
        for (i, (max, offset, header, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                grpc_route_timeout(max, offset, &headers(header)),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn grpc_content_types() {
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn upstream_is_told_the_expected_timeout() {
        let ms = Duration::from_millis;
        let cases = [
            (Some(ms(1500)), None, Some("1500m")),
            (Some(ms(1500)), Some(ms(200)), Some("200m")),
            (Some(ms(200)), Some(ms(1500)), Some("200m")),
            (None, Some(ms(300)), Some("300m")),
            (None, None, None),
            (Some(Duration::from_micros(10)), None, Some("1m")),
            (Some(Duration::from_secs(200_000)), None, Some("200000S")),
        ];
        for (i, (route, per_try, want)) in cases.into_iter().enumerate() {
            let got = upstream_grpc_timeout(route, per_try);
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "case {i}");
        }
        for t in ["1m", "99999999m", "100000S", "5H"] {
            let d = parse_grpc_timeout(t).unwrap();
            assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)), Some(d), "{t}");
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
