//! Fetches everything an xDS server (istiod or `capstan discovery`) sends one node over Delta
//! ADS: CDS and LDS by wildcard, then the EDS and RDS names the clusters and listeners need
//! (as `wanted` reads them), until the server has been quiet for a while.
#![allow(dead_code)]

use anyhow::{bail, ensure, Context, Result};
use capstan_proxy::resources::{Update, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Resources by type URL, then name.
pub type Fetched = BTreeMap<&'static str, BTreeMap<String, Update>>;

/// What the resources held so far ask for: the EDS or RDS names (`type_url`).
pub trait Wants {
    /// Offers one received resource.
    fn offer(&mut self, type_url: &'static str, update: &Update);
    /// Every name of `type_url` wanted so far.
    fn wanted(&self, type_url: &'static str) -> BTreeSet<String>;
}

/// Fetches everything `node` gets from the server on 127.0.0.1:`port`; the stream is done when
/// nothing arrives for `quiet` (bounded overall by one minute).
pub async fn fetch_all(
    port: u16,
    node: Node,
    quiet: Duration,
    wants: &mut dyn Wants,
) -> Result<Fetched> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let subscribe =
        |type_url: &str, names: Vec<String>, node: Option<Node>| DeltaDiscoveryRequest {
            node,
            type_url: type_url.into(),
            resource_names_subscribe: names,
            ..DeltaDiscoveryRequest::default()
        };
    // Queued before the call: grpc-go sends the response headers with the first response,
    // which istiod sends only after the first request.
    tx.send(subscribe(CLUSTER, vec![], Some(node)))?;
    tx.send(subscribe(LISTENER, vec![], None))?;
    let call =
        client.delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    let mut stream = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .context("the server did not answer within 20 s")??
        .into_inner();
    let mut got: Fetched = BTreeMap::new();
    let mut asked: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout(quiet, stream.message()).await;
        let resp: DeltaDiscoveryResponse = match next {
            Err(_) => break, // quiet: everything asked for has arrived
            Ok(r) => r?.context("the server closed the stream")?,
        };
        ensure!(
            Instant::now() < deadline,
            "the server kept sending for 60 s"
        );
        let Some(type_url) = [CLUSTER, ENDPOINT, LISTENER, ROUTE]
            .into_iter()
            .find(|t| *t == resp.type_url)
        else {
            bail!("unexpected type {}", resp.type_url);
        };
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })?;
        for r in resp.resources {
            let u = Update {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: r.resource.context("a resource without a body")?,
            };
            wants.offer(type_url, &u);
            got.entry(type_url).or_default().insert(r.name, u);
        }
        for name in resp.removed_resources {
            got.entry(type_url).or_default().remove(&name);
        }
        for wanted in [ENDPOINT, ROUTE] {
            let names = wants.wanted(wanted);
            let seen = asked.entry(wanted).or_default();
            let new: Vec<String> = names.difference(seen).cloned().collect();
            if !new.is_empty() {
                seen.extend(new.iter().cloned());
                tx.send(subscribe(wanted, new, None))?;
            }
        }
    }
    Ok(got)
}

/// A node metadata `Struct` from string fields.
pub fn metadata(fields: &[(&str, Value)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// A string `Value`.
pub fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// A `Value` holding a string map (node `LABELS`).
pub fn labels(pairs: &[(&str, &str)]) -> Value {
    Value {
        kind: Some(Kind::StructValue(metadata(
            &pairs
                .iter()
                .map(|(k, v)| (*k, string(v)))
                .collect::<Vec<_>>(),
        ))),
    }
}

/// The metadata pilot-agent gives a node in `namespace` with pod `labels`.
pub fn node(id: &str, namespace: &str, pod_labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.into(),
        metadata: Some(metadata(&[
            ("NAMESPACE", string(namespace)),
            ("ISTIO_VERSION", string("1.28.0")),
            ("CLUSTER_ID", string("Kubernetes")),
            ("INTERCEPTION_MODE", string("REDIRECT")),
            ("LABELS", labels(pod_labels)),
        ])),
        ..Node::default()
    }
}
