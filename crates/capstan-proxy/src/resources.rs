//! The contract between the xDS client and the config store: type URLs, one response's resources,
//! and the sink that applies them.

/// `envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// `envoy.extensions.transport_sockets.tls.v3.Secret`: SDS over ADS (Istio's gateway
/// `credentialName` certificates, `kubernetes://NAME` and `kubernetes://NAME-cacert`).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Envoy's subscription order: clusters and their endpoints before the listeners and routes
/// that use them, then the secrets the listeners name (istiod pushes secrets last).
pub const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// One resource of a response.
#[derive(Debug, Clone)]
pub struct Update {
    /// The resource's name (Delta: `Resource.name`; SotW: read from the decoded resource).
    pub name: String,
    /// Its version (Delta: `Resource.version`; SotW: the response's `version_info`).
    pub version: String,
    /// The encoded resource.
    pub resource: envoy_types::pb::google::protobuf::Any,
}

/// Applies what the control plane sends. Implemented by [`crate::store::ConfigStore`].
pub trait ResourceSink: Send + Sync + 'static {
    /// Applies one response of `type_url`: `updated` resources added or replaced, `removed`
    /// names dropped. `state_of_the_world` says the response lists every resource of a wildcard
    /// type (SotW CDS/LDS), so a name it does not list is removed too.
    ///
    /// All or nothing: on `Err`, nothing of the response is applied and the message (naming the
    /// resource and field) becomes the NACK's `error_detail`.
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Update>,
        removed: &[String],
        state_of_the_world: bool,
    ) -> Result<(), String>;

    /// The names the proxy needs of a non-wildcard type (EDS: the EDS clusters; RDS: the route
    /// configurations the listeners name; SDS: the secrets the listeners name), given what has
    /// been applied so far.
    fn wanted(&self, type_url: &str) -> Vec<String>;

    /// Resources currently held of `type_url`, name → version, for a reconnecting Delta
    /// stream's `initial_resource_versions`.
    fn versions(&self, type_url: &str) -> Vec<(String, String)>;
}
