//! `capstan discovery --kubeconfig` against a private real kube-apiserver, when things go
//! wrong:
//!
//! - started with 5,000 Services in the API server, it serves no proxy before it has all of
//!   them: a proxy connecting during the start is refused (UNAVAILABLE, it retries), `/ready`
//!   turns 200 only once the mesh is complete, and the first answer holds every Service;
//! - the API server restarted mid-watch, then `capstan discovery` killed with a proxy
//!   connected and a change made while it was down: the proxy keeps serving, reconnects to the
//!   restarted control plane and converges, with nothing lost or duplicated.

mod ca_support;
mod proxy;

use anyhow::{ensure, Context, Result};
use capstan_e2e::private_kube::PrivateKube;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVICES: usize = 5_000;

fn services_yaml(from: usize, to: usize) -> String {
    let mut out = String::new();
    for i in from..to {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: mesh}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n"
        );
    }
    out
}

async fn ready(port: u16) -> bool {
    proxy::get(&format!("http://127.0.0.1:{port}/ready"), &[])
        .await
        .is_ok_and(|r| r.status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_connecting_during_startup_never_gets_a_partial_mesh() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("discovery-startup")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("discovery-startup", &[])?;
    kube.kubectl(&["create", "namespace", "istio-system"])?;
    kube.kubectl(&["create", "namespace", "mesh"])?;
    kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
    let created = Instant::now();
    for chunk in 0..10 {
        let per = SERVICES / 10;
        let file = ctx.scratch.join(format!("services-{chunk}.yaml"));
        std::fs::write(&file, services_yaml(chunk * per, (chunk + 1) * per))?;
        kube.kubectl(&["create", "-f", &file.display().to_string(), "-o", "name"])?;
    }
    eprintln!("{SERVICES} Services created in {:?}", created.elapsed());

    let (xds, monitoring) = (proxy::free_port(), proxy::free_port());
    let log = ctx.scratch.join("discovery.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("discovery")
        .args(["--kubeconfig", &kube.kubeconfig().display().to_string()])
        .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
        .args([
            "--secure-xds-addr",
            &format!("127.0.0.1:{}", proxy::free_port()),
        ])
        .args(["--debug-addr", &format!("127.0.0.1:{}", proxy::free_port())])
        .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let child = cmd.spawn().context("starting capstan discovery")?;
    let _guard = capstan_e2e::ChildGuard::new("discovery", child);
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();

    // From the first instant: keep trying to open a stream, and watch /ready.
    let node = "sidecar~10.1.0.1~probe-0.mesh~mesh.svc.cluster.local";
    let wanted = |names: &[String]| {
        names
            .iter()
            .filter(|n| {
                n.starts_with("outbound|80||svc-") && n.ends_with(".mesh.svc.cluster.local")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut refused, mut ready_seen) = (0, false);
    let first = loop {
        ensure!(
            Instant::now() < deadline,
            "no answer within 180 s\n{}",
            tail()
        );
        let was_ready = ready(monitoring).await;
        ready_seen |= was_ready;
        let channel =
            match tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{xds}"))?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
            {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
        match ca_support::delta_clusters(channel, None, node).await {
            Ok(names) => break (names, was_ready),
            Err(status) => {
                ensure!(
                    status.code() == tonic::Code::Unavailable,
                    "refused with {status} instead of UNAVAILABLE\n{}",
                    tail()
                );
                ensure!(
                    !was_ready,
                    "/ready said 200 but the stream was refused: {status}"
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (names, _) = first;
    ensure!(
        wanted(&names) == SERVICES,
        "the first answer held {} of the {SERVICES} services (refused {refused} times before)\n{}",
        wanted(&names),
        tail()
    );
    ensure!(ready(monitoring).await, "/ready is not 200 after an answer");
    eprintln!("refused {refused} times (ready seen before the answer: {ready_seen}); the first answer held all {SERVICES} services");
    Ok(())
}

const NODE: &str = "router~127.0.0.1~ingress-0.default~default.svc.cluster.local";

fn routing_yaml(listen: u16, version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {listen}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [web]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local, subset: {version}}}\n"
    )
}

/// Waits until requests through the gateway reach `version`.
async fn wait_backend(url: &str, version: &str, logs: impl Fn() -> String) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = proxy::get(url, &[]).await;
        if r.as_ref().is_ok_and(|r| r.backend() == Some(version)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "requests never reached {version}: {r:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_and_control_plane_kill_lose_and_duplicate_nothing() -> Result<()> {
    let Some(_ctx) = capstan_e2e::context("discovery-kube-restart")? else {
        return Ok(());
    };
    let mut kube = PrivateKube::start("discovery-kube-restart", &[])?;
    kube.kubectl(&["create", "namespace", "istio-system"])?;
    kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
    let tmp = tempfile::Builder::new()
        .prefix("capstan-kube-restart")
        .tempdir()?;
    let dir = tmp.path();
    let (v1, v2) = (proxy::backend("v1").await?, proxy::backend("v2").await?);
    let (listen, xds) = (proxy::free_port(), proxy::free_port());
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "services:\n- hostname: reviews.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}\n",
            v1.port, v2.port
        ),
    )?;
    kube.apply(&routing_yaml(listen, "v1"))?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    // With a CA the TLS port defaults to 0.0.0.0:15012: one of our own instead.
    let secure = format!("127.0.0.1:{}", proxy::free_port());
    let args = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--secure-xds-addr",
        secure.as_str(),
    ];
    let mut d = proxy::discovery_with(dir, Some(xds), &args)?;
    let boot = proxy::bootstrap_json(
        NODE,
        &[("istio", "ingressgateway")],
        xds,
        proxy::free_port(),
        true,
    );
    let gw = proxy::proxy(dir, "gateway", &boot)?;
    gw.ready(Duration::from_secs(30)).await?;
    let url = format!("http://127.0.0.1:{listen}/");
    wait_backend(&url, "v1", || gw.proc.tail()).await?;

    // The API server goes away mid-watch and comes back; a change made after is seen.
    tokio::task::block_in_place(|| kube.restart_apiserver())?;
    kube.apply(&routing_yaml(listen, "v2"))?;
    wait_backend(&url, "v2", || {
        format!("{}\n--- discovery:\n{}", gw.proc.tail(), d.proc.tail())
    })
    .await?;

    // The control plane dies; the proxy keeps serving; a change is made meanwhile.
    d.proc.child.kill()?;
    d.proc.child.wait()?;
    for _ in 0..10 {
        let r = proxy::get(&url, &[]).await?;
        ensure!(r.backend() == Some("v2"), "without a control plane: {r:?}");
    }
    kube.apply(&routing_yaml(listen, "v1"))?;
    let d2 = proxy::discovery_with(dir, Some(xds), &args)?;
    let logs = || format!("{}\n--- discovery:\n{}", gw.proc.tail(), d2.proc.tail());
    wait_backend(&url, "v1", logs).await?;

    // Nothing duplicated: one gateway listener, one route configuration with one virtual host,
    // and the restarted control plane holds one stream for the proxy.
    let dump: serde_json::Value = serde_json::from_str(&gw.admin("/config_dump").await?)?;
    let listeners: Vec<String> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ListenersConfigDump"))
        })
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect();
    ensure!(
        listeners == [format!("0.0.0.0_{listen}")],
        "listeners: {listeners:?}"
    );
    let syncz = proxy::get(
        &format!("http://127.0.0.1:{}/debug/syncz", d2.debug_port),
        &[],
    )
    .await?;
    ensure!(
        syncz.body.matches(NODE).count() >= 1
            && syncz.body.matches("\"connection_id\"").count() == 1,
        "syncz: {}",
        syncz.body
    );
    Ok(())
}
