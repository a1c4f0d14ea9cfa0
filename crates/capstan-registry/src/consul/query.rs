//! One Consul blocking query (`?index=N&wait=Ws`), repeated: the index bookkeeping Consul's docs
//! ask for, a minimum spacing between requests, and the jittered exponential backoff on errors.
//! <https://developer.hashicorp.com/consul/api-docs/features/blocking>

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a query failed; the caller logs it, backs off and retries.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Connection refused, timeout, reset...
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// Consul answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The answer lacks a usable `X-Consul-Index`.
    #[error("missing or invalid X-Consul-Index header")]
    NoIndex,
}

/// What the HTTP side of all queries of one registry share.
#[derive(Clone)]
pub struct Http {
    /// Client (connection pool shared by all watchers).
    pub client: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// Datacenter (`dc` parameter), if any.
    pub datacenter: Option<String>,
    /// ACL token (`X-Consul-Token`), if any.
    pub token: Option<String>,
    /// Longest time Consul may hold a query.
    pub wait: Duration,
    /// Least time between the starts of two successive queries of one watcher.
    pub min_interval: Duration,
    /// Requests sent so far.
    pub requests: Arc<AtomicU64>,
}

/// The next index after an answer carrying `returned` to a query sent with `previous`.
/// Consul: reset to 0 when the index goes backwards (agent restarted, snapshot restored); never
/// block on 0 again after a successful answer (treat 0 as 1).
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned.max(1)
    }
}

/// A repeated blocking query on one path.
pub struct BlockingQuery {
    http: Http,
    path: String,
    index: u64,
    last_start: Option<Instant>,
}

impl BlockingQuery {
    /// A query on `path` (`/v1/...`), starting with a non-blocking list.
    pub fn new(http: Http, path: String) -> BlockingQuery {
        BlockingQuery {
            http,
            path,
            index: 0,
            last_start: None,
        }
    }

    /// Waits for the next answer. `Ok(Some(body))` when the index moved (or on the first list;
    /// the data may still be identical), `Ok(None)` when the wait expired unchanged. On error the
    /// index is reset to 0, so the first answer after a reconnect is a full, immediate re-list.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, QueryError> {
        // Rate limit: a query that returns at once (index moving fast, or reset) must not turn
        // into a busy loop.
        if let Some(last) = self.last_start {
            let since = last.elapsed();
            if since < self.http.min_interval {
                tokio::time::sleep(self.http.min_interval - since).await;
            }
        }
        self.last_start = Some(Instant::now());
        let result = self.send().await;
        if result.is_err() {
            self.index = 0;
        }
        result
    }

    async fn send(&mut self) -> Result<Option<Vec<u8>>, QueryError> {
        let http = &self.http;
        let mut params: Vec<String> = Vec::new();
        if self.index > 0 {
            params.push(format!("index={}", self.index));
            params.push(format!("wait={}ms", http.wait.as_millis()));
        }
        if let Some(dc) = &http.datacenter {
            params.push(format!("dc={}", encode_segment(dc)));
        }
        let mut url = format!("{}{}", http.base, self.path);
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        let mut request = http.client.get(url);
        if let Some(token) = &http.token {
            request = request.header("X-Consul-Token", token);
        }
        // Consul adds up to wait/16 of jitter to the wait; allow that plus slack.
        let timeout = http.wait + http.wait / 16 + Duration::from_secs(10);
        http.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.timeout(timeout).send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(QueryError::Status {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        let returned: u64 = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or(QueryError::NoIndex)?;
        let body = response.bytes().await?;
        let previous = self.index;
        self.index = next_index(previous, returned);
        if previous != 0 && returned == previous {
            return Ok(None);
        }
        if returned < previous {
            tracing::info!(path = %self.path, previous, returned, "Consul index went backwards; re-listing");
        }
        Ok(Some(body.to_vec()))
    }
}

/// Bounded, jittered exponential backoff.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: uniformly in [current/2, current], then current doubles (up to max).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Percent-encodes a path segment (Consul service names are usually DNS-safe already).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_follows_consul_rules() {
        assert_eq!(next_index(0, 0), 1, "0 is treated as 1");
        assert_eq!(next_index(0, 17), 17);
        assert_eq!(next_index(17, 17), 17);
        assert_eq!(next_index(17, 20), 20);
        assert_eq!(next_index(17, 5), 0, "backwards resets");
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[19] >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("web-1.x_y"), "web-1.x_y");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
