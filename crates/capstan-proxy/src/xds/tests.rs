//! The client against an in-process fake ADS server on 127.0.0.1:0 and a fake sink.

use super::*;
use crate::resources::{self, Update, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Status, Streaming};

type Sender<T> = mpsc::UnboundedSender<Result<T, Status>>;

/// One stream as the test sees it: the client's requests and a handle to respond. Dropping
/// `respond` ends the stream.
struct FakeStream<Req, Resp> {
    requests: mpsc::UnboundedReceiver<Req>,
    respond: Sender<Resp>,
}

impl<Req: std::fmt::Debug, Resp> FakeStream<Req, Resp> {
    async fn next(&mut self) -> Req {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("the stream is open")
    }
    /// Asserts no request arrives for a moment.
    async fn quiet(&mut self) {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(200), self.requests.recv()).await
        {
            panic!("unexpected request {r:?}");
        }
    }
    fn send(&self, r: Resp) {
        self.respond.send(Ok(r)).expect("client stream open");
    }
}

struct Fake {
    sotw: mpsc::UnboundedSender<FakeStream<DiscoveryRequest, DiscoveryResponse>>,
    delta: mpsc::UnboundedSender<FakeStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>>,
}

fn forward<Req: Send + 'static>(mut inbound: Streaming<Req>) -> mpsc::UnboundedReceiver<Req> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(r)) = inbound.message().await {
            if tx.send(r).is_err() {
                return;
            }
        }
    });
    rx
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Fake {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (respond, rx) = mpsc::unbounded_channel();
        let requests = forward(request.into_inner());
        let _ = self.sotw.send(FakeStream { requests, respond });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (respond, rx) = mpsc::unbounded_channel();
        let requests = forward(request.into_inner());
        let _ = self.delta.send(FakeStream { requests, respond });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Server<Req, Resp> {
    streams: mpsc::UnboundedReceiver<FakeStream<Req, Resp>>,
    endpoint: String,
}

impl<Req, Resp> Server<Req, Resp> {
    async fn accept(&mut self) -> FakeStream<Req, Resp> {
        tokio::time::timeout(Duration::from_secs(10), self.streams.recv())
            .await
            .expect("a stream within 10 s")
            .expect("server running")
    }
}

type SotwServer = Server<DiscoveryRequest, DiscoveryResponse>;
type DeltaServer = Server<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

async fn start_server() -> (SotwServer, DeltaServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    let (sotw, sotw_rx) = mpsc::unbounded_channel();
    let (delta, delta_rx) = mpsc::unbounded_channel();
    let svc = AggregatedDiscoveryServiceServer::new(Fake { sotw, delta });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (
        Server {
            streams: sotw_rx,
            endpoint: endpoint.clone(),
        },
        Server {
            streams: delta_rx,
            endpoint,
        },
    )
}

/// One `apply`: type, updated names, removed names, state of the world.
type Call = (String, Vec<String>, Vec<String>, bool);

/// A sink that holds name → version per type; EDS wants the clusters' names, RDS wants
/// `<listener>-routes`, SDS wants `kubernetes://<listener>` of the listeners named `gw…`. It
/// rejects any resource whose name starts with `bad`.
#[derive(Default)]
struct FakeSink {
    held: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeSink {
    fn held(&self, type_url: &str) -> Vec<String> {
        let held = self.held.lock().expect("test lock");
        held.get(type_url)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl ResourceSink for FakeSink {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Update>,
        removed: &[String],
        sotw: bool,
    ) -> Result<(), String> {
        self.calls.lock().expect("test lock").push((
            type_url.to_string(),
            updated.iter().map(|u| u.name.clone()).collect(),
            removed.to_vec(),
            sotw,
        ));
        if let Some(bad) = updated.iter().find(|u| u.name.starts_with("bad")) {
            return Err(format!("{}: rejected by the test sink", bad.name));
        }
        let mut held = self.held.lock().expect("test lock");
        let m = held.entry(type_url.to_string()).or_default();
        if sotw {
            m.clear();
        }
        for n in removed {
            m.remove(n);
        }
        for u in updated {
            m.insert(u.name, u.version);
        }
        Ok(())
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        match type_url {
            resources::ENDPOINT => self.held(CLUSTER),
            resources::ROUTE => self
                .held(LISTENER)
                .into_iter()
                .map(|l| format!("{l}-routes"))
                .collect(),
            resources::SECRET => self
                .held(LISTENER)
                .into_iter()
                .filter(|l| l.starts_with("gw"))
                .map(|l| format!("kubernetes://{l}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn versions(&self, type_url: &str) -> Vec<(String, String)> {
        let held = self.held.lock().expect("test lock");
        held.get(type_url)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

fn any_of(type_url: &str, name: &str) -> Any {
    let value = match type_url {
        resources::CLUSTER => Cluster {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        resources::LISTENER => Listener {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        resources::ROUTE => RouteConfiguration {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        resources::SECRET => Secret {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        _ => ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    Any {
        type_url: type_url.into(),
        value,
    }
}

fn sotw(type_url: &str, version: &str, nonce: &str, names: &[&str]) -> DiscoveryResponse {
    DiscoveryResponse {
        type_url: type_url.into(),
        version_info: version.into(),
        nonce: nonce.into(),
        resources: names.iter().map(|n| any_of(type_url, n)).collect(),
        ..Default::default()
    }
}

fn delta(
    type_url: &str,
    nonce: &str,
    names: &[(&str, &str)],
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources: names
            .iter()
            .map(|(n, v)| Resource {
                name: n.to_string(),
                version: v.to_string(),
                resource: Some(any_of(type_url, n)),
                ..Default::default()
            })
            .collect(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

struct Client {
    sink: Arc<FakeSink>,
    status: Arc<XdsStatus>,
    stats: Arc<Stats>,
    _shutdown: watch::Sender<bool>,
}

fn start_client(endpoint: &str, is_delta: bool) -> Client {
    let bootstrap = Bootstrap::from_parts(
        "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
        "a.ns",
        endpoint,
        is_delta,
        None,
        serde_json::json!({"NAMESPACE": "ns"}),
    )
    .expect("valid parts");
    let sink = Arc::new(FakeSink::default());
    let stats = Arc::new(Stats::default());
    let status = Arc::new(XdsStatus::with_stats(stats.clone()));
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(bootstrap, sink.clone(), status.clone(), rx));
    Client {
        sink,
        status,
        stats,
        _shutdown: tx,
    }
}

#[tokio::test]
async fn sotw_order_ack_nack_and_removal() {
    let (mut server, _) = start_server().await;
    let c = start_client(&server.endpoint, false);
    let mut s = server.accept().await;

    // CDS first, wildcard, with the node.
    let r = s.next().await;
    assert_eq!(r.type_url, CLUSTER);
    assert!(r.resource_names.is_empty() && r.response_nonce.is_empty());
    assert_eq!(
        r.node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar~10.0.0.1~a.ns~ns.svc.cluster.local")
    );
    s.quiet().await; // no LDS before the first CDS response

    s.send(sotw(CLUSTER, "v1", "n1", &["a", "b"]));
    let eds = s.next().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.resource_names.clone()),
        (ENDPOINT, vec!["a".to_string(), "b".to_string()])
    );
    assert!(eds.node.is_none(), "node only on the first request");
    let ack = s.next().await;
    assert_eq!(
        (
            ack.type_url.as_str(),
            ack.version_info.as_str(),
            ack.response_nonce.as_str()
        ),
        (CLUSTER, "v1", "n1")
    );
    assert!(ack.error_detail.is_none());
    let lds = s.next().await;
    assert_eq!(lds.type_url, LISTENER);

    // LDS response → RDS names, then the LDS ACK.
    s.send(sotw(LISTENER, "L1", "n2", &["l1"]));
    let rds = s.next().await;
    assert_eq!(
        (rds.type_url.as_str(), rds.resource_names.clone()),
        (ROUTE, vec!["l1-routes".to_string()])
    );
    let ack = s.next().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.version_info.as_str()),
        (LISTENER, "L1")
    );
    assert!(c.status.listeners_applied());

    // A rejected CDS: NACK with the previous version and the sink's message; nothing changes.
    s.send(sotw(CLUSTER, "v2", "n3", &["a", "bad-c"]));
    let nack = s.next().await;
    assert_eq!(
        (
            nack.type_url.as_str(),
            nack.version_info.as_str(),
            nack.response_nonce.as_str()
        ),
        (CLUSTER, "v1", "n3")
    );
    let detail = nack.error_detail.expect("NACK carries error_detail");
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("bad-c: rejected"),
        "{}",
        detail.message
    );
    assert_eq!(c.sink.held(CLUSTER), vec!["a", "b"]);
    let st = c.status.type_status(CLUSTER).expect("CDS status");
    assert_eq!(
        (st.version.as_str(), st.nonce.as_str(), st.acks, st.nacks),
        ("v1", "n3", 1, 1)
    );
    assert!(st.last_error.is_some());
    assert_eq!(c.stats.server.update_rejected.get(), 1);

    // SotW removal: "b" missing from the next CDS → removed (state_of_the_world), and EDS
    // unsubscribed from it (full name list, with the last EDS nonce).
    s.send(sotw(CLUSTER, "v3", "n4", &["a"]));
    let eds = s.next().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.resource_names.clone()),
        (ENDPOINT, vec!["a".to_string()])
    );
    let ack = s.next().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v3", "n4")
    );
    assert_eq!(c.sink.held(CLUSTER), vec!["a"]);
    let calls = c.sink.calls.lock().expect("test lock").clone();
    assert!(calls
        .iter()
        .any(|(t, u, _, sotw)| t == CLUSTER && *u == ["a"] && *sotw));

    // EDS responses are not state of the world.
    s.send(sotw(ENDPOINT, "e1", "n5", &["a"]));
    let ack = s.next().await;
    assert_eq!(
        (
            ack.type_url.as_str(),
            ack.version_info.as_str(),
            ack.resource_names.clone()
        ),
        (ENDPOINT, "e1", vec!["a".to_string()])
    );
    let calls = c.sink.calls.lock().expect("test lock").clone();
    assert!(calls.iter().any(|(t, _, _, sotw)| t == ENDPOINT && !*sotw));
    assert!(c.status.connected());
    assert_eq!(c.stats.server.connected.get(), 1);
}

#[tokio::test]
async fn delta_order_nack_and_reconnect_with_initial_versions() {
    let (_, mut server) = start_server().await;
    let c = start_client(&server.endpoint, true);
    let mut s = server.accept().await;

    let r = s.next().await;
    assert_eq!(r.type_url, CLUSTER);
    assert!(r.resource_names_subscribe.is_empty() && r.initial_resource_versions.is_empty());
    assert!(r.node.is_some());

    s.send(delta(CLUSTER, "n1", &[("a", "1"), ("b", "1")], &[]));
    let eds = s.next().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.resource_names_subscribe.clone()),
        (ENDPOINT, vec!["a".to_string(), "b".to_string()])
    );
    let ack = s.next().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.response_nonce.as_str()),
        (CLUSTER, "n1")
    );
    assert!(ack.error_detail.is_none() && ack.node.is_none());
    assert_eq!(s.next().await.type_url, LISTENER);

    // Removal → EDS unsubscribe diff.
    s.send(delta(CLUSTER, "n2", &[], &["b"]));
    let eds = s.next().await;
    assert!(eds.resource_names_subscribe.is_empty());
    assert_eq!(eds.resource_names_unsubscribe, vec!["b".to_string()]);
    assert_eq!(s.next().await.response_nonce, "n2");

    s.send(delta(LISTENER, "n3", &[("l1", "7")], &[]));
    let rds = s.next().await;
    assert_eq!(
        (rds.type_url.as_str(), rds.resource_names_subscribe.clone()),
        (ROUTE, vec!["l1-routes".to_string()])
    );
    assert_eq!(s.next().await.response_nonce, "n3");
    s.send(delta(ROUTE, "n4", &[("l1-routes", "r1")], &[]));
    assert_eq!(s.next().await.response_nonce, "n4");

    // NACK: error_detail, nothing applied.
    s.send(delta(LISTENER, "n5", &[("bad-l", "8")], &[]));
    let nack = s.next().await;
    assert_eq!(nack.response_nonce, "n5");
    assert_eq!(nack.error_detail.map(|d| d.code), Some(3));
    assert_eq!(c.sink.held(LISTENER), vec!["l1"]);

    // The server drops the stream: the client reconnects with what it holds.
    drop(s);
    let mut s = server.accept().await;
    let mut first: Vec<DeltaDiscoveryRequest> = Vec::new();
    for _ in 0..4 {
        first.push(s.next().await);
    }
    let types: Vec<&str> = first.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, ENDPOINT, LISTENER, ROUTE]);
    assert!(first[0].node.is_some() && first[1].node.is_none());
    let versions = |r: &DeltaDiscoveryRequest| {
        let mut v: Vec<(String, String)> =
            r.initial_resource_versions.clone().into_iter().collect();
        v.sort();
        v
    };
    assert_eq!(versions(&first[0]), [("a".to_string(), "1".to_string())]);
    assert_eq!(first[1].resource_names_subscribe, ["a"]);
    assert_eq!(versions(&first[2]), [("l1".to_string(), "7".to_string())]);
    assert_eq!(first[3].resource_names_subscribe, ["l1-routes"]);
    assert_eq!(
        versions(&first[3]),
        [("l1-routes".to_string(), "r1".to_string())]
    );
    let (acks, nacks) = c.status.totals();
    assert_eq!((acks, nacks), (4, 1));
}

#[tokio::test]
async fn sotw_secrets_follow_the_listeners_and_are_resent_on_reconnect() {
    let (mut server, _) = start_server().await;
    let c = start_client(&server.endpoint, false);
    let mut s = server.accept().await;
    assert_eq!(s.next().await.type_url, CLUSTER);
    // No clusters and no listeners: neither EDS nor SDS is sent (empty would mean wildcard).
    s.send(sotw(CLUSTER, "v1", "n1", &[]));
    assert_eq!(s.next().await.response_nonce, "n1");
    assert_eq!(s.next().await.type_url, LISTENER);

    // A listener naming a secret → RDS, then SDS by name, then the LDS ACK.
    s.send(sotw(LISTENER, "L1", "n2", &["gw1", "sidecar"]));
    assert_eq!(s.next().await.type_url, ROUTE);
    let sds = s.next().await;
    assert_eq!(
        (
            sds.type_url.as_str(),
            sds.resource_names.clone(),
            sds.response_nonce.as_str()
        ),
        (SECRET, vec!["kubernetes://gw1".to_string()], "")
    );
    assert_eq!(s.next().await.response_nonce, "n2");
    s.send(sotw(SECRET, "S1", "n3", &["kubernetes://gw1"]));
    let ack = s.next().await;
    assert_eq!(
        (
            ack.type_url.as_str(),
            ack.version_info.as_str(),
            ack.resource_names.clone()
        ),
        (SECRET, "S1", vec!["kubernetes://gw1".to_string()])
    );
    assert_eq!(c.sink.held(SECRET), ["kubernetes://gw1"]);

    // Reconnect: the named SDS subscription follows RDS, with the version held.
    drop(s);
    let mut s = server.accept().await;
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(s.next().await);
    }
    let types: Vec<&str> = first.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, LISTENER, ROUTE, SECRET]);
    assert_eq!(first[3].resource_names, ["kubernetes://gw1"]);
    assert_eq!(first[3].version_info, "S1");
    s.quiet().await;
}

#[tokio::test]
async fn delta_secrets_unsubscribe_with_their_listener_and_resume_with_versions() {
    let (_, mut server) = start_server().await;
    let c = start_client(&server.endpoint, true);
    let mut s = server.accept().await;
    assert_eq!(s.next().await.type_url, CLUSTER);
    s.send(delta(CLUSTER, "n1", &[], &[]));
    assert_eq!(s.next().await.response_nonce, "n1");
    assert_eq!(s.next().await.type_url, LISTENER);
    s.send(delta(LISTENER, "n2", &[("gw1", "1"), ("gw2", "1")], &[]));
    assert_eq!(s.next().await.type_url, ROUTE);
    let sds = s.next().await;
    assert_eq!(
        (sds.type_url.as_str(), sds.resource_names_subscribe.clone()),
        (
            SECRET,
            vec![
                "kubernetes://gw1".to_string(),
                "kubernetes://gw2".to_string()
            ]
        )
    );
    assert_eq!(s.next().await.response_nonce, "n2");
    s.send(delta(
        SECRET,
        "n3",
        &[("kubernetes://gw1", "s1"), ("kubernetes://gw2", "s1")],
        &[],
    ));
    assert_eq!(s.next().await.response_nonce, "n3");

    // gw2 goes: its secret is unsubscribed and dropped from the sink.
    s.send(delta(LISTENER, "n4", &[], &["gw2"]));
    let rds = s.next().await;
    assert_eq!(rds.resource_names_unsubscribe, ["gw2-routes"]);
    let sds = s.next().await;
    assert_eq!(
        (
            sds.type_url.as_str(),
            sds.resource_names_unsubscribe.clone()
        ),
        (SECRET, vec!["kubernetes://gw2".to_string()])
    );
    assert_eq!(s.next().await.response_nonce, "n4");
    assert_eq!(c.sink.held(SECRET), ["kubernetes://gw1"]);

    drop(s);
    let mut s = server.accept().await;
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(s.next().await);
    }
    let types: Vec<&str> = first.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CLUSTER, LISTENER, ROUTE, SECRET]);
    assert_eq!(first[3].resource_names_subscribe, ["kubernetes://gw1"]);
    let versions: Vec<(String, String)> = first[3]
        .initial_resource_versions
        .clone()
        .into_iter()
        .collect();
    assert_eq!(
        versions,
        [("kubernetes://gw1".to_string(), "s1".to_string())]
    );
}

#[tokio::test]
async fn unreachable_server_retries_until_shutdown() {
    // A port that was just free: connecting fails, the client keeps retrying with backoff.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", l.local_addr().expect("bound"));
    drop(l);
    let bootstrap = Bootstrap::from_parts("n", "c", &endpoint, true, None, serde_json::Value::Null)
        .expect("valid parts");
    let (tx, rx) = watch::channel(false);
    let status = Arc::new(XdsStatus::default());
    let task = tokio::spawn(run(
        bootstrap,
        Arc::new(FakeSink::default()),
        status.clone(),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!status.connected());
    tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(11), task)
        .await
        .expect("run returns after shutdown")
        .expect("no panic");
}

#[tokio::test]
async fn unix_socket_endpoint() {
    // pilot-agent's bootstrap points at its local xDS proxy over a Unix socket (`pipe`).
    let dir = std::env::temp_dir().join(format!(
        "capstan-xds-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("XDS");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind unix socket");
    let (sotw_tx, mut sotw_rx) = mpsc::unbounded_channel();
    let (delta_tx, _delta_rx) = mpsc::unbounded_channel();
    let svc = AggregatedDiscoveryServiceServer::new(Fake {
        sotw: sotw_tx,
        delta: delta_tx,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let _c = start_client(&format!("unix:{}", path.display()), false);
    let mut s = tokio::time::timeout(Duration::from_secs(10), sotw_rx.recv())
        .await
        .expect("a stream within 10 s")
        .expect("server running");
    assert_eq!(s.next().await.type_url, CLUSTER);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backoff_doubles_to_the_cap() {
    assert_eq!(backoff_bound(0), Duration::from_millis(100));
    assert_eq!(backoff_bound(3), Duration::from_millis(800));
    assert_eq!(backoff_bound(7), BACKOFF_MAX);
    assert_eq!(backoff_bound(u32::MAX), BACKOFF_MAX);
    for _ in 0..100 {
        assert!(jittered(Duration::from_millis(100)) <= Duration::from_millis(100));
    }
}

#[test]
fn sotw_names_from_field_one() {
    let any = any_of(ENDPOINT, "outbound|80||a.ns.svc.cluster.local");
    assert_eq!(
        sotw::resource_name(&any.value).as_deref(),
        Ok("outbound|80||a.ns.svc.cluster.local")
    );
    assert!(sotw::resource_name(&[0x0a, 0x05, b'a']).is_err());
}

/// With several xDS endpoints (istiod replicas), a dead one is skipped and a stream that ends
/// is reopened on the next: the client lands on the live server whatever the start.
#[tokio::test]
async fn the_client_moves_past_a_dead_endpoint_and_comes_back_after_a_stream_ends() {
    let (mut server, _) = start_server().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let mut bootstrap = Bootstrap::from_parts(
        "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
        "a.ns",
        &server.endpoint,
        false,
        None,
        serde_json::json!({"NAMESPACE": "ns"}),
    )
    .expect("valid parts");
    if let Some(ads) = bootstrap.ads.as_mut() {
        ads.endpoints = vec![dead, server.endpoint.clone(), "http://127.0.0.1:1".into()];
    }
    let sink = Arc::new(FakeSink::default());
    let status = Arc::new(XdsStatus::default());
    let (_tx, rx) = watch::channel(false);
    tokio::spawn(run(bootstrap, sink, status, rx));
    let mut s = server.accept().await;
    assert_eq!(s.next().await.type_url, CLUSTER);
    drop(s);
    // Two dead endpoints at most before the live one again (backoff stays under a second).
    let mut again = server.accept().await;
    assert_eq!(again.next().await.type_url, CLUSTER);
}
