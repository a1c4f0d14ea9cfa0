//! The index alone, without the API server or the adapter: the same mesh written with
//! `ServiceIndex::replace`, then single-endpoint changes with `ServiceIndex::apply`, timed one
//! by one on an otherwise idle thread (the churn phase shares 2 cores with the API server, so
//! its latencies include waiting for a CPU).

use capstan_registry::{RegistryDelta, RegistryId, RegistryKind, ServiceIndex};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What the index alone costs.
pub struct Offline {
    /// Time of the first `replace` of the whole mesh.
    pub replace: Duration,
    /// Live heap the index holds after it (the registry's copy plus the merged snapshot), MiB.
    pub heap_mib: f64,
    /// Per-change `apply` latencies.
    pub applies: Vec<Duration>,
}

/// Builds the mesh in a fresh index, then applies `changes` single-endpoint changes.
pub fn run(services: usize, per_service: usize, changes: u64) -> Offline {
    let mut yaml = String::from("services:\n");
    for i in 0..services {
        let _ = writeln!(
            yaml,
            "- hostname: {}\n  ports: [{{name: http, port: {}}}]\n  endpoints:",
            super::objects::host(i, "offline"),
            super::objects::PORT
        );
        for j in 0..per_service {
            let a = Ipv4Addr::from(super::objects::initial_address(i, j, per_service));
            let _ = writeln!(yaml, "  - {{address: {a}, ports: {{http: 8080}}}}");
        }
    }
    let mut state = capstan_registry::file::parse(&yaml).expect("generated registry parses");
    let id = RegistryId {
        kind: RegistryKind::Kubernetes,
        name: "offline".into(),
    };
    let index = ServiceIndex::new();
    let heap_before = super::stats::live_mib();
    let copy = state.clone();
    let started = Instant::now();
    index.replace(&id, copy);
    let replace = started.elapsed();
    let heap_mib = super::stats::live_mib() - heap_before;
    let mut latencies = Vec::with_capacity(changes as usize);
    for n in 0..changes {
        let i = (n % services as u64) as usize;
        let j = ((n / services as u64) % per_service as u64) as usize;
        let key = (super::objects::host(i, "offline"), super::objects::PORT);
        let endpoints = state.endpoints.get_mut(&key).expect("generated key");
        endpoints[j].address = Ipv4Addr::from(super::objects::churn_address(n)).to_string();
        let mut delta = RegistryDelta::default();
        delta.endpoints.insert(key, Some(endpoints.clone()));
        // A reader holding the current snapshot, as the xDS server would.
        let reader = index.snapshot();
        let started = Instant::now();
        index.apply(&id, delta);
        latencies.push(started.elapsed());
        drop(reader);
    }
    Offline {
        replace,
        heap_mib,
        applies: latencies,
    }
}
