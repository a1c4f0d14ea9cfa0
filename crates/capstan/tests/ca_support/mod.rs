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
use rustls_pki_types::{CertificateDer, UnixTime};
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
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral loopback port")
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
