//! Draining on shutdown over real gRPC on 127.0.0.1: open streams end with `UNAVAILABLE`
//! spread over the window, new streams are refused, the server never turns ready again.

mod ads_support;

use ads_support::*;
use capstan_xds::resource::CLUSTER;
use capstan_xds::server::SHUTTING_DOWN;
use capstan_xds::AdsOptions;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// A Delta stream, opened.
async fn open(
    h: &Harness,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut client = h.client().await;
    let stream = within(client.delta_aggregated_resources(ReceiverStream::new(rx)))
        .await
        .expect("stream accepted")
        .into_inner();
    (tx, stream)
}

/// The stream's first request: the node and the clusters.
async fn hello(tx: &mpsc::Sender<DeltaDiscoveryRequest>) {
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(NODE_ID)),
        type_url: CLUSTER.into(),
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .expect("request sent");
}

/// A Delta stream that has received its first clusters.
async fn connected(
    h: &Harness,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
) {
    let (tx, mut stream) = open(h).await;
    hello(&tx).await;
    let first = within(stream.message()).await.expect("a response");
    assert!(first.is_some(), "stream ended before its first response");
    (tx, stream)
}

#[tokio::test]
async fn drain_closes_every_stream_with_unavailable_spread_over_the_window() {
    const STREAMS: usize = 4;
    let window = Duration::from_millis(1200);
    let h = Harness::start(AdsOptions::default()).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(connected(&h).await);
    }
    let started = Instant::now();
    let ads = h.ads.clone();
    let drain = tokio::spawn(async move { ads.drain(window).await });

    let mut ends = Vec::new();
    for (_tx, mut stream) in streams {
        let end = tokio::time::timeout(window + WAIT, async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("stream ended without a status"),
                    Err(status) => return status,
                }
            }
        })
        .await
        .expect("the stream ends within the window");
        assert_eq!(end.code(), Code::Unavailable, "{end:?}");
        assert_eq!(end.message(), SHUTTING_DOWN, "{end:?}");
        ends.push(started.elapsed());
    }
    within(drain).await.expect("drain task");
    assert!(!h.ads.is_ready(), "a draining server is not ready");
    h.ads.set_ready(true);
    assert!(
        !h.ads.is_ready(),
        "set_ready cannot reopen a drained server"
    );

    // Spread: closes 300 ms apart (1200 ms / 4), the first at once; allow scheduling slack.
    ends.sort();
    let spread = *ends.last().expect("four ends") - ends[0];
    assert!(
        spread >= Duration::from_millis(700),
        "closes not spread over the window: {ends:?}"
    );
    assert!(
        *ends.last().expect("four ends") < window + Duration::from_secs(1),
        "drain overran its window: {ends:?}"
    );

    let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(4);
    let mut client = h.client().await;
    let refused = within(client.delta_aggregated_resources(ReceiverStream::new(rx)))
        .await
        .expect_err("a new stream while draining");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), SHUTTING_DOWN, "{refused:?}");
}

#[tokio::test]
async fn drain_closes_a_stream_waiting_to_have_responses_in_flight() {
    let options = AdsOptions {
        max_streams_in_flight: 1,
        ack_timeout: Duration::from_secs(3600),
        ..AdsOptions::default()
    };
    let h = Harness::start(options).await;
    // Opened first, so the drain (which closes streams in the order they opened) closes it
    // before the stream holding the permit, whose end would pass the permit on.
    let (tx, mut waiting) = open(&h).await;
    // Holds the only permit: its clusters are never acknowledged.
    let _holder = connected(&h).await;
    hello(&tx).await;
    // Registered (and so waiting for the permit) before the drain starts.
    eventually(|| h.ads.syncz().len() == 2).await;
    let ads = h.ads.clone();
    let drain = tokio::spawn(async move { ads.drain(Duration::from_millis(200)).await });
    let end = within(waiting.message())
        .await
        .expect_err("the waiting stream is closed by the drain, not answered");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    within(drain).await.expect("drain task");
}

#[tokio::test]
async fn drain_without_streams_returns_at_once() {
    let h = Harness::start(AdsOptions::default()).await;
    tokio::time::timeout(Duration::from_secs(1), h.ads.drain(Duration::from_secs(30)))
        .await
        .expect("nothing to drain");
    assert!(h.ads.is_draining());
}
