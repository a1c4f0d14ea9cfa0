//! A whole Istio object (`apiVersion`, `kind`, `metadata`, `spec`) and its decoding from JSON values.

use crate::kinds::{Kind, Spec};
use crate::report::{Diagnostic, Report, Severity};
use crate::validation::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The parts of Kubernetes `ObjectMeta` that Capstan uses; other metadata fields are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace; empty when not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Resource version from the API server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Generation from the API server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// UID from the API server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Creation timestamp (RFC 3339) from the API server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A decoded Istio object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IstioObject {
    /// `apiVersion` as written (`networking.istio.io/v1beta1`).
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// Status, kept verbatim (Istio writes it; validation ignores it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// What a JSON value turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// An Istio object of a kind Capstan knows.
    Istio(Box<IstioObject>),
    /// Some other Kubernetes kind, skipped.
    Other {
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
        /// Its `metadata.name`, if any.
        name: String,
    },
}

/// Why a value could not be decoded; carries what was learnt about the object.
#[derive(Debug)]
pub struct DecodeError {
    /// The kind, when `apiVersion`/`kind` named a known one.
    pub kind: Option<String>,
    /// `metadata.name`, when present.
    pub name: String,
    /// `metadata.namespace`, when present.
    pub namespace: String,
    /// What is wrong, with field paths.
    pub diagnostics: Vec<Diagnostic>,
}

const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn err(path: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        path: path.to_string(),
        message: message.into(),
    }
}

/// Protobuf JSON treats `null` as "unset"; drop nulls from objects so typed decoding sees absent fields.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Turns a serde error message into one a user can act on (`unknown field "foo"`).
fn describe_serde_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let expected = expected.trim_start_matches(", ").replace('`', "");
            return format!("unknown field {field:?} ({expected})");
        }
    }
    message.replace('`', "\"")
}

impl IstioObject {
    /// Decodes a Kubernetes-style object. Non-Istio kinds come back as [`Decoded::Other`].
    pub fn decode(mut value: Value) -> Result<Decoded, DecodeError> {
        strip_nulls(&mut value);
        let Value::Object(mut map) = value else {
            return Err(DecodeError {
                kind: None,
                name: String::new(),
                namespace: String::new(),
                diagnostics: vec![err(
                    "",
                    format!(
                        "expected an object with apiVersion and kind, found {}",
                        type_name(&value)
                    ),
                )],
            });
        };
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = map
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let fail = |kind: Option<String>, diagnostics| DecodeError {
            kind,
            name: name.clone(),
            namespace: namespace.clone(),
            diagnostics,
        };
        let (Some(api_version), Some(kind_name)) =
            (str_field(&map, "apiVersion"), str_field(&map, "kind"))
        else {
            return Err(fail(
                None,
                vec![err("", "object has no apiVersion and kind")],
            ));
        };
        let (api_version, kind_name) = (api_version.to_string(), kind_name.to_string());
        let kind = match Kind::from_type(&api_version, &kind_name) {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                return Ok(Decoded::Other {
                    api_version,
                    kind: kind_name,
                    name,
                })
            }
            Err(message) => return Err(fail(Some(kind_name), vec![err("kind", message)])),
        };
        let mut diagnostics = Vec::new();
        for key in map.keys() {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                diagnostics.push(err(key, format!("unknown field {key:?} (expected one of apiVersion, kind, metadata, spec, status)")));
            }
        }
        let metadata: ObjectMeta = match map.remove("metadata") {
            None => ObjectMeta::default(),
            Some(m) => match serde_path_to_error::deserialize(&m) {
                Ok(m) => m,
                Err(e) => {
                    diagnostics.push(err(
                        &join("metadata", &e.path().to_string()),
                        describe_serde_error(&e.inner().to_string()),
                    ));
                    ObjectMeta::default()
                }
            },
        };
        let spec_value = map
            .remove("spec")
            .unwrap_or_else(|| Value::Object(Map::new()));
        let spec = match Spec::decode(kind, &spec_value) {
            Ok(spec) => Some(spec),
            Err(e) => {
                diagnostics.push(err(
                    &join("spec", &e.path().to_string()),
                    describe_serde_error(&e.inner().to_string()),
                ));
                None
            }
        };
        match spec {
            Some(spec) if diagnostics.is_empty() => Ok(Decoded::Istio(Box::new(IstioObject {
                api_version,
                kind,
                metadata,
                spec,
                status: map.remove("status"),
            }))),
            _ => Err(fail(Some(kind.name().to_string()), diagnostics)),
        }
    }

    /// Validates the object's metadata and spec.
    pub fn validate(&self, opts: &crate::decode::CheckOptions) -> Report {
        let mut report = Report::default();
        let meta = crate::path::Path::root("metadata");
        if self.metadata.name.is_empty() {
            report.error(&meta.field("name"), "name is required");
        } else if !crate::validation::common::is_dns1123_subdomain(&self.metadata.name) {
            report.error(
                &meta.field("name"),
                format!(
                    "invalid name {:?}: must be a lower-case RFC 1123 subdomain",
                    self.metadata.name
                ),
            );
        }
        if !self.metadata.namespace.is_empty()
            && !crate::validation::common::is_namespace_name(&self.metadata.namespace)
        {
            report.error(
                &meta.field("namespace"),
                format!(
                    "invalid namespace {:?}: must be a lower-case RFC 1123 label",
                    self.metadata.namespace
                ),
            );
        }
        let cx = Context {
            name: &self.metadata.name,
            namespace: &self.metadata.namespace,
            domain_suffix: &opts.domain_suffix,
            virtual_service_delegate: opts.virtual_service_delegate,
        };
        self.spec.validate(&cx, &mut report);
        report
    }

    /// Serializes back to a Kubernetes-style JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self)
            .expect("Istio types serialize to JSON without fallible custom code")
    }
}

fn join(prefix: &str, path: &str) -> String {
    if path.is_empty() || path == "." {
        prefix.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
