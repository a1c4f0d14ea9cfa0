//! Shared by the ADS tests: a fake generator whose resources the test changes, a real tonic
//! server on an ephemeral 127.0.0.1 port, and bounded waits.
#![allow(dead_code)]

use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use capstan_xds::{
    AdsOptions, AdsServer, GenerateError, Generator, Proxy, PushRequest, Resource, Subscription,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is observed.
pub const QUIET: Duration = Duration::from_millis(400);

pub const NODE_ID: &str = "sidecar~10.1.1.1~reviews-v1.default~default.svc.cluster.local";

pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Node::default()
    }
}

/// A generator over a table the test edits: type URL → name → content tag. The content tag
/// goes into the resource, so changing it changes the version.
#[derive(Default)]
pub struct FakeGen {
    pub table: Mutex<BTreeMap<&'static str, BTreeMap<String, String>>>,
    pub fail: Mutex<bool>,
}

impl FakeGen {
    pub fn set(&self, type_url: &'static str, name: &str, tag: &str) {
        let mut t = self.table.lock().unwrap();
        t.entry(type_url)
            .or_default()
            .insert(name.to_string(), tag.to_string());
    }

    pub fn remove(&self, type_url: &'static str, name: &str) {
        let mut t = self.table.lock().unwrap();
        t.entry(type_url).or_default().remove(name);
    }

    /// A standard mesh: two listeners, two clusters, their endpoints, one route.
    pub fn mesh() -> Arc<FakeGen> {
        let g = FakeGen::default();
        for l in ["0.0.0.0_9080", "virtualOutbound"] {
            g.set(LISTENER, l, "1");
        }
        for c in ["reviews", "ratings"] {
            g.set(CLUSTER, c, "1");
            g.set(ENDPOINT, c, "1");
        }
        g.set(ROUTE, "9080", "1");
        Arc::new(g)
    }
}

fn build(type_url: &str, name: &str, tag: &str) -> Resource {
    match type_url {
        LISTENER => Resource::new(
            name,
            &Listener {
                name: name.into(),
                stat_prefix: tag.into(),
                ..Listener::default()
            },
        ),
        CLUSTER => Resource::new(
            name,
            &Cluster {
                name: name.into(),
                alt_stat_name: tag.into(),
                ..Cluster::default()
            },
        ),
        ENDPOINT => Resource::new(
            name,
            &ClusterLoadAssignment {
                cluster_name: format!("{name}#{tag}"),
                ..ClusterLoadAssignment::default()
            },
        ),
        _ => Resource::new(
            name,
            &RouteConfiguration {
                name: name.into(),
                internal_only_headers: vec![tag.into()],
                ..RouteConfiguration::default()
            },
        ),
    }
}

impl Generator for FakeGen {
    fn generate(
        &self,
        _proxy: &Proxy,
        type_url: &str,
        sub: &Subscription,
        push: &PushRequest,
    ) -> Result<Vec<Arc<Resource>>, GenerateError> {
        if *self.fail.lock().unwrap() {
            return Err(GenerateError("injected failure".into()));
        }
        let t = self.table.lock().unwrap();
        let Some(resources) = t.get(type_url) else {
            return Ok(Vec::new());
        };
        Ok(resources
            .iter()
            .filter(|(name, _)| sub.wants(name))
            // An EDS-only push needs only the clusters of the changed hosts (here: same name).
            .filter(|(name, _)| push.full || push.eds_hosts.contains(*name))
            .map(|(name, tag)| Arc::new(build(type_url, name, tag)))
            .collect())
    }
}

/// A running server and its address.
pub struct Harness {
    pub ads: AdsServer<FakeGen>,
    pub gen: Arc<FakeGen>,
    pub addr: SocketAddr,
    version: Mutex<u64>,
}

impl Harness {
    pub async fn start(options: AdsOptions) -> Harness {
        let gen = FakeGen::mesh();
        let ads = AdsServer::new(gen.clone(), options);
        // A fresh ephemeral port: never shares a port with a stale server (SO_REUSEPORT).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = ads.service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Harness {
            ads,
            gen,
            addr,
            version: Mutex::new(1),
        }
    }

    pub async fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        within(AggregatedDiscoveryServiceClient::connect(format!(
            "http://{}",
            self.addr
        )))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024)
    }

    fn next_version(&self) -> u64 {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        *v
    }

    /// A full push of the generator's current state.
    pub fn push_full(&self) -> u64 {
        let version = self.next_version();
        self.ads.push(PushRequest {
            version,
            full: true,
            ..PushRequest::default()
        });
        version
    }

    /// An EDS-only push for `hosts`.
    pub fn push_eds(&self, hosts: &[&str]) -> u64 {
        let version = self.next_version();
        self.ads.push(PushRequest {
            version,
            full: false,
            eds_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..PushRequest::default()
        });
        version
    }
}

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

/// Polls `cond` until true, bounded by [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    within(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
