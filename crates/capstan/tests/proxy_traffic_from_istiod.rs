//! `capstan proxy` routes real traffic by the xDS istiod generates, as Envoy would: istiod
//! (`pilot-discovery` at the pinned Istio version) runs against a private kube-apiserver, and
//! two real `capstan proxy` processes take their whole configuration from it over Delta ADS on
//! its plaintext port — an ingress gateway (node type `router`) and a sidecar with
//! `INTERCEPTION_MODE: NONE` (no iptables: istiod binds its outbound listeners to
//! `127.0.0.1:<service port>`, and generates no `virtualOutbound`/`virtualInbound`).
//!
//! The mesh is written as a user would: a Kubernetes Service `reviews` whose endpoints are two
//! WorkloadEntries (`version: v1` / `v2`) on 127.0.0.1, each naming its backend's port
//! (`ports: {http: N}`) — Kubernetes refuses loopback addresses in EndpointSlices, and a
//! Service selecting WorkloadEntries is how Istio meshes VMs; the ingress gateway's Service
//! maps its port to the target port istiod binds; a Gateway; a DestinationRule with subsets and
//! `tls.mode: DISABLE` (there is no CA here, so no ISTIO_MUTUAL); a Sidecar scoping the client
//! namespace's egress to its own services; a VirtualService bound to the gateway and the mesh
//! that sends `end-user: jason` to v2 and splits the rest 80/20. Both proxies must route the
//! header exactly, split within ±7 % over 400 requests, and converge on 0/100 after the
//! VirtualService is edited through the API server.

mod proxy;

use anyhow::{bail, ensure, Context, Result};
use capstan_e2e::istiod::Istiod;
use capstan_e2e::private_kube::PrivateKube;
use proxy::{backend, free_port, Client, Proxy};
use std::time::{Duration, Instant};

/// The namespace of the application (the Service, its workloads and the client sidecar).
const NS: &str = "bookinfo";
/// The host the VirtualService routes, as the gateway and the sidecar are asked for it.
const HOST: &str = "reviews.bookinfo.svc.cluster.local";
/// Requests of each weighted sample.
const SAMPLE: usize = 400;
/// How far the share of v1 may stray from the weight (in percentage points).
const TOLERANCE: f64 = 7.0;

/// The ports chosen for this run.
struct Ports {
    /// `reviews`' Service port: the sidecar's outbound listener, on 127.0.0.1.
    reviews: u16,
    /// The ingress gateway Service's port, which the Gateway's server names.
    gateway_service: u16,
    /// Its target port: where istiod has the gateway listen.
    gateway_target: u16,
}

/// Services, WorkloadEntries, the Gateway, DestinationRule and Sidecar (everything but the
/// VirtualService).
fn mesh_yaml(ports: &Ports, v1: u16, v2: u16) -> String {
    let Ports {
        reviews,
        gateway_service,
        gateway_target,
    } = ports;
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system, labels: {{app: istio-ingressgateway}}}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: {gateway_service}, targetPort: {gateway_target}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {NS}, labels: {{app: reviews}}}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: {reviews}, targetPort: 9080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: {NS}}}
spec:
  address: 127.0.0.1
  ports: {{http: {v1}}}
  labels: {{app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: {NS}}}
spec:
  address: 127.0.0.1
  ports: {{http: {v2}}}
  labels: {{app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: {NS}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gateway_service}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NS}}}
spec:
  host: reviews
  trafficPolicy:
    tls: {{mode: DISABLE}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {NS}}}
spec:
  egress:
  - hosts: ['./*']
"#
    )
}

/// The VirtualService: `end-user: jason` to v2, the rest split `v1`/`v2` by weight.
fn virtual_service(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {NS}}}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway, mesh]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: reviews, subset: v2}}
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"#
    )
}

/// A bootstrap as pilot-agent writes it, with the node metadata istiod reads.
fn bootstrap(
    id: &str,
    cluster: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    interception: &str,
    xds_port: u16,
) -> serde_json::Value {
    let mut b = proxy::bootstrap_json(id, labels, xds_port, free_port(), true);
    b["node"]["cluster"] = cluster.into();
    let metadata = &mut b["node"]["metadata"];
    metadata["NAMESPACE"] = namespace.into();
    metadata["CLUSTER_ID"] = "Kubernetes".into();
    metadata["INTERCEPTION_MODE"] = interception.into();
    b
}

/// One of the two proxies and the address traffic enters it by.
struct Entry {
    name: &'static str,
    proxy: Proxy,
    url: String,
    /// The `Host` header the client sends.
    host: String,
    client: Client,
}

/// How a sample of requests was answered.
#[derive(Debug, Default)]
struct Split {
    v1: usize,
    v2: usize,
    /// Requests with another status, another backend, or no answer.
    failed: usize,
    /// The first few of those, described.
    examples: Vec<String>,
}

impl Entry {
    async fn send(&self, headers: &[(&str, &str)]) -> Result<proxy::Reply> {
        let mut all = vec![("host", self.host.as_str())];
        all.extend_from_slice(headers);
        proxy::send(&self.client, &self.url, &all).await
    }

    /// Sends `n` requests with `headers`, one after the other on a keep-alive connection; stops
    /// at the tenth failure (each may take the client's 20 s timeout).
    async fn split(&self, n: usize, headers: &[(&str, &str)]) -> Split {
        let mut s = Split::default();
        for _ in 0..n {
            if s.failed >= 10 {
                break;
            }
            match self.send(headers).await {
                Ok(r) if r.status == 200 && r.backend() == Some("v1") => s.v1 += 1,
                Ok(r) if r.status == 200 && r.backend() == Some("v2") => s.v2 += 1,
                other => {
                    s.failed += 1;
                    if s.examples.len() < 3 {
                        s.examples.push(format!("{other:?}"));
                    }
                }
            }
        }
        s
    }

    /// Waits until a request reaches a backend (istiod's routes and endpoints have arrived).
    async fn wait_routing(&self, within: Duration, istiod: &Istiod) -> Result<()> {
        let deadline = Instant::now() + within;
        for _ in 0..(within.as_millis() / 100 + 1) {
            let r = self.send(&[]).await;
            if matches!(&r, Ok(r) if r.status == 200 && r.backend().is_some()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no route to a backend within {within:?}: {r:?}\n{}",
                    self.name,
                    self.logs(istiod)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{}: no route to a backend within {within:?}", self.name)
    }

    fn logs(&self, istiod: &Istiod) -> String {
        format!(
            "--- {}:\n{}\n--- istiod:\n{}",
            self.name,
            self.proxy.proc.tail(),
            istiod.tail()
        )
    }
}

/// Requires `s` to be `v1_weight` % v1 within [`TOLERANCE`], with no failure.
fn check_weights(entry: &Entry, s: &Split, v1_weight: f64, istiod: &Istiod) -> Result<()> {
    ensure!(
        s.failed == 0,
        "{}: {} requests failed (the sample stops at 10), e.g. {:?}\n{}",
        entry.name,
        s.failed,
        s.examples,
        entry.logs(istiod)
    );
    let share = 100.0 * s.v1 as f64 / (s.v1 + s.v2) as f64;
    ensure!(
        (share - v1_weight).abs() <= TOLERANCE,
        "{}: v1 got {share:.1} % ({} v1, {} v2), want {v1_weight} ± {TOLERANCE} %",
        entry.name,
        s.v1,
        s.v2
    );
    eprintln!(
        "{}: {} v1 / {} v2 ({share:.1} % v1, weight {v1_weight})",
        entry.name, s.v1, s.v2
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstan_proxy_routes_traffic_by_istiods_xds() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("proxy-istiod-traffic")? else {
        return Ok(());
    };
    let started = Instant::now();
    let kube = PrivateKube::start("proxy-istiod-traffic", &[])?;
    // istiod reads the kinds present when it starts: have every one used here established.
    kube.install_istio_crds(&[
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
        "sidecars.networking.istio.io",
        "workloadentries.networking.istio.io",
    ])?;
    let istiod = Istiod::start(&kube, &ctx.scratch)?;
    let (v1, v2) = (backend("v1").await?, backend("v2").await?);
    let ports = Ports {
        reviews: free_port(),
        gateway_service: free_port(),
        gateway_target: free_port(),
    };
    kube.apply(&mesh_yaml(&ports, v1.port, v2.port))?;
    kube.apply(&virtual_service(80, 20))?;

    let gateway = proxy::proxy(
        &ctx.scratch,
        "gateway",
        &bootstrap(
            "router~10.10.0.9~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
            "istio-ingressgateway.istio-system",
            "istio-system",
            &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
            "REDIRECT",
            istiod.grpc_port,
        ),
    )?;
    let sidecar = proxy::proxy(
        &ctx.scratch,
        "sidecar",
        &bootstrap(
            &format!("sidecar~10.10.0.3~productpage-v1-0.{NS}~{NS}.svc.cluster.local"),
            &format!("productpage.{NS}"),
            NS,
            &[("app", "productpage"), ("version", "v1")],
            "NONE",
            istiod.grpc_port,
        ),
    )?;
    let entries = [
        Entry {
            name: "gateway",
            proxy: gateway,
            url: format!("http://127.0.0.1:{}/", ports.gateway_target),
            host: HOST.to_string(),
            client: proxy::client(false),
        },
        Entry {
            name: "sidecar",
            proxy: sidecar,
            url: format!("http://127.0.0.1:{}/", ports.reviews),
            host: format!("reviews:{}", ports.reviews),
            client: proxy::client(false),
        },
    ];
    for e in &entries {
        e.proxy
            .ready(Duration::from_secs(30))
            .await
            .with_context(|| e.logs(&istiod))?;
        e.wait_routing(Duration::from_secs(20), &istiod).await?;
    }
    eprintln!("routing through both proxies after {:?}", started.elapsed());

    for e in &entries {
        // Header routing is exact.
        let jason = e.split(50, &[("end-user", "jason")]).await;
        ensure!(
            jason.v2 == 50,
            "{}: end-user: jason must always reach v2: {jason:?}\n{}",
            e.name,
            e.logs(&istiod)
        );
        let s = e.split(SAMPLE, &[("end-user", "mike")]).await;
        check_weights(e, &s, 80.0, &istiod)?;
    }

    // Shift everything to v2 through the API server; both proxies must follow within 20 s
    // (seen as 60 requests in a row on v2), and then send nothing to v1.
    kube.apply(&virtual_service(0, 100))?;
    let edited = Instant::now();
    let within = Duration::from_secs(20);
    for e in &entries {
        let mut on_v2 = 0;
        for _ in 0..400 {
            let s = e.split(20, &[]).await;
            on_v2 = if s.v2 == 20 { on_v2 + 20 } else { 0 };
            if on_v2 >= 60 || edited.elapsed() > within {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(
            on_v2 >= 60,
            "{}: still not 0/100 {within:?} after the VirtualService changed\n{}",
            e.name,
            e.logs(&istiod)
        );
        eprintln!("{}: 0/100 after {:?}", e.name, edited.elapsed());
    }
    for e in &entries {
        let s = e.split(SAMPLE, &[]).await;
        ensure!(
            s.v1 == 0 && s.failed == 0,
            "{}: after 0/100, {} to v1 and {} failed of {SAMPLE}: {:?}",
            e.name,
            s.v1,
            s.failed,
            s.examples
        );
        eprintln!("{}: {} v2 of {SAMPLE} after 0/100", e.name, s.v2);
        // Nothing istiod sent was refused along the way.
        let stats = e.proxy.admin("/stats").await?;
        ensure!(
            stats.lines().any(|l| l == "xds.update_rejected: 0"),
            "{}: xDS responses from istiod NACKed (see xds.update_rejected):\n{stats}\n{}",
            e.name,
            e.logs(&istiod)
        );
    }
    eprintln!("done after {:?}", started.elapsed());
    Ok(())
}
