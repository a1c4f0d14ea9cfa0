//! Bad input to `capstan discovery`'s CA and to xDS on its TLS port, end to end (issue 12):
//! one table of malformed CSRs, tokens and client certificates, expired chains, wrong trust
//! domains and nodes of another namespace, each row with the gRPC status code and a fragment
//! of the message it must get. One `capstan discovery` serves them all, with a plugged-in CA
//! (`--cacerts`, so the test holds the CA's keys and can make certificates the CA never
//! issued) and a private kube-apiserver issuing real ServiceAccount tokens (TokenRequest) and
//! reviewing them (TokenReview).
//!
//! Not every row is refused: as istiod, the CA ignores the SANs a CSR asks for (the
//! certificate names the caller), and a lifetime above `--max-workload-cert-ttl` is cut to it
//! (istiod refuses it; Capstan documents the cut in docs/configuration.md).
//!
//! Then "change nothing": after every row a good caller still gets a good certificate;
//! istiod's `citadel_server_*` counters moved by exactly what the rows account for (no
//! certificate issued to a refused request, requests refused before the service not counted
//! at all); the trust bundle is unchanged; good xDS streams still open.

mod ca_forgery;
mod ca_support;

use anyhow::{ensure, Context, Result};
use ca_forgery::{csr_asking, tampered_csr, weak_rsa_csr, Tokens};
use ca_support::*;
use capstan_ca_proto::{CertificateClient, IstioCertificateRequest, IMPERSONATED_IDENTITY};
use capstan_e2e::context;
use capstan_e2e::private_kube::PrivateKube;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf as pb;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use x509_parser::prelude::{FromDer, X509Certificate};

const ALPHA: &str = "spiffe://cluster.local/ns/alpha/sa/app";
const BETA: &str = "spiffe://cluster.local/ns/beta/sa/app";
/// `--workload-cert-ttl`: what a request asking for no lifetime gets.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// `--max-workload-cert-ttl`.
const MAX_TTL: Duration = Duration::from_secs(3600);

// istiod's CA counters (`citadel_server_*`), as series of the text format.
const REQUESTS: &str = "citadel_server_csr_count";
const ISSUED: &str = "citadel_server_success_cert_issuance_count";
const AUTHN_FAILURES: &str = "citadel_server_authentication_failure_count";
const CSR_ERRORS: &str = "citadel_server_csr_sign_err_count{error=\"CSR_ERROR\"}";
const TTL_ERRORS: &str = "citadel_server_csr_sign_err_count{error=\"TTL_ERROR\"}";

/// What a row presents.
#[derive(Clone)]
enum Credential {
    None,
    /// `authorization: Bearer <token>`.
    Token(String),
    /// A raw `authorization` header.
    Header(&'static str),
    /// A TLS client certificate: the chain (leaf first) and the key, PEM.
    Cert {
        chain: String,
        key: String,
    },
}

impl Credential {
    fn authorization(&self) -> Option<String> {
        match self {
            Credential::Token(t) => Some(format!("Bearer {t}")),
            Credential::Header(h) => Some((*h).to_owned()),
            Credential::None | Credential::Cert { .. } => None,
        }
    }

    fn certificate(&self) -> Option<(&str, &str)> {
        match self {
            Credential::Cert { chain, key } => Some((chain, key)),
            _ => None,
        }
    }
}

/// What a row asks for.
enum Call {
    /// `CreateCertificate`.
    Sign {
        csr: String,
        ttl_seconds: i64,
        /// The request metadata's `ImpersonatedIdentity`.
        impersonate: Option<&'static str>,
    },
    /// A Delta ADS stream on the TLS port.
    Xds(Box<Node>),
}

/// What a row must get.
enum Expect {
    /// A status with this code and a message holding `message`; `counted` is the CA counter
    /// series it adds one to (with `citadel_server_csr_count`), if it reaches the CA service.
    Refused {
        code: Code,
        message: &'static str,
        counted: Option<&'static str>,
    },
    /// The TLS handshake refuses the client certificate with this alert (as istiod's, which
    /// verifies client certificates if given): a bare handshake reads it, and the gRPC call
    /// fails in the transport without any status from the server.
    Handshake(&'static str),
    /// A certificate naming exactly `identity`, verifying against the root, valid for
    /// `lifetime` from now.
    Issued {
        identity: &'static str,
        lifetime: Duration,
    },
}

struct Case {
    name: &'static str,
    credential: Credential,
    call: Call,
    expect: Expect,
}

fn case(name: &'static str, credential: &Credential, call: Call, expect: Expect) -> Case {
    Case {
        name,
        credential: credential.clone(),
        call,
        expect,
    }
}

fn sign(csr: &str) -> Call {
    Call::Sign {
        csr: csr.to_owned(),
        ttl_seconds: 0,
        impersonate: None,
    }
}

fn sign_for(csr: &str, ttl_seconds: i64) -> Call {
    Call::Sign {
        csr: csr.to_owned(),
        ttl_seconds,
        impersonate: None,
    }
}

/// A sidecar node of Istio's form in `namespace`.
fn node(namespace: &str) -> Node {
    Node {
        id: node_id("app-1", namespace),
        ..Node::default()
    }
}

/// A stream for a node in `namespace`, optionally with metadata `NAMESPACE`.
fn xds(namespace: &str, metadata_namespace: Option<&str>) -> Call {
    xds_node(&node(namespace).id, metadata_namespace)
}

fn xds_node(id: &str, metadata_namespace: Option<&str>) -> Call {
    let metadata = metadata_namespace.map(|ns| pb::Struct {
        fields: [(
            "NAMESPACE".to_owned(),
            pb::Value {
                kind: Some(pb::value::Kind::StringValue(ns.to_owned())),
            },
        )]
        .into(),
    });
    Call::Xds(Box::new(Node {
        id: id.to_owned(),
        metadata,
        ..Node::default()
    }))
}

fn refused(code: Code, message: &'static str, counted: Option<&'static str>) -> Expect {
    Expect::Refused {
        code,
        message,
        counted,
    }
}

fn issued(identity: &'static str, lifetime: Duration) -> Expect {
    Expect::Issued { identity, lifetime }
}

/// What a row got.
enum Outcome {
    /// No channel: the connection or the TLS handshake failed (the error and its sources).
    Connection(String),
    /// A gRPC status; `detail` adds the error's sources (a transport failure's cause).
    Status {
        code: Code,
        message: String,
        detail: String,
    },
    Issued(Vec<String>),
    /// The xDS stream's first response, with this many resources.
    Streamed(usize),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Connection(e) => write!(f, "no connection: {e}"),
            Outcome::Status {
                code,
                message,
                detail,
            } => write!(f, "{code:?}: {message}{detail}"),
            Outcome::Issued(chain) => {
                let leaf = chain.first().map_or("", String::as_str);
                let sans = uri_sans(leaf).unwrap_or_default();
                let left = not_after(leaf)
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default();
                write!(f, "issued for {sans:?}, {} s left", left.as_secs())
            }
            Outcome::Streamed(n) => write!(f, "xDS answered with {n} resources"),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Refused { code, message, .. } => write!(f, "{code:?}: …{message}…"),
            Expect::Handshake(m) => write!(f, "TLS handshake refused: …{m}…"),
            Expect::Issued { identity, lifetime } => {
                write!(f, "issued for {identity}, {} s", lifetime.as_secs())
            }
        }
    }
}

/// An error and its sources, one after the other.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn status_outcome(status: &tonic::Status) -> Outcome {
    let detail = std::error::Error::source(status)
        .map(|s| format!(" ({})", error_chain(s)))
        .unwrap_or_default();
    Outcome::Status {
        code: status.code(),
        message: status.message().to_owned(),
        detail,
    }
}

fn not_after(pem: &str) -> Result<SystemTime> {
    let der = certs(pem)?.into_iter().next().context("no certificate")?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    Ok(cert.validity().not_after.to_datetime().into())
}

/// Whether `outcome` (and `handshake`, what a bare TLS handshake with the row's certificate
/// read) is what `expect` asks for; `None` if so, else why not.
fn mismatch(
    expect: &Expect,
    outcome: &Outcome,
    handshake: Option<&str>,
    root: &str,
) -> Option<String> {
    match (expect, outcome) {
        (
            Expect::Refused {
                code: want,
                message: fragment,
                ..
            },
            Outcome::Status { code, message, .. },
        ) if code == want && message.contains(fragment) => None,
        (Expect::Handshake(alert), Outcome::Connection(_) | Outcome::Status { .. }) => {
            let in_transport = match outcome {
                Outcome::Status { detail, .. } => detail.contains("transport error"),
                _ => true,
            };
            let alerted = handshake.is_some_and(|h| h.contains(&format!("alert: {alert}")));
            match (in_transport, alerted) {
                (true, true) => None,
                (false, _) => Some("the server answered".to_owned()),
                (true, false) => Some(format!("the handshake alone: {handshake:?}")),
            }
        }
        (Expect::Issued { identity, lifetime }, Outcome::Issued(chain)) => {
            let check = || -> Result<()> {
                let leaf = chain.first().context("an empty chain")?;
                ensure!(
                    uri_sans(leaf)? == [*identity],
                    "names {:?}",
                    uri_sans(leaf)?
                );
                verify_chain(chain, root)?;
                let left = not_after(leaf)?
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                ensure!(
                    left.abs_diff(*lifetime) < Duration::from_secs(60),
                    "valid for {} s more",
                    left.as_secs()
                );
                Ok(())
            };
            check().err().map(|e| format!("{e:#}"))
        }
        _ => Some("another outcome".to_owned()),
    }
}

/// A channel to the TLS port trusting `root`, with a client certificate if given: one
/// attempt (the server is up), its error with the causes (a refused handshake's alert).
async fn connect(port: u16, root: &str, cert: Option<(&str, &str)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name(SERVER_NAME);
    if let Some((chain, key)) = cert {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| error_chain(&e))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    endpoint.connect().await.map_err(|e| error_chain(&e))
}

/// A bare TLS handshake with a client certificate, then a read: the alert the server
/// answers with, as the client reads it (TLS 1.3 clients finish first, then read the
/// server's verdict on their certificate).
async fn handshake_alert(port: u16, root: &str, (chain, key): (&str, &str)) -> Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(root)? {
        roots.add(cert)?;
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(chain)?, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME)?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.read(&mut [0u8; 1]).await
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Err(e)) => Ok(error_chain(&e)),
        Ok(Ok(n)) => Ok(format!("accepted: read {n} bytes")),
        Err(_) => Ok("accepted: no alert within 5 s".to_owned()),
    }
}

/// Opens a Delta ADS stream for `node` and waits (bounded) for its first response.
async fn open_stream(
    channel: Channel,
    authorization: Option<String>,
    node: Node,
) -> Result<usize, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node),
        type_url: CLUSTER_TYPE.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .map_err(|_| tonic::Status::internal("request channel closed"))?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(value) = authorization {
        let value = value
            .parse()
            .map_err(|_| tonic::Status::internal("authorization header"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response within 20 s"))??
        .ok_or_else(|| tonic::Status::internal("stream ended without a response"))?;
    Ok(first.resources.len())
}

async fn run(case: &Case, port: u16, root: &str) -> Outcome {
    let channel = match connect(port, root, case.credential.certificate()).await {
        Ok(channel) => channel,
        Err(e) => return Outcome::Connection(e),
    };
    let authorization = case.credential.authorization();
    match &case.call {
        Call::Sign {
            csr,
            ttl_seconds,
            impersonate,
        } => {
            let metadata = impersonate.map(|id| prost_types::Struct {
                fields: BTreeMap::from([(
                    IMPERSONATED_IDENTITY.to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(id.to_owned())),
                    },
                )]),
            });
            let mut request = tonic::Request::new(IstioCertificateRequest {
                csr: csr.clone(),
                validity_duration: *ttl_seconds,
                metadata,
            });
            if let Some(value) = authorization {
                let value = value
                    .parse()
                    .expect("the table's tokens and headers are ASCII");
                request.metadata_mut().insert("authorization", value);
            }
            match CertificateClient::new(channel)
                .create_certificate(request)
                .await
            {
                Ok(response) => Outcome::Issued(response.into_inner().cert_chain),
                Err(status) => status_outcome(&status),
            }
        }
        Call::Xds(node) => match open_stream(channel, authorization, (**node).clone()).await {
            Ok(n) => Outcome::Streamed(n),
            Err(status) => status_outcome(&status),
        },
    }
}

/// The value of one series (`name` or `name{labels}`) in a scrape; 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn scrape(port: u16) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let response = capstan_e2e::curl("GET", &url, None, Duration::from_secs(10))?;
    ensure!(response.status == 200, "/metrics: {}", response.status);
    Ok(response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() -> Result<()> {
    let Some(ctx) = context("discovery-ca-bad-input")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("ca-bad-input", &[])?;
    for ns in ["istio-system", "alpha", "beta"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    let tokens = Tokens::issue(&kube)?;
    let root = TestCa::root("capstan test root")?;
    let ca = root.intermediate("capstan test intermediate")?;
    let cacerts = ctx.scratch.join("cacerts");
    write_cacerts(&cacerts, &ca, &root, &root.pem)?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let cacerts_arg = cacerts.display().to_string();
    let server = Discovery::start(
        &ctx.scratch,
        "discovery",
        &[
            "--kubeconfig",
            &kubeconfig,
            "--cacerts",
            &cacerts_arg,
            "--workload-cert-ttl",
            "30m",
            "--max-workload-cert-ttl",
            "1h",
        ],
    )?;
    let port = server.secure_port;
    let good = server.tls_channel(&root.pem, None).await?;
    let sign_good = || create_certificate(good.clone(), Some(&tokens.alpha));
    let (chain, key) = sign_good().await.with_context(|| server.tail())?;
    ensure!(uri_sans(&chain[0])? == [ALPHA], "{:?}", uri_sans(&chain[0]));
    let alpha_cert = Credential::Cert {
        chain: chain[..chain.len() - 1].concat(),
        key,
    };

    // Client certificates the CA did not issue, or no longer stands behind.
    let now = OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let with_ca = |leaf: (String, String), intermediate: &TestCa| Credential::Cert {
        chain: format!("{}{}", leaf.0, intermediate.pem),
        key: leaf.1,
    };
    // Same names as this CA's root and intermediate, other keys.
    let impostor = TestCa::root("capstan test root")?.intermediate("capstan test intermediate")?;
    let foreign_cert = with_ca(impostor.leaf_pem(ALPHA, now - hour, now + hour)?, &impostor);
    let expired_cert = with_ca(ca.leaf_pem(ALPHA, now - hour * 2, now - hour)?, &ca);
    let sibling = root.intermediate("another intermediate")?;
    let wrong_intermediate = with_ca(sibling.leaf_pem(ALPHA, now - hour, now + hour)?, &ca);
    let other_domain = with_ca(
        ca.leaf_pem(
            "spiffe://other.domain/ns/alpha/sa/app",
            now - hour,
            now + hour,
        )?,
        &ca,
    );

    let (_, good_csr) = new_csr()?;
    let asks_beta = csr_asking("app", Some(BETA))?.pem()?;
    let asks_other_domain =
        csr_asking("app", Some("spiffe://other.domain/ns/alpha/sa/app"))?.pem()?;
    let asks_alpha = csr_asking("app", Some(ALPHA))?.pem()?;
    let oversized = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        "A".repeat(100 * 1024)
    );
    let alpha = Credential::Token(tokens.alpha.clone());
    let beta = Credential::Token(tokens.beta.clone());
    let none = Credential::None;
    use Code::{InvalidArgument, OutOfRange, PermissionDenied, Unauthenticated};
    let in_beta = "claims namespace \"beta\", but the caller is authenticated only as spiffe://cluster.local/ns/alpha/sa/app";

    #[rustfmt::skip]
    let mut cases = vec![
        // CSRs, from the good caller.
        case("CSR: not PEM", &alpha, sign("hello, CA"), refused(InvalidArgument, "CSR is not PEM: expected a '-----BEGIN CERTIFICATE REQUEST-----' block", Some(CSR_ERRORS))),
        case("CSR: empty", &alpha, sign(""), refused(InvalidArgument, "the csr field is empty", Some(CSR_ERRORS))),
        case("CSR: PEM of garbage", &alpha,
            sign("-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n"),
            refused(InvalidArgument, "CSR is not a valid PKCS#10 request", Some(CSR_ERRORS))),
        case("CSR: a certificate instead", &alpha, sign(&root.pem), refused(InvalidArgument, "CSR is not PEM", Some(CSR_ERRORS))),
        case("CSR: tampered, signature does not verify", &alpha, sign(&tampered_csr()?),
            refused(InvalidArgument, "CSR signature does not verify", Some(CSR_ERRORS))),
        case("CSR: RSA key of 1024 bits", &alpha, sign(&weak_rsa_csr(&ctx.scratch)?),
            refused(InvalidArgument, "RSA key of 1024 bits, at least 2048 required", Some(CSR_ERRORS))),
        case("CSR: 100 KiB, over the 64 KiB limit", &alpha, sign(&oversized),
            refused(OutOfRange, "decoded message length too large", None)),
        case("CSR: SAN of another namespace's account", &alpha, sign(&asks_beta), issued(ALPHA, DEFAULT_TTL)),
        case("CSR: SAN in another trust domain", &alpha, sign(&asks_other_domain), issued(ALPHA, DEFAULT_TTL)),
        case("TTL: 48 h, over the 1 h maximum", &alpha, sign_for(&good_csr, 48 * 3600), issued(ALPHA, MAX_TTL)),
        case("TTL: negative", &alpha, sign_for(&good_csr, -1),
            refused(InvalidArgument, "requested validity_duration -1s is negative", Some(TTL_ERRORS))),
        // Tokens.
        case("token: none", &none, sign(&good_csr),
            refused(Unauthenticated, "client certificate: no client certificate presented; kubernetes token: no bearer token", Some(AUTHN_FAILURES))),
        case("token: not a Bearer header", &Credential::Header("Basic YWxwaGE6YXBw"), sign(&good_csr),
            refused(Unauthenticated, "authorization header is not 'Bearer <token>'", Some(AUTHN_FAILURES))),
        case("token: not a JWT", &Credential::Token("not-a-jwt".into()), sign(&good_csr),
            refused(Unauthenticated, "kubernetes token: token rejected: invalid bearer token", Some(AUTHN_FAILURES))),
        case("token: signed by another key", &Credential::Token(tokens.forged.clone()), sign(&good_csr),
            refused(Unauthenticated, "kubernetes token: token rejected: [invalid bearer token, go-jose/go-jose: error in cryptographic primitive]", Some(AUTHN_FAILURES))),
        case("token: expired", &Credential::Token(tokens.expired.clone()), sign(&good_csr),
            refused(Unauthenticated, "kubernetes token: token rejected: [invalid bearer token, service account token has expired]", Some(AUTHN_FAILURES))),
        case("token: audience other, not istio-ca", &Credential::Token(tokens.other_audience.clone()), sign(&good_csr),
            refused(Unauthenticated, "kubernetes token: token rejected: [invalid bearer token, token audiences [\"other\"] is invalid for the target audiences [\"istio-ca\"]]", Some(AUTHN_FAILURES))),
        case("token: of a deleted ServiceAccount", &Credential::Token(tokens.deleted_account.clone()), sign(&good_csr),
            refused(Unauthenticated, "kubernetes token: token rejected: [invalid bearer token, serviceaccounts \"doomed\" not found]", Some(AUTHN_FAILURES))),
        case("token of beta, CSR asking for alpha", &beta, sign(&asks_alpha), issued(BETA, DEFAULT_TTL)),
        case("token of beta, impersonating alpha", &beta,
            Call::Sign { csr: good_csr.clone(), ttl_seconds: 0, impersonate: Some(ALPHA) },
            refused(Unauthenticated, "request impersonation authentication failure", Some(AUTHN_FAILURES))),
        // xDS on the TLS port.
        case("xDS: no credential", &none, xds("alpha", None),
            refused(Unauthenticated, "no bearer token", None)),
        case("xDS: token expired", &Credential::Token(tokens.expired.clone()), xds("alpha", None),
            refused(Unauthenticated, "kubernetes token: token rejected: [invalid bearer token, service account token has expired]", None)),
        case("xDS: token of alpha, node in beta", &alpha, xds("beta", None), refused(PermissionDenied, in_beta, None)),
        case("xDS: token of alpha, node in alpha with NAMESPACE beta", &alpha, xds("alpha", Some("beta")),
            refused(PermissionDenied, in_beta, None)),
        case("xDS: certificate of alpha, node in beta", &alpha_cert, xds("beta", None), refused(PermissionDenied, in_beta, None)),
        case("xDS: token of beta, node in alpha", &beta, xds("alpha", None),
            refused(PermissionDenied, "claims namespace \"alpha\", but the caller is authenticated only as spiffe://cluster.local/ns/beta/sa/app", None)),
        case("xDS: token of alpha, node id not Istio's", &alpha, xds_node("app-1", None),
            refused(InvalidArgument, "invalid node", None)),
    ];
    // Client certificates, to the CA and to xDS.
    #[rustfmt::skip]
    let certificate_cases = [
        ("cert: from another CA with the same names", &foreign_cert, Expect::Handshake("DecryptError"), Expect::Handshake("DecryptError")),
        ("cert: expired, from this CA", &expired_cert, Expect::Handshake("CertificateExpired"), Expect::Handshake("CertificateExpired")),
        ("cert: chain with a wrong intermediate", &wrong_intermediate, Expect::Handshake("UnknownCA"), Expect::Handshake("UnknownCA")),
        ("cert: trust domain other.domain, from this CA", &other_domain,
            refused(Unauthenticated, "client certificate identity spiffe://other.domain/ns/alpha/sa/app is not in trust domain cluster.local", Some(AUTHN_FAILURES)),
            refused(Unauthenticated, "client certificate identity spiffe://other.domain/ns/alpha/sa/app is not in trust domain cluster.local", None)),
    ];
    for (name, credential, expect_ca, expect_xds) in certificate_cases {
        cases.push(case(name, credential, sign(&good_csr), expect_ca));
        cases.push(case(name, credential, xds("alpha", None), expect_xds));
    }

    let before = scrape(server.monitoring_port)?;
    let mut report = Vec::new();
    let mut failures = 0;
    let mut good_calls = 0;
    for case in &cases {
        let outcome = run(case, port, &root.pem).await;
        let handshake = match (&case.expect, case.credential.certificate()) {
            (Expect::Handshake(_), Some(cert)) => {
                Some(handshake_alert(port, &root.pem, cert).await?)
            }
            _ => None,
        };
        let verdict = mismatch(&case.expect, &outcome, handshake.as_deref(), &root.pem);
        let target = match case.call {
            Call::Sign { .. } => "CA",
            Call::Xds(_) => "xDS",
        };
        failures += usize::from(verdict.is_some());
        let handshake = handshake
            .map(|h| format!("; handshake alone: {h}"))
            .unwrap_or_default();
        report.push(format!(
            "{} | {target} | {} | {outcome}{handshake}{}",
            case.name,
            case.expect,
            verdict
                .map(|v| format!(" <-- WRONG: {v}"))
                .unwrap_or_default()
        ));
        // The server keeps serving the good caller.
        let (chain, _) = sign_good()
            .await
            .with_context(|| format!("after {}: {}", case.name, server.tail()))?;
        ensure!(uri_sans(&chain[0])? == [ALPHA]);
        good_calls += 1;
    }
    let table = report.join("\n");
    eprintln!("case | to | expected | got\n{table}");
    ensure!(
        failures == 0,
        "{failures} rows differ:\n{table}\n\nlog:\n{}",
        server.tail()
    );

    // Nothing changed: the counters moved by what the rows account for, and no more.
    let after = scrape(server.monitoring_port)?;
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    *expected.entry(ISSUED).or_default() += good_calls as f64;
    *expected.entry(REQUESTS).or_default() += good_calls as f64;
    for case in cases.iter().filter(|c| matches!(c.call, Call::Sign { .. })) {
        let counted = match &case.expect {
            Expect::Issued { .. } => Some(ISSUED),
            Expect::Refused { counted, .. } => *counted,
            Expect::Handshake(_) => None,
        };
        if let Some(series) = counted {
            *expected.entry(series).or_default() += 1.0;
            *expected.entry(REQUESTS).or_default() += 1.0;
        }
    }
    for series in [REQUESTS, ISSUED, AUTHN_FAILURES, CSR_ERRORS, TTL_ERRORS] {
        let moved = sample(&after, series) - sample(&before, series);
        let want = expected.get(series).copied().unwrap_or(0.0);
        ensure!(
            moved == want,
            "{series} moved by {moved}, expected {want}:\n{after}"
        );
    }
    // istiod's expiry gauges: the root's, and the signing certificate's (a plugged-in CA).
    for (series, pem) in [
        ("citadel_server_root_cert_expiry_timestamp", &root.pem),
        ("citadel_server_cert_chain_expiry_timestamp", &ca.pem),
    ] {
        let expiry = not_after(pem)?.duration_since(std::time::UNIX_EPOCH)?;
        ensure!(
            sample(&after, series) == expiry.as_secs() as f64,
            "{series}, expected {}:\n{after}",
            expiry.as_secs()
        );
    }

    // The good caller gets a good certificate, under the same trust bundle, and good xDS
    // streams open, by token and by certificate.
    let (chain, key) = sign_good().await?;
    verify_chain(&chain, &root.pem)?;
    ensure!(chain.last() == Some(&root.pem), "the trust bundle changed");
    let by_token = open_stream(good.clone(), alpha.authorization(), node("alpha")).await;
    ensure!(by_token.is_ok(), "xDS by token: {by_token:?}");
    let cert = server
        .tls_channel(&root.pem, Some((&chain[..chain.len() - 1].concat(), &key)))
        .await?;
    let by_cert = open_stream(cert, None, node("alpha")).await;
    ensure!(by_cert.is_ok(), "xDS by certificate: {by_cert:?}");
    capstan_e2e::wait_http_ok(server.monitoring_port, "/ready", Duration::from_secs(5))?;
    Ok(())
}
