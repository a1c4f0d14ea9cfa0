//! What `/debug/syncz` shows: per connection and type URL, what was asked for, sent, ACKed and
//! rejected. Connection tasks update their entry synchronously (never across an `.await`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One ADS stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectionStatus {
    /// The node id the proxy sent.
    pub proxy_id: String,
    /// Unique per stream (`<proxy id>-<n>`, as istiod names them).
    pub connection_id: String,
    /// True for Delta xDS, false for State of the World.
    pub delta: bool,
    /// When the stream was opened, in milliseconds since the Unix epoch.
    pub connected_since_unix_ms: u64,
    /// The proxy as parsed from its node (type, IPs, namespace, labels, metadata).
    pub proxy: crate::proxy::Proxy,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// The state of one type URL on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Subscribed to everything of the type.
    pub wildcard: bool,
    /// Number of explicitly subscribed names.
    pub subscribed_names: usize,
    /// `version_info` (SotW) or `system_version_info` (Delta) of the last response sent.
    pub last_sent_version: String,
    /// Nonce of the last response sent.
    pub last_sent_nonce: String,
    /// Version of the last response the proxy ACKed (empty before the first ACK).
    pub last_acked_version: String,
    /// The last rejection, if any (kept after later ACKs so it can still be inspected).
    pub last_nack: Option<NackStatus>,
    /// Resources in the last response sent.
    pub last_response_resources: usize,
    /// Resources sent on this stream for this type, in total.
    pub resources_sent: u64,
    /// Responses sent on this stream for this type, in total.
    pub responses_sent: u64,
}

/// A NACK: the proxy rejected a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackStatus {
    /// The `error_detail` message the proxy sent.
    pub message: String,
    /// The `error_detail` gRPC status code (istiod's `pilot_xds_*_reject` `err` label).
    pub code: i32,
    /// Nonce of the rejected response.
    pub nonce: String,
    /// Version of the rejected response.
    pub version: String,
    /// When the NACK arrived, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}
