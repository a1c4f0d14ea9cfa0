//! The CA client (pilot-agent's job): generate a key pair here, send only a CSR for the
//! workload's SPIFFE id to Istio's `IstioCertificateService/CreateCertificate` over TLS,
//! authenticated by the Kubernetes ServiceAccount token (or by the current certificate), and
//! install the returned chain. Rotates at half the certificate's lifetime (pilot-agent's
//! `SECRET_GRACE_PERIOD_RATIO` 0.5); failures retry with backoff while the current certificate
//! keeps serving.

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

/// A TLS client configuration trusting `roots` (PEM) for the control plane's serving
/// certificate, presenting the workload certificate when there is one; ALPN h2 for gRPC.
pub fn control_plane_tls(
    roots_pem: &[u8],
    identity: Option<Arc<Identity>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem) {
        let c = c.map_err(|e| format!("root certificate: {e}"))?;
        roots.add(c).map_err(|e| format!("root certificate: {e}"))?;
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

/// Asks the CA once; returns the installed material's lifetime.
pub async fn fetch(opts: &CaOptions, identity: &Arc<Identity>) -> Result<Material, String> {
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
    let (csr, key) = csr(&opts.spiffe)?;
    let request = certificate_request(csr, opts.ttl.as_secs() as i64, token.as_deref())
        .map_err(|e| e.message().to_string())?;
    let response = CertificateClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|e| format!("CreateCertificate: {:?}: {}", e.code(), e.message()))?
        .into_inner();
    let chain = response.cert_chain;
    let (root, leaf_and_intermediates) = match chain.split_last() {
        Some((root, rest)) if !rest.is_empty() => (root.clone(), rest.join("\n")),
        Some((only, _)) => (String::new(), only.clone()),
        None => return Err("the CA returned an empty chain".into()),
    };
    // ROOTCA: the chain's root and the trusted mesh roots (the same in a self-signed mesh).
    let mut roots = root.into_bytes();
    roots.push(b'\n');
    roots.extend_from_slice(&roots_pem);
    Material::from_pem(leaf_and_intermediates.as_bytes(), key.as_bytes(), &roots)
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

/// Keeps `identity` supplied from the CA until the task is dropped.
pub async fn run(opts: CaOptions, identity: Arc<Identity>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match fetch(&opts, &identity).await {
            Ok(m) => {
                let wait = renew_in(&m, SystemTime::now());
                identity.set(m);
                backoff = Duration::from_millis(500);
                tracing::info!(renew_in = ?wait, "workload certificate issued by the CA");
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "workload certificate request failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
