//! Draining on shutdown: refuse new streams, then end the open ones one by one, spread over a
//! window, so the proxies of a terminating replica reconnect to the others a few at a time
//! instead of all at once (a thundering herd that would make every other replica push to
//! all of them in the same second).
//!
//! Each stream ends with `UNAVAILABLE`, the status gRPC clients (Envoy, pilot-agent, proxyless
//! gRPC) treat as "retry elsewhere", so they reconnect through the Service to a ready replica.

use super::AdsServer;
use crate::generate::Generator;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::Status;

/// Message of the `UNAVAILABLE` status that ends (or refuses) a stream while draining.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// How long [`AdsServer::drain`] waits, after the last close, for the stream tasks to hand
/// their final status to the transport.
const SETTLE: Duration = Duration::from_secs(2);

/// When each of `streams` open streams is closed, as offsets from the start of a drain of
/// `window`: evenly spaced, the first at once and the last one step before the window ends,
/// so the whole drain fits in the window.
pub fn close_schedule(streams: usize, window: Duration) -> Vec<Duration> {
    let Ok(n) = u32::try_from(streams) else {
        // More streams than u32: no window is long enough to space them; close them at once.
        return vec![Duration::ZERO; streams];
    };
    (0..n).map(|i| window * i / n).collect()
}

impl<G: Generator> AdsServer<G> {
    /// Drains the server: from now on it is never ready again and refuses new streams with
    /// `UNAVAILABLE`; the streams open now are closed with `UNAVAILABLE` ("server shutting
    /// down"), spread evenly over `window` ([`close_schedule`]). Returns once every stream is
    /// closed and (bounded) their tasks have ended. Calling it again drains what is left.
    pub async fn drain(&self, window: Duration) {
        self.core.draining.store(true, Ordering::SeqCst);
        let streams: Vec<u64> = self
            .core
            .closers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        tracing::info!(streams = streams.len(), window = ?window, "draining xDS streams");
        let start = tokio::time::Instant::now();
        for (conn, at) in streams.iter().zip(close_schedule(streams.len(), window)) {
            tokio::time::sleep_until(start + at).await;
            self.close_stream(*conn);
        }
        // Streams that registered between the listing and the first refusal (their first
        // request was in flight): close them too, now.
        let late: Vec<u64> = self
            .core
            .closers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for conn in late {
            self.close_stream(conn);
        }
        let settle = tokio::time::Instant::now() + SETTLE;
        while self.core.counters.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < settle
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends one stream with `UNAVAILABLE`; false if it had already ended.
    fn close_stream(&self, conn: u64) -> bool {
        let closer = self
            .core
            .closers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
        closer.is_some_and(|c| c.send(Status::unavailable(SHUTTING_DOWN)).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly_inside_the_window() {
        let cases: &[(usize, u64, &[u64])] = &[
            (0, 5000, &[]),
            (1, 5000, &[0]),
            (4, 2000, &[0, 500, 1000, 1500]),
            (3, 0, &[0, 0, 0]),
        ];
        for &(n, window_ms, want) in cases {
            let got: Vec<u64> = close_schedule(n, Duration::from_millis(window_ms))
                .iter()
                .map(|d| d.as_millis() as u64)
                .collect();
            assert_eq!(got, want, "{n} streams over {window_ms} ms");
        }
    }

    #[test]
    fn a_large_drain_stays_inside_the_window() {
        let window = Duration::from_secs(5);
        let schedule = close_schedule(10_000, window);
        assert_eq!(schedule.len(), 10_000);
        assert!(schedule.windows(2).all(|w| w[0] <= w[1]));
        assert!(*schedule.last().expect("non-empty") < window);
    }
}
