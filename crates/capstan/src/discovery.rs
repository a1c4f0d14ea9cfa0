//! `capstan discovery`: the control plane. Today it runs the config side (Galley): file config
//! sources feeding the store, hot reload, and the debug endpoints. The xDS server joins it next.

use anyhow::{Context as _, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use capstan_api::CheckOptions;
use capstan_config::{ConfigStore, FileSource};
use capstan_registry::file::FileRegistry;
use capstan_registry::ServiceIndex;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `capstan discovery`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory (recursive) or file of Istio YAML/JSON config; repeatable. Hot-reloaded.
    #[arg(long = "config-dir", required = true)]
    config_dirs: Vec<PathBuf>,
    /// File registry (services and endpoints in YAML); hot-reloaded.
    #[arg(long = "registry-file")]
    registry_file: Option<PathBuf>,
    /// DNS suffix of the mesh.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
    /// Address of the debug endpoints (/debug/*); local only by default since they show all config.
    #[arg(long = "debug-addr", default_value = "127.0.0.1:8080")]
    debug_addr: SocketAddr,
    /// Address of /ready (the monitoring port in istiod).
    #[arg(long = "monitoring-addr", default_value = "127.0.0.1:15014")]
    monitoring_addr: SocketAddr,
    /// Quiet period after a config change before it is applied.
    #[arg(long = "debounce-ms", default_value_t = 100)]
    debounce_ms: u64,
}

#[derive(Clone)]
struct AppState {
    store: Arc<ConfigStore>,
    index: Arc<ServiceIndex>,
}

#[derive(Deserialize)]
struct ConfigzQuery {
    kind: Option<String>,
    namespace: Option<String>,
}

#[derive(Serialize)]
struct ConfigzEntry<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    source: &'a str,
    revision: u64,
    object: serde_json::Value,
}

async fn configz(
    State(state): State<AppState>,
    Query(q): Query<ConfigzQuery>,
) -> impl IntoResponse {
    let snapshot = state.store.snapshot();
    let entries: Vec<ConfigzEntry<'_>> = snapshot
        .objects
        .iter()
        .filter(|(k, _)| {
            q.kind
                .as_deref()
                .is_none_or(|kind| kind.eq_ignore_ascii_case(k.kind.name()))
        })
        .filter(|(k, _)| q.namespace.as_deref().is_none_or(|ns| ns == k.namespace))
        .map(|(k, v)| ConfigzEntry {
            kind: k.kind.name(),
            namespace: &k.namespace,
            name: &k.name,
            source: &v.source,
            revision: v.revision,
            object: v.object.to_value(),
        })
        .collect();
    let body = serde_json::json!({ "revision": snapshot.revision, "objects": entries });
    Json(body).into_response()
}

#[derive(Deserialize)]
struct RegistryzQuery {
    hostname: Option<String>,
}

/// Services with their endpoints, as the aggregate index sees them (istiod's `/debug/registryz`).
async fn registryz(
    State(state): State<AppState>,
    Query(q): Query<RegistryzQuery>,
) -> impl IntoResponse {
    let snapshot = state.index.snapshot();
    let none = Default::default();
    let services: Vec<serde_json::Value> = snapshot
        .services()
        .filter(|s| q.hostname.as_deref().is_none_or(|h| h == s.hostname))
        .map(|s| {
            let endpoints: serde_json::Map<String, serde_json::Value> = s
                .ports
                .iter()
                .map(|p| {
                    (
                        p.port.to_string(),
                        serde_json::json!(snapshot
                            .endpoints(&s.hostname, p.port, &none)
                            .collect::<Vec<_>>()),
                    )
                })
                .collect();
            serde_json::json!({ "service": s, "endpoints": endpoints })
        })
        .collect();
    Json(serde_json::json!({ "version": snapshot.version, "services": services }))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.snapshot().revision > 0 {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "config not loaded yet\n")
    }
}

async fn serve(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .await
        .with_context(|| format!("serving {addr}"))
}

/// Runs until interrupted.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        for dir in &args.config_dirs {
            anyhow::ensure!(
                dir.exists(),
                "config directory {} does not exist",
                dir.display()
            );
        }
        let store = Arc::new(ConfigStore::new());
        let opts = CheckOptions {
            domain_suffix: args.domain.clone(),
            ..CheckOptions::default()
        };
        let source = FileSource::new(args.config_dirs.clone(), opts);
        let debounce = Duration::from_millis(args.debounce_ms);
        let watcher = tokio::spawn(source.run(store.clone(), debounce));
        let index = Arc::new(ServiceIndex::new());
        if let Some(path) = args.registry_file.clone() {
            anyhow::ensure!(
                path.is_file(),
                "registry file {} does not exist",
                path.display()
            );
            let registry = FileRegistry::new(path);
            let index = index.clone();
            tokio::spawn(async move {
                if let Err(e) = registry.run(index, debounce).await {
                    tracing::error!(error = %e, "file registry watcher stopped");
                }
            });
        }
        let state = AppState { store, index };
        let debug = Router::new()
            .route("/debug/configz", get(configz))
            .route("/debug/registryz", get(registryz))
            .with_state(state.clone());
        let monitoring = Router::new().route("/ready", get(ready)).with_state(state);
        tokio::select! {
            r = serve(args.debug_addr, debug) => r,
            r = serve(args.monitoring_addr, monitoring) => r,
            r = watcher => match r {
                Ok(Ok(())) => anyhow::bail!("config watcher stopped"),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("watching config directories")),
                Err(e) => Err(anyhow::Error::new(e).context("config watcher task")),
            },
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; shutting down");
                Ok(())
            }
        }
    })
}
