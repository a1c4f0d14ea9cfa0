//! Gateway credentials from Kubernetes Secrets: watches every Secret that can hold TLS
//! material (istiod's field selector leaves out Helm releases and service-account tokens),
//! hands the generator what they hold, and pushes the changed ones to the gateways that
//! subscribed to them (SDS over ADS, `kubernetes://<name>`).

use capstan_xds::context::credentials::{Credential, Credentials};
use capstan_xds::debounce::Change;
use capstan_xds::generate::SECRET_KIND;
use capstan_xds::IstioGenerator;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// istiod's `SecretsFieldSelector`: Secrets that can never be credentials are not listed.
const FIELD_SELECTOR: &str = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

fn key(secret: &Secret) -> Option<(String, String)> {
    Some((
        secret.metadata.namespace.clone()?,
        secret.metadata.name.clone()?,
    ))
}

fn credential(secret: &Secret) -> Credential {
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    Credential::from_data(&data)
}

/// The push for Secrets that changed.
fn change(keys: impl IntoIterator<Item = (String, String)>) -> Option<Change> {
    let keys: BTreeSet<String> = keys
        .into_iter()
        .map(|(ns, name)| format!("{SECRET_KIND}/{ns}/{name}"))
        .collect();
    (!keys.is_empty()).then_some(Change::Keys(keys))
}

/// What the watch has seen: the published credentials, and a relist in progress.
#[derive(Default)]
struct State {
    current: Credentials,
    relist: Option<Credentials>,
}

impl State {
    /// Applies one watch event; returns the Secrets whose credential changed.
    fn apply(&mut self, event: watcher::Event<Secret>) -> Vec<(String, String)> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(Credentials::default());
                Vec::new()
            }
            watcher::Event::InitApply(s) => {
                if let (Some(relist), Some((ns, name))) = (self.relist.as_mut(), key(&s)) {
                    relist.insert(&ns, &name, credential(&s));
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let next = self.relist.take().unwrap_or_default();
                let changed = self.current.diff(&next);
                self.current = next;
                changed
            }
            watcher::Event::Apply(s) => match key(&s) {
                Some((ns, name)) if self.current.insert(&ns, &name, credential(&s)) => {
                    vec![(ns, name)]
                }
                _ => Vec::new(),
            },
            watcher::Event::Delete(s) => match key(&s) {
                Some((ns, name)) if self.current.remove(&ns, &name) => vec![(ns, name)],
                _ => Vec::new(),
            },
        }
    }
}

/// Starts the watch. The receiver turns true once the first list is in.
pub fn spawn(
    client: kube::Client,
    generator: Arc<IstioGenerator>,
    push: mpsc::Sender<Change>,
) -> watch::Receiver<bool> {
    let (ready_tx, ready) = watch::channel(false);
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(FIELD_SELECTOR);
        let mut events = std::pin::pin!(watcher(kube::Api::<Secret>::all(client), config).boxed());
        let mut state = State::default();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // The watcher retries by itself (with backoff once a default is set).
                    tracing::warn!(error = %e, "watching Secrets (gateway credentials)");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let done = matches!(event, watcher::Event::InitDone);
            let changed = state.apply(event);
            if !changed.is_empty() {
                generator.set_credentials(Arc::new(state.current.clone()));
                if let Some(c) = change(changed) {
                    let _ = push.send(c).await;
                }
            }
            if done {
                tracing::debug!(secrets = state.current.len(), "Secrets listed");
                ready_tx.send_replace(true);
            }
        }
    });
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(ns: &str, name: &str, ca: &str) -> Secret {
        let pem = format!("-----BEGIN CERTIFICATE-----\n{ca}\n-----END CERTIFICATE-----\n");
        Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "ca.crt".to_string(),
                ByteString(pem.into_bytes()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn events_report_exactly_the_secrets_that_changed() {
        let mut s = State::default();
        assert!(s.apply(watcher::Event::Init).is_empty());
        s.apply(watcher::Event::InitApply(secret("a", "x", "AAAA")));
        s.apply(watcher::Event::InitApply(secret("a", "y", "AAAA")));
        assert_eq!(s.apply(watcher::Event::InitDone).len(), 2);
        assert!(s
            .apply(watcher::Event::Apply(secret("a", "x", "AAAA")))
            .is_empty());
        assert_eq!(
            s.apply(watcher::Event::Apply(secret("a", "x", "BBBB"))),
            [("a".to_string(), "x".to_string())]
        );
        // A relist after a lost watch: y went away meanwhile, x is unchanged.
        s.apply(watcher::Event::Init);
        s.apply(watcher::Event::InitApply(secret("a", "x", "BBBB")));
        assert_eq!(
            s.apply(watcher::Event::InitDone),
            [("a".to_string(), "y".to_string())]
        );
        assert_eq!(
            s.apply(watcher::Event::Delete(secret("a", "x", "BBBB"))),
            [("a".to_string(), "x".to_string())]
        );
        assert!(s.current.is_empty());
        let Some(Change::Keys(keys)) = change([("a".into(), "x".into())]) else {
            panic!("a change")
        };
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["Secret/a/x"]);
    }
}
