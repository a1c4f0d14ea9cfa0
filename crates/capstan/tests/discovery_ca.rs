//! `capstan discovery`'s CA and TLS xDS port (istiod's 15012) on loopback, without Kubernetes:
//! a self-signed root in `--ca-dir`, callers authenticated by the development token file
//! (`--ca-token-file`) or by a certificate the CA issued.
//!
//! - A valid token gets a chain whose leaf names its SPIFFE id and verifies against
//!   `<ca-dir>/root-cert.pem`; a restart reuses the root; bad or missing tokens are
//!   `UNAUTHENTICATED`, a malformed CSR `INVALID_ARGUMENT`, and the server keeps serving.
//! - Delta ADS on the TLS port: a token of namespace `default` gets clusters for a node in
//!   `default`, is refused (`PERMISSION_DENIED`) for a node in `other`; no credentials is
//!   `UNAUTHENTICATED`; a CA-issued client certificate authenticates too. Plaintext xDS is
//!   unchanged.
//! - One connection with a client certificate reaches both services with it (the CA signs
//!   for it without a token, and ADS authenticates it), a connection without one does not;
//!   an unknown service or method is `UNIMPLEMENTED`.
//! - Without a CA, the TLS port is not served.

mod ca_support;

use anyhow::{ensure, Context, Result};
use ca_support::*;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

const TOKENS: &str = "\
# development tokens: <token> <namespace> <service-account>
token-default default reviews
token-other other ratings
";

const REGISTRY: &str = "services:
- hostname: reviews.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 9080}]
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9080}, labels: {app: reviews}}
";
const REVIEWS_CLUSTER: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// A mesh directory (empty config, one service) and a token file; the arguments to serve them.
fn mesh(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), REGISTRY)?;
    std::fs::write(dir.join("tokens"), TOKENS)?;
    let path = |p: &str| dir.join(p).display().to_string();
    Ok(vec![
        "--config-dir".into(),
        path("config"),
        "--registry-file".into(),
        path("registry.yaml"),
    ])
}

fn with_ca(mut args: Vec<String>, dir: &Path) -> Vec<String> {
    args.extend([
        "--ca-dir".into(),
        dir.join("ca").display().to_string(),
        "--ca-token-file".into(),
        dir.join("tokens").display().to_string(),
    ]);
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_issues_certificates_by_token_and_keeps_its_root() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let args = with_ca(mesh(tmp.path())?, tmp.path());
    let server = Discovery::start(tmp.path(), "first", &refs(&args))?;
    let root = std::fs::read_to_string(tmp.path().join("ca/root-cert.pem"))
        .context("the generated root in --ca-dir")?;
    let channel = server.tls_channel(&root, None).await?;

    let (chain, _) = create_certificate(channel.clone(), Some("token-default"))
        .await
        .with_context(|| server.tail())?;
    ensure!(
        uri_sans(&chain[0])? == ["spiffe://cluster.local/ns/default/sa/reviews"],
        "leaf SANs {:?}",
        uri_sans(&chain[0])
    );
    ensure!(chain.last() == Some(&root), "the chain ends with the root");
    verify_chain(&chain, &root)?;

    // Refusals, each followed by a successful call: the server keeps serving.
    for (name, token, code, message) in [
        (
            "bad token",
            Some("token-wrong"),
            Code::Unauthenticated,
            "not in the token file",
        ),
        ("no token", None, Code::Unauthenticated, "no bearer token"),
    ] {
        let status = create_certificate(channel.clone(), token)
            .await
            .expect_err(name);
        ensure!(status.code() == code, "{name}: {status:?}");
        ensure!(status.message().contains(message), "{name}: {status:?}");
        create_certificate(channel.clone(), Some("token-other"))
            .await
            .with_context(|| format!("after {name}"))?;
    }
    let mut request = capstan_ca_proto::certificate_request(
        "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
        0,
        Some("token-default"),
    )?;
    request.get_mut().validity_duration = 3600;
    let status = capstan_ca_proto::CertificateClient::new(channel.clone())
        .create_certificate(request)
        .await
        .expect_err("malformed CSR");
    ensure!(status.code() == Code::InvalidArgument, "{status:?}");
    ensure!(
        status.message().contains("CSR"),
        "the message says what is wrong: {status:?}"
    );
    create_certificate(channel.clone(), Some("token-default")).await?;

    // A restart loads the same root from --ca-dir.
    drop(channel);
    drop(server);
    let server = Discovery::start(tmp.path(), "second", &refs(&args))?;
    ensure!(std::fs::read_to_string(tmp.path().join("ca/root-cert.pem"))? == root);
    let channel = server.tls_channel(&root, None).await?;
    let (chain, _) = create_certificate(channel, Some("token-default")).await?;
    verify_chain(&chain, &root)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_xds_authenticates_and_authorizes_streams() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let args = with_ca(mesh(tmp.path())?, tmp.path());
    let server = Discovery::start(tmp.path(), "discovery", &refs(&args))?;
    let root = std::fs::read_to_string(tmp.path().join("ca/root-cert.pem"))?;
    let channel = server.tls_channel(&root, None).await?;
    let in_default = node_id("reviews-v1-1", "default");
    let in_other = node_id("ratings-v1-1", "other");

    let clusters = delta_clusters(channel.clone(), Some("token-default"), &in_default)
        .await
        .with_context(|| server.tail())?;
    ensure!(
        clusters.iter().any(|c| c == REVIEWS_CLUSTER),
        "{clusters:?}"
    );

    let denied = delta_clusters(channel.clone(), Some("token-default"), &in_other)
        .await
        .expect_err("a node in another namespace");
    ensure!(denied.code() == Code::PermissionDenied, "{denied:?}");
    ensure!(
        denied.message().contains(&in_other)
            && denied
                .message()
                .contains("spiffe://cluster.local/ns/default/sa/reviews"),
        "the refusal names the node and the identity: {denied:?}"
    );

    let anonymous = delta_clusters(channel.clone(), None, &in_default)
        .await
        .expect_err("no credentials");
    ensure!(anonymous.code() == Code::Unauthenticated, "{anonymous:?}");
    let wrong = delta_clusters(channel.clone(), Some("token-wrong"), &in_default)
        .await
        .expect_err("a wrong token");
    ensure!(wrong.code() == Code::Unauthenticated, "{wrong:?}");

    // A certificate the CA issued is a credential by itself, on a new connection.
    let (chain, key) = create_certificate(channel, Some("token-other")).await?;
    let chain_pem = chain[..chain.len() - 1].concat();
    let mtls = server.tls_channel(&root, Some((&chain_pem, &key))).await?;
    let clusters = delta_clusters(mtls.clone(), None, &in_other)
        .await
        .context("authenticated by the client certificate")?;
    ensure!(
        clusters.iter().any(|c| c == REVIEWS_CLUSTER),
        "{clusters:?}"
    );
    let denied = delta_clusters(mtls, None, &in_default)
        .await
        .expect_err("the certificate's namespace is other");
    ensure!(denied.code() == Code::PermissionDenied, "{denied:?}");

    // Plaintext xDS (15010) is unchanged: no credentials asked.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", server.xds_port))?
            .connect()
            .await?;
    let clusters = delta_clusters(plain, None, &in_other).await?;
    ensure!(
        clusters.iter().any(|c| c == REVIEWS_CLUSTER),
        "{clusters:?}"
    );
    Ok(())
}

/// The status of a call of `path` with an empty body on `channel`, with `token` if given
/// (read off the response headers: a refusal before any message is trailers-only).
async fn call_status(channel: Channel, path: &str, token: Option<&str>) -> Result<tonic::Status> {
    use tonic::codegen::Service as _;
    let mut request = http::Request::post(format!("https://{SERVER_NAME}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(tonic::body::Body::empty())?;
    let mut channel = channel;
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    let response = tokio::time::timeout(Duration::from_secs(20), channel.call(request))
        .await
        .context("no response within 20 s")??;
    tonic::Status::from_header_map(response.headers())
        .with_context(|| format!("{path}: no grpc-status in the response headers: {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_brings_its_client_certificate_to_both_services() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let args = with_ca(mesh(tmp.path())?, tmp.path());
    let server = Discovery::start(tmp.path(), "discovery", &refs(&args))?;
    let root = std::fs::read_to_string(tmp.path().join("ca/root-cert.pem"))?;
    let anonymous = server.tls_channel(&root, None).await?;
    let (chain, key) = create_certificate(anonymous.clone(), Some("token-other"))
        .await
        .with_context(|| server.tail())?;
    let chain_pem = chain[..chain.len() - 1].concat();
    // One HTTP/2 connection (a tonic channel dials once) for every call below.
    let mtls = server.tls_channel(&root, Some((&chain_pem, &key))).await?;

    // The CA: the certificate alone authenticates a renewal, for its own identity.
    let (renewed, _) = create_certificate(mtls.clone(), None)
        .await
        .context("CreateCertificate authenticated by the client certificate")?;
    ensure!(
        uri_sans(&renewed[0])? == ["spiffe://cluster.local/ns/other/sa/ratings"],
        "leaf SANs {:?}",
        uri_sans(&renewed[0])
    );
    verify_chain(&renewed, &root)?;
    // ADS, on the same connection.
    let clusters = delta_clusters(mtls.clone(), None, &node_id("ratings-v1-1", "other"))
        .await
        .context("ADS authenticated by the client certificate")?;
    ensure!(
        clusters.iter().any(|c| c == REVIEWS_CLUSTER),
        "{clusters:?}"
    );
    // Another connection's certificate is not this one's.
    let status = create_certificate(anonymous.clone(), None)
        .await
        .expect_err("no certificate, no token");
    ensure!(status.code() == Code::Unauthenticated, "{status:?}");
    let status = delta_clusters(anonymous.clone(), None, &node_id("ratings-v1-1", "other"))
        .await
        .expect_err("no certificate, no token");
    ensure!(status.code() == Code::Unauthenticated, "{status:?}");

    // Unknown services and methods, as tonic's router answers them; the connection serves on.
    for path in [
        "/no.such.Service/Method",
        "/istio.v1.auth.IstioCertificateService/NoSuchMethod",
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod",
        "/",
    ] {
        let status = call_status(mtls.clone(), path, None).await?;
        ensure!(status.code() == Code::Unimplemented, "{path}: {status:?}");
    }
    // An unknown ADS method is answered after authentication, like the known ones.
    let status = call_status(
        anonymous.clone(),
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod",
        None,
    )
    .await?;
    ensure!(status.code() == Code::Unauthenticated, "{status:?}");
    let status = call_status(
        anonymous.clone(),
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod",
        Some("token-default"),
    )
    .await?;
    ensure!(status.code() == Code::Unimplemented, "{status:?}");
    create_certificate(mtls, None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_the_tls_port_is_not_served() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Discovery::start(tmp.path(), "discovery", &refs(&mesh(tmp.path())?))?;
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", server.xds_port))?
            .connect()
            .await?;
    delta_clusters(plain, None, &node_id("a", "default")).await?;
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", server.secure_port)).is_err(),
        "the TLS port is open without a CA"
    );
    Ok(())
}

/// The serving certificate of the TLS port, as a handshake verified against `root_pem` sees it.
async fn serving_certificate(port: u16, root_pem: &str) -> Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(root_pem)? {
        roots.add(cert)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME)?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    ensure!(session.alpn_protocol() == Some(b"h2".as_slice()), "ALPN h2");
    Ok(session
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no serving certificate")?
        .to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_renewed_before_it_expires() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut args = with_ca(mesh(tmp.path())?, tmp.path());
    args.extend(["--workload-cert-ttl".into(), "4s".into()]);
    let server = Discovery::start(tmp.path(), "discovery", &refs(&args))?;
    let root = std::fs::read_to_string(tmp.path().join("ca/root-cert.pem"))?;
    let channel = server.tls_channel(&root, None).await?;
    let first = serving_certificate(server.secure_port, &root).await?;
    // Renewed at half-life (2 s); still valid, and different, before the first one expires.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let second = serving_certificate(server.secure_port, &root).await?;
    ensure!(first != second, "the serving certificate was not renewed");
    // A connection opened before the renewal keeps working.
    create_certificate(channel, Some("token-default")).await?;
    Ok(())
}
