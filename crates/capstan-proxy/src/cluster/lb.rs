//! The load balancer: Envoy's priority levels (healthy share × overprovisioning factor, spill
//! to the next level, panic mode below `healthy_panic_threshold`), optional locality weighting,
//! then the cluster's policy among the level's hosts: ROUND_ROBIN (smooth weighted), LEAST_REQUEST
//! (power of `choice_count` choices), RANDOM, RING_HASH and MAGLEV over [`LbContext::hash`].
//! Hosts in [`LbContext::avoid`] are skipped when another candidate exists.

use super::endpoints::{EndpointSet, Health, HostAddress};
use super::hash::{Maglev, Ring};
use super::LbContext;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The hosts a pick chooses among (indices into a level), kept on the stack.
type Candidates = SmallVec<[usize; 16]>;

/// Envoy's `lb_policy`, with its `lb_config`.
#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (weighted).
    RoundRobin,
    /// `LEAST_REQUEST` with `choice_count` (default 2).
    LeastRequest {
        /// How many random hosts are compared.
        choice_count: u32,
    },
    /// `RANDOM` (weighted).
    Random,
    /// `RING_HASH` with `minimum_ring_size` / `maximum_ring_size`.
    RingHash {
        /// Minimum ring entries (default 1024).
        min_size: u64,
        /// Maximum ring entries (default 8M).
        max_size: u64,
    },
    /// `MAGLEV` with `table_size` (default 65537).
    Maglev {
        /// Table slots (a prime).
        table_size: u64,
    },
    /// `CLUSTER_PROVIDED` (ORIGINAL_DST clusters: the connection's destination).
    ClusterProvided,
}

/// What the balancer needs from the cluster config.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    /// The policy.
    pub policy: LbPolicy,
    /// `common_lb_config.healthy_panic_threshold` in percent (default 50; 0 disables panic).
    pub panic_threshold: f64,
    /// `common_lb_config.locality_weighted_lb_config` is set.
    pub locality_weighted: bool,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            policy: LbPolicy::RoundRobin,
            panic_threshold: 50.0,
            locality_weighted: false,
        }
    }
}

/// One host as the balancer sees it.
#[derive(Debug, Clone)]
pub struct LbHost {
    /// Its address.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    healthy: bool,
    locality: usize,
    /// Requests in flight to it (LEAST_REQUEST), shared across endpoint updates.
    pub active: Arc<AtomicU32>,
}

#[derive(Debug)]
struct Level {
    hosts: Vec<LbHost>,
    locality_weights: Vec<u32>,
    ring: Option<Ring>,
    maglev: Option<Maglev>,
}

/// Envoy's priority load over the levels, for one set of ejected hosts.
#[derive(Debug)]
struct PriorityLoad {
    /// Per level: hosts, eligible hosts (healthy, not ejected), offered share in percent.
    health: SmallVec<[(usize, usize, f64); 4]>,
    /// The offered shares' sum, at most 100.
    total: f64,
    /// Per level: the share it takes (what the levels before it left).
    loads: SmallVec<[f64; 4]>,
    /// The taken shares' sum.
    sum: f64,
}

/// A balancer over one endpoint set; rebuilt on every endpoint update.
#[derive(Debug)]
pub struct Balancer {
    config: LbConfig,
    overprovisioning: f64,
    levels: Vec<Level>,
    /// The priority load with no host ejected, the common case: computed once, not per pick.
    unejected: PriorityLoad,
    /// Smooth weighted round-robin state per level and host.
    rr: Mutex<Vec<Vec<i64>>>,
}

impl Balancer {
    /// A balancer over the IP hosts of `set`; active-request counts carry over from
    /// `previous` for hosts that stay.
    pub fn new(config: &LbConfig, set: &EndpointSet, previous: Option<&Balancer>) -> Balancer {
        let carried = |addr: &SocketAddr| {
            previous
                .and_then(|p| p.hosts().find(|h| h.addr == *addr))
                .map_or_else(Default::default, |h| h.active.clone())
        };
        let mut levels = Vec::with_capacity(set.priorities.len());
        for p in &set.priorities {
            let mut hosts = Vec::new();
            let mut locality_weights = Vec::new();
            for (li, l) in p.localities.iter().enumerate() {
                locality_weights.push(l.weight);
                for h in &l.hosts {
                    if let HostAddress::Ip(addr) = h.address {
                        hosts.push(LbHost {
                            addr,
                            weight: h.weight.max(1),
                            healthy: h.health == Health::Healthy,
                            locality: li,
                            active: carried(&addr),
                        });
                    }
                }
            }
            let named: Vec<(String, u32)> = hosts
                .iter()
                .map(|h| (h.addr.to_string(), h.weight))
                .collect();
            let (ring, maglev) = match config.policy {
                LbPolicy::RingHash { min_size, max_size } => {
                    (Some(Ring::new(&named, min_size, max_size)), None)
                }
                LbPolicy::Maglev { table_size } => (None, Some(Maglev::new(&named, table_size))),
                _ => (None, None),
            };
            levels.push(Level {
                hosts,
                locality_weights,
                ring,
                maglev,
            });
        }
        let rr = levels.iter().map(|l| vec![0i64; l.hosts.len()]).collect();
        let overprovisioning = f64::from(set.overprovisioning) / 100.0;
        Balancer {
            config: config.clone(),
            unejected: priority_load(&levels, overprovisioning, &[]),
            overprovisioning,
            levels,
            rr: Mutex::new(rr),
        }
    }

    /// Every host, all levels.
    pub fn hosts(&self) -> impl Iterator<Item = &LbHost> {
        self.levels.iter().flat_map(|l| l.hosts.iter())
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.levels.iter().map(|l| l.hosts.len()).sum()
    }

    /// Whether there is no host at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hosts that would take traffic outside panic mode (healthy and not ejected).
    pub fn healthy_count(&self, ejected: &[SocketAddr]) -> usize {
        self.hosts()
            .filter(|h| h.healthy && !ejected.contains(&h.addr))
            .count()
    }

    /// Picks a host, or None when there is none to pick.
    pub fn pick(
        &self,
        ctx: &LbContext,
        ejected: &[SocketAddr],
        rng: &mut fastrand::Rng,
    ) -> Option<&LbHost> {
        let eligible = |h: &LbHost| h.healthy && !ejected.contains(&h.addr);
        let computed;
        let load = if ejected.is_empty() {
            &self.unejected
        } else {
            computed = priority_load(&self.levels, self.overprovisioning, ejected);
            &computed
        };
        let (health, total) = (&load.health, load.total);
        let roll = match ctx.hash {
            Some(h) => (h % 100) as f64,
            None => rng.f64() * 100.0,
        };
        let level = if total <= 0.0 {
            if self.config.panic_threshold <= 0.0 {
                return None;
            }
            health.iter().position(|(n, _, _)| *n > 0)?
        } else {
            let mut acc = 0.0;
            load.loads
                .iter()
                .position(|l| {
                    acc += l * 100.0 / load.sum;
                    *l > 0.0 && roll < acc
                })
                .or_else(|| load.loads.iter().rposition(|l| *l > 0.0))?
        };
        let (n, ok, _) = health[level];
        let panic = total < 100.0
            && (ok == 0 || (100.0 * ok as f64 / n as f64) < self.config.panic_threshold);
        if ok == 0 && !panic {
            return None;
        }
        let l = &self.levels[level];
        let mut candidates: Candidates = (0..l.hosts.len())
            .filter(|i| panic || eligible(&l.hosts[*i]))
            .collect();
        if !ctx.avoid.is_empty() {
            let fresh: Candidates = candidates
                .iter()
                .copied()
                .filter(|i| !ctx.avoid.contains(&l.hosts[*i].addr))
                .collect();
            if !fresh.is_empty() {
                candidates = fresh;
            }
        }
        let hashed = matches!(
            self.config.policy,
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }
        );
        if self.config.locality_weighted && !hashed && !panic {
            candidates = self.pick_locality(l, candidates, rng);
        }
        let idx = match &self.config.policy {
            LbPolicy::RoundRobin => self.round_robin(level, l, &candidates),
            LbPolicy::Random => weighted_random(l, &candidates, rng),
            LbPolicy::LeastRequest { choice_count } => {
                least_request(l, &candidates, *choice_count, rng)
            }
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => {
                let mut mask = vec![false; l.hosts.len()];
                for i in &candidates {
                    mask[*i] = true;
                }
                let h = ctx.hash.unwrap_or_else(|| rng.u64(..));
                let accept = |i: usize| mask.get(i).copied().unwrap_or(false);
                match (&l.ring, &l.maglev) {
                    (Some(r), _) => r.lookup(h, &accept),
                    (_, Some(m)) => m.lookup(h, &accept),
                    _ => None,
                }
            }
            LbPolicy::ClusterProvided => None,
        }?;
        l.hosts.get(idx)
    }

    /// Envoy's locality-weighted choice: locality weight × its availability (overprovisioned
    /// healthy share, at most 1); then only that locality's candidates.
    fn pick_locality(
        &self,
        l: &Level,
        candidates: Candidates,
        rng: &mut fastrand::Rng,
    ) -> Candidates {
        let mut effective = vec![0f64; l.locality_weights.len()];
        for (li, w) in l.locality_weights.iter().enumerate() {
            let total = l.hosts.iter().filter(|h| h.locality == li).count();
            let ok = candidates
                .iter()
                .filter(|i| l.hosts[**i].locality == li)
                .count();
            if total > 0 {
                let avail = (self.overprovisioning * ok as f64 / total as f64).min(1.0);
                effective[li] = f64::from(*w) * avail;
            }
        }
        let sum: f64 = effective.iter().sum();
        if sum <= 0.0 {
            return candidates;
        }
        let mut roll = rng.f64() * sum;
        let chosen = effective
            .iter()
            .position(|w| {
                roll -= w;
                *w > 0.0 && roll < 0.0
            })
            .or_else(|| effective.iter().rposition(|w| *w > 0.0));
        candidates
            .into_iter()
            .filter(|i| Some(l.hosts[*i].locality) == chosen)
            .collect()
    }

    fn round_robin(&self, level: usize, l: &Level, candidates: &[usize]) -> Option<usize> {
        let mut state = self
            .rr
            .lock()
            .expect("round-robin lock is never poisoned: no panics under it");
        let cw = state.get_mut(level)?;
        let total: i64 = candidates
            .iter()
            .map(|i| i64::from(l.hosts[*i].weight))
            .sum();
        let mut best: Option<usize> = None;
        for i in candidates {
            cw[*i] += i64::from(l.hosts[*i].weight);
            if best.is_none_or(|b| cw[*i] > cw[b]) {
                best = Some(*i);
            }
        }
        let b = best?;
        cw[b] -= total;
        Some(b)
    }
}

/// Envoy's priority load: each level offers min(100, opf × healthy%) and takes what the levels
/// before it left; below 100 in total the loads are scaled up to 100 (by the pick).
fn priority_load(levels: &[Level], overprovisioning: f64, ejected: &[SocketAddr]) -> PriorityLoad {
    let health: SmallVec<[(usize, usize, f64); 4]> = levels
        .iter()
        .map(|l| {
            let n = l.hosts.len();
            let ok = l
                .hosts
                .iter()
                .filter(|h| h.healthy && !ejected.contains(&h.addr))
                .count();
            let pct = if n == 0 {
                0.0
            } else {
                (overprovisioning * 100.0 * ok as f64 / n as f64).min(100.0)
            };
            (n, ok, pct)
        })
        .collect();
    let total: f64 = health.iter().map(|(_, _, p)| p).sum::<f64>().min(100.0);
    let mut remaining = 100.0;
    let loads: SmallVec<[f64; 4]> = health
        .iter()
        .map(|(_, _, p)| {
            let l = p.min(remaining);
            remaining -= l;
            l
        })
        .collect();
    let sum: f64 = loads.iter().sum();
    PriorityLoad {
        health,
        total,
        loads,
        sum,
    }
}

fn weighted_random(l: &Level, candidates: &[usize], rng: &mut fastrand::Rng) -> Option<usize> {
    let total: u64 = candidates
        .iter()
        .map(|i| u64::from(l.hosts[*i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut roll = rng.u64(0..total);
    for i in candidates {
        let w = u64::from(l.hosts[*i].weight);
        if roll < w {
            return Some(*i);
        }
        roll -= w;
    }
    candidates.last().copied()
}

/// Power of `choice_count` choices: the one with fewest active requests per unit of weight
/// (Envoy's unweighted P2C when weights are equal).
fn least_request(
    l: &Level,
    candidates: &[usize],
    choices: u32,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let equal = candidates
        .windows(2)
        .all(|w| l.hosts[w[0]].weight == l.hosts[w[1]].weight);
    let score = |i: usize| {
        let h = &l.hosts[i];
        f64::from(h.active.load(Ordering::Relaxed) + 1) / f64::from(h.weight)
    };
    let mut best: Option<usize> = None;
    for _ in 0..choices.max(1) {
        let c = if equal {
            *candidates.get(rng.usize(0..candidates.len().max(1)))?
        } else {
            weighted_random(l, candidates, rng)?
        };
        if best.is_none_or(|b| score(c) < score(b)) {
            best = Some(c);
        }
    }
    best
}

#[cfg(test)]
mod tests;
