//! Counters of the ADS server and a small fixed-bucket latency histogram, read as a [`Metrics`]
//! snapshot (the `/metrics` endpoint renders it; names follow Istio's `pilot_xds_*`).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (milliseconds) of the convergence-time buckets. Istio's
/// `pilot_proxy_convergence_time` uses 0.1 s … 30 s; the lower buckets here show the
/// sub-millisecond pushes of a local control plane too.
pub const BUCKETS_MS: [u64; 14] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 3_000, 5_000, 10_000, 20_000, 30_000,
];

/// A fixed-bucket histogram of durations. Cheap to record, and quantiles are estimated as the
/// upper bound of the bucket holding them (precise enough for "p99 is under 100 ms").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Per-bucket counts; `counts[i]` counts durations `<= BUCKETS_MS[i]` and above the
    /// previous bound; the last slot counts everything above the largest bound.
    pub counts: Vec<u64>,
    /// Number of recorded durations.
    pub count: u64,
    /// Sum of recorded durations, in milliseconds.
    pub sum_ms: u64,
    /// Largest recorded duration, in milliseconds.
    pub max_ms: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS_MS.len() + 1];
        }
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let slot = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        self.counts[slot] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.max_ms = self.max_ms.max(ms);
    }

    /// Estimated `q` quantile (0.0..=1.0) in milliseconds: the upper bound of the bucket that
    /// holds it (the maximum seen, for the overflow bucket). `None` when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (slot, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = BUCKETS_MS.get(slot).copied().unwrap_or(self.max_ms);
                return Some(bound.min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

/// A point-in-time copy of the server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Push requests announced with [`AdsServer::push`](super::AdsServer::push).
    pub pushes: u64,
    /// Responses sent because of a push (one per connection and type), like `pilot_xds_pushes`.
    pub push_responses: u64,
    /// Responses sent in answer to requests (initial and subscription changes).
    pub request_responses: u64,
    /// NACKs received (`pilot_total_xds_rejects`).
    pub nacks: u64,
    /// Connections open now (`pilot_xds`).
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Encoded bytes of all responses sent.
    pub bytes_sent: u64,
    /// Generator errors (the proxy kept its last config for that type).
    pub generation_errors: u64,
    /// Responses whose ACK did not arrive within the ACK timeout.
    pub ack_timeouts: u64,
    /// Streams closed because the client did not read its responses in time.
    pub send_timeouts: u64,
    /// Streams refused or closed for a bad request (bad node, too many names).
    pub rejected_streams: u64,
    /// Time from a push's creation to the ACK of the last response it caused, per connection
    /// (`pilot_proxy_convergence_time`).
    pub convergence: Histogram,
}

/// The live counters behind [`Metrics`]; shared by all connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub pushes: AtomicU64,
    pub push_responses: AtomicU64,
    pub request_responses: AtomicU64,
    pub nacks: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub generation_errors: AtomicU64,
    pub ack_timeouts: AtomicU64,
    pub send_timeouts: AtomicU64,
    pub rejected_streams: AtomicU64,
    convergence: Mutex<Histogram>,
}

/// Adds one to a counter (relaxed: counters are independent and only read for reporting).
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Records one convergence time.
    pub fn record_convergence(&self, d: Duration) {
        // A poisoned lock only means another thread panicked mid-record; the data is counts.
        let mut h = self.convergence.lock().unwrap_or_else(|e| e.into_inner());
        h.record(d);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            pushes: get(&self.pushes),
            push_responses: get(&self.push_responses),
            request_responses: get(&self.request_responses),
            nacks: get(&self.nacks),
            connections: get(&self.connections),
            connections_total: get(&self.connections_total),
            bytes_sent: get(&self.bytes_sent),
            generation_errors: get(&self.generation_errors),
            ack_timeouts: get(&self.ack_timeouts),
            send_timeouts: get(&self.send_timeouts),
            rejected_streams: get(&self.rejected_streams),
            convergence: self
                .convergence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in [0, 2, 3, 7, 40, 40, 40, 40, 40, 90_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count, 10);
        assert_eq!(h.quantile_ms(0.1), Some(1));
        assert_eq!(h.quantile_ms(0.5), Some(50));
        assert_eq!(h.quantile_ms(1.0), Some(90_000));
        assert_eq!(h.max_ms, 90_000);
    }
}
