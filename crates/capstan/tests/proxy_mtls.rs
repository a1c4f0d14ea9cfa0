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
    let acceptor = proxy::mtls_acceptor(roots, chain, key)?;
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

    // The server saw the gateway's SPIFFE id. (`/ready` means the listeners are applied; the
    // listening socket and the first certificate load may trail it by a moment.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        match proxy::send(&client, &url, &[("host", "reviews.example.com")]).await {
            Ok(r) if r.status == 200 => break r,
            other => ensure!(
                Instant::now() < deadline,
                "no success: {other:?}; {}",
                logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    let (handshakes, distinct) = {
        let seen = seen.lock().unwrap();
        let distinct: std::collections::BTreeSet<_> = seen.iter().map(|s| s.1.clone()).collect();
        (seen.len(), distinct.len())
    };
    ensure!(
        rotated,
        "no handshake showed the rotated certificate ({handshakes} handshakes for {sent} requests, {distinct} certificates); {}",
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

/// Two proxies talk Istio mTLS: gateway A (plain HTTP in) reaches service `reviews` through
/// gateway B, whose server is `tls.mode: ISTIO_MUTUAL`; a plaintext client and a client with
/// a foreign certificate cannot reach B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_talk_istio_mutual_and_strangers_are_refused() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("capstan-mtls2").tempdir()?;
    let dir = tmp.path();
    let ca = ca()?;
    let v1 = proxy::backend("v1").await?;
    let (a_port, b_port) = (free_port(), free_port());
    write_two_gateway_mesh(dir, a_port, b_port, v1.port)?;
    let d = discovery(dir, None)?;
    let (a_certs, b_certs) = (dir.join("a-certs"), dir.join("b-certs"));
    write_certs(&a_certs, &ca, GATEWAY_ID)?;
    write_certs(&b_certs, &ca, REVIEWS_ID)?;
    let boot = |id: &str, label: &str| {
        proxy::bootstrap_json(
            &format!("router~127.0.0.1~{id}.istio-system~istio-system.svc.cluster.local"),
            &[("istio", label)],
            d.xds_port,
            free_port(),
            true,
        )
    };
    let a_arg = a_certs.display().to_string();
    let b_arg = b_certs.display().to_string();
    let a = proxy::proxy_with(
        dir,
        "a",
        &boot("a-0", "ingressgateway"),
        &["--cert-dir", &a_arg],
    )?;
    let b = proxy::proxy_with(
        dir,
        "b",
        &boot("b-0", "eastwestgateway"),
        &["--cert-dir", &b_arg],
    )?;
    a.ready(Duration::from_secs(30)).await?;
    b.ready(Duration::from_secs(30)).await?;
    let logs = || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n--- discovery:\n{}",
            a.proc.tail(),
            b.proc.tail(),
            d.proc.tail()
        )
    };
    let client = proxy::client(false);
    let url = format!("http://127.0.0.1:{a_port}/");
    // The listening sockets and first certificates may trail `/ready` by a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = proxy::send(&client, &url, &[("host", "reviews.example.com")]).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        ensure!(Instant::now() < deadline, "no success: {r:?}; {}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ok = 0;
    for _ in 0..20 {
        let r = proxy::send(&client, &url, &[("host", "reviews.example.com")])
            .await
            .with_context(logs)?;
        ensure!(
            r.status == 200 && r.backend() == Some("v1"),
            "{} {}; {}",
            r.status,
            r.body,
            logs()
        );
        ok += 1;
    }
    ensure!(ok == 20);
    // Plaintext to B's mTLS port: no response.
    let plain = proxy::send(
        &proxy::client(false),
        &format!("http://127.0.0.1:{b_port}/"),
        &[("host", "x")],
    )
    .await;
    ensure!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status != 200),
        "plaintext reached B: {plain:?}"
    );
    // A client certificate from another CA is refused by the server: unit-tested in
    // capstan-proxy (identity::tests::mutual_tls_sees_both_spiffe_ids_and_checks_sans).
    Ok(())
}

/// The whole chain with the mesh CA: `capstan discovery` issues certificates and serves xDS on
/// its TLS port (static development tokens); each proxy generates its key, obtains its
/// certificate over 15012, speaks xDS over 15012, and talks ISTIO_MUTUAL to the other. The
/// certificates live 4 s and renew at half-life while requests flow: none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_mesh_ca_rotate_under_traffic() -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("capstan-mtls-ca")
        .tempdir()?;
    let dir = tmp.path();
    let v1 = proxy::backend("v1").await?;
    let (a_port, b_port, secure) = (free_port(), free_port(), free_port());
    write_two_gateway_mesh(dir, a_port, b_port, v1.port)?;
    std::fs::write(
        dir.join("tokens"),
        "token-a default gateway-a\ntoken-b default gateway-b\n",
    )?;
    std::fs::write(dir.join("token-a"), "token-a\n")?;
    std::fs::write(dir.join("token-b"), "token-b\n")?;
    let path = |p: &str| dir.join(p).display().to_string();
    let secure_addr = format!("127.0.0.1:{secure}");
    let d = proxy::discovery_with(
        dir,
        None,
        &[
            "--ca-dir",
            &path("ca"),
            "--ca-token-file",
            &path("tokens"),
            "--secure-xds-addr",
            &secure_addr,
            "--workload-cert-ttl",
            "4s",
        ],
    )?;
    let boot = |id: &str, label: &str| {
        proxy::bootstrap_json(
            &format!("router~127.0.0.1~{id}.default~default.svc.cluster.local"),
            &[("istio", label)],
            secure,
            free_port(),
            true,
        )
    };
    let root = path("ca/root-cert.pem");
    let flags = |token: &'static str| {
        vec![
            "--ca-address".to_string(),
            secure_addr.clone(),
            "--ca-root-cert".into(),
            root.clone(),
            "--ca-token-file".into(),
            path(token),
            "--workload-cert-ttl".into(),
            "4s".into(),
            "--xds-tls".into(),
        ]
    };
    let (fa, fb) = (flags("token-a"), flags("token-b"));
    let a = proxy::proxy_with(dir, "a", &boot("a-0", "ingressgateway"), &refs(&fa))?;
    let b = proxy::proxy_with(dir, "b", &boot("b-0", "eastwestgateway"), &refs(&fb))?;
    let logs = || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n--- discovery:\n{}",
            a.proc.tail(),
            b.proc.tail(),
            d.proc.tail()
        )
    };
    a.ready(Duration::from_secs(30)).await.with_context(logs)?;
    b.ready(Duration::from_secs(30)).await.with_context(logs)?;
    let client = proxy::client(false);
    let url = format!("http://127.0.0.1:{a_port}/");
    // The first certificates may still be on their way when the listeners are ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = proxy::send(&client, &url, &[("host", "reviews.example.com")]).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no success through mTLS: {r:?}; {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 9 s of traffic: two renewals or more on each side, no failure. Fresh connections each
    // time (a new client per request) so new handshakes use the new certificates.
    let mut failed = Vec::new();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(9) {
        let c = proxy::client(false);
        match proxy::send(&c, &url, &[("host", "reviews.example.com")]).await {
            Ok(r) if r.status == 200 && r.backend() == Some("v1") => {}
            Ok(r) => failed.push(format!("{} {}", r.status, r.body)),
            Err(e) => failed.push(e.to_string()),
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let issued = |p: &proxy::Proxy| {
        std::fs::read_to_string(&p.proc.log)
            .unwrap_or_default()
            .matches("workload certificate installed")
            .count()
    };
    ensure!(
        failed.is_empty(),
        "{} of {sent} failed: {:?}; {}",
        failed.len(),
        failed.first(),
        logs()
    );
    ensure!(
        issued(&a) >= 3 && issued(&b) >= 3,
        "certificates installed: a={} b={}; {}",
        issued(&a),
        issued(&b),
        logs()
    );
    Ok(())
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Gateway A (plain HTTP on `a_port`) routes to `reviews`, whose endpoint is gateway B's
/// `ISTIO_MUTUAL` server on `b_port`; B routes to the backend. A DestinationRule makes A's
/// cluster ISTIO_MUTUAL.
fn write_two_gateway_mesh(dir: &Path, a_port: u16, b_port: u16, backend_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {b_port}}}}}\n- hostname: backend.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 80}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
            backend_port
        ),
    )?;
    std::fs::write(
        dir.join("config/mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: a, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {a_port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: b, namespace: default}}\nspec:\n  selector: {{istio: eastwestgateway}}\n  servers:\n  - port: {{number: {b_port}, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    tls: {{mode: ISTIO_MUTUAL}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [a]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: b, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [b]\n  http:\n  - route:\n    - destination: {{host: backend.default.svc.cluster.local}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n"
        ),
    )?;
    Ok(())
}

/// AuthorizationPolicy on the mTLS server, by the caller's SPIFFE id: B allows the ingress
/// gateway's principal on `/allowed*` and `/admin` and denies `/admin` to everyone; a third
/// proxy with another identity (same CA) is refused. DENY wins over ALLOW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_by_principal_over_mtls() -> Result<()> {
    const STRANGER_ID: &str = "spiffe://cluster.local/ns/default/sa/stranger";
    let tmp = tempfile::Builder::new()
        .prefix("capstan-mtls-authz")
        .tempdir()?;
    let dir = tmp.path();
    let ca = ca()?;
    let v1 = proxy::backend("v1").await?;
    let (a_port, b_port, c_port) = (free_port(), free_port(), free_port());
    write_two_gateway_mesh(dir, a_port, b_port, v1.port)?;
    let mesh = std::fs::read_to_string(dir.join("config/mesh.yaml"))?;
    std::fs::write(
        dir.join("config/mesh.yaml"),
        format!(
            "{mesh}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: c, namespace: default}}
spec:
  selector: {{istio: strangergateway}}
  servers:
  - port: {{number: {c_port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: c, namespace: default}}
spec:
  hosts: ['*']
  gateways: [c]
  http:
  - route:
    - destination: {{host: reviews.default.svc.cluster.local}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: b-allow, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: eastwestgateway}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/istio-system/sa/ingressgateway]}}}}]
    to: [{{operation: {{paths: ['/allowed*', /admin]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: b-deny, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: eastwestgateway}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/admin]}}}}]
"
        ),
    )?;
    let d = discovery(dir, None)?;
    // A gateway proxy `name` with the workload certificate of `id`.
    let gateway = |name: &str, id: &str, label: &str| -> Result<proxy::Proxy> {
        let certs = dir.join(format!("{name}-certs"));
        write_certs(&certs, &ca, id)?;
        let boot = proxy::bootstrap_json(
            &format!("router~127.0.0.1~{name}-0.istio-system~istio-system.svc.cluster.local"),
            &[("istio", label)],
            d.xds_port,
            free_port(),
            true,
        );
        proxy::proxy_with(
            dir,
            name,
            &boot,
            &["--cert-dir", &certs.display().to_string()],
        )
    };
    let a = gateway("a", GATEWAY_ID, "ingressgateway")?;
    let b = gateway("b", REVIEWS_ID, "eastwestgateway")?;
    let c = gateway("c", STRANGER_ID, "strangergateway")?;
    for p in [&a, &b, &c] {
        p.ready(Duration::from_secs(30)).await?;
    }
    let logs = || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n--- c:\n{}\n--- discovery:\n{}",
            a.proc.tail(),
            b.proc.tail(),
            c.proc.tail(),
            d.proc.tail()
        )
    };
    let client = proxy::client(false);
    let call = |port: u16, path: &'static str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let client = &client;
        async move { proxy::send(client, &url, &[("host", "reviews.example.com")]).await }
    };
    // Listeners and certificates may trail /ready: wait for the first allowed call.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(a_port, "/allowed/1").await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no allowed call: {r:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = call(a_port, "/allowed/2").await?;
    ensure!(seen.backend() == Some("v1"), "{seen:?}");
    for (port, path, want, why) in [
        (a_port, "/admin", 403, "DENY /admin wins over the ALLOW"),
        (
            a_port,
            "/other",
            403,
            "the ALLOW lists only /allowed* and /admin",
        ),
        (c_port, "/allowed/1", 403, "another principal"),
    ] {
        // C's first calls may still race its certificate: a 503 is not an answer yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = call(port, path).await.with_context(logs)?;
            if r.status != 503 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ensure!(
            r.status == want && r.body.contains("RBAC: access denied"),
            "{path} via {port}: {} {} ({why})\n{}",
            r.status,
            r.body,
            logs()
        );
    }
    let stats = b.admin("/stats").await?;
    let denied: u64 = stats
        .lines()
        .filter(|l| l.starts_with("http.") && l.contains(".rbac.denied: "))
        .filter_map(|l| l.rsplit(": ").next()?.parse::<u64>().ok())
        .sum();
    ensure!(denied >= 3, "B counted {denied} RBAC denials:\n{stats}");
    Ok(())
}
