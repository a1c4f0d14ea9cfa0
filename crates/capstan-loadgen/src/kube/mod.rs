//! The mode whose mesh lives in a Kubernetes API server: Services, EndpointSlices,
//! VirtualServices and DestinationRules are created through it and every change is written to
//! it; the servers under test (istiod, Capstan) are started on it in turn, and the same
//! simulated proxies and the same changes measure each.
//!
//! Per server and size: the time until every proxy is fully synced (proxies connect 50 per
//! 100 ms and retry refusals with Envoy's backoff); per change, the delay from just before the
//! API write to each proxy's receipt of the response holding the change, recognised by content
//! (the new endpoint address in the cluster's load assignment; the new weight of the service's
//! `v1` subset in the route configuration); a reconnect storm (every proxy drops its connection
//! at once, then reconnects with Envoy's backoff); CPU-seconds of the server, of this process
//! and of the API server; idle CPU of the machine; resident memory; bytes sent.

mod api;
mod collect;
mod results;
mod servers;
pub mod startup;

use crate::stats;
use anyhow::{bail, Context, Result};
use api::MeshApi;
use capstan_loadgen::client::{self, SessionOptions};
use capstan_loadgen::fleet::{Backoff, Fleet, FleetOptions};
use capstan_loadgen::mesh::{self, MeshSpec};
use capstan_loadgen::watch::{Watch, Watches};
use capstan_loadgen::{kube_mesh, reports};
use collect::Collector;
use results::{Convergence, RunResult, Usage};
use servers::{Launch, Server, ServerArgs, ServerKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `capstan-loadgen kube`.
#[derive(clap::Args, Debug)]
pub struct KubeArgs {
    /// Kubeconfig of the API server holding the mesh (e.g. a private one started by
    /// `bench/control_plane_vs_istiod.sh`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Servers to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "istiod,capstan")]
    servers: Vec<ServerKind>,
    /// Simulated sidecars; a list measures each size in turn.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    proxies: Vec<usize>,
    /// Services in the mesh.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// VirtualServices.
    #[arg(long, default_value_t = 500)]
    virtual_services: usize,
    /// DestinationRules.
    #[arg(long, default_value_t = 500)]
    destination_rules: usize,
    /// Changes of each kind to measure.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// How the servers are started.
    #[command(flatten)]
    start: ServerArgs,
    /// Threads running the simulated proxies; default: one per CPU.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    client_threads: usize,
    /// Proxies connecting per 100 ms during the initial ramp.
    #[arg(long, default_value_t = 50)]
    connect_batch: usize,
    /// Each proxy waits this long before reading each response and ACKing it (reading nothing
    /// meanwhile): proxies that drain slower than the server produces.
    #[arg(long, default_value_t = 0)]
    read_delay_ms: u64,
    /// Decode every cluster and listener whole with Envoy's types and NACK what fails (costs
    /// the proxies about as much CPU as a fast server spends; by default only the fields naming
    /// the next subscriptions are read).
    #[arg(long)]
    check_bodies: bool,
    /// Longest wait for one change to reach every proxy, and for a server to be ready.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Longest wait for every proxy to sync (initial and after the storm); default
    /// 120 s + 0.1 s per proxy (istiod admits ~25 new streams a second on two cores).
    #[arg(long)]
    sync_timeout_secs: Option<u64>,
    /// The API server's pid, to report its CPU beside the server's.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// Where the servers' logs go (a fresh temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Append each run's measurements as a JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// CPU counters at one instant.
#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    server: f64,
    own: f64,
    apiserver: Option<f64>,
    idle: f64,
    bytes: u64,
    retries: u64,
    refused: u64,
}

impl Counters {
    fn now(pid: u32, apiserver: Option<u32>, c: &Collector) -> Counters {
        Counters {
            at: Instant::now(),
            server: stats::cpu_seconds(pid).unwrap_or_default(),
            own: stats::cpu_seconds(std::process::id()).unwrap_or_default(),
            apiserver: apiserver.and_then(stats::cpu_seconds),
            idle: stats::machine_idle_seconds().unwrap_or_default(),
            bytes: c.bytes,
            retries: c.retries,
            refused: c.refused,
        }
    }

    /// Usage from `self` to now.
    fn usage(&self, pid: u32, apiserver: Option<u32>, c: &Collector) -> Usage {
        let end = Counters::now(pid, apiserver, c);
        Usage {
            wall_secs: (end.at - self.at).as_secs_f64(),
            server_cpu: end.server - self.server,
            loadgen_cpu: end.own - self.own,
            apiserver_cpu: end.apiserver.zip(self.apiserver).map(|(e, s)| e - s),
            idle_cpu: end.idle - self.idle,
            mib_received: (end.bytes - self.bytes) as f64 / 1048576.0,
            retries: end.retries - self.retries,
            refused: end.refused - self.refused,
        }
    }
}

/// What every server's run shares.
struct Bench {
    args: KubeArgs,
    spec: MeshSpec,
    api: MeshApi,
    launch: Launch,
    runs: usize,
}

/// The service the `k`-th endpoint change moves (as the file mode's), and its generation.
fn endpoint_change(k: usize, services: usize) -> (usize, usize) {
    ((k * 37) % services.max(1), k + 1)
}

/// The VirtualService the `k`-th change edits, and the `v1` weight it sets: each starts at
/// 80, every visit flips it (50, 80, ...), so each write is a real change.
fn virtual_service_change(k: usize, virtual_services: usize) -> (usize, u32) {
    let n = virtual_services.max(1);
    let weight = if (k / n) % 2 == 0 { 50 } else { 80 };
    (k % n, weight)
}

/// Connects one proxy (not one of the measured ones) and waits until it has the last
/// service's endpoints, the last DestinationRule's subsets and the last VirtualService's
/// route: the server has the whole mesh.
pub(crate) async fn probe_mesh(
    server: &Server,
    spec: &MeshSpec,
    session: SessionOptions,
    limit: Duration,
) -> Result<()> {
    let last = spec.services - 1;
    let mut watches = vec![Watch {
        id: 0,
        type_url: client::ENDPOINT,
        resource: kube_mesh::cluster(last),
        needle: kube_mesh::endpoint_needle(&mesh::endpoint_ip(last, 0, 0)),
    }];
    if let Some(d) = spec.destination_rules.checked_sub(1) {
        watches.push(Watch {
            id: 1,
            type_url: client::CLUSTER,
            resource: kube_mesh::subset_cluster(d, "v2"),
            needle: vec![],
        });
    }
    if let Some(v) = spec.virtual_services.checked_sub(1) {
        watches.push(Watch {
            id: 2,
            type_url: client::ROUTE,
            resource: kube_mesh::route_name(),
            needle: kube_mesh::route_needle(v, 80),
        });
    }
    let ids: Vec<u64> = watches.iter().map(|w| w.id).collect();
    let shared = Watches::default();
    shared.set(watches);
    let (tx, rx) = reports::channel();
    let mut collector = Collector::new(rx, 1);
    let options = FleetOptions {
        addr: server.xds,
        threads: 1,
        session: SessionOptions {
            watches: Some(shared.clone()),
            ..session
        },
        backoff: Backoff::envoy(),
    };
    let fleet = Fleet::start(options, tx)?;
    fleet.connect(0);
    let waited = collector
        .wait_until(
            "a probe proxy seeing the whole mesh",
            limit,
            |c| ids.iter().all(|id| c.matched_count(*id) == 1),
            || {},
        )
        .await;
    fleet.stop();
    waited.with_context(|| format!("{} log:\n{}", server.kind.label(), server.tail()))
}

/// `--istiod-env` values, `NAME=VALUE` each.
fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--istiod-env {kv:?} is not NAME=VALUE"))
        })
        .collect()
}

/// Runs every size for every server and prints a table per size.
pub async fn run(args: KubeArgs) -> Result<()> {
    if args.services == 0 || args.endpoints == 0 || args.proxies.is_empty() {
        bail!("nothing to measure: --services, --endpoints and --proxies must be positive");
    }
    let most = args.proxies.iter().max().copied().unwrap_or(0) as u64;
    if let Some(limit) = stats::open_files_limit() {
        if limit < most + 200 {
            bail!("{most} proxies need as many open files, the limit is {limit}: raise it (ulimit -n)");
        }
    }
    let spec = MeshSpec {
        services: args.services,
        endpoints: args.endpoints,
        virtual_services: args.virtual_services.min(args.services),
        destination_rules: args.destination_rules.min(args.services),
    };
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("capstan-loadgen-kube-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let launch = args.start.launch(&args.kubeconfig, &dir)?;
    let api = MeshApi::connect(&args.kubeconfig).await?;
    let started = Instant::now();
    api.install_crds(&args.start.crds).await?;
    api.apply_all(&[
        kube_mesh::namespace_object("istio-system"),
        kube_mesh::istio_config_map(),
    ])
    .await?;
    let objects = kube_mesh::objects(&spec);
    let namespaces = kube_mesh::namespaces(&spec).len();
    api.apply_all(&objects[..namespaces]).await?;
    api.apply_all(&objects[namespaces..]).await?;
    eprintln!(
        "mesh in the API server: {} objects applied in {:.1} s (servers' logs in {})",
        objects.len(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let mut bench = Bench {
        args,
        spec,
        api,
        launch,
        runs: 0,
    };
    println!(
        "mesh: {} services x {} endpoints, {} VirtualServices, {} DestinationRules in a Kubernetes API server; Delta xDS proxies; {} changes of each kind",
        spec.services, spec.endpoints, spec.virtual_services, spec.destination_rules, bench.args.changes
    );
    for proxies in bench.args.proxies.clone() {
        let mut results = Vec::new();
        for kind in bench.args.servers.clone() {
            bench.reset().await?;
            eprintln!("== {} with {proxies} proxies", kind.label());
            let result = match bench.measure(kind, proxies).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{} with {proxies} proxies failed: {e:#}", kind.label());
                    RunResult {
                        server: Some(kind),
                        proxies,
                        error: Some(format!("{e:#}")),
                        ..RunResult::default()
                    }
                }
            };
            if let Some(path) = &bench.args.results {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                writeln!(f, "{}", serde_json::to_string(&result)?)?;
            }
            results.push(result);
        }
        println!("\n{}", results::table(&results));
    }
    if bench.args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

impl Bench {
    /// Puts the objects the changes touch back in their initial state, so every server
    /// starts on the same mesh and sees the same changes.
    async fn reset(&self) -> Result<()> {
        let mut objects = Vec::new();
        for k in 0..self.args.changes {
            let (s, _) = endpoint_change(k, self.spec.services);
            objects.push(kube_mesh::endpoint_slice(&self.spec, s, 0));
        }
        for k in 0..self.args.changes.min(self.spec.virtual_services) {
            let (i, _) = virtual_service_change(k, self.spec.virtual_services);
            objects.push(kube_mesh::virtual_service(i, 80));
        }
        self.api.apply_all(&objects).await
    }

    fn sync_limit(&self, proxies: usize) -> Duration {
        Duration::from_secs(
            self.args
                .sync_timeout_secs
                .unwrap_or(120 + proxies as u64 / 10),
        )
    }

    fn fleet_options(&self, server: &Server, watches: &Watches, threads: usize) -> FleetOptions {
        FleetOptions {
            addr: server.xds,
            threads,
            session: SessionOptions {
                names_in_reports: false,
                check_bodies: self.args.check_bodies,
                read_delay: Duration::from_millis(self.args.read_delay_ms),
                watches: Some(watches.clone()),
            },
            backoff: Backoff::envoy(),
        }
    }

    /// The probe of [`probe_mesh`], with this run's session options.
    async fn probe(&self, server: &Server) -> Result<()> {
        let session = self.fleet_options(server, &Watches::default(), 1).session;
        probe_mesh(
            server,
            &self.spec,
            session,
            Duration::from_secs(self.args.timeout_secs),
        )
        .await
    }

    async fn measure(&mut self, kind: ServerKind, proxies: usize) -> Result<RunResult> {
        self.runs += 1;
        let started = Instant::now();
        let mut server = Server::start(kind, &self.launch, self.runs)?;
        let pid = server.pid;
        let limit = Duration::from_secs(self.args.timeout_secs);
        server.wait_ready(limit).await?;
        let ready_secs = started.elapsed().as_secs_f64();
        self.probe(&server).await?;
        let loaded_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{} ready in {ready_secs:.1} s, whole mesh at a probe proxy in {loaded_secs:.1} s (log: {})",
            kind.label(),
            server.log().display()
        );

        let watches = Watches::default();
        let (tx, rx) = reports::channel();
        let mut c = Collector::new(rx, proxies);
        let fleet = Fleet::start(
            self.fleet_options(&server, &watches, self.args.client_threads),
            tx,
        )?;
        let outcome = self
            .phases(&server, &fleet, &mut c, &watches, proxies)
            .await;
        fleet.stop();
        let mut result =
            outcome.with_context(|| format!("{} log:\n{}", kind.label(), server.tail()))?;
        result.server = Some(kind);
        result.proxies = proxies;
        result.ready_secs = ready_secs;
        result.loaded_secs = loaded_secs;
        result.peak_rss_mib = stats::peak_rss_mib(pid).unwrap_or_default();
        result.nacks = c.nacks;
        if let Some(nack) = &c.first_nack {
            eprintln!("{}: {} NACKs, the first: {nack}", kind.label(), c.nacks);
        }
        Ok(result)
    }

    /// The measured phases, with the proxies' fleet running.
    async fn phases(
        &self,
        server: &Server,
        fleet: &Fleet,
        c: &mut Collector,
        watches: &Watches,
        proxies: usize,
    ) -> Result<RunResult> {
        let (pid, apiserver) = (server.pid, self.args.apiserver_pid);
        let mut result = RunResult::default();

        // Initial sync: connect in waves (a thousand SYNs at once overflow the loopback
        // listener's SYN queue, which would measure the kernel).
        let before = Counters::now(pid, apiserver, c);
        let batch = self.args.connect_batch.max(1);
        let mut next = 0;
        let mut last_wave = Instant::now() - Duration::from_secs(1);
        c.wait_until(
            "every proxy fully synced",
            self.sync_limit(proxies),
            |c| c.synced_since(before.at) == proxies,
            || {
                if next < proxies && last_wave.elapsed() >= Duration::from_millis(100) {
                    for i in next..(next + batch).min(proxies) {
                        fleet.connect(i);
                    }
                    next = (next + batch).min(proxies);
                    last_wave = Instant::now();
                }
            },
        )
        .await?;
        result.sync = before.usage(pid, apiserver, c);
        result.sync.wall_secs = c
            .synced_at
            .iter()
            .flatten()
            .max()
            .map_or(0.0, |last| (*last - before.at).as_secs_f64());
        eprintln!(
            "initial sync: {:.2} s, server {:.1} CPU-s, {} refused",
            result.sync.wall_secs, result.sync.server_cpu, result.sync.refused
        );
        // Let trailing responses drain before measuring changes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.pump();
        result.rss_after_sync_mib = stats::rss_mib(pid).unwrap_or_default();

        let limit = Duration::from_secs(self.args.timeout_secs);
        let mut id = 100;
        let mut samples = Vec::new();
        let (mut writes, mut firsts) = (Vec::new(), Vec::new());
        let before = Counters::now(pid, apiserver, c);
        for k in 0..self.args.changes {
            let (s, generation) = endpoint_change(k, self.spec.services);
            let slice = kube_mesh::endpoint_slice(&self.spec, s, generation);
            id += 1;
            watches.set(vec![Watch {
                id,
                type_url: client::ENDPOINT,
                resource: kube_mesh::cluster(s),
                needle: kube_mesh::endpoint_needle(&mesh::endpoint_ip(s, 0, generation)),
            }]);
            let since = Instant::now();
            self.api.apply(&slice).await?;
            writes.push(since.elapsed());
            c.wait_until(
                &format!("endpoint change {k} at every proxy"),
                limit,
                |c| c.matched_count(id) == proxies,
                || {},
            )
            .await?;
            let latencies = c.latencies(id, since);
            firsts.extend(latencies.iter().min().copied());
            samples.extend(latencies);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        result.endpoint =
            Convergence::new(samples, self.args.changes, before.usage(pid, apiserver, c))
                .with_breakdown(writes, firsts);

        let vs_changes = self.args.changes.min(self.spec.virtual_services);
        let mut samples = Vec::new();
        let before = Counters::now(pid, apiserver, c);
        for k in 0..vs_changes {
            let (i, weight) = virtual_service_change(k, self.spec.virtual_services);
            id += 1;
            watches.set(vec![Watch {
                id,
                type_url: client::ROUTE,
                resource: kube_mesh::route_name(),
                needle: kube_mesh::route_needle(i, weight),
            }]);
            let object = kube_mesh::virtual_service(i, weight);
            let since = Instant::now();
            self.api.apply(&object).await?;
            c.wait_until(
                &format!("VirtualService change {k} at every proxy"),
                limit,
                |c| c.matched_count(id) == proxies,
                || {},
            )
            .await?;
            samples.extend(c.latencies(id, since));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        result.virtual_service =
            Convergence::new(samples, vs_changes, before.usage(pid, apiserver, c));
        watches.set(vec![]);

        // The storm: every proxy drops its connection at once and reconnects.
        let before = Counters::now(pid, apiserver, c);
        fleet.disconnect_all();
        c.wait_until(
            "every proxy synced again after the reconnect storm",
            self.sync_limit(proxies),
            |c| c.synced_since(before.at) == proxies,
            || {},
        )
        .await?;
        result.storm = before.usage(pid, apiserver, c);
        result.storm.wall_secs = c
            .synced_at
            .iter()
            .flatten()
            .max()
            .map_or(0.0, |last| (*last - before.at).as_secs_f64());
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_the_file_modes() {
        assert_eq!(endpoint_change(0, 1000), (0, 1));
        assert_eq!(endpoint_change(3, 1000), (111, 4));
        assert_eq!(endpoint_change(30, 100), (10, 31));
        let weights: Vec<(usize, u32)> = (0..5).map(|k| virtual_service_change(k, 2)).collect();
        assert_eq!(weights, [(0, 50), (1, 50), (0, 80), (1, 80), (0, 50)]);
    }
}
