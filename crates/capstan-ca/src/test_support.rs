//! Builders for tests: CAs, CSRs and certificates.

use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::{CaOptions, CertificateAuthority, Identity};

pub(crate) fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

pub(crate) fn self_signed_ca() -> CertificateAuthority {
    CertificateAuthority::generate_self_signed(CaOptions::default())
        .expect("generating a CA with default options")
        .0
}

pub(crate) fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).expect("valid test identity")
}

/// A P-256 CSR, asking (in vain) for `requested_uri` as its SAN.
pub(crate) fn csr(requested_uri: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("P-256 key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(requested_uri).expect("ASCII URI"),
    )];
    let pem = params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("CSR PEM");
    (key, pem)
}

/// A leaf signed by `ca` with arbitrary SANs and validity, bypassing `sign`'s checks.
pub(crate) fn raw_leaf(
    ca: &CertificateAuthority,
    sans: Vec<SanType>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("P-256 key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    params
        .signed_by(&key, &ca.issuer)
        .expect("signing a test leaf")
        .der()
        .clone()
}

pub(crate) fn uri(s: &str) -> SanType {
    SanType::URI(Ia5String::try_from(s).expect("ASCII URI"))
}

pub(crate) fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}
