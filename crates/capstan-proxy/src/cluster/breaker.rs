//! Circuit breakers (`circuit_breakers.thresholds[DEFAULT]`): limits on a cluster's open
//! connections, requests waiting for a connection, active requests and active retries. A refused
//! request is an overflow (Envoy answers 503 and counts `upstream_rq_pending_overflow`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Envoy's default for max_connections, max_pending_requests and max_requests.
pub const DEFAULT_LIMIT: u32 = 1024;
/// Envoy's default for max_retries.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The DEFAULT-priority thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending_requests: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// `max_retries`.
    pub max_retries: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

/// Which limit a permit counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Open upstream connections.
    Connections,
    /// Requests waiting for a connection.
    Pending,
    /// Active requests.
    Requests,
    /// Active retries.
    Retries,
}

/// The live counts of one cluster, shared with the permits that hold them.
#[derive(Debug, Default)]
pub struct Breaker {
    config: BreakerConfig,
    counts: [AtomicU32; 4],
    /// Fires when a connection permit is given back (requests waiting for a connection).
    released: tokio::sync::Notify,
}

impl Breaker {
    /// A breaker with these thresholds and nothing open.
    pub fn new(config: BreakerConfig) -> Arc<Breaker> {
        Arc::new(Breaker {
            config,
            counts: Default::default(),
            released: tokio::sync::Notify::new(),
        })
    }

    /// A connection permit, waiting up to `deadline` for one to be given back when all are
    /// held. None when the deadline passes first.
    pub async fn acquire_connection(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Option<Permit> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(p) = self.try_acquire(Resource::Connections) {
                return Some(p);
            }
            tokio::time::timeout_at(deadline, released).await.ok()?;
        }
    }

    /// Resolves when a connection permit is given back (enable it before checking).
    pub fn connection_released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    fn limit(&self, r: Resource) -> u32 {
        match r {
            Resource::Connections => self.config.max_connections,
            Resource::Pending => self.config.max_pending_requests,
            Resource::Requests => self.config.max_requests,
            Resource::Retries => self.config.max_retries,
        }
    }

    /// How many of `r` are held now.
    pub fn count(&self, r: Resource) -> u32 {
        self.counts[r as usize].load(Ordering::Relaxed)
    }

    /// One more of `r`, or None when its limit is reached.
    pub fn try_acquire(self: &Arc<Self>, r: Resource) -> Option<Permit> {
        let limit = self.limit(r);
        self.counts[r as usize]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                breaker: self.clone(),
                resource: r,
            })
    }
}

/// One unit of a breaker's resource, given back on drop.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    resource: Resource,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.counts[self.resource as usize].fetch_sub(1, Ordering::AcqRel);
        if self.resource == Resource::Connections {
            self.breaker.released.notify_waiters();
        }
    }
}

/// A permit for one retry (`max_retries`), held by the router while the retry is in flight.
#[derive(Debug)]
pub struct RetryPermit(#[allow(dead_code)] pub(crate) Permit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_overflow_and_permits_return() {
        let cases = [
            (Resource::Connections, 2),
            (Resource::Pending, 1),
            (Resource::Requests, 3),
            (Resource::Retries, 0),
        ];
        let b = Breaker::new(BreakerConfig {
            max_connections: 2,
            max_pending_requests: 1,
            max_requests: 3,
            max_retries: 0,
        });
        for (r, limit) in cases {
            let held: Vec<_> = (0..limit)
                .map(|_| b.try_acquire(r).expect("under the limit"))
                .collect();
            assert!(b.try_acquire(r).is_none(), "{r:?} overflows at {limit}");
            assert_eq!(b.count(r), limit);
            drop(held);
            assert_eq!(b.count(r), 0);
            if limit > 0 {
                assert!(b.try_acquire(r).is_some(), "{r:?} free again");
            }
        }
    }

    #[test]
    fn envoy_defaults() {
        let d = BreakerConfig::default();
        assert_eq!((d.max_connections, d.max_retries), (1024, 3));
    }
}
