//! The CA client (pilot-agent's job): generate a key pair here, send only a CSR for the
//! workload's SPIFFE id to Istio's `IstioCertificateService/CreateCertificate` over TLS,
//! authenticated by the Kubernetes ServiceAccount token (or by the current certificate), and
//! install the returned chain. Rotates at half the certificate's lifetime (pilot-agent's
//! `SECRET_GRACE_PERIOD_RATIO` 0.5); failures retry with backoff while the current certificate
//! keeps serving.
//!
//! The trusted roots (`ROOTCA`) are the trust bundle the CA's last response ended with plus
//! the mounted root file (the `istio-ca-root-cert` ConfigMap), which is re-read when it
//! changes, as pilot-agent does since Istio 1.13: during a CA root rotation either source may
//! learn the new root first, and new handshakes trust it at once, without a renewal and
//! without touching established connections.

use super::{Identity, Material};
use capstan_ca_proto::{certificate_request, CertificateClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where and how to ask for certificates.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// `host:port` of the CA (istiod's 15012).
    pub address: String,
    /// Name checked on the CA's serving certificate (pilot-agent: `istiod.istio-system.svc`).
    pub server_name: String,
    /// Root certificate(s) trusted for the CA's serving certificate (the
    /// `istio-ca-root-cert` ConfigMap, mounted).
    pub root_cert: PathBuf,
    /// ServiceAccount token (audience `istio-ca`), re-read at every request.
    pub token_file: Option<PathBuf>,
    /// The SPIFFE id asked for (the CA decides what it signs).
    pub spiffe: String,
    /// Requested lifetime (0: the CA's default).
    pub ttl: Duration,
}

/// How often the mounted root file is compared with what was last read.
const ROOTS_POLL: Duration = Duration::from_secs(1);

/// A TLS client configuration trusting `roots` (PEM) for the control plane's serving
/// certificate, presenting the workload certificate when there is one; ALPN h2 for gRPC.
/// The workload's current `ROOTCA` is trusted too: the control plane's certificate comes
/// from the mesh CA, and through a root rotation the CA's response may carry the new root
/// before the mounted file does.
pub fn control_plane_tls(
    roots_pem: &[u8],
    identity: Option<Arc<Identity>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem) {
        let c = c.map_err(|e| format!("root certificate: {e}"))?;
        roots.add(c).map_err(|e| format!("root certificate: {e}"))?;
    }
    if let Some(m) = identity.as_ref().and_then(|i| i.current()) {
        for root in &m.roots {
            // Checked when the material was installed; one that webpki still refuses as an
            // anchor would only fail to help.
            let _ = roots.add(root.clone());
        }
    }
    if roots.is_empty() {
        return Err("no root certificate for the control plane".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(super::Resolver(id))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A gRPC channel to `address` over TLS (`server_name` checked against the certificate).
pub async fn tls_channel(
    address: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tonic::transport::Channel, String> {
    let address = address.to_string();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name}: {e}"))?;
    let connector = tower::service_fn(move |_: http::Uri| {
        let (address, name, tls) = (address.clone(), name.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_static("http://control-plane")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connecting to {server_name}: {e}"))
}

/// Generates a P-256 key and a CSR for `spiffe`; returns (CSR PEM, key PEM).
pub fn csr(spiffe: &str) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("generating a key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(spiffe.to_string())
            .map_err(|e| format!("SPIFFE id {spiffe}: {e}"))?,
    )];
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("building the CSR: {e}"))?;
    Ok((
        csr.pem().map_err(|e| format!("encoding the CSR: {e}"))?,
        key.serialize_pem(),
    ))
}

/// A certificate from the CA: the chain, the key generated for it, and the trust bundle.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM: the leaf, then the intermediates.
    pub chain_pem: String,
    /// PEM: the private key, generated here.
    pub key_pem: String,
    /// PEM: the roots the response ended with (istiod's last entry: its whole root bundle,
    /// both roots during a rotation).
    pub bundle_pem: String,
}

impl Issued {
    /// The identity to install: the issued chain and key, trusting the response's bundle and
    /// the mounted roots `mounted_pem` (`ROOTCA`).
    pub fn material(&self, mounted_pem: &[u8]) -> Result<Material, String> {
        let mut roots = self.bundle_pem.clone().into_bytes();
        roots.push(b'\n');
        roots.extend_from_slice(mounted_pem);
        Material::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes(), &roots)
    }
}

/// Asks the CA once for a certificate for `opts.spiffe`.
pub async fn fetch(opts: &CaOptions, identity: &Arc<Identity>) -> Result<Issued, String> {
    let roots_pem =
        std::fs::read(&opts.root_cert).map_err(|e| format!("{}: {e}", opts.root_cert.display()))?;
    let tls = control_plane_tls(&roots_pem, Some(identity.clone()))?;
    let channel = tls_channel(&opts.address, &opts.server_name, tls).await?;
    let token = match &opts.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let (csr, key_pem) = csr(&opts.spiffe)?;
    let request = certificate_request(csr, opts.ttl.as_secs() as i64, token.as_deref())
        .map_err(|e| e.message().to_string())?;
    let response = CertificateClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|e| format!("CreateCertificate: {:?}: {}", e.code(), e.message()))?
        .into_inner();
    let chain = response.cert_chain;
    let (bundle_pem, chain_pem) = match chain.split_last() {
        Some((root, rest)) if !rest.is_empty() => (root.clone(), rest.join("\n")),
        Some((only, _)) => (String::new(), only.clone()),
        None => return Err("the CA returned an empty chain".into()),
    };
    Ok(Issued {
        chain_pem,
        key_pem,
        bundle_pem,
    })
}

/// When to renew: half-way through the certificate's life, not sooner than in a second.
pub fn renew_in(m: &Material, now: SystemTime) -> Duration {
    let life = m
        .not_after
        .duration_since(m.not_before)
        .unwrap_or(Duration::ZERO);
    let at = m.not_before + life / 2;
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

/// Keeps `identity` supplied from the CA until the task is dropped: renews at half-life
/// (with backoff after a failure), and re-installs the roots when the mounted file changes.
pub async fn run(opts: CaOptions, identity: Arc<Identity>) {
    let mut backoff = Duration::from_millis(500);
    let mut renew_at = tokio::time::Instant::now();
    let mut issued: Option<Issued> = None;
    // The mounted roots as last read; an unreadable file keeps the last content (kubelet
    // replaces a ConfigMap volume's files by renaming a directory: a read may miss once).
    let mut mounted = std::fs::read(&opts.root_cert).unwrap_or_default();
    let mut poll = tokio::time::interval(ROOTS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(renew_at) => {
                match fetch(&opts, &identity).await.and_then(|new| Ok((new.material(&mounted)?, new))) {
                    Ok((m, new)) => {
                        let wait = renew_in(&m, SystemTime::now());
                        identity.set(m);
                        issued = Some(new);
                        backoff = Duration::from_millis(500);
                        renew_at = tokio::time::Instant::now() + wait;
                        tracing::info!(renew_in = ?wait, "workload certificate issued by the CA");
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "workload certificate request failed");
                        renew_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            _ = poll.tick() => {
                let Ok(now) = std::fs::read(&opts.root_cert) else { continue };
                if now == mounted {
                    continue;
                }
                mounted = now;
                let Some(current) = &issued else { continue };
                match current.material(&mounted) {
                    Ok(m) => identity.set_trust(m),
                    Err(error) => tracing::error!(%error, path = %opts.root_cert.display(),
                        "the changed root file is not usable; keeping the current roots"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::TestCa;
    use crate::identity::verify;

    const A: &str = "spiffe://cluster.local/ns/default/sa/a";

    /// Whether a peer certificate from `ca` verifies against `m`'s roots.
    fn trusts(m: &Material, ca: &TestCa) -> bool {
        let (chain, _) = ca.issue(A);
        let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        verify::chain(
            &leaf,
            &[],
            &m.roots,
            webpki::KeyUsage::client_auth(),
            rustls_pki_types::UnixTime::now(),
        )
        .is_ok()
    }

    /// ROOTCA is the response's bundle and the mounted file together: during a root
    /// rotation the new root counts as soon as either carries it.
    #[test]
    fn roots_are_the_response_bundle_and_the_mounted_file() {
        let (old, new) = (TestCa::new("old"), TestCa::new("new"));
        let (chain_pem, key_pem) = old.issue(A);
        let issued = Issued {
            chain_pem,
            key_pem,
            bundle_pem: old.root_pem.clone(),
        };
        let both = format!("{}{}", old.root_pem, new.root_pem);
        let cases = [
            ("no rotation", &issued.bundle_pem, &old.root_pem, 1, false),
            ("the file first", &issued.bundle_pem, &both, 2, true),
            ("the response first", &both, &old.root_pem, 2, true),
        ];
        for (name, bundle, mounted, roots, new_trusted) in cases {
            let issued = Issued {
                bundle_pem: bundle.clone(),
                ..issued.clone()
            };
            let m = issued.material(mounted.as_bytes()).unwrap();
            assert_eq!(m.roots.len(), roots, "{name}: each root once");
            assert!(trusts(&m, &old), "{name}");
            assert_eq!(trusts(&m, &new), new_trusted, "{name}");
        }
        let garbage = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(issued.material(garbage).is_err());
    }
}
