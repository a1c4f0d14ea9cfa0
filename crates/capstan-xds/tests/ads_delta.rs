//! Delta ADS over real gRPC on 127.0.0.1.

mod ads_support;

use ads_support::*;
use capstan_xds::resource::{CLUSTER, ENDPOINT};
use capstan_xds::AdsOptions;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

struct Stream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

fn req(
    type_url: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..DeltaDiscoveryRequest::default()
    }
}

fn names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}

fn versions(resp: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    resp.resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

impl Stream {
    async fn open(h: &Harness) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let mut client = h.client().await;
        let rx = within(client.delta_aggregated_resources(ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: DeltaDiscoveryRequest) {
        within(self.tx.send(r)).await.unwrap();
    }

    async fn hello(&self, r: DeltaDiscoveryRequest) {
        self.send(DeltaDiscoveryRequest {
            node: Some(node(NODE_ID)),
            ..r
        })
        .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        within(self.rx.message())
            .await
            .unwrap()
            .expect("stream ended")
    }

    async fn quiet(&mut self) {
        if let Ok(msg) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }

    async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(req(&resp.type_url, &[], &[], &resp.nonce)).await;
    }
}

#[tokio::test]
async fn subscribe_then_changes_and_removals_only() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    // Legacy rule: a first CDS request without names is a wildcard subscription.
    s.hello(req(CLUSTER, &[], &[], "")).await;
    let first = s.recv().await;
    assert_eq!(
        names(&first),
        vec!["ratings".to_string(), "reviews".to_string()]
    );
    s.ack(&first).await;
    h.gen.set(CLUSTER, "reviews", "2");
    let v = h.push_full();
    let changed = s.recv().await;
    assert_eq!(names(&changed), vec!["reviews".to_string()]);
    assert_eq!(changed.system_version_info, v.to_string());
    assert!(changed.removed_resources.is_empty());
    s.ack(&changed).await;
    h.gen.remove(CLUSTER, "ratings");
    h.push_full();
    let removed = s.recv().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, vec!["ratings".to_string()]);
    s.ack(&removed).await;
    h.push_full(); // nothing changed: nothing sent
    s.quiet().await;
    let sync = h.ads.syncz();
    assert!(sync[0].delta);
    assert_eq!(sync[0].types[CLUSTER].resources_sent, 3);
}

#[tokio::test]
async fn reconnect_with_initial_versions_gets_only_what_changed() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(req(CLUSTER, &["*"], &[], "")).await;
    let first = s.recv().await;
    let have = versions(&first);
    assert_eq!(have.len(), 2);
    drop(s);

    // Nothing changed: an empty first response (initialization completes), no resources.
    let mut s = Stream::open(&h).await;
    s.hello(DeltaDiscoveryRequest {
        initial_resource_versions: have.clone(),
        ..req(CLUSTER, &["*"], &[], "")
    })
    .await;
    let again = s.recv().await;
    assert!(
        again.resources.is_empty() && again.removed_resources.is_empty(),
        "{again:?}"
    );
    drop(s);

    h.gen.set(CLUSTER, "ratings", "2");
    let mut s = Stream::open(&h).await;
    s.hello(DeltaDiscoveryRequest {
        initial_resource_versions: have,
        ..req(CLUSTER, &["*"], &[], "")
    })
    .await;
    let changed = s.recv().await;
    assert_eq!(names(&changed), vec!["ratings".to_string()]);
}

/// The xDS rule for wildcard subscriptions: a name the client claims on reconnect that the
/// server no longer has is removed in the first response (a restarted server must not leave
/// the client holding what is gone).
#[tokio::test]
async fn reconnect_claiming_what_is_gone_gets_its_removal() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(req(CLUSTER, &["*"], &[], "")).await;
    let have = versions(&s.recv().await);
    drop(s);

    h.gen.remove(CLUSTER, "ratings");
    h.gen.set(CLUSTER, "details", "1");
    let mut s = Stream::open(&h).await;
    s.hello(DeltaDiscoveryRequest {
        initial_resource_versions: have,
        ..req(CLUSTER, &["*"], &[], "")
    })
    .await;
    let first = s.recv().await;
    assert_eq!(names(&first), vec!["details".to_string()]);
    assert_eq!(first.removed_resources, vec!["ratings".to_string()]);
    s.ack(&first).await;
    h.push_full();
    s.quiet().await;
}

#[tokio::test]
async fn eds_only_push_sends_only_the_changed_cluster_and_unsubscribe_forgets() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(req(ENDPOINT, &["reviews", "ratings"], &[], ""))
        .await;
    let first = s.recv().await;
    assert_eq!(first.resources.len(), 2);
    s.ack(&first).await;
    h.gen.set(ENDPOINT, "reviews", "2");
    h.push_eds(&["reviews"]);
    let pushed = s.recv().await;
    assert_eq!(names(&pushed), vec!["reviews".to_string()]);
    assert!(
        pushed.removed_resources.is_empty(),
        "a partial EDS push removes nothing"
    );
    s.send(req(ENDPOINT, &[], &["reviews"], &pushed.nonce))
        .await;
    s.quiet().await;
    h.gen.set(ENDPOINT, "reviews", "3");
    h.push_eds(&["reviews"]);
    s.quiet().await; // unsubscribed
    assert_eq!(h.ads.syncz()[0].types[ENDPOINT].subscribed_names, 1);
}

#[tokio::test]
async fn nack_is_counted_stale_nonce_ignored_no_resend() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(req(CLUSTER, &[], &[], "")).await;
    let first = s.recv().await;
    s.ack(&first).await;
    h.gen.set(CLUSTER, "reviews", "bad");
    h.push_full();
    let bad = s.recv().await;
    s.send(req(CLUSTER, &[], &[], &first.nonce)).await; // stale: ignored
    s.send(DeltaDiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "reviews: invalid".into(),
            details: vec![],
        }),
        ..req(CLUSTER, &[], &[], &bad.nonce)
    })
    .await;
    s.quiet().await;
    h.push_full();
    s.quiet().await; // the rejected content is not resent
    assert_eq!(h.ads.metrics().nacks, 1);
    let sync = h.ads.syncz();
    let c = &sync[0].types[CLUSTER];
    assert_eq!(
        c.last_nack.as_ref().map(|n| n.message.as_str()),
        Some("reviews: invalid")
    );
    assert_eq!(c.last_acked_version, first.system_version_info);
    h.gen.set(CLUSTER, "reviews", "good");
    h.push_full();
    assert_eq!(names(&s.recv().await), vec!["reviews".to_string()]);
}

#[tokio::test]
async fn malformed_delta_requests() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.send(req(CLUSTER, &[], &[], "")).await;
    let st = within(s.rx.message()).await.expect_err("no node");
    assert_eq!(st.code(), Code::InvalidArgument);

    let mut s = Stream::open(&h).await;
    s.hello(req("type.googleapis.com/example.Unknown", &["x"], &[], ""))
        .await;
    s.quiet().await;
    let many: Vec<String> = (0..200_000).map(|i| format!("c{i}")).collect();
    s.send(DeltaDiscoveryRequest {
        resource_names_subscribe: many,
        ..req(ENDPOINT, &[], &[], "")
    })
    .await;
    let st = within(s.rx.message()).await.expect_err("too many names");
    assert_eq!(st.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_server_that_is_not_ready_refuses_new_streams_until_it_is() {
    let h = Harness::start(AdsOptions::default()).await;
    h.ads.set_ready(false);
    let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let mut client = h.client().await;
    let refused = within(client.delta_aggregated_resources(ReceiverStream::new(rx)))
        .await
        .expect_err("a stream opened before the server is ready");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("not ready"), "{refused:?}");
    h.ads.set_ready(true);
    let mut s = Stream::open(&h).await;
    s.hello(req(CLUSTER, &[], &[], "")).await;
    assert_eq!(names(&s.recv().await).len(), 2);
}
