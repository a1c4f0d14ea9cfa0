//! Clusters: compiled from CDS (`Cluster`) and EDS (`ClusterLoadAssignment`), and the runtime that
//! outlives config updates: endpoints, load balancer, circuit breakers, outlier detection,
//! connection pools.
//!
//! SKELETON: the cluster helper owns this module and replaces this file. The signatures below are
//! the contract the rest of the crate codes against.

use crate::http::BoxBody;
use crate::stats::ClusterStats;
use crate::CompileError;
use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use std::net::SocketAddr;
use std::sync::Arc;

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// EDS over ADS, under this service name (the cluster's name when unset).
    Eds(String),
    /// `STATIC`: the inline load assignment.
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: hostnames in the inline load assignment, resolved.
    Dns,
    /// `ORIGINAL_DST`: the connection's original destination.
    OriginalDst,
}

/// A cluster's compiled configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// How its endpoints are found.
    pub discovery: Discovery,
}

/// Compiles a CDS resource.
pub fn compile(c: &ClusterProto) -> Result<ClusterConfig, CompileError> {
    let _ = c;
    Err(CompileError::new("", "clusters are not implemented yet"))
}

/// A cluster's endpoints, compiled from a `ClusterLoadAssignment`.
#[derive(Debug, Clone, Default)]
pub struct EndpointSet {}

/// Compiles an EDS resource.
pub fn compile_assignment(cla: &ClusterLoadAssignment) -> Result<EndpointSet, CompileError> {
    let _ = cla;
    Err(CompileError::new("", "endpoints are not implemented yet"))
}

/// What the load balancer may use for one pick.
#[derive(Debug, Clone, Default)]
pub struct LbContext {
    /// The route's hash-policy hash (ring hash / maglev).
    pub hash: Option<u64>,
    /// The downstream connection's original destination (ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
    /// Hosts tried already by this request (retry `previous_hosts` predicate).
    pub avoid: Vec<SocketAddr>,
}

/// Why an upstream request or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A circuit breaker refused it (answered 503, counted as overflow).
    #[error("upstream overflow (circuit breaker)")]
    Overflow,
    /// No healthy endpoint.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// The connection could not be made.
    #[error("upstream connect error: {0}")]
    ConnectFailure(String),
    /// The connection broke before a response.
    #[error("upstream reset: {0}")]
    Reset(String),
}

/// A live cluster: config plus runtime state.
#[derive(Debug)]
pub struct Cluster {
    config: Arc<ClusterConfig>,
    stats: Arc<ClusterStats>,
}

impl Cluster {
    /// A cluster with no endpoints yet.
    pub fn new(config: Arc<ClusterConfig>, stats: Arc<ClusterStats>) -> Arc<Cluster> {
        Arc::new(Cluster { config, stats })
    }
    /// Its configuration.
    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }
    /// Its counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }
    /// Replaces its endpoints (EDS update), keeping health and outlier state of those that stay.
    pub fn set_endpoints(&self, endpoints: EndpointSet) {
        let _ = endpoints;
    }
    /// Sends one HTTP request to an endpoint picked by the load balancer.
    pub async fn request(
        &self,
        req: http::Request<BoxBody>,
        ctx: &LbContext,
    ) -> Result<(http::Response<hyper::body::Incoming>, SocketAddr), UpstreamError> {
        let _ = (req, ctx);
        Err(UpstreamError::NoHealthyUpstream)
    }
    /// Opens a TCP connection to an endpoint picked by the load balancer.
    pub async fn connect(
        &self,
        ctx: &LbContext,
    ) -> Result<(tokio::net::TcpStream, SocketAddr), UpstreamError> {
        let _ = ctx;
        Err(UpstreamError::NoHealthyUpstream)
    }
}
