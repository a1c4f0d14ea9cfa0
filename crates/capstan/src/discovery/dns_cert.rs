//! The control plane's DNS certificate (istiod's, for `istiod.<ns>.svc`): issued by the mesh
//! CA for the control plane's names, renewed at half its life, and re-issued at once when a
//! reloaded CA signs with another certificate. Handshakes read the current one, so renewal
//! drops no connection.
//!
//! One certificate serves the TLS xDS port and, unless `--webhook-cert-dir` is given, the
//! webhook port, as istiod serves both with its DNS certificate: every replica has its own
//! short-lived certificate, and whatever trusts the mesh roots (proxies, the API server through
//! the webhooks' `caBundle`) trusts all of them.

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use capstan_ca::{CertificateAuthority, CurrentCa};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// After a failed renewal, try again this soon.
const RENEW_RETRY: Duration = Duration::from_secs(60);

/// The certificate handshakes use: replaced whole on renewal.
#[derive(Debug)]
pub struct DnsCertificate {
    current: ArcSwap<CertifiedKey>,
    names: Vec<String>,
}

impl DnsCertificate {
    /// The DNS names it is issued for.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl ResolvesServerCert for DnsCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Issues a certificate for `names`; returns it with its expiry.
fn issue(
    ca: &CertificateAuthority,
    names: &[String],
    ttl: Duration,
) -> Result<(CertifiedKey, SystemTime)> {
    let serving = ca
        .issue_serving_certificate(names, None, ttl)
        .context("issuing the TLS serving certificate")?;
    let chain = CertificateDer::pem_slice_iter(serving.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the serving certificate's PEM")?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
        .context("the serving key's PEM")?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("the serving key is not usable")?;
    Ok((CertifiedKey::new(chain, signing_key), serving.not_after))
}

/// When to renew a certificate expiring at `not_after`: at half its remaining life, at least
/// a second from now (a zero lifetime must not become a busy loop).
fn half_life(not_after: SystemTime) -> tokio::time::Instant {
    let left = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + (left / 2).max(Duration::from_secs(1))
}

/// Each name once, in order of first appearance.
pub fn unique_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// Issues the certificate for `names` (valid for `ttl`) and keeps it current for the life of
/// the process.
pub fn start(ca: CurrentCa, names: Vec<String>, ttl: Duration) -> Result<Arc<DnsCertificate>> {
    let (key, not_after) = issue(&ca.get(), &names, ttl)?;
    let cert = Arc::new(DnsCertificate {
        current: ArcSwap::from_pointee(key),
        names,
    });
    tokio::spawn(renew(ca, ttl, cert.clone(), not_after));
    Ok(cert)
}

/// Renews the certificate at half its life, and at once when the CA signs with another
/// certificate (a reloaded `cacerts`): clients that trust only the new root must not be
/// served a leaf of the old one longer than needed.
async fn renew(mut ca: CurrentCa, ttl: Duration, cert: Arc<DnsCertificate>, not_after: SystemTime) {
    let mut issued_by = ca.get().signing_certificate().clone();
    let mut renew_at = half_life(not_after);
    loop {
        let authority = tokio::select! {
            () = tokio::time::sleep_until(renew_at) => ca.get(),
            next = ca.changed() => {
                if next.signing_certificate() == &issued_by {
                    continue;
                }
                next
            }
        };
        match issue(&authority, &cert.names, ttl) {
            Ok((key, expiry)) => {
                cert.current.store(Arc::new(key));
                let reissued = authority.signing_certificate() != &issued_by;
                issued_by = authority.signing_certificate().clone();
                renew_at = half_life(expiry);
                tracing::info!(expires = ?expiry, new_signing_certificate = reissued,
                    "renewed the TLS serving certificate");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "renewing the TLS serving certificate failed; retrying");
                renew_at = tokio::time::Instant::now() + RENEW_RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_ca::CaOptions;

    fn leaf(cert: &DnsCertificate) -> CertificateDer<'static> {
        cert.current.load().cert[0].clone()
    }

    #[tokio::test]
    async fn issued_for_the_names_by_the_ca_and_renewed_at_half_life() {
        let (ca, _) = CertificateAuthority::generate_self_signed(CaOptions::default())
            .expect("a self-signed CA");
        let roots = ca.roots().to_vec();
        let names = unique_names(
            [
                "istiod.istio-system.svc",
                "capstan.istio-system.svc",
                "istiod.istio-system.svc",
            ]
            .map(String::from),
        );
        assert_eq!(
            names,
            ["istiod.istio-system.svc", "capstan.istio-system.svc"]
        );
        let cert = start(
            CurrentCa::fixed(Arc::new(ca)),
            names,
            Duration::from_secs(2),
        )
        .expect("issued");
        let first = leaf(&cert);
        let anchors: Vec<_> = roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).expect("a trust anchor"))
            .collect();
        let verify = |der: &CertificateDer<'static>| {
            let leaf = webpki::EndEntityCert::try_from(der).expect("a leaf");
            leaf.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                rustls_pki_types::UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .expect("verifies against the mesh root");
            for name in cert.names() {
                let server = rustls_pki_types::ServerName::try_from(name.as_str()).expect("name");
                leaf.verify_is_valid_for_subject_name(&server)
                    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
        };
        verify(&first);
        // A two-second certificate is renewed after about one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while leaf(&cert) == first {
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        verify(&leaf(&cert));
    }
}
