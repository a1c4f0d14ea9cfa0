//! xDS generation for one sidecar proxy on the load simulator's synthetic mesh (1,000 services ×
//! 10 endpoints in 10 namespaces, 500 VirtualServices with 80/20 subset splits, 500
//! DestinationRules with two subsets and a connection pool). The proxy subscribes as Envoy
//! would: CDS and LDS wildcard, EDS for every EDS cluster CDS lists, RDS for every route
//! configuration the listeners name.
//!
//! - `cds`, `eds`, `lds`, `rds`: one type for the first proxy of a fresh push context (each
//!   iteration gets a new generator and context, built outside the timing), so nothing the
//!   generator may share between proxies of one push is there yet.
//! - `all_four`: the four types in push order, the same proxy again and again on one context
//!   (a proxy re-requesting within one push: whatever is shared per push is already there).
//! - `all_four_cold`: one proxy's initial sync as the first proxy of a fresh context.
//! - `all_four_warm_same_ns` / `all_four_warm_other_ns`: one proxy's initial sync on a fresh
//!   context right after another proxy (of its namespace / of another namespace) synced.
//! - `push_context_build`: `PushContext::new` for this mesh.
//!
//! Run: `cargo bench -p capstan-xds --bench generate`

use capstan_api::CheckOptions;
use capstan_config::{ConfigStore, Snapshot};
use capstan_registry::{IndexSnapshot, RegistryId, RegistryKind, ServiceIndex};
use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use capstan_xds::{
    Generator, IstioGenerator, MeshConfig, Proxy, PushContext, PushRequest, Subscription,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use capstan_loadgen::mesh;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

type Snapshots = (Arc<Snapshot>, Arc<IndexSnapshot>);

/// The load simulator's default mesh: 1,000 services × 10 endpoints, 500 VirtualServices,
/// 500 DestinationRules.
const LOADGEN: mesh::MeshSpec = mesh::MeshSpec {
    services: 1_000,
    endpoints: 10,
    virtual_services: 500,
    destination_rules: 500,
};

/// Config and service snapshots of the mesh, built the way the generator tests build them.
fn snapshots(spec: &mesh::MeshSpec) -> Snapshots {
    let results = capstan_api::check_text(&mesh::config_yaml(spec), &CheckOptions::default());
    let mut objects = Vec::new();
    for r in results {
        assert!(
            r.errors.is_empty(),
            "{}/{}: {:?}",
            r.namespace,
            r.name,
            r.errors
        );
        objects.extend(r.object.map(|o| *o));
    }
    let store = ConfigStore::new();
    store.replace_source("bench", objects.clone());
    let index = ServiceIndex::new();
    let state = capstan_registry::file::parse(&mesh::registry_json(spec, None)).unwrap();
    index.replace(
        &RegistryId {
            kind: RegistryKind::File,
            name: "file".into(),
        },
        state,
    );
    index.replace(
        &RegistryId {
            kind: RegistryKind::ServiceEntry,
            name: "se".into(),
        },
        capstan_registry::serviceentry::from_config(objects.iter()),
    );
    (store.snapshot(), index.snapshot())
}

fn context(snap: &Snapshots, version: u64) -> PushContext {
    PushContext::new(
        snap.0.clone(),
        snap.1.clone(),
        MeshConfig::default(),
        version,
    )
}

fn full(version: u64) -> PushRequest {
    PushRequest {
        version,
        full: true,
        ..PushRequest::default()
    }
}

/// A generator on a new push of the mesh, nothing generated from it yet, and its push.
fn fresh(snap: &Snapshots, version: &mut u64) -> (IstioGenerator, PushRequest) {
    *version += 1;
    (IstioGenerator::new(context(snap, *version)), full(*version))
}

/// Simulated sidecar `i` of the load simulator (namespace `ns-{i % 10}`).
fn sidecar(i: usize) -> Proxy {
    let node = Node {
        id: mesh::node_id(i),
        cluster: "loadgen".into(),
        ..Node::default()
    };
    Proxy::from_node(Some(&node)).unwrap()
}

fn wildcard() -> Subscription {
    Subscription {
        wildcard: true,
        ..Subscription::default()
    }
}

fn names(names: BTreeSet<String>) -> Subscription {
    Subscription {
        wildcard: false,
        names: names.into_iter().map(Into::into).collect(),
    }
}

/// What a proxy subscribes to, per type, in push order (CDS, EDS, LDS, RDS).
struct Subscriptions([(&'static str, Subscription); 4]);

fn route_names(listener: &Listener) -> impl Iterator<Item = String> + '_ {
    listener
        .filter_chains
        .iter()
        .flat_map(|chain| &chain.filters)
        .filter_map(|filter| match &filter.config_type {
            Some(ConfigType::TypedConfig(any)) if any.type_url == HCM => {
                match HttpConnectionManager::decode(any.value.as_slice())
                    .ok()?
                    .route_specifier
                {
                    Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
                    _ => None,
                }
            }
            _ => None,
        })
}

/// Subscribes like Envoy: CDS and LDS wildcard, then EDS for every EDS cluster and RDS for
/// every route configuration the listeners name.
fn subscribe(g: &IstioGenerator, proxy: &Proxy, push: &PushRequest) -> Subscriptions {
    let clusters = g.generate(proxy, CLUSTER, &wildcard(), push).unwrap();
    let eds = clusters
        .iter()
        .map(|r| r.decode::<Cluster>().unwrap())
        .filter(|c| {
            matches!(c.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32)
        })
        .map(|c| c.name)
        .collect();
    let listeners = g.generate(proxy, LISTENER, &wildcard(), push).unwrap();
    let rds = listeners
        .iter()
        .flat_map(|r| route_names(&r.decode::<Listener>().unwrap()).collect::<Vec<_>>())
        .collect();
    Subscriptions([
        (CLUSTER, wildcard()),
        (ENDPOINT, names(eds)),
        (LISTENER, wildcard()),
        (ROUTE, names(rds)),
    ])
}

/// One proxy's initial sync: the four types in push order (the resources, dropped by the
/// caller outside the timing).
fn all_four(
    g: &IstioGenerator,
    proxy: &Proxy,
    subs: &Subscriptions,
    push: &PushRequest,
) -> impl Sized {
    subs.0
        .each_ref()
        .map(|(type_url, sub)| g.generate(proxy, type_url, sub, push).unwrap())
}

fn bench(c: &mut Criterion) {
    let spec = LOADGEN;
    let snap = snapshots(&spec);

    // The proxy measured, a later one in its namespace, and a later one in another namespace.
    let first = sidecar(0);
    let same_ns = sidecar(10);
    let other_ns = sidecar(1);
    assert_eq!(first.namespace, same_ns.namespace);
    assert_ne!(first.namespace, other_ns.namespace);

    let mut version = 0;
    let (g, push) = fresh(&snap, &mut version);
    let subs = subscribe(&g, &first, &push);
    let subs_same_ns = subscribe(&g, &same_ns, &push);
    let subs_other_ns = subscribe(&g, &other_ns, &push);
    let counts = subs
        .0
        .each_ref()
        .map(|(type_url, sub)| g.generate(&first, type_url, sub, &push).unwrap().len());
    assert!(counts.iter().all(|&n| n > 0), "empty xDS: {counts:?}");
    assert_eq!(
        counts[1],
        subs.0[1].1.names.len(),
        "an EDS cluster has no CLA"
    );
    assert_eq!(
        counts[3],
        subs.0[3].1.names.len(),
        "a route name has no RDS"
    );
    eprintln!(
        "generate_one_proxy: {} services; proxy {} gets {} clusters ({} EDS), {} endpoints (CLAs), {} listeners, {} routes",
        spec.services, first.id, counts[0], subs.0[1].1.names.len(), counts[1], counts[2], counts[3]
    );

    let mut group = c.benchmark_group("generate_one_proxy");
    // Flat sampling: the batched benches below pay a setup (a context, another proxy's sync)
    // per iteration outside the timing, so their iteration counts are kept low.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1));

    for (i, name) in ["cds", "eds", "lds", "rds"].into_iter().enumerate() {
        let (type_url, sub) = &subs.0[i];
        // LDS takes ~0.1 ms, the context built per iteration (untimed) ~1 ms: fewer iterations.
        let time = if name == "lds" { 300 } else { 3000 };
        group.measurement_time(Duration::from_millis(time));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || fresh(&snap, &mut version),
                |(g, push)| g.generate(&first, type_url, sub, push).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }

    group.measurement_time(Duration::from_secs(3));
    group.bench_function("all_four", |b| {
        b.iter_with_large_drop(|| all_four(&g, &first, &subs, &push))
    });
    group.bench_function("all_four_cold", |b| {
        b.iter_batched_ref(
            || fresh(&snap, &mut version),
            |(g, push)| all_four(g, &first, &subs, push),
            BatchSize::PerIteration,
        )
    });
    // The setup here is a whole sync of another proxy.
    group.measurement_time(Duration::from_secs(1));
    for (name, later, later_subs) in [
        ("all_four_warm_same_ns", &same_ns, &subs_same_ns),
        ("all_four_warm_other_ns", &other_ns, &subs_other_ns),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let (g, push) = fresh(&snap, &mut version);
                    drop(all_four(&g, &first, &subs, &push));
                    (g, push)
                },
                |(g, push)| all_four(g, later, later_subs, push),
                BatchSize::PerIteration,
            )
        });
    }

    group.measurement_time(Duration::from_secs(3));
    group.bench_function("push_context_build", |b| {
        b.iter_with_large_drop(|| context(&snap, 1))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
