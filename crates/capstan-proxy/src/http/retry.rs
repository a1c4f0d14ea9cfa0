//! Retry decisions and the per-request retry state: the route's policy overridden by Envoy's
//! request headers (`x-envoy-retry-on`, `x-envoy-retry-grpc-on`, `x-envoy-max-retries`,
//! `x-envoy-retriable-status-codes`, `x-envoy-upstream-rq-timeout-ms`,
//! `x-envoy-upstream-rq-per-try-timeout-ms`), which are then removed from the request.

use crate::route::retry::{RetryOn, RetryPolicy};
use http::{HeaderMap, HeaderName};
use std::borrow::Cow;
use std::time::Duration;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived (`grpc-status` read from them for trailers-only responses).
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` in the headers, if any.
        grpc_status: Option<u32>,
    },
    /// The connection could not be made.
    ConnectFailure,
    /// The upstream reset or closed before headers (`refused`: HTTP/2 REFUSED_STREAM).
    Reset {
        /// REFUSED_STREAM.
        refused: bool,
    },
    /// The per-try timeout fired.
    PerTryTimeout,
    /// A circuit breaker refused the request (never retried).
    Overflow,
    /// No healthy host (never retried).
    NoHealthyUpstream,
}

/// The effective retry settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryState<'a> {
    /// Effective policy (the route's, copied only when a header overrides it).
    pub policy: Cow<'a, RetryPolicy>,
    /// Effective route timeout (None: disabled).
    pub timeout: Option<Duration>,
}

fn header_u64(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

const RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
const RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
const MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
const RETRIABLE_STATUS_CODES: HeaderName =
    HeaderName::from_static("x-envoy-retriable-status-codes");
const RQ_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
const PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");

/// No retry: the policy of a route without one.
static NO_RETRY: std::sync::LazyLock<RetryPolicy> = std::sync::LazyLock::new(|| RetryPolicy {
    num_retries: 0,
    ..RetryPolicy::default()
});

/// Builds the request's retry state from the route's `policy` and `timeout`; when `honour` is
/// true (the request is trusted) Envoy's `x-envoy-*` request headers override them. The headers
/// are removed either way, as the router consumes them.
pub fn state<'a>(
    policy: Option<&'a RetryPolicy>,
    timeout: Option<Duration>,
    headers: &mut HeaderMap,
    honour: bool,
) -> RetryState<'a> {
    let route_policy = Cow::Borrowed(policy.unwrap_or(&NO_RETRY));
    // Most requests carry none of these headers (though often `x-envoy-internal`): one pass
    // over the names instead of twelve lookups.
    let names = [
        RETRY_ON,
        RETRY_GRPC_ON,
        MAX_RETRIES,
        RETRIABLE_STATUS_CODES,
        RQ_TIMEOUT_MS,
        PER_TRY_TIMEOUT_MS,
    ];
    let present = headers.keys().any(|k| {
        k.as_str()
            .strip_prefix("x-envoy-")
            .is_some_and(|_| names.contains(k))
    });
    if !present {
        return RetryState {
            policy: route_policy,
            timeout,
        };
    }
    let mut p = route_policy;
    let mut timeout = timeout;
    if honour {
        let had_policy = policy.is_some();
        let mut on_header = false;
        for name in [&RETRY_ON, &RETRY_GRPC_ON] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                p.to_mut().on.0 |= RetryOn::parse(v).0 .0;
                on_header = true;
            }
        }
        if on_header && !had_policy {
            p.to_mut().num_retries = 1;
        }
        if let Some(n) = header_u64(headers, &MAX_RETRIES) {
            p.to_mut().num_retries = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = headers
            .get(&RETRIABLE_STATUS_CODES)
            .and_then(|v| v.to_str().ok())
        {
            p.to_mut()
                .status_codes
                .extend(v.split(',').filter_map(|c| c.trim().parse::<u16>().ok()));
        }
        if let Some(ms) = header_u64(headers, &RQ_TIMEOUT_MS) {
            timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(ms) = header_u64(headers, &PER_TRY_TIMEOUT_MS) {
            p.to_mut().per_try_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
    }
    for name in names {
        headers.remove(name);
    }
    RetryState { policy: p, timeout }
}

/// Whether `outcome` is retriable under `on` and `status_codes` (Envoy's `RetryStateImpl`).
pub fn retriable(on: RetryOn, status_codes: &[u16], outcome: Outcome) -> bool {
    match outcome {
        Outcome::Overflow | Outcome::NoHealthyUpstream => false,
        Outcome::ConnectFailure => on.has(
            RetryOn::CONNECT_FAILURE
                | RetryOn::FIVE_XX
                | RetryOn::GATEWAY_ERROR
                | RetryOn::RESET
                | RetryOn::RESET_BEFORE_REQUEST,
        ),
        Outcome::Reset { refused } => {
            on.has(RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET)
                || (refused && on.has(RetryOn::REFUSED_STREAM))
        }
        Outcome::PerTryTimeout => on.has(RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR),
        Outcome::Response {
            status,
            grpc_status,
        } => {
            (on.has(RetryOn::FIVE_XX) && status >= 500)
                || (on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
                || (on.has(RetryOn::STATUS_CODES) && status_codes.contains(&status))
                || match grpc_status {
                    Some(1) => on.has(RetryOn::GRPC_CANCELLED),
                    Some(4) => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
                    Some(8) => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
                    Some(13) => on.has(RetryOn::GRPC_INTERNAL),
                    Some(14) => on.has(RetryOn::GRPC_UNAVAILABLE),
                    _ => false,
                }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(s: &str) -> RetryOn {
        RetryOn::parse(s).0
    }

    #[test]
    fn retry_decisions() {
        let resp = |status, grpc_status| Outcome::Response {
            status,
            grpc_status,
        };
        let cases: Vec<(&str, Vec<u16>, Outcome, bool)> = vec![
            ("5xx", vec![], resp(500, None), true),
            ("5xx", vec![], resp(404, None), false),
            ("5xx", vec![], Outcome::ConnectFailure, true),
            ("5xx", vec![], Outcome::PerTryTimeout, true),
            ("gateway-error", vec![], resp(500, None), false),
            ("gateway-error", vec![], resp(503, None), true),
            (
                "gateway-error",
                vec![],
                Outcome::Reset { refused: false },
                true,
            ),
            ("reset", vec![], Outcome::Reset { refused: false }, true),
            ("reset", vec![], resp(503, None), false),
            ("connect-failure", vec![], Outcome::ConnectFailure, true),
            (
                "connect-failure",
                vec![],
                Outcome::Reset { refused: false },
                false,
            ),
            (
                "refused-stream",
                vec![],
                Outcome::Reset { refused: true },
                true,
            ),
            (
                "refused-stream",
                vec![],
                Outcome::Reset { refused: false },
                false,
            ),
            ("retriable-4xx", vec![], resp(409, None), true),
            ("retriable-4xx", vec![], resp(400, None), false),
            ("retriable-status-codes", vec![418], resp(418, None), true),
            ("retriable-status-codes", vec![], resp(418, None), false),
            ("unavailable", vec![], resp(200, Some(14)), true),
            ("cancelled", vec![], resp(200, Some(14)), false),
            ("5xx", vec![], Outcome::Overflow, false),
            ("5xx", vec![], Outcome::NoHealthyUpstream, false),
        ];
        for (i, (s, codes, o, want)) in cases.into_iter().enumerate() {
            assert_eq!(retriable(on(s), &codes, o), want, "case {i}: {s} {o:?}");
        }
    }

    #[test]
    fn headers_override_policy_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-envoy-retry-on", "5xx".parse().unwrap());
        h.insert("x-envoy-max-retries", "3".parse().unwrap());
        h.insert("x-envoy-upstream-rq-timeout-ms", "250".parse().unwrap());
        h.insert(
            "x-envoy-upstream-rq-per-try-timeout-ms",
            "50".parse().unwrap(),
        );
        let s = state(None, Some(Duration::from_secs(15)), &mut h.clone(), true);
        assert!(s.policy.on.has(RetryOn::FIVE_XX));
        assert_eq!(s.policy.num_retries, 3);
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        assert_eq!(s.policy.per_try_timeout, Some(Duration::from_millis(50)));
        let s = state(None, None, &mut h, false);
        assert_eq!(s.policy.num_retries, 0);
        assert_eq!(s.timeout, None);
        assert!(h.is_empty(), "x-envoy headers are consumed");
    }

    /// Other `x-envoy-*` headers (`x-envoy-internal` on most internal requests) are neither
    /// read nor removed, and the route's policy applies as it is.
    #[test]
    fn other_envoy_headers_leave_the_route_policy() {
        let route = RetryPolicy {
            num_retries: 2,
            status_codes: vec![503],
            ..RetryPolicy::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-envoy-internal", "true".parse().unwrap());
        let s = state(Some(&route), Some(Duration::from_secs(1)), &mut h, true);
        assert!(matches!(s.policy, Cow::Borrowed(_)));
        assert_eq!(*s.policy, route);
        assert_eq!(s.timeout, Some(Duration::from_secs(1)));
        assert_eq!(h["x-envoy-internal"], "true");
        h.insert("x-envoy-max-retries", "5".parse().unwrap());
        let s = state(Some(&route), None, &mut h, true);
        assert_eq!(
            (s.policy.num_retries, s.policy.status_codes.as_slice()),
            (5, &[503][..])
        );
        assert!(!h.contains_key("x-envoy-max-retries"));
        assert_eq!(h["x-envoy-internal"], "true");
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = RetryPolicy::default();
        for n in 1..6 {
            for r in [0u64, 7, 1_000_003, u64::MAX] {
                let b = p.backoff(n, r);
                let cap = (25u64 << (n - 1)).min(250);
                assert!(b < Duration::from_millis(cap), "n={n} r={r} {b:?}");
            }
        }
    }
}
