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
//!
//! [`run`] is one session reported as the file mode expects; [`session`] is the building block
//! the reconnecting proxies of [`crate::fleet`] use, with content [`Watches`], a read delay and
//! a disconnect signal.

use crate::reports;
use crate::subscription::{known, Sync};
use crate::watch::Watches;
use crate::wire::{frame, next_message, request, Envelope};
use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Listener type URL.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route configuration type URL.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Cluster type URL.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Cluster load assignment type URL.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The Istio version the simulated proxies claim: the pinned `istio.io/istio`'s (`VERSION` file:
/// 1.31), so istiod generates its current configuration, not a compatibility form for older
/// proxies (`ParseIstioVersion`; an empty version would count as the newest).
pub const ISTIO_VERSION: &str = "1.31.0";
/// istiod's default cluster id (`--clusterID`), which a sidecar in its cluster reports.
pub const CLUSTER_ID: &str = "Kubernetes";

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
    /// The same moment as `Synced`, saying which client and when (sent right after it, by
    /// every session; the file mode counts `Synced`).
    ProxySynced { client: usize, at: Instant },
    /// A response held what a [`crate::watch::Watch`] looks for (reported once per session).
    Matched {
        client: usize,
        watch: u64,
        at: Instant,
    },
    /// A session failed or ended and its proxy will reconnect after a backoff (the reconnecting
    /// proxies of `fleet` report this instead of `Closed`).
    Retrying { client: usize, error: String },
    /// The stream ended.
    Closed {
        client: usize,
        error: Option<String>,
    },
}

/// How a session behaves beyond speaking Delta xDS.
#[derive(Clone, Default)]
pub struct SessionOptions {
    /// Decode cluster and listener bodies whole with Envoy's types and NACK what fails (the
    /// file mode does); otherwise only the fields naming the next subscriptions are read.
    pub check_bodies: bool,
    /// Put the resources' names in `Received` reports (the file mode matches on them; with
    /// watches they are not needed, and not copying them keeps the proxies cheap).
    pub names_in_reports: bool,
    /// Wait this long before reading each response (and so before ACKing it), reading nothing
    /// from the socket meanwhile: a proxy that drains slower than the server produces.
    pub read_delay: Duration,
    /// Content to look for in responses (reported as `Matched`).
    pub watches: Option<Watches>,
}

/// How an established session ended.
#[derive(Debug)]
pub struct SessionEnd {
    /// Some response arrived (Envoy resets its retry backoff then).
    pub received: bool,
    /// It was told to disconnect (and closed its connection).
    pub told: bool,
    /// Why the stream ended, if it was not told to or ended cleanly.
    pub error: Option<String>,
}

/// What a session keeps between responses.
#[derive(Default)]
struct SessionState {
    sync: Sync,
    received: bool,
    /// Watches already reported.
    matched: Vec<u64>,
}

/// Reports the watches `response` satisfies for the first time in this session.
fn check_watches(
    client: usize,
    response: &Envelope,
    type_url: &str,
    at: Instant,
    state: &mut SessionState,
    watches: &Watches,
    reports: &reports::Sender,
) {
    let watches = watches.current();
    for w in watches.iter().filter(|w| w.type_url == type_url) {
        if state.matched.contains(&w.id) {
            continue;
        }
        let hit = response.resources.iter().any(|r| {
            w.matches(
                &r.name,
                r.resource.as_ref().map_or(&[][..], |a| &a.value[..]),
            )
        });
        if hit {
            state.matched.push(w.id);
            reports.send(Report::Matched {
                client,
                watch: w.id,
                at,
            });
        }
    }
}

/// Handles one response; returns the requests to send (the ACK or NACK first).
fn handle(
    client: usize,
    message: Bytes,
    state: &mut SessionState,
    opts: &SessionOptions,
    reports: &reports::Sender,
) -> Result<Vec<DeltaDiscoveryRequest>> {
    let at = Instant::now();
    let bytes = message.len();
    let response = Envelope::decode(message).context("decoding a DeltaDiscoveryResponse")?;
    state.received = true;
    let type_url = known(&response.type_url);
    if let Some(watches) = &opts.watches {
        check_watches(client, &response, type_url, at, state, watches, reports);
    }
    let next = state.sync.read(&response, type_url, opts.check_bodies);
    let names = if opts.names_in_reports {
        response.resources.iter().map(|r| r.name_text()).collect()
    } else {
        Vec::new()
    };
    reports.send(Report::Received {
        client,
        type_url,
        names,
        bytes,
        at,
    });
    if next.synced {
        reports.send(Report::Synced);
        reports.send(Report::ProxySynced { client, at });
    }
    let mut ack = request(&response.type_url, &response.nonce, vec![], None);
    if let Some(e) = next.error {
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
    if !next.eds.is_empty() {
        out.push(request(ENDPOINT, "", next.eds, None));
    }
    if !next.rds.is_empty() {
        out.push(request(ROUTE, "", next.rds, None));
    }
    Ok(out)
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The node simulated sidecar `client` sends: its id (`mesh::node_id`) and the metadata istiod
/// reads from every proxy: `NAMESPACE`, `CLUSTER_ID`, `ISTIO_VERSION` (Capstan reads what it
/// needs of the same fields).
pub fn node(client: usize) -> Node {
    let fields = [
        ("NAMESPACE", crate::mesh::namespace(client)),
        ("CLUSTER_ID", CLUSTER_ID.to_string()),
        ("ISTIO_VERSION", ISTIO_VERSION.to_string()),
    ];
    Node {
        id: crate::mesh::node_id(client),
        cluster: "loadgen".into(),
        metadata: Some(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.into(), string(&v)))
                .collect(),
        }),
        ..Node::default()
    }
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

/// Runs one client until its stream ends (reported as `Closed`).
pub async fn run(client: usize, addr: SocketAddr, reports: reports::Sender) -> Result<()> {
    let opts = SessionOptions {
        names_in_reports: true,
        check_bodies: true,
        ..SessionOptions::default()
    };
    let end = session(client, addr, &opts, &reports, std::future::pending()).await?;
    reports.send(Report::Closed {
        client,
        error: end.error,
    });
    Ok(())
}

/// One Delta ADS stream of client `client`, until it ends or `disconnect` completes (the
/// connection is then dropped: its TCP connection closes). An error is a stream that was never
/// established: no connection, or a refusal (e.g. istiod's `RESOURCE_EXHAUSTED` when more
/// proxies connect per second than it admits).
pub async fn session(
    client: usize,
    addr: SocketAddr,
    opts: &SessionOptions,
    reports: &reports::Sender,
    disconnect: impl Future<Output = ()>,
) -> Result<SessionEnd> {
    let mut disconnect = std::pin::pin!(disconnect);
    let told = SessionEnd {
        received: false,
        told: true,
        error: None,
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .context("connecting to the xDS server")?;
        tcp.set_nodelay(true)?;
        // Windows as hyper's (and so tonic's) client sets them: the initial sync is ~2 MiB a
        // proxy.
        h2::client::Builder::new()
            .initial_window_size(2 << 20)
            .initial_connection_window_size(5 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .context("HTTP/2 handshake")
    };
    // Told to go while connecting (a stuck server must not hold a stopping proxy).
    let (h2, conn) = tokio::select! {
        r = connect => r?,
        _ = disconnect.as_mut() => return Ok(told),
    };
    let mut conn = std::pin::pin!(conn);
    let request_head = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let mut h2 = h2.ready().await.context("HTTP/2 stream slot")?;
    let (response, mut send) = h2.send_request(request_head, false)?;
    send.send_data(
        frame(&request(CLUSTER, "", vec![], Some(node(client)))),
        false,
    )?;
    send.send_data(frame(&request(LISTENER, "", vec![], None)), false)?;
    // The connection is driven by this same task: every wait below also polls it.
    let response = tokio::select! {
        r = conn.as_mut() => bail!("connection ended before the response headers: {r:?}"),
        r = response => r.context("response headers")?,
        _ = disconnect.as_mut() => return Ok(told),
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
    let mut state = SessionState::default();
    let result = loop {
        let chunk = tokio::select! {
            r = conn.as_mut() => break Some(format!("connection ended: {r:?}")),
            chunk = body.data() => chunk,
            _ = disconnect.as_mut() => {
                return Ok(SessionEnd { received: state.received, ..told });
            }
        };
        let chunk = match chunk {
            Some(Ok(c)) => c,
            Some(Err(e)) => break Some(e.to_string()),
            None => {
                let trailers = tokio::select! {
                    r = conn.as_mut() => break Some(format!("connection ended: {r:?}")),
                    t = body.trailers() => t,
                    _ = disconnect.as_mut() => {
                        return Ok(SessionEnd { received: state.received, ..told });
                    }
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
                Ok(Some(message)) => {
                    if !opts.read_delay.is_zero() {
                        // Not polling the connection meanwhile: the socket is not read either.
                        tokio::time::sleep(opts.read_delay).await;
                    }
                    match handle(client, message, &mut state, opts, reports) {
                        Ok(requests) => {
                            for r in requests {
                                if let Err(e) = send.send_data(frame(&r), false) {
                                    failed = Some(e.to_string());
                                }
                            }
                        }
                        Err(e) => failed = Some(format!("{e:#}")),
                    }
                }
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
    Ok(SessionEnd {
        received: state.received,
        told: false,
        error: result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EnvelopeResource, PackedAny};

    #[test]
    fn node_carries_what_istiod_reads() {
        let n = node(13);
        assert_eq!(
            n.id,
            "sidecar~10.200.0.13~load-13.ns-3~ns-3.svc.cluster.local"
        );
        let fields = &n.metadata.expect("metadata").fields;
        let get = |k: &str| match fields.get(k).and_then(|v| v.kind.clone()) {
            Some(Kind::StringValue(s)) => s,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(get("NAMESPACE"), "ns-3");
        assert_eq!(get("CLUSTER_ID"), "Kubernetes");
        assert_eq!(get("ISTIO_VERSION"), ISTIO_VERSION);
    }

    #[test]
    fn watches_are_reported_once_per_session() {
        use crate::watch::Watch;
        let body = b"..10.1.2.3..".to_vec();
        let response = Envelope {
            type_url: ENDPOINT.into(),
            resources: vec![EnvelopeResource {
                name: "c".into(),
                version: "1".into(),
                resource: Some(PackedAny {
                    type_url: ENDPOINT.into(),
                    value: Bytes::from(body),
                }),
            }],
            ..Envelope::default()
        };
        let watches = Watches::default();
        watches.set(vec![
            Watch {
                id: 7,
                type_url: ENDPOINT,
                resource: "c".into(),
                needle: b"10.1.2.3".to_vec(),
            },
            Watch {
                id: 8,
                type_url: ENDPOINT,
                resource: "c".into(),
                needle: b"10.1.2.4".to_vec(),
            },
            Watch {
                id: 9,
                type_url: ROUTE,
                resource: "c".into(),
                needle: vec![],
            },
        ]);
        let (tx, mut rx) = reports::channel();
        let mut state = SessionState::default();
        for _ in 0..2 {
            check_watches(
                1,
                &response,
                ENDPOINT,
                Instant::now(),
                &mut state,
                &watches,
                &tx,
            );
        }
        let mut matched = vec![];
        while let Some(r) = rx.try_recv() {
            if let Report::Matched {
                watch, client: 1, ..
            } = r
            {
                matched.push(watch);
            }
        }
        assert_eq!(matched, vec![7]);
    }
}
