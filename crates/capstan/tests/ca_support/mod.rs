//! Shared by the tests of `capstan discovery`'s CA and TLS xDS port: the process on loopback
//! ports, gRPC clients over TLS (optionally with a client certificate), CSRs, and checks of
//! issued chains.
#![allow(dead_code)]

use anyhow::{ensure, Context, Result};
use capstan_ca_proto::{certificate_request, CertificateClient};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// The name clients verify the serving certificate for (what Istio's agents dial).
pub const SERVER_NAME: &str = "istiod.istio-system.svc";

pub fn free_port() -> u16 {
    capstan_e2e::free_port()
}

/// A node id of Istio's form for a sidecar of pod `pod` in `namespace`.
pub fn node_id(pod: &str, namespace: &str) -> String {
    format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local")
}

/// `capstan discovery` on loopback ports; killed on drop, its log kept for failure reports.
pub struct Discovery {
    child: Child,
    pub log: PathBuf,
    pub xds_port: u16,
    pub secure_port: u16,
    /// `/metrics` and `/ready`.
    pub monitoring_port: u16,
}

impl Discovery {
    /// Starts it with `args` (sources, CA flags) and waits for `/ready`.
    pub fn start(log_dir: &Path, name: &str, args: &[&str]) -> Result<Discovery> {
        let (xds_port, secure_port, debug_port, monitoring_port) =
            (free_port(), free_port(), free_port(), free_port());
        let log = log_dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("discovery")
            .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
            .args(["--secure-xds-addr", &format!("127.0.0.1:{secure_port}")])
            .args(["--debug-addr", &format!("127.0.0.1:{debug_port}")])
            .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting capstan discovery")?;
        let discovery = Discovery {
            child,
            log,
            xds_port,
            secure_port,
            monitoring_port,
        };
        capstan_e2e::wait_http_ok(monitoring_port, "/ready", Duration::from_secs(60))
            .with_context(|| format!("discovery not ready; log:\n{}", discovery.tail()))?;
        Ok(discovery)
    }

    /// Its process id.
    #[allow(dead_code)] // not every test binary including this module uses it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A channel to the TLS port trusting `root_pem`, with a client certificate if given.
    pub async fn tls_channel(
        &self,
        root_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root_pem))
            .domain_name(SERVER_NAME);
        if let Some((chain, key)) = identity {
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", self.secure_port))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20));
        // The port opens right after /ready; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match endpoint.connect().await {
                Ok(channel) => return Ok(channel),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e)).with_context(|| {
                        format!("connecting to the TLS port; log:\n{}", self.tail())
                    })
                }
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh P-256 key and a CSR for it (PEM).
pub fn new_csr() -> Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    Ok((key, csr))
}

/// `CreateCertificate` with a fresh CSR and `token`; the chain and the key on success.
pub async fn create_certificate(
    channel: Channel,
    token: Option<&str>,
) -> Result<(Vec<String>, String), tonic::Status> {
    let (key, csr) = new_csr().map_err(|e| tonic::Status::internal(e.to_string()))?;
    let response = CertificateClient::new(channel)
        .create_certificate(certificate_request(csr, 0, token)?)
        .await?;
    Ok((response.into_inner().cert_chain, key.serialize_pem()))
}

pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>()?)
}

/// The URI SANs of the first certificate of `pem`.
pub fn uri_sans(pem: &str) -> Result<Vec<String>> {
    let leaf = certs(pem)?.into_iter().next().context("no certificate")?;
    let (_, cert) = X509Certificate::from_der(&leaf)?;
    Ok(cert
        .subject_alternative_name()?
        .context("no SAN")?
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect())
}

/// Checks that the leaf of `chain` (leaf, intermediates, root last) verifies against
/// `root_pem` as a client certificate.
pub fn verify_chain(chain: &[String], root_pem: &str) -> Result<()> {
    ensure!(chain.len() >= 2, "a chain of {} certificates", chain.len());
    let leaf = certs(&chain[0])?.remove(0);
    let intermediates: Vec<_> = chain[1..chain.len() - 1]
        .iter()
        .map(|p| certs(p))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let roots = certs(root_pem)?;
    let anchors = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()?;
    webpki::EndEntityCert::try_from(&leaf)?.verify_for_usage(
        &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P256_SHA384,
        ],
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    Ok(())
}

/// Opens a Delta ADS stream for node `id` with `token`, subscribes to clusters and returns
/// the names of the first response, or the status the stream was refused with.
pub async fn delta_clusters(
    channel: Channel,
    token: Option<&str>,
    id: &str,
) -> Result<Vec<String>, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: id.to_owned(),
            ..Node::default()
        }),
        type_url: CLUSTER_TYPE.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .map_err(|_| tonic::Status::internal("request channel closed"))?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("token header"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut stream = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response within 20 s"))??
        .ok_or_else(|| tonic::Status::internal("stream ended without a response"))?;
    drop(tx);
    Ok(first.resources.into_iter().map(|r| r.name).collect())
}

/// A CA certificate made by a test (an operator's offline CA): a root, or an intermediate
/// for `--cacerts`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

fn ca_params(name: &str) -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
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
    Ok(params)
}

impl TestCa {
    /// A self-signed root `O=cluster.local, CN=<name>`.
    pub fn root(name: &str) -> Result<TestCa> {
        let key = rcgen::KeyPair::generate()?;
        let params = ca_params(name)?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// An intermediate CA under this one.
    pub fn intermediate(&self, name: &str) -> Result<TestCa> {
        let key = rcgen::KeyPair::generate()?;
        let params = ca_params(name)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A workload leaf for `spiffe` (chain: leaf, this CA), and its key.
    pub fn leaf(
        &self,
        spiffe: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into()?)];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
        Ok((vec![cert.der().clone(), self.der.clone()], key))
    }
}

impl TestCa {
    /// A workload leaf for `spiffe` valid from `not_before` to `not_after`, signed by this CA:
    /// the leaf alone and its key, as PEM.
    pub fn leaf_pem(
        &self,
        spiffe: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into()?)];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes one file of a `cacerts` directory atomically (write, then rename), as a
/// Kubernetes Secret volume or a careful operator replaces it.
pub fn put_cacert(dir: &Path, name: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// A `cacerts` directory signing with `intermediate` (of `root`), trusting `roots` (PEM).
pub fn write_cacerts(dir: &Path, intermediate: &TestCa, root: &TestCa, roots: &str) -> Result<()> {
    put_cacert(dir, "ca-cert.pem", &intermediate.pem)?;
    put_cacert(dir, "ca-key.pem", &intermediate.key_pem)?;
    put_cacert(
        dir,
        "cert-chain.pem",
        &format!("{}{}", intermediate.pem, root.pem),
    )?;
    put_cacert(dir, "root-cert.pem", roots)
}

/// Whether `chain` (leaf first) verifies as a client certificate against `root` alone.
pub fn chains_to(chain: &[CertificateDer<'static>], root: &TestCa) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&root.der) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf).is_ok_and(|ee| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
    })
}
