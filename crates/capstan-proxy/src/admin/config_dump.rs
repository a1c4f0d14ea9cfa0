//! `/config_dump`, shaped like Envoy's `envoy.admin.v3.ConfigDump`: one entry each for the
//! bootstrap, clusters, listeners, routes, endpoints and secrets (private keys redacted),
//! resources rendered by [`super::render`].
//! Active versus warming follows the store's snapshot: a resource received but not (yet) in the
//! snapshot is warming.

use super::{render, rfc3339, AdminState};
use crate::bootstrap::struct_to_json;
use crate::resources::{ResourceSink, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use crate::store::Raw;
use serde_json::{json, Map, Value};
use std::time::UNIX_EPOCH;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

fn bootstrap(state: &AdminState) -> Value {
    let b = &state.bootstrap;
    let mut node = Map::new();
    node.insert("id".into(), json!(b.node.id));
    node.insert("cluster".into(), json!(b.node.cluster));
    if let Some(m) = &b.node.metadata {
        node.insert("metadata".into(), struct_to_json(m));
    }
    if let Some(l) = &b.node.locality {
        node.insert(
            "locality".into(),
            json!({ "region": l.region, "zone": l.zone, "sub_zone": l.sub_zone }),
        );
    }
    node.insert("user_agent_name".into(), json!(b.node.user_agent_name));
    let mut boot = Map::new();
    boot.insert("node".into(), Value::Object(node));
    if let Some(ads) = &b.ads {
        boot.insert(
            "dynamic_resources".into(),
            json!({
                "lds_config": { "ads": {}, "resource_api_version": "V3" },
                "cds_config": { "ads": {}, "resource_api_version": "V3" },
                "ads_config": {
                    "api_type": if ads.delta { "DELTA_GRPC" } else { "GRPC" },
                    "transport_api_version": "V3",
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds-grpc" } }],
                },
            }),
        );
    }
    if let Some(a) = b.admin {
        boot.insert(
            "admin".into(),
            json!({ "address": { "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } } }),
        );
    }
    json!({ "@type": format!("{ADMIN}BootstrapConfigDump"), "bootstrap": boot })
}

/// The version of `type_url` last accepted.
fn version(state: &AdminState, type_url: &str) -> String {
    state
        .status
        .type_status(type_url)
        .map(|t| t.version)
        .unwrap_or_default()
}

/// `{version_info, <key>: resource, last_updated}`.
fn entry(raw: &Raw, key: &str) -> Value {
    let mut m = Map::new();
    m.insert("version_info".into(), json!(raw.version));
    m.insert(key.into(), render::resource(&raw.resource));
    m.insert("last_updated".into(), json!(rfc3339(raw.applied_at)));
    Value::Object(m)
}

/// The last NACK of `type_url`, as Envoy's `error_state` (`UpdateFailureState`).
fn error_state(state: &AdminState, type_url: &str) -> Option<Value> {
    let t = state.status.type_status(type_url)?;
    let (details, at) = t.last_error?;
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(json!({ "details": details, "last_update_attempt": rfc3339(secs) }))
}

fn clusters(state: &AdminState) -> Value {
    let snapshot = state.store.snapshot();
    let (mut active, mut warming) = (Vec::new(), Vec::new());
    for (name, raw) in state.store.raw(CLUSTER) {
        if snapshot.clusters.contains_key(&name) {
            active.push(entry(&raw, "cluster"));
        } else {
            warming.push(entry(&raw, "cluster"));
        }
    }
    let mut v = json!({
        "@type": format!("{ADMIN}ClustersConfigDump"),
        "version_info": version(state, CLUSTER),
        "static_clusters": [],
        "dynamic_active_clusters": active,
        "dynamic_warming_clusters": warming,
    });
    if let (Some(e), Some(m)) = (error_state(state, CLUSTER), v.as_object_mut()) {
        m.insert("error_state".into(), e);
    }
    v
}

fn listeners(state: &AdminState) -> Value {
    let snapshot = state.store.snapshot();
    let dynamic: Vec<Value> = state
        .store
        .raw(LISTENER)
        .into_iter()
        .map(|(name, raw)| {
            let which = if snapshot.listeners.contains_key(&name) {
                "active_state"
            } else {
                "warming_state"
            };
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert(which.into(), entry(&raw, "listener"));
            Value::Object(m)
        })
        .collect();
    let mut v = json!({
        "@type": format!("{ADMIN}ListenersConfigDump"),
        "version_info": version(state, LISTENER),
        "static_listeners": [],
        "dynamic_listeners": dynamic,
    });
    if let (Some(e), Some(m)) = (error_state(state, LISTENER), v.as_object_mut()) {
        m.insert("error_state".into(), e);
    }
    v
}

fn routes(state: &AdminState) -> Value {
    let dynamic: Vec<Value> = state
        .store
        .raw(ROUTE)
        .values()
        .map(|raw| entry(raw, "route_config"))
        .collect();
    json!({
        "@type": format!("{ADMIN}RoutesConfigDump"),
        "static_route_configs": [],
        "dynamic_route_configs": dynamic,
    })
}

fn endpoints(state: &AdminState) -> Value {
    let dynamic: Vec<Value> = state
        .store
        .raw(ENDPOINT)
        .values()
        .map(|raw| entry(raw, "endpoint_config"))
        .collect();
    json!({
        "@type": format!("{ADMIN}EndpointsConfigDump"),
        "static_endpoint_configs": [],
        "dynamic_endpoint_configs": dynamic,
    })
}

/// Envoy's `SecretsConfigDump`: the secrets received (as the store keeps them: redacted), and
/// those the listeners name that have not arrived as warming.
fn secrets(state: &AdminState) -> Value {
    let held = state.store.raw(SECRET);
    let active: Vec<Value> = held
        .iter()
        .map(|(name, raw)| {
            json!({
                "name": name,
                "version_info": raw.version,
                "last_updated": rfc3339(raw.applied_at),
                "secret": render::resource(&raw.resource),
            })
        })
        .collect();
    let warming: Vec<Value> = state
        .store
        .wanted(SECRET)
        .into_iter()
        .filter(|n| !held.contains_key(n))
        .map(|n| json!({ "name": n }))
        .collect();
    json!({
        "@type": format!("{ADMIN}SecretsConfigDump"),
        "static_secrets": [],
        "dynamic_active_secrets": active,
        "dynamic_warming_secrets": warming,
    })
}

/// The whole dump, pretty-printed as Envoy prints it.
pub fn render(state: &AdminState) -> String {
    let dump = json!({
        "configs": [
            bootstrap(state),
            clusters(state),
            listeners(state),
            routes(state),
            endpoints(state),
            secrets(state),
        ]
    });
    let mut s =
        serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
