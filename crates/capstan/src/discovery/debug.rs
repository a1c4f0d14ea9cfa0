//! istiod's debug and monitoring endpoints: `/debug/configz`, `/debug/registryz`,
//! `/debug/syncz`, `/debug/config_dump?proxyID=`, `/ready`, and Prometheus `/metrics` with
//! Istio's metric names where a counterpart exists.

use super::State;
use anyhow::{Context as _, Result};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::fmt::Write as _;
use std::net::SocketAddr;

pub async fn serve(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .await
        .with_context(|| format!("serving {addr}"))
}

/// `/debug/*`.
pub fn debug_router(state: State) -> Router {
    Router::new()
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(state)
}

/// `/ready` and `/metrics`.
pub fn monitoring_router(state: State) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Deserialize)]
struct ConfigzQuery {
    kind: Option<String>,
    namespace: Option<String>,
}

async fn configz(
    AxState(state): AxState<State>,
    Query(q): Query<ConfigzQuery>,
) -> Json<serde_json::Value> {
    let snapshot = state.store.snapshot();
    let objects: Vec<serde_json::Value> = snapshot
        .objects
        .iter()
        .filter(|(k, _)| {
            q.kind
                .as_deref()
                .is_none_or(|kind| kind.eq_ignore_ascii_case(k.kind.name()))
        })
        .filter(|(k, _)| q.namespace.as_deref().is_none_or(|ns| ns == k.namespace))
        .map(|(k, v)| {
            serde_json::json!({
                "kind": k.kind.name(), "namespace": k.namespace, "name": k.name,
                "source": &*v.source, "revision": v.revision, "object": v.object.to_value(),
            })
        })
        .collect();
    Json(serde_json::json!({ "revision": snapshot.revision, "objects": objects }))
}

#[derive(Deserialize)]
struct RegistryzQuery {
    hostname: Option<String>,
}

async fn registryz(
    AxState(state): AxState<State>,
    Query(q): Query<RegistryzQuery>,
) -> Json<serde_json::Value> {
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

async fn syncz(AxState(state): AxState<State>) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "version": state.generator.context().version, "connections": state.ads.syncz() }),
    )
}

#[derive(Deserialize)]
struct DumpQuery {
    #[serde(rename = "proxyID")]
    proxy_id: String,
    format: Option<String>,
}

async fn config_dump(AxState(state): AxState<State>, Query(q): Query<DumpQuery>) -> Response {
    let connections = state.ads.syncz();
    // Exact id first, then a unique prefix (istioctl accepts `pod.namespace` forms too).
    let found = connections
        .iter()
        .find(|c| c.proxy_id == q.proxy_id)
        .or_else(|| {
            let matches: Vec<_> = connections
                .iter()
                .filter(|c| c.proxy_id.contains(&q.proxy_id))
                .collect();
            (matches.len() == 1).then(|| matches[0])
        });
    let Some(conn) = found else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no connected proxy matches {:?}; see /debug/syncz\n",
                q.proxy_id
            ),
        )
            .into_response();
    };
    match super::dump::dump(
        &*state.generator,
        &conn.proxy,
        q.format.as_deref() == Some("full"),
    ) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("generating config for {}: {e}\n", conn.proxy_id),
        )
            .into_response(),
    }
}

async fn ready(AxState(state): AxState<State>) -> impl IntoResponse {
    if state.ads.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if state.ads.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: config sources and registries still syncing\n",
        )
    }
}

async fn metrics(AxState(state): AxState<State>) -> impl IntoResponse {
    let m = state.ads.metrics();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "pilot_xds",
        "gauge",
        "Number of endpoints connected to this pilot using XDS.",
        m.connections,
    );
    metric(
        "pilot_xds_connections_total",
        "counter",
        "ADS streams accepted since start.",
        m.connections_total,
    );
    metric(
        "pilot_xds_pushes",
        "counter",
        "Pilot build and send errors for lds, rds, cds and eds (responses sent because of pushes).",
        m.push_responses,
    );
    metric(
        "pilot_push_triggers",
        "counter",
        "Total number of times a push was triggered.",
        m.pushes,
    );
    metric(
        "pilot_total_xds_rejects",
        "counter",
        "Total number of XDS responses from pilot rejected by proxy.",
        m.nacks,
    );
    metric(
        "pilot_xds_send_bytes_total",
        "counter",
        "Encoded bytes of all xDS responses sent.",
        m.bytes_sent,
    );
    metric(
        "pilot_xds_generation_errors_total",
        "counter",
        "Generation failures (the proxy kept its last config).",
        m.generation_errors,
    );
    metric(
        "pilot_xds_ack_timeouts_total",
        "counter",
        "Responses whose ACK did not arrive in time.",
        m.ack_timeouts,
    );
    metric(
        "pilot_xds_send_timeouts_total",
        "counter",
        "Streams closed because the proxy did not read.",
        m.send_timeouts,
    );
    let snapshot = state.store.snapshot();
    metric(
        "capstan_config_revision",
        "gauge",
        "Revision of the config store.",
        snapshot.revision,
    );
    metric(
        "capstan_config_objects",
        "gauge",
        "Validated config objects in the store.",
        snapshot.objects.len() as u64,
    );
    metric(
        "capstan_services",
        "gauge",
        "Services in the merged index.",
        state.index.snapshot().service_count() as u64,
    );
    let cache = state.generator.cache_stats();
    let _ = writeln!(
        out,
        "# HELP pilot_xds_cache_reads Reads of the push's shared-resource cache, by outcome.\n# TYPE pilot_xds_cache_reads counter\npilot_xds_cache_reads{{type=\"hit\"}} {}\npilot_xds_cache_reads{{type=\"miss\"}} {}",
        cache.hits, cache.misses
    );
    let _ = writeln!(out, "# HELP pilot_proxy_convergence_time Delay in seconds between config change and a proxy receiving all required configuration.\n# TYPE pilot_proxy_convergence_time summary");
    for q in [0.5, 0.9, 0.99] {
        if let Some(ms) = m.convergence.quantile_ms(q) {
            let _ = writeln!(
                out,
                "pilot_proxy_convergence_time{{quantile=\"{q}\"}} {}",
                ms as f64 / 1000.0
            );
        }
    }
    let push_time = state
        .push_time
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let _ = writeln!(out, "# HELP pilot_xds_push_time Time to build the state of a push (PushContext), seconds.\n# TYPE pilot_xds_push_time summary");
    for q in [0.5, 0.9, 0.99] {
        if let Some(ms) = push_time.quantile_ms(q) {
            let _ = writeln!(
                out,
                "pilot_xds_push_time{{quantile=\"{q}\"}} {}",
                ms as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        out,
        "pilot_xds_push_time_count {}\npilot_xds_push_time_sum {}",
        push_time.count,
        push_time.sum_ms as f64 / 1000.0
    );
    ([("content-type", "text/plain; version=0.0.4")], out)
}
