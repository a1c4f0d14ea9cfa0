//! The file registry's re-read after one service's endpoints changed, on the load generator's
//! mesh (1,000 services × 10 endpoints, a 1.4 MB JSON file): the cost between an endpoint
//! change being written and the push being queued.
//!
//! `cargo bench -p capstan-registry --bench file_sync`

use capstan_loadgen::mesh::{registry_json, MeshSpec};
use capstan_registry::file::FileRegistry;
use capstan_registry::ServiceIndex;
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let spec = MeshSpec {
        services: 1000,
        endpoints: 10,
        virtual_services: 0,
        destination_rules: 0,
    };
    let texts = [
        registry_json(&spec, Some((7, 1))),
        registry_json(&spec, Some((7, 2))),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    std::fs::write(&path, &texts[0]).unwrap();
    let registry = FileRegistry::new(path.clone());
    let index = ServiceIndex::new();
    registry.sync(&index).unwrap();
    let mut k = 0;
    c.bench_function("file_registry_sync_one_service_changed", |b| {
        b.iter(|| {
            k += 1;
            std::fs::write(&path, &texts[k % 2]).unwrap();
            assert_eq!(registry.sync(&index), Ok(1));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
