//! `/inject` on the webhook port: Istio's sidecar injector (`capstan_inject`, pure) behind the
//! admission webhook server. Namespace selection is the MutatingWebhookConfiguration's
//! (`istio-injection=enabled` / `capstan-injection=enabled` selectors, as Istio's chart), so
//! the handler decides with the pod alone.

use super::webhook::review::{AdmissionRequest, AdmissionResponse};
use super::webhook::Routes;
use anyhow::{Context as _, Result};
use capstan_inject::{Admission, InjectionTemplate};
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of the sidecar injector.
#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// Sidecar injection template (YAML; see docs/configuration.md), as the chart's
    /// `capstan-sidecar-injector` ConfigMap mounts it; read at start. Unset: Istio's defaults
    /// (image `capstan:latest`, xDS and CA at istiod.istio-system.svc:15012).
    #[arg(long = "injection-template")]
    pub template: Option<PathBuf>,
}

impl InjectArgs {
    /// The template to inject with.
    pub fn load(&self) -> Result<InjectionTemplate> {
        let Some(path) = &self.template else {
            return Ok(InjectionTemplate::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        InjectionTemplate::from_yaml(&text).with_context(|| path.display().to_string())
    }
}

/// The injector's answer in the webhook server's response type.
fn answer(template: &InjectionTemplate, request: &AdmissionRequest) -> AdmissionResponse {
    let ours = capstan_inject::AdmissionRequest {
        uid: request.uid.clone(),
        kind: serde_json::json!({
            "group": request.kind.group,
            "version": request.kind.version,
            "kind": request.kind.kind,
        }),
        namespace: Some(request.namespace.clone()),
        operation: request.operation.clone(),
        object: request.object.clone().unwrap_or_default(),
    };
    match capstan_inject::admit(template, &ours, None) {
        Admission::Allow => AdmissionResponse::allow(request),
        Admission::Patch(ops) => {
            let mut response = AdmissionResponse::allow(request);
            response.patch_type = Some("JSONPatch");
            response.patch = Some(capstan_inject::encode_patch(&ops));
            response
        }
        Admission::Deny(message) => AdmissionResponse::deny(request, message),
    }
}

/// Adds `/inject` to the webhook routes.
pub fn add_route(routes: Routes, template: InjectionTemplate) -> Routes {
    let template = Arc::new(template);
    routes.add(
        "/inject",
        Arc::new(move |request: &AdmissionRequest| {
            let response = answer(&template, request);
            tracing::debug!(uid = %request.uid, name = %request.name, namespace = %request.namespace,
                patched = response.patch.is_some(), allowed = response.allowed, "injection");
            response
        }),
    )
}
