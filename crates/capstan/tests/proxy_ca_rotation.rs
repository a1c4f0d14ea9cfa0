//! A CA root rotation under traffic, as Istio documents it for a plugged-in CA: `capstan
//! discovery --cacerts DIR` signs with an intermediate of the old root; two proxies get
//! 4-second certificates from it and talk ISTIO_MUTUAL (client → A → B → an mTLS backend that
//! records each caller's chain) while requests flow without pause. Then, with no restart:
//!
//! 1. `root-cert.pem` becomes old + new root (still signing with the old intermediate). Proxy
//!    A's mounted root file (what kubelet syncs from `istio-ca-root-cert`) gets both roots
//!    too; B's stays stale, so B learns the new root from the CA's responses only.
//! 2. Once both proxies trust both roots, the files switch to an intermediate of the new
//!    root, one file at a time: the half-written sets are refused and the old intermediate
//!    keeps signing until the set is whole.
//!
//! No request fails throughout, and in the end both proxies hold certificates that chain to
//! the new root (checked by verifying the chains the backend saw against the new root alone).

mod ca_support;
mod proxy;

use anyhow::{ensure, Context, Result};
use ca_support::{chains_to, put_cacert as put, write_cacerts, TestCa};
use proxy::free_port;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A_ID: &str = "spiffe://cluster.local/ns/default/sa/gateway-a";
const B_ID: &str = "spiffe://cluster.local/ns/default/sa/gateway-b";
const OBSERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/observer";

/// Each request the backend saw: the caller's SPIFFE id and the chain it presented.
type Seen = Arc<Mutex<Vec<(String, Vec<CertificateDer<'static>>)>>>;

/// The last chain `id` presented to the backend.
fn last_chain(seen: &Seen, id: &str) -> Option<Vec<CertificateDer<'static>>> {
    let seen = seen.lock().expect("the backend's log lock");
    seen.iter()
        .rev()
        .find(|(who, _)| who == id)
        .map(|(_, chain)| chain.clone())
}

/// The mTLS backend behind B (and reachable from A): requires a client certificate chaining
/// to either root, answers with the caller's SPIFFE id, closes every connection (so each
/// request is a new handshake with the caller's current certificate).
async fn observer(serving: &TestCa, roots: &[&TestCa]) -> Result<(u16, Seen)> {
    let (chain, key) = serving.leaf(OBSERVER_ID)?;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.der.clone())?;
    }
    let acceptor = proxy::mtls_acceptor(store, chain, key)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let chain: Vec<CertificateDer<'static>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                let id = capstan_proxy::identity::peer_cert(Some(chain.as_slice()))
                    .and_then(|p| p.spiffe().map(str::to_owned))
                    .unwrap_or_else(|| "anonymous".into());
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .expect("the backend's log lock")
                    .push((id.clone(), chain));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{id}",
                    id.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok((port, seen))
}

/// Gateway A (plain HTTP on `a_port`): host `reviews.example.com` → `reviews` (gateway B's
/// ISTIO_MUTUAL server on `b_port`), host `observer.example.com` → the backend directly.
/// Gateway B routes everything to the backend. Both clusters are ISTIO_MUTUAL.
fn write_mesh(dir: &Path, a_port: u16, b_port: u16, observer_port: u16) -> Result<()> {
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:
- hostname: reviews.default.svc.cluster.local
  namespace: default
  ports: [{{name: http, port: 9080}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {b_port}}}}}
- hostname: observer.default.svc.cluster.local
  namespace: default
  ports: [{{name: http, port: 80}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {observer_port}}}}}
"
        ),
    )?;
    let mutual = |host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}.default.svc.cluster.local
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
"
        )
    };
    let route = |name: &str, gateway: &str, host: &str, to: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ['{host}']
  gateways: [{gateway}]
  http:
  - route:
    - destination: {{host: {to}.default.svc.cluster.local}}
"
        )
    };
    let docs = [
        format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: a, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {a_port}, name: http, protocol: HTTP}}
    hosts: ['*']
"
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: b, namespace: default}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {b_port}, name: https, protocol: HTTPS}}
    hosts: ['*']
    tls: {{mode: ISTIO_MUTUAL}}
"
        ),
        route("a-reviews", "a", "reviews.example.com", "reviews"),
        route("a-observer", "a", "observer.example.com", "observer"),
        route("b", "b", "*", "observer"),
        mutual("reviews"),
        mutual("observer"),
    ];
    std::fs::write(dir.join("config/mesh.yaml"), docs.join("---\n"))?;
    Ok(())
}

/// Occurrences of `needle` in a process's log, colours removed (`field=value` is coloured).
fn count(log: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        let after = &rest[at..];
        rest = after.find('m').map_or("", |end| &after[end + 1..]);
    }
    plain.push_str(rest);
    plain.matches(needle).count()
}

/// Polls `done` every 100 ms until it holds, for at most `within`.
async fn wait_until(
    what: &str,
    within: Duration,
    logs: &dyn Fn() -> String,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_root_rotates_under_traffic_without_a_failed_request() -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("capstan-root-rotation")
        .tempdir()?;
    let dir = tmp.path();
    let old_root = TestCa::root("old root")?;
    let old_ca = old_root.intermediate("old intermediate")?;
    let new_root = TestCa::root("new root")?;
    let new_ca = new_root.intermediate("new intermediate")?;
    let both_roots = format!("{}{}", old_root.pem, new_root.pem);

    // The plugged-in CA: an intermediate of the old root.
    let cacerts = dir.join("cacerts");
    write_cacerts(&cacerts, &old_ca, &old_root, &old_root.pem)?;

    let (observer_port, seen) = observer(&old_ca, &[&old_root, &new_root]).await?;
    let (a_port, b_port, secure) = (free_port(), free_port(), free_port());
    write_mesh(dir, a_port, b_port, observer_port)?;
    std::fs::write(
        dir.join("tokens"),
        "token-a default gateway-a\ntoken-b default gateway-b\n",
    )?;
    std::fs::write(dir.join("token-a"), "token-a\n")?;
    std::fs::write(dir.join("token-b"), "token-b\n")?;
    // Each proxy's mounted istio-ca-root-cert.
    std::fs::write(dir.join("a-root.pem"), &old_root.pem)?;
    std::fs::write(dir.join("b-root.pem"), &old_root.pem)?;
    let path = |p: &str| dir.join(p).display().to_string();
    let secure_addr = format!("127.0.0.1:{secure}");
    let d = proxy::discovery_with(
        dir,
        None,
        &[
            "--cacerts",
            &path("cacerts"),
            "--ca-token-file",
            &path("tokens"),
            "--secure-xds-addr",
            &secure_addr,
            "--workload-cert-ttl",
            "4s",
        ],
    )?;
    let start = |name: &str, label: &str| {
        let boot = proxy::bootstrap_json(
            &format!("router~127.0.0.1~{name}-0.default~default.svc.cluster.local"),
            &[("istio", label)],
            secure,
            free_port(),
            true,
        );
        let (root, token) = (
            path(&format!("{name}-root.pem")),
            path(&format!("token-{name}")),
        );
        proxy::proxy_with(
            dir,
            name,
            &boot,
            &[
                "--ca-address",
                &secure_addr,
                "--ca-root-cert",
                &root,
                "--ca-token-file",
                &token,
                "--workload-cert-ttl",
                "4s",
                "--xds-tls",
            ],
        )
    };
    let a = start("a", "ingressgateway")?;
    let b = start("b", "eastwestgateway")?;
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
    let url = format!("http://127.0.0.1:{a_port}/");
    let via_a = |host: &'static str| {
        let url = url.clone();
        async move { proxy::send(&proxy::client(false), &url, &[("host", host)]).await }
    };
    // The first certificates may still be on their way when the listeners are ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = via_a("reviews.example.com").await;
        if r.as_ref().is_ok_and(|r| r.status == 200 && r.body == B_ID) {
            break;
        }
        ensure!(Instant::now() < deadline, "no success: {r:?}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Requests without pause from now on, each on a new client connection; A's pooled and
    // B's per-request upstream connections make new handshakes as certificates rotate.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (stop, url) = (stop.clone(), url.clone());
        async move {
            let (mut sent, mut failed) = (0usize, Vec::new());
            // Bounded by the test's own steps; this cap only guards against a hung test.
            let cap = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < cap {
                let client = proxy::client(false);
                match proxy::send(&client, &url, &[("host", "reviews.example.com")]).await {
                    Ok(r) if r.status == 200 && r.body == B_ID => {}
                    Ok(r) => failed.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failed.push(format!("{e:#}")),
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let installed = |p: &proxy::Proxy, roots: usize| count(&p.proc.log, &format!("roots={roots}"));
    ensure!(
        installed(&a, 1) > 0 && installed(&b, 1) > 0,
        "certificates with the old root only at first\n{}",
        logs()
    );

    // Step 1: both roots trusted, the old intermediate still signing.
    put(&cacerts, "root-cert.pem", &both_roots)?;
    proxy::write_atomic(&dir.join("a-root.pem"), &both_roots)?;
    wait_until(
        "discovery reloads both roots",
        Duration::from_secs(10),
        &logs,
        || count(&d.proc.log, "reloaded the plugged-in CA") >= 1,
    )
    .await?;
    // A from its mounted file or its next certificate, B from its next certificate.
    wait_until(
        "both proxies trust both roots",
        Duration::from_secs(15),
        &logs,
        || installed(&a, 2) > 0 && installed(&b, 2) > 0,
    )
    .await?;

    // Step 2: the switch to the new intermediate, one file at a time. Until the key arrives
    // the set is inconsistent: refused, and the old intermediate keeps signing.
    put(&cacerts, "ca-cert.pem", &new_ca.pem)?;
    wait_until(
        "the half-written set is refused",
        Duration::from_secs(10),
        &logs,
        || count(&d.proc.log, "refused the changed cacerts") >= 1,
    )
    .await?;
    put(
        &cacerts,
        "cert-chain.pem",
        &format!("{}{}", new_ca.pem, new_root.pem),
    )?;
    put(
        &cacerts,
        "root-cert.pem",
        &format!("{}{}", new_root.pem, old_root.pem),
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        count(&d.proc.log, "reloaded the plugged-in CA") == 1,
        "an incomplete set was loaded\n{}",
        logs()
    );
    put(&cacerts, "ca-key.pem", &new_ca.key_pem)?;
    wait_until(
        "discovery signs with the new intermediate",
        Duration::from_secs(10),
        &logs,
        || count(&d.proc.log, "signing_changed=true") >= 1,
    )
    .await?;

    // Both proxies renew under the new root: B's chain as the backend sees it on B's
    // requests, A's on a request through A straight to the backend.
    wait_until(
        "B's certificate chains to the new root",
        Duration::from_secs(15),
        &logs,
        || last_chain(&seen, B_ID).is_some_and(|c| chains_to(&c, &new_root)),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = via_a("observer.example.com").await;
        ensure!(
            r.as_ref().is_ok_and(|r| r.status == 200 && r.body == A_ID),
            "A to the backend: {r:?}\n{}",
            logs()
        );
        if last_chain(&seen, A_ID).is_some_and(|c| chains_to(&c, &new_root)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "A's certificate does not chain to the new root\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more renewals under the new intermediate while the traffic continues.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = traffic.await?;
    ensure!(
        failed.is_empty(),
        "{} of {sent} requests failed, first: {:?}\n{}",
        failed.len(),
        failed.first(),
        logs()
    );
    ensure!(sent > 100, "only {sent} requests were sent\n{}", logs());

    // In the end both proxies hold certificates issued under the new root only.
    let r = via_a("observer.example.com").await?;
    ensure!(r.status == 200 && r.body == A_ID, "{r:?}");
    for (who, id) in [("A", A_ID), ("B", B_ID)] {
        let chain = last_chain(&seen, id).with_context(|| format!("no request from {who}"))?;
        ensure!(
            chains_to(&chain, &new_root) && !chains_to(&chain, &old_root),
            "{who}'s last certificate does not chain to the new root alone\n{}",
            logs()
        );
    }
    let reissued = count(&d.proc.log, "new_signing_certificate=true");
    ensure!(
        reissued >= 1,
        "the TLS port's certificate was not re-issued\n{}",
        logs()
    );
    Ok(())
}
