//! Turns the validating webhook configuration's `failurePolicy` to `Fail` once the webhook is
//! known to work, as istiod's validation controller does: installed with `Ignore` (so a control
//! plane that is not up yet blocks nobody), switched to `Fail` after a dry-run create of an
//! invalid object through the API server comes back denied by this webhook — from then on an
//! unreachable webhook refuses Istio config instead of letting invalid objects in. A reset (a
//! `helm upgrade` renders `Ignore` again) is switched back on the next check.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use std::time::Duration;

/// How often the configuration is checked.
const EVERY: Duration = Duration::from_secs(5);

/// The configuration with every webhook failing closed, or `None` if it already does.
pub fn fail_closed(c: &ValidatingWebhookConfiguration) -> Option<ValidatingWebhookConfiguration> {
    let hooks = c.webhooks.as_deref().unwrap_or_default();
    if hooks.is_empty()
        || hooks
            .iter()
            .all(|w| w.failure_policy.as_deref() == Some("Fail"))
    {
        return None;
    }
    let mut patched = c.clone();
    for w in patched.webhooks.iter_mut().flatten() {
        w.failure_policy = Some("Fail".to_owned());
    }
    Some(patched)
}

/// A VirtualService the CRD schema accepts and Istio's validation refuses (a regex RE2 cannot
/// compile), created with `dryRun` so nothing is stored either way.
fn probe_object(namespace: &str) -> DynamicObject {
    let ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    };
    let mut o = DynamicObject::new("capstan-webhook-probe", &ar).within(namespace);
    o.data = serde_json::json!({
        "spec": {
            "hosts": ["capstan-webhook-probe"],
            "http": [{"match": [{"uri": {"regex": "(("}}],
                      "route": [{"destination": {"host": "capstan-webhook-probe"}}]}],
        }
    });
    o
}

/// Whether the API server refuses the probe through the webhook.
async fn webhook_denies(client: &kube::Client, namespace: &str) -> bool {
    let ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &probe_object(namespace)).await {
        Err(kube::Error::Api(s)) if s.message.contains("denied the request") => true,
        // Admitted: the API server does not call the webhook yet (or fails open).
        Ok(_) => false,
        Err(e) => {
            tracing::warn!("the validating webhook probe failed: {e}");
            false
        }
    }
}

/// Checks `name` every few seconds; run by the leader only.
pub async fn run(client: kube::Client, name: String, namespace: String) {
    let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    loop {
        match api.get_opt(&name).await {
            Ok(Some(config)) => {
                if let Some(patched) = fail_closed(&config) {
                    if webhook_denies(&client, &namespace).await {
                        match api.replace(&name, &PostParams::default(), &patched).await {
                            Ok(_) => {
                                tracing::info!(config = %name, "the validating webhook works: failurePolicy set to Fail")
                            }
                            Err(e) => tracing::debug!(config = %name, "setting failurePolicy: {e}"),
                        }
                    } else {
                        tracing::debug!(config = %name, "the webhook does not refuse the probe yet; failurePolicy stays");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(config = %name, "reading the webhook configuration: {e}"),
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhook;

    #[test]
    fn every_webhook_fails_closed_once() {
        let c = |policies: &[Option<&str>]| ValidatingWebhookConfiguration {
            webhooks: Some(
                policies
                    .iter()
                    .map(|p| ValidatingWebhook {
                        failure_policy: p.map(str::to_owned),
                        ..ValidatingWebhook::default()
                    })
                    .collect(),
            ),
            ..ValidatingWebhookConfiguration::default()
        };
        let patched = fail_closed(&c(&[Some("Ignore"), None])).unwrap();
        assert!(patched
            .webhooks
            .iter()
            .flatten()
            .all(|w| w.failure_policy.as_deref() == Some("Fail")));
        assert!(fail_closed(&patched).is_none());
        assert!(fail_closed(&c(&[])).is_none());
    }
}
