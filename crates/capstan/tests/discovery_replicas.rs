//! Two `capstan discovery` replicas and a `capstan proxy` whose xDS cluster lists both (as a
//! Service in front of istiod's replicas would): when the replica the proxy talks to goes away
//! — SIGTERM (graceful drain) or SIGKILL of the elected leader — the proxy moves to the other
//! replica, no request through it fails meanwhile, and a config change made afterwards reaches
//! it through the survivor.

mod proxy;

use anyhow::{ensure, Context, Result};
use capstan_e2e::poll_until;
use capstan_e2e::private_kube::PrivateKube;
use proxy::{backend, free_port};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "router~127.0.0.1~ingress-0.default~default.svc.cluster.local";

fn write_mesh(dir: &Path, listen: u16, v1: u16, v2: u16, version: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}\n"
        ),
    )?;
    proxy::write_atomic(
        &dir.join("config/mesh.yaml"),
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {listen}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local, subset: {version}}}\n"
        ),
    )
}

/// Whether the replica's `/debug/syncz` lists the proxy.
async fn serves_proxy(d: &proxy::Discovery) -> bool {
    let url = format!("http://127.0.0.1:{}/debug/syncz", d.debug_port);
    proxy::get(&url, &[])
        .await
        .is_ok_and(|r| r.status == 200 && r.body.contains(NODE))
}

/// Requests through the gateway every 20 ms until stopped; what failed, and how many were sent.
struct Traffic {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, f) = (stop.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let client = proxy::client(false);
            let url = format!("http://127.0.0.1:{port}/");
            let mut sent = 0;
            while !s.load(Ordering::Relaxed) {
                match proxy::send(&client, &url, &[]).await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => f.lock().unwrap().push(format!("{} {}", r.status, r.body)),
                    Err(e) => f.lock().unwrap().push(e.to_string()),
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        });
        Traffic {
            stop,
            failures,
            task,
        }
    }

    async fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.task.await?;
        let failures = self.failures.lock().unwrap().clone();
        ensure!(
            failures.is_empty(),
            "{} of {sent} requests failed, first: {:?}",
            failures.len(),
            failures.first()
        );
        Ok(sent)
    }
}

/// How the first replica goes away.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM: it drains its streams over the window and exits 0.
    Term,
    /// SIGKILL.
    Kill,
}

/// Replica A alone, the proxy connects to it (B's port is not open yet, so whatever endpoint
/// the proxy tries first it ends up on A); then B starts, A goes away, the proxy must move.
async fn proxies_move(
    name: &str,
    stop: Stop,
    extra: &[&str],
    kube: Option<&PrivateKube>,
) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix(name).tempdir()?;
    let dir = tmp.path();
    let (v1, v2) = (backend("v1").await?, backend("v2").await?);
    let (listen, xa, xb) = (free_port(), free_port(), free_port());
    write_mesh(dir, listen, v1.port, v2.port, "v1")?;
    let mut args = vec!["--drain-duration", "2s"];
    args.extend_from_slice(extra);
    // Each replica its own TLS port (with a CA, the default is 0.0.0.0:15012 for both).
    let with_secure = || -> Vec<String> {
        let secure = format!("127.0.0.1:{}", free_port());
        args.iter()
            .map(|a| a.to_string())
            .chain(["--secure-xds-addr".to_string(), secure])
            .collect()
    };
    let (a_args, b_args) = (with_secure(), with_secure());
    let mut a = proxy::discovery_with(dir, Some(xa), &strs(&a_args))?;
    let mut boot =
        proxy::bootstrap_json(NODE, &[("istio", "ingressgateway")], xa, free_port(), true);
    let second = serde_json::json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xb}}}});
    boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array_mut()
        .context("lb_endpoints")?
        .push(second);
    let gw = proxy::proxy(dir, "gateway", &boot)?;
    gw.ready(Duration::from_secs(30)).await?;
    let b = proxy::discovery_with(dir, Some(xb), &strs(&b_args))?;
    let logs = |a: &proxy::Discovery| {
        format!(
            "--- gateway:\n{}\n--- a:\n{}\n--- b:\n{}",
            gw.proc.tail(),
            a.proc.tail(),
            b.proc.tail()
        )
    };
    ensure!(
        serves_proxy(&a).await,
        "the proxy is not on A\n{}",
        logs(&a)
    );
    let url = format!("http://127.0.0.1:{listen}/");
    let first = proxy::get(&url, &[]).await?;
    ensure!(first.backend() == Some("v1"), "{first:?}\n{}", logs(&a));
    if let Some(kube) = kube {
        let a_pid = a.proc.child.id();
        poll_until(
            "A, started first, to lead",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || Ok(lease_holder(kube)?.filter(|h| h.ends_with(&format!("_{a_pid}")))),
        )?;
    }

    let traffic = Traffic::start(listen);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    match stop {
        Stop::Term => {
            let status = tokio::task::block_in_place(|| a.proc.terminate(Duration::from_secs(15)))
                .with_context(|| logs(&a))?;
            ensure!(status.success(), "A exited with {status}\n{}", logs(&a));
        }
        Stop::Kill => {
            a.proc.child.kill()?;
            a.proc.child.wait()?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !serves_proxy(&b).await {
        ensure!(
            Instant::now() < deadline,
            "the proxy never reached B\n{}",
            logs(&a)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_after = stopped_at.elapsed();
    if let Some(kube) = kube {
        let b_pid = b.proc.child.id();
        poll_until(
            "the Lease to move to B",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || Ok(lease_holder(kube)?.filter(|h| h.ends_with(&format!("_{b_pid}")))),
        )?;
    }

    // Nothing lost: a change made now reaches the proxy through B.
    write_mesh(dir, listen, v1.port, v2.port, "v2")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = proxy::get(&url, &[]).await?;
        if r.backend() == Some("v2") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the change never arrived: {r:?}\n{}",
            logs(&a)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = traffic.finish().await.with_context(|| logs(&a))?;
    eprintln!(
        "{name}: {stop:?}; the proxy was on B {moved_after:?} later; {sent} requests, none failed"
    );
    Ok(())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn lease_holder(kube: &PrivateKube) -> Result<Option<String>> {
    kube.lease_holder("istio-system", "capstan-discovery-leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_the_proxies_to_the_other_replica_without_a_failed_request() -> Result<()> {
    proxies_move("capstan-replicas-term", Stop::Term, &[], None).await
}

/// With leader election on a real API server: the leader is SIGKILLed; the Lease and the
/// proxy both move to the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_the_lease_and_its_proxies() -> Result<()> {
    let Some(_ctx) = capstan_e2e::context("discovery-replicas")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("discovery-replicas", &[])?;
    kube.kubectl(&["create", "namespace", "istio-system"])?;
    kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let extra = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--leader-lease-duration",
        "3s",
        "--leader-renew-period",
        "500ms",
    ];
    proxies_move("capstan-replicas-kill", Stop::Kill, &extra, Some(&kube)).await
}
