//! `capstan proxy` as an ingress gateway on loopback, driven by unchanged Istio YAML: the
//! traffic policies of DestinationRules (circuit breaking, outlier detection, consistent hash)
//! and VirtualServices (mirroring, fault delay, timeouts and per-try timeouts), and HTTP/2
//! upstreams for `grpc` ports.

mod proxy;

use anyhow::{ensure, Context, Result};
use proxy::{backend, discovery, free_port, write_atomic, Backend};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HOST: (&str, &str) = ("host", "reviews.example.com");
/// The subset-less cluster of `reviews`, as Istio names it.
const CLUSTER: &str = "cluster.outbound|9080||reviews.default.svc.cluster.local";

/// A gateway, its control plane, and the backends of `reviews.default.svc.cluster.local`.
struct Mesh {
    _tmp: tempfile::TempDir,
    backends: Vec<Backend>,
    port: u16,
    discovery: proxy::Discovery,
    gateway: proxy::Proxy,
}

/// The file registry: one endpoint per backend (labelled `version: <backend name>`), all on
/// service port 9080 named `port_name`.
fn registry(backends: &[Backend], port_name: &str) -> String {
    let mut out = format!(
        "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: {port_name}, port: 9080}}]\n  addresses: [10.96.10.3]\n  endpoints:\n"
    );
    for b in backends {
        out += &format!(
            "  - {{address: 127.0.0.1, ports: {{{port_name}: {}}}, labels: {{app: reviews, version: {}}}, workload: reviews-{}-0}}\n",
            b.port, b.name, b.name
        );
    }
    out
}

fn gateway_yaml(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
    )
}

/// A DestinationRule for `reviews` with subsets `v1` and `v2`; `traffic_policy` is the body of
/// its `trafficPolicy:`, indented by four spaces (empty for none).
fn destination_rule(traffic_policy: &str) -> String {
    let policy = if traffic_policy.is_empty() {
        String::new()
    } else {
        format!("  trafficPolicy:\n{traffic_policy}")
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n{policy}  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"
    )
}

/// A VirtualService bound to the gateway, for host `reviews.example.com`; `http` is its
/// `http:` list, indented by two spaces.
fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews.example.com]\n  gateways: [web]\n  http:\n{http}"
    )
}

/// A VirtualService sending everything to the subset-less service.
fn to_service() -> String {
    virtual_service("  - route:\n    - destination: {host: reviews.default.svc.cluster.local}\n")
}

/// Starts backends named `names`, the control plane with `config` (Istio YAML documents), and
/// the gateway; returns once a request reaches a backend.
async fn mesh(names: &[&str], port_name: &str, config: &[String]) -> Result<Mesh> {
    let tmp = tempfile::Builder::new()
        .prefix("capstan-policies")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let mut backends = Vec::new();
    for n in names {
        backends.push(backend(n).await?);
    }
    let port = free_port();
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), registry(&backends, port_name))?;
    std::fs::write(dir.join("config/gateway.yaml"), gateway_yaml(port))?;
    write_atomic(&dir.join("config/policy.yaml"), &config.join("---\n"))?;
    let discovery = discovery(&dir, None)?;
    let gateway = proxy::gateway(&dir, discovery.xds_port).await?;
    let m = Mesh {
        _tmp: tmp,
        backends,
        port,
        discovery,
        gateway,
    };
    m.wait_routing(Duration::from_secs(10)).await?;
    Ok(m)
}

impl Mesh {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .expect("a backend the test started")
    }
    /// Waits until a request through the gateway reaches a backend.
    async fn wait_routing(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let r = proxy::get(&self.url("/"), &[HOST]).await;
            if matches!(&r, Ok(r) if r.backend().is_some()) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no route through the gateway within {within:?}: {r:?}\n{}",
                self.logs()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflows_with_503_overloaded() -> Result<()> {
    let dr = destination_rule(
        "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, http2MaxRequests: 1, maxRequestsPerConnection: 1}\n",
    );
    let m = mesh(&["v1"], "http", &[dr, to_service()]).await?;
    m.backend("v1")
        .behaviour
        .delay_ms
        .store(300, Ordering::SeqCst);
    let url = m.url("/");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { proxy::get(&url, &[HOST]).await })
        })
        .collect();
    let (mut ok, mut overloaded, mut other) = (0, 0, Vec::new());
    for t in tasks {
        let r = t.await??;
        match (r.status, r.header("x-envoy-overloaded")) {
            (200, _) => ok += 1,
            (503, Some("true")) => overloaded += 1,
            _ => other.push(r.status),
        }
    }
    ensure!(
        overloaded > 0 && ok > 0 && other.is_empty(),
        "20 concurrent requests: {ok} ok, {overloaded} overloaded, others {other:?}; {}",
        m.logs()
    );
    let overflow = m
        .gateway
        .stat(&format!("{CLUSTER}.upstream_rq_pending_overflow"))
        .await?;
    ensure!(
        overflow > 0,
        "upstream_rq_pending_overflow = {overflow}; {}",
        m.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_brings_it_back() -> Result<()> {
    let dr = destination_rule(
        "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}\n",
    );
    let m = mesh(&["v1", "v2"], "http", &[dr, to_service()]).await?;
    let bad = &m.backend("v2").behaviour;
    bad.fail_percent.store(100, Ordering::SeqCst);
    let client = proxy::client(false);
    let active = format!("{CLUSTER}.outlier_detection.ejections_active");
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.gateway.stat(&active).await? != 1 {
        ensure!(
            Instant::now() < deadline,
            "the failing endpoint was not ejected within 5 s ({} requests reached it); {}",
            bad.requests.load(Ordering::SeqCst),
            m.logs()
        );
        let _ = proxy::send(&client, &m.url("/"), &[HOST]).await?;
    }
    let mut ok = 0;
    for _ in 0..100 {
        let r = proxy::send(&client, &m.url("/"), &[HOST]).await?;
        ok += usize::from(r.status == 200);
    }
    ensure!(
        ok >= 95,
        "only {ok}/100 succeeded with the failing endpoint ejected; {}",
        m.logs()
    );
    // Recovered: once the ejection time has passed, the next interval un-ejects it.
    bad.fail_percent.store(0, Ordering::SeqCst);
    let before = bad.requests.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let r = proxy::send(&client, &m.url("/"), &[HOST]).await?;
        if r.backend() == Some("v2") && r.status == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the recovered endpoint got no traffic within 6 s ({} requests reached it, ejections_active {}); {}",
            bad.requests.load(Ordering::SeqCst) - before,
            m.gateway.stat(&active).await?,
            m.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_a_header_is_sticky() -> Result<()> {
    let dr =
        destination_rule("    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n");
    let m = mesh(&["v1", "v2", "v3", "v4"], "http", &[dr, to_service()]).await?;
    let client = proxy::client(false);
    let mut chosen = BTreeMap::new();
    // 16 users: the chance that all hash to one of 4 backends is 4^-15, so the spread check
    // cannot flake.
    let users: Vec<String> = (0..16).map(|i| format!("user-{i}")).collect();
    for user in &users {
        let user = user.as_str();
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            let r = proxy::send(&client, &m.url("/"), &[HOST, ("x-user", user)]).await?;
            ensure!(r.status == 200, "{user}: status {}; {}", r.status, m.logs());
            seen.insert(r.backend().unwrap_or_default().to_string());
        }
        ensure!(
            seen.len() == 1,
            "{user} reached {seen:?} instead of one backend; {}",
            m.logs()
        );
        chosen.insert(user, seen.into_iter().next().unwrap_or_default());
    }
    let distinct: BTreeSet<_> = chosen.values().collect();
    ensure!(
        distinct.len() >= 2,
        "all users hashed to one backend: {chosen:?}; {}",
        m.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_requests_to_the_shadow_subset() -> Result<()> {
    let vs = virtual_service(
        "  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n    mirror: {host: reviews.default.svc.cluster.local, subset: v2}\n    mirrorPercentage: {value: 100}\n",
    );
    let m = mesh(&["v1", "v2"], "http", &[destination_rule(""), vs]).await?;
    let mirror = &m.backend("v2").behaviour;
    // wait_routing already sent requests; wait until their copies have arrived.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = mirror.requests.load(Ordering::SeqCst);
    let client = proxy::client(false);
    for _ in 0..20 {
        let r = proxy::send(&client, &m.url("/"), &[HOST]).await?;
        ensure!(
            r.status == 200 && r.backend() == Some("v1"),
            "answered {} by {:?}; {}",
            r.status,
            r.backend(),
            m.logs()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while mirror.requests.load(Ordering::SeqCst) < before + 20 {
        ensure!(
            Instant::now() < deadline,
            "the mirror received {} of 20 copies; {}",
            mirror.requests.load(Ordering::SeqCst) - before,
            m.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hosts = mirror.hosts.lock().expect("not poisoned").clone();
    ensure!(
        hosts.iter().all(|h| h == "reviews.example.com-shadow"),
        "the mirror saw hosts {hosts:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_applies_to_its_percentage() -> Result<()> {
    let vs = virtual_service(
        "  - fault:\n      delay: {fixedDelay: 200ms, percentage: {value: 50}}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n",
    );
    let m = mesh(&["v1", "v2"], "http", &[destination_rule(""), vs]).await?;
    // Ten clients of ten sequential requests each, to keep the test short.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = m.url("/");
            tokio::spawn(async move {
                let client = proxy::client(false);
                let mut delayed = 0usize;
                for _ in 0..10 {
                    let start = Instant::now();
                    let r = proxy::send(&client, &url, &[HOST]).await?;
                    ensure!(r.status == 200, "status {}", r.status);
                    delayed += usize::from(start.elapsed() >= Duration::from_millis(200));
                }
                Ok::<_, anyhow::Error>(delayed)
            })
        })
        .collect();
    let mut delayed = 0;
    for t in tasks {
        delayed += t.await?.with_context(|| m.logs())?;
    }
    ensure!(
        // Binomial(100, 0.5) has σ = 5: ±15 is 3σ (a 0.3 % false failure; ±10 failed 1 run
        // in ~40), still far from 0 % or 100 %.
        delayed.abs_diff(50) <= 15,
        "{delayed}/100 delayed by 200 ms, want 50±15; {}",
        m.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_and_per_try_timeout_answer_504() -> Result<()> {
    let vs = virtual_service(
        "  - match:\n    - uri: {prefix: /slow}\n    timeout: 300ms\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n  - match:\n    - uri: {prefix: /retried}\n    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}\n    route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v2}\n  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n",
    );
    let m = mesh(&["v1", "v2"], "http", &[destination_rule(""), vs]).await?;
    m.backend("v1")
        .behaviour
        .delay_ms
        .store(1000, Ordering::SeqCst);
    m.backend("v2")
        .behaviour
        .delay_ms
        .store(1000, Ordering::SeqCst);

    let start = Instant::now();
    let r = proxy::get(&m.url("/slow"), &[HOST]).await?;
    let took = start.elapsed();
    ensure!(
        r.status == 504 && took >= Duration::from_millis(280) && took < Duration::from_millis(1000),
        "route timeout: {} after {took:?}; {}",
        r.status,
        m.logs()
    );
    let timeouts = m
        .gateway
        .stat("cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_timeout")
        .await?;
    ensure!(
        timeouts >= 1,
        "upstream_rq_timeout = {timeouts}; {}",
        m.logs()
    );

    // Three tries of 200 ms each (plus the retry back-off), all timing out.
    let start = Instant::now();
    let r = proxy::get(&m.url("/retried"), &[HOST]).await?;
    let took = start.elapsed();
    ensure!(
        r.status == 504 && took >= Duration::from_millis(580) && took < Duration::from_millis(1000),
        "per-try timeout: {} after {took:?}; {}",
        r.status,
        m.logs()
    );
    let v2 = "cluster.outbound|9080|v2|reviews.default.svc.cluster.local";
    let per_try = m
        .gateway
        .stat(&format!("{v2}.upstream_rq_per_try_timeout"))
        .await?;
    let retries = m.gateway.stat(&format!("{v2}.upstream_rq_retry")).await?;
    ensure!(
        per_try == 3 && retries == 2,
        "upstream_rq_per_try_timeout = {per_try}, upstream_rq_retry = {retries}; {}",
        m.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_gets_an_http2_upstream() -> Result<()> {
    let m = mesh(&["v1"], "grpc", &[destination_rule(""), to_service()]).await?;
    let client = proxy::client(true);
    for _ in 0..5 {
        let r = proxy::send(&client, &m.url("/"), &[HOST]).await?;
        ensure!(r.status == 200, "status {}; {}", r.status, m.logs());
        let seen = r.json()?;
        ensure!(
            seen["version"] == "HTTP/2.0",
            "the backend saw {}; {}",
            seen["version"],
            m.logs()
        );
    }
    Ok(())
}
