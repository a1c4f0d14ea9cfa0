//! Real traffic capture: a network namespace with Istio's iptables REDIRECT rules (outbound TCP
//! to 15001, the proxy's UID 1337 excluded), `capstan discovery` and `capstan proxy` inside it,
//! and an unmodified `curl http://reviews:9080/` routed by the sidecar to the subset the
//! VirtualService names; a destination outside the mesh passes through untouched.
//!
//! Needs root, `ip` and `iptables` (installed by `tests/infra/install-tools.sh`); without them
//! the test says SKIPPED loudly and passes.

mod netns;
mod proxy;

use anyhow::{bail, ensure, Context, Result};
use netns::{usable_with, Netns, PROXY_UID};
use proxy::Proc;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pod: a namespace with a veth pair of its own (10.0.0.2 and 10.0.0.3), the Service range
/// routed out of it, Istio's outbound capture and a hosts file naming `reviews`.
fn capture_pod(name: &str) -> Result<Netns> {
    let ns = Netns::create(name)?;
    for cmd in [
        "link add v0 type veth peer name v1",
        "addr add 10.0.0.2/24 dev v0",
        "addr add 10.0.0.3/24 dev v1",
        "link set v0 up",
        "link set v1 up",
        "route add 10.96.0.0/16 dev v0",
    ] {
        ns.ip(cmd)?;
    }
    // Istio's init container: outbound TCP to the proxy, except loopback and its own UID.
    ns.iptables(&format!(
        "-t nat -A OUTPUT -p tcp ! -d 127.0.0.1/32 -m owner ! --uid-owner {PROXY_UID} -j REDIRECT --to-ports 15001"
    ))?;
    ns.hosts("10.96.10.3 reviews reviews.default.svc.cluster.local\n")?;
    Ok(ns)
}

const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
";

const REGISTRY: &str = "\
services:
- hostname: reviews.default.svc.cluster.local
  namespace: default
  ports: [{name: http, port: 9080}]
  addresses: [10.96.10.3]
  endpoints:
  - {address: 10.0.0.2, ports: {http: 9081}, labels: {app: reviews, version: v1}, workload: reviews-v1-0}
  - {address: 10.0.0.2, ports: {http: 9082}, labels: {app: reviews, version: v2}, workload: reviews-v2-0}
";

/// A static file server in the namespace whose index says `who`.
fn web(ns: &Netns, dir: &Path, who: &str, bind: &str, port: u16) -> Result<Proc> {
    let root = dir.join(who);
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("index.html"), who)?;
    let mut cmd = ns.command("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        bind,
        "--directory",
    ])
    .arg(&root);
    Proc::spawn(who, &mut cmd, dir)
}

fn curl(ns: &Netns, url: &str, headers: &[&str]) -> Result<String> {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "--max-time", "5", url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn iptables_capture_routes_plain_curl_through_the_sidecar() -> Result<()> {
    if let Some(missing) = usable_with(&["curl", "python3"]) {
        eprintln!(
            "!!!!! SKIPPED iptables_capture_routes_plain_curl_through_the_sidecar: {missing} !!!!!"
        );
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("capstan-capture")
        .tempdir()?;
    let dir = tmp.path();
    // The proxy runs as UID 1337: it must read its bootstrap and log into the directory.
    netns::sh(&["chmod", "0777", &dir.display().to_string()])?;
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("config/reviews.yaml"), MESH)?;
    std::fs::write(dir.join("registry.yaml"), REGISTRY)?;
    let ns = capture_pod(&format!("capstan-cap-{}", std::process::id()))?;

    let _v1 = web(&ns, dir, "reviews-v1", "10.0.0.2", 9081)?;
    let _v2 = web(&ns, dir, "reviews-v2", "10.0.0.2", 9082)?;
    let _outside = web(&ns, dir, "not-in-mesh", "10.0.0.3", 8000)?;

    // The servers answer (asked as the proxy's UID, which the capture leaves alone).
    for (proc, url) in [
        (&_v1, "http://10.0.0.2:9081/"),
        (&_v2, "http://10.0.0.2:9082/"),
        (&_outside, "http://10.0.0.3:8000/"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = ns
                .command("setpriv")
                .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
                .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
                .output()?;
            if out.stdout == b"200" {
                break;
            }
            if Instant::now() > deadline {
                bail!("{url} not answering within 10 s: {}", proc.tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let bin = env!("CARGO_BIN_EXE_capstan");
    let mut cmd = ns.command(bin);
    cmd.arg("discovery")
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--registry-file")
        .arg(dir.join("registry.yaml"))
        .args(["--xds-addr", "127.0.0.1:15010"])
        .args(["--debug-addr", "127.0.0.1:8080"])
        .args(["--monitoring-addr", "127.0.0.1:15014"]);
    let discovery = Proc::spawn("discovery", &mut cmd, dir)?;

    let bootstrap = proxy::bootstrap_json(
        "sidecar~10.0.0.2~productpage-v1-0.default~default.svc.cluster.local",
        &[("app", "productpage"), ("version", "v1")],
        15010,
        15000,
        true,
    );
    let boot = dir.join("bootstrap.json");
    std::fs::write(&boot, serde_json::to_string(&bootstrap)?)?;
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
        bin,
        "proxy",
    ])
    .arg("--bootstrap")
    .arg(&boot);
    let sidecar = Proc::spawn("sidecar", &mut cmd, dir)?;

    // Ready once the sidecar's admin says so (asked from inside the namespace).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ns
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:15000/ready",
            ])
            .output()?;
        if out.stdout == b"200" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "sidecar not ready within 30 s\n--- sidecar:\n{}\n--- discovery:\n{}",
                sidecar.tail(),
                discovery.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let report = |e: anyhow::Error| {
        e.context(format!(
            "--- sidecar log:\n{}\n--- discovery log:\n{}",
            sidecar.tail(),
            discovery.tail()
        ))
    };
    // An unmodified client calling the service by name: captured, routed by the VirtualService.
    let body = curl(&ns, "http://reviews:9080/", &[]).map_err(report)?;
    ensure!(
        body == "reviews-v1",
        "plain curl reached {body:?}, want reviews-v1"
    );
    let body = curl(&ns, "http://reviews:9080/", &["end-user: jason"]).map_err(report)?;
    ensure!(
        body == "reviews-v2",
        "jason's curl reached {body:?}, want reviews-v2"
    );
    // Not a mesh service: PassthroughCluster to the original destination.
    let body = curl(&ns, "http://10.0.0.3:8000/", &[]).map_err(report)?;
    ensure!(body == "not-in-mesh", "passthrough reached {body:?}");
    // And the sidecar counted what it routed.
    let stats = String::from_utf8(
        ns.command("curl")
            .args(["-s", "http://127.0.0.1:15000/stats"])
            .output()?
            .stdout,
    )?;
    let routed = stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_total: ",
            )
        })
        .context("no upstream_rq_total for the v1 cluster in /stats")?;
    ensure!(
        routed.trim() == "1",
        "v1 cluster counted {routed} requests, want 1"
    );
    Ok(())
}
