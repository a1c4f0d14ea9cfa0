//! `capstan discovery` on SIGTERM: turns unready, refuses new xDS streams with UNAVAILABLE,
//! closes the open ones with UNAVAILABLE spread over `--drain-duration`, and exits 0.

mod discovery_support;

use anyhow::{ensure, Context, Result};
use discovery_support::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const STREAMS: usize = 6;
const DRAIN: Duration = Duration::from_secs(3);

/// Opens a Delta stream for a sidecar `pod` and waits for its first clusters.
async fn connect(
    port: u16,
    pod: &str,
) -> Result<
    (
        mpsc::Sender<DeltaDiscoveryRequest>,
        Streaming<DeltaDiscoveryResponse>,
    ),
    tonic::Status,
> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let (tx, rx) = mpsc::channel(4);
    let _ = tx
        .send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: format!("sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local"),
                ..Node::default()
            }),
            type_url: CLUSTER_TYPE.into(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
        Ok(Ok(Some(_))) => Ok((tx, stream)),
        Ok(Ok(None)) => Err(tonic::Status::internal("stream ended before a response")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no response in 20 s")),
    }
}

/// Reads until the stream ends; returns its status and when it ended.
async fn end_of(mut stream: Streaming<DeltaDiscoveryResponse>) -> (tonic::Status, Instant) {
    let bound = DRAIN + Duration::from_secs(10);
    let status = tokio::time::timeout(bound, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::ok("ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| tonic::Status::deadline_exceeded("still open after the drain"));
    (status, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_over_the_window_and_exits_zero() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("config");
    std::fs::create_dir_all(&config)?;
    let mut discovery = Discovery::start(
        scratch.path(),
        "discovery",
        &[
            "--config-dir",
            config.to_str().context("utf-8")?,
            "--drain-duration",
            "3s",
        ],
    )?;
    let port = discovery.xds_port;
    let mut ends = Vec::new();
    for i in 0..STREAMS {
        let (tx, stream) = connect(port, &format!("app-{i}"))
            .await
            .with_context(|| discovery.tail())?;
        ends.push(tokio::spawn(async move {
            // Keep the request side open: the server, not the client, ends the stream.
            let _tx = tx;
            end_of(stream).await
        }));
    }

    let signalled = Instant::now();
    discovery.terminate()?;
    // Unready at once (the first close is immediate too).
    let ready = tokio::task::spawn_blocking({
        let port = discovery.monitoring_port;
        move || {
            capstan_e2e::curl(
                "GET",
                &format!("http://127.0.0.1:{port}/ready"),
                None,
                Duration::from_secs(5),
            )
        }
    })
    .await??;
    ensure!(
        ready.status == 503 && ready.body.contains("shutting down"),
        "{ready:?}"
    );
    ensure!(signalled.elapsed() < DRAIN / 2, "/ready answered late");
    let refused = connect(port, "late")
        .await
        .err()
        .context("a new stream was accepted while draining")?;
    ensure!(refused.code() == Code::Unavailable, "{refused:?}");

    let mut times = Vec::new();
    for end in ends {
        let (status, at) = end.await?;
        ensure!(
            status.code() == Code::Unavailable && status.message() == "server shutting down",
            "{status:?}; log:\n{}",
            discovery.tail()
        );
        times.push(at.duration_since(signalled));
    }
    times.sort();
    // Six closes 500 ms apart over 3 s: the first at once, the last at 2.5 s.
    let spread = times[STREAMS - 1] - times[0];
    ensure!(
        spread >= Duration::from_millis(1500),
        "closes not spread over the window: {times:?}"
    );
    ensure!(
        times[STREAMS - 1] < DRAIN + Duration::from_secs(1),
        "the drain overran its window: {times:?}"
    );
    let distinct = times
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(200))
        .count();
    ensure!(
        distinct >= STREAMS - 2,
        "closes bunched together: {times:?}"
    );

    let status = tokio::task::spawn_blocking(move || {
        let status = discovery.wait_exit(DRAIN + Duration::from_secs(5));
        (status, discovery)
    })
    .await?;
    let (status, discovery) = status;
    let status = status?;
    ensure!(
        status.code() == Some(0),
        "{status}; log:\n{}",
        discovery.tail()
    );
    ensure!(
        signalled.elapsed() < DRAIN + Duration::from_secs(5),
        "exited late: {:?}",
        signalled.elapsed()
    );
    Ok(())
}
