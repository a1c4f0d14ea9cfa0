//! Incremental (Delta) ADS over one stream: `DeltaAggregatedResources`.
//!
//! Subscriptions are diffs (`resource_names_subscribe`/`_unsubscribe`); a type's first request
//! on a stream carries `initial_resource_versions` (what the sink holds), so a reconnecting
//! client is sent only what changed. Wildcard types (CDS, LDS) subscribe with no names (the
//! legacy wildcard Istio expects). An ACK carries the response's nonce; a NACK adds
//! `error_detail`.

use super::machine::{Action, Machine, Response};
use super::{error_detail, StreamError, XdsStatus, MAX_MESSAGE};
use crate::resources::Update;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// The request for one action. `node` is set on the stream's first request only, as Envoy does
/// with pilot-agent's `set_node_on_first_message_only`.
fn request(action: Action, machine: &Machine, node: &mut Option<Node>) -> DeltaDiscoveryRequest {
    let mut req = match action {
        Action::Subscribe {
            type_url,
            added,
            removed,
            first,
            names,
        } => {
            let mut req = DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                resource_names_subscribe: added,
                resource_names_unsubscribe: removed,
                ..Default::default()
            };
            if first {
                let held = machine.versions(type_url);
                req.initial_resource_versions = match &names {
                    // Wildcard: everything held of the type.
                    None => held.into_iter().collect(),
                    Some(names) => held
                        .into_iter()
                        .filter(|(n, _)| names.binary_search(n).is_ok())
                        .collect(),
                };
            }
            req
        }
        Action::Ack {
            type_url,
            nonce,
            error,
            ..
        } => DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: error.as_deref().map(error_detail),
            ..Default::default()
        },
    };
    req.node = node.take();
    req
}

fn response(r: DeltaDiscoveryResponse) -> Response {
    let version = r.system_version_info;
    let updated = r
        .resources
        .into_iter()
        // A resource without a body is a TTL heartbeat: nothing changes.
        .filter_map(|res| {
            res.resource.map(|any| Update {
                name: res.name,
                version: res.version,
                resource: any,
            })
        })
        .collect();
    Response {
        type_url: r.type_url,
        version,
        nonce: r.nonce,
        updated,
        removed: r.removed_resources,
        state_of_the_world: false,
    }
}

/// Speaks Delta ADS on `channel` until the stream ends (`Err`) or `shutdown` fires (`Ok`).
pub(crate) async fn run(
    channel: Channel,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    node: Node,
    machine: &mut Machine,
    status: &XdsStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut node = Some(node);
    for action in machine.start() {
        // The receiver lives until the stream ends; a failed send means it has ended.
        let _ = tx.send(request(action, machine, &mut node));
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut inbound = tokio::select! {
        r = client.delta_aggregated_resources(super::with_token(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), token)) => r?.into_inner(),
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    };
    status.set_connected(true);
    tracing::info!("xDS stream (Delta) established");
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(StreamError::Closed);
        };
        for action in machine.on_response(response(msg)) {
            if tx.send(request(action, machine, &mut node)).is_err() {
                return Err(StreamError::Closed);
            }
        }
    }
}
