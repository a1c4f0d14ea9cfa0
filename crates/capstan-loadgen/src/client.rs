//! One simulated sidecar: a Delta ADS stream that subscribes like Envoy (CDS and LDS wildcard,
//! then EDS for the EDS clusters and RDS for the route names the listeners reference), ACKs
//! every response, and reports what it received.

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use std::collections::BTreeSet;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Listener type URL.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route configuration type URL.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Cluster type URL.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Cluster load assignment type URL.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// What a client tells the orchestrator.
#[derive(Debug)]
pub enum Report {
    /// A response arrived: its type, the names of its resources, removed names, size.
    Received {
        client: usize,
        type_url: String,
        names: Vec<String>,
        bytes: usize,
        at: Instant,
    },
    /// A NACK the client would have sent (a resource it could not decode).
    Rejected {
        client: usize,
        type_url: String,
        error: String,
    },
    /// The client has everything it subscribed to (CDS, LDS, and every EDS and RDS name they named).
    Synced,
    /// The stream ended.
    Closed {
        client: usize,
        error: Option<String>,
    },
}

fn route_names(listener: &Listener) -> Vec<String> {
    let mut out = Vec::new();
    for chain in &listener.filter_chains {
        for filter in &chain.filters {
            if let Some(ConfigType::TypedConfig(any)) = &filter.config_type {
                if any.type_url == HCM {
                    if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            out.push(rds.route_config_name);
                        }
                    }
                }
            }
        }
    }
    out
}

fn request(
    type_url: &str,
    nonce: &str,
    subscribe: Vec<String>,
    node: Option<Node>,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node,
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        resource_names_subscribe: subscribe,
        ..DeltaDiscoveryRequest::default()
    }
}

/// Runs one client until its stream ends.
pub async fn run(
    client: usize,
    endpoint: String,
    reports: mpsc::UnboundedSender<Report>,
) -> Result<()> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(endpoint)
        .await
        .context("connecting to the xDS server")?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let node = Node {
        id: capstan_loadgen::mesh::node_id(client),
        cluster: "loadgen".into(),
        ..Node::default()
    };
    tx.send(request(CLUSTER, "", vec![], Some(node))).await?;
    tx.send(request(LISTENER, "", vec![], None)).await?;
    let mut responses = ads
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut eds_names: BTreeSet<String> = BTreeSet::new();
    let mut rds_names: BTreeSet<String> = BTreeSet::new();
    let mut received: BTreeSet<(String, String)> = BTreeSet::new();
    let mut synced = false;
    let result = loop {
        let response = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break None,
            Err(status) => break Some(status.to_string()),
        };
        let at = Instant::now();
        let bytes = response.encoded_len();
        let names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
        let mut new_eds = Vec::new();
        let mut new_rds = Vec::new();
        let mut error = None;
        for r in &response.resources {
            let Some(any) = &r.resource else { continue };
            if response.type_url == CLUSTER {
                match Cluster::decode(any.value.as_slice()) {
                    Ok(c) if matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32) => {
                        if eds_names.insert(c.name.clone()) {
                            new_eds.push(c.name);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => error = Some(format!("cluster {}: {e}", r.name)),
                }
            } else if response.type_url == LISTENER {
                match Listener::decode(any.value.as_slice()) {
                    Ok(l) => new_rds.extend(
                        route_names(&l)
                            .into_iter()
                            .filter(|n| rds_names.insert(n.clone())),
                    ),
                    Err(e) => error = Some(format!("listener {}: {e}", r.name)),
                }
            }
        }
        for name in &names {
            received.insert((response.type_url.clone(), name.clone()));
        }
        let _ = reports.send(Report::Received {
            client,
            type_url: response.type_url.clone(),
            names,
            bytes,
            at,
        });
        if !synced {
            let has_type = |t: &str| received.iter().any(|(ty, _)| ty == t);
            let all = |t: &str, names: &BTreeSet<String>| {
                names
                    .iter()
                    .all(|n| received.contains(&(t.to_string(), n.clone())))
            };
            if has_type(CLUSTER)
                && has_type(LISTENER)
                && all(ENDPOINT, &eds_names)
                && all(ROUTE, &rds_names)
                && new_eds.is_empty()
                && new_rds.is_empty()
            {
                synced = true;
                let _ = reports.send(Report::Synced);
            }
        }
        let mut ack = request(&response.type_url, &response.nonce, vec![], None);
        if let Some(e) = error {
            let _ = reports.send(Report::Rejected {
                client,
                type_url: response.type_url.clone(),
                error: e.clone(),
            });
            ack.error_detail = Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: e,
                details: vec![],
            });
        }
        if tx.send(ack).await.is_err() {
            break Some("request channel closed".into());
        }
        if !new_eds.is_empty() && tx.send(request(ENDPOINT, "", new_eds, None)).await.is_err() {
            break Some("request channel closed".into());
        }
        if !new_rds.is_empty() && tx.send(request(ROUTE, "", new_rds, None)).await.is_err() {
            break Some("request channel closed".into());
        }
    };
    let _ = reports.send(Report::Closed {
        client,
        error: result,
    });
    Ok(())
}
