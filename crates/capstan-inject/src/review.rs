//! The mutating admission webhook's request and answer (`admission.k8s.io/v1` AdmissionReview),
//! without I/O: the server reads the body, calls [`review`], and writes the JSON back.

use crate::inject::{inject, Outcome};
use crate::policy::Labels;
use crate::template::InjectionTemplate;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// A body that is not an AdmissionReview: the server answers 400.
#[derive(Debug, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
pub struct ReviewError(String);

/// The part of an AdmissionReview request the injector reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind (`{group, version, kind}`).
    #[serde(default)]
    pub kind: Value,
    /// The request's namespace (the pod may not carry one yet).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, ...
    #[serde(default)]
    pub operation: String,
    /// The object being admitted.
    #[serde(default)]
    pub object: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest>,
}

/// Parses an AdmissionReview body.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let review: Review =
        serde_json::from_slice(body).map_err(|e| ReviewError(format!("invalid JSON: {e}")))?;
    if review.kind != "AdmissionReview" || review.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError(format!(
            "got {} {}",
            review.api_version, review.kind
        )));
    }
    let request = review
        .request
        .ok_or_else(|| ReviewError("no request".into()))?;
    if request.uid.is_empty() {
        return Err(ReviewError("request.uid is empty".into()));
    }
    Ok(request)
}

fn wrap(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The injector's verdict on one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Admit unchanged.
    Allow,
    /// Admit with these JSONPatch operations.
    Patch(Vec<Value>),
    /// Refuse (the pod's annotations are invalid), with the reason.
    Deny(String),
}

/// The injector's verdict: the injection patch when there is one; a refusal with the reason
/// when the pod's annotations are invalid (as Istio refuses it). Objects other than a pod being
/// created pass untouched.
pub fn admit(
    template: &InjectionTemplate,
    request: &AdmissionRequest,
    namespace_labels: Option<&Labels>,
) -> Admission {
    let is_pod = request.kind.get("kind").and_then(Value::as_str) == Some("Pod")
        && request
            .kind
            .get("group")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
    if !is_pod || request.operation != "CREATE" {
        return Admission::Allow;
    }
    let namespace = request
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            request.object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        });
    match inject(template, &request.object, &namespace, namespace_labels) {
        Ok(Outcome::Skipped(_)) => Admission::Allow,
        Ok(Outcome::Patch(ops)) => Admission::Patch(ops),
        Err(e) => Admission::Deny(format!("sidecar injection: {e}")),
    }
}

/// The `patch` field of an AdmissionResponse: base64 of the JSONPatch document.
pub fn encode_patch(ops: &[Value]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(ops).expect("JSON values always serialize"))
}

/// The AdmissionReview answering `request` with [`admit`]'s verdict.
pub fn respond(
    template: &InjectionTemplate,
    request: &AdmissionRequest,
    namespace_labels: Option<&Labels>,
) -> Value {
    let response = match admit(template, request, namespace_labels) {
        Admission::Allow => json!({"uid": request.uid, "allowed": true}),
        Admission::Patch(ops) => json!({
            "uid": request.uid,
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": encode_patch(&ops),
        }),
        Admission::Deny(message) => json!({
            "uid": request.uid,
            "allowed": false,
            "status": {"code": 400, "reason": "BadRequest", "message": message},
        }),
    };
    wrap(response)
}

/// [`parse_request`] then [`respond`], trusting the webhook configuration's namespace
/// selectors (the AdmissionReview carries no namespace labels).
pub fn review(template: &InjectionTemplate, body: &[u8]) -> Result<Value, ReviewError> {
    Ok(respond(template, &parse_request(body)?, None))
}
