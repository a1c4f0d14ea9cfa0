//! `capstan-loadgen`: generates a synthetic mesh, starts `capstan discovery` on it, connects N
//! simulated sidecars over Delta xDS (each ACKs every response), then measures: full initial
//! sync, convergence of endpoint changes and VirtualService changes at every proxy (from the
//! file write to the last proxy's receipt: debounce included), the server's CPU seconds and
//! peak RSS, and bytes sent. Loopback only; every wait is bounded.
//!
//! ```sh
//! cargo build --release -p capstan -p capstan-loadgen
//! target/release/capstan-loadgen --proxies 1000 --services 1000 --endpoints 10 \
//!     --virtual-services 500 --destination-rules 500 --changes 20
//! ```
//!
//! `capstan-loadgen kube --kubeconfig K ...` is the other mode: the mesh lives in a Kubernetes
//! API server and the same proxies and changes measure istiod and Capstan one after the other
//! (see `kube/mod.rs` and `bench/control_plane_vs_istiod.sh`); `capstan-loadgen startup`
//! measures each server's start on a large mesh in one (`bench/startup_vs_istiod.sh`), and
//! `capstan-loadgen webhook` a validating admission webhook's latency
//! (`bench/webhook_vs_istiod.sh`).

mod http;
mod kube;
mod stats;
mod webhook;

use capstan_loadgen::{client, mesh, reports};

use anyhow::{bail, Context, Result};
use clap::Parser;
use client::Report;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Load simulator for `capstan discovery` (file mesh), or for any xDS server on a mesh in a
/// Kubernetes API server (`kube`, `startup`); and a load client for validating webhooks
/// (`webhook`).
#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    file: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// The mesh in a Kubernetes API server; istiod and/or Capstan measured in turn.
    Kube(kube::KubeArgs),
    /// Time to ready, CPU and peak memory of istiod and/or Capstan starting on a large mesh in
    /// a Kubernetes API server.
    Startup(kube::startup::StartupArgs),
    /// Admission latency of a validating webhook under concurrent HTTPS connections.
    Webhook(webhook::WebhookArgs),
}

/// The file mode's arguments.
#[derive(clap::Args, Debug)]
struct Args {
    /// The capstan binary.
    #[arg(long, default_value = "target/release/capstan")]
    capstan: PathBuf,
    /// Where to write the mesh (a fresh temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Simulated sidecars.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
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
    /// Quiet period of the server's file watchers (the input side; the push debounce is the
    /// server's default unless `--server-arg` sets it, and is included in every measurement).
    #[arg(long, default_value_t = 10)]
    file_debounce_ms: u64,
    /// Extra arguments for `capstan discovery` (repeat; e.g. `--server-arg=--debounce-min-ms=100`
    /// for istiod's fixed 100 ms debounce).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Threads running the simulated proxies (each a single-threaded runtime); default: one per
    /// CPU.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    client_threads: usize,
    /// Proxies connecting per 100 ms during the initial ramp.
    #[arg(long, default_value_t = 50)]
    connect_batch: usize,
    /// Serve the file registry from YAML instead of JSON (YAML parsing then dominates an
    /// endpoint change's cost: 10,000 endpoints are re-read on every change).
    #[arg(long)]
    yaml_registry: bool,
    /// Print every response received (for debugging a run).
    #[arg(long)]
    verbose: bool,
    /// `RUST_LOG` filter for the server (its log goes to this process's stderr), to trace
    /// where a change's time goes, e.g. `capstan=debug,capstan_xds=debug`
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Longest wait for any one phase.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

/// Kills the server when the run ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the xDS port {port} did not open within {limit:?}")
}

/// GET over plain HTTP/1.0 on loopback (the monitoring port); returns the body.
async fn http_get(port: u16, path: &str) -> Result<String> {
    Ok(http::get(port, path).await?.1)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the server has loaded the whole mesh and pushed it (so proxies connect to a
/// server that is ready, as in a rollout).
async fn wait_loaded(port: u16, services: u64, objects: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(text) = http_get(port, "/metrics").await {
            if metric(&text, "capstan_services") >= Some(services)
                && metric(&text, "capstan_config_objects") >= Some(objects)
            {
                // `/ready` turns 200 once the loaded state has been pushed.
                if http_get(port, "/ready")
                    .await
                    .is_ok_and(|b| b.starts_with("ready"))
                {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the server did not load {services} services and {objects} config objects within {limit:?}"
    )
}

/// Waits until every proxy reported a response of `type_url` naming `name` after `since`;
/// returns each proxy's latency.
async fn converge(
    rx: &mut reports::Receiver,
    proxies: usize,
    type_url: &str,
    name: &str,
    since: Instant,
    limit: Duration,
    bytes: &mut usize,
) -> Result<Vec<Duration>> {
    let mut seen: HashMap<usize, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < proxies {
        let report = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| {
                format!(
                    "only {} of {proxies} proxies saw {name} within {limit:?}",
                    seen.len()
                )
            })?;
        match report {
            Some(Report::Received {
                client,
                type_url: t,
                names,
                bytes: b,
                at,
                ..
            }) => {
                *bytes += b;
                if t == type_url && at >= since && names.iter().any(|n| n == name) {
                    seen.entry(client).or_insert(at - since);
                }
            }
            Some(Report::Rejected {
                client,
                type_url,
                error,
            }) => eprintln!("proxy {client} rejected {type_url}: {error}"),
            Some(Report::Closed { client, error }) => {
                bail!("proxy {client}'s stream closed: {error:?}")
            }
            Some(
                Report::Synced
                | Report::ProxySynced { .. }
                | Report::Matched { .. }
                | Report::Retrying { .. },
            ) => {}
            None => bail!("all clients stopped"),
        }
    }
    Ok(seen.into_values().collect())
}

fn line(label: &str, samples: Vec<Duration>) -> String {
    let (p50, p99, max) = stats::percentiles(samples);
    format!(
        "| {label} | {:.1} | {:.1} | {:.1} |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::Kube(args)) => kube::run(args).await,
        Some(Mode::Startup(args)) => kube::startup::run(args).await,
        Some(Mode::Webhook(args)) => webhook::run(args).await,
        None => run_file_mode(cli.file).await,
    }
}

async fn run_file_mode(args: Args) -> Result<()> {
    let spec = mesh::MeshSpec {
        services: args.services,
        endpoints: args.endpoints,
        virtual_services: args.virtual_services,
        destination_rules: args.destination_rules,
    };
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("capstan-loadgen-{}", std::process::id()));
            tmp
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    mesh::write(&dir, &spec)?;
    let registry_file = if args.yaml_registry {
        "registry.yaml"
    } else {
        "registry.json"
    };
    let xds_port = free_port()?;
    let monitoring_port = free_port()?;
    let child = Command::new(&args.capstan)
        .args(["discovery", "--config-dir"])
        .arg(dir.join("config"))
        .arg("--registry-file")
        .arg(dir.join(registry_file))
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--debug-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
        .args(["--file-debounce-ms", &args.file_debounce_ms.to_string()])
        .args(&args.server_args)
        .env("RUST_LOG", &args.server_log)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.capstan.display()))?;
    let server = Server(child);
    let pid = server.0.id();
    let limit = Duration::from_secs(args.timeout_secs);
    wait_for_port(xds_port, Duration::from_secs(60)).await?;
    let objects = (args.virtual_services.min(args.services)
        + args.destination_rules.min(args.services)) as u64;
    wait_loaded(monitoring_port, args.services as u64, objects, limit).await?;
    let cpu_start = stats::cpu_seconds(pid).unwrap_or_default();

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], xds_port));
    let (tx, mut rx) = reports::channel();
    // The proxies run on their own threads, one single-threaded runtime each (no work stealing
    // or cross-thread wake-ups between a proxy's connection and its handling).
    let starters: Vec<tokio::sync::mpsc::UnboundedSender<usize>> = (0..args.client_threads.max(1))
        .map(|t| {
            let (start, mut started) = tokio::sync::mpsc::unbounded_channel::<usize>();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("proxies-{t}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the simulated proxies");
                    runtime.block_on(async move {
                        while let Some(i) = started.recv().await {
                            tokio::spawn(client::run_reporting(i, addr, tx.clone()));
                        }
                        // Keep serving the proxies until the process ends.
                        std::future::pending::<()>().await
                    })
                })
                .expect("a thread for the simulated proxies");
            start
        })
        .collect();
    let started = Instant::now();
    for i in 0..args.proxies {
        // Connect in waves: a thousand SYNs at once overflow the loopback listener's SYN queue
        // (the kernel falls back to SYN cookies and resets), which measures the kernel, not us.
        if i > 0 && i % args.connect_batch == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        starters[i % starters.len()].send(i)?;
    }
    let mut synced = 0;
    let mut bytes = 0usize;
    let deadline = tokio::time::Instant::now() + limit;
    while synced < args.proxies {
        match tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| {
                format!(
                    "only {synced} of {} proxies synced within {limit:?}",
                    args.proxies
                )
            })? {
            Some(Report::Synced) => synced += 1,
            Some(Report::Received {
                client,
                type_url,
                names,
                bytes: b,
                ..
            }) => {
                if args.verbose {
                    eprintln!(
                        "proxy {client}: {} {} resources {:?}",
                        type_url.rsplit('.').next().unwrap_or_default(),
                        names.len(),
                        names.iter().take(3).collect::<Vec<_>>()
                    );
                }
                bytes += b
            }
            Some(Report::Rejected {
                client,
                type_url,
                error,
            }) => eprintln!("proxy {client} rejected {type_url}: {error}"),
            Some(Report::Closed { client, error }) => {
                bail!("proxy {client}'s stream closed during initial sync: {error:?}")
            }
            Some(Report::ProxySynced { .. } | Report::Matched { .. } | Report::Retrying { .. }) => {
            }
            None => bail!("all clients stopped"),
        }
    }
    let initial = started.elapsed();
    let initial_bytes = bytes;
    let cpu_initial = stats::cpu_seconds(pid).unwrap_or_default() - cpu_start;
    // Let trailing responses drain before measuring changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(r) = rx.try_recv() {
        if let Report::Received { bytes: b, .. } = r {
            bytes += b;
        }
    }

    // The changed registry files are written out before the phase, so that producing them
    // is not counted as the load generator's CPU during the changes.
    let registry_texts: Vec<String> = (0..args.changes)
        .map(|k| {
            let changed = Some(((k * 37) % args.services, k + 1));
            if args.yaml_registry {
                mesh::registry_yaml(&spec, changed)
            } else {
                mesh::registry_json(&spec, changed)
            }
        })
        .collect();
    let rss_synced = stats::rss_mib(pid).unwrap_or_default();
    let peak_synced = stats::peak_rss_mib(pid).unwrap_or_default();
    let mut eds = Vec::new();
    let cpu_before = stats::cpu_seconds(pid).unwrap_or_default();
    let own_before = stats::cpu_seconds(std::process::id()).unwrap_or_default();
    let bytes_before = bytes;
    eprintln!("phase: endpoint changes (server pid {pid})");
    for (k, text) in registry_texts.iter().enumerate() {
        let s = (k * 37) % args.services;
        std::fs::write(dir.join(registry_file), text)?;
        let since = Instant::now();
        let cluster = format!("outbound|9080||{}", mesh::hostname(s));
        eds.extend(
            converge(
                &mut rx,
                args.proxies,
                client::ENDPOINT,
                &cluster,
                since,
                limit,
                &mut bytes,
            )
            .await?,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cpu_eds = stats::cpu_seconds(pid).unwrap_or_default() - cpu_before;
    let own_eds = stats::cpu_seconds(std::process::id()).unwrap_or_default() - own_before;
    let bytes_eds = bytes - bytes_before;

    let mut rds = Vec::new();
    let cpu_before = stats::cpu_seconds(pid).unwrap_or_default();
    let bytes_before = bytes;
    eprintln!("phase: VirtualService changes");
    for k in 0..args.changes.min(args.virtual_services) {
        let i = k % args.virtual_services.max(1);
        // Each VirtualService starts at 80; every visit flips it, so each write is a real change.
        let weight = if (k / args.virtual_services.max(1)) % 2 == 0 {
            50
        } else {
            80
        };
        std::fs::write(
            dir.join(format!("config/virtual-services/svc-{i}.yaml")),
            mesh::virtual_service_yaml(i, weight),
        )?;
        let since = Instant::now();
        rds.extend(
            converge(
                &mut rx,
                args.proxies,
                client::ROUTE,
                "9080",
                since,
                limit,
                &mut bytes,
            )
            .await?,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cpu_rds = stats::cpu_seconds(pid).unwrap_or_default() - cpu_before;
    let bytes_rds = bytes - bytes_before;
    let rss = stats::peak_rss_mib(pid).unwrap_or_default();
    let rss_end = stats::rss_mib(pid).unwrap_or_default();

    println!("mesh: {} services x {} endpoints, {} VirtualServices, {} DestinationRules; {} proxies (Delta xDS)", args.services, args.endpoints, args.virtual_services, args.destination_rules, args.proxies);
    println!(
        "initial sync of all proxies: {:.2} s, {:.1} CPU-s, {:.1} MiB sent",
        initial.as_secs_f64(),
        cpu_initial,
        initial_bytes as f64 / 1048576.0
    );
    println!(
        "| change (x{}) | p50 ms | p99 ms | max ms |\n|---|---|---|---|",
        args.changes
    );
    println!(
        "{}",
        line("one endpoint (EDS push, debounce included)", eds)
    );
    println!(
        "{}",
        line("one VirtualService (RDS push, debounce included)", rds)
    );
    println!("endpoint changes: {cpu_eds:.2} CPU-s, {:.1} KiB sent; VirtualService changes: {cpu_rds:.2} CPU-s, {:.1} KiB sent", bytes_eds as f64 / 1024.0, bytes_rds as f64 / 1024.0);
    println!("load generator's own CPU during the endpoint changes (its clients share the machine): {own_eds:.2} CPU-s");
    println!("RSS of capstan discovery: {rss_synced:.1} MiB after the initial sync (peak so far {peak_synced:.1} MiB), {rss_end:.1} MiB at the end; peak {rss:.1} MiB");
    if let Ok(text) = http_get(monitoring_port, "/metrics").await {
        let wanted = [
            "pilot_xds_push_time",
            "pilot_proxy_convergence_time",
            "pilot_push_triggers",
            "pilot_total_xds_rejects",
        ];
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && wanted.iter().any(|w| l.starts_with(w)))
        {
            println!("server metric: {line}");
        }
    }
    drop(server);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
