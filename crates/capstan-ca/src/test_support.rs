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
        .signed_by(&key, &*ca.issuer)
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

/// A root CA made for a test, to build plugged-in `cacerts` sets under it.
pub(crate) struct TestRoot {
    issuer: rcgen::Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

impl TestRoot {
    /// A self-signed root named `O=cluster.local, CN=<name>`.
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("P-256 key");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("self-signing a test root");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A `cacerts` set: an intermediate CA named `name` under this root (`cert-chain.pem`
    /// is the intermediate then the root, as Istio's tooling writes it).
    pub(crate) fn intermediate(&self, name: &str) -> crate::CaSecret {
        let key = KeyPair::generate().expect("P-256 key");
        let cert = ca_params(name)
            .signed_by(&key, &self.issuer)
            .expect("signing a test intermediate");
        crate::CaSecret {
            ca_cert: cert.pem(),
            ca_key: key.serialize_pem(),
            cert_chain: format!("{}{}", cert.pem(), self.pem()),
            root_cert: self.pem(),
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cluster.local");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(365 * 24 * 3600);
    params
}
