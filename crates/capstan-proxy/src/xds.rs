//! The ADS client: Delta (or SotW) over one gRPC stream; applies responses through a
//! [`ResourceSink`] in Envoy's order, ACKs and NACKs, reconnects with jittered backoff.
//!
//! SKELETON: the xDS-client helper owns this module and replaces this file.

use crate::bootstrap::Bootstrap;
use crate::resources::ResourceSink;
use std::sync::Arc;

/// What the client reports for the admin endpoints: per type URL, the last applied version and
/// nonce, the last NACK's error, and whether the stream is up.
#[derive(Debug, Default)]
pub struct XdsStatus {}

/// Runs the ADS client until `shutdown` fires, reconnecting as needed.
pub async fn run(
    bootstrap: Bootstrap,
    sink: Arc<dyn ResourceSink>,
    status: Arc<XdsStatus>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _ = (bootstrap, sink, status, shutdown);
}
