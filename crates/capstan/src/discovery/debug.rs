//! istiod's debug and monitoring endpoints: `/debug/configz`, `/debug/registryz`,
//! `/debug/syncz`, `/debug/config_dump?proxyID=`, `/ready`, and Prometheus `/metrics` (built
//! by [`super::metrics`]).

use super::State;
use anyhow::{Context as _, Result};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

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
    let registry = Arc::new(super::metrics::registry(state.clone()));
    let metrics = move || {
        let registry = registry.clone();
        async move {
            match super::metrics::render(&registry) {
                Ok(text) => ([("content-type", prometheus::TEXT_FORMAT)], text).into_response(),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics: {e}\n"),
                )
                    .into_response(),
            }
        }
    };
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
