//! Fault injection (`envoy.filters.http.fault`): a delay then an abort, each for a fraction of
//! requests, bounded by `max_active_faults`.

use crate::route::filters::{Abort, FaultConfig};
use crate::stats::HttpStats;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Faults active in the process (Envoy's `max_active_faults` is per filter; one counter is a
/// close, conservative approximation).
static ACTIVE: AtomicU32 = AtomicU32::new(0);

/// What the fault filter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Delay before going on.
    pub delay: Option<Duration>,
    /// Abort instead of routing.
    pub abort: Option<Abort>,
}

/// Decides with the random draws `delay_draw` and `abort_draw` (each in `0..denominator`).
pub fn decide(
    f: &FaultConfig,
    headers: &http::HeaderMap,
    cluster: Option<&str>,
    draws: (u32, u32),
) -> Decision {
    if !f.headers.iter().all(|h| h.matches(headers)) {
        return Decision::default();
    }
    if let (Some(want), Some(c)) = (&f.upstream_cluster, cluster) {
        if want != c {
            return Decision::default();
        }
    }
    Decision {
        delay: f
            .delay
            .filter(|(_, pct)| pct.contains(draws.0 % pct.denominator.max(1)))
            .map(|(d, _)| d),
        abort: f
            .abort
            .filter(|(_, pct)| pct.contains(draws.1 % pct.denominator.max(1)))
            .map(|(a, _)| a),
    }
}

/// Holds an active-fault slot.
pub struct Slot(());

impl Drop for Slot {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes an active-fault slot unless `max` are taken.
pub fn acquire(max: Option<u32>) -> Option<Slot> {
    let n = ACTIVE.fetch_add(1, Ordering::Relaxed);
    let slot = Slot(());
    match max {
        Some(m) if n >= m => None,
        _ => Some(slot),
    }
}

/// Applies `f` to a request: sleeps for a delay, returns the abort response if any.
pub async fn apply(
    f: &FaultConfig,
    headers: &http::HeaderMap,
    cluster: Option<&str>,
    stats: &HttpStats,
) -> Option<http::Response<super::BoxBody>> {
    let draws = (fastrand::u32(..), fastrand::u32(..));
    let d = decide(f, headers, cluster, draws);
    if d.delay.is_none() && d.abort.is_none() {
        return None;
    }
    let _slot = acquire(f.max_active)?;
    if let Some(delay) = d.delay {
        stats.fault_delays_injected.inc();
        tokio::time::sleep(delay).await;
    }
    let abort = d.abort?;
    stats.fault_aborts_injected.inc();
    Some(match abort {
        Abort::Http(s) => super::local_reply(s, "fault filter abort"),
        Abort::Grpc(code) => {
            let mut r = super::local_reply(200, "");
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", http::HeaderValue::from(code));
            h.insert(
                "grpc-message",
                http::HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::matcher::Fraction;

    fn pct(numerator: u32, denominator: u32) -> Fraction {
        Fraction {
            numerator,
            denominator,
        }
    }

    #[test]
    fn fault_percentages() {
        let secs = Duration::from_secs(1);
        // (delay fraction, abort fraction, draws, expect delay, expect abort)
        let cases = [
            (pct(100, 100), pct(0, 100), (0, 0), true, false),
            (pct(50, 100), pct(50, 100), (49, 50), true, false),
            (pct(50, 100), pct(50, 100), (150, 149), false, true),
            (pct(1, 10_000), pct(1, 10_000), (0, 1), true, false),
            (
                pct(999_999, 1_000_000),
                pct(1, 1_000_000),
                (999_998, 999_999),
                true,
                false,
            ),
            (
                pct(0, 1_000_000),
                pct(1_000_000, 1_000_000),
                (0, 999_999),
                false,
                true,
            ),
        ];
        for (i, (d, a, draws, want_d, want_a)) in cases.into_iter().enumerate() {
            let f = FaultConfig {
                delay: Some((secs, d)),
                abort: Some((Abort::Http(503), a)),
                ..FaultConfig::default()
            };
            let got = decide(&f, &http::HeaderMap::new(), None, draws);
            assert_eq!(got.delay.is_some(), want_d, "case {i} delay");
            assert_eq!(got.abort.is_some(), want_a, "case {i} abort");
        }
    }

    #[test]
    fn upstream_cluster_and_headers_gate_the_fault() {
        let f = FaultConfig {
            abort: Some((Abort::Http(500), Fraction::ALL)),
            upstream_cluster: Some("a".into()),
            ..FaultConfig::default()
        };
        let h = http::HeaderMap::new();
        assert!(decide(&f, &h, Some("a"), (0, 0)).abort.is_some());
        assert!(decide(&f, &h, Some("b"), (0, 0)).abort.is_none());
    }

    #[tokio::test]
    async fn abort_response_and_counters() {
        let stats = HttpStats::default();
        let f = FaultConfig {
            abort: Some((Abort::Grpc(14), Fraction::ALL)),
            ..FaultConfig::default()
        };
        let r = apply(&f, &http::HeaderMap::new(), None, &stats)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(stats.fault_aborts_injected.get(), 1);
    }
}
