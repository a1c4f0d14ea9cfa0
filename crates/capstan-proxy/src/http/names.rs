//! The header names the request path uses, as constants: a `&str` name is parsed on every use,
//! and a non-standard one is also copied into a new allocation when inserted.

use http::{HeaderName, HeaderValue};

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-client-cert`.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// `x-envoy-internal`.
pub const X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
/// `x-envoy-upstream-service-time`.
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
/// `x-envoy-expected-rq-timeout-ms`.
pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
/// `x-envoy-attempt-count`.
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A header value for a number: a static one for 0 to 9 (attempt counts, upstream service
/// times in milliseconds on a fast path), where `HeaderValue::from` would allocate.
pub fn number(n: u64) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(n as usize) {
        Some(d) if n < 10 => HeaderValue::from_static(d),
        _ => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_as_header_values() {
        for n in [0, 1, 9, 10, 99, 1234, u64::MAX] {
            assert_eq!(super::number(n), http::HeaderValue::from(n), "{n}");
        }
    }
}
