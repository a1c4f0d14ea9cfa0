//! AdmissionReview (`admission.k8s.io/v1`, and `v1beta1` as istiod still accepts) in and out,
//! and the validating review: pure functions, no I/O, so every case is a unit test.
//!
//! The validation is `capstan validate`'s ([`capstan_api::decode::check_value`]): the same
//! decoder, the same rules, the same field-path messages. As istiod's validation webhook
//! (`pkg/webhooks/validation/server`), DELETE and kinds that are not Istio's are allowed,
//! errors deny with `configuration is invalid: ...`, warnings go into `response.warnings`
//! (kubectl prints each as `Warning: ...`).

use capstan_api::batch::check_across_objects;
use capstan_api::decode::{check_value, CheckOptions, RawDocument, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API versions of AdmissionReview accepted (and answered in kind).
const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// An AdmissionReview as the API server sends it: the request only.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1` or `admission.k8s.io/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// What to admit.
    pub request: Option<AdmissionRequest>,
}

/// Group, version and kind of the object under review.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    /// API group (`networking.istio.io`; empty for the core group).
    #[serde(default)]
    pub group: String,
    /// API version (`v1`).
    #[serde(default)]
    pub version: String,
    /// Kind (`VirtualService`).
    #[serde(default)]
    pub kind: String,
}

/// The part of `AdmissionRequest` the handlers read.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response: the API server matches answers by it.
    pub uid: String,
    /// Kind of the object.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// Name of the object (may be empty with `generateName`).
    #[serde(default)]
    pub name: String,
    /// Namespace of the request: what an object that names none is created in.
    #[serde(default)]
    pub namespace: String,
    /// CREATE, UPDATE, DELETE or CONNECT.
    #[serde(default)]
    pub operation: String,
    /// The object as it would be stored (absent on DELETE).
    #[serde(default)]
    pub object: Option<Value>,
    /// A server-side dry run: nothing may be changed outside the response.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// Why an admission was refused (`metav1.Status`, the fields the API server shows).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    /// HTTP-like code the API server reports to the client.
    pub code: u16,
    /// The message the client sees after `admission webhook "..." denied the request: `.
    pub message: String,
}

/// The answer to one AdmissionRequest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Admit or deny.
    pub allowed: bool,
    /// Why it was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Shown to the client (kubectl prints `Warning: ...`) whether or not it is admitted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `JSONPatch` when `patch` is set (the mutating webhook, `/inject`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSONPatch applied to the object (the mutating webhook, `/inject`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

impl AdmissionResponse {
    /// Admits the request.
    pub fn allow(request: &AdmissionRequest) -> Self {
        AdmissionResponse {
            uid: request.uid.clone(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
            patch_type: None,
            patch: None,
        }
    }

    /// Denies the request with `message` (HTTP 400 to the client: the object is at fault).
    pub fn deny(request: &AdmissionRequest, message: String) -> Self {
        AdmissionResponse {
            uid: request.uid.clone(),
            allowed: false,
            status: Some(Status { code: 400, message }),
            warnings: Vec::new(),
            patch_type: None,
            patch: None,
        }
    }
}

/// The AdmissionReview sent back: the request's apiVersion, the response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    api_version: String,
    kind: &'static str,
    response: AdmissionResponse,
}

/// A body that is not an AdmissionReview the server can answer: HTTP 400 with this message.
#[derive(Debug, PartialEq, Eq)]
pub struct BadReview(pub String);

/// Parses a request body, runs `handler` on its request and wraps the answer, or says why the
/// body is not a usable AdmissionReview.
pub fn review(
    body: &[u8],
    handler: impl FnOnce(&AdmissionRequest) -> AdmissionResponse,
) -> Result<ReviewResponse, BadReview> {
    let review: AdmissionReview = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the body is not an AdmissionReview: {e}")))?;
    if review.kind != "AdmissionReview" || !API_VERSIONS.contains(&review.api_version.as_str()) {
        return Err(BadReview(format!(
            "expected kind AdmissionReview of apiVersion {}, got kind {:?} of apiVersion {:?}",
            API_VERSIONS.join(" or "),
            review.kind,
            review.api_version
        )));
    }
    let request = review
        .request
        .ok_or_else(|| BadReview("the AdmissionReview has no request".into()))?;
    if request.uid.is_empty() {
        return Err(BadReview("the AdmissionReview's request has no uid".into()));
    }
    Ok(ReviewResponse {
        api_version: review.api_version,
        kind: "AdmissionReview",
        response: handler(&request),
    })
}

/// The validating review: `capstan validate`'s checks on the request's object.
pub fn validate(request: &AdmissionRequest, opts: &CheckOptions) -> AdmissionResponse {
    // Nothing to validate in a deletion (istiod allows it the same way).
    if request.operation == "DELETE" {
        return AdmissionResponse::allow(request);
    }
    let Some(object) = request.object.clone() else {
        return AdmissionResponse::deny(request, "the request has no object to validate".into());
    };
    let opts = CheckOptions {
        default_namespace: request.namespace.clone(),
        ..opts.clone()
    };
    let doc = RawDocument {
        index: 0,
        line: 1,
        text: "",
    };
    let mut results = Vec::new();
    check_value(object, &doc, &opts, &mut results);
    check_across_objects(&mut results);
    let mut response = AdmissionResponse::allow(request);
    let mut errors = Vec::new();
    for result in results {
        response
            .warnings
            .extend(result.warnings.iter().map(ToString::to_string));
        if result.verdict == Verdict::Invalid {
            errors.extend(result.errors.iter().map(ToString::to_string));
        }
    }
    if !errors.is_empty() {
        let warnings = std::mem::take(&mut response.warnings);
        response = AdmissionResponse::deny(
            request,
            format!("configuration is invalid: {}", errors.join("; ")),
        );
        response.warnings = warnings;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An AdmissionReview body for `object` with `operation`.
    fn body(operation: &str, object: Option<Value>) -> Vec<u8> {
        let mut request = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "name": "reviews",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "dryRun": false,
        });
        if let Some(object) = object {
            request["object"] = object;
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .expect("JSON values serialize")
    }

    /// A VirtualService routing to `reviews` with the given HTTP route fields.
    fn virtual_service(route: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "uid": "x", "resourceVersion": "1",
                         "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1},
            "spec": {"hosts": ["reviews"], "http": [route]},
        })
    }

    fn run(body: &[u8]) -> Result<Value, BadReview> {
        review(body, |r| validate(r, &CheckOptions::default()))
            .map(|r| serde_json::to_value(r).expect("responses serialize"))
    }

    #[test]
    fn reviews_are_answered_by_their_field_paths() {
        struct Case {
            name: &'static str,
            body: Vec<u8>,
            allowed: bool,
            message: Option<&'static str>,
            warning: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "valid",
                body: body(
                    "CREATE",
                    Some(virtual_service(
                        json!({"route": [{"destination": {"host": "reviews"}}]}),
                    )),
                ),
                allowed: true,
                message: None,
                warning: None,
            },
            Case {
                name: "invalid weight",
                body: body(
                    "CREATE",
                    Some(virtual_service(
                        json!({"route": [{"destination": {"host": "reviews"}, "weight": -10}]}),
                    )),
                ),
                allowed: false,
                message: Some("configuration is invalid: spec.http[0].route[0].weight"),
                warning: None,
            },
            Case {
                name: "valid with a warning",
                body: body(
                    "UPDATE",
                    Some(virtual_service(json!({
                        "route": [{"destination": {"host": "reviews"}}],
                        "mirror": {"host": "shadow"},
                        "mirrorPercent": 5,
                    }))),
                ),
                allowed: true,
                message: None,
                warning: Some("spec.http[0].mirrorPercent: using deprecated setting"),
            },
            Case {
                name: "delete without an object",
                body: body("DELETE", None),
                allowed: true,
                message: None,
                warning: None,
            },
            Case {
                name: "a kind that is not Istio's",
                body: body(
                    "CREATE",
                    Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "cm"}, "data": {"a": "b"}})),
                ),
                allowed: true,
                message: None,
                warning: None,
            },
            Case {
                name: "create without an object",
                body: body("CREATE", None),
                allowed: false,
                message: Some("the request has no object"),
                warning: None,
            },
        ];
        for case in cases {
            let answer = run(&case.body).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{}", case.name);
            assert_eq!(answer["kind"], "AdmissionReview", "{}", case.name);
            let response = &answer["response"];
            assert_eq!(
                response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
                "{}",
                case.name
            );
            assert_eq!(
                response["allowed"], case.allowed,
                "{}: {response}",
                case.name
            );
            let message = response["status"]["message"].as_str().unwrap_or_default();
            match case.message {
                Some(want) => assert!(message.starts_with(want), "{}: {message}", case.name),
                None => assert!(
                    response.get("status").is_none(),
                    "{}: {response}",
                    case.name
                ),
            }
            let warnings: Vec<&str> = response["warnings"]
                .as_array()
                .map(|w| w.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match case.warning {
                Some(want) => assert!(
                    warnings.iter().any(|w| w.starts_with(want)),
                    "{}: {warnings:?}",
                    case.name
                ),
                None => assert!(warnings.is_empty(), "{}: {warnings:?}", case.name),
            }
        }
    }

    #[test]
    fn messages_match_capstan_validate() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: -10\n";
        let from_file = capstan_api::check_text(yaml, &CheckOptions::default());
        let want: Vec<String> = from_file[0]
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(!want.is_empty());
        let object: Value = serde_yaml_ng::from_str(yaml).expect("the YAML parses");
        let answer = run(&body("CREATE", Some(object))).expect("a usable review");
        assert_eq!(
            answer["response"]["status"]["message"],
            format!("configuration is invalid: {}", want.join("; "))
        );
    }

    #[test]
    fn v1beta1_reviews_are_answered_in_v1beta1() {
        let mut value: Value = serde_json::from_slice(&body("DELETE", None)).expect("JSON");
        value["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let answer = run(&serde_json::to_vec(&value).expect("JSON")).expect("usable");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    }

    #[test]
    fn malformed_bodies_are_bad_requests_with_a_reason() {
        let cases: [(&str, &[u8], &str); 6] = [
            ("not JSON", b"{not json", "not an AdmissionReview"),
            ("empty", b"", "not an AdmissionReview"),
            (
                "wrong kind",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"1"}}"#,
                "expected kind AdmissionReview",
            ),
            (
                "wrong version",
                br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"1"}}"#,
                "expected kind AdmissionReview",
            ),
            (
                "no request",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "has no request",
            ),
            (
                "no uid",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
                "has no uid",
            ),
        ];
        for (name, body, want) in cases {
            match run(body) {
                Err(BadReview(message)) => assert!(message.contains(want), "{name}: {message}"),
                Ok(answer) => panic!("{name}: answered {answer}"),
            }
        }
    }
}
