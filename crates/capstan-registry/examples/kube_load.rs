//! Load simulator for the Kubernetes registry (issue 4): a private etcd + kube-apiserver, a
//! mesh of `--services` Services with `--endpoints` endpoints each, then EndpointSlice churn.
//! Measures initial sync time, CPU and RSS, and the write → index and watch-event → index
//! latencies; prints a markdown table (progress goes to stderr; nothing is written to disk
//! beyond the private API server's own temporary directory).
//!
//! ```text
//! cargo run --release -p capstan-registry --example kube_load -- \
//!     --services 5000 --endpoints 10 --churn-rate 1000 --churn-secs 20
//! ```
//!
//! The adapter runs on its own thread (a current-thread runtime with its own kube client), so
//! its CPU time is read separately from the load generator's.

#[path = "kube_load/objects.rs"]
mod objects;
#[path = "kube_load/offline.rs"]
mod offline;
#[path = "kube_load/stats.rs"]
mod stats;

use anyhow::{bail, Context as _, Result};
use capstan_e2e::private_kube::PrivateKube;
use capstan_registry::kubernetes::KubernetesRegistry;
use capstan_registry::{RegistryEvent, ServiceIndex};
use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Semaphore};

#[global_allocator]
static ALLOCATOR: stats::Counting = stats::Counting;

const NAMESPACE: &str = "load";
/// Concurrent requests while creating objects.
const CREATE_CONCURRENCY: usize = 32;
/// Concurrent churn patches in flight.
const CHURN_CONCURRENCY: usize = 64;

struct Args {
    services: usize,
    endpoints: usize,
    churn_rate: f64,
    churn_secs: f64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        services: 5000,
        endpoints: 10,
        churn_rate: 1000.0,
        churn_secs: 20.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--services" => args.services = value.parse()?,
            "--endpoints" => args.endpoints = value.parse()?,
            "--churn-rate" => args.churn_rate = value.parse()?,
            "--churn-secs" => args.churn_secs = value.parse()?,
            _ => bail!("unknown flag {flag} (--services, --endpoints, --churn-rate, --churn-secs)"),
        }
    }
    if args.services == 0 || args.endpoints == 0 || args.churn_rate <= 0.0 {
        bail!("--services, --endpoints and --churn-rate must be positive");
    }
    Ok(args)
}

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(290));
    Ok(Client::try_from(config)?)
}

/// Rows of the result table.
struct Report(Vec<(String, String)>);

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        eprintln!("  {what}: {value}");
        self.0.push((what, value));
    }
}

/// Total endpoints of the tracked port over all services in the snapshot.
fn endpoint_count(index: &ServiceIndex, args: &Args) -> (usize, usize) {
    let snap = index.snapshot();
    let endpoints = (0..args.services)
        .filter_map(|i| snap.endpoint_set(&objects::host(i, NAMESPACE), objects::PORT))
        .map(|e| e.len())
        .sum();
    (snap.service_count(), endpoints)
}

/// One churn write whose arrival in the index is awaited.
struct Pending {
    address: String,
    sent: Instant,
    returned: Option<Instant>,
    seen: Option<Instant>,
}

#[derive(Default)]
struct Latencies {
    /// API call returned → index has it (0 when the index was first).
    from_return: Vec<Duration>,
    /// API call sent → index has it.
    from_send: Vec<Duration>,
    /// How often the index had the change before the API call returned.
    index_first: usize,
}

type PendingMap = Arc<Mutex<HashMap<String, Vec<Pending>>>>;

fn settle(p: &Pending, lat: &mut Latencies) {
    let (Some(ret), Some(seen)) = (p.returned, p.seen) else {
        return;
    };
    if seen < ret {
        lat.index_first += 1;
    }
    lat.from_return.push(seen.saturating_duration_since(ret));
    lat.from_send.push(seen - p.sent);
}

/// Marks pending writes of `host` that the index now holds; settles those already returned.
fn check_host(index: &ServiceIndex, pending: &PendingMap, lat: &Mutex<Latencies>, host: &str) {
    let now = Instant::now();
    let snap = index.snapshot();
    let mut map = pending.lock().unwrap();
    let Some(list) = map.get_mut(host) else {
        return;
    };
    let set = snap.endpoint_set(host, objects::PORT);
    let mut lat = lat.lock().unwrap();
    list.retain_mut(|p| {
        if p.seen.is_none() && set.is_some_and(|s| s.iter().any(|e| e.address == p.address)) {
            p.seen = Some(now);
        }
        if p.seen.is_some() && p.returned.is_some() {
            settle(p, &mut lat);
            return false;
        }
        true
    });
    if list.is_empty() {
        map.remove(host);
    }
}

async fn create_mesh(client: &Client, args: &Args, report: &mut Report) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    stream::iter(0..args.services)
        .map(|i| {
            let services = services.clone();
            async move {
                services
                    .create(&PostParams::default(), &objects::service(i))
                    .await
                    .with_context(|| format!("creating Service {i}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let svc_time = started.elapsed();
    let started = Instant::now();
    stream::iter(0..args.services)
        .map(|i| {
            let slices = slices.clone();
            let addresses: Vec<u32> = (0..args.endpoints)
                .map(|j| objects::initial_address(i, j, args.endpoints))
                .collect();
            async move {
                slices
                    .create(&PostParams::default(), &objects::slice(i, &addresses))
                    .await
                    .with_context(|| format!("creating EndpointSlice {i}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let slice_time = started.elapsed();
    report.row(
        format!(
            "create {} Services (concurrency {CREATE_CONCURRENCY})",
            args.services
        ),
        format!(
            "{:.1} s ({:.0}/s)",
            svc_time.as_secs_f64(),
            args.services as f64 / svc_time.as_secs_f64()
        ),
    );
    report.row(
        format!(
            "create {} EndpointSlices × {} endpoints",
            args.services, args.endpoints
        ),
        format!(
            "{:.1} s ({:.0}/s)",
            slice_time.as_secs_f64(),
            args.services as f64 / slice_time.as_secs_f64()
        ),
    );
    Ok(())
}

/// Patches slices at `rate`/s for `secs`, each moving one endpoint to a fresh address, and
/// returns the number of updates sent and failed.
async fn churn(
    client: &Client,
    args: &Args,
    pending: PendingMap,
    lat: Arc<Mutex<Latencies>>,
    index: Arc<ServiceIndex>,
) -> Result<(u64, u64, Duration)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    // Current addresses of every slice. Update n goes to slice n % services: with far fewer
    // updates in flight than slices, no two concurrent patches touch one slice.
    let current: Arc<Mutex<Vec<Vec<u32>>>> = Arc::new(Mutex::new(
        (0..args.services)
            .map(|i| {
                (0..args.endpoints)
                    .map(|j| objects::initial_address(i, j, args.endpoints))
                    .collect()
            })
            .collect(),
    ));
    let permits = Arc::new(Semaphore::new(CHURN_CONCURRENCY));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / args.churn_rate);
    // Token bucket: at most 100 ms worth of updates may be sent late in a burst.
    let burst = Duration::from_millis(100);
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs_f64(args.churn_secs);
    let mut next = started;
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        if next + burst < now {
            next = now - burst;
        }
        tokio::time::sleep_until(next).await;
        next += interval;
        let permit = permits.clone().acquire_owned().await?;
        if tokio::time::Instant::now() >= end {
            break;
        }
        let i = (n % args.services as u64) as usize;
        let j = ((n / args.services as u64) % args.endpoints as u64) as usize;
        let new = objects::churn_address(n);
        let addresses = {
            let mut cur = current.lock().unwrap();
            cur[i][j] = new;
            cur[i].clone()
        };
        let host = objects::host(i, NAMESPACE);
        let address = Ipv4Addr::from(new).to_string();
        let (slices, pending, lat, index, failed) = (
            slices.clone(),
            pending.clone(),
            lat.clone(),
            index.clone(),
            failed.clone(),
        );
        n += 1;
        tasks.spawn(async move {
            let _permit = permit;
            let patch = json!({"endpoints": objects::endpoints(&addresses)});
            let sent = Instant::now();
            pending
                .lock()
                .unwrap()
                .entry(host.clone())
                .or_default()
                .push(Pending {
                    address: address.clone(),
                    sent,
                    returned: None,
                    seen: None,
                });
            let result = slices
                .patch(
                    &format!("{}-slice", objects::name(i)),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            let returned = Instant::now();
            let mut map = pending.lock().unwrap();
            if let Some(list) = map.get_mut(&host) {
                if let Some(pos) = list.iter().position(|p| p.address == address) {
                    if result.is_err() {
                        list.remove(pos);
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        list[pos].returned = Some(returned);
                    }
                }
            }
            drop(map);
            // The event may have arrived while the call was in flight.
            check_host(&index, &pending, &lat, &host);
        });
        while tasks.try_join_next().is_some() {}
    }
    let elapsed = started.elapsed();
    while tasks.join_next().await.is_some() {}
    Ok((
        n,
        failed.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
    ))
}

/// `--offline-child SERVICES ENDPOINTS CHANGES`: measures the index alone and prints
/// tab-separated rows.
fn offline_child(rest: &[String]) -> Result<()> {
    let [services, endpoints, changes] = rest else {
        bail!("--offline-child SERVICES ENDPOINTS CHANGES");
    };
    let mut off = offline::run(services.parse()?, endpoints.parse()?, changes.parse()?);
    println!(
        "index alone (fresh process, idle CPU): `replace` of the whole mesh / live heap it holds\t{:.1} ms / {:.0} MiB",
        off.replace.as_secs_f64() * 1000.0,
        off.heap_mib
    );
    println!(
        "index alone (fresh process, idle CPU): `apply` of one endpoint change\t{}",
        stats::percentiles(&mut off.applies)
    );
    Ok(())
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--offline-child") {
        return offline_child(&argv[2..]);
    }
    let args = parse_args()?;
    let mut report = Report(Vec::new());
    let shm = Path::new("/dev/shm");
    let etcd_parent = shm.is_dir().then_some(shm);
    eprintln!("starting private etcd + kube-apiserver (etcd data on {etcd_parent:?})");
    let kube = PrivateKube::start_with_etcd_dir("kube-load", &[], etcd_parent)?;
    let kubeconfig = kube.kubeconfig();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load_client = rt.block_on(client(&kubeconfig))?;
    eprintln!("creating the mesh");
    rt.block_on(create_mesh(&load_client, &args, &mut report))?;

    // The adapter: own thread, own runtime, own client.
    let index = Arc::new(ServiceIndex::new());
    let recorded: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut events = index.subscribe();
    let rss_before = stats::status_mib("VmRSS");
    let heap_before = stats::live_mib();
    let cpu_before = stats::process_cpu();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let adapter = {
        let (index, recorded, kubeconfig) = (index.clone(), recorded.clone(), kubeconfig.clone());
        std::thread::Builder::new()
            .name("kube-adapter".into())
            .spawn(move || -> Result<()> {
                tid_tx.send(stats::current_tid())?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let started = Instant::now();
                    let client = client(&kubeconfig).await?;
                    let registry = KubernetesRegistry::new("cluster.local")
                        .with_namespace(NAMESPACE)
                        .with_latency_recorder(move |d| recorded.lock().unwrap().push(d));
                    let mut ready = registry.ready();
                    let task = tokio::spawn(registry.run(client, index));
                    tokio::time::timeout(Duration::from_secs(300), ready.wait_for(|r| *r))
                        .await
                        .context("adapter not ready within 300 s")??;
                    ready_tx.send(started.elapsed())?;
                    let _ = stop_rx.await;
                    task.abort();
                    Ok(())
                })
            })?
    };
    let tid = tid_rx.recv()?;
    let thread_before = stats::thread_cpu(tid);
    let sync_time = ready_rx
        .recv_timeout(Duration::from_secs(310))
        .context("adapter did not become ready")?;
    let cpu_sync = stats::process_cpu() - cpu_before;
    let thread_sync = stats::thread_cpu(tid) - thread_before;
    let (svc_count, ep_count) = endpoint_count(&index, &args);
    if svc_count != args.services || ep_count != args.services * args.endpoints {
        bail!("index holds {svc_count} services / {ep_count} endpoints after sync");
    }
    let rss_sync = stats::status_mib("VmRSS");
    let heap_sync = stats::live_mib();
    report.row(
        format!("initial sync ({svc_count} services / {ep_count} endpoints)"),
        format!("{:.2} s", sync_time.as_secs_f64()),
    );
    report.row(
        "CPU during sync (adapter thread / whole process)",
        format!("{thread_sync:.2} s / {cpu_sync:.2} s"),
    );
    report.row(
        "RSS before adapter → after sync (Δ = adapter cache + index)",
        format!(
            "{rss_before:.0} → {rss_sync:.0} MiB (Δ {:.0} MiB)",
            rss_sync - rss_before
        ),
    );
    report.row(
        "live heap before adapter → after sync (Δ = adapter cache + index, exact)",
        format!(
            "{heap_before:.0} → {heap_sync:.0} MiB (Δ {:.0} MiB)",
            heap_sync - heap_before
        ),
    );
    report.row(
        "peak RSS after sync (VmHWM)",
        format!("{:.0} MiB", stats::status_mib("VmHWM")),
    );
    // Drop sync-time events before churn.
    while events.try_recv().is_ok() {}
    recorded.lock().unwrap().clear();

    eprintln!("churning");
    let pending: PendingMap = Arc::default();
    let lat: Arc<Mutex<Latencies>> = Arc::default();
    let watcher = {
        let (index, pending, lat) = (index.clone(), pending.clone(), lat.clone());
        rt.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(batch) => {
                        for e in batch.iter() {
                            if let RegistryEvent::EndpointsChanged(host, _) = e {
                                check_host(&index, &pending, &lat, host);
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let hosts: Vec<String> = pending.lock().unwrap().keys().cloned().collect();
                        for h in hosts {
                            check_host(&index, &pending, &lat, &h);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };
    let cpu_before = stats::process_cpu();
    let thread_before = stats::thread_cpu(tid);
    let (sent, failed, elapsed) = rt.block_on(churn(
        &load_client,
        &args,
        pending.clone(),
        lat.clone(),
        index.clone(),
    ))?;
    // Let the last changes arrive (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !pending.lock().unwrap().is_empty() {
        let hosts: Vec<String> = pending.lock().unwrap().keys().cloned().collect();
        for h in hosts {
            check_host(&index, &pending, &lat, &h);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_churn = stats::process_cpu() - cpu_before;
    let thread_churn = stats::thread_cpu(tid) - thread_before;
    watcher.abort();
    let lost: usize = pending.lock().unwrap().values().map(Vec::len).sum();
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    let mut adapter_lat = std::mem::take(&mut *recorded.lock().unwrap());
    report.row(
        format!(
            "churn: target {:.0}/s for {:.0} s (concurrency {CHURN_CONCURRENCY})",
            args.churn_rate, args.churn_secs
        ),
        format!(
            "achieved {:.0}/s ({sent} sent, {failed} failed, {lost} never seen in the index)",
            (sent - failed) as f64 / elapsed.as_secs_f64()
        ),
    );
    report.row(
        "write → index (API call returned → EndpointsChanged with the address)",
        stats::percentiles(&mut lat.from_return),
    );
    report.row(
        "  of which the index had it before the API call returned",
        format!("{}", lat.index_first),
    );
    report.row(
        "write → index, from the API call's start",
        stats::percentiles(&mut lat.from_send),
    );
    report.row(
        "watch event → index updated (adapter, `with_latency_recorder`)",
        stats::percentiles(&mut adapter_lat),
    );
    report.row(
        "CPU during churn (adapter thread / whole process incl. load generator)",
        format!("{thread_churn:.2} s / {cpu_churn:.2} s"),
    );
    report.row(
        "RSS after churn / peak RSS (VmHWM)",
        format!(
            "{:.0} MiB / {:.0} MiB",
            stats::status_mib("VmRSS"),
            stats::status_mib("VmHWM")
        ),
    );
    let _ = stop_tx.send(());
    // The index alone, in a fresh process so its RSS growth is not hidden by memory freed
    // (and kept by the allocator) earlier in this one.
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--offline-child", &args.services.to_string()])
        .args([&args.endpoints.to_string(), &sent.max(1000).to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("offline index measurement failed");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((what, value)) = line.split_once('\t') {
            report.row(what, value);
        }
    }
    adapter
        .join()
        .map_err(|_| anyhow::anyhow!("adapter thread panicked"))??;
    drop(rt);
    drop(kube);
    println!("| measurement | value |\n| --- | --- |");
    for (what, value) in &report.0 {
        println!("| {what} | {value} |");
    }
    Ok(())
}
