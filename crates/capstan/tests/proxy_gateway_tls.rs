//! `capstan proxy` as a gateway terminating TLS with file-mounted certificates chosen by SNI,
//! and passing TLS through by SNI to a TLS backend it cannot read; and with `credentialName`
//! certificates from Kubernetes Secrets served over SDS, rotated in place.

mod proxy;

use anyhow::{ensure, Context, Result};
use proxy::{backend, discovery, free_port};
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn ca() -> Result<Ca> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "capstan test CA");
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    })
}

/// A leaf for `host`, written as `<dir>/<host>.crt` / `.key`.
fn leaf(ca: &Ca, dir: &std::path::Path, host: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    let (crt, k) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    std::fs::write(&crt, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    Ok((crt.display().to_string(), k.display().to_string()))
}

fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects with SNI `host`, verifying the certificate against the CA for that name, sends one
/// HTTP/1.1 request and returns the response text.
async fn https_get(port: u16, host: &str, config: Arc<rustls::ClientConfig>) -> Result<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from(host.to_string())?, tcp)
        .await
        .with_context(|| format!("TLS handshake with SNI {host}"))?;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut out)).await??;
    Ok(out)
}

/// A TLS server (not HTTP) that greets with a fixed line: only the client, not the gateway,
/// can read it.
async fn tls_backend(cert: &str, key: &str) -> Result<(u16, tokio::task::JoinHandle<()>)> {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 19\r\nconnection: close\r\n\r\nsecret from backend").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Ok((port, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminates_tls_by_sni_and_passes_tls_through() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("capstan-gwtls").tempdir()?;
    let dir = tmp.path();
    let ca = ca()?;
    let (a_crt, a_key) = leaf(&ca, dir, "a.example.com")?;
    let (b_crt, b_key) = leaf(&ca, dir, "b.example.com")?;
    let (s_crt, s_key) = leaf(&ca, dir, "secure.example.com")?;
    let v1 = backend("v1").await?;
    let (secure_port, _secure) = tls_backend(&s_crt, &s_key).await?;
    let (https, passthrough) = (free_port(), free_port());
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}\n- hostname: secure.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: tls, port: 8443, protocol: TLS}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tls: {secure_port}}}}}\n",
            v1.port
        ),
    )?;
    std::fs::write(
        dir.join("config/gateway.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {https}, name: https-a, protocol: HTTPS}}\n    hosts: [a.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {a_crt}, privateKey: {a_key}}}\n  - port: {{number: {https}, name: https-b, protocol: HTTPS}}\n    hosts: [b.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {b_crt}, privateKey: {b_key}}}\n  - port: {{number: {passthrough}, name: tls, protocol: TLS}}\n    hosts: [secure.example.com]\n    tls: {{mode: PASSTHROUGH}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: [a.example.com, b.example.com]\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: secure, namespace: default}}\nspec:\n  hosts: [secure.example.com]\n  gateways: [web]\n  tls:\n  - match:\n    - sniHosts: [secure.example.com]\n    route:\n    - destination: {{host: secure.default.svc.cluster.local, port: {{number: 8443}}}}\n"
        ),
    )?;
    let d = discovery(dir, None)?;
    let boot = proxy::bootstrap_json(
        "router~127.0.0.1~ingress-0.istio-system~istio-system.svc.cluster.local",
        &[("istio", "ingressgateway")],
        d.xds_port,
        free_port(),
        true,
    );
    let gw = proxy::proxy(dir, "gateway", &boot)?;
    gw.ready(Duration::from_secs(30)).await?;
    let logs = || {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            gw.proc.tail(),
            d.proc.tail()
        )
    };
    let config = client_config(&ca.pem)?;

    // The certificate is verified for the SNI name, so a handshake that succeeds for each host
    // proves the gateway chose that host's certificate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = loop {
        match https_get(https, "a.example.com", config.clone()).await {
            Ok(a) => break a,
            Err(e) if Instant::now() > deadline => return Err(e.context(logs())),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    ensure!(
        a.starts_with("HTTP/1.1 200") && a.contains("x-backend: v1"),
        "a.example.com: {a}\n{}",
        logs()
    );
    let b = https_get(https, "b.example.com", config.clone()).await?;
    ensure!(b.starts_with("HTTP/1.1 200"), "b.example.com: {b}");
    // An SNI no server names: no filter chain, the handshake fails.
    ensure!(
        https_get(https, "c.example.com", config.clone())
            .await
            .is_err(),
        "c.example.com was served"
    );

    // Passthrough: the client's TLS session reaches the backend, certificate and all.
    let s = https_get(passthrough, "secure.example.com", config)
        .await
        .map_err(|e| e.context(logs()))?;
    ensure!(s.ends_with("secret from backend"), "passthrough: {s}");
    Ok(())
}

/// A client presenting a certificate for `name` from `ca`.
fn client_with_cert(server_ca: &str, ca: &Ca, name: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c?)?;
    }
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &ca.issuer)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
    )?;
    Ok(Arc::new(config))
}

/// Retries `https_get` until it answers 200 from `backend`, within `within`.
async fn wait_served(
    port: u16,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    within: Duration,
    logs: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = https_get(port, host, config.clone()).await;
        match &r {
            Ok(text) if text.starts_with("HTTP/1.1 200") && text.contains("x-backend: v1") => {
                return Ok(())
            }
            _ if Instant::now() > deadline => {
                anyhow::bail!("{host} not served as expected: {r:?}\n{}", logs())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Gateway `credentialName`: `capstan discovery` reads the Kubernetes Secrets of a real
/// kube-apiserver and serves them to the gateway over SDS on its authenticated TLS xDS port
/// (a `kubernetes.io/tls` Secret for SIMPLE, a generic one with `ca.crt` for MUTUAL). A
/// rotated Secret reaches new handshakes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_credential_name_secrets_from_kubernetes_and_their_rotation() -> Result<()> {
    let Some(_ctx) = capstan_e2e::context("gateway-sds")? else {
        return Ok(());
    };
    let kube = capstan_e2e::private_kube::PrivateKube::start("gateway-sds", &[])?;
    kube.kubectl(&["create", "namespace", "istio-system"])?;
    kube.install_istio_crds(&["gateways.networking.istio.io"])?;
    let tmp = tempfile::Builder::new().prefix("capstan-gwsds").tempdir()?;
    let dir = tmp.path();
    let path = |p: &str| dir.join(p).display().to_string();
    let (ca1, ca2, client_ca) = (ca()?, ca()?, ca()?);
    let (site_crt, site_key) = leaf(&ca1, dir, "site.example.com")?;
    let (mutual_crt, mutual_key) = leaf(&ca1, dir, "mutual.example.com")?;
    std::fs::write(dir.join("client-ca.pem"), &client_ca.pem)?;
    kube.kubectl(&[
        "-n",
        "default",
        "create",
        "secret",
        "tls",
        "site-cert",
        "--cert",
        &site_crt,
        "--key",
        &site_key,
    ])?;
    kube.kubectl(&[
        "-n",
        "default",
        "create",
        "secret",
        "generic",
        "mutual-cert",
        &format!("--from-file=tls.crt={mutual_crt}"),
        &format!("--from-file=tls.key={mutual_key}"),
        &format!("--from-file=ca.crt={}", path("client-ca.pem")),
    ])?;
    let v1 = backend("v1").await?;
    let (https, secure) = (free_port(), free_port());
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}\n",
            v1.port
        ),
    )?;
    std::fs::write(
        dir.join("config/gateway.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {https}, name: https-site, protocol: HTTPS}}\n    hosts: [site.example.com]\n    tls: {{mode: SIMPLE, credentialName: site-cert}}\n  - port: {{number: {https}, name: https-mutual, protocol: HTTPS}}\n    hosts: [mutual.example.com]\n    tls: {{mode: MUTUAL, credentialName: mutual-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: [site.example.com, mutual.example.com]\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n"
        ),
    )?;
    std::fs::write(dir.join("tokens"), "token-gw default ingress\n")?;
    std::fs::write(dir.join("token-gw"), "token-gw\n")?;
    let secure_addr = format!("127.0.0.1:{secure}");
    let kubeconfig = kube.kubeconfig().display().to_string();
    let d = proxy::discovery_with(
        dir,
        None,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--ca-dir",
            &path("ca"),
            "--ca-token-file",
            &path("tokens"),
            "--secure-xds-addr",
            &secure_addr,
        ],
    )?;
    let boot = proxy::bootstrap_json(
        "router~127.0.0.1~ingress-0.default~default.svc.cluster.local",
        &[("istio", "ingressgateway")],
        secure,
        free_port(),
        true,
    );
    let flags = [
        "--ca-address",
        &secure_addr,
        "--ca-root-cert",
        &path("ca/root-cert.pem"),
        "--ca-token-file",
        &path("token-gw"),
        "--xds-tls",
    ];
    let gw = proxy::proxy_with(dir, "gateway", &boot, &flags)?;
    let logs = || {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            gw.proc.tail(),
            d.proc.tail()
        )
    };
    gw.ready(Duration::from_secs(30)).await.with_context(logs)?;

    // SIMPLE: the Secret's certificate, verified for the SNI name against its CA.
    let wait = Duration::from_secs(20);
    wait_served(
        https,
        "site.example.com",
        client_config(&ca1.pem)?,
        wait,
        logs,
    )
    .await?;

    // MUTUAL: the CA comes from the Secret's ca.crt (`kubernetes://mutual-cert-cacert`).
    ensure!(
        https_get(https, "mutual.example.com", client_config(&ca1.pem)?)
            .await
            .is_err(),
        "a client without a certificate was served by a MUTUAL server"
    );
    let stranger = client_with_cert(&ca1.pem, &ca2, "client")?;
    ensure!(
        https_get(https, "mutual.example.com", stranger)
            .await
            .is_err(),
        "a client certificate from another CA was accepted"
    );
    let member = client_with_cert(&ca1.pem, &client_ca, "client")?;
    wait_served(https, "mutual.example.com", member, wait, logs).await?;

    // Rotation: the Secret now holds a certificate from another CA; new handshakes get it.
    let v2 = dir.join("v2");
    std::fs::create_dir_all(&v2)?;
    let (new_crt, new_key) = leaf(&ca2, &v2, "site.example.com")?;
    let yaml = kube.kubectl(&[
        "-n",
        "default",
        "create",
        "secret",
        "tls",
        "site-cert",
        "--cert",
        &new_crt,
        "--key",
        &new_key,
        "--dry-run=client",
        "-o",
        "yaml",
    ])?;
    kube.apply(&yaml)?;
    wait_served(
        https,
        "site.example.com",
        client_config(&ca2.pem)?,
        wait,
        logs,
    )
    .await?;
    ensure!(
        https_get(https, "site.example.com", client_config(&ca1.pem)?)
            .await
            .is_err(),
        "the rotated-out certificate is still served"
    );
    ensure!(
        !std::fs::read_to_string(&d.proc.log)?.contains("PRIVATE KEY"),
        "a private key was logged"
    );
    Ok(())
}
