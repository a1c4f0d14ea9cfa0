//! Keeps the webhook's CA in the `caBundle` of every webhook of a ValidatingWebhookConfiguration
//! (and of the injector's MutatingWebhookConfiguration), as istiod's webhook controllers do
//! (`pkg/webhooks/validation/controller`, `pkg/webhooks` patcher): patched when the
//! configuration appears, when the CA changes, and again when someone resets it (a `helm
//! upgrade` renders it with an empty bundle). With the mesh CA's certificate the bundle is the
//! CA's trust bundle, as istiod writes its mesh root: during a root rotation it holds every
//! root, so the certificates of replicas that sign under either verify.

use capstan_ca::CurrentCa;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt as _};
use std::time::Duration;
use tokio::sync::watch;

/// A failed write is retried this soon (a conflict is retried on the next watch event).
const RETRY: Duration = Duration::from_secs(5);

/// A webhook configuration kind whose webhooks carry a `caBundle`.
pub trait WebhookConfiguration:
    kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// Each webhook's bundle.
    fn bundles(&self) -> Vec<Option<&ByteString>>;
    /// Sets every webhook's bundle.
    fn set_bundles(&mut self, ca: &ByteString);
    /// For logs.
    const WHAT: &'static str;
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn bundles(&self) -> Vec<Option<&ByteString>> {
        let hooks = self.webhooks.as_deref().unwrap_or_default();
        hooks
            .iter()
            .map(|w| w.client_config.ca_bundle.as_ref())
            .collect()
    }
    fn set_bundles(&mut self, ca: &ByteString) {
        for w in self.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(ca.clone());
        }
    }
    const WHAT: &'static str = "validating webhook configuration";
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn bundles(&self) -> Vec<Option<&ByteString>> {
        let hooks = self.webhooks.as_deref().unwrap_or_default();
        hooks
            .iter()
            .map(|w| w.client_config.ca_bundle.as_ref())
            .collect()
    }
    fn set_bundles(&mut self, ca: &ByteString) {
        for w in self.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(ca.clone());
        }
    }
    const WHAT: &'static str = "mutating webhook configuration";
}

/// The CA's trust bundle (PEM), changing with it, as [`run`] takes a bundle.
pub fn trust_bundle(mut ca: CurrentCa) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(Some(ca.get().root_cert_pem().to_owned()));
    tokio::spawn(async move {
        loop {
            let next = ca.changed().await;
            let pem = next.root_cert_pem();
            let changed = tx.send_if_modified(|bundle| {
                let changed = bundle.as_deref() != Some(pem);
                if changed {
                    *bundle = Some(pem.to_owned());
                }
                changed
            });
            if changed {
                tracing::info!(
                    roots = next.roots().len(),
                    "the trust bundle changed; the webhooks' caBundle follows"
                );
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The configuration with `ca_pem` in every webhook's bundle, or `None` if it has it already.
pub fn with_bundle<C: WebhookConfiguration>(config: &C, ca_pem: &str) -> Option<C> {
    let want = ByteString(ca_pem.as_bytes().to_vec());
    if config.bundles().iter().all(|b| *b == Some(&want)) {
        return None;
    }
    let mut patched = config.clone();
    patched.set_bundles(&want);
    Some(patched)
}

/// Watches the configuration `name` and keeps the current CA of `ca` in it. Runs until the
/// process ends; API errors are logged and retried.
pub async fn run<C: WebhookConfiguration>(
    client: kube::Client,
    name: String,
    mut ca: watch::Receiver<Option<String>>,
) {
    let api = kube::Api::<C>::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    let mut latest: Option<C> = None;
    // A CA that never changes (a generated certificate) closes the channel: keep the last.
    let mut ca_open = true;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(object)) => latest = Some(object),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, config = %name, "watching the webhook configuration");
                    continue;
                }
                None => return,
            },
            changed = ca.changed(), if ca_open => ca_open = changed.is_ok(),
        }
        let Some(ca_pem) = ca.borrow().clone() else {
            continue;
        };
        while let Some(patched) = latest.as_ref().and_then(|c| with_bundle(c, &ca_pem)) {
            // A replace carries the resourceVersion read: a concurrent change makes it a
            // conflict, and the watch brings the newer object to patch again.
            match api.replace(&name, &PostParams::default(), &patched).await {
                Ok(stored) => {
                    tracing::info!(config = %name, "patched the CA bundle of the {}", C::WHAT);
                    latest = Some(stored);
                }
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    tracing::debug!(config = %name, code = e.code, "the webhook configuration changed meanwhile; patching the next version");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, config = %name, "patching the webhook CA bundle failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{ValidatingWebhook, WebhookClientConfig};

    fn config(bundles: &[Option<&str>]) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            webhooks: Some(
                bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| ValidatingWebhook {
                        name: format!("w{i}.istio.io"),
                        client_config: WebhookClientConfig {
                            ca_bundle: b.map(|b| ByteString(b.as_bytes().to_vec())),
                            ..WebhookClientConfig::default()
                        },
                        ..ValidatingWebhook::default()
                    })
                    .collect(),
            ),
            ..ValidatingWebhookConfiguration::default()
        }
    }

    #[test]
    fn mutating_configurations_are_patched_too() {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
        let m = MutatingWebhookConfiguration {
            webhooks: Some(vec![MutatingWebhook {
                name: "sidecar-injector.istio.io".into(),
                ..MutatingWebhook::default()
            }]),
            ..MutatingWebhookConfiguration::default()
        };
        let patched = with_bundle(&m, "CA").expect("an empty bundle is patched");
        assert_eq!(patched.bundles(), vec![Some(&ByteString(b"CA".to_vec()))]);
        assert!(with_bundle(&patched, "CA").is_none());
    }

    #[test]
    fn every_webhook_gets_the_bundle_and_a_patched_one_is_left_alone() {
        let cases: [(&[Option<&str>], bool); 4] = [
            (&[None, None], true),
            (&[Some("CA"), Some("old")], true),
            (&[Some("CA"), Some("CA")], false),
            (&[], false),
        ];
        for (bundles, patch) in cases {
            let got = with_bundle(&config(bundles), "CA");
            assert_eq!(got.is_some(), patch, "{bundles:?}");
            if let Some(patched) = got {
                assert_eq!(with_bundle(&patched, "CA"), None, "{bundles:?}: idempotent");
            }
        }
    }
}
