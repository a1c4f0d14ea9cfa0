//! CSR → certificate chain, as `CreateCertificate` does it once the caller is authenticated:
//! parse the PEM CSR, verify its self-signature, issue the leaf with a random serial, PEM the
//! chain. CSRs are ECDSA P-256, as Istio's agents send them. One thread.
//!
//! - `self_signed_p256`: the generated root CA (ECDSA P-256 key).
//! - `plugged_rsa2048`: a plugged-in intermediate with an RSA-2048 key (Istio's default key
//!   type for CAs), response leaf + intermediate + root.
//! - `csr_verify_only`: the CSR half alone (parse + signature check), for the split.
//!
//! Run: `cargo bench -p capstan-ca --bench sign`

use std::path::Path;

use capstan_ca::{CaOptions, CertificateAuthority, Identity};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn csr() -> String {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM")
}

fn bench(c: &mut Criterion) {
    let self_signed = CertificateAuthority::generate_self_signed(CaOptions::default())
        .expect("self-signed CA")
        .0;
    let plugged = CertificateAuthority::from_cacerts_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cacerts-rsa-pkcs1"),
        CaOptions::default(),
    )
    .expect("plugged RSA CA");
    let ids = [Identity::new("cluster.local", "bookinfo", "reviews-v1").expect("identity")];
    let csr = csr();

    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    for (name, ca) in [
        ("self_signed_p256", &self_signed),
        ("plugged_rsa2048", &plugged),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| ca.sign(std::hint::black_box(&csr), &ids, 0).expect("signs"))
        });
    }
    // The CSR half alone: a CSR whose last signature byte is flipped is parsed and verified
    // in full, then refused, so the time is parse + verification + the error.
    let mut der = pem::parse(&csr).expect("PEM").into_contents();
    let last = der.len() - 1;
    der[last] ^= 1;
    let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    assert!(matches!(
        self_signed.sign(&bad, &ids, 0),
        Err(capstan_ca::SignError::Csr(
            capstan_ca::CsrError::BadSignature(_)
        ))
    ));
    group.bench_function("csr_verify_only", |b| {
        b.iter(|| {
            self_signed
                .sign(std::hint::black_box(&bad), &ids, 0)
                .is_err()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
