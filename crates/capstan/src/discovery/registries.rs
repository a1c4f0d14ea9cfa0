//! Starts the service registries `capstan discovery` was asked for, all feeding one index:
//! the file registry, Kubernetes, Consul, and ServiceEntry/WorkloadEntry from the config store.

use anyhow::{Context as _, Result};
use capstan_config::{ConfigStore, EventKind};
use capstan_registry::consul::{ConsulConfig, ConsulRegistry};
use capstan_registry::file::FileRegistry;
use capstan_registry::kubernetes::KubernetesRegistry;
use capstan_registry::serviceentry;
use capstan_registry::{RegistryId, RegistryKind, ServiceIndex};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The registry built from ServiceEntry and WorkloadEntry objects.
fn service_entry_id() -> RegistryId {
    RegistryId {
        kind: RegistryKind::ServiceEntry,
        name: "config".into(),
    }
}

/// Recomputes the ServiceEntry registry from the store's current objects. The index emits
/// events only for what actually changed, so recomputing on every relevant change is safe.
pub fn sync_service_entries(store: &ConfigStore, index: &ServiceIndex) -> usize {
    let snapshot = store.snapshot();
    let objects = snapshot
        .objects
        .values()
        .filter(|o| {
            matches!(
                o.object.kind,
                capstan_api::Kind::ServiceEntry | capstan_api::Kind::WorkloadEntry
            )
        })
        .map(|o| &*o.object);
    index
        .replace(&service_entry_id(), serviceentry::from_config(objects))
        .len()
}

/// Keeps the ServiceEntry registry in step with the store: recomputes whenever a ServiceEntry
/// or WorkloadEntry changes (or the subscriber lagged and cannot know).
pub fn spawn_service_entry_sync(store: Arc<ConfigStore>, index: Arc<ServiceIndex>) {
    let mut changes = store.subscribe();
    sync_service_entries(&store, &index);
    tokio::spawn(async move {
        loop {
            let relevant = match changes.recv().await {
                Ok(change) => change.events.iter().any(|e| {
                    matches!(
                        e.key.kind,
                        capstan_api::Kind::ServiceEntry | capstan_api::Kind::WorkloadEntry
                    ) && matches!(
                        e.event,
                        EventKind::Added | EventKind::Updated | EventKind::Deleted
                    )
                }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if relevant {
                sync_service_entries(&store, &index);
            }
        }
    });
}

/// Starts the file registry, after reading the file once (a bad file is logged and leaves the
/// registry empty until it is fixed, as later bad edits keep the last good state).
pub fn spawn_file(path: PathBuf, index: Arc<ServiceIndex>, debounce: Duration) -> Result<()> {
    anyhow::ensure!(
        path.is_file(),
        "registry file {} does not exist",
        path.display()
    );
    let registry = FileRegistry::new(path);
    if let Err(error) = registry.sync(&index) {
        tracing::error!(%error, "registry file not loaded");
    }
    tokio::spawn(async move {
        if let Err(e) = registry.run(index, debounce).await {
            tracing::error!(error = %e, "file registry watcher stopped");
        }
    });
    Ok(())
}

/// Starts the Kubernetes registry with a client from `kubeconfig` (or in-cluster config).
/// Returns the client and the registry's first-sync signal.
pub async fn spawn_kubernetes(
    kubeconfig: Option<PathBuf>,
    domain: &str,
    index: Arc<ServiceIndex>,
) -> Result<(kube::Client, tokio::sync::watch::Receiver<bool>)> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("loading kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster configuration found")?,
    };
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let registry = KubernetesRegistry::new(domain);
    let ready = registry.ready();
    tokio::spawn(registry.run(client.clone(), index));
    Ok((client, ready))
}

/// Starts the Consul registry; returns its status (first sync).
pub fn spawn_consul(
    address: String,
    index: Arc<ServiceIndex>,
) -> Result<capstan_registry::consul::ConsulStatus> {
    let registry = ConsulRegistry::new(ConsulConfig {
        address,
        ..ConsulConfig::default()
    })
    .context("configuring the Consul registry")?;
    let status = registry.status();
    tokio::spawn(registry.run(index));
    Ok(status)
}
