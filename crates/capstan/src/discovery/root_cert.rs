//! Publishes the mesh's root certificate as the ConfigMap `istio-ca-root-cert` (key
//! `root-cert.pem`) in every namespace, as istiod's namespace controller does
//! (`pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go`): workloads mount it to
//! verify the control plane. New namespaces get it; an edited or deleted copy is restored.
//! The content is the CA's trust bundle: when it changes (a reloaded `cacerts`, a root
//! rotation adding or retiring a root), every copy is rewritten.

use capstan_ca::CurrentCa;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Name of the ConfigMap.
pub const CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key holding the PEM roots.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Field manager of the writes.
const MANAGER: &str = "capstan-discovery";
/// Namespaces istiod leaves alone (`inject.IgnoredNamespaces`).
const IGNORED: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];
/// Failed writes are retried this often.
const RETRY: Duration = Duration::from_secs(5);

/// The ConfigMap as it should be.
fn desired(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG_MAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "istio.io/config".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_owned(),
            root_pem.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// Whether a namespace should have the ConfigMap: not one of the system namespaces istiod
/// skips, and not being deleted (the API server refuses new objects there).
fn wanted(namespace: &Namespace) -> bool {
    let name = namespace.metadata.name.as_deref().unwrap_or_default();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    !name.is_empty() && !IGNORED.contains(&name) && !terminating
}

/// Whether a ConfigMap holds the right root.
fn up_to_date(config_map: &ConfigMap, root_pem: &str) -> bool {
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(ROOT_CERT_KEY))
        .is_some_and(|v| v == root_pem)
}

enum Event {
    Namespace(watcher::Event<Namespace>),
    ConfigMap(watcher::Event<ConfigMap>),
    Retry,
    /// The CA's trust bundle is now this.
    Roots(String),
}

/// Keeps the ConfigMap, holding the CA's current trust bundle, in every namespace. Runs until
/// the process ends; API errors are logged and retried.
pub async fn run(client: kube::Client, ca: CurrentCa) {
    let mut root_pem = ca.get().root_cert_pem().to_owned();
    let namespaces = watcher(
        kube::Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .map(|e| e.map(Event::Namespace))
    .boxed();
    let config_maps = watcher(
        kube::Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
    )
    .map(|e| e.map(Event::ConfigMap))
    .boxed();
    let retries = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(RETRY))
        .map(|_| Ok(Event::Retry));
    let bundles = futures::stream::unfold(ca, |mut ca| async move {
        let next = ca.changed().await.root_cert_pem().to_owned();
        Some((Ok(Event::Roots(next)), ca))
    })
    .boxed();
    let mut events = futures::stream::select(
        futures::stream::select(namespaces, config_maps),
        futures::stream::select(retries, bundles),
    );

    // Namespaces that should have the ConfigMap, those whose copy is known right, and those
    // whose write failed.
    let mut active: BTreeSet<String> = BTreeSet::new();
    let mut correct: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let params = PatchParams::apply(MANAGER).force();
    let publish = |namespace: String, root_pem: &str| {
        let client = client.clone();
        let params = params.clone();
        let object = desired(&namespace, root_pem);
        async move {
            let api = kube::Api::<ConfigMap>::namespaced(client, &namespace);
            match api.patch(CONFIG_MAP, &params, &Patch::Apply(&object)).await {
                Ok(_) => {
                    tracing::debug!(%namespace, "published {CONFIG_MAP}");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(%namespace, error = %e, "publishing {CONFIG_MAP} failed; retrying");
                    Err(namespace)
                }
            }
        }
    };
    while let Some(event) = events.next().await {
        let mut todo: Vec<String> = Vec::new();
        match event {
            Err(e) => tracing::warn!(error = %e, "watching namespaces or {CONFIG_MAP}"),
            Ok(Event::Namespace(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns))) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                if wanted(&ns) {
                    if active.insert(name.clone()) && !correct.contains(&name) {
                        todo.push(name);
                    }
                } else {
                    active.remove(&name);
                }
            }
            Ok(Event::Namespace(watcher::Event::Delete(ns))) => {
                let name = ns.metadata.name.unwrap_or_default();
                active.remove(&name);
                correct.remove(&name);
                failed.remove(&name);
            }
            Ok(Event::ConfigMap(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                let name = cm.metadata.namespace.clone().unwrap_or_default();
                if up_to_date(&cm, &root_pem) {
                    correct.insert(name);
                } else {
                    correct.remove(&name);
                    if active.contains(&name) {
                        todo.push(name);
                    }
                }
            }
            Ok(Event::ConfigMap(watcher::Event::Delete(cm))) => {
                let name = cm.metadata.namespace.unwrap_or_default();
                correct.remove(&name);
                if active.contains(&name) {
                    todo.push(name);
                }
            }
            Ok(Event::Retry) => {
                todo.extend(
                    std::mem::take(&mut failed)
                        .into_iter()
                        .filter(|ns| active.contains(ns) && !correct.contains(ns)),
                );
            }
            Ok(Event::Roots(next)) => {
                if next != root_pem {
                    tracing::info!(
                        namespaces = active.len(),
                        "the CA's trust bundle changed: rewriting every {CONFIG_MAP}"
                    );
                    root_pem = next;
                    correct.clear();
                    failed.clear();
                    todo.extend(active.iter().cloned());
                }
            }
            // A re-list: nothing to do until its objects arrive.
            Ok(Event::Namespace(_) | Event::ConfigMap(_)) => {}
        }
        for namespace in todo {
            if let Err(namespace) = publish(namespace, &root_pem).await {
                failed.insert(namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, phase: Option<&str>) -> Namespace {
        Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: phase.map(|p| k8s_openapi::api::core::v1::NamespaceStatus {
                phase: Some(p.into()),
                ..Default::default()
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn which_namespaces_get_the_root() {
        let cases = [
            (namespace("default", Some("Active")), true),
            (namespace("bookinfo", None), true),
            (namespace("kube-system", Some("Active")), false),
            (namespace("going", Some("Terminating")), false),
        ];
        for (ns, want) in cases {
            assert_eq!(wanted(&ns), want, "{:?}", ns.metadata.name);
        }
    }

    #[test]
    fn only_the_exact_root_is_up_to_date() {
        let right = desired("default", "ROOT");
        assert!(up_to_date(&right, "ROOT"));
        assert!(!up_to_date(&desired("default", "OTHER"), "ROOT"));
        assert!(!up_to_date(&ConfigMap::default(), "ROOT"));
        assert_eq!(right.metadata.name.as_deref(), Some(CONFIG_MAP));
    }
}
