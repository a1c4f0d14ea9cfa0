//! Distribution tables for the balancer.

use super::*;
use crate::cluster::endpoints::{Host, LocalityHosts, LocalityName, PriorityLevel};
use std::collections::HashMap;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 80))
}

fn host(n: u8, weight: u32, health: Health) -> Host {
    Host {
        socket_match: Vec::new(),
        address: HostAddress::Ip(addr(n)),
        weight,
        health,
    }
}

/// A locality: its weight and hosts as (host number, weight, health).
type Loc = (u32, Vec<(u8, u32, Health)>);

/// Levels of localities.
fn set(levels: Vec<Vec<Loc>>) -> EndpointSet {
    EndpointSet {
        priorities: levels
            .into_iter()
            .map(|ls| PriorityLevel {
                localities: ls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (weight, hosts))| LocalityHosts {
                        locality: LocalityName {
                            zone: format!("z{i}"),
                            ..LocalityName::default()
                        },
                        weight,
                        hosts: hosts.into_iter().map(|(n, w, h)| host(n, w, h)).collect(),
                    })
                    .collect(),
            })
            .collect(),
        ..EndpointSet::default()
    }
}

const OK: Health = Health::Healthy;
const BAD: Health = Health::Unhealthy;

fn policy(p: LbPolicy) -> LbConfig {
    LbConfig {
        policy: p,
        ..LbConfig::default()
    }
}

fn counts(b: &Balancer, n: usize, ctx: &LbContext, ejected: &[SocketAddr]) -> HashMap<u8, usize> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = HashMap::new();
    for _ in 0..n {
        if let Some(h) = b.pick(ctx, ejected, &mut rng) {
            let last = match h.addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            };
            *out.entry(last).or_default() += 1;
        }
    }
    out
}

fn share(c: &HashMap<u8, usize>, n: u8) -> usize {
    c.get(&n).copied().unwrap_or(0)
}

#[test]
fn round_robin_is_even_and_weighted() {
    let even = Balancer::new(
        &policy(LbPolicy::RoundRobin),
        &set(vec![vec![(1, vec![(1, 1, OK), (2, 1, OK), (3, 1, OK)])]]),
        None,
    );
    let c = counts(&even, 300, &LbContext::default(), &[]);
    assert_eq!((share(&c, 1), share(&c, 2), share(&c, 3)), (100, 100, 100));
    let weighted = Balancer::new(
        &policy(LbPolicy::RoundRobin),
        &set(vec![vec![(1, vec![(1, 1, OK), (2, 3, OK)])]]),
        None,
    );
    let c = counts(&weighted, 400, &LbContext::default(), &[]);
    assert_eq!((share(&c, 1), share(&c, 2)), (100, 300));
}

#[test]
fn policies_respect_weights_health_ejection_and_avoid() {
    let two = set(vec![vec![(1, vec![(1, 1, OK), (2, 1, OK)])]]);
    let avoid1 = LbContext {
        avoid: vec![addr(1)],
        ..LbContext::default()
    };
    // (policy, set, ctx, ejected, host that must get nothing, host that must get everything)
    type Case = (LbPolicy, EndpointSet, LbContext, Vec<SocketAddr>, u8, u8);
    let cases: Vec<Case> = vec![
        (
            LbPolicy::Random,
            set(vec![vec![(1, vec![(1, 1, BAD), (2, 1, OK), (3, 1, OK)])]]),
            LbContext::default(),
            vec![],
            1,
            0,
        ),
        (
            LbPolicy::RoundRobin,
            two.clone(),
            LbContext::default(),
            vec![addr(1)],
            1,
            2,
        ),
        (
            LbPolicy::LeastRequest { choice_count: 2 },
            two.clone(),
            avoid1.clone(),
            vec![],
            1,
            2,
        ),
        (
            LbPolicy::RingHash {
                min_size: 1024,
                max_size: 8 << 20,
            },
            two.clone(),
            avoid1.clone(),
            vec![],
            1,
            2,
        ),
        (
            LbPolicy::Maglev { table_size: 65537 },
            two.clone(),
            LbContext::default(),
            vec![addr(2)],
            2,
            1,
        ),
    ];
    for (p, s, ctx, ejected, never, always) in cases {
        let b = Balancer::new(&policy(p.clone()), &s, None);
        let c = counts(&b, 200, &ctx, &ejected);
        assert_eq!(share(&c, never), 0, "{p:?}: {c:?}");
        if always > 0 {
            assert_eq!(share(&c, always), 200, "{p:?}: {c:?}");
        } else {
            assert_eq!(c.values().sum::<usize>(), 200, "{p:?}: {c:?}");
        }
    }
}

#[test]
fn random_and_least_request_follow_weights_and_load() {
    let s = set(vec![vec![(1, vec![(1, 1, OK), (2, 4, OK)])]]);
    let c = counts(
        &Balancer::new(&policy(LbPolicy::Random), &s, None),
        5000,
        &LbContext::default(),
        &[],
    );
    assert!((3700..4300).contains(&share(&c, 2)), "{c:?}");
    let even = set(vec![vec![(1, vec![(1, 1, OK), (2, 1, OK)])]]);
    let b = Balancer::new(
        &policy(LbPolicy::LeastRequest { choice_count: 2 }),
        &even,
        None,
    );
    b.hosts()
        .next()
        .expect("two hosts")
        .active
        .store(50, Ordering::Relaxed);
    let c = counts(&b, 1000, &LbContext::default(), &[]);
    // P2C picks the busy host only when both choices land on it (~1/4).
    assert!(share(&c, 1) < 350 && share(&c, 2) > 650, "{c:?}");
}

#[test]
fn ring_hash_and_maglev_are_sticky_and_spread() {
    let s = set(vec![vec![(1, (1..=5).map(|n| (n, 1, OK)).collect())]]);
    for p in [
        LbPolicy::RingHash {
            min_size: 1024,
            max_size: 8 << 20,
        },
        LbPolicy::Maglev { table_size: 65537 },
    ] {
        let b = Balancer::new(&policy(p.clone()), &s, None);
        let mut rng = fastrand::Rng::with_seed(1);
        for key in [1u64, 42, 0xdead_beef] {
            let ctx = LbContext {
                hash: Some(super::super::hash::xxhash64(&key.to_le_bytes(), 0)),
                ..LbContext::default()
            };
            let first = b.pick(&ctx, &[], &mut rng).expect("hosts").addr;
            for _ in 0..50 {
                assert_eq!(
                    b.pick(&ctx, &[], &mut rng).expect("hosts").addr,
                    first,
                    "{p:?}"
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for key in 0..500u64 {
            let ctx = LbContext {
                hash: Some(super::super::hash::xxhash64(&key.to_le_bytes(), 3)),
                ..LbContext::default()
            };
            seen.insert(b.pick(&ctx, &[], &mut rng).expect("hosts").addr);
        }
        assert_eq!(seen.len(), 5, "{p:?} spreads different keys");
    }
}

#[test]
fn priority_failover_and_panic() {
    let failover = set(vec![
        vec![(1, vec![(1, 1, BAD), (2, 1, BAD)])],
        vec![(1, vec![(3, 1, OK)])],
    ]);
    // (set, ejected, expected share of host 3 out of 1000 (±60), description)
    let cases: Vec<(EndpointSet, Vec<SocketAddr>, usize, &str)> = vec![
        (
            failover.clone(),
            vec![],
            1000,
            "P0 all unhealthy: everything to P1",
        ),
        (
            set(vec![
                vec![(1, vec![(1, 1, OK), (2, 1, OK)])],
                vec![(1, vec![(3, 1, OK)])],
            ]),
            vec![],
            0,
            "P0 healthy: nothing to P1",
        ),
        (
            set(vec![
                vec![(1, vec![(1, 1, OK), (2, 1, OK)])],
                vec![(1, vec![(3, 1, OK)])],
            ]),
            vec![addr(1)],
            300,
            "P0 half ejected offers 70%, P1 takes 30%",
        ),
    ];
    for (s, ejected, want, what) in cases {
        let b = Balancer::new(&policy(LbPolicy::Random), &s, None);
        let c = counts(&b, 1000, &LbContext::default(), &ejected);
        let got = share(&c, 3);
        assert!(got.abs_diff(want) <= 60, "{what}: {c:?}");
    }
    // One level, 1 of 4 healthy (25% < 50%): panic, all four hosts take traffic.
    let panic = set(vec![vec![(
        1,
        vec![(1, 1, OK), (2, 1, BAD), (3, 1, BAD), (4, 1, BAD)],
    )]]);
    let b = Balancer::new(&policy(LbPolicy::RoundRobin), &panic, None);
    assert_eq!(counts(&b, 400, &LbContext::default(), &[]).len(), 4);
    // Panic disabled and nothing healthy: no host.
    let none = Balancer::new(
        &LbConfig {
            panic_threshold: 0.0,
            ..policy(LbPolicy::RoundRobin)
        },
        &set(vec![vec![(1, vec![(1, 1, BAD)])]]),
        None,
    );
    assert!(none
        .pick(&LbContext::default(), &[], &mut fastrand::Rng::new())
        .is_none());
}

#[test]
fn locality_weighted() {
    let s = set(vec![vec![(1, vec![(1, 1, OK)]), (3, vec![(2, 1, OK)])]]);
    let cfg = LbConfig {
        locality_weighted: true,
        ..policy(LbPolicy::RoundRobin)
    };
    let c = counts(
        &Balancer::new(&cfg, &s, None),
        4000,
        &LbContext::default(),
        &[],
    );
    assert!((2800..3200).contains(&share(&c, 2)), "{c:?}");
    let flat = counts(
        &Balancer::new(&policy(LbPolicy::RoundRobin), &s, None),
        4000,
        &LbContext::default(),
        &[],
    );
    assert_eq!(
        share(&flat, 2),
        2000,
        "weights ignored without locality_weighted_lb_config"
    );
}

#[test]
fn active_counts_survive_rebuilds() {
    let s = set(vec![vec![(1, vec![(1, 1, OK), (2, 1, OK)])]]);
    let a = Balancer::new(&LbConfig::default(), &s, None);
    a.hosts()
        .next()
        .expect("host")
        .active
        .store(3, Ordering::Relaxed);
    let b = Balancer::new(&LbConfig::default(), &s, Some(&a));
    assert_eq!(
        b.hosts()
            .next()
            .expect("host")
            .active
            .load(Ordering::Relaxed),
        3
    );
}
