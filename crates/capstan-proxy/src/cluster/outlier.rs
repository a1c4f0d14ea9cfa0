//! Outlier detection (passive health checking), Envoy's consecutive-5xx and
//! consecutive-gateway-failure detectors: a host that fails N times in a row is ejected for
//! `base_ejection_time × times ejected` (capped by `max_ejection_time`), unless that would eject
//! more than `max_ejection_percent` of the cluster. Ejected hosts are skipped by the balancer
//! (except in panic mode) and come back when their time is up.
//!
//! Envoy returns hosts on its `interval` sweep; here a host returns at the first pick after its
//! ejection time, which is the same moment or up to one interval earlier. Time is passed in
//! (`tokio::time::Instant`), so tests use paused time or explicit instants.

use crate::stats::ClusterStats;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Compiled `outlier_detection`, with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// `consecutive_5xx` (default 5).
    pub consecutive_5xx: u32,
    /// `enforcing_consecutive_5xx` in percent (default 100).
    pub enforcing_5xx: u32,
    /// `consecutive_gateway_failure` (default 5).
    pub consecutive_gateway: u32,
    /// `enforcing_consecutive_gateway_failure` in percent (default 0).
    pub enforcing_gateway: u32,
    /// `interval` (default 10s): the time a returned host needs per step of ejection backoff
    /// it forgets.
    pub interval: Duration,
    /// `base_ejection_time` (default 30s).
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (default 300s).
    pub max_ejection_time: Duration,
    /// `max_ejection_time_jitter` (default 0).
    pub jitter: Duration,
    /// `max_ejection_percent` (default 10).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            enforcing_5xx: 100,
            consecutive_gateway: 5,
            enforcing_gateway: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            jitter: Duration::ZERO,
            max_ejection_percent: 10,
        }
    }
}

/// What happened to one request or connection, as the detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The connection could not be made, or broke before a response (Envoy's local-origin
    /// errors, counted as a 503 when `split_external_local_origin_errors` is off).
    LocalFailure,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
    returned_at: Option<Instant>,
}

/// Per-host failure counts and ejections of one cluster.
#[derive(Debug)]
pub struct Detector {
    config: OutlierConfig,
    hosts: Mutex<HashMap<SocketAddr, HostState>>,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: OutlierConfig) -> Detector {
        Detector {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, HostState>> {
        self.hosts
            .lock()
            .expect("outlier lock is never poisoned: no panics under it")
    }

    /// Records an outcome for `addr`; returns true when it ejected the host. `cluster_size` is
    /// the number of hosts `max_ejection_percent` is taken of.
    pub fn report(
        &self,
        addr: SocketAddr,
        outcome: Outcome,
        cluster_size: usize,
        now: Instant,
        stats: &ClusterStats,
    ) -> bool {
        let status = match outcome {
            Outcome::Status(s) => s,
            Outcome::LocalFailure => 503,
        };
        let c = &self.config;
        let mut hosts = self.lock();
        let active = hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|t| t > now))
            .count();
        let h = hosts.entry(addr).or_default();
        if !(500..600).contains(&status) {
            h.consecutive_5xx = 0;
            h.consecutive_gateway = 0;
            return false;
        }
        if h.ejected_until.is_some_and(|t| t > now) {
            return false;
        }
        h.consecutive_5xx += 1;
        if (502..=504).contains(&status) {
            h.consecutive_gateway += 1;
        } else {
            h.consecutive_gateway = 0;
        }
        let detected = if h.consecutive_5xx >= c.consecutive_5xx {
            Some(c.enforcing_5xx)
        } else if h.consecutive_gateway >= c.consecutive_gateway {
            Some(c.enforcing_gateway)
        } else {
            None
        };
        let Some(enforcing) = detected else {
            return false;
        };
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        if enforcing == 0 || fastrand::u32(0..100) >= enforcing {
            return false;
        }
        // Envoy counts the host about to be ejected: 100 × (active + 1) / size ≤ max.
        let size = cluster_size.max(1) as f64;
        if 100.0 * (active as f64 + 1.0) / size > f64::from(c.max_ejection_percent) {
            return false;
        }
        h.times_ejected = h.times_ejected.saturating_add(1);
        let mut time = c
            .base_ejection_time
            .saturating_mul(h.times_ejected)
            .min(c.max_ejection_time.max(c.base_ejection_time));
        if !c.jitter.is_zero() {
            time += c.jitter.mul_f64(fastrand::f64());
        }
        h.ejected_until = Some(now + time);
        h.returned_at = None;
        stats.ejections_active.inc();
        stats.ejections_enforced_total.inc();
        true
    }

    /// The hosts ejected at `now`; returns hosts whose time is up (and forgets one step of
    /// backoff per `base_ejection_time` a returned host stays healthy).
    pub fn ejected(&self, now: Instant, stats: &ClusterStats) -> Vec<SocketAddr> {
        let mut hosts = self.lock();
        let mut out = Vec::new();
        for (addr, h) in hosts.iter_mut() {
            match h.ejected_until {
                Some(t) if t > now => out.push(*addr),
                Some(_) => {
                    h.ejected_until = None;
                    h.returned_at = Some(now);
                    stats.ejections_active.dec();
                }
                None => {
                    if let Some(back) = h.returned_at {
                        let step = self.config.base_ejection_time.max(self.config.interval);
                        if h.times_ejected > 0 && now.duration_since(back) >= step {
                            h.times_ejected -= 1;
                            h.returned_at = Some(now);
                        }
                    }
                }
            }
        }
        out
    }

    /// Forgets hosts no longer in the cluster (an EDS update), keeping the others' state.
    pub fn retain(&self, keep: &dyn Fn(&SocketAddr) -> bool, now: Instant, stats: &ClusterStats) {
        self.lock().retain(|addr, h| {
            let kept = keep(addr);
            if !kept && h.ejected_until.is_some_and(|t| t > now) {
                stats.ejections_active.dec();
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            enforcing_gateway: 100,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        }
    }

    #[test]
    fn ejects_after_consecutive_failures() {
        // (outcomes, ejected after them)
        let cases: Vec<(Vec<Outcome>, bool)> = vec![
            (vec![Outcome::Status(500); 3], true),
            (vec![Outcome::Status(500); 2], false),
            (
                vec![
                    Outcome::Status(500),
                    Outcome::Status(200),
                    Outcome::Status(500),
                    Outcome::Status(500),
                ],
                false,
            ),
            (vec![Outcome::Status(503); 2], true),
            (vec![Outcome::LocalFailure; 2], true),
            (vec![Outcome::Status(404); 10], false),
        ];
        for (outcomes, want) in cases {
            let stats = ClusterStats::default();
            let d = Detector::new(config());
            let now = Instant::now();
            let ejected = outcomes
                .iter()
                .fold(false, |acc, o| acc | d.report(addr(1), *o, 4, now, &stats));
            assert_eq!(ejected, want, "{outcomes:?}");
            assert_eq!(d.ejected(now, &stats).contains(&addr(1)), want);
            assert_eq!(stats.ejections_active.get(), i64::from(want));
        }
    }

    #[test]
    fn ejection_time_grows_and_host_returns() {
        let stats = ClusterStats::default();
        let d = Detector::new(config());
        let t0 = Instant::now();
        for _ in 0..3 {
            d.report(addr(1), Outcome::Status(500), 2, t0, &stats);
        }
        assert_eq!(
            d.ejected(t0 + Duration::from_secs(29), &stats),
            vec![addr(1)]
        );
        let t1 = t0 + Duration::from_secs(30);
        assert!(d.ejected(t1, &stats).is_empty(), "back after base time");
        assert_eq!(stats.ejections_active.get(), 0);
        for _ in 0..3 {
            d.report(addr(1), Outcome::Status(500), 2, t1, &stats);
        }
        // Second ejection: 2 × base.
        assert_eq!(
            d.ejected(t1 + Duration::from_secs(59), &stats),
            vec![addr(1)]
        );
        assert!(d.ejected(t1 + Duration::from_secs(60), &stats).is_empty());
        assert_eq!(stats.ejections_enforced_total.get(), 2);
    }

    #[test]
    fn max_ejection_percent_and_enforcement() {
        let stats = ClusterStats::default();
        let now = Instant::now();
        let d = Detector::new(OutlierConfig {
            max_ejection_percent: 50,
            ..config()
        });
        for n in 1..=2 {
            for _ in 0..3 {
                d.report(addr(n), Outcome::Status(500), 2, now, &stats);
            }
        }
        assert_eq!(d.ejected(now, &stats), vec![addr(1)], "only half may go");
        let off = Detector::new(OutlierConfig {
            enforcing_5xx: 0,
            ..config()
        });
        for _ in 0..3 {
            assert!(!off.report(addr(1), Outcome::Status(500), 2, now, &stats));
        }
    }
}
