//! The reconnecting proxies against a minimal in-process xDS server that refuses the first
//! streams with `RESOURCE_EXHAUSTED` (as istiod's admission limit does) and then serves an empty
//! mesh: every proxy retries until it syncs, a storm makes each sync again, and stopping the
//! fleet ends every thread. No external tools; every wait is bounded.

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use capstan_loadgen::client::{Report, SessionOptions, CLUSTER, LISTENER};
use capstan_loadgen::fleet::{Backoff, Fleet, FleetOptions};
use capstan_loadgen::reports;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use prost::Message;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn framed(response: &DeltaDiscoveryResponse) -> Bytes {
    let body = response.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

/// Serves HTTP/2 gRPC streams: the first `refuse` are refused, the others get an empty CDS and
/// LDS response and are then read until they end.
async fn serve(listener: tokio::net::TcpListener, refuse: usize, streams: Arc<AtomicUsize>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let streams = streams.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                let n = streams.fetch_add(1, Ordering::SeqCst);
                let head = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc");
                if n < refuse {
                    let refused = head
                        .header("grpc-status", "8")
                        .header("grpc-message", "request rate limit exceeded")
                        .body(())
                        .expect("a valid response head");
                    let _ = respond.send_response(refused, true);
                    continue;
                }
                let Ok(mut send) = respond.send_response(head.body(()).expect("head"), false)
                else {
                    continue;
                };
                tokio::spawn(async move {
                    for (i, type_url) in [CLUSTER, LISTENER].into_iter().enumerate() {
                        let response = DeltaDiscoveryResponse {
                            type_url: type_url.into(),
                            nonce: i.to_string(),
                            ..DeltaDiscoveryResponse::default()
                        };
                        let _ = send.send_data(framed(&response), false);
                    }
                    let mut body = request.into_body();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                });
            }
        });
    }
}

/// Folds reports until every proxy has synced after `since`.
async fn synced_after(
    rx: &mut reports::Receiver,
    proxies: usize,
    since: Instant,
    retries: &mut usize,
) -> Result<()> {
    let mut synced = HashSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while synced.len() < proxies {
            match rx.recv().await {
                Some(Report::ProxySynced { client, at }) if at >= since => {
                    synced.insert(client);
                }
                Some(Report::Retrying { error, .. }) => {
                    assert!(error.contains("gRPC status \"8\""), "{error}");
                    *retries += 1;
                }
                Some(Report::Rejected { error, .. }) => panic!("NACK: {error}"),
                _ => {}
            }
        }
    })
    .await
    .with_context(|| format!("only {} of {proxies} proxies synced", synced.len()))
}

#[tokio::test]
async fn refused_proxies_retry_sync_and_survive_a_storm() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let streams = Arc::new(AtomicUsize::new(0));
    let refuse = 5;
    tokio::spawn(serve(listener, refuse, streams.clone()));

    let proxies = 3;
    let (tx, mut rx) = reports::channel();
    let fleet = Fleet::start(
        FleetOptions {
            addr,
            threads: 2,
            session: SessionOptions {
                read_delay: Duration::from_millis(2),
                ..SessionOptions::default()
            },
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
        },
        tx,
    )?;
    let start = Instant::now();
    for i in 0..proxies {
        fleet.connect(i);
    }
    let mut retries = 0;
    synced_after(&mut rx, proxies, start, &mut retries).await?;
    assert_eq!(retries, refuse, "every refusal is retried");

    let storm = Instant::now();
    fleet.disconnect_all();
    synced_after(&mut rx, proxies, storm, &mut retries).await?;
    assert_eq!(
        retries, refuse,
        "a disconnect the proxies were told to make is no failure"
    );
    assert_eq!(streams.load(Ordering::SeqCst), refuse + 2 * proxies);

    // Stopping ends every proxy and joins the threads (bounded by the test's runtime).
    tokio::task::spawn_blocking(move || fleet.stop()).await?;
    Ok(())
}
