//! The webhook's serving certificate: from a directory (`tls.crt`, `tls.key` and, optionally,
//! `ca.crt`, the layout of a Kubernetes TLS Secret or cert-manager's), re-read when the files
//! change; or, when no CA runs (file-only development), generated at start: a self-signed CA
//! and a leaf it signs. With a CA the webhooks serve its DNS certificate instead (`dns_cert`).

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Lifetime of generated certificates. They live as long as the process (a restart makes new
/// ones and patches the new CA in), so a long one only avoids an expiry in a long-running pod.
const GENERATED_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How often a certificate directory is re-read.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// PEM key material of a serving certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    /// The leaf, then any intermediates.
    pub cert_chain: String,
    /// The leaf's private key.
    pub key: String,
    /// The CA that clients (the API server) verify the leaf with, when known: the
    /// `caBundle` of the webhook configurations.
    pub ca: Option<String>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert_chain", &self.cert_chain)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// A self-signed CA and a leaf it signs for `dns_names` and `ips`.
pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<Pem> {
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + GENERATED_TTL;
    let ca_key = rcgen::KeyPair::generate().context("generating the webhook CA key")?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "capstan-webhook-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::from_secs(3600);
    ca_params.not_after = not_after;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("signing the webhook CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut sans = Vec::new();
    for name in dns_names {
        let dns = rcgen::string::Ia5String::try_from(name.as_str())
            .with_context(|| format!("{name:?} is not a DNS name"))?;
        sans.push(rcgen::SanType::DnsName(dns));
    }
    sans.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    let key = rcgen::KeyPair::generate().context("generating the webhook serving key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("capstan-webhook"),
    );
    params.subject_alt_names = sans;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = not_after;
    let leaf = params
        .signed_by(&key, &issuer)
        .context("signing the webhook serving certificate")?;
    Ok(Pem {
        cert_chain: leaf.pem(),
        key: key.serialize_pem(),
        ca: Some(ca_cert.pem()),
    })
}

/// Reads `tls.crt`, `tls.key` and, if present, `ca.crt` from `dir`.
pub fn read_dir(dir: &Path) -> Result<Pem> {
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let ca_path = dir.join("ca.crt");
    Ok(Pem {
        cert_chain: read("tls.crt")?,
        key: read("tls.key")?,
        ca: ca_path.exists().then(|| read("ca.crt")).transpose()?,
    })
}

/// The rustls form of a certificate and key.
pub fn certified_key(pem: &Pem) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(pem.cert_chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the serving certificate's PEM")?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no certificate in the serving certificate's PEM"
    );
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).context("the serving key's PEM")?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("the serving key is not usable")?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .context("the serving key does not match the certificate")?;
    Ok(certified)
}

/// The certificate handshakes use, replaced whole on reload.
#[derive(Debug)]
pub struct ServingCert(ArcSwap<CertifiedKey>);

impl ServingCert {
    /// Serves `pem` until replaced.
    pub fn new(pem: &Pem) -> Result<Arc<Self>> {
        Ok(Arc::new(ServingCert(ArcSwap::from_pointee(certified_key(
            pem,
        )?))))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Re-reads `dir` every few seconds and serves what changed; a broken update is logged and the
/// last good certificate kept (a Secret being rewritten is briefly half-written). Sends each
/// new CA on `ca`, for the webhook configurations.
pub async fn reload(
    dir: PathBuf,
    mut current: Pem,
    cert: Arc<ServingCert>,
    ca: tokio::sync::watch::Sender<Option<String>>,
) {
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let pem = match read_dir(&dir) {
            Ok(pem) if pem != current => pem,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "re-reading the webhook certificate failed; keeping the last one");
                continue;
            }
        };
        match certified_key(&pem) {
            Ok(key) => {
                cert.0.store(Arc::new(key));
                tracing::info!(dir = %dir.display(), "reloaded the webhook serving certificate");
                if pem.ca != current.ca {
                    ca.send_replace(pem.ca.clone());
                }
                current = pem;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the new webhook certificate is unusable; keeping the last one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_leaf_is_for_the_names_and_signed_by_the_ca() {
        let names = vec!["istiod.istio-system.svc".to_owned(), "localhost".to_owned()];
        let pem = generate(&names, &["127.0.0.1".parse().expect("an IP")]).expect("generated");
        let key = certified_key(&pem).expect("usable by rustls");
        let ca = CertificateDer::from_pem_slice(pem.ca.as_deref().expect("a CA").as_bytes())
            .expect("CA PEM");
        let anchor = webpki::anchor_from_trusted_cert(&ca).expect("a trust anchor");
        let leaf = webpki::EndEntityCert::try_from(&key.cert[0]).expect("a leaf");
        let now = rustls_pki_types::UnixTime::now();
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .expect("the leaf verifies against the CA");
        for name in ["istiod.istio-system.svc", "localhost", "127.0.0.1"] {
            let server = rustls_pki_types::ServerName::try_from(name).expect("a server name");
            leaf.verify_is_valid_for_subject_name(&server)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        let other = rustls_pki_types::ServerName::try_from("example.com").expect("a name");
        assert!(leaf.verify_is_valid_for_subject_name(&other).is_err());
    }

    #[test]
    fn a_directory_is_read_and_a_mismatched_key_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let a = generate(&["a.svc".to_owned()], &[]).expect("a");
        let b = generate(&["b.svc".to_owned()], &[]).expect("b");
        std::fs::write(dir.path().join("tls.crt"), &a.cert_chain).expect("write");
        std::fs::write(dir.path().join("tls.key"), &a.key).expect("write");
        let read = read_dir(dir.path()).expect("readable");
        assert_eq!(read.ca, None, "no ca.crt in the directory");
        certified_key(&read).expect("matching key");
        std::fs::write(dir.path().join("tls.key"), &b.key).expect("write");
        let err = certified_key(&read_dir(dir.path()).expect("readable")).expect_err("mismatch");
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        std::fs::write(dir.path().join("ca.crt"), a.ca.as_deref().expect("CA")).expect("write");
        assert_eq!(read_dir(dir.path()).expect("readable").ca, a.ca);
    }
}
