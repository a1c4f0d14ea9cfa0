//! The Consul registry: the catalog, watched with blocking queries, as services, endpoints and
//! workloads (Istio's former in-tree Consul adapter, but watching instead of polling).
//!
//! One watcher long-polls `/v1/catalog/services` for the set of service names; for each name one
//! task long-polls `/v1/health/service/<name>` (started and stopped as names come and go) and
//! applies only its own service's keys to the index with [`ServiceIndex::update`]. A task that
//! gets identical data (Consul's index moves for many reasons) changes nothing, so the index emits
//! nothing. When the agent is unreachable every watcher backs off and the index keeps the last
//! known state; on reconnect the first answers are full re-lists (index reset to 0), and services
//! missing from the first successful catalog list are removed.

pub mod convert;
pub mod query;

use crate::index::{RegistryId, ServiceIndex};
use crate::model::RegistryKind;
use convert::{ConvertOptions, ServiceContribution};
use query::{Backoff, BlockingQuery, Http};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Errors building a [`ConsulRegistry`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `host:port` or an `http(s)://` URL.
    #[error("invalid Consul address {0:?}")]
    InvalidAddress(String),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Settings of a Consul registry.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Agent address: `host:port` (HTTP) or an `http://` / `https://` URL.
    pub address: String,
    /// Datacenter to query (default: the agent's).
    pub datacenter: Option<String>,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// Hostname suffix: service `web` becomes `web.<domain>`.
    pub domain: String,
    /// Namespace given to services and workloads (Istio used its default config namespace).
    pub namespace: String,
    /// Only services whose name starts with this prefix (empty: all).
    pub service_prefix: String,
    /// Longest time Consul holds a blocking query.
    pub wait: Duration,
    /// Least time between two successive queries of one watcher (rate limit).
    pub min_query_interval: Duration,
    /// First backoff delay after an error.
    pub backoff_initial: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: "127.0.0.1:8500".into(),
            datacenter: None,
            token: None,
            domain: "service.consul".into(),
            namespace: "default".into(),
            service_prefix: String::new(),
            wait: Duration::from_secs(60),
            min_query_interval: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Observes a running registry: first sync and the number of HTTP requests made.
#[derive(Clone)]
pub struct ConsulStatus {
    synced: watch::Receiver<bool>,
    requests: Arc<AtomicU64>,
}

impl ConsulStatus {
    /// The first-sync signal: turns `true` as [`ConsulStatus::is_synced`] does.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.clone()
    }

    /// True once the catalog was listed and every listed service applied to the index.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first sync; false if the registry stopped before it.
    pub async fn wait_synced(&mut self) -> bool {
        self.synced.wait_for(|s| *s).await.is_ok()
    }

    /// HTTP requests sent to Consul so far (to check that nothing busy-polls).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A Consul catalog feeding a [`ServiceIndex`].
pub struct ConsulRegistry {
    id: RegistryId,
    http: Http,
    options: ConvertOptions,
    prefix: String,
    backoff: (Duration, Duration),
    synced_tx: watch::Sender<bool>,
    status: ConsulStatus,
}

impl ConsulRegistry {
    /// A registry for `config`. Installs rustls' ring provider as the process default when no
    /// provider is installed yet (reqwest needs one for its TLS setup, even for plain HTTP).
    pub fn new(config: ConsulConfig) -> Result<ConsulRegistry, Error> {
        let base =
            if config.address.starts_with("http://") || config.address.starts_with("https://") {
                config.address.trim_end_matches('/').to_string()
            } else if !config.address.is_empty() && !config.address.contains('/') {
                format!("http://{}", config.address)
            } else {
                return Err(Error::InvalidAddress(config.address));
            };
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err only if another thread installed one meanwhile: fine either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let requests = Arc::new(AtomicU64::new(0));
        let (synced_tx, synced) = watch::channel(false);
        let mut name = format!("consul@{base}");
        if let Some(dc) = &config.datacenter {
            name.push_str(&format!("/{dc}"));
        }
        if !config.service_prefix.is_empty() {
            name.push_str(&format!("/{}*", config.service_prefix));
        }
        Ok(ConsulRegistry {
            id: RegistryId {
                kind: RegistryKind::Consul,
                name,
            },
            http: Http {
                client,
                base,
                datacenter: config.datacenter.clone(),
                token: config.token,
                wait: config.wait,
                min_interval: config.min_query_interval,
                requests: requests.clone(),
            },
            options: ConvertOptions {
                domain: config.domain,
                namespace: config.namespace,
                datacenter: config.datacenter.unwrap_or_default(),
            },
            prefix: config.service_prefix,
            backoff: (config.backoff_initial, config.backoff_max),
            synced_tx,
            status: ConsulStatus { synced, requests },
        })
    }

    /// The registry's id in the index.
    pub fn id(&self) -> &RegistryId {
        &self.id
    }

    /// A handle to observe the first sync and the request count.
    pub fn status(&self) -> ConsulStatus {
        self.status.clone()
    }

    /// Watches Consul and keeps the index up to date, forever (abort the task to stop; the
    /// registry's last state then stays in the index until [`ServiceIndex::remove_registry`]).
    pub async fn run(self, index: Arc<ServiceIndex>) {
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            http: self.http.clone(),
            options: self.options.clone(),
            backoff: self.backoff,
            index,
        });
        let (names_tx, mut names_rx) = watch::channel(None);
        let (applied_tx, mut applied_rx) = mpsc::unbounded_channel::<String>();
        let mut tasks = Tasks::default();
        tasks.catalog = Some(tokio::spawn(watch_catalog(
            shared.clone(),
            self.prefix.clone(),
            names_tx,
        )));
        // Names of the first listing still waiting for their first health answer.
        let mut pending: Option<BTreeSet<String>> = None;
        loop {
            tokio::select! {
                changed = names_rx.changed() => {
                    if changed.is_err() {
                        tracing::error!(registry = %self.id.name, "Consul catalog watcher stopped");
                        return;
                    }
                    let Some(names) = names_rx.borrow_and_update().clone() else { continue };
                    tasks.reconcile(&names, &shared, &applied_tx).await;
                    match &mut pending {
                        None => pending = Some(names),
                        Some(p) => p.retain(|n| names.contains(n)),
                    }
                }
                Some(name) = applied_rx.recv() => {
                    if let Some(p) = &mut pending {
                        p.remove(&name);
                    }
                }
            }
            if !*self.synced_tx.borrow() && pending.as_ref().is_some_and(|p| p.is_empty()) {
                tracing::info!(registry = %self.id.name, services = tasks.services.len(), "Consul registry synced");
                self.synced_tx.send_replace(true);
            }
        }
    }
}

/// What every watcher of one registry shares.
struct Shared {
    id: RegistryId,
    http: Http,
    options: ConvertOptions,
    backoff: (Duration, Duration),
    index: Arc<ServiceIndex>,
}

impl Shared {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff.0, self.backoff.1)
    }
}

struct ServiceTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

/// The running watchers; aborted when `run` is dropped.
#[derive(Default)]
struct Tasks {
    catalog: Option<JoinHandle<()>>,
    services: HashMap<String, ServiceTask>,
}

impl Tasks {
    /// Stops watchers of names no longer listed (each removes its service) and starts new ones.
    async fn reconcile(
        &mut self,
        names: &BTreeSet<String>,
        shared: &Arc<Shared>,
        applied: &mpsc::UnboundedSender<String>,
    ) {
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(task) = self.services.remove(&name) {
                let _ = task.stop.send(());
                // Wait until it has removed its keys, so a re-added name cannot race with it.
                let _ = task.handle.await;
            }
        }
        for name in names {
            if !self.services.contains_key(name) {
                let (stop, stop_rx) = oneshot::channel();
                let handle = tokio::spawn(watch_service(
                    shared.clone(),
                    name.clone(),
                    stop_rx,
                    applied.clone(),
                ));
                self.services
                    .insert(name.clone(), ServiceTask { stop, handle });
            }
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(c) = &self.catalog {
            c.abort();
        }
        for task in self.services.values() {
            task.handle.abort();
        }
    }
}

/// Long-polls the catalog's service names (filtered by prefix) into `names`.
async fn watch_catalog(
    shared: Arc<Shared>,
    prefix: String,
    names: watch::Sender<Option<BTreeSet<String>>>,
) {
    let mut query = BlockingQuery::new(shared.http.clone(), "/v1/catalog/services".into());
    let mut backoff = shared.backoff();
    loop {
        let error = match query.next().await {
            Ok(None) => {
                backoff.reset();
                continue;
            }
            Ok(Some(body)) => {
                match serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&body) {
                    Ok(map) => {
                        backoff.reset();
                        let set: BTreeSet<String> =
                            map.into_keys().filter(|n| n.starts_with(&prefix)).collect();
                        names.send_if_modified(|current| {
                            let changed = current.as_ref() != Some(&set);
                            *current = Some(set);
                            changed
                        });
                        continue;
                    }
                    Err(e) => format!("malformed catalog response: {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        let delay = backoff.next_delay();
        tracing::warn!(registry = %shared.id.name, %error, ?delay, "Consul catalog query failed; keeping last state");
        tokio::time::sleep(delay).await;
    }
}

/// Long-polls one service's instances and applies them; on stop removes what it contributed.
async fn watch_service(
    shared: Arc<Shared>,
    name: String,
    mut stop: oneshot::Receiver<()>,
    applied: mpsc::UnboundedSender<String>,
) {
    let path = format!("/v1/health/service/{}", query::encode_segment(&name));
    let mut query = BlockingQuery::new(shared.http.clone(), path);
    let mut backoff = shared.backoff();
    let mut last = ServiceContribution::default();
    let mut first = true;
    loop {
        let result = tokio::select! {
            _ = &mut stop => break,
            r = query.next() => r,
        };
        let error = match result {
            Ok(None) => {
                backoff.reset();
                continue;
            }
            Ok(Some(body)) => match convert::parse_entries(&body, &name) {
                Ok(entries) => {
                    backoff.reset();
                    let next = convert::convert(&name, &entries, &shared.options);
                    if next != last {
                        apply(&shared, &name, &last, &next);
                        last = next;
                    }
                    if first {
                        first = false;
                        let _ = applied.send(name.clone());
                    }
                    continue;
                }
                Err(e) => format!("malformed health response: {e}"),
            },
            Err(e) => e.to_string(),
        };
        let delay = backoff.next_delay();
        tracing::warn!(registry = %shared.id.name, service = %name, %error, ?delay,
            "Consul health query failed; keeping last state");
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    apply(&shared, &name, &last, &ServiceContribution::default());
}

/// Replaces service `name`'s keys in the registry state: `old`'s out, `new`'s in. The index
/// diffs, so unchanged endpoints or workloads emit nothing.
fn apply(shared: &Shared, name: &str, old: &ServiceContribution, new: &ServiceContribution) {
    let host = convert::hostname(name, &shared.options.domain);
    let events = shared.index.update(&shared.id, |state| {
        state.services.remove(&host);
        for key in old.endpoints.keys() {
            state.endpoints.remove(key);
        }
        for key in old.workloads.keys() {
            state.workloads.remove(key);
        }
        if let Some(service) = &new.service {
            state.services.insert(host.clone(), service.clone());
        }
        state
            .endpoints
            .extend(new.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())));
        state
            .workloads
            .extend(new.workloads.iter().map(|(k, v)| (k.clone(), v.clone())));
    });
    tracing::debug!(registry = %shared.id.name, service = name, events = events.len(), "Consul service applied");
}
