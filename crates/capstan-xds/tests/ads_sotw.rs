//! State of the World ADS over real gRPC on 127.0.0.1.

mod ads_support;

use ads_support::*;
use capstan_xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use capstan_xds::AdsOptions;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

fn req(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    }
}

fn nack(type_url: &str, names: &[&str], nonce: &str, message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: message.into(),
            details: vec![],
        }),
        ..req(type_url, names, nonce)
    }
}

/// The names in a response, decoded by type.
fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| {
            let v = any.value.as_slice();
            match resp.type_url.as_str() {
                LISTENER => Listener::decode(v).unwrap().name,
                CLUSTER => Cluster::decode(v).unwrap().name,
                ENDPOINT => ClusterLoadAssignment::decode(v).unwrap().cluster_name,
                _ => RouteConfiguration::decode(v).unwrap().name,
            }
        })
        .collect()
}

impl Stream {
    async fn open(h: &Harness) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let mut client = h.client().await;
        let rx = within(client.stream_aggregated_resources(ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: DiscoveryRequest) {
        within(self.tx.send(r)).await.unwrap();
    }

    /// The first request of a stream, carrying the node.
    async fn hello(&self, type_url: &str, names: &[&str]) {
        self.send(DiscoveryRequest {
            node: Some(node(NODE_ID)),
            ..req(type_url, names, "")
        })
        .await;
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        within(self.rx.message())
            .await
            .unwrap()
            .expect("stream ended")
    }

    async fn status(&mut self) -> Status {
        within(self.rx.message())
            .await
            .expect_err("expected an error status")
    }

    async fn quiet(&mut self) {
        if let Ok(msg) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }

    async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(req(&resp.type_url, names, &resp.nonce)).await;
    }
}

#[tokio::test]
async fn initial_wildcard_and_named_responses_then_ack_and_push() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    let cds = s.recv().await;
    assert_eq!(
        (cds.type_url.as_str(), names(&cds)),
        (CLUSTER, vec!["ratings".into(), "reviews".into()])
    );
    s.ack(&cds, &[]).await;
    s.send(req(ENDPOINT, &["reviews"], "")).await;
    let eds = s.recv().await;
    assert_eq!(names(&eds), vec!["reviews#1".to_string()]);
    s.ack(&eds, &["reviews"]).await;
    s.send(req(LISTENER, &[], "")).await;
    let lds = s.recv().await;
    assert_eq!(names(&lds).len(), 2);
    s.ack(&lds, &[]).await;
    s.send(req(ROUTE, &["9080"], "")).await;
    let rds = s.recv().await;
    assert_eq!(names(&rds), vec!["9080".to_string()]);
    s.ack(&rds, &["9080"]).await;
    assert_ne!(cds.nonce, eds.nonce);

    h.gen.set(CLUSTER, "reviews", "2");
    let v = h.push_full();
    let pushed = s.recv().await;
    assert_eq!(
        (pushed.type_url.as_str(), pushed.version_info.clone()),
        (CLUSTER, v.to_string())
    );
    assert_eq!(names(&pushed).len(), 2, "SotW CDS carries the whole set");
    s.quiet().await; // EDS, LDS, RDS unchanged: nothing sent
    s.ack(&pushed, &[]).await;
    eventually(|| h.ads.metrics().convergence.count >= 1).await;
    let sync = h.ads.syncz();
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0].proxy_id, NODE_ID);
    let c = &sync[0].types[CLUSTER];
    assert_eq!(
        (c.wildcard, c.last_acked_version.clone()),
        (true, v.to_string())
    );
    assert_eq!(sync[0].types[ENDPOINT].subscribed_names, 1);
    let m = h.ads.metrics();
    assert_eq!((m.connections, m.pushes, m.push_responses), (1, 1, 1));
    assert!(m.bytes_sent > 0);
    // istiod's per-type families: every response counts (requested or pushed), by type.
    let by_type: Vec<(&str, u64, u64, u64)> = m
        .types
        .iter()
        .map(|t| {
            let n = (t.push_time.count, t.config_size.count);
            (t.metric_type.as_str(), t.pushes, n.0, n.1)
        })
        .collect();
    assert_eq!(
        by_type,
        vec![
            ("cds", 2, 2, 2),
            ("eds", 1, 1, 1),
            ("lds", 1, 1, 1),
            ("rds", 1, 1, 1)
        ]
    );
    assert_eq!(m.send_time.count, 5);
    assert_eq!(m.queue_time.count, 1, "one push reached the connection");
    assert!(m.recv_max > 0);
}

#[tokio::test]
async fn nack_is_logged_counted_and_not_resent() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    let first = s.recv().await;
    s.ack(&first, &[]).await;
    h.gen.set(CLUSTER, "reviews", "bad");
    h.push_full();
    let bad = s.recv().await;
    s.send(nack(
        CLUSTER,
        &[],
        &bad.nonce,
        "cluster reviews: bad config",
    ))
    .await;
    s.quiet().await;
    h.push_full(); // nothing changed since the rejected response: no resend loop
    s.quiet().await;
    let m = h.ads.metrics();
    assert_eq!(m.nacks, 1);
    let cds = m.types.iter().find(|t| t.metric_type == "cds").unwrap();
    assert_eq!((cds.rejects, cds.pushes), (1, 2));
    let sync = h.ads.syncz();
    let c = &sync[0].types[CLUSTER];
    let n = c.last_nack.as_ref().expect("nack recorded");
    assert_eq!(
        n.code, 3,
        "the error_detail code, for pilot_xds_cds_reject's err label"
    );
    assert_eq!(
        (n.message.as_str(), n.nonce.as_str()),
        ("cluster reviews: bad config", bad.nonce.as_str())
    );
    assert_eq!(
        c.last_acked_version, first.version_info,
        "still on the last accepted config"
    );
    h.gen.set(CLUSTER, "reviews", "fixed");
    h.push_full();
    let fixed = s.recv().await;
    assert_ne!(fixed.nonce, bad.nonce);
}

#[tokio::test]
async fn stale_and_bad_nonces_are_ignored_and_name_changes_answered() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(ENDPOINT, &["reviews"]).await;
    let r1 = s.recv().await;
    s.ack(&r1, &["reviews"]).await;
    h.gen.set(ENDPOINT, "reviews", "2");
    h.push_eds(&["reviews"]);
    let r2 = s.recv().await;
    // Answers to an older response, or to none at all, are ignored.
    s.send(req(ENDPOINT, &["reviews", "ratings"], &r1.nonce))
        .await;
    s.send(req(ENDPOINT, &["reviews", "ratings"], "no-such-nonce"))
        .await;
    s.quiet().await;
    assert_eq!(
        h.ads.syncz()[0].types[ENDPOINT].last_acked_version,
        r1.version_info
    );
    let m = h.ads.metrics();
    let eds = m.types.iter().find(|t| t.metric_type == "eds").unwrap();
    assert_eq!(eds.expired_nonces, 2, "pilot_xds_expired_nonce{{type=eds}}");
    // Same nonce, more names: ACK plus a response with the new set.
    s.send(req(ENDPOINT, &["reviews", "ratings"], &r2.nonce))
        .await;
    let r3 = s.recv().await;
    assert_eq!(
        names(&r3),
        vec!["ratings#1".to_string(), "reviews#2".to_string()]
    );
}

#[tokio::test]
async fn eds_only_push_carries_only_the_changed_cluster() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    let cds = s.recv().await;
    s.ack(&cds, &[]).await;
    s.send(req(ENDPOINT, &["reviews", "ratings"], "")).await;
    let eds = s.recv().await;
    assert_eq!(names(&eds).len(), 2);
    s.ack(&eds, &["reviews", "ratings"]).await;
    h.gen.set(ENDPOINT, "reviews", "2");
    h.gen.set(CLUSTER, "reviews", "2"); // not pushed: the push is EDS-only
    h.push_eds(&["reviews"]);
    let pushed = s.recv().await;
    assert_eq!(
        (pushed.type_url.as_str(), names(&pushed)),
        (ENDPOINT, vec!["reviews#2".to_string()])
    );
    s.ack(&pushed, &["reviews", "ratings"]).await;
    s.quiet().await;
}

#[tokio::test]
async fn generation_errors_keep_the_last_config() {
    let h = Harness::start(AdsOptions::default()).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    let cds = s.recv().await;
    s.ack(&cds, &[]).await;
    *h.gen.fail.lock().unwrap() = true;
    h.gen.set(CLUSTER, "reviews", "2");
    h.push_full();
    s.quiet().await;
    assert!(h.ads.metrics().generation_errors >= 1);
    *h.gen.fail.lock().unwrap() = false;
    h.push_full();
    assert_eq!(names(&s.recv().await).len(), 2);
}

#[tokio::test]
async fn malformed_requests_get_errors_or_are_ignored() {
    let h = Harness::start(AdsOptions::default()).await;
    // No node.
    let mut s = Stream::open(&h).await;
    s.send(req(CLUSTER, &[], "")).await;
    let st = s.status().await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(st.message().contains("node"), "{st:?}");
    // Garbage node id.
    let mut s = Stream::open(&h).await;
    s.send(DiscoveryRequest {
        node: Some(node("garbage")),
        ..req(CLUSTER, &[], "")
    })
    .await;
    let st = s.status().await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(st.message().contains("garbage"), "{st:?}");
    // Unknown type URL: ignored, the stream stays usable.
    let mut s = Stream::open(&h).await;
    s.send(DiscoveryRequest {
        node: Some(node(NODE_ID)),
        ..req("type.googleapis.com/example.Unknown", &[], "")
    })
    .await;
    s.quiet().await;
    s.send(req(CLUSTER, &[], "")).await;
    assert_eq!(s.recv().await.type_url, CLUSTER);
    // 200k names: refused with resource_exhausted.
    let many: Vec<String> = (0..200_000).map(|i| format!("c{i}")).collect();
    s.send(DiscoveryRequest {
        resource_names: many,
        ..req(ENDPOINT, &[], "")
    })
    .await;
    assert_eq!(s.status().await.code(), Code::ResourceExhausted);
    assert!(h.ads.metrics().rejected_streams >= 3);
    eventually(|| h.ads.syncz().is_empty()).await;
}

#[tokio::test]
async fn a_client_that_never_reads_or_acks_does_not_delay_others() {
    let options = AdsOptions {
        send_buffer: 1,
        ack_timeout: Duration::from_millis(300),
        // Far longer than the harness's bounded receive: if the silent client could hold up the
        // others, their pushes would wait for this and `recv` would fail. No timing is asserted.
        send_timeout: Duration::from_secs(120),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    // Big resources so the silent client's buffers fill quickly.
    let big = "x".repeat(200_000);
    let lazy = Stream::open(&h).await;
    lazy.hello(CLUSTER, &[]).await;
    lazy.send(req(LISTENER, &[], "")).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    let cds = s.recv().await;
    s.ack(&cds, &[]).await;
    for i in 0..15 {
        h.gen.set(CLUSTER, "reviews", &format!("{big}{i}"));
        let v = h.push_full();
        let resp = s.recv().await;
        assert_eq!(resp.version_info, v.to_string(), "push {i}");
        s.ack(&resp, &[]).await;
    }
    drop(lazy);
}

#[tokio::test]
async fn a_push_throttle_of_one_still_reaches_every_connection() {
    let options = AdsOptions {
        max_concurrent_pushes: 1,
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = Stream::open(&h).await;
        s.hello(CLUSTER, &[]).await;
        let cds = s.recv().await;
        s.ack(&cds, &[]).await;
        streams.push(s);
    }
    h.gen.set(CLUSTER, "reviews", "changed");
    let v = h.push_full();
    for s in &mut streams {
        let resp = s.recv().await;
        assert_eq!(resp.version_info, v.to_string());
        s.ack(&resp, &[]).await;
    }
}

#[tokio::test]
async fn streams_with_responses_in_flight_are_bounded() {
    let options = AdsOptions {
        max_streams_in_flight: 1,
        // Long: only the ACK may return the first stream's permit in this test.
        ack_timeout: Duration::from_secs(3600),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    let mut first = Stream::open(&h).await;
    first.hello(CLUSTER, &[]).await;
    let cds = first.recv().await;
    // The second stream asks while the first one's clusters are unacknowledged: it waits.
    let mut second = Stream::open(&h).await;
    second.hello(CLUSTER, &[]).await;
    second.quiet().await;
    // The first stream acknowledges: its permit passes to the second.
    first.ack(&cds, &[]).await;
    let theirs = second.recv().await;
    assert_eq!(theirs.type_url, CLUSTER);
    // Now the second one holds it: a push reaches the first only after the second's ACK, and
    // reaches the second (queued behind the first) only after the first's.
    h.gen.set(CLUSTER, "reviews", "changed");
    let v = h.push_full();
    first.quiet().await;
    second.ack(&theirs, &[]).await;
    let pushed = first.recv().await;
    assert_eq!(pushed.version_info, v.to_string());
    second.quiet().await;
    first.ack(&pushed, &[]).await;
    let pushed = second.recv().await;
    assert_eq!(pushed.version_info, v.to_string());
}

#[tokio::test]
async fn a_stream_that_never_acks_gives_its_in_flight_permit_back() {
    let options = AdsOptions {
        max_streams_in_flight: 1,
        ack_timeout: Duration::from_millis(200),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    let mut silent = Stream::open(&h).await;
    silent.hello(CLUSTER, &[]).await;
    let _never_acked = silent.recv().await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    assert_eq!(s.recv().await.type_url, CLUSTER);
}

/// Clusters too large for the client's flow-control window and the server's send buffer
/// together (~3 MB), so a client that does not read leaves most of its response in the server.
fn make_clusters_large(h: &Harness) {
    let big = "x".repeat(200_000);
    for i in 0..15 {
        h.gen.set(CLUSTER, &format!("big{i}"), &format!("{big}{i}"));
    }
}

/// The first stream: asks for the clusters and does not read them yet. Returns once they were
/// sent (so it took the in-flight permit).
async fn lazy_first_stream(h: &Harness) -> Stream {
    let lazy = Stream::open(h).await;
    lazy.hello(CLUSTER, &[]).await;
    eventually(|| {
        h.ads
            .syncz()
            .iter()
            .any(|c| c.types.get(CLUSTER).is_some_and(|t| t.responses_sent > 0))
    })
    .await;
    lazy
}

#[tokio::test]
async fn a_proxy_that_does_not_read_keeps_its_in_flight_permit_past_the_ack_timeout() {
    let options = AdsOptions {
        max_streams_in_flight: 1,
        ack_timeout: Duration::from_millis(100),
        send_timeout: Duration::from_secs(3600),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    make_clusters_large(&h);
    let mut lazy = lazy_first_stream(&h).await;
    // Several ACK timeouts pass; the lazy stream's response still sits in the server, so the
    // permit stays with it.
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    s.quiet().await;
    // It reads (and still does not ACK): its bytes leave, and so does the permit.
    assert_eq!(lazy.recv().await.type_url, CLUSTER);
    assert_eq!(s.recv().await.type_url, CLUSTER);
}

#[tokio::test]
async fn a_proxy_that_never_reads_is_closed_after_the_send_timeout_and_its_permit_passes_on() {
    let options = AdsOptions {
        max_streams_in_flight: 1,
        ack_timeout: Duration::from_millis(100),
        send_timeout: Duration::from_millis(500),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    make_clusters_large(&h);
    let lazy = lazy_first_stream(&h).await;
    let mut s = Stream::open(&h).await;
    s.hello(CLUSTER, &[]).await;
    assert_eq!(s.recv().await.type_url, CLUSTER);
    assert!(h.ads.metrics().send_timeouts >= 1);
    drop(lazy);
}
