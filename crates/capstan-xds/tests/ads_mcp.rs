//! Istio config over MCP-over-xDS, both ends in one process over real gRPC on 127.0.0.1: the
//! ADS server with the Istio generator serves the config types to a client whose node is not a
//! proxy's (and nothing else to it), and `XdsSource` mirrors one store into another through
//! it, following changes and a restart of the server that removed an object meanwhile.

mod ads_support;

use ads_support::{eventually, within, NODE_ID, QUIET, WAIT};
use capstan_api::{check_text, CheckOptions, IstioObject, Kind};
use capstan_config::mcp::{type_url, TYPE_URLS};
use capstan_config::{ConfigChange, ConfigKey, ConfigStore, EventKind, XdsSource};
use capstan_registry::ServiceIndex;
use capstan_xds::context::{MeshConfig, PushContext};
use capstan_xds::resource::CLUSTER;
use capstan_xds::{AdsOptions, AdsServer, IstioGenerator, PushRequest};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const CONFIG: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b, namespace: shop, creationTimestamp: "2024-05-01T10:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop, labels: {team: x}}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, port: {number: 9080}}, weight: 100}]}]
"#;

const CONFIG_CLIENT: &str = "capstan-config-source/test/1";

fn objects(yaml: &str) -> Vec<IstioObject> {
    check_text(yaml, &CheckOptions::default())
        .into_iter()
        .map(|r| *r.object.unwrap_or_else(|| panic!("valid: {:?}", r.errors)))
        .collect()
}

fn store_with(yaml: &str) -> Arc<ConfigStore> {
    let store = Arc::new(ConfigStore::new());
    store.replace_source("files", objects(yaml));
    store
}

/// A control plane serving `store` over ADS.
struct Upstream {
    store: Arc<ConfigStore>,
    index: Arc<ServiceIndex>,
    generator: Arc<IstioGenerator>,
    ads: AdsServer<IstioGenerator>,
    addr: SocketAddr,
    version: AtomicU64,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(store: Arc<ConfigStore>, addr: &str) -> Upstream {
        let index = Arc::new(ServiceIndex::new());
        let ctx = PushContext::new(store.snapshot(), index.snapshot(), MeshConfig::default(), 1);
        let generator = Arc::new(IstioGenerator::new(ctx));
        let ads = AdsServer::new(generator.clone(), AdsOptions::default());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = ads.service();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Upstream {
            store,
            index,
            generator,
            ads,
            addr,
            version: AtomicU64::new(1),
            stop,
            served,
        }
    }

    /// Pushes a config change as `capstan discovery` does (changed keys `Kind/ns/name`).
    fn push(&self, change: Option<ConfigChange>) {
        let change = change.expect("the store changed");
        let push = PushRequest {
            version: self.version.fetch_add(1, Ordering::Relaxed) + 1,
            full: true,
            changed: change.events.iter().map(|e| e.key.to_string()).collect(),
            ..PushRequest::default()
        };
        self.generator
            .advance(self.store.snapshot(), self.index.snapshot(), &push);
        self.ads.push(push);
    }

    /// Ends every stream (UNAVAILABLE) and stops serving.
    async fn stop(self) {
        self.ads.drain(Duration::ZERO).await;
        let _ = self.stop.send(());
        within(self.served).await.unwrap();
    }
}

/// The store's objects as comparable text: key, metadata and spec (not `apiVersion` or
/// `status`, which MCP does not carry).
fn contents(store: &ConfigStore) -> Vec<String> {
    store
        .snapshot()
        .objects
        .iter()
        .map(|(key, s)| format!("{key} {:?} {:?}", s.object.metadata, s.object.spec))
        .collect()
}

fn key(kind: Kind, name: &str) -> ConfigKey {
    ConfigKey {
        kind,
        namespace: "shop".into(),
        name: name.into(),
    }
}

async fn delta_stream(
    addr: SocketAddr,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    tonic::Streaming<DeltaDiscoveryResponse>,
) {
    let mut client = within(AggregatedDiscoveryServiceClient::connect(format!(
        "http://{addr}"
    )))
    .await
    .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let stream = within(client.delta_aggregated_resources(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Node::default()
    })
}

#[tokio::test]
async fn a_config_source_mirrors_the_upstream_and_survives_its_restart() {
    let upstream = Upstream::start(store_with(CONFIG), "127.0.0.1:0").await;
    let url = format!("xds://{}", upstream.addr);
    let mirror = Arc::new(ConfigStore::new());
    let source = XdsSource::new(&url, CheckOptions::default()).unwrap();
    let mut ready = source.ready();
    let task = tokio::spawn(source.run(mirror.clone()));
    within(ready.wait_for(|r| *r)).await.unwrap();
    assert_eq!(contents(&mirror), contents(&upstream.store));
    assert!(mirror
        .snapshot()
        .objects
        .values()
        .all(|s| *s.source == *url));

    // A change upstream is followed.
    let mut next = objects(CONFIG);
    next[1].metadata.labels.insert("v".into(), "2".into());
    upstream.push(upstream.store.replace_source("files", next));
    eventually(|| contents(&mirror) == contents(&upstream.store)).await;

    // The upstream goes away: the mirror keeps everything.
    let before = contents(&mirror);
    let addr = upstream.addr;
    let mut changes = mirror.subscribe();
    upstream.stop().await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        contents(&mirror),
        before,
        "nothing dropped while the upstream is down"
    );

    // It comes back without `a` and with `reviews` changed: exactly that reaches the mirror.
    let mut restarted = objects(&CONFIG.replace("team: x", "team: y"));
    restarted[1].metadata.labels.insert("v".into(), "2".into());
    let restarted: Vec<IstioObject> = restarted
        .into_iter()
        .filter(|o| o.metadata.name != "a")
        .collect();
    let store = Arc::new(ConfigStore::new());
    store.replace_source("files", restarted);
    let upstream = Upstream::start(store, &addr.to_string()).await;
    eventually(|| contents(&mirror) == contents(&upstream.store)).await;
    let mut events = Vec::new();
    while let Ok(change) = changes.try_recv() {
        events.extend(change.events.into_iter().map(|e| (e.event, e.key)));
    }
    // One revision per response; responses of different types come in any order.
    events.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        events,
        vec![
            (EventKind::Updated, key(Kind::VirtualService, "reviews")),
            (EventKind::Deleted, key(Kind::PeerAuthentication, "a")),
        ],
        "the reconnect re-applies nothing unchanged and leaves nothing stale"
    );
    let status = upstream.ads.syncz();
    assert_eq!(status.len(), 1);
    assert_eq!(
        status[0].types[type_url(Kind::PeerAuthentication)].resources_sent,
        0,
        "claimed versions: unchanged objects are not sent again"
    );
    task.abort();
}

#[tokio::test]
async fn config_clients_get_config_types_only() {
    let upstream = Upstream::start(store_with(CONFIG), "127.0.0.1:0").await;
    let (tx, mut rx) = delta_stream(upstream.addr).await;
    let vs = type_url(Kind::VirtualService);
    tx.send(DeltaDiscoveryRequest {
        node: node(CONFIG_CLIENT),
        type_url: vs.into(),
        resource_names_subscribe: vec!["*".into()],
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let first = within(rx.message()).await.unwrap().expect("a response");
    assert_eq!(first.type_url, vs);
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop/reviews"]);
    let syncz = upstream.ads.syncz();
    assert_eq!(syncz[0].proxy_id, CONFIG_CLIENT);
    assert_eq!(
        syncz[0].proxy.proxy_type,
        capstan_xds::ProxyType::ConfigClient
    );

    // A change of another kind sends nothing on this type; a change of it does.
    tx.send(DeltaDiscoveryRequest {
        type_url: vs.into(),
        response_nonce: first.nonce.clone(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut next = objects(CONFIG);
    next[0].metadata.labels.insert("v".into(), "2".into());
    upstream.push(upstream.store.replace_source("files", next.clone()));
    assert!(
        tokio::time::timeout(QUIET, rx.message()).await.is_err(),
        "a PeerAuthentication change is not a VirtualService change"
    );
    next[2].metadata.labels.insert("v".into(), "2".into());
    upstream.push(upstream.store.replace_source("files", next));
    let changed = within(rx.message()).await.unwrap().expect("a push");
    assert_eq!(changed.resources.len(), 1);
    assert_ne!(changed.resources[0].version, first.resources[0].version);

    // Envoy's types need a proxy's node.
    tx.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let refused = within(async {
        loop {
            match rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("closed without a status"),
                Err(status) => return status,
            }
        }
    })
    .await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("invalid node"), "{refused:?}");

    // A bad node asking for Envoy's types first is refused at once, as before.
    let (tx, mut rx) = delta_stream(upstream.addr).await;
    tx.send(DeltaDiscoveryRequest {
        node: node(CONFIG_CLIENT),
        type_url: CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let refused = within(rx.message()).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
}

/// istiod's config clients speak State of the World with no names: every config type is a
/// wildcard type. A sidecar may subscribe too.
#[tokio::test]
async fn sotw_subscriptions_without_names_get_every_object() {
    let upstream = Upstream::start(store_with(CONFIG), "127.0.0.1:0").await;
    let mut client = within(AggregatedDiscoveryServiceClient::connect(format!(
        "http://{}",
        upstream.addr
    )))
    .await
    .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut rx = within(client.stream_aggregated_resources(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let pa = type_url(Kind::PeerAuthentication);
    tx.send(DiscoveryRequest {
        node: node(NODE_ID),
        type_url: pa.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let first: DiscoveryResponse = within(rx.message()).await.unwrap().expect("a response");
    assert_eq!(first.resources.len(), 2);
    assert!(first
        .resources
        .iter()
        .all(|r| r.type_url == capstan_config::mcp::RESOURCE_TYPE));
    assert_eq!(TYPE_URLS.len(), Kind::ALL.len());
}

#[tokio::test]
async fn the_authorizing_service_does_not_hand_out_config() {
    let upstream = Upstream::start(store_with(CONFIG), "127.0.0.1:0").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = upstream
        .ads
        .service()
        .with_authorizer(Arc::new(capstan_xds::NamespaceAuthorizer));
    // Every caller proves the `default` namespace.
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        |mut req: tonic::Request<()>| {
            req.extensions_mut()
                .insert(capstan_xds::AuthenticatedPeer::new(vec![
                    capstan_xds::PeerIdentity {
                        id: "spiffe://cluster.local/ns/default/sa/app".into(),
                        namespace: "default".into(),
                    },
                ]));
            Ok(req)
        },
    );
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let (tx, mut rx) = delta_stream(addr).await;
    tx.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: type_url(Kind::VirtualService).into(),
        resource_names_subscribe: vec!["*".into()],
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let refused = tokio::time::timeout(WAIT, rx.message())
        .await
        .expect("answered")
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("plaintext xDS port"),
        "{refused:?}"
    );
}
