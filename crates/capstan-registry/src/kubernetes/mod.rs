//! Kubernetes as a registry: Services, EndpointSlices (discovery.k8s.io/v1), Pods and Nodes,
//! watched with kube-runtime watchers and fed into the [`ServiceIndex`] (Istio's
//! `serviceregistry/kube/controller`).
//!
//! - [`convert`]: pure object → model conversions;
//! - [`cache`]: the watched objects with reverse indexes, so an EndpointSlice event recomputes
//!   only its Service, and a Pod/Node change only the Services whose slices reference the pod;
//! - this module: the async loop. Each watcher (re-)list (`Init` … `InitApply` … `InitDone`,
//!   after start-up, an API server restart or a `410 Gone` watch expiry) is buffered and swapped
//!   in whole at `InitDone`; the complete state is then [`ServiceIndex::replace`]d, so a re-list
//!   emits events only for what really changed. Watch errors are retried by kube-runtime with
//!   its default jittered exponential backoff (0.8 s … 30 s).

pub mod cache;
pub mod convert;

use crate::index::{RegistryId, ServiceIndex};
use crate::model::RegistryKind;
use cache::{Cache, Dirty};
use convert::Slice;
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Receives, for every incremental index write, the time from the watch event arriving in the
/// adapter's loop to [`ServiceIndex`] having applied it (see
/// [`KubernetesRegistry::with_latency_recorder`]). Called on the adapter's task: keep it cheap.
pub type LatencyRecorder = Arc<dyn Fn(Duration) + Send + Sync>;

/// The Kubernetes registry adapter. Build it, take [`KubernetesRegistry::ready`], then
/// [`KubernetesRegistry::run`] it (typically in a spawned task).
pub struct KubernetesRegistry {
    id: RegistryId,
    suffix: String,
    namespace: Option<String>,
    ready: watch::Sender<bool>,
    relists: watch::Sender<u64>,
    latency: Option<LatencyRecorder>,
}

/// Watcher output of one resource kind, tagged. Moved once per event, so the size difference
/// between variants costs less than boxing every object would.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Service(Result<Event<KubeService>, watcher::Error>),
    Slice(Result<Event<Slice>, watcher::Error>),
    Pod(Result<Event<Pod>, watcher::Error>),
    Node(Result<Event<Node>, watcher::Error>),
}

/// What a watcher event means for the cache.
enum Step<K> {
    Nothing,
    Apply(K),
    Delete(K),
    /// A (re-)list finished: the complete set of objects.
    Relisted(Vec<K>),
}

/// List state of one resource kind.
struct Phase<K> {
    what: &'static str,
    buffer: Option<Vec<K>>,
    synced: bool,
}

impl<K> Phase<K> {
    fn new(what: &'static str) -> Phase<K> {
        Phase {
            what,
            buffer: None,
            synced: false,
        }
    }

    fn on(&mut self, event: Result<Event<K>, watcher::Error>) -> Step<K> {
        match event {
            Ok(Event::Apply(k)) => Step::Apply(k),
            Ok(Event::Delete(k)) => Step::Delete(k),
            Ok(Event::Init) => {
                tracing::debug!(kind = self.what, "listing");
                self.buffer = Some(Vec::new());
                Step::Nothing
            }
            Ok(Event::InitApply(k)) => {
                self.buffer.get_or_insert_with(Vec::new).push(k);
                Step::Nothing
            }
            Ok(Event::InitDone) => {
                let items = self.buffer.take().unwrap_or_default();
                tracing::debug!(kind = self.what, count = items.len(), "listed");
                self.synced = true;
                Step::Relisted(items)
            }
            Err(e) => {
                // kube-runtime restarts the watch (re-listing on 410 Gone) after a backoff.
                tracing::warn!(kind = self.what, error = %e, "Kubernetes watch failed; retrying");
                Step::Nothing
            }
        }
    }
}

/// Drops what the cache never reads before it is stored: `managedFields` is often the largest
/// part of an object (a JSON tree per field manager) and would dominate memory on large
/// meshes. Istio's informers strip it the same way (`kubeclient.StripUnusedFields`).
fn strip_unused<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// An EndpointSlice event as the cache keeps slices: converted as it arrives, so not even
/// the initial listing holds whole objects.
fn compact_slice(
    event: Result<Event<EndpointSlice>, watcher::Error>,
) -> Result<Event<Slice>, watcher::Error> {
    Ok(match event? {
        Event::Apply(s) => Event::Apply(s.into()),
        Event::Delete(s) => Event::Delete(s.into()),
        Event::Init => Event::Init,
        Event::InitApply(s) => Event::InitApply(s.into()),
        Event::InitDone => Event::InitDone,
    })
}

impl KubernetesRegistry {
    /// A registry for every namespace, naming services `name.namespace.svc.<domain_suffix>`
    /// (`cluster.local` in a default cluster).
    pub fn new(domain_suffix: impl Into<String>) -> KubernetesRegistry {
        KubernetesRegistry {
            id: RegistryId {
                kind: RegistryKind::Kubernetes,
                name: "kubernetes".into(),
            },
            suffix: domain_suffix.into(),
            namespace: None,
            ready: watch::channel(false).0,
            relists: watch::channel(0).0,
            latency: None,
        }
    }

    /// Watches only `namespace` (Nodes are cluster-scoped and always watched).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> KubernetesRegistry {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the registry name (to tell several clusters apart); the default is `kubernetes`.
    pub fn with_name(mut self, name: impl Into<String>) -> KubernetesRegistry {
        self.id.name = name.into();
        self
    }

    /// Reports the watch-event → index latency of every incremental update (issue 4's target:
    /// 5 ms p99) to `recorder`. Without one, nothing is timed.
    pub fn with_latency_recorder(
        mut self,
        recorder: impl Fn(Duration) + Send + Sync + 'static,
    ) -> KubernetesRegistry {
        self.latency = Some(Arc::new(recorder));
        self
    }

    /// The id this registry writes under.
    pub fn id(&self) -> &RegistryId {
        &self.id
    }

    /// Turns `true` once the initial list of all four kinds is in the index.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Counts the re-lists applied after the initial sync (one per resource kind each time a
    /// watch had to start over: API server restart, `410 Gone`). For monitoring and tests.
    pub fn relists(&self) -> watch::Receiver<u64> {
        self.relists.subscribe()
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// Watches the cluster and keeps `index` up to date until the task is dropped.
    pub async fn run(self, client: Client, index: Arc<ServiceIndex>) {
        let config = watcher::Config::default();
        let streams: Vec<BoxStream<'static, Msg>> = vec![
            watcher::watcher(self.api::<KubeService>(&client), config.clone())
                .default_backoff()
                .modify(strip_unused)
                .map(Msg::Service)
                .boxed(),
            watcher::watcher(self.api::<EndpointSlice>(&client), config.clone())
                .default_backoff()
                .map(|e| Msg::Slice(compact_slice(e)))
                .boxed(),
            watcher::watcher(self.api::<Pod>(&client), config.clone())
                .default_backoff()
                .modify(convert::strip_pod)
                .map(Msg::Pod)
                .boxed(),
            watcher::watcher(Api::<Node>::all(client.clone()), config)
                .default_backoff()
                .modify(convert::strip_node)
                .map(Msg::Node)
                .boxed(),
        ];
        let mut events = futures::stream::select_all(streams);
        let mut cache = Cache::new(&self.suffix);
        let mut services = Phase::new("Service");
        let mut slices = Phase::new("EndpointSlice");
        let mut pods = Phase::new("Pod");
        let mut nodes = Phase::new("Node");
        let started = Instant::now();
        while let Some(msg) = events.next().await {
            let received = self.latency.as_ref().map(|_| Instant::now());
            let (dirty, relisted) = match msg {
                Msg::Service(e) => match services.on(e) {
                    Step::Nothing => continue,
                    Step::Apply(o) => (cache.apply_service(o), false),
                    Step::Delete(o) => (cache.delete_service(&o), false),
                    Step::Relisted(v) => {
                        cache.reset_services(v);
                        (Dirty::default(), true)
                    }
                },
                Msg::Slice(e) => match slices.on(e) {
                    Step::Nothing => continue,
                    Step::Apply(o) => (cache.apply_slice(o), false),
                    Step::Delete(o) => (cache.delete_slice(&o), false),
                    Step::Relisted(v) => {
                        cache.reset_slices(v);
                        (Dirty::default(), true)
                    }
                },
                Msg::Pod(e) => match pods.on(e) {
                    Step::Nothing => continue,
                    Step::Apply(o) => (cache.apply_pod(o), false),
                    Step::Delete(o) => (cache.delete_pod(&o), false),
                    Step::Relisted(v) => {
                        cache.reset_pods(v);
                        (Dirty::default(), true)
                    }
                },
                Msg::Node(e) => match nodes.on(e) {
                    Step::Nothing => continue,
                    Step::Apply(o) => (cache.apply_node(o), false),
                    Step::Delete(o) => (cache.delete_node(&o), false),
                    Step::Relisted(v) => {
                        cache.reset_nodes(v);
                        (Dirty::default(), true)
                    }
                },
            };
            // Until every kind has been listed once, only the cache is filled: the first
            // write is one complete `replace`.
            if !(services.synced && slices.synced && pods.synced && nodes.synced) {
                continue;
            }
            if relisted || !*self.ready.borrow() {
                let state = cache.build();
                let counts = (
                    state.services.len(),
                    state.endpoints.len(),
                    state.workloads.len(),
                );
                let changes = index.replace(&self.id, state);
                if !*self.ready.borrow() {
                    tracing::info!(
                        services = counts.0,
                        endpoint_sets = counts.1,
                        workloads = counts.2,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Kubernetes registry synced"
                    );
                    self.ready.send_replace(true);
                } else {
                    tracing::info!(changes = changes.len(), "Kubernetes re-list applied");
                    self.relists.send_modify(|n| *n += 1);
                }
            } else if !dirty.services.is_empty() || !dirty.pods.is_empty() {
                // Keyed changes: O(what the event changed), not O(registry size).
                index.apply(&self.id, cache.flush_delta(&dirty));
                if let (Some(record), Some(received)) = (&self.latency, received) {
                    record(received.elapsed());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
