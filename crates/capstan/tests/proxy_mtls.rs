//! Istio mTLS from the client side: a DestinationRule `ISTIO_MUTUAL` makes `capstan proxy`
//! connect with its workload certificate (SDS `default`, here from Istio's `/etc/certs`
//! files) and verify the server against `ROOTCA`; the server sees the proxy's SPIFFE id. The
//! certificate is rotated while traffic flows, with no failed request.

mod proxy;

use anyhow::{ensure, Context, Result};
use proxy::{discovery, free_port};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GATEWAY_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/ingressgateway";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

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
        .push(rcgen::DnType::OrganizationName, "cluster.local");
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    })
}

/// A workload certificate for `spiffe` as Istio's CA issues it: (chain PEM, key PEM).
fn workload(ca: &Ca, spiffe: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into()?)];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes Istio's `/etc/certs` layout, each file replaced atomically.
fn write_certs(dir: &Path, ca: &Ca, spiffe: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (chain, key) = workload(ca, spiffe)?;
    for (name, text) in [
        ("root-cert.pem", ca.pem.as_str()),
        ("key.pem", key.as_str()),
        ("cert-chain.pem", chain.as_str()),
    ] {
        proxy::write_atomic(&dir.join(name), text)?;
    }
    Ok(())
}

/// What the mTLS server saw: each request's client SPIFFE id and certificate hash.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// An HTTP/1.1 server requiring client certificates from `ca` (the sidecar of `reviews`),
/// answering with the client's SPIFFE id and closing each connection (so every request is a
/// new handshake, which shows rotations).
async fn mtls_server(ca: &Ca, spiffe: &str) -> Result<(u16, Seen)> {
    let (chain, key) = workload(ca, spiffe)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(s)).await
                else {
                    return;
                };
                let peer = capstan_proxy::identity::peer_cert(tls.get_ref().1.peer_certificates());
                let (id, hash) = match &peer {
                    Some(p) => (p.spiffe().map(str::to_string), p.hash.clone()),
                    None => (None, String::new()),
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = id.clone().unwrap_or_else(|| "anonymous".into());
                log.lock().unwrap().push((id, hash));
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok((port, seen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_mutual_presents_the_workload_certificate_and_survives_rotation() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("capstan-mtls").tempdir()?;
    let dir = tmp.path();
    let ca = ca()?;
    let (reviews_port, seen) = mtls_server(&ca, REVIEWS_ID).await?;
    let certs = dir.join("certs");
    write_certs(&certs, &ca, GATEWAY_ID)?;
    let http = free_port();
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {reviews_port}}}}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("config/mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {http}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n"
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
    let certs_arg = certs.display().to_string();
    let gw = proxy::proxy_with(dir, "gateway", &boot, &["--cert-dir", &certs_arg])?;
    gw.ready(Duration::from_secs(30)).await?;
    let logs = || {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            gw.proc.tail(),
            d.proc.tail()
        )
    };
    let url = format!("http://127.0.0.1:{http}/");
    let client = proxy::client(false);

    // The server saw the gateway's SPIFFE id.
    let r = proxy::send(&client, &url, &[("host", "reviews.example.com")])
        .await
        .with_context(logs)?;
    ensure!(r.status == 200, "status {}; {}", r.status, logs());
    ensure!(r.body == GATEWAY_ID, "body {:?}; {}", r.body, logs());

    // Rotate the certificate files while requests flow: none fails, and new handshakes
    // present the new certificate.
    let first_hash = seen.lock().unwrap()[0].1.clone();
    let mut failed = Vec::new();
    let mut rotated = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    while Instant::now() < deadline {
        if sent == 20 {
            write_certs(&certs, &ca, GATEWAY_ID)?;
        }
        let r = proxy::send(&client, &url, &[("host", "reviews.example.com")]).await;
        sent += 1;
        match r {
            Ok(r) if r.status == 200 && r.body == GATEWAY_ID => {}
            Ok(r) => failed.push(format!("{} {}", r.status, r.body)),
            Err(e) => failed.push(e.to_string()),
        }
        if sent > 20
            && seen
                .lock()
                .unwrap()
                .last()
                .is_some_and(|s| s.1 != first_hash)
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        failed.is_empty(),
        "{} failed: {:?}; {}",
        failed.len(),
        failed.first(),
        logs()
    );
    ensure!(
        rotated,
        "no handshake showed the rotated certificate; {}",
        logs()
    );

    // A broken key file is refused by the proxy, which keeps its last good certificate.
    proxy::write_atomic(&certs.join("key.pem"), "not a key")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        let r = proxy::send(&client, &url, &[("host", "reviews.example.com")])
            .await
            .with_context(logs)?;
        ensure!(
            r.status == 200 && r.body == GATEWAY_ID,
            "after a bad key: {} {}; {}",
            r.status,
            r.body,
            logs()
        );
    }
    ensure!(
        gw.proc.tail().contains("not loaded"),
        "the bad key was not reported; {}",
        logs()
    );
    Ok(())
}
