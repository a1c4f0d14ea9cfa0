//! Generated xDS resources and the type URLs Capstan serves.

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::hash::{Hash, Hasher};

/// `type.googleapis.com/envoy.config.listener.v3.Listener`
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The type URLs Capstan generates, in the order Envoy wants them pushed (CDS before EDS,
/// LDS before RDS) to avoid traffic drops during updates.
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// True for types whose subscription without names means "everything" (wildcard).
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// One named resource, packed, with a version that changes exactly when its content does.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Resource name (`outbound|9080||reviews.default.svc.cluster.local`, `0.0.0.0_9080`, `9080`).
    pub name: String,
    /// Content hash of the encoded resource, hex.
    pub version: String,
    /// The resource.
    pub body: Any,
}

impl Resource {
    /// Packs a message under `name`, versioning it by a hash of its encoding.
    pub fn new<M: Message + prost::Name>(name: impl Into<String>, message: &M) -> Resource {
        let value = message.encode_to_vec();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        Resource {
            name: name.into(),
            version: format!("{:016x}", hasher.finish()),
            body: Any {
                type_url: M::type_url(),
                value,
            },
        }
    }

    /// Decodes the body back into its message (for tests and debugging).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.body.value.as_slice())
    }
}
