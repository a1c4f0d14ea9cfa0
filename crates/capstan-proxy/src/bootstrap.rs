//! The subset of Envoy's v3 bootstrap that Istio's pilot-agent writes (JSON or YAML), or the
//! same fields from flags.
//!
//! SKELETON: the xDS-client helper owns this module and replaces this file.

use std::net::SocketAddr;

/// What the proxy needs from its bootstrap.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `node`: id, cluster, metadata, locality — sent on every xDS request.
    pub node: envoy_types::pb::envoy::config::core::v3::Node,
    /// `dynamic_resources.ads_config`: where and how to speak ADS.
    pub ads: Option<AdsConfig>,
    /// `admin.address`.
    pub admin: Option<SocketAddr>,
}

/// The ADS server and protocol.
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// `http://host:port` of the xDS server (from the static cluster the ADS config names).
    pub endpoint: String,
    /// `DELTA_GRPC` (true) or `GRPC` (false).
    pub delta: bool,
}
