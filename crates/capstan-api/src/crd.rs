//! CustomResourceDefinitions generated from the Rust types: one CRD per kind, every served
//! version sharing one structural OpenAPI v3 schema, `v1` stored, Istio's short names and
//! categories.
//!
//! schemars emits JSON Schema (refs, `const`, nullable type arrays, `additionalProperties: false`);
//! Kubernetes wants a *structural* schema, so [`structural`] rewrites one into the other.

use crate::kinds::{Kind, Spec};
use serde_json::{json, Map, Value};

/// The CRD for one kind, as a JSON value (serialize it as YAML or JSON).
pub fn crd(kind: Kind) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let spec_schema = Spec::schema(kind, &mut generator);
    let definitions: Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let spec = structural(spec_schema.to_value(), &definitions, 0);
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": spec,
            "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
        }
    });
    let versions: Vec<Value> = kind
        .versions()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": schema.clone() }
            })
        })
        .collect();
    let singular = kind.name().to_ascii_lowercase();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", kind.plural(), kind.group()),
            "labels": { "app.kubernetes.io/part-of": "capstan" }
        },
        "spec": {
            "group": kind.group(),
            "names": {
                "kind": kind.name(),
                "listKind": format!("{}List", kind.name()),
                "plural": kind.plural(),
                "singular": singular,
                "shortNames": kind.short_names(),
                "categories": kind.categories(),
            },
            "scope": "Namespaced",
            "versions": versions
        }
    })
}

/// File name under `deploy/crds/` for a kind's CRD.
pub fn file_name(kind: Kind) -> String {
    format!("{}_{}.yaml", kind.group(), kind.plural())
}

/// The CRD of a kind rendered as YAML with a header saying how it was made.
pub fn crd_yaml(kind: Kind) -> String {
    let body = serde_yaml_ng::to_string(&crd(kind)).expect("a JSON value always renders as YAML");
    format!("# Generated from the capstan-api Rust types. Do not edit.\n# Regenerate: CAPSTAN_UPDATE_CRDS=1 cargo test -p capstan-api --test crds\n{body}")
}

const KEPT_FORMATS: &[&str] = &["int32", "int64", "float", "double", "byte", "date-time"];
const DROPPED_KEYS: &[&str] = &[
    "$schema",
    "title",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "uniqueItems",
    "$id",
    "$defs",
    "definitions",
];
const MAX_DEPTH: usize = 64;

/// Rewrites a schemars schema into a Kubernetes structural schema: refs inlined, nullable
/// type arrays and `anyOf [X, null]` collapsed to X, `const` unions turned into `enum`,
/// unsupported keywords dropped, and free-form values marked `x-kubernetes-preserve-unknown-fields`.
fn structural(schema: Value, defs: &Map<String, Value>, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return json!({ "x-kubernetes-preserve-unknown-fields": true });
    }
    let mut map = match schema {
        Value::Bool(_) => return json!({ "x-kubernetes-preserve-unknown-fields": true }),
        Value::Object(map) => map,
        other => return other,
    };
    if let Some(Value::String(r)) = map.remove("$ref") {
        let name = r.rsplit('/').next().unwrap_or_default();
        let mut target = defs.get(name).cloned().unwrap_or(json!({}));
        if let (Value::Object(t), Some(Value::String(d))) = (&mut target, map.get("description")) {
            t.insert("description".into(), Value::String(d.clone()));
        }
        return structural(target, defs, depth + 1);
    }
    for key in DROPPED_KEYS {
        map.remove(*key);
    }
    if let Some(Value::String(f)) = map.get("format") {
        if !KEPT_FORMATS.contains(&f.as_str()) {
            map.remove("format");
        }
    }
    map.remove("nullable");
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let non_null: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        match non_null.as_slice() {
            [one] => {
                map.insert("type".into(), one.clone());
            }
            _ => {
                map.remove("type");
                map.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
        }
    }
    for union in ["anyOf", "oneOf"] {
        if let Some(Value::Array(variants)) = map.remove(union) {
            let non_null: Vec<Value> = variants
                .into_iter()
                .filter(|v| v.get("type") != Some(&json!("null")))
                .collect();
            if non_null.iter().all(|v| v.get("const").is_some()) && !non_null.is_empty() {
                let values: Vec<Value> = non_null
                    .iter()
                    .filter_map(|v| v.get("const").cloned())
                    .collect();
                map.insert("type".into(), json!("string"));
                map.insert("enum".into(), Value::Array(values));
            } else if non_null.len() == 1 {
                let inner = structural(
                    non_null.into_iter().next().expect("length checked"),
                    defs,
                    depth + 1,
                );
                if let Value::Object(inner) = inner {
                    for (k, v) in inner {
                        map.entry(k).or_insert(v);
                    }
                }
            } else {
                // A union of shapes: keep the value free-form (validation is done by Capstan's webhook).
                map.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
        }
    }
    if let Some(c) = map.remove("const") {
        map.insert("enum".into(), Value::Array(vec![c]));
    }
    if let Some(props) = map.remove("properties") {
        if let Value::Object(props) = props {
            let props: Map<String, Value> = props
                .into_iter()
                .map(|(k, v)| (k, structural(v, defs, depth + 1)))
                .collect();
            map.insert("properties".into(), Value::Object(props));
        }
        map.remove("additionalProperties");
        map.remove("required");
    } else if let Some(extra) = map.remove("additionalProperties") {
        match extra {
            Value::Bool(false) => {}
            Value::Bool(true) => {
                map.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
            other => {
                map.insert(
                    "additionalProperties".into(),
                    structural(other, defs, depth + 1),
                );
            }
        }
    }
    if let Some(items) = map.remove("items") {
        map.insert("items".into(), structural(items, defs, depth + 1));
    }
    if !map.contains_key("type")
        && !map.contains_key("x-kubernetes-int-or-string")
        && !map.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        if map.contains_key("properties") || map.contains_key("additionalProperties") {
            map.insert("type".into(), json!("object"));
        } else if map.contains_key("enum") {
            map.insert("type".into(), json!("string"));
        } else {
            map.insert(
                "x-kubernetes-preserve-unknown-fields".into(),
                Value::Bool(true),
            );
        }
    }
    if map.get("type") == Some(&json!("object"))
        && !map.contains_key("properties")
        && !map.contains_key("additionalProperties")
    {
        map.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    Value::Object(map)
}
