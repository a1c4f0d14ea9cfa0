//! The Kubernetes config source (Galley's CRD watch): every Istio kind is watched at its storage
//! version, decoded and validated like any other input, and kept in the store.
//!
//! Each kind is its own store source (`kubernetes/VirtualService`, ...), so a re-list of one kind
//! (API server restart, `410 Gone`) replaces exactly that kind's objects and emits only real
//! differences. An object that fails Istio's validation (nothing enforces it without the admission
//! webhook) is logged and skipped; if an earlier version was valid, that version stays. Every
//! verdict is also reported (with the object's current `status`) to an optional status sink,
//! which `capstan discovery` turns into `status.validationMessages` on the object.

use crate::store::{ConfigKey, ConfigStore};
use capstan_api::decode::CheckOptions;
use capstan_api::{Decoded, IstioObject, Kind};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use std::sync::Arc;

/// Watches Istio CRDs and feeds the store.
pub struct KubernetesSource {
    opts: CheckOptions,
    namespace: Option<String>,
    ready: tokio::sync::watch::Sender<bool>,
    status: Option<tokio::sync::mpsc::UnboundedSender<StatusReport>>,
}

/// The validation verdict on one watched object, for status writing.
#[derive(Clone, Debug, PartialEq)]
pub enum StatusReport {
    /// The object as last seen.
    Seen {
        /// Which object.
        key: ConfigKey,
        /// `metadata.generation`.
        generation: Option<i64>,
        /// Why it was rejected (`None`: valid).
        error: Option<String>,
        /// Its `status` as stored in the API server.
        status: Option<serde_json::Value>,
    },
    /// The object was deleted.
    Deleted(ConfigKey),
}

/// Whether a watch error means the kind is not served at all (its CRD is not installed): such
/// a kind has nothing to wait for, so it does not hold readiness back.
fn kind_not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        // An API group nobody serves answers a plain-text 404, whose status has no
        // `NotFound` reason (kube's `is_not_found` then says no): the code decides.
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => {
            status.is_not_found() || status.code == 404
        }
        _ => false,
    }
}

fn api_resource(kind: Kind) -> ApiResource {
    let version = kind.versions()[0];
    ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: format!("{}/{}", kind.group(), version),
        kind: kind.name().to_string(),
        plural: kind.plural().to_string(),
    }
}

fn source_name(kind: Kind) -> String {
    format!("kubernetes/{}", kind.name())
}

/// Decodes and validates one watched object; `Err` carries a message for the log.
fn accept(obj: &DynamicObject, opts: &CheckOptions) -> Result<IstioObject, String> {
    let value =
        serde_json::to_value(obj).map_err(|e| format!("cannot re-encode the object: {e}"))?;
    match IstioObject::decode(value) {
        Ok(Decoded::Istio(object)) => {
            let report = object.validate(opts);
            if report.is_valid() {
                Ok(*object)
            } else {
                Err(report
                    .errors
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        }
        Ok(Decoded::Other { kind, .. }) => Err(format!("unexpected kind {kind}")),
        Err(e) => Err(e
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn key_of(kind: Kind, obj: &DynamicObject) -> ConfigKey {
    ConfigKey {
        kind,
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
    }
}

impl KubernetesSource {
    /// A source for all namespaces.
    pub fn new(opts: CheckOptions) -> KubernetesSource {
        KubernetesSource {
            opts,
            namespace: None,
            ready: tokio::sync::watch::channel(false).0,
            status: None,
        }
    }

    /// Reports every verdict (and deletion) to `sink`.
    pub fn with_status_reports(
        mut self,
        sink: tokio::sync::mpsc::UnboundedSender<StatusReport>,
    ) -> KubernetesSource {
        self.status = Some(sink);
        self
    }

    /// Decodes and validates `obj`, reporting the verdict to the status sink.
    fn judge(&self, kind: Kind, obj: &DynamicObject) -> Result<IstioObject, String> {
        let verdict = accept(obj, &self.opts);
        self.report(kind, obj, &verdict);
        verdict
    }

    fn report(&self, kind: Kind, obj: &DynamicObject, verdict: &Result<IstioObject, String>) {
        if let Some(sink) = &self.status {
            let _ = sink.send(StatusReport::Seen {
                key: key_of(kind, obj),
                generation: obj.metadata.generation,
                error: verdict.as_ref().err().cloned(),
                status: obj.data.get("status").cloned(),
            });
        }
    }

    /// Turns `true` once every kind has been listed once (or found not served) and the listing
    /// is in the store.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Watches one namespace only.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> KubernetesSource {
        self.namespace = Some(namespace.into());
        self
    }

    /// Watches every kind until the task is dropped. Watch errors (API server down, missing
    /// CRDs) are retried with kube-runtime's backoff.
    pub async fn run(self, client: Client, store: Arc<ConfigStore>) {
        let streams = Kind::ALL.iter().map(|&kind| {
            let ar = api_resource(kind);
            let api: Api<DynamicObject> = match &self.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .map(move |e| (kind, e))
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        let mut listing: std::collections::BTreeMap<Kind, Vec<IstioObject>> = Default::default();
        let mut listed = std::collections::BTreeSet::new();
        while let Some((kind, event)) = events.next().await {
            let source = source_name(kind);
            let settled = matches!(&event, Ok(Event::InitDone))
                || matches!(&event, Err(e) if kind_not_served(e));
            match event {
                Ok(Event::Init) => {
                    listing.insert(kind, Vec::new());
                }
                Ok(Event::InitApply(obj)) => match self.judge(kind, &obj) {
                    Ok(object) => listing.entry(kind).or_default().push(object),
                    Err(error) => {
                        let key = key_of(kind, &obj);
                        tracing::error!(%key, %error, "invalid config object rejected");
                        // Keep the last good version across a re-list.
                        if let Some(stored) = store
                            .snapshot()
                            .objects
                            .get(&key)
                            .filter(|s| *s.source == *source)
                        {
                            listing
                                .entry(kind)
                                .or_default()
                                .push((*stored.object).clone());
                        }
                    }
                },
                Ok(Event::InitDone) => {
                    let objects = listing.remove(&kind).unwrap_or_default();
                    if let Some(change) = store.replace_source(&source, objects) {
                        tracing::info!(%kind, revision = change.revision, events = change.events.len(), "config listed from Kubernetes");
                    }
                }
                Ok(Event::Apply(obj)) => match self.judge(kind, &obj) {
                    Ok(object) => {
                        store.upsert(&source, object);
                    }
                    Err(error) => {
                        tracing::error!(key = %key_of(kind, &obj), %error, "invalid config object rejected; keeping its last good version");
                    }
                },
                Ok(Event::Delete(obj)) => {
                    store.delete(&source, &key_of(kind, &obj));
                    if let Some(sink) = &self.status {
                        let _ = sink.send(StatusReport::Deleted(key_of(kind, &obj)));
                    }
                }
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying"),
            }
            if settled && listed.insert(kind) && listed.len() == Kind::ALL.len() {
                tracing::info!("Istio config listed from Kubernetes");
                self.ready.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_404_means_the_kind_is_not_served() {
        let status = |code: u16, reason: &str| {
            kube::core::Status::failure("x", reason)
                .with_code(code)
                .boxed()
        };
        let list = |s| watcher::Error::InitialListFailed(kube::Error::Api(s));
        assert!(kind_not_served(&list(status(404, "NotFound"))));
        assert!(kind_not_served(&list(status(
            404,
            "Failed to parse error data"
        ))));
        assert!(!kind_not_served(&list(status(403, "Forbidden"))));
    }
}
