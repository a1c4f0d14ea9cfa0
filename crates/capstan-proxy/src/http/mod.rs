//! The HTTP connection manager: HTTP/1.1 and HTTP/2 (prior knowledge) downstream, the HTTP
//! filters Istio generates (fault, CORS, router), and the router's request path (route, rewrite,
//! headers, retries, timeouts, mirroring) onto a cluster.
//!
//! SKELETON: the HTTP helper owns this module and replaces this file. `BoxBody`, `HcmConfig`,
//! `RouteSource`, `compile_hcm` and `serve_connection` are the contract the rest of the crate
//! codes against.

use crate::route::RouteTable;
use crate::store::Store;
use crate::CompileError;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use std::net::SocketAddr;
use std::sync::Arc;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type requests and responses are carried in between layers.
pub type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Where an HTTP connection manager gets its routes.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// RDS: the route configuration of this name, read from the store's snapshot per request.
    Rds(String),
    /// Inline in the listener.
    Inline(Arc<RouteTable>),
}

/// A compiled `HttpConnectionManager`.
#[derive(Debug)]
pub struct HcmConfig {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// Where routes come from.
    pub routes: RouteSource,
}

/// Compiles an `HttpConnectionManager` network filter's config.
pub fn compile_hcm(hcm: &HttpConnectionManager) -> Result<HcmConfig, CompileError> {
    let _ = hcm;
    Err(CompileError::new("", "HTTP is not implemented yet"))
}

/// What the HTTP layer knows of the downstream connection.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address the connection was made to (the original destination when captured).
    pub local: SocketAddr,
    /// Whether the connection is TLS (for `x-forwarded-proto`).
    pub tls: bool,
}

/// Serves one downstream connection (after filter-chain selection) until it closes or
/// `drain` fires (then in-flight requests finish and the connection closes gracefully).
pub async fn serve_connection<IO>(
    io: IO,
    hcm: Arc<HcmConfig>,
    store: Arc<Store>,
    downstream: Downstream,
    drain: tokio::sync::watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, hcm, store, downstream, drain);
}
