//! Writes the validation verdict of every Istio object watched in Kubernetes to its `status`,
//! where istiod reports analysis (`status.validationMessages`, IstioStatus's shape): an object
//! skipped as invalid (applied with the webhook off, or before the install) gets an ERROR
//! message `IST0106 SchemaValidationError` with our field-path description, and the message is
//! removed once the object is fixed. Only the elected leader writes; a new leader rewrites
//! what the last one may have missed. A write is a merge patch of the `status` subresource,
//! made only when the status differs from what it should be, so our own write's watch event
//! changes nothing.

use capstan_api::Kind;
use capstan_config::kube::StatusReport;
use capstan_config::ConfigKey;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, watch};

/// Istio's analysis code for an object its schema validation refuses.
const CODE: &str = "IST0106";
const CODE_NAME: &str = "SchemaValidationError";

/// Our message as it should appear in `status.validationMessages`.
fn message(error: &str) -> Value {
    json!({
        "type": {"code": CODE, "name": CODE_NAME},
        "level": "ERROR",
        "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
        "description": error,
    })
}

fn is_ours(m: &Value) -> bool {
    m.pointer("/type/code").and_then(Value::as_str) == Some(CODE)
}

/// The merge patch bringing `current` to what the verdict says, or `None` when it already is.
/// Messages of other codes (written by someone else) are kept.
pub fn desired_patch(
    error: Option<&str>,
    generation: Option<i64>,
    current: Option<&Value>,
) -> Option<Value> {
    let existing: Vec<Value> = current
        .and_then(|s| s.get("validationMessages"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let others: Vec<Value> = existing.iter().filter(|m| !is_ours(m)).cloned().collect();
    let mut want = others.clone();
    if let Some(e) = error {
        want.push(message(e));
    }
    if want == existing {
        return None;
    }
    let mut status = serde_json::Map::new();
    status.insert(
        "validationMessages".into(),
        if want.is_empty() {
            Value::Null
        } else {
            Value::Array(want)
        },
    );
    if let Some(g) = generation.filter(|_| error.is_some()) {
        status.insert("observedGeneration".into(), json!(g));
    }
    Some(json!({ "status": status }))
}

fn api(client: &kube::Client, key: &ConfigKey) -> Api<DynamicObject> {
    let kind: Kind = key.kind;
    let version = kind.versions()[0];
    let ar = ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: format!("{}/{}", kind.group(), version),
        kind: kind.name().to_string(),
        plural: kind.plural().to_string(),
    };
    Api::namespaced_with(client.clone(), &key.namespace, &ar)
}

/// What was last seen of an object: its generation, why it was rejected, its status.
type Seen = (Option<i64>, Option<String>, Option<Value>);

/// Consumes the config source's reports; writes while `leader` is true.
pub async fn run(
    client: kube::Client,
    mut reports: mpsc::UnboundedReceiver<StatusReport>,
    mut leader: watch::Receiver<bool>,
) {
    // The latest verdict per object, and the patches not yet written.
    let mut latest: BTreeMap<ConfigKey, Seen> = BTreeMap::new();
    let mut pending: BTreeMap<ConfigKey, Value> = BTreeMap::new();
    loop {
        tokio::select! {
            report = reports.recv() => match report {
                None => return,
                Some(StatusReport::Deleted(key)) => {
                    latest.remove(&key);
                    pending.remove(&key);
                }
                Some(StatusReport::Seen { key, generation, error, status }) => {
                    match desired_patch(error.as_deref(), generation, status.as_ref()) {
                        Some(patch) => { pending.insert(key.clone(), patch); }
                        None => { pending.remove(&key); }
                    }
                    latest.insert(key, (generation, error, status));
                }
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new leader re-derives every patch from what was last seen.
                if *leader.borrow() {
                    pending = latest
                        .iter()
                        .filter_map(|(k, (g, e, s))| {
                            desired_patch(e.as_deref(), *g, s.as_ref()).map(|p| (k.clone(), p))
                        })
                        .collect();
                }
            }
        }
        if !*leader.borrow() {
            continue;
        }
        for (key, patch) in std::mem::take(&mut pending) {
            let params = PatchParams::default();
            match api(&client, &key)
                .patch_status(&key.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(%key, invalid = patch.pointer("/status/validationMessages").is_some_and(|m| !m.is_null()), "status written")
                }
                // Gone since: its Deleted report follows.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(%key, "status not written: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_object_gets_our_message_and_a_fixed_one_loses_it() {
        let p = desired_patch(Some("spec.http[0]: bad"), Some(3), None).unwrap();
        assert_eq!(
            p["status"]["validationMessages"][0]["type"]["code"],
            "IST0106"
        );
        assert_eq!(
            p["status"]["validationMessages"][0]["description"],
            "spec.http[0]: bad"
        );
        assert_eq!(p["status"]["observedGeneration"], 3);
        // Already written: nothing to do (our own write's watch event).
        let written = p["status"].clone();
        assert_eq!(
            desired_patch(Some("spec.http[0]: bad"), Some(3), Some(&written)),
            None
        );
        // Another error: rewritten.
        assert!(desired_patch(Some("spec.tcp: bad"), Some(4), Some(&written)).is_some());
        // Fixed: the message is removed.
        let cleared = desired_patch(None, Some(4), Some(&written)).unwrap();
        assert_eq!(cleared, json!({"status": {"validationMessages": null}}));
        // Valid and never marked: nothing.
        assert_eq!(desired_patch(None, Some(1), None), None);
        assert_eq!(desired_patch(None, Some(1), Some(&json!({}))), None);
    }

    #[test]
    fn messages_of_others_are_kept() {
        let theirs = json!({"type": {"code": "IST0101"}, "level": "WARNING"});
        let current = json!({"validationMessages": [theirs.clone()]});
        assert_eq!(desired_patch(None, None, Some(&current)), None);
        let p = desired_patch(Some("bad"), None, Some(&current)).unwrap();
        let msgs = p["status"]["validationMessages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], theirs);
        let current = p["status"].clone();
        let fixed = desired_patch(None, None, Some(&current)).unwrap();
        assert_eq!(fixed["status"]["validationMessages"], json!([theirs]));
    }
}
