//! The MCP envelope on the wire: Istio's `istio.mcp.v1alpha1.Resource` and `Metadata`
//! (istio/api `mcp/v1alpha1/resource.proto`, `metadata.proto`), the `google.protobuf.Struct`
//! Capstan packs specs in, and the type URL of each kind.
//!
//! The messages are written here rather than generated: they are small, and maps must encode
//! in a stable order (`BTreeMap`; prost's default `HashMap` would give every encoding of the
//! same object different bytes, so a different content hash and version, in every process).
//! Field numbers follow the .proto files; a test checks them against the generated
//! `google.protobuf.Struct` of envoy-types.

use capstan_api::Kind;
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use std::collections::BTreeMap;

/// The type URL of the resources' packed message: `istio.mcp.v1alpha1.Resource`.
pub const RESOURCE_TYPE: &str = "type.googleapis.com/istio.mcp.v1alpha1.Resource";
/// The type URL of the body Capstan writes: the spec as JSON in a `google.protobuf.Struct`.
pub const STRUCT_TYPE: &str = "type.googleapis.com/google.protobuf.Struct";

/// The xDS type URL of every kind, in [`Kind::ALL`] order: istiod's `group/version/Kind`
/// (`pkg/config/schema/gvk`: networking kinds at `v1alpha3`, security kinds at `v1beta1`).
pub const TYPE_URLS: [&str; 10] = [
    "networking.istio.io/v1alpha3/VirtualService",
    "networking.istio.io/v1alpha3/DestinationRule",
    "networking.istio.io/v1alpha3/Gateway",
    "networking.istio.io/v1alpha3/ServiceEntry",
    "networking.istio.io/v1alpha3/Sidecar",
    "networking.istio.io/v1alpha3/WorkloadEntry",
    "networking.istio.io/v1alpha3/WorkloadGroup",
    "security.istio.io/v1beta1/PeerAuthentication",
    "security.istio.io/v1beta1/AuthorizationPolicy",
    "security.istio.io/v1beta1/RequestAuthentication",
];

/// The xDS type URL of `kind`'s config.
pub fn type_url(kind: Kind) -> &'static str {
    let i = Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("Kind::ALL lists every kind");
    TYPE_URLS[i]
}

/// The kind a config type URL carries, if it is one of [`TYPE_URLS`].
pub fn kind_of_type_url(type_url: &str) -> Option<Kind> {
    TYPE_URLS
        .iter()
        .position(|t| *t == type_url)
        .map(|i| Kind::ALL[i])
}

/// `istio.mcp.v1alpha1.Resource`: common metadata and the type-specific body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct McpResource {
    /// Name, creation time, version, labels, annotations.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    /// The spec (Capstan: a `google.protobuf.Struct`; istiod: the Istio API proto).
    #[prost(message, optional, tag = "2")]
    pub body: Option<Any>,
}

/// `istio.mcp.v1alpha1.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// `namespace/name`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The object's `creationTimestamp`.
    #[prost(message, optional, tag = "2")]
    pub create_time: Option<Timestamp>,
    /// The object's `resourceVersion` (opaque).
    #[prost(string, tag = "3")]
    pub version: String,
    /// The object's labels.
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: BTreeMap<String, String>,
    /// The object's annotations.
    #[prost(btree_map = "string, string", tag = "5")]
    pub annotations: BTreeMap<String, String>,
}

/// `google.protobuf.Struct`, with its fields in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    /// The fields.
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The value; unset reads as null.
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    /// The items.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// The `kind` oneof of [`Value`].
pub mod value {
    /// One JSON value.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// `null` (the enum `google.protobuf.NullValue`, whose only value is 0).
        #[prost(int32, tag = "1")]
        NullValue(i32),
        /// A number (protobuf JSON has only doubles).
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// A string.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        /// An object.
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        /// A list.
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf as pb;
    use prost::Message;

    #[test]
    fn every_kind_has_its_type_url() {
        for kind in Kind::ALL {
            let url = type_url(*kind);
            assert_eq!(kind_of_type_url(url), Some(*kind));
            let (group_version, name) = url.rsplit_once('/').expect("group/version/Kind");
            assert_eq!(name, kind.name());
            let (group, version) = group_version.split_once('/').expect("group/version");
            assert_eq!(group, kind.group());
            assert!(kind.versions().contains(&version), "{url}");
        }
        assert_eq!(
            kind_of_type_url("networking.istio.io/v1/VirtualService"),
            None
        );
    }

    /// The hand-written Struct encodes as the generated `google.protobuf.Struct` decodes.
    #[test]
    fn struct_matches_the_generated_message() {
        let list = ListValue {
            values: vec![
                Value {
                    kind: Some(value::Kind::NumberValue(9080.0)),
                },
                Value {
                    kind: Some(value::Kind::NullValue(0)),
                },
            ],
        };
        let inner = Struct {
            fields: [(
                "flag".to_string(),
                Value {
                    kind: Some(value::Kind::BoolValue(true)),
                },
            )]
            .into(),
        };
        let ours = Struct {
            fields: [
                (
                    "a".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue("x".into())),
                    },
                ),
                (
                    "l".to_string(),
                    Value {
                        kind: Some(value::Kind::ListValue(list)),
                    },
                ),
                (
                    "s".to_string(),
                    Value {
                        kind: Some(value::Kind::StructValue(inner)),
                    },
                ),
            ]
            .into(),
        };
        let theirs = pb::Struct::decode(ours.encode_to_vec().as_slice()).expect("decodes");
        use pb::value::Kind as K;
        assert_eq!(theirs.fields["a"].kind, Some(K::StringValue("x".into())));
        let Some(K::ListValue(l)) = &theirs.fields["l"].kind else {
            panic!("list: {theirs:?}");
        };
        assert_eq!(l.values[0].kind, Some(K::NumberValue(9080.0)));
        assert_eq!(l.values[1].kind, Some(K::NullValue(0)));
        let Some(K::StructValue(s)) = &theirs.fields["s"].kind else {
            panic!("struct: {theirs:?}");
        };
        assert_eq!(s.fields["flag"].kind, Some(K::BoolValue(true)));
        let back = Struct::decode(theirs.encode_to_vec().as_slice()).expect("decodes back");
        assert_eq!(back, ours);
    }
}
