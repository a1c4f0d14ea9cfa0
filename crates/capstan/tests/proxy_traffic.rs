//! `capstan proxy` as an ingress gateway on loopback, driven by `capstan discovery` (file config
//! and file registry) and unchanged Istio YAML: traffic shifting, header routing, redirects,
//! rewrites, header manipulation, retries, faults, and surviving a control-plane restart.

mod proxy;

use anyhow::{ensure, Result};
use proxy::{backend, discovery, free_port, write_atomic, Backend};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Mesh {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    v1: Backend,
    /// Kept alive for the mesh's lifetime.
    _v2: Backend,
    port: u16,
    discovery: proxy::Discovery,
    gateway: proxy::Proxy,
}

fn registry(v1: u16, v2: u16) -> String {
    format!(
        "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  addresses: [10.96.10.3]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{app: reviews, version: v1}}, workload: reviews-v1-0}}\n  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: reviews, version: v2}}, workload: reviews-v2-0}}\n"
    )
}

fn gateway_yaml(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"
    )
}

/// A VirtualService bound to the gateway, for host `reviews.example.com`; `http` is its
/// `http:` list, indented by four spaces.
fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.example.com]\n  gateways: [web]\n  http:\n{http}"
    )
}

fn weights(v1: u32, v2: u32) -> String {
    virtual_service(&format!(
        "  - route:\n    - destination: {{host: reviews.default.svc.cluster.local, subset: v1}}\n      weight: {v1}\n    - destination: {{host: reviews.default.svc.cluster.local, subset: v2}}\n      weight: {v2}\n"
    ))
}

async fn mesh(vs: &str) -> Result<Mesh> {
    let tmp = tempfile::Builder::new().prefix("capstan-proxy").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let (v1, v2) = (backend("v1").await?, backend("v2").await?);
    let port = free_port();
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), registry(v1.port, v2.port))?;
    std::fs::write(dir.join("config/gateway.yaml"), gateway_yaml(port))?;
    set_vs(&dir, vs)?;
    let discovery = discovery(&dir, None)?;
    let gateway = proxy::gateway(&dir, discovery.xds_port).await?;
    let m = Mesh {
        _tmp: tmp,
        dir,
        v1,
        _v2: v2,
        port,
        discovery,
        gateway,
    };
    m.wait_routing(Duration::from_secs(10)).await?;
    Ok(m)
}

fn set_vs(dir: &Path, vs: &str) -> Result<()> {
    write_atomic(&dir.join("config/vs.yaml"), vs)
}

impl Mesh {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    /// Waits until a request through the gateway reaches a backend.
    async fn wait_routing(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let r = proxy::get(&self.url("/"), &[("host", "reviews.example.com")]).await;
            if matches!(&r, Ok(r) if r.backend().is_some()) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no route through the gateway within {within:?}: {r:?}\n--- gateway:\n{}\n--- discovery:\n{}",
                self.gateway.proc.tail(),
                self.discovery.proc.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fn logs(&self) -> String {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            self.gateway.proc.tail(),
            self.discovery.proc.tail()
        )
    }
}

/// Sends `n` requests on one keep-alive client; returns (v1, v2, failures).
async fn split(m: &Mesh, client: &proxy::Client, n: usize) -> Result<(usize, usize, usize)> {
    let (mut v1, mut v2, mut failed) = (0, 0, 0);
    for _ in 0..n {
        match proxy::send(client, &m.url("/"), &[("host", "reviews.example.com")]).await {
            Ok(r) if r.status == 200 => match r.backend() {
                Some("v1") => v1 += 1,
                Some("v2") => v2 += 1,
                _ => failed += 1,
            },
            _ => failed += 1,
        }
    }
    Ok((v1, v2, failed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_shifting_80_20_then_0_100_without_failures() -> Result<()> {
    let m = mesh(&weights(80, 20)).await?;
    for h2 in [false, true] {
        let client = proxy::client(h2);
        let (v1, v2, failed) = split(&m, &client, 2000).await?;
        ensure!(
            failed == 0,
            "{failed} failed requests (h2={h2}); {}",
            m.logs()
        );
        // 80/20 within ±5 % of 2,000 requests.
        ensure!(
            v1.abs_diff(1600) <= 100,
            "v1={v1} v2={v2} (h2={h2}), want 1600±100"
        );
    }
    // Shift everything to v2 while traffic flows: no request may fail, and within 2 s of the
    // edit every request lands on v2.
    let client = proxy::client(false);
    let edited = Instant::now();
    set_vs(&m.dir, &weights(0, 100))?;
    let mut converged = None;
    let mut failures = 0;
    while edited.elapsed() < Duration::from_secs(4) {
        let (v1, _v2, failed) = split(&m, &client, 20).await?;
        failures += failed;
        if v1 == 0 && converged.is_none() {
            converged = Some(edited.elapsed());
        } else if v1 > 0 {
            converged = None;
        }
    }
    ensure!(
        failures == 0,
        "{failures} requests failed during the change; {}",
        m.logs()
    );
    let at = converged.ok_or_else(|| anyhow::anyhow!("never converged to 0/100; {}", m.logs()))?;
    ensure!(
        at < Duration::from_secs(2),
        "converged to 0/100 only after {at:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_routing_redirect_rewrite_and_headers() -> Result<()> {
    let vs = virtual_service(
        "  - match:\n    - headers:\n        end-user: {exact: jason}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v2}\n  - match:\n    - uri: {prefix: /old}\n    redirect: {uri: /new, authority: elsewhere.example.com}\n  - match:\n    - uri: {prefix: /api/}\n    rewrite: {uri: /v1/}\n    headers:\n      request:\n        set: {x-added: yes-it-is}\n        remove: [x-secret]\n      response:\n        add: {x-served-by: capstan}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n",
    );
    let m = mesh(&vs).await?;
    let host = ("host", "reviews.example.com");
    let r = proxy::get(&m.url("/"), &[host, ("end-user", "jason")]).await?;
    ensure!(r.backend() == Some("v2"), "jason went to {:?}", r.backend());
    let r = proxy::get(&m.url("/"), &[host, ("end-user", "bob")]).await?;
    ensure!(r.backend() == Some("v1"), "bob went to {:?}", r.backend());

    let r = proxy::get(&m.url("/old/page"), &[host]).await?;
    ensure!(r.status == 301, "redirect status {}", r.status);
    let loc = r.header("location").unwrap_or_default();
    ensure!(
        loc == "http://elsewhere.example.com/new",
        "location {loc:?}"
    );

    let r = proxy::get(&m.url("/api/items?id=7"), &[host, ("x-secret", "s3cr3t")]).await?;
    let seen = r.json()?;
    ensure!(
        seen["path"] == "/v1/items?id=7",
        "rewritten path {}",
        seen["path"]
    );
    ensure!(
        seen["headers"]["x-added"] == "yes-it-is",
        "request header not set: {seen}"
    );
    ensure!(
        seen["headers"].get("x-secret").is_none(),
        "x-secret not removed: {seen}"
    );
    ensure!(
        r.header("x-served-by") == Some("capstan"),
        "response header missing"
    );
    ensure!(
        r.header("x-envoy-upstream-service-time").is_some(),
        "no x-envoy-upstream-service-time"
    );
    ensure!(
        seen["headers"]["x-forwarded-proto"] == "http",
        "x-forwarded-proto: {seen}"
    );
    ensure!(
        seen["headers"].get("x-request-id").is_some(),
        "no x-request-id: {seen}"
    );

    let r = proxy::get(&m.url("/"), &[("host", "unknown.example.org")]).await?;
    ensure!(r.status == 404, "unknown host answered {}", r.status);

    // Istio's standard metrics, as Grafana's and Kiali's queries expect them.
    let prom = m.gateway.admin("/stats/prometheus").await?;
    let v2 = prom
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("destination_service=\"reviews.default.svc.cluster.local\"")
                && l.contains("destination_version=\"v2\"")
        })
        .ok_or_else(|| anyhow::anyhow!("no istio_requests_total for reviews v2 in:\n{prom}"))?;
    ensure!(
        v2.contains("reporter=\"source\"") && v2.contains("response_code=\"200\""),
        "{v2}"
    );
    ensure!(
        v2.ends_with(" 1"),
        "jason's one request to v2 counted as: {v2}"
    );
    ensure!(
        prom.contains("istio_request_duration_milliseconds_bucket{"),
        "no duration histogram"
    );
    ensure!(
        prom.contains("envoy_cluster_upstream_rq_total{"),
        "no Envoy cluster stats"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failing_backend_and_faults_apply_their_percentages() -> Result<()> {
    let vs = virtual_service(
        "  - match:\n    - uri: {prefix: /fault}\n    fault:\n      abort: {httpStatus: 418, percentage: {value: 30}}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v2}\n  - retries: {attempts: 5, retryOn: 5xx}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n",
    );
    let m = mesh(&vs).await?;
    m.v1.behaviour.fail_percent.store(50, Ordering::SeqCst);
    let client = proxy::client(false);
    let mut ok = 0;
    for _ in 0..400 {
        let r = proxy::send(&client, &m.url("/"), &[("host", "reviews.example.com")]).await?;
        ok += usize::from(r.status == 200);
    }
    // 50 % failing, up to 5 retries: at least 99 % succeed.
    ensure!(
        ok >= 396,
        "only {ok}/400 succeeded through retries; {}",
        m.logs()
    );
    let retries = m
        .gateway
        .stat("cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_retry")
        .await?;
    ensure!(retries >= 150, "upstream_rq_retry = {retries}");

    let mut aborted = 0;
    for _ in 0..1000 {
        let r = proxy::send(
            &client,
            &m.url("/fault"),
            &[("host", "reviews.example.com")],
        )
        .await?;
        aborted += usize::from(r.status == 418);
    }
    ensure!(
        aborted.abs_diff(300) <= 50,
        "{aborted}/1000 aborted, want 300±50"
    );
    Ok(())
}

// The restarted control plane answers a stream only once its config and registry are loaded
// and pushed: before that a reconnecting proxy would be told every cluster was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_through_a_control_plane_restart_and_reconnects() -> Result<()> {
    let mut m = mesh(&weights(100, 0)).await?;
    let xds_port = m.discovery.xds_port;
    // Traffic flows the whole time: before, during and after the control plane's absence.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (url, stop) = (m.url("/"), stop.clone());
        tokio::spawn(async move {
            let client = proxy::client(false);
            let (mut sent, mut failed, mut v2) = (0usize, Vec::new(), 0usize);
            while !stop.load(Ordering::SeqCst) && sent < 100_000 {
                sent += 1;
                match proxy::send(&client, &url, &[("host", "reviews.example.com")]).await {
                    Ok(r) if r.status == 200 => v2 += usize::from(r.backend() == Some("v2")),
                    Ok(r) => failed.push(format!("status {}", r.status)),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, failed, v2)
        })
    };
    // Kill the control plane: the gateway keeps its last good config.
    let _ = m.discovery.proc.child.kill();
    let _ = m.discovery.proc.child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A change made while it is down arrives once it is back (same port) and the proxy has
    // reconnected. A long debounce holds the restarted server's first push back for a second
    // while the proxy retries within its backoff: the window in which a server that answered
    // before loading its config would tell the proxy that every cluster was removed.
    set_vs(&m.dir, &weights(0, 100))?;
    m.discovery = proxy::discovery_with(
        &m.dir,
        Some(xds_port),
        &["--debounce-ms", "1000", "--debounce-min-ms", "1000"],
    )?;
    let client = proxy::client(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (v1, v2, _) = split(&m, &client, 10).await?;
        if v2 == 10 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still v1={v1} 20 s after the restart; {}",
            m.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (sent, failed, v2) = traffic.await?;
    ensure!(
        failed.is_empty(),
        "{} of {sent} requests failed across the restart (first: {:?}); {}",
        failed.len(),
        failed.first(),
        m.logs()
    );
    ensure!(sent > 100 && v2 > 0, "sent={sent} v2={v2}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() -> Result<()> {
    let mut m = mesh(&weights(100, 0)).await?;
    m.v1.behaviour.delay_ms.store(500, Ordering::SeqCst);
    let url = m.url("/");
    let in_flight =
        tokio::spawn(async move { proxy::get(&url, &[("host", "reviews.example.com")]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = m.gateway.proc.terminate(Duration::from_secs(10))?;
    let r = in_flight.await??;
    ensure!(r.status == 200, "the in-flight request got {}", r.status);
    ensure!(status.success(), "gateway exited with {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_the_proxy_cannot_apply_is_nacked_and_traffic_continues() -> Result<()> {
    let m = mesh(&weights(100, 0)).await?;
    // An HTTPS server whose certificate files do not exist on the gateway (valid Istio, which
    // cannot check the proxy's files): the proxy must NACK the listener by name and keep its
    // last good config.
    let tls_port = free_port();
    let extra = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: secure, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {tls_port}, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    tls: {{mode: SIMPLE, serverCertificate: /nonexistent/web.crt, privateKey: /nonexistent/web.key}}\n"
    );
    write_atomic(&m.dir.join("config/secure.yaml"), &extra)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "proxy-status",
                "--debug-addr",
                &format!("127.0.0.1:{}", m.discovery.debug_port),
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("NACK") {
            break text;
        }
        ensure!(
            Instant::now() < deadline,
            "no NACK shown within 10 s: {text}\n{}",
            m.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status.contains("router~127.0.0.1~ingress-0"), "{status}");
    let dump = m.gateway.admin("/config_dump").await?;
    ensure!(
        dump.contains("/nonexistent/web.crt"),
        "config_dump does not show the rejection: {dump}"
    );
    let client = proxy::client(false);
    let (v1, _, failed) = split(&m, &client, 50).await?;
    ensure!(
        v1 == 50 && failed == 0,
        "after the NACK: v1={v1} failed={failed}"
    );
    Ok(())
}
