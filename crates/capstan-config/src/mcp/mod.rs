//! Istio config over xDS ("MCP-over-xDS"), as istiod's config server and config sources speak
//! it: one xDS type per kind, named by its `group/version/Kind`
//! (`networking.istio.io/v1alpha3/VirtualService`), each resource named `namespace/name` and
//! packed as an `istio.mcp.v1alpha1.Resource` (metadata + body).
//!
//! - [`wire`]: the envelope messages and the type URLs (pure).
//! - [`envelope`]: an object to its encoded envelope and back to a Kubernetes-style object (pure).
//! - [`client`]: what a config consumer has of each type and how a Delta response changes it
//!   (sync; applies to a [`crate::ConfigStore`]).
//! - [`source`]: [`XdsSource`], the `xds://host:port` config source: the Delta ADS stream,
//!   reconnection and first-sync reporting around [`client`].
//!
//! The body is where Capstan differs from istiod: istiod packs the Istio API proto of the spec
//! (`istio.networking.v1alpha3.VirtualService`); Capstan has no generated Istio protos and packs
//! the spec as a `google.protobuf.Struct` holding its JSON form. Capstan to Capstan this is
//! lossless; istiod as a consumer cannot decode the body, and Capstan refuses a body of any other
//! type (per resource, with an error naming it).

pub mod client;
pub mod envelope;
pub mod source;
mod time;
pub mod wire;

pub use client::McpClient;
pub use envelope::{decode, encode, resource_name, EnvelopeError};
pub use source::{SourceError, XdsSource};
pub use wire::{kind_of_type_url, type_url, RESOURCE_TYPE, STRUCT_TYPE, TYPE_URLS};
