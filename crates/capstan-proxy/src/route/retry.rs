//! A route's `RetryPolicy`: the `retry_on` conditions, counts, timeouts and back-off.

use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3::RetryPolicy as RetryPolicyPb;
use std::time::Duration;

/// Conditions from `retry_on` / `x-envoy-retry-on` / `x-envoy-retry-grpc-on`, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    /// `5xx`: any 5xx, reset, connect failure, per-try timeout.
    pub const FIVE_XX: u32 = 1;
    /// `gateway-error`: 502, 503, 504, reset, connect failure, per-try timeout.
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    /// `reset`: the upstream reset or disconnected before a response.
    pub const RESET: u32 = 1 << 2;
    /// `connect-failure`.
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    /// `retriable-status-codes`.
    pub const STATUS_CODES: u32 = 1 << 5;
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 1 << 6;
    /// `reset-before-request`.
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 7;
    /// gRPC `cancelled`.
    pub const GRPC_CANCELLED: u32 = 1 << 8;
    /// gRPC `deadline-exceeded`.
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 9;
    /// gRPC `internal`.
    pub const GRPC_INTERNAL: u32 = 1 << 10;
    /// gRPC `resource-exhausted`.
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 11;
    /// gRPC `unavailable`.
    pub const GRPC_UNAVAILABLE: u32 = 1 << 12;
    /// `envoy-ratelimited` (never set by this proxy's responses; accepted).
    pub const ENVOY_RATELIMITED: u32 = 1 << 13;
    /// `http3-post-connect-failure` (no HTTP/3 upstreams; accepted).
    pub const HTTP3_POST_CONNECT: u32 = 1 << 14;

    const NAMES: [(&'static str, u32); 15] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("retriable-status-codes", Self::STATUS_CODES),
        ("refused-stream", Self::REFUSED_STREAM),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
        ("http3-post-connect-failure", Self::HTTP3_POST_CONNECT),
    ];

    /// Parses a comma-separated list; the unknown tokens are returned apart.
    pub fn parse(s: &str) -> (RetryOn, Vec<String>) {
        let mut bits = 0;
        let mut unknown = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match Self::NAMES.iter().find(|(n, _)| *n == t) {
                Some((_, b)) => bits |= b,
                None => unknown.push(t.to_string()),
            }
        }
        (RetryOn(bits), unknown)
    }

    /// Whether any of `bits` is set.
    pub fn has(&self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`.
    pub on: RetryOn,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout` (None: the route timeout only).
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes`.
    pub status_codes: Vec<u16>,
    /// Back-off base interval (default 25 ms).
    pub base_interval: Duration,
    /// Back-off maximum interval (default 10 × base).
    pub max_interval: Duration,
    /// The `previous_hosts` host predicate: retries avoid hosts already tried.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts`.
    pub host_selection_max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            status_codes: Vec::new(),
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            previous_hosts: false,
            host_selection_max_attempts: 1,
        }
    }
}

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

impl RetryPolicy {
    /// Compiles a `RetryPolicy`.
    pub fn compile(p: &RetryPolicyPb) -> Result<RetryPolicy, CompileError> {
        let (on, unknown) = RetryOn::parse(&p.retry_on);
        if let Some(u) = unknown.first() {
            return Err(CompileError::new(
                "retry_on",
                format!("unknown retry condition {u:?}"),
            ));
        }
        let d = |d: &Option<envoy_types::pb::google::protobuf::Duration>, f: &str| {
            d.as_ref()
                .map(|d| crate::listener::duration(d).map_err(|e| e.within(f)))
                .transpose()
        };
        let per_try_timeout = d(&p.per_try_timeout, "per_try_timeout")?.filter(|d| !d.is_zero());
        if d(&p.per_try_idle_timeout, "per_try_idle_timeout")?.is_some_and(|d| !d.is_zero()) {
            return Err(CompileError::new(
                "per_try_idle_timeout",
                "is not supported",
            ));
        }
        let unsupported = [
            ("retry_priority", p.retry_priority.is_some()),
            (
                "retry_options_predicates",
                !p.retry_options_predicates.is_empty(),
            ),
            (
                "rate_limited_retry_back_off",
                p.rate_limited_retry_back_off.is_some(),
            ),
            ("retriable_headers", !p.retriable_headers.is_empty()),
            (
                "retriable_request_headers",
                !p.retriable_request_headers.is_empty(),
            ),
        ];
        if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CompileError::new(*f, "is not supported"));
        }
        let mut previous_hosts = false;
        for (i, h) in p.retry_host_predicate.iter().enumerate() {
            use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType;
            let typed = matches!(&h.config_type, Some(ConfigType::TypedConfig(a)) if a.type_url == PREVIOUS_HOSTS_TYPE);
            if h.name != PREVIOUS_HOSTS && !typed {
                return Err(CompileError::new(
                    format!("retry_host_predicate[{i}]"),
                    format!("host predicate {} is not supported", h.name),
                ));
            }
            previous_hosts = true;
        }
        let mut status_codes = Vec::new();
        for (i, c) in p.retriable_status_codes.iter().enumerate() {
            let c = u16::try_from(*c)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| {
                    CompileError::new(format!("retriable_status_codes[{i}]"), "invalid status")
                })?;
            status_codes.push(c);
        }
        let mut out = RetryPolicy {
            on,
            num_retries: p.num_retries.map_or(1, |n| n.value),
            per_try_timeout,
            status_codes,
            previous_hosts,
            host_selection_max_attempts: u32::try_from(p.host_selection_retry_max_attempts)
                .unwrap_or(1)
                .max(1),
            ..RetryPolicy::default()
        };
        if let Some(b) = &p.retry_back_off {
            let base = d(&b.base_interval, "retry_back_off.base_interval")?
                .ok_or_else(|| CompileError::new("retry_back_off.base_interval", "is required"))?;
            if base < Duration::from_millis(1) {
                return Err(CompileError::new(
                    "retry_back_off.base_interval",
                    "must be at least 1ms",
                ));
            }
            let max = d(&b.max_interval, "retry_back_off.max_interval")?.unwrap_or(base * 10);
            if max < base {
                return Err(CompileError::new(
                    "retry_back_off.max_interval",
                    "must not be less than base_interval",
                ));
            }
            out.base_interval = base;
            out.max_interval = max;
        }
        Ok(out)
    }

    /// The back-off before retry number `n` (1-based): full jitter over
    /// `[0, min(base × 2^(n-1), max))`, as Envoy's `JitteredExponentialBackOffStrategy`.
    pub fn backoff(&self, n: u32, random: u64) -> Duration {
        let base = self.base_interval.as_millis() as u64;
        let cap = self.max_interval.as_millis() as u64;
        let ceiling = base
            .saturating_mul(1u64 << n.saturating_sub(1).min(30))
            .min(cap)
            .max(1);
        Duration::from_millis(random % ceiling)
    }
}
