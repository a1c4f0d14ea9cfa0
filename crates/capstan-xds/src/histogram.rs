//! Lock-free fixed-bucket histograms behind the control plane's Prometheus histograms
//! (`pilot_xds_push_time`, `pilot_proxy_convergence_time`, ...): recording is a bucket search
//! and two relaxed atomic adds, so connection tasks record on the hot path without a lock.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms: every bound of istiod's duration
/// histograms (`pilot/pkg/xds/monitoring.go`: .01 .1 .5 1 3 5 10 20 30), so each quantile a
/// dashboard computes from istiod's buckets is there, plus finer bounds below 100 ms, where a
/// local control plane's pushes land.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0,
    30.0,
];

/// Upper bounds (bytes) of the config-size histogram: istiod's (1, 10K, 1M, 4M, 10M, 40M, for
/// gRPC's 4 MB default limit and the sizes that strain Envoy) plus 1K and 100K.
pub const BYTES_BUCKETS: [f64; 8] = [1.0, 1e3, 1e4, 1e5, 1e6, 4e6, 1e7, 4e7];

/// Nanoseconds per second: durations are recorded in nanoseconds.
const NANOS: f64 = 1e9;

/// A histogram of non-negative integer observations (nanoseconds or bytes) exported in a unit
/// `scale` times larger (seconds or bytes).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// The bounds in recorded units, for an integer search.
    limits: Box<[u64]>,
    /// Exported unit per recorded unit.
    scale: f64,
    /// Per bucket (not cumulative); the last slot counts what is above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in recorded units.
    sum: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            limits: bounds.iter().map(|b| (b / scale).round() as u64).collect(),
            scale,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Durations, exported in seconds over [`SECONDS_BUCKETS`].
    pub fn seconds() -> AtomicHistogram {
        AtomicHistogram::new(&SECONDS_BUCKETS, 1.0 / NANOS)
    }

    /// Sizes, exported in bytes over [`BYTES_BUCKETS`].
    pub fn bytes() -> AtomicHistogram {
        AtomicHistogram::new(&BYTES_BUCKETS, 1.0)
    }

    /// Records one observation in recorded units (nanoseconds or bytes).
    pub fn observe(&self, units: u64) {
        // Prometheus buckets are `le`: a value equal to a bound belongs to that bound's bucket.
        let slot = self.limits.partition_point(|&limit| limit < units);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// Records one duration.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A copy of the counts. Concurrent records may make `sum` and the counts differ by the
    /// observations in flight, as in every Prometheus client.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if i < self.bounds.len() {
                cumulative.push(seen);
            }
        }
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            count: seen,
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

/// A point-in-time copy of an [`AtomicHistogram`], in Prometheus's shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets (`le`), in the exported unit; `+Inf` is implied.
    pub bounds: &'static [f64],
    /// `cumulative[i]`: observations `<= bounds[i]`.
    pub cumulative: Vec<u64>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations, in the exported unit.
    pub sum: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = AtomicHistogram::seconds();
        for ms in [0, 1, 2, 10, 10, 40, 90_000] {
            h.observe_duration(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        let at = |bound: f64| s.cumulative[s.bounds.iter().position(|b| *b == bound).unwrap()];
        assert_eq!(s.count, 7);
        assert_eq!(at(0.0005), 1, "0 ms");
        assert_eq!(at(0.001), 2, "1 ms is <= 1 ms");
        assert_eq!(at(0.01), 5);
        assert_eq!(at(0.05), 6);
        assert_eq!(at(30.0), 6, "90 s is only in +Inf");
        assert!((s.sum - 90.063).abs() < 1e-9, "{}", s.sum);

        let b = AtomicHistogram::bytes();
        b.observe(1);
        b.observe(5_000_000);
        let s = b.snapshot();
        assert_eq!(
            (s.cumulative[0], s.cumulative[5], s.cumulative[6]),
            (1, 1, 2)
        );
        assert_eq!(s.sum, 5_000_001.0);
    }
}
