//! Parse + decode + validate throughput over a realistic mixed corpus (the shapes of Istio's
//! traffic-management and security tasks, with varied names), as YAML and as JSON.
//!
//! Run: `cargo bench -p capstan-api --bench validate`

use capstan_api::{check_text, CheckOptions, Verdict};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod corpus;
use corpus::{json_corpus, yaml_corpus};

fn bench(c: &mut Criterion) {
    const N: usize = 1_000;
    let yaml = yaml_corpus(N);
    let results = check_text(&yaml, &CheckOptions::default());
    let invalid: Vec<String> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Valid)
        .map(|r| format!("{:?} {}: {:?}", r.kind, r.name, r.errors))
        .collect();
    assert!(
        invalid.is_empty(),
        "bench corpus must be valid: {invalid:?}"
    );
    let json = json_corpus(N);

    let mut group = c.benchmark_group("parse_validate");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_with_input(
        BenchmarkId::new("yaml_multi_document", N),
        &yaml,
        |b, text| b.iter(|| check_text(text, &CheckOptions::default())),
    );
    group.bench_with_input(BenchmarkId::new("json_objects", N), &json, |b, docs| {
        b.iter(|| {
            docs.iter()
                .map(|d| check_text(d, &CheckOptions::default()).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
