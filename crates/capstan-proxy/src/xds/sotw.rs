//! State-of-the-World ADS over one stream: `StreamAggregatedResources`.
//!
//! Every request of a type carries the full name list (empty for a wildcard type), the version
//! last accepted and the nonce of the last response of that type (istiod ignores a request whose
//! nonce is stale). A CDS or LDS response lists every resource of its type; an EDS or RDS response
//! lists some of the names subscribed. Resource names are read from the resources themselves.

use super::machine::{Action, Machine, Response};
use super::{error_detail, StreamError, XdsStatus, MAX_MESSAGE};
use crate::resources::{self, Update};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use std::collections::HashMap;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// Field 1 of the four resource types: `name` of `Cluster`, `Listener` and
/// `RouteConfiguration`, `cluster_name` of `ClusterLoadAssignment`. Decoding only it skips the
/// rest of the message.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of an encoded resource.
pub(crate) fn resource_name(value: &[u8]) -> Result<String, String> {
    NameOnly::decode(value)
        .map(|n| n.name)
        .map_err(|e| format!("cannot decode the resource's name: {e}"))
}

/// Per type, the nonce of the last response: a later request of the type must carry it.
#[derive(Default)]
struct Nonces(HashMap<String, String>);

fn request(
    action: Action,
    status: &XdsStatus,
    nonces: &Nonces,
    node: &mut Option<Node>,
) -> DiscoveryRequest {
    let mut req = match action {
        Action::Subscribe {
            type_url,
            names,
            first,
            ..
        } => {
            // A new stream starts without a nonce, with the version held (Envoy's behaviour).
            let nonce = if first {
                String::new()
            } else {
                nonces.0.get(type_url).cloned().unwrap_or_default()
            };
            DiscoveryRequest {
                type_url: type_url.to_string(),
                version_info: status
                    .type_status(type_url)
                    .map(|t| t.version)
                    .unwrap_or_default(),
                resource_names: names.unwrap_or_default(),
                response_nonce: nonce,
                ..Default::default()
            }
        }
        Action::Ack {
            type_url,
            names,
            version,
            nonce,
            error,
        } => DiscoveryRequest {
            type_url,
            version_info: version,
            resource_names: names.unwrap_or_default(),
            response_nonce: nonce,
            error_detail: error.as_deref().map(error_detail),
            ..Default::default()
        },
    };
    req.node = node.take();
    req
}

/// A response as the machine sees it, and the error that NACKs it when a resource's name cannot
/// be read.
fn response(r: DiscoveryResponse) -> (Response, Option<String>) {
    let wildcard = r.type_url == resources::CLUSTER || r.type_url == resources::LISTENER;
    let mut updated = Vec::with_capacity(r.resources.len());
    let mut bad = None;
    for (i, any) in r.resources.into_iter().enumerate() {
        match resource_name(&any.value) {
            Ok(name) => updated.push(Update {
                name,
                version: r.version_info.clone(),
                resource: any,
            }),
            Err(e) => {
                bad = Some(format!("resources[{i}]: {e}"));
                break;
            }
        }
    }
    let resp = Response {
        type_url: r.type_url,
        version: r.version_info,
        nonce: r.nonce,
        updated,
        removed: Vec::new(),
        state_of_the_world: wildcard,
    };
    (resp, bad)
}

/// Speaks SotW ADS on `channel` until the stream ends (`Err`) or `shutdown` fires (`Ok`).
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
    let mut nonces = Nonces::default();
    for action in machine.start() {
        // The receiver lives until the stream ends; a failed send means it has ended.
        let _ = tx.send(request(action, status, &nonces, &mut node));
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut inbound = tokio::select! {
        r = client.stream_aggregated_resources(super::with_token(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), token)) => r?.into_inner(),
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    };
    status.set_connected(true);
    tracing::info!("xDS stream (SotW) established");
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(StreamError::Closed);
        };
        nonces.0.insert(msg.type_url.clone(), msg.nonce.clone());
        let actions = match response(msg) {
            (r, None) => machine.on_response(r),
            (r, Some(e)) => machine.reject(r, e),
        };
        for action in actions {
            if tx
                .send(request(action, status, &nonces, &mut node))
                .is_err()
            {
                return Err(StreamError::Closed);
            }
        }
    }
}
