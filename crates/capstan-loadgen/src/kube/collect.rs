//! What the orchestrator keeps of the proxies' reports: bytes, each proxy's last full sync,
//! each watch's first match per proxy, retries and refusals, NACKs.

use anyhow::{bail, Result};
use capstan_loadgen::client::Report;
use capstan_loadgen::reports;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reports of `proxies` proxies (ids `0..proxies`), folded.
pub struct Collector {
    rx: reports::Receiver,
    /// Bytes of every response received (gRPC message bodies).
    pub bytes: u64,
    /// Each proxy's latest full sync.
    pub synced_at: Vec<Option<Instant>>,
    /// Per watch id, the proxies that matched and when.
    pub matched: HashMap<u64, HashMap<usize, Instant>>,
    /// Sessions that failed or ended and were retried.
    pub retries: u64,
    /// Of them, refused with `RESOURCE_EXHAUSTED` (istiod's new-stream rate limit).
    pub refused: u64,
    /// A few distinct retry reasons, for the log.
    pub retry_reasons: Vec<String>,
    /// NACKs the proxies sent, and the first one.
    pub nacks: u64,
    pub first_nack: Option<String>,
}

/// gRPC status 8 in the session error `client::session` gives.
fn is_refusal(error: &str) -> bool {
    error.contains("gRPC status \"8\"")
}

impl Collector {
    /// Folds the reports of `rx`.
    pub fn new(rx: reports::Receiver, proxies: usize) -> Collector {
        Collector {
            rx,
            bytes: 0,
            synced_at: vec![None; proxies],
            matched: HashMap::new(),
            retries: 0,
            refused: 0,
            retry_reasons: Vec::new(),
            nacks: 0,
            first_nack: None,
        }
    }

    /// Folds every report available now.
    pub fn pump(&mut self) {
        while let Some(report) = self.rx.try_recv() {
            self.fold(report);
        }
    }

    fn fold(&mut self, report: Report) {
        match report {
            Report::Received { bytes, .. } => self.bytes += bytes as u64,
            Report::ProxySynced { client, at } => {
                if let Some(slot) = self.synced_at.get_mut(client) {
                    *slot = Some(at);
                }
            }
            Report::Matched { client, watch, at } => {
                self.matched
                    .entry(watch)
                    .or_default()
                    .entry(client)
                    .or_insert(at);
            }
            Report::Retrying { error, .. }
            | Report::Closed {
                error: Some(error), ..
            } => {
                self.retries += 1;
                if is_refusal(&error) {
                    self.refused += 1;
                }
                // Keep the reason without the proxy-specific parts (ports, addresses).
                let reason: String = error.chars().take(160).collect();
                if self.retry_reasons.len() < 5 && !self.retry_reasons.contains(&reason) {
                    self.retry_reasons.push(reason);
                }
            }
            Report::Rejected { error, .. } => {
                self.nacks += 1;
                self.first_nack.get_or_insert(error);
            }
            Report::Synced | Report::Closed { error: None, .. } => {}
        }
    }

    /// Proxies whose latest full sync is at or after `since`.
    pub fn synced_since(&self, since: Instant) -> usize {
        self.synced_at
            .iter()
            .filter(|s| s.is_some_and(|at| at >= since))
            .count()
    }

    /// Proxies that matched watch `id`.
    pub fn matched_count(&self, id: u64) -> usize {
        self.matched.get(&id).map_or(0, |m| m.len())
    }

    /// Each matching proxy's delay from `since` to its match of watch `id` (a match before
    /// `since` counts as 0: the response overtook the write's reply).
    pub fn latencies(&self, id: u64, since: Instant) -> Vec<Duration> {
        self.matched.get(&id).map_or_else(Vec::new, |m| {
            m.values()
                .map(|at| at.saturating_duration_since(since))
                .collect()
        })
    }

    /// Folds reports until `done` holds, calling `tick` every millisecond (e.g. to start more
    /// proxies); fails after `limit` naming `what`.
    pub async fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Collector) -> bool,
        mut tick: impl FnMut(),
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.pump();
            if done(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let reasons = self.retry_reasons.join("\n  ");
                bail!(
                    "{what}: not done within {limit:?} ({} retries, {} refused; reasons:\n  {reasons})",
                    self.retries,
                    self.refused
                );
            }
            tick();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_syncs_matches_and_refusals() {
        let (tx, rx) = reports::channel();
        let mut c = Collector::new(rx, 3);
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        tx.send(Report::ProxySynced { client: 1, at: t0 });
        tx.send(Report::ProxySynced {
            client: 2,
            at: later,
        });
        tx.send(Report::Matched {
            client: 0,
            watch: 4,
            at: later,
        });
        tx.send(Report::Matched {
            client: 0,
            watch: 4,
            at: later + Duration::from_secs(1),
        });
        tx.send(Report::Retrying {
            client: 0,
            error: "gRPC status \"8\": Some(\"request rate limit exceeded\")".into(),
        });
        tx.send(Report::Retrying {
            client: 1,
            error: "connection ended".into(),
        });
        c.pump();
        assert_eq!(c.synced_since(t0), 2);
        assert_eq!(c.synced_since(later), 1);
        assert_eq!(c.matched_count(4), 1);
        assert_eq!(c.latencies(4, t0), vec![Duration::from_millis(5)]);
        assert_eq!((c.retries, c.refused), (2, 1));
    }
}
