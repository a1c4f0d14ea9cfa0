//! The Kubernetes registry against a real kube-apiserver (no controllers run there, so the
//! tests write EndpointSlices and pod status themselves). Each test watches only its own
//! namespace on the shared infra; the restart test uses a private etcd + kube-apiserver.

use anyhow::{Context as _, Result};
use capstan_e2e::private_kube::PrivateKube;
use capstan_registry::kubernetes::KubernetesRegistry;
use capstan_registry::{Health, Locality, RegistryEvent, Resolution, ServiceIndex};
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// A running registry with its index and an event subscription.
struct Harness {
    index: Arc<ServiceIndex>,
    events: broadcast::Receiver<Arc<Vec<RegistryEvent>>>,
    task: tokio::task::JoinHandle<()>,
    sync_time: Duration,
    relists: tokio::sync::watch::Receiver<u64>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(client: Client, namespace: Option<&str>) -> Result<Harness> {
    let index = Arc::new(ServiceIndex::new());
    let events = index.subscribe();
    let mut registry = KubernetesRegistry::new("cluster.local");
    if let Some(ns) = namespace {
        registry = registry.with_namespace(ns);
    }
    let mut ready = registry.ready();
    let relists = registry.relists();
    let started = Instant::now();
    let task = tokio::spawn(registry.run(client, index.clone()));
    tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r))
        .await
        .context("registry not synced within 60s")??;
    Ok(Harness {
        index,
        events,
        task,
        sync_time: started.elapsed(),
        relists,
    })
}

impl Harness {
    /// Every event until none arrives for `quiet` (bounded by 30 s), sorted.
    async fn drain(&mut self, quiet: Duration) -> Vec<RegistryEvent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match tokio::time::timeout(quiet, self.events.recv()).await {
                Ok(Ok(batch)) => out.extend(batch.iter().cloned()),
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("lagged by {n}"),
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        out.sort_by_key(|e| format!("{e:?}"));
        out
    }

    /// Waits until `expected` events (any order) have arrived, then for `quiet` more; returns all.
    async fn expect(&mut self, expected: Vec<RegistryEvent>) -> Vec<RegistryEvent> {
        let mut want = expected;
        want.sort_by_key(|e| format!("{e:?}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < want.len() && Instant::now() < deadline {
            if let Ok(Ok(batch)) =
                tokio::time::timeout(Duration::from_millis(200), self.events.recv()).await
            {
                got.extend(batch.iter().cloned());
            }
        }
        got.extend(self.drain(Duration::from_millis(700)).await);
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, want);
        got
    }
}

fn ep_changed(host: &str, port: u16) -> RegistryEvent {
    RegistryEvent::EndpointsChanged(host.to_string(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_endpoints_pods_nodes() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("k8s-registry-basic")? else {
        return Ok(());
    };
    let ns = ctx.namespace.clone();
    let client = client(Path::new(ctx.infra.var("KUBECONFIG")?)).await?;
    let mut h = start(client.clone(), Some(&ns)).await?;
    assert_eq!(h.drain(Duration::from_millis(300)).await, vec![]);

    let nodes: Api<Node> = Api::all(client.clone());
    let node_name = format!("{ns}-node-a");
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": node_name, "labels": {
            "topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z1",
            "topology.istio.io/subzone": "s1"}}})),
        )
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "reviews"}})),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &obj(json!({
        "metadata": {"name": "reviews-1", "labels": {"app": "reviews", "version": "v1",
            "security.istio.io/tlsMode": "istio", "topology.istio.io/network": "net1"}},
        "spec": {"nodeName": node_name, "serviceAccountName": "reviews",
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "example.invalid/app"}]}})),
    )
    .await?;
    // No pod IPs yet: no workload, no event.
    assert_eq!(h.drain(Duration::from_millis(500)).await, vec![]);
    pods.patch_status(
        "reviews-1",
        &PatchParams::default(),
        &Patch::Merge(json!({
        "status": {"podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}, {"ip": "fd00::1"}]}})),
    )
    .await?;
    h.expect(vec![
        RegistryEvent::WorkloadChanged("10.1.0.1".into()),
        RegistryEvent::WorkloadChanged("fd00::1".into()),
    ])
    .await;
    let snap = h.index.snapshot();
    let w = snap
        .workload_by_ip("fd00::1")
        .expect("workload by second IP");
    assert_eq!(w.addresses, vec!["10.1.0.1", "fd00::1"]);
    assert_eq!(w.service_account, "reviews");
    assert_eq!(
        w.locality,
        Locality {
            region: "r1".into(),
            zone: "z1".into(),
            subzone: "s1".into()
        }
    );
    assert_eq!(w.network, "net1");
    assert_eq!(snap.workload_by_ip("10.1.0.1"), Some(w));

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "reviews", "labels": {"app": "reviews"},
            "annotations": {"networking.istio.io/exportTo": ".,istio-system"}},
        "spec": {"selector": {"app": "reviews"}, "ports": [
            {"name": "http-web", "port": 9080, "targetPort": "web"},
            {"name": "rpc", "port": 9090, "appProtocol": "grpc"}]}})),
        )
        .await?;
    let host = format!("reviews.{ns}.svc.cluster.local");
    h.expect(vec![RegistryEvent::ServiceAdded(host.clone())])
        .await;
    let snap = h.index.snapshot();
    let svc = snap.service(&host).expect("service");
    assert_eq!(
        svc.ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect::<Vec<_>>(),
        vec![
            (9080, capstan_registry::Protocol::Http),
            (9090, capstan_registry::Protocol::Grpc)
        ]
    );
    assert_eq!(svc.addresses.len(), 1, "one clusterIP: {:?}", svc.addresses);
    assert_eq!(svc.export_to, vec![".", "istio-system"]);
    assert_eq!(svc.resolution, Resolution::ClientSideLb);

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let slice = json!({
        "metadata": {"name": "reviews-abc", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-web", "port": 8080}, {"name": "rpc", "port": 9090}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": true},
             "targetRef": {"kind": "Pod", "name": "reviews-1", "namespace": ns}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": false}, "zone": "zz"},
            {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "terminating": true}},
            // Accepted by the API server (with a warning) but not a valid IP for us: skipped.
            {"addresses": ["010.001.002.003"]}]});
    slices
        .create(&PostParams::default(), &obj(slice.clone()))
        .await?;
    h.expect(vec![ep_changed(&host, 9080), ep_changed(&host, 9090)])
        .await;
    let snap = h.index.snapshot();
    let eps: Vec<_> = snap.endpoint_set(&host, 9080).expect("endpoints").to_vec();
    assert_eq!(eps.len(), 3, "{eps:#?}");
    let e1 = eps.iter().find(|e| e.address == "10.1.0.1").unwrap();
    assert_eq!(
        (e1.port, e1.service_port, e1.health),
        (8080, 9080, Health::Healthy)
    );
    assert_eq!(
        e1.meta.labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert_eq!(
        (
            e1.meta.service_account.as_str(),
            e1.meta.tls_mode.as_str(),
            e1.meta.network.as_str()
        ),
        ("reviews", "istio", "net1")
    );
    assert_eq!(e1.meta.locality.zone, "z1");
    assert_eq!(e1.meta.workload, "reviews-1");
    let e2 = eps.iter().find(|e| e.address == "10.1.0.2").unwrap();
    assert_eq!(
        (
            e2.health,
            e2.meta.locality.zone.as_str(),
            e2.meta.tls_mode.as_str()
        ),
        (Health::Unhealthy, "zz", "disabled")
    );
    let e3 = eps.iter().find(|e| e.address == "10.1.0.3").unwrap();
    assert_eq!(e3.health, Health::Draining);
    let sub: std::collections::BTreeMap<String, String> =
        [("version".to_string(), "v1".to_string())].into();
    assert_eq!(snap.endpoints(&host, 9090, &sub).count(), 1);

    // No-ops: an irrelevant annotation, a re-applied identical slice.
    services
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"annotations": {"unrelated": "x"}}})),
        )
        .await?;
    slices
        .patch(
            "reviews-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"annotations": {"unrelated": "x"}}})),
        )
        .await?;
    pods.patch(
        "reviews-1",
        &PatchParams::default(),
        &Patch::Merge(json!({
        "metadata": {"annotations": {"unrelated": "x"}}})),
    )
    .await?;
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"labels": {"unrelated": "x"}}})),
        )
        .await?;
    assert_eq!(h.drain(Duration::from_secs(1)).await, vec![]);

    // Node locality change → the pod's endpoints and workload.
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"labels": {"topology.kubernetes.io/zone": "z2"}}})),
        )
        .await?;
    h.expect(vec![
        ep_changed(&host, 9080),
        ep_changed(&host, 9090),
        RegistryEvent::WorkloadChanged("10.1.0.1".into()),
        RegistryEvent::WorkloadChanged("fd00::1".into()),
    ])
    .await;
    let snap = h.index.snapshot();
    assert!(snap
        .endpoint_set(&host, 9080)
        .unwrap()
        .iter()
        .any(|e| e.meta.locality.zone == "z2"));
    // Pod label change → same.
    pods.patch(
        "reviews-1",
        &PatchParams::default(),
        &Patch::Merge(json!({
        "metadata": {"labels": {"version": "v2"}}})),
    )
    .await?;
    h.expect(vec![
        ep_changed(&host, 9080),
        ep_changed(&host, 9090),
        RegistryEvent::WorkloadChanged("10.1.0.1".into()),
        RegistryEvent::WorkloadChanged("fd00::1".into()),
    ])
    .await;
    // Slice change: one endpoint removed.
    let mut smaller = slice.clone();
    smaller["endpoints"].as_array_mut().unwrap().remove(1);
    slices
        .replace("reviews-abc", &PostParams::default(), &{
            let mut s: EndpointSlice = obj(smaller);
            s.metadata.resource_version =
                slices.get("reviews-abc").await?.metadata.resource_version;
            s
        })
        .await?;
    h.expect(vec![ep_changed(&host, 9080), ep_changed(&host, 9090)])
        .await;
    assert_eq!(
        h.index.snapshot().endpoint_set(&host, 9080).unwrap().len(),
        2
    );

    // Deletes.
    slices
        .delete("reviews-abc", &DeleteParams::default())
        .await?;
    h.expect(vec![ep_changed(&host, 9080), ep_changed(&host, 9090)])
        .await;
    services.delete("reviews", &DeleteParams::default()).await?;
    h.expect(vec![RegistryEvent::ServiceRemoved(host.clone())])
        .await;
    pods.delete(
        "reviews-1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    h.expect(vec![
        RegistryEvent::WorkloadChanged("10.1.0.1".into()),
        RegistryEvent::WorkloadChanged("fd00::1".into()),
    ])
    .await;
    nodes.delete(&node_name, &DeleteParams::default()).await?;
    assert_eq!(h.drain(Duration::from_millis(500)).await, vec![]);
    let snap = h.index.snapshot();
    assert_eq!(snap.service_count(), 0);
    assert!(snap.workload_by_ip("10.1.0.1").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_and_external_name() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("k8s-registry-headless")? else {
        return Ok(());
    };
    let ns = ctx.namespace.clone();
    let client = client(Path::new(ctx.infra.var("KUBECONFIG")?)).await?;
    let mut h = start(client.clone(), Some(&ns)).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "tcp-db", "port": 5432}]}})),
        )
        .await?;
    services
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com",
            "ports": [{"name": "https", "port": 443}]}})),
        )
        .await?;
    let db = format!("db.{ns}.svc.cluster.local");
    let ext = format!("ext.{ns}.svc.cluster.local");
    h.expect(vec![
        RegistryEvent::ServiceAdded(db.clone()),
        RegistryEvent::ServiceAdded(ext.clone()),
        ep_changed(&ext, 443),
    ])
    .await;
    let snap = h.index.snapshot();
    let e = snap.service(&ext).unwrap();
    assert_eq!(
        (e.external_name.as_deref(), e.mesh_external, e.resolution),
        (Some("example.com"), true, Resolution::DnsLb)
    );
    let eps = snap.endpoint_set(&ext, 443).unwrap();
    assert_eq!(
        (eps.len(), eps[0].address.as_str(), eps[0].port),
        (1, "example.com", 443)
    );
    let d = snap.service(&db).unwrap();
    assert!(d.addresses.is_empty());
    assert_eq!(d.resolution, Resolution::Passthrough);

    slices
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4", "ports": [{"name": "tcp-db", "port": 5432}],
        "endpoints": [{"addresses": ["10.2.0.1"], "hostname": "db-0"},
                      {"addresses": ["10.2.0.2"], "hostname": "db-1"}]})),
        )
        .await?;
    let d0 = format!("db-0.{db}");
    let d1 = format!("db-1.{db}");
    h.expect(vec![
        RegistryEvent::ServiceAdded(d0.clone()),
        RegistryEvent::ServiceAdded(d1.clone()),
        ep_changed(&db, 5432),
        ep_changed(&d0, 5432),
        ep_changed(&d1, 5432),
    ])
    .await;
    let snap = h.index.snapshot();
    assert_eq!(snap.endpoint_set(&db, 5432).unwrap().len(), 2);
    let e0 = snap.endpoint_set(&d0, 5432).unwrap();
    assert_eq!((e0.len(), e0[0].address.as_str()), (1, "10.2.0.1"));
    // A slice whose only address is invalid does not block a valid sibling slice.
    slices
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "db-bad", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4", "ports": [{"name": "tcp-db", "port": 5432}],
        "endpoints": [{"addresses": ["010.002.000.009"]}]})),
        )
        .await?;
    slices
        .create(
            &PostParams::default(),
            &obj(json!({
        "metadata": {"name": "db-2", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4", "ports": [{"name": "tcp-db", "port": 5432}],
        "endpoints": [{"addresses": ["10.2.0.3"]}]})),
        )
        .await?;
    h.expect(vec![ep_changed(&db, 5432)]).await;
    assert_eq!(h.index.snapshot().endpoint_set(&db, 5432).unwrap().len(), 3);
    // Re-applying the same headless service changes nothing.
    services
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"annotations": {"unrelated": "y"}}})),
        )
        .await?;
    assert_eq!(h.drain(Duration::from_secs(1)).await, vec![]);
    services.delete("db", &DeleteParams::default()).await?;
    h.expect(vec![
        RegistryEvent::ServiceRemoved(db.clone()),
        RegistryEvent::ServiceRemoved(d0.clone()),
        RegistryEvent::ServiceRemoved(d1.clone()),
        ep_changed(&db, 5432),
        ep_changed(&d0, 5432),
        ep_changed(&d1, 5432),
    ])
    .await;
    Ok(())
}

fn b64(s: &str) -> String {
    // Tiny base64 encoder for etcd's JSON gateway keys.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Restart: sync, kill the API server, change etcd behind its back (delete a Service key and
/// compact, so the watchers' resourceVersion is gone → 410 → re-list), restart, and check the
/// re-list emits exactly the real change and nothing else; then a normal change still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_and_watch_expiry() -> Result<()> {
    if capstan_e2e::skip_infra() {
        eprintln!("!!!!! SKIPPED api_server_restart_and_watch_expiry: CAPSTAN_SKIP_INFRA=1 !!!!!");
        return Ok(());
    }
    let kube =
        tokio::task::spawn_blocking(|| PrivateKube::start("k8s-registry-restart", &[])).await??;
    kube.kubectl(&["create", "namespace", "app"])?;
    let mut yaml = String::new();
    for i in 0..20 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: app}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-x, namespace: app, labels: {{kubernetes.io/service-name: s{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [10.3.{i}.1]}}, {{addresses: [10.3.{i}.2]}}]\n"));
    }
    kube.apply(&yaml)?;
    let client = client(&kube.kubeconfig()).await?;
    let mut h = start(client.clone(), None).await?;
    let snap = h.index.snapshot();
    let app_services = snap.services().filter(|s| s.namespace == "app").count();
    assert_eq!(app_services, 20);
    assert_eq!(
        snap.endpoint_set("s7.app.svc.cluster.local", 80)
            .unwrap()
            .len(),
        2
    );
    // The initial sync is one replace: 21 services (with `kubernetes`) and 20 endpoint sets.
    let initial = h.drain(Duration::from_millis(500)).await;
    assert_eq!(initial.len(), 41, "{initial:?}");
    eprintln!("initial sync of 20 services took {:?}", h.sync_time);

    // Restart without changes: the watchers resume or re-list, and nothing is emitted.
    let mut kube = tokio::task::spawn_blocking(move || {
        let mut kube = kube;
        kube.restart_apiserver().map(|_| kube)
    })
    .await??;
    let services: Api<Service> = Api::namespaced(client.clone(), "app");
    // A change after the restart arrives (so the watches are back), and it is the only event.
    services
        .patch(
            "s0",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": {"labels": {"probe": "1"}}})),
        )
        .await?;
    h.expect(vec![RegistryEvent::ServiceChanged(
        "s0.app.svc.cluster.local".into(),
    )])
    .await;
    let after_plain_restart = *h.relists.borrow();

    kube.stop_apiserver();
    // While the API server is down: delete s3 directly in etcd, then compact past it, so the
    // watchers' resourceVersion is gone: 410 Gone → re-list.
    let del = kube.etcd_json(
        "/v3/kv/deleterange",
        &json!({"key": b64("/registry/services/specs/app/s3")}).to_string(),
    )?;
    assert_eq!(del["deleted"].as_str(), Some("1"), "{del}");
    let rev = del["header"]["revision"]
        .as_str()
        .context("revision")?
        .to_string();
    kube.etcd_json(
        "/v3/kv/compaction",
        &json!({"revision": rev, "physical": true}).to_string(),
    )?;
    let kube = tokio::task::spawn_blocking(move || {
        let mut kube = kube;
        kube.restart_apiserver().map(|_| kube)
    })
    .await??;
    let s3 = "s3.app.svc.cluster.local".to_string();
    h.expect(vec![
        RegistryEvent::ServiceRemoved(s3.clone()),
        ep_changed(&s3, 80),
    ])
    .await;
    let after_compaction = *h.relists.borrow();
    eprintln!(
        "re-lists: after plain restart {after_plain_restart}, after compaction {after_compaction}"
    );
    assert!(
        after_compaction > after_plain_restart,
        "the compaction forced a re-list"
    );
    // After the restart, watches work again.
    services
        .patch(
            "s5",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 81}]}})),
        )
        .await?;
    h.expect(vec![RegistryEvent::ServiceChanged(
        "s5.app.svc.cluster.local".into(),
    )])
    .await;
    let snap = h.index.snapshot();
    assert_eq!(snap.services().filter(|s| s.namespace == "app").count(), 19);
    assert_eq!(
        snap.endpoint_set("s7.app.svc.cluster.local", 80)
            .unwrap()
            .len(),
        2
    );
    drop(kube);
    Ok(())
}

/// Measurement: initial sync of 500 Services × 10 endpoints, and one slice update's latency.
/// Prints its numbers with `--nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_initial_sync_500_services() -> Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let Some(ctx) = capstan_e2e::context("k8s-registry-scale")? else {
        return Ok(());
    };
    let ns = ctx.namespace.clone();
    let client = client(Path::new(ctx.infra.var("KUBECONFIG")?)).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let created = Instant::now();
    stream::iter(0..500)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                services.create(&PostParams::default(), &obj(json!({"metadata": {"name": format!("s{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}))).await?;
                let eps: Vec<Value> = (0..10).map(|j| json!({"addresses": [format!("10.{}.{}.{j}", i / 256, i % 256)]})).collect();
                slices.create(&PostParams::default(), &obj(json!({"metadata": {"name": format!("s{i}-x"),
                    "labels": {"kubernetes.io/service-name": format!("s{i}")}}, "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080}], "endpoints": eps}))).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "created 500 services + 500 slices in {:?}",
        created.elapsed()
    );
    let mut h = start(client.clone(), Some(&ns)).await?;
    let snap = h.index.snapshot();
    assert_eq!(snap.service_count(), 500);
    assert_eq!(
        snap.endpoint_set(&format!("s499.{ns}.svc.cluster.local"), 80)
            .unwrap()
            .len(),
        10
    );
    eprintln!(
        "initial sync (list 500 services, 500 slices, pods, nodes + one replace): {:?}",
        h.sync_time
    );
    h.drain(Duration::from_millis(300)).await;
    let t = Instant::now();
    slices
        .patch(
            "s7-x",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["10.200.0.1"]}]})),
        )
        .await?;
    let host = format!("s7.{ns}.svc.cluster.local");
    let mut seen = false;
    while !seen && t.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_secs(1), h.events.recv()).await {
            seen = b.contains(&ep_changed(&host, 80));
        }
    }
    assert!(seen, "the slice update never reached the index");
    eprintln!("slice update → EndpointsChanged: {:?}", t.elapsed());
    Ok(())
}
