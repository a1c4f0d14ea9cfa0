//! `capstan discovery`: the control plane. Config sources feed the store, registries feed the
//! service index, changes are debounced into pushes, and the ADS server sends every connected
//! proxy its own LDS/RDS/CDS/EDS.

mod ca;
mod credentials;
mod debug;
mod dns_cert;
mod dump;
pub(crate) mod dump_routes;
mod grpc_server;
mod inject;
mod jwks;
mod leader;
mod metrics;
mod registries;
mod root_cert;
mod secure;
mod shutdown;
mod status;
mod webhook;

use anyhow::{Context as _, Result};
use capstan_api::CheckOptions;
use capstan_config::{ConfigStore, FileSource};
use capstan_registry::ServiceIndex;
use capstan_xds::context::{MeshConfig, PushContext};
use capstan_xds::debounce::{self, Change, DebounceOptions};
use capstan_xds::generate::istio::IstioGenerator;
use capstan_xds::{AdsOptions, AdsServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Arguments of `capstan discovery`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory (recursive) or file of Istio YAML/JSON config; repeatable. Hot-reloaded.
    #[arg(long = "config-dir")]
    config_dirs: Vec<PathBuf>,
    /// File registry (services and endpoints in YAML); hot-reloaded.
    #[arg(long = "registry-file")]
    registry_file: Option<PathBuf>,
    /// Kubernetes: Istio config from its CRDs and the service registry (Services,
    /// EndpointSlices, Pods, Nodes). The kubeconfig to use, or `in-cluster`.
    #[arg(long)]
    kubeconfig: Option<String>,
    /// MCP-over-xDS config source: another control plane's plaintext xDS address,
    /// `xds://HOST:PORT` (repeatable). Its Istio config is validated like files' and kept
    /// while it is unreachable.
    #[arg(long = "config-source", value_name = "xds://HOST:PORT")]
    config_sources: Vec<String>,
    /// Consul registry: the agent's HTTP address.
    #[arg(long = "consul-addr")]
    consul_addr: Option<String>,
    /// DNS suffix of the mesh.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
    /// Plaintext gRPC xDS (ADS) address.
    #[arg(long = "xds-addr", default_value = "0.0.0.0:15010")]
    xds_addr: SocketAddr,
    /// Debug endpoints (/debug/*): local only by default since they show every proxy's config.
    #[arg(long = "debug-addr", default_value = "127.0.0.1:8080")]
    debug_addr: SocketAddr,
    /// Monitoring endpoints (/metrics, /ready).
    #[arg(long = "monitoring-addr", default_value = "0.0.0.0:15014")]
    monitoring_addr: SocketAddr,
    /// Quiet period of the file watchers (config directories, registry file) before a reload.
    #[arg(long = "file-debounce-ms", default_value_t = 100)]
    file_debounce_ms: u64,
    /// Quiet period after a change before it is pushed (PILOT_DEBOUNCE_AFTER).
    #[arg(long = "debounce-ms", default_value_t = 100)]
    debounce_ms: u64,
    /// The quiet period after an idle spell; it doubles with each change of a burst up to
    /// `--debounce-ms`. Equal to `--debounce-ms`: istiod's fixed debounce.
    #[arg(long = "debounce-min-ms", default_value_t = 5)]
    debounce_min_ms: u64,
    /// Longest delay of a push while changes keep coming (PILOT_DEBOUNCE_MAX).
    #[arg(long = "debounce-max-ms", default_value_t = 10_000)]
    debounce_max_ms: u64,
    /// Most xDS streams with responses in flight (sent, not yet acknowledged) at once; the
    /// others wait their turn before sending. Bounds the send buffers a sync of thousands of
    /// proxies holds together.
    #[arg(long = "max-streams-in-flight", default_value_t = AdsOptions::default().max_streams_in_flight)]
    max_streams_in_flight: usize,
    /// On SIGTERM or SIGINT, the open xDS streams are closed spread over this window so their
    /// proxies reconnect to other replicas a few at a time (e.g. 5s, 1m).
    #[arg(long = "drain-duration", default_value = "5s", value_parser = ca::parse_duration)]
    drain_duration: Duration,
    /// The certificate authority and the TLS xDS port.
    #[command(flatten)]
    ca: ca::CaArgs,
    /// The admission webhooks.
    #[command(flatten)]
    webhook: webhook::WebhookArgs,
    /// The sidecar injector (`/inject` on the webhook port).
    #[command(flatten)]
    inject: inject::InjectArgs,
    /// The JWKS resolver (RequestAuthentication `jwksUri`s).
    #[command(flatten)]
    jwks: jwks::JwksArgs,
    #[command(flatten)]
    leader: leader::LeaderArgs,
}

/// Everything the debug and monitoring endpoints read.
#[derive(Clone)]
pub(crate) struct State {
    pub store: Arc<ConfigStore>,
    pub index: Arc<ServiceIndex>,
    pub generator: Arc<IstioGenerator>,
    pub ads: AdsServer<IstioGenerator>,
    /// The push pipeline's counters (`pilot_push_triggers`, `pilot_debounce_time`, ...).
    pub pipeline: Arc<capstan_xds::pipeline_metrics::PipelineMetrics>,
    /// Discovery watches a Kubernetes cluster (`istiod_managed_clusters`).
    pub kubernetes: bool,
    /// The CA, if one runs (`citadel_server_*`).
    pub ca: Option<ca::CaObserved>,
}

/// Forwards a broadcast of changes into the push pipeline; a lagging receiver means "something
/// changed, but what is lost", which becomes a full push.
fn forward<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    tx: mpsc::Sender<Change>,
    wrap: fn(T) -> Change,
) {
    tokio::spawn(async move {
        loop {
            let change = match rx.recv().await {
                Ok(v) => wrap(v),
                Err(broadcast::error::RecvError::Lagged(_)) => Change::Everything,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
}

async fn serve_xds(
    addr: SocketAddr,
    ads: AdsServer<IstioGenerator>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    // gRPC servers share ports with SO_REUSEPORT; bind first so a port in use is an error.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the xDS address {addr}"))?;
    tracing::info!(%addr, "serving xDS (ADS, SotW and Delta)");
    let service = ads.service();
    let incoming = futures::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |tcp| {
            let service = service.clone();
            async move {
                match tcp {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        Some((Box::new(tcp) as Box<dyn grpc_server::Io>, service))
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting on the xDS port failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    }
                }
            }
        },
    );
    // Stopped only after the drain: until then new streams get UNAVAILABLE, not a refused
    // connection, and the closed streams' statuses reach their clients.
    grpc_server::serve(incoming, async move {
        let _ = stop.wait_for(|stop| *stop).await;
    })
    .await;
    Ok(())
}

/// Runs until SIGTERM or SIGINT, then drains and returns.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let signals = shutdown::Signals::install()?;
        anyhow::ensure!(
            !args.config_dirs.is_empty() || args.kubeconfig.is_some() || !args.config_sources.is_empty(),
            "no config source: give --config-dir DIR (Istio YAML files), --kubeconfig PATH (Istio CRDs) \
             or --config-source xds://HOST:PORT (another control plane over MCP-over-xDS)"
        );
        for dir in &args.config_dirs {
            anyhow::ensure!(dir.exists(), "config directory {} does not exist", dir.display());
        }
        let xds_sources = args
            .config_sources
            .iter()
            .map(|url| {
                let opts = CheckOptions { domain_suffix: args.domain.clone(), ..CheckOptions::default() };
                capstan_config::XdsSource::new(url, opts)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let debounce = Duration::from_millis(args.debounce_ms);
        let file_debounce = Duration::from_millis(args.file_debounce_ms);
        let store = Arc::new(ConfigStore::new());
        let index = Arc::new(ServiceIndex::new());
        let mesh = MeshConfig { domain_suffix: args.domain.clone(), ..MeshConfig::default() };
        let generator = Arc::new(IstioGenerator::new(PushContext::new(store.snapshot(), index.snapshot(), mesh.clone(), 0)));
        let ads_options = AdsOptions {
            max_streams_in_flight: args.max_streams_in_flight,
            ..AdsOptions::default()
        };
        let ads = AdsServer::new(generator.clone(), ads_options);
        // Closed until every source has synced once and a push has been built from all of it.
        ads.set_ready(false);
        let sources_synced = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // The push pipeline: store and index changes → debounce → new PushContext → push.
        let (tx, rx) = mpsc::channel(4096);
        forward(store.subscribe(), tx.clone(), Change::Config);
        forward(index.subscribe(), tx.clone(), Change::Registry);
        let opts = DebounceOptions {
            quiet: debounce,
            min_quiet: Duration::from_millis(args.debounce_min_ms),
            max_delay: Duration::from_millis(args.debounce_max_ms),
        };
        let pipeline = Arc::new(capstan_xds::pipeline_metrics::PipelineMetrics::default());
        {
            let (store, index, generator, ads, pipeline, synced) = (store.clone(), index.clone(), generator.clone(), ads.clone(), pipeline.clone(), sources_synced.clone());
            tokio::spawn(debounce::run(rx, opts, pipeline.clone(), move |push| {
                // Read before the snapshots: if every source had synced, this push holds it all.
                let complete = synced.load(std::sync::atomic::Ordering::SeqCst);
                let started = std::time::Instant::now();
                generator.advance(store.snapshot(), index.snapshot(), &push);
                let took = started.elapsed();
                pipeline.record_pushcontext_init(took);
                tracing::debug!(version = push.version, full = push.full, eds = push.eds_hosts.len(), build = ?took, "push");
                ads.push(push);
                if complete && !ads.is_ready() && !ads.is_draining() {
                    tracing::info!("every config source and registry synced; serving xDS");
                    ads.set_ready(true);
                }
            }));
        }

        // Sources and registries.
        if !args.config_dirs.is_empty() {
            let opts = CheckOptions { domain_suffix: args.domain.clone(), ..CheckOptions::default() };
            let mut source = FileSource::new(args.config_dirs.clone(), opts);
            source.sync(&store);
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = source.run(store, file_debounce).await {
                    tracing::error!(error = %e, "config directory watcher stopped");
                }
            });
        }
        registries::spawn_service_entry_sync(store.clone(), index.clone());
        jwks::spawn(&args.jwks, store.clone(), generator.clone(), tx.clone())?;
        if let Some(path) = args.registry_file.clone() {
            registries::spawn_file(path, index.clone(), file_debounce)?;
        }
        // First-sync signals of the sources that load asynchronously (files loaded above).
        let mut pending: Vec<(String, tokio::sync::watch::Receiver<bool>)> = Vec::new();
        for source in xds_sources {
            pending.push((format!("MCP config source {}", source.name()), source.ready()));
            tokio::spawn(source.run(store.clone()));
        }
        let mut kube_client = None;
        let mut status_reports = None;
        if let Some(kubeconfig) = &args.kubeconfig {
            let path = (kubeconfig != "in-cluster").then(|| PathBuf::from(kubeconfig));
            let (client, ready) = registries::spawn_kubernetes(path, &args.domain, index.clone()).await?;
            pending.push(("Kubernetes registry".into(), ready));
            let opts = CheckOptions { domain_suffix: args.domain.clone(), ..CheckOptions::default() };
            let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
            status_reports = Some(status_rx);
            let source = capstan_config::KubernetesSource::new(opts).with_status_reports(status_tx);
            pending.push(("Kubernetes config".into(), source.ready()));
            tokio::spawn(source.run(client.clone(), store.clone()));
            let secrets = credentials::spawn(client.clone(), generator.clone(), tx.clone());
            pending.push(("Kubernetes Secrets (gateway credentials)".into(), secrets));
            kube_client = Some(client);
        }
        if let Some(addr) = args.consul_addr.clone() {
            let status = registries::spawn_consul(addr, index.clone())?;
            pending.push(("Consul registry".into(), status.synced()));
        }
        tokio::spawn(async move {
            for (what, mut ready) in pending {
                if ready.wait_for(|r| *r).await.is_err() {
                    tracing::error!(source = %what, "stopped before its first sync; xDS stays unready");
                    return;
                }
                tracing::debug!(source = %what, "first sync done");
            }
            sources_synced.store(true, std::sync::atomic::Ordering::SeqCst);
            // A push built from now on holds every source: ask for one.
            let _ = tx.send(Change::Everything).await;
        });

        // The CA, and with Kubernetes its root published in every namespace.
        let ca = args.ca.start(kube_client.as_ref()).await?;
        // istiod's DNS certificate, issued by the CA: port 15012's and, unless
        // --webhook-cert-dir is given, the webhooks', so it carries their Service's names too.
        let dns_cert = match &ca {
            Some(ca) => {
                let mut names = ca.dns_names.clone();
                if args.webhook.wants_mesh_certificate() {
                    names.extend(args.webhook.service_dns_names(&args.ca.system_namespace));
                }
                let names = dns_cert::unique_names(names);
                Some(dns_cert::start(ca.authority.clone(), names, ca.serving_ttl)?)
            }
            None => None,
        };
        // Cluster-wide writes are the elected leader's; every replica serves xDS.
        let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
        // Without an election this process leads; the sender is kept for the process's life
        // (a dropped one would end the leader-only tasks).
        let _leader_tx = match &kube_client {
            Some(client) if args.leader.enabled => {
                tokio::spawn(leader::run(
                    client.clone(),
                    args.ca.system_namespace.clone(),
                    args.leader.clone(),
                    leader_tx,
                ));
                None
            }
            _ => {
                leader_tx.send_replace(true);
                Some(leader_tx)
            }
        };
        let mesh_cert = ca.as_ref().zip(dns_cert.clone()).map(|(ca, cert)| webhook::MeshCertificate {
            cert,
            authority: ca.authority.clone(),
        });
        let webhook_cert = args.webhook.start(
            &args.ca.system_namespace,
            kube_client.as_ref(),
            leader_rx.clone(),
            mesh_cert,
        )?;
        if let (Some(client), Some(reports)) = (&kube_client, status_reports) {
            // Verdicts on watched objects, written to their status by the leader.
            tokio::spawn(status::run(client.clone(), reports, leader_rx.clone()));
        }
        if let (Some(ca), Some(client)) = (&ca, kube_client) {
            let authority = ca.authority.clone();
            tokio::spawn(leader::while_leader(
                leader_rx.clone(),
                "istio-ca-root-cert publisher",
                move || root_cert::run(client.clone(), authority.clone()),
            ));
        }
        let ca_observed = ca.as_ref().map(ca::Ca::observed);
        let secure_addr = args.ca.secure_xds_addr;
        let secure_service = ads.service();
        let serve_secure = async move {
            match ca.zip(dns_cert) {
                Some((ca, cert)) => secure::serve(secure_addr, ca, cert, secure_service).await,
                // Without a CA there is nothing to serve TLS with (the file-only default).
                None => std::future::pending().await,
            }
        };

        let state = State { store, index, generator, ads: ads.clone(), pipeline, kubernetes: args.kubeconfig.is_some(), ca: ca_observed };
        // Watched by the servers that stop gracefully once the xDS streams have drained.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (mut graceful, mut others) = (tokio::task::JoinSet::new(), tokio::task::JoinSet::new());
        graceful.spawn(serve_xds(args.xds_addr, ads.clone(), stop_rx.clone()));
        if let (Some(addr), Some(cert)) = (args.webhook.addr, webhook_cert) {
            let opts = CheckOptions { domain_suffix: args.domain.clone(), ..CheckOptions::default() };
            let routes = inject::add_route(webhook::routes(opts), args.inject.load()?);
            graceful.spawn(webhook::serve(addr, cert, routes, stop_rx));
        }
        others.spawn(serve_secure);
        others.spawn(debug::serve(args.debug_addr, debug::debug_router(state.clone())));
        others.spawn(debug::serve(args.monitoring_addr, debug::monitoring_router(state)));
        let drain = shutdown::Drain { ads, window: args.drain_duration, stop: stop_tx };
        shutdown::run(signals, graceful, others, drain).await
    });
    // Tasks still running (watchers, a file watcher's blocking read) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
