//! `capstan-loadgen startup`: how istiod and Capstan start on a large mesh. The mesh
//! ([`capstan_loadgen::startup_mesh`]: Services with EndpointSlices and Istio objects of seven
//! kinds) is put in the API server once; then each server is started on it in turn, with the
//! kube mode's flags, and measured from the instant before it is spawned to its `/ready`
//! answering 200 (asked every `--poll-ms`): that time, its CPU-seconds (user + system) and
//! resident memory (`VmRSS`, and the peak `VmHWM`) read at that instant, and the API server's
//! CPU over the same span. Then a probe proxy checks the server really serves the whole mesh
//! (the kube mode's probe: last service's endpoints, last DestinationRule's subset, last
//! VirtualService's weight), timed from the same start; and the server is stopped.

use super::servers::{Launch, Server, ServerArgs, ServerKind};
use super::{api::MeshApi, probe_mesh};
use crate::stats;
use anyhow::{bail, Result};
use capstan_loadgen::client::SessionOptions;
use capstan_loadgen::kube_mesh;
use capstan_loadgen::startup_mesh::{self, IstioCounts};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `capstan-loadgen startup`.
#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// Kubeconfig of the API server to hold the mesh (e.g. a private one started by
    /// `bench/startup_vs_istiod.sh`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Servers to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "istiod,capstan")]
    servers: Vec<ServerKind>,
    /// Services (each with one EndpointSlice).
    #[arg(long, default_value_t = 5_000)]
    services: usize,
    /// Endpoints per EndpointSlice.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Istio objects, split by kind as `startup_mesh::IstioCounts::split` does.
    #[arg(long, default_value_t = 10_000)]
    istio_objects: usize,
    /// Starts of each server (alternating between servers).
    #[arg(long, default_value_t = 1)]
    starts: usize,
    /// How often `/ready` is asked.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Do not check with a probe proxy that the ready server serves the whole mesh.
    #[arg(long)]
    no_probe: bool,
    /// How the servers are started.
    #[command(flatten)]
    start: ServerArgs,
    /// Longest wait for a server to be ready, and then for the probe.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The API server's pid, to report its CPU beside the server's.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// Where the servers' logs go (a fresh temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Append each start's measurements as a JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One start's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct StartResult {
    server: Option<ServerKind>,
    start: usize,
    services: usize,
    istio_objects: usize,
    /// Spawn → `/ready` 200.
    ready_secs: f64,
    /// The server's CPU-seconds at ready.
    cpu_secs: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    /// The API server's CPU-seconds from spawn to ready.
    apiserver_cpu_secs: Option<f64>,
    /// Spawn → the probe proxy has the whole mesh.
    mesh_secs: Option<f64>,
    /// The server's CPU-seconds and peak RSS once the probe proxy has the whole mesh (its
    /// sidecar's configuration generated and sent).
    cpu_at_mesh_secs: Option<f64>,
    peak_rss_at_mesh_mib: Option<f64>,
    error: Option<String>,
}

/// One figure of a start, for the ratio row.
type Field = fn(&StartResult) -> Option<f64>;

/// A markdown table of every start, with the ratio Capstan / istiod of each server's median
/// when both ran.
fn table(results: &[StartResult]) -> String {
    let mut out = String::from(
        "| server | start | ready s | CPU-s at ready | RSS at ready MiB | peak RSS at ready MiB | API server CPU-s | whole mesh at a probe proxy s | CPU-s / peak RSS MiB then |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    for r in results {
        let label = r.server.map_or("?", |s| s.label());
        if let Some(e) = &r.error {
            out += &format!("| {label} | {} | failed: {e} | | | | | | |\n", r.start);
            continue;
        }
        out += &format!(
            "| {label} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} | {} / {} |\n",
            r.start,
            r.ready_secs,
            r.cpu_secs,
            r.rss_mib,
            r.peak_rss_mib,
            opt(r.apiserver_cpu_secs, 2),
            opt(r.mesh_secs, 2),
            opt(r.cpu_at_mesh_secs, 2),
            opt(r.peak_rss_at_mesh_mib, 0),
        );
    }
    let median = |kind: ServerKind, f: Field| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.server == Some(kind) && r.error.is_none())
            .filter_map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len().wrapping_sub(1) / 2).copied()
    };
    let ratio = |f: Field, digits: usize| match (
        median(ServerKind::Capstan, f),
        median(ServerKind::Istiod, f),
    ) {
        (Some(c), Some(i)) if i > 0.0 => format!("{:.digits$}", c / i),
        _ => "—".to_string(),
    };
    let fields: [Field; 8] = [
        |r| Some(r.ready_secs),
        |r| Some(r.cpu_secs),
        |r| Some(r.rss_mib),
        |r| Some(r.peak_rss_mib),
        |r| r.apiserver_cpu_secs,
        |r| r.mesh_secs,
        |r| r.cpu_at_mesh_secs,
        |r| r.peak_rss_at_mesh_mib,
    ];
    let r: Vec<String> = fields.iter().map(|f| ratio(*f, 3)).collect();
    if r.iter().any(|v| v != "—") {
        out += &format!(
            "| **Capstan / istiod** | | **{}** | **{}** | {} | **{}** | {} | {} | {} / {} |\n",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        );
    }
    out
}

/// Loads the mesh, then starts and measures each server `--starts` times.
pub async fn run(args: StartupArgs) -> Result<()> {
    if args.services == 0 || args.endpoints == 0 || args.starts == 0 || args.servers.is_empty() {
        bail!("nothing to measure: --services, --endpoints, --starts and --servers must be given");
    }
    let counts = IstioCounts::split(args.istio_objects, args.services);
    let (spec, kube_objects, istio_objects) =
        startup_mesh::objects(args.services, args.endpoints, &counts);
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("capstan-loadgen-startup-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let launch = args.start.launch(&args.kubeconfig, &dir)?;

    let api = MeshApi::connect(&args.kubeconfig).await?;
    let loading = Instant::now();
    api.install_crds(&args.start.crds).await?;
    api.apply_all(&[
        kube_mesh::namespace_object("istio-system"),
        kube_mesh::istio_config_map(),
    ])
    .await?;
    let namespaces = kube_mesh::namespaces(&spec).len();
    api.apply_all(&kube_objects[..namespaces]).await?;
    api.apply_all(&kube_objects[namespaces..]).await?;
    let kube_secs = loading.elapsed().as_secs_f64();
    api.apply_all(&istio_objects).await?;
    eprintln!(
        "mesh in the API server: {} Kubernetes objects in {kube_secs:.1} s, {} Istio objects in {:.1} s (servers' logs in {})",
        kube_objects.len(),
        istio_objects.len(),
        loading.elapsed().as_secs_f64() - kube_secs,
        dir.display()
    );
    println!(
        "mesh: {} Services with {} endpoints each; {} Istio objects: {} VirtualServices, {} DestinationRules, {} ServiceEntries, {} AuthorizationPolicies, {} PeerAuthentications, {} Gateways, {} Sidecars",
        spec.services, spec.endpoints, counts.total(), counts.virtual_services, counts.destination_rules,
        counts.service_entries, counts.authorization_policies, counts.peer_authentications,
        counts.gateways, counts.sidecars
    );

    let mut results = Vec::new();
    let mut run = 0;
    for start in 1..=args.starts {
        for &kind in &args.servers {
            run += 1;
            let mut result = match measure(&args, &launch, &spec, kind, run).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{} start {start} failed: {e:#}", kind.label());
                    StartResult {
                        error: Some(format!("{e:#}")),
                        ..StartResult::default()
                    }
                }
            };
            result.server = Some(kind);
            result.start = start;
            result.services = spec.services;
            result.istio_objects = counts.total();
            if let Some(path) = &args.results {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                writeln!(f, "{}", serde_json::to_string(&result)?)?;
            }
            results.push(result);
        }
    }
    println!("\n{}", table(&results));
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// One start of `kind`.
async fn measure(
    args: &StartupArgs,
    launch: &Launch,
    spec: &capstan_loadgen::mesh::MeshSpec,
    kind: ServerKind,
    run: usize,
) -> Result<StartResult> {
    let limit = Duration::from_secs(args.timeout_secs);
    let apiserver_before = args.apiserver_pid.and_then(stats::cpu_seconds);
    let started = Instant::now();
    let mut server = Server::start(kind, launch, run)?;
    let pid = server.pid;
    server
        .wait_ready_polling(limit, Duration::from_millis(args.poll_ms.max(1)))
        .await?;
    let ready_secs = started.elapsed().as_secs_f64();
    let mut result = StartResult {
        ready_secs,
        cpu_secs: stats::cpu_seconds(pid).unwrap_or_default(),
        rss_mib: stats::rss_mib(pid).unwrap_or_default(),
        peak_rss_mib: stats::peak_rss_mib(pid).unwrap_or_default(),
        apiserver_cpu_secs: apiserver_before
            .zip(args.apiserver_pid.and_then(stats::cpu_seconds))
            .map(|(b, a)| a - b),
        ..StartResult::default()
    };
    eprintln!(
        "{} ready in {ready_secs:.2} s, {:.2} CPU-s, peak RSS {:.0} MiB (log: {})",
        kind.label(),
        result.cpu_secs,
        result.peak_rss_mib,
        server.log().display()
    );
    if !args.no_probe {
        probe_mesh(&server, spec, SessionOptions::default(), limit).await?;
        result.mesh_secs = Some(started.elapsed().as_secs_f64());
        result.cpu_at_mesh_secs = stats::cpu_seconds(pid);
        result.peak_rss_at_mesh_mib = stats::peak_rss_mib(pid);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn start(server: ServerKind, ready: f64, cpu: f64, peak: f64) -> StartResult {
        StartResult {
            server: Some(server),
            start: 1,
            ready_secs: ready,
            cpu_secs: cpu,
            rss_mib: peak / 2.0,
            peak_rss_mib: peak,
            ..StartResult::default()
        }
    }

    #[test]
    fn the_table_has_a_row_per_start_and_the_ratio_of_medians() {
        let results = [
            start(ServerKind::Istiod, 10.0, 20.0, 800.0),
            start(ServerKind::Capstan, 1.0, 1.0, 100.0),
            start(ServerKind::Istiod, 12.0, 22.0, 820.0),
            start(ServerKind::Capstan, 3.0, 1.2, 110.0),
            StartResult {
                server: Some(ServerKind::Capstan),
                error: Some("not ready".into()),
                ..StartResult::default()
            },
        ];
        let text = table(&results);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 + 5 + 1, "{text}");
        assert!(
            lines[2].starts_with("| istiod | 1 | 10.00 | 20.00 | 400 | 800 | — | — | — / — |"),
            "{text}"
        );
        assert!(lines[6].contains("failed: not ready"), "{text}");
        // Medians (lower of two): Capstan 1.0 s / istiod 10.0 s; failed starts are left out.
        assert!(
            lines[7].starts_with(
                "| **Capstan / istiod** | | **0.100** | **0.050** | 0.125 | **0.125** |"
            ),
            "{text}"
        );
        // One server alone: no ratio row.
        assert_eq!(table(&results[..1]).lines().count(), 3);
    }

    #[test]
    fn the_mode_parses_with_the_issues_sizes() {
        let cli = crate::Cli::try_parse_from([
            "capstan-loadgen",
            "startup",
            "--kubeconfig",
            "k",
            "--servers",
            "capstan",
        ])
        .expect("parses");
        let Some(crate::Mode::Startup(args)) = cli.mode else {
            panic!("not the startup mode: {:?}", cli.mode)
        };
        assert_eq!(
            (
                args.services,
                args.istio_objects,
                args.endpoints,
                args.starts
            ),
            (5_000, 10_000, 10, 1)
        );
        assert_eq!(args.servers, [ServerKind::Capstan]);
        assert!(!args.no_probe);
    }
}
