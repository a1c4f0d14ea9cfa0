//! One Istio object as an MCP resource and back: [`encode`] packs a validated object into an
//! encoded `istio.mcp.v1alpha1.Resource` (its spec as a `google.protobuf.Struct`), [`decode`]
//! turns a received resource into the Kubernetes-style JSON object that the config sources'
//! validation reads (`apiVersion`, `kind`, `metadata`, `spec`).
//!
//! Carried: name, namespace, labels, annotations, `resourceVersion` (metadata `version`),
//! `creationTimestamp` (`create_time`) and the spec. Not carried (as in istiod's MCP): `status`,
//! `generation`, `uid`. Protobuf's `Struct` has only doubles, so whole numbers come back as
//! integers and integers beyond 2^53 would lose precision (no Istio field holds such values).

use super::time::{format_rfc3339, parse_rfc3339};
use super::wire::{kind_of_type_url, value, ListValue, McpResource, Metadata, Struct, Value};
use super::wire::{RESOURCE_TYPE, STRUCT_TYPE};
use capstan_api::IstioObject;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Map, Value as Json};

/// Why a received resource is not an Istio object Capstan can read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The type URL names no Istio kind Capstan knows.
    #[error("type {0} is not an Istio config type Capstan reads")]
    UnknownType(String),
    /// The resource is packed as another message.
    #[error("the resource is a {0}, not an istio.mcp.v1alpha1.Resource")]
    NotAnMcpResource(String),
    /// The bytes are not a valid message.
    #[error("the resource does not decode: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The envelope has no metadata.
    #[error("the resource has no metadata")]
    MissingMetadata,
    /// The xDS resource name and the metadata name differ.
    #[error("the resource is named {resource:?} but its metadata says {metadata:?}")]
    NameMismatch {
        /// The xDS resource name.
        resource: String,
        /// `metadata.name`.
        metadata: String,
    },
    /// The name is not `namespace/name`.
    #[error("the name {0:?} is not of the form namespace/name")]
    BadName(String),
    /// The envelope has no body.
    #[error("the resource has no body")]
    MissingBody,
    /// The body is not a `google.protobuf.Struct`.
    #[error(
        "the body is a {0}: Capstan reads specs packed as google.protobuf.Struct only (istiod \
         packs the Istio API proto, which Capstan does not decode)"
    )]
    BodyType(String),
    /// `create_time` is not a time Kubernetes could have written.
    #[error("create_time {0}s is not a valid timestamp")]
    BadCreateTime(i64),
}

/// The MCP resource name of an object: `namespace/name`.
pub fn resource_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The encoded `istio.mcp.v1alpha1.Resource` of a (validated) object.
pub fn encode(object: &IstioObject) -> Vec<u8> {
    let meta = &object.metadata;
    let spec = match serde_json::to_value(&object.spec) {
        Ok(Json::Object(map)) => struct_of(&map),
        // Every spec is a struct; nothing else serializes.
        _ => Struct::default(),
    };
    McpResource {
        metadata: Some(Metadata {
            name: resource_name(&meta.namespace, &meta.name),
            create_time: meta.creation_timestamp.as_deref().and_then(parse_rfc3339),
            version: meta.resource_version.clone().unwrap_or_default(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
        }),
        body: Some(Any {
            type_url: STRUCT_TYPE.to_string(),
            value: spec.encode_to_vec(),
        }),
    }
    .encode_to_vec()
}

/// The Kubernetes-style object of resource `name` of `type_url`, packed in `resource`, for
/// validation. The `apiVersion` is the type URL's (`networking.istio.io/v1alpha3`).
pub fn decode(type_url: &str, name: &str, resource: &Any) -> Result<Json, EnvelopeError> {
    let kind =
        kind_of_type_url(type_url).ok_or_else(|| EnvelopeError::UnknownType(type_url.into()))?;
    if resource.type_url != RESOURCE_TYPE {
        return Err(EnvelopeError::NotAnMcpResource(resource.type_url.clone()));
    }
    let envelope = McpResource::decode(resource.value.as_slice())?;
    let meta = envelope.metadata.ok_or(EnvelopeError::MissingMetadata)?;
    if meta.name != name {
        return Err(EnvelopeError::NameMismatch {
            resource: name.into(),
            metadata: meta.name,
        });
    }
    let (namespace, object_name) = meta
        .name
        .split_once('/')
        .ok_or_else(|| EnvelopeError::BadName(meta.name.clone()))?;
    let body = envelope.body.ok_or(EnvelopeError::MissingBody)?;
    if body.type_url != STRUCT_TYPE {
        return Err(EnvelopeError::BodyType(body.type_url));
    }
    let spec = Struct::decode(body.value.as_slice())?;
    let mut metadata = Map::new();
    metadata.insert("name".into(), object_name.into());
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), namespace.into());
    }
    if !meta.labels.is_empty() {
        metadata.insert("labels".into(), string_map(meta.labels));
    }
    if !meta.annotations.is_empty() {
        metadata.insert("annotations".into(), string_map(meta.annotations));
    }
    if !meta.version.is_empty() {
        metadata.insert("resourceVersion".into(), meta.version.into());
    }
    if let Some(ts) = meta.create_time {
        let text = format_rfc3339(&ts).ok_or(EnvelopeError::BadCreateTime(ts.seconds))?;
        metadata.insert("creationTimestamp".into(), text.into());
    }
    let api_version = type_url
        .rsplit_once('/')
        .map_or(type_url, |(group_version, _)| group_version);
    let mut object = Map::new();
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.name().into());
    object.insert("metadata".into(), Json::Object(metadata));
    object.insert("spec".into(), json_of_struct(spec));
    Ok(Json::Object(object))
}

fn string_map(map: std::collections::BTreeMap<String, String>) -> Json {
    Json::Object(map.into_iter().map(|(k, v)| (k, Json::String(v))).collect())
}

fn struct_of(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), value_of(v))).collect(),
    }
}

fn value_of(json: &Json) -> Value {
    let kind = match json {
        Json::Null => value::Kind::NullValue(0),
        Json::Bool(b) => value::Kind::BoolValue(*b),
        // Always a number without serde_json's arbitrary precision, which is not enabled.
        Json::Number(n) => value::Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => value::Kind::StringValue(s.clone()),
        Json::Array(items) => value::Kind::ListValue(ListValue {
            values: items.iter().map(value_of).collect(),
        }),
        Json::Object(map) => value::Kind::StructValue(struct_of(map)),
    };
    Value { kind: Some(kind) }
}

fn json_of_struct(s: Struct) -> Json {
    Json::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, json_of_value(v)))
            .collect(),
    )
}

/// Largest integer a double holds exactly.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

fn json_of_value(v: Value) -> Json {
    match v.kind {
        None | Some(value::Kind::NullValue(_)) => Json::Null,
        Some(value::Kind::BoolValue(b)) => Json::Bool(b),
        Some(value::Kind::NumberValue(n)) => {
            // Integer fields (ports, weights) must come back as integers to decode.
            if n.fract() == 0.0 && n.abs() <= EXACT_INTEGER {
                if n >= 0.0 {
                    Json::from(n as u64)
                } else {
                    Json::from(n as i64)
                }
            } else {
                serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
            }
        }
        Some(value::Kind::StringValue(s)) => Json::String(s),
        Some(value::Kind::ListValue(l)) => {
            Json::Array(l.values.into_iter().map(json_of_value).collect())
        }
        Some(value::Kind::StructValue(s)) => json_of_struct(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::wire::type_url;
    use capstan_api::{check_text, CheckOptions};

    const OBJECTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
  labels: {app: reviews}
  annotations: {note: "a b"}
  resourceVersion: "42"
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}]
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 75
    - destination: {host: reviews, subset: v1}
      weight: 25
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 0.5s}
    fault: {delay: {percentage: {value: 0.1}, fixedDelay: 5s}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {"8080": {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
"#;

    fn objects() -> Vec<IstioObject> {
        let results = check_text(OBJECTS, &CheckOptions::default());
        let objects: Vec<IstioObject> = results
            .into_iter()
            .map(|r| *r.object.unwrap_or_else(|| panic!("valid: {:?}", r.errors)))
            .collect();
        assert_eq!(objects.len(), 4);
        objects
    }

    fn packed(object: &IstioObject) -> Any {
        Any {
            type_url: RESOURCE_TYPE.into(),
            value: encode(object),
        }
    }

    /// What a receiver validates is the object the sender had, up to what MCP does not carry.
    #[test]
    fn objects_round_trip_through_the_envelope() {
        for object in objects() {
            let url = type_url(object.kind);
            let name = resource_name(&object.metadata.namespace, &object.metadata.name);
            let json = decode(url, &name, &packed(&object)).expect("decodes");
            let mut back = check_text(&json.to_string(), &CheckOptions::default());
            let back = *back.remove(0).object.expect("still valid");
            assert_eq!(back.spec, object.spec, "{name}");
            assert_eq!(back.metadata, object.metadata, "{name}");
            assert_eq!(back.kind, object.kind);
            assert_eq!(back.api_version, url.rsplit_once('/').unwrap().0);
        }
    }

    #[test]
    fn encoding_is_stable_and_follows_content() {
        let objects = objects();
        assert_eq!(encode(&objects[0]), encode(&objects[0].clone()));
        let mut changed = objects[0].clone();
        changed.metadata.labels.insert("x".into(), "y".into());
        assert_ne!(encode(&changed), encode(&objects[0]));
        let envelope = McpResource::decode(encode(&objects[0]).as_slice()).unwrap();
        let meta = envelope.metadata.unwrap();
        assert_eq!(meta.name, "shop/reviews");
        assert_eq!(meta.version, "42");
        assert_eq!(meta.create_time.unwrap().seconds, 1_714_557_600);
        assert_eq!(envelope.body.unwrap().type_url, STRUCT_TYPE);
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_a_reason() {
        let object = &objects()[0];
        let url = type_url(object.kind);
        let good = packed(object);
        let err = |type_url: &str, name: &str, any: &Any| {
            decode(type_url, name, any)
                .expect_err("refused")
                .to_string()
        };
        assert!(err(
            "networking.istio.io/v1/VirtualService",
            "shop/reviews",
            &good
        )
        .contains("not an Istio config type"));
        assert!(err(url, "shop/other", &good).contains("metadata says \"shop/reviews\""));
        let other = Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            value: vec![],
        };
        assert!(err(url, "shop/reviews", &other).contains("not an istio.mcp.v1alpha1.Resource"));
        let garbage = Any {
            type_url: RESOURCE_TYPE.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(err(url, "shop/reviews", &garbage).contains("does not decode"));
        // What istiod sends: the Istio API proto as the body.
        let istio_body = McpResource {
            metadata: Some(Metadata {
                name: "shop/reviews".into(),
                ..Metadata::default()
            }),
            body: Some(Any {
                type_url: "type.googleapis.com/istio.networking.v1alpha3.VirtualService".into(),
                value: vec![],
            }),
        };
        let any = Any {
            type_url: RESOURCE_TYPE.into(),
            value: istio_body.encode_to_vec(),
        };
        assert!(err(url, "shop/reviews", &any)
            .contains("reads specs packed as google.protobuf.Struct only"));
        let unnamed = McpResource {
            metadata: Some(Metadata {
                name: "reviews".into(),
                ..Metadata::default()
            }),
            body: None,
        };
        let any = Any {
            type_url: RESOURCE_TYPE.into(),
            value: unnamed.encode_to_vec(),
        };
        assert!(err(url, "reviews", &any).contains("not of the form namespace/name"));
    }

    #[test]
    fn numbers_come_back_as_json_numbers_of_the_right_sort() {
        let json: Json = serde_json::json!({"port": 9080, "neg": -3, "ratio": 0.25, "none": null});
        let Json::Object(map) = &json else {
            unreachable!()
        };
        assert_eq!(json_of_struct(struct_of(map)), json);
        assert_eq!(
            json_of_value(value_of(&Json::from(1e300))),
            Json::from(1e300)
        );
    }
}
