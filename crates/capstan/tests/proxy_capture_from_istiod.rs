//! Captured sidecars under istiod, with istiod's CA: the whole Istio data path with istiod as
//! the only control plane. istiod (`pilot-discovery` at the pinned Istio version, its CA on)
//! runs against a private kube-apiserver; two workloads each live in their own network
//! namespace with Istio's iptables capture (`capstan proxy-init`, the rules of
//! `istio-iptables`) and a `capstan proxy` sidecar (UID 1337) that, like pilot-agent:
//!
//! - trusts the root istiod published in the namespace's `istio-ca-root-cert` ConfigMap,
//! - authenticates with a ServiceAccount token minted through the API server (TokenRequest,
//!   audience `istio-ca`), which istiod checks by TokenReview,
//! - gets its workload certificate from istiod's CA and its configuration from istiod's TLS
//!   xDS port (`--secureGRPCAddr`, 15012 in a cluster; reached from inside each namespace on
//!   127.0.0.1:15012 through a relay to the host's loopback).
//!
//! The workloads are Pods whose `status.podIP` is set through the status subresource, and
//! the Service `b`'s EndpointSlice names pod `b-0` (no controller-manager runs here). An
//! unmodified hyper client in namespace A calls `b`'s VIP in HTTP/1.1 (port `http`) and in
//! HTTP/2 with prior knowledge (port `http2`): its connections are captured to sidecar A's
//! 15001, sent with istiod's auto mTLS to B's pod, captured there to sidecar B's 15006 and
//! delivered to B's backend. Under a STRICT PeerAuthentication the backend must see
//! `x-forwarded-client-cert` naming B's identity (`By=`) and A's (`URI=`), both issued by
//! istiod, while a client without a sidecar (namespace C, plain text straight to B's pod IP,
//! answered before STRICT) is refused.
//!
//! Topology: A (10.0.1.2) —veth— B (10.0.1.3, 10.0.2.3) —veth— C (10.0.2.4, routing
//! 10.0.1.0/24 through B). Namespace names carry the test's pid, so this runs alongside the
//! other capture tests. Needs root, `ip`, `iptables`, `iptables-restore`, `setpriv`; without
//! them it says SKIPPED loudly and passes.

mod netns;
mod proxy;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use capstan_e2e::istiod::Istiod;
use capstan_e2e::private_kube::PrivateKube;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use netns::Netns;
use proxy::{Proc, Reply};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The application namespace.
const NS: &str = "shop";
const A_IP: &str = "10.0.1.2";
const B_IP: &str = "10.0.1.3";
/// B's address on its link to C.
const B_IP_C: &str = "10.0.2.3";
const C_IP: &str = "10.0.2.4";
/// `b`'s ClusterIP (the private API server's service range is 10.97.0.0/16).
const VIP: &str = "10.97.20.10";
/// B's backend ports: the targets of `b`'s ports `http` (80) and `http2` (81).
const B_HTTP: u16 = 8080;
const B_HTTP2: u16 = 8081;
/// Where each sidecar reaches istiod's TLS port (relayed to the host's loopback).
const ISTIOD_IN_POD: &str = "127.0.0.1:15012";
const A_ID: &str = "spiffe://cluster.local/ns/shop/sa/a";
const B_ID: &str = "spiffe://cluster.local/ns/shop/sa/b";
const HOST: &str = "b.shop.svc.cluster.local";

/// The workloads as Kubernetes holds them: ServiceAccounts, Pods (their IPs set afterwards
/// through the status subresource), `b`'s Service and its EndpointSlice.
fn workloads_yaml() -> String {
    let pod = |name: &str, app: &str| {
        format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {app}, namespace: {NS}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NS}
  labels: {{app: {app}, security.istio.io/tlsMode: istio, service.istio.io/canonical-name: {app}}}
spec:
  serviceAccountName: {app}
  automountServiceAccountToken: false
  containers: [{{name: app, image: example.invalid/{app}}}]
"#
        )
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
{}---
{}---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: {NS}}}
spec:
  clusterIP: {VIP}
  selector: {{app: b}}
  ports:
  - {{name: http, port: 80, targetPort: {B_HTTP}}}
  - {{name: http2, port: 81, targetPort: {B_HTTP2}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: b-0
  namespace: {NS}
  labels: {{kubernetes.io/service-name: b, endpointslice.kubernetes.io/managed-by: capstan-e2e}}
addressType: IPv4
ports:
- {{name: http, port: {B_HTTP}, protocol: TCP}}
- {{name: http2, port: {B_HTTP2}, protocol: TCP}}
endpoints:
- addresses: [{B_IP}]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: b-0, namespace: {NS}}}
"#,
        pod("a-0", "a"),
        pod("b-0", "b")
    )
}

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
";

/// Marks pod `name` running and ready at `ip`, as the kubelet would.
fn set_pod_ip(kube: &PrivateKube, name: &str, ip: &str) -> Result<()> {
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    kube.kubectl(&[
        "-n",
        NS,
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    Ok(())
}

/// The root istiod copies into the namespace's `istio-ca-root-cert` ConfigMap (its namespace
/// controller runs once istiod holds its leader lease), waited for within `within`.
fn istiod_root(kube: &PrivateKube, istiod: &Istiod, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let pem = kube
            .kubectl(&[
                "-n",
                NS,
                "get",
                "configmap",
                "istio-ca-root-cert",
                "--ignore-not-found",
                "-o",
                "jsonpath={.data.root-cert\\.pem}",
            ])
            .unwrap_or_default();
        if pem.contains("BEGIN CERTIFICATE") {
            return Ok(pem);
        }
        if Instant::now() > deadline {
            bail!(
                "no istio-ca-root-cert in {NS} within {within:?}; istiod:\n{}",
                istiod.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The three namespaces, wired and captured. Field order drops C, then B, then A.
struct Pods {
    c: Netns,
    b: Netns,
    a: Netns,
}

impl Pods {
    fn create() -> Result<Pods> {
        let pid = std::process::id();
        let a = Netns::create(&format!("capstan-ia{pid}"))?;
        let b = Netns::create(&format!("capstan-ib{pid}"))?;
        let c = Netns::create(&format!("capstan-ic{pid}"))?;
        a.ip("link add v0 type veth peer name v1")?;
        a.ip(&format!("link set v1 netns {}", b.name))?;
        a.ip(&format!("addr add {A_IP}/24 dev v0"))?;
        a.ip("link set v0 up")?;
        // Service VIPs leave the pod like a cluster network's (the capture acts first).
        a.ip("route add 10.97.0.0/16 dev v0")?;
        b.ip(&format!("addr add {B_IP}/24 dev v1"))?;
        b.ip("link set v1 up")?;
        b.ip("link add w0 type veth peer name w1")?;
        b.ip(&format!("link set w1 netns {}", c.name))?;
        b.ip(&format!("addr add {B_IP_C}/24 dev w0"))?;
        b.ip("link set w0 up")?;
        c.ip(&format!("addr add {C_IP}/24 dev w1"))?;
        c.ip("link set w1 up")?;
        c.ip(&format!("route add 10.0.1.0/24 via {B_IP_C}"))?;
        for pod in [&a, &b] {
            proxy_init(pod)?;
        }
        Ok(Pods { c, b, a })
    }
}

/// Istio's capture as the injected init container installs it by default.
fn proxy_init(pod: &Netns) -> Result<()> {
    let out = pod
        .command(env!("CARGO_BIN_EXE_capstan"))
        .arg("proxy-init")
        .args(["-p", "15001", "-z", "15006", "-u", netns::PROXY_UID])
        .args(["-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*"])
        .args(["-d", "15090,15021,15020"])
        .output()?;
    ensure!(
        out.status.success(),
        "proxy-init in {}: {}",
        pod.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One GET from inside `ns` to `addr` on a new connection, as an application would send it:
/// HTTP/1.1 with `Host: authority`, or HTTP/2 with prior knowledge and that `:authority`.
async fn get(ns: &Netns, addr: SocketAddr, authority: &str, path: &str, h2: bool) -> Result<Reply> {
    let exchange = async {
        let stream = ns.connect(addr, Duration::from_secs(5)).await?;
        let io = TokioIo::new(stream);
        let response = if h2 {
            let req = hyper::Request::get(format!("http://{authority}{path}"))
                .body(Full::new(Bytes::new()))?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        } else {
            let req = hyper::Request::get(path)
                .header(http::header::HOST, authority)
                .body(Full::new(Bytes::new()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {addr}{path} from {}: no answer within 10 s", ns.name))?
}

/// A sidecar in `pod`: a bootstrap like pilot-agent's for pod `<app>-0` in [`NS`], its token
/// and the mounted root in `dir`, run as UID 1337.
fn sidecar(pod: &Netns, dir: &Path, app: &str, ip: &str) -> Result<Proc> {
    let name = format!("{app}-0");
    let mut boot = proxy::bootstrap_json(
        &format!("sidecar~{ip}~{name}.{NS}~{NS}.svc.cluster.local"),
        &[
            ("app", app),
            ("security.istio.io/tlsMode", "istio"),
            ("service.istio.io/canonical-name", app),
        ],
        15012,
        15000,
        true,
    );
    boot["node"]["cluster"] = format!("{app}.{NS}").into();
    let metadata = &mut boot["node"]["metadata"];
    for (k, v) in [
        ("NAMESPACE", NS),
        ("NAME", name.as_str()),
        ("SERVICE_ACCOUNT", app),
        ("CLUSTER_ID", "Kubernetes"),
        ("INTERCEPTION_MODE", "REDIRECT"),
        ("INSTANCE_IPS", ip),
    ] {
        metadata[k] = v.into();
    }
    let file = |f: &str| dir.join(format!("{app}-{f}")).display().to_string();
    std::fs::write(file("bootstrap.json"), serde_json::to_string_pretty(&boot)?)?;
    let bin = env!("CARGO_BIN_EXE_capstan");
    let mut cmd = pod.as_proxy(bin);
    cmd.arg("proxy")
        .args(["--bootstrap", &file("bootstrap.json")])
        .args(["--ca-address", ISTIOD_IN_POD])
        .args([
            "--ca-root-cert",
            &dir.join("root-cert.pem").display().to_string(),
        ])
        .args(["--ca-token-file", &file("token")])
        .arg("--xds-tls")
        .args(["--drain-time", "1s"])
        .env("RUST_LOG", "info,capstan_proxy=debug");
    Proc::spawn(&format!("sidecar-{app}"), &mut cmd, dir)
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("a literal address"), port)
}

/// Every log that explains a failure.
struct Logs<'a> {
    a: &'a Proc,
    b: &'a Proc,
    istiod: &'a Istiod,
}

impl Logs<'_> {
    fn all(&self) -> String {
        format!(
            "--- sidecar a:\n{}\n--- sidecar b:\n{}\n--- istiod:\n{}",
            self.a.tail(),
            self.b.tail(),
            self.istiod.tail()
        )
    }
}

/// Retries `probe` (bounded by `within`) until it returns `Ok(Some)`; the last miss is
/// reported.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A counter from the sidecar's `/stats` in `pod` (0 when absent).
async fn stat(pod: &Netns, name: &str) -> Result<u64> {
    let stats = get(pod, addr("127.0.0.1", 15000), "127.0.0.1", "/stats", false)
        .await?
        .body;
    Ok(proxy::stat_in(&stats, name))
}

/// What B's backend reported for a request: (backend, HTTP version it received, XFCC).
fn seen(r: &Reply) -> Result<(String, String, String)> {
    let j = r.json()?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Ok((
        s(&j["backend"]),
        s(&j["version"]),
        s(&j["headers"]["x-forwarded-client-cert"]),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_sidecars_talk_mtls_with_istiods_certificates() -> Result<()> {
    if let Some(missing) = netns::usable() {
        eprintln!(
            "\n!!!!! SKIPPED captured_sidecars_talk_mtls_with_istiods_certificates: {missing} !!!!!\n"
        );
        return Ok(());
    }
    let Some(ctx) = capstan_e2e::context("proxy-capture-istiod")? else {
        return Ok(());
    };
    let started = Instant::now();
    let kube = PrivateKube::start("proxy-capture-istiod", &[])?;
    kube.install_istio_crds(&["peerauthentications.security.istio.io"])?;
    let istiod = Istiod::start_with_ca(&kube, &ctx.scratch)?;
    let secure = istiod
        .secure_grpc_port
        .context("istiod started with its CA has a TLS port")?;
    kube.apply(&workloads_yaml())?;
    set_pod_ip(&kube, "a-0", A_IP)?;
    set_pod_ip(&kube, "b-0", B_IP)?;

    // What a pod mounts: the root istiod published, and a token for its ServiceAccount.
    // The proxies run as UID 1337: their files live in a directory it can read.
    let tmp = tempfile::Builder::new()
        .prefix("capstan-capture-istiod")
        .tempdir()?;
    let dir = tmp.path();
    netns::sh(&["chmod", "0755", &dir.display().to_string()])?;
    let root = istiod_root(&kube, &istiod, Duration::from_secs(60))?;
    std::fs::write(dir.join("root-cert.pem"), &root)?;
    for sa in ["a", "b"] {
        let token = kube.kubectl(&[
            "-n",
            NS,
            "create",
            "token",
            sa,
            "--audience",
            "istio-ca",
            "--duration",
            "1h",
        ])?;
        std::fs::write(dir.join(format!("{sa}-token")), token.trim())?;
    }
    eprintln!(
        "istiod and the workloads ready after {:?}",
        started.elapsed()
    );

    let pods = Pods::create()?;
    let istiod_addr = addr("127.0.0.1", secure);
    let in_pod: SocketAddr = ISTIOD_IN_POD.parse()?;
    let relays = [
        pods.a.relay(in_pod, istiod_addr)?,
        pods.b.relay(in_pod, istiod_addr)?,
    ];
    let http = proxy::backend_on("b-http", pods.b.listen(addr("0.0.0.0", B_HTTP))?)?;
    let http2 = proxy::backend_on("b-http2", pods.b.listen(addr("0.0.0.0", B_HTTP2))?)?;

    let sidecar_a = sidecar(&pods.a, dir, "a", A_IP)?;
    let sidecar_b = sidecar(&pods.b, dir, "b", B_IP)?;
    let logs = Logs {
        a: &sidecar_a,
        b: &sidecar_b,
        istiod: &istiod,
    };
    let admin = addr("127.0.0.1", 15000);
    for pod in [&pods.a, &pods.b] {
        eventually(
            &format!("sidecar in {} ready", pod.name),
            Duration::from_secs(45),
            || async move {
                let r = get(pod, admin, "127.0.0.1", "/ready", false).await?;
                Ok((r.status == 200).then_some(()))
            },
        )
        .await
        .with_context(|| logs.all())?;
    }
    eprintln!("both sidecars ready after {:?}", started.elapsed());

    // Before STRICT (PERMISSIVE): plain text from C reaches the backend through B's capture.
    let plain = addr(B_IP, B_HTTP);
    let authority_http = format!("{HOST}:80");
    let r = eventually(
        "plain text from C before STRICT",
        Duration::from_secs(30),
        || {
            let (c, authority) = (&pods.c, &authority_http);
            async move {
                let r = get(c, plain, authority, "/plain", false).await?;
                Ok((r.status == 200).then_some(r))
            }
        },
    )
    .await
    .with_context(|| logs.all())?;
    ensure!(
        seen(&r)?.0 == "b-http",
        "plain text from C answered by {:?}",
        r.body
    );
    // ... through the sidecar, not around it.
    let inbound = stat(&pods.b, "cluster.inbound|8080||.upstream_rq_total").await?;
    ensure!(
        inbound >= 1,
        "B's inbound|8080|| counted no request: the call went around the sidecar"
    );

    kube.apply(STRICT)?;
    eventually(
        "STRICT refusing plain text from C",
        Duration::from_secs(30),
        || {
            let (c, authority) = (&pods.c, &authority_http);
            async move {
                Ok(get(c, plain, authority, "/plain", false)
                    .await
                    .is_err()
                    .then_some(()))
            }
        },
    )
    .await
    .with_context(|| logs.all())?;
    eprintln!("STRICT in force after {:?}", started.elapsed());

    // The application in A calls b's VIP in both protocols: captured, mutual TLS between the
    // sidecars, delivered to B's backend on the same protocol's port.
    let cases = [
        ("HTTP/1.1", 80, false, "b-http", "HTTP/1.1"),
        ("HTTP/2", 81, true, "b-http2", "HTTP/2.0"),
    ];
    for (name, port, h2, backend, version) in cases {
        let vip = addr(VIP, port);
        let authority = format!("{HOST}:{port}");
        let first = eventually(
            &format!("{name} from A to b"),
            Duration::from_secs(30),
            || {
                let (a, authority) = (&pods.a, &authority);
                async move {
                    let r = get(a, vip, authority, "/mesh", h2).await?;
                    ensure!(r.status == 200, "{} {:?} {}", r.status, r.headers, r.body);
                    Ok(Some(r))
                }
            },
        )
        .await
        .with_context(|| logs.all())?;
        let check = |i: usize, r: &Reply| -> Result<()> {
            ensure!(r.status == 200, "{name} #{i}: {} {}", r.status, r.body);
            let (who, got_version, xfcc) = seen(r)?;
            ensure!(
                who == backend && got_version == version,
                "{name} #{i}: reached {who} over {got_version}, want {backend} over {version}"
            );
            // XFCC as istiod configures the inbound HCM (APPEND_FORWARD, subject/URI/DNS):
            // B's own identity and the client's, both from istiod's certificates.
            ensure!(
                xfcc.contains(&format!("By={B_ID}")) && xfcc.contains(&format!("URI={A_ID}")),
                "{name} #{i}: x-forwarded-client-cert {xfcc:?}, want By={B_ID} and URI={A_ID}"
            );
            Ok(())
        };
        check(0, &first)?;
        eprintln!(
            "{name}: B's backend saw x-forwarded-client-cert {:?}",
            seen(&first)?.2
        );
        for i in 1..10 {
            let r = get(&pods.a, vip, &authority, "/mesh", h2)
                .await
                .with_context(|| logs.all())?;
            check(i, &r)?;
        }
        eprintln!("{name}: 10 requests A -> b over mTLS");
    }
    ensure!(
        http.behaviour
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 11
            && http2
                .behaviour
                .requests
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 10,
        "the backends counted fewer requests than answered"
    );

    // Still refused: no sidecar, no certificate.
    for _ in 0..3 {
        let r = get(&pods.c, plain, &authority_http, "/plain", false).await;
        ensure!(r.is_err(), "plain text from C under STRICT answered: {r:?}");
    }

    // Nothing istiod sent was refused, and istiod issued both certificates.
    for pod in [&pods.a, &pods.b] {
        let stats = get(pod, admin, "127.0.0.1", "/stats", false).await?.body;
        ensure!(
            stats.lines().any(|l| l == "xds.update_rejected: 0"),
            "{}: istiod's xDS NACKed:\n{stats}\n{}",
            pod.name,
            logs.all()
        );
    }
    let metrics = capstan_e2e::curl(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", istiod.monitoring_port),
        None,
        Duration::from_secs(10),
    )?;
    let issued: f64 = metrics
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("citadel_server_success_cert_issuance_count")?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .context("istiod's metrics lack citadel_server_success_cert_issuance_count")?;
    ensure!(
        issued >= 2.0,
        "istiod issued {issued} certificates, want at least 2 (one per sidecar)"
    );

    for relay in relays {
        relay.abort();
    }
    eprintln!("done after {:?}", started.elapsed());
    Ok(())
}
