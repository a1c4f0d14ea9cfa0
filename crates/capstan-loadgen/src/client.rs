//! One simulated sidecar: a Delta ADS stream that subscribes like Envoy (CDS and LDS wildcard,
//! then EDS for the EDS clusters and RDS for the route names the listeners reference), ACKs
//! every response, and reports what it received.
//!
//! The client is the measuring instrument, and on this machine it shares the CPU with the
//! server it measures, so it is kept lean: one task per proxy drives its own HTTP/2 connection
//! (`h2`, no per-stream body task or request channel), responses are read as their envelope
//! (type, nonce, names, versions) with the resource bodies left as shared bytes, and only the
//! clusters and listeners are decoded, because what to subscribe to next is in them. A real
//! Envoy decodes every body, on its own machine. The resources' content is checked elsewhere
//! (golden tests, the real-client tests); here a body that fails to decode is still NACKed.

use crate::reports;
use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

/// Listener type URL.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route configuration type URL.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Cluster type URL.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Cluster load assignment type URL.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Largest response accepted (the initial CDS response of a 1,000-service mesh is ~1 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// What a client tells the orchestrator.
#[derive(Debug)]
pub enum Report {
    /// A response arrived: its type, the names of its resources, its size.
    Received {
        client: usize,
        type_url: &'static str,
        names: Vec<String>,
        bytes: usize,
        at: Instant,
    },
    /// A NACK the client sent (a resource it could not decode).
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

/// A `DeltaDiscoveryResponse` as the client reads it (field numbers from
/// `envoy/service/discovery/v3/discovery.proto`; the fields it does not use are skipped).
#[derive(Clone, PartialEq, Message)]
struct Envelope {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<EnvelopeResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
}

/// A `Resource`: name, version and the packed `Any`.
#[derive(Clone, PartialEq, Message)]
struct EnvelopeResource {
    #[prost(string, tag = "1")]
    version: String,
    #[prost(message, optional, tag = "2")]
    resource: Option<PackedAny>,
    #[prost(string, tag = "3")]
    name: String,
}

/// A `google.protobuf.Any` whose value stays a slice of the received message.
#[derive(Clone, PartialEq, Message)]
struct PackedAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

fn known(type_url: &str) -> &'static str {
    [CLUSTER, LISTENER, ENDPOINT, ROUTE]
        .into_iter()
        .find(|t| *t == type_url)
        .unwrap_or("unknown")
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

/// A gRPC message frame: uncompressed flag, big-endian length, the message.
fn frame(req: &DeltaDiscoveryRequest) -> Bytes {
    let len = req.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    req.encode(&mut buf)
        .expect("a BytesMut with the message's capacity");
    buf.freeze()
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

/// Takes the next complete gRPC message off the front of `buf`.
fn next_message(buf: &mut BytesMut) -> Result<Option<Bytes>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        bail!(
            "compressed gRPC message (flag {}); none was asked for",
            buf[0]
        );
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        bail!("gRPC message of {len} bytes");
    }
    if buf.len() < 5 + len {
        buf.reserve(5 + len - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// What the client knows it needs and has, until it is synced.
#[derive(Default)]
struct Sync {
    eds: BTreeSet<String>,
    rds: BTreeSet<String>,
    got_eds: BTreeSet<String>,
    got_rds: BTreeSet<String>,
    got_cds: bool,
    got_lds: bool,
    done: bool,
}

/// Reads one response: the names to subscribe to next (EDS, RDS) and a decoding error, if any.
fn inspect(response: &Envelope, sync: &mut Sync) -> (Vec<String>, Vec<String>, Option<String>) {
    let (mut new_eds, mut new_rds, mut error) = (Vec::new(), Vec::new(), None);
    for r in &response.resources {
        let Some(any) = &r.resource else { continue };
        if response.type_url == CLUSTER {
            match Cluster::decode(any.value.clone()) {
                Ok(c) if matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32) => {
                    if sync.eds.insert(c.name.clone()) {
                        new_eds.push(c.name);
                    }
                }
                Ok(_) => {}
                Err(e) => error = Some(format!("cluster {}: {e}", r.name)),
            }
        } else if response.type_url == LISTENER {
            match Listener::decode(any.value.clone()) {
                Ok(l) => new_rds.extend(
                    route_names(&l)
                        .into_iter()
                        .filter(|n| sync.rds.insert(n.clone())),
                ),
                Err(e) => error = Some(format!("listener {}: {e}", r.name)),
            }
        }
    }
    (new_eds, new_rds, error)
}

/// Handles one response; returns the requests to send (the ACK or NACK first).
fn handle(
    client: usize,
    message: Bytes,
    sync: &mut Sync,
    reports: &reports::Sender,
) -> Result<Vec<DeltaDiscoveryRequest>> {
    let at = Instant::now();
    let bytes = message.len();
    let response = Envelope::decode(message).context("decoding a DeltaDiscoveryResponse")?;
    let type_url = known(&response.type_url);
    let (new_eds, new_rds, error) = inspect(&response, sync);
    let names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
    if !sync.done {
        match type_url {
            CLUSTER => sync.got_cds = true,
            LISTENER => sync.got_lds = true,
            ENDPOINT => sync.got_eds.extend(names.iter().cloned()),
            ROUTE => sync.got_rds.extend(names.iter().cloned()),
            _ => {}
        }
    }
    reports.send(Report::Received {
        client,
        type_url,
        names,
        bytes,
        at,
    });
    if !sync.done
        && sync.got_cds
        && sync.got_lds
        && new_eds.is_empty()
        && new_rds.is_empty()
        && sync.eds.is_subset(&sync.got_eds)
        && sync.rds.is_subset(&sync.got_rds)
    {
        // Synced: the bookkeeping is no longer needed.
        *sync = Sync {
            done: true,
            ..Sync::default()
        };
        reports.send(Report::Synced);
    }
    let mut ack = request(&response.type_url, &response.nonce, vec![], None);
    if let Some(e) = error {
        reports.send(Report::Rejected {
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
    let mut out = vec![ack];
    if !new_eds.is_empty() {
        out.push(request(ENDPOINT, "", new_eds, None));
    }
    if !new_rds.is_empty() {
        out.push(request(ROUTE, "", new_rds, None));
    }
    Ok(out)
}

/// Runs one client until its stream ends; a failure to connect is reported as `Closed` too.
pub async fn run_reporting(client: usize, addr: SocketAddr, reports: reports::Sender) {
    if let Err(e) = run(client, addr, reports.clone()).await {
        reports.send(Report::Closed {
            client,
            error: Some(format!("{e:#}")),
        });
    }
}

/// Runs one client until its stream ends.
pub async fn run(client: usize, addr: SocketAddr, reports: reports::Sender) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting to the xDS server")?;
    tcp.set_nodelay(true)?;
    // Windows as hyper's (and so tonic's) client sets them: the initial sync is ~2 MiB a proxy.
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .context("HTTP/2 handshake")?;
    let mut conn = std::pin::pin!(conn);
    let request_head = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let mut h2 = h2.ready().await.context("HTTP/2 stream slot")?;
    let (response, mut send) = h2.send_request(request_head, false)?;
    let node = Node {
        id: crate::mesh::node_id(client),
        cluster: "loadgen".into(),
        ..Node::default()
    };
    send.send_data(frame(&request(CLUSTER, "", vec![], Some(node))), false)?;
    send.send_data(frame(&request(LISTENER, "", vec![], None)), false)?;
    // The connection is driven by this same task: every wait below also polls it.
    let response = tokio::select! {
        r = conn.as_mut() => bail!("connection ended before the response headers: {r:?}"),
        r = response => r.context("response headers")?,
    };
    if response.status() != http::StatusCode::OK {
        bail!("HTTP status {}", response.status());
    }
    if let Some(status) = response.headers().get("grpc-status") {
        bail!(
            "gRPC status {status:?}: {:?}",
            response.headers().get("grpc-message")
        );
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let mut sync = Sync::default();
    let result = loop {
        let chunk = tokio::select! {
            r = conn.as_mut() => break Some(format!("connection ended: {r:?}")),
            chunk = body.data() => chunk,
        };
        let chunk = match chunk {
            Some(Ok(c)) => c,
            Some(Err(e)) => break Some(e.to_string()),
            None => {
                let trailers = tokio::select! {
                    r = conn.as_mut() => break Some(format!("connection ended: {r:?}")),
                    t = body.trailers() => t,
                };
                break match trailers {
                    Ok(Some(t)) if t.get("grpc-status").is_some_and(|s| s != "0") => Some(format!(
                        "gRPC status {:?}: {:?}",
                        t.get("grpc-status"),
                        t.get("grpc-message")
                    )),
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
            }
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        let mut failed = None;
        loop {
            match next_message(&mut buf) {
                Ok(Some(message)) => match handle(client, message, &mut sync, &reports) {
                    Ok(requests) => {
                        for r in requests {
                            if let Err(e) = send.send_data(frame(&r), false) {
                                failed = Some(e.to_string());
                            }
                        }
                    }
                    Err(e) => failed = Some(format!("{e:#}")),
                },
                Ok(None) => break,
                Err(e) => {
                    failed = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        if failed.is_some() {
            break failed;
        }
    };
    reports.send(Report::Closed {
        client,
        error: result,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn envelope_reads_what_the_full_message_holds() {
        let full = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: ENDPOINT.into(),
            nonce: "n-1".into(),
            removed_resources: vec!["gone".into()],
            resources: vec![Resource {
                name: "outbound|80||a".into(),
                version: "3".into(),
                resource: Some(Any {
                    type_url: ENDPOINT.into(),
                    value: vec![1, 2, 3],
                }),
                ..Resource::default()
            }],
            ..DeltaDiscoveryResponse::default()
        };
        let e = Envelope::decode(Bytes::from(full.encode_to_vec())).unwrap();
        assert_eq!(e.type_url, ENDPOINT);
        assert_eq!(e.nonce, "n-1");
        assert_eq!(e.removed_resources, vec!["gone".to_string()]);
        assert_eq!(e.resources[0].name, "outbound|80||a");
        assert_eq!(e.resources[0].version, "3");
        assert_eq!(
            e.resources[0].resource.as_ref().unwrap().value,
            &[1, 2, 3][..]
        );
    }

    #[test]
    fn frames_split_and_joined() {
        let a = frame(&request(CLUSTER, "x", vec![], None));
        let b = frame(&request(ROUTE, "y", vec!["80".into()], None));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a[..3]);
        assert!(next_message(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&a[3..]);
        buf.extend_from_slice(&b);
        let m1 = next_message(&mut buf).unwrap().unwrap();
        let m2 = next_message(&mut buf).unwrap().unwrap();
        assert!(next_message(&mut buf).unwrap().is_none());
        assert_eq!(
            DeltaDiscoveryRequest::decode(m1).unwrap().response_nonce,
            "x"
        );
        assert_eq!(DeltaDiscoveryRequest::decode(m2).unwrap().type_url, ROUTE);
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert!(next_message(&mut compressed).is_err());
    }
}
