//! The MCP-over-xDS config source (`--config-source xds://host:port`): a Delta ADS stream to
//! another control plane with a wildcard subscription to every Istio kind, feeding the store
//! through [`McpClient`].
//!
//! The stream is reopened after any failure with full-jitter exponential backoff (as the
//! proxy's xDS client does); the store keeps everything meanwhile, and the new stream claims it
//! (`initial_resource_versions`), so a restarted upstream sends only differences and removals.
//! The first sync is reported once every kind has had a response applied.

use super::client::McpClient;
use crate::store::ConfigStore;
use capstan_api::decode::CheckOptions;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// The largest response accepted: one kind's objects of a large mesh run to tens of MB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// First reconnect delay bound (full jitter: the delay is uniform in `[0, bound]`).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest reconnect delay bound.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A stream that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5);

/// Why a config source cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The address is not `xds://HOST:PORT`.
    #[error("config source {0:?}: expected xds://HOST:PORT")]
    BadUrl(String),
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("the server closed the stream")]
    Closed,
}

/// A config source reading another control plane's config over MCP-over-xDS.
pub struct XdsSource {
    endpoint: Endpoint,
    client: McpClient,
    node: Node,
    ready: watch::Sender<bool>,
}

/// The node a config source presents: not a proxy's id, which the server accepts for config
/// types only.
fn default_node() -> Node {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_string());
    Node {
        id: format!("capstan-config-source/{host}/{}", std::process::id()),
        ..Node::default()
    }
}

/// `xds://host:port` → the HTTP/2 endpoint `http://host:port`.
fn endpoint_of(url: &str) -> Result<Endpoint, SourceError> {
    let bad = || SourceError::BadUrl(url.to_string());
    let authority = url.strip_prefix("xds://").ok_or_else(bad)?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|_| bad())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}

/// Delay bound after `attempt` consecutive failures: `BACKOFF_BASE · 2^attempt`, capped.
fn backoff_bound(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX)
}

/// Full jitter: uniform in `[0, bound]`, so sources restarted together do not reconnect in step.
fn jittered(bound: Duration) -> Duration {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

impl XdsSource {
    /// A source for `url` (`xds://host:port`, plaintext gRPC), validating objects with `opts`.
    pub fn new(url: &str, opts: CheckOptions) -> Result<XdsSource, SourceError> {
        Ok(XdsSource {
            endpoint: endpoint_of(url)?,
            client: McpClient::new(url, opts),
            node: default_node(),
            ready: watch::channel(false).0,
        })
    }

    /// Presents `id` as the node id instead of `capstan-config-source/<host>/<pid>`.
    pub fn with_node_id(mut self, id: impl Into<String>) -> XdsSource {
        self.node.id = id.into();
        self
    }

    /// The source's name in the store: its URL.
    pub fn name(&self) -> &str {
        self.client.source()
    }

    /// Turns `true` once every kind has had its first response applied.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Streams config into `store` until the task is dropped, reconnecting as needed.
    pub async fn run(mut self, store: Arc<ConfigStore>) {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let error = self.stream(&store).await;
            tracing::warn!(source = %self.name(), %error,
                "MCP config stream ended; keeping the config received so far and reconnecting");
            if started.elapsed() >= STABLE {
                failures = 0;
            }
            let delay = jittered(backoff_bound(failures));
            failures = failures.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream, until it fails.
    async fn stream(&mut self, store: &ConfigStore) -> StreamError {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => return e.into(),
        };
        let mut ads =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let opening = self.client.subscriptions(self.node.clone());
        // Room for the opening requests and one reply per type in flight.
        let (tx, rx) = mpsc::channel(opening.len() * 2);
        for request in opening {
            if tx.send(request).await.is_err() {
                return StreamError::Closed;
            }
        }
        let mut responses = match ads
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return status.into(),
        };
        tracing::info!(source = %self.name(), node = %self.node.id, "MCP config stream open");
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return StreamError::Closed,
                Err(status) => return status.into(),
            };
            let applied = self.client.apply(store, response);
            if self.client.synced() && !*self.ready.borrow() {
                tracing::info!(source = %self.name(), "Istio config received from every kind");
                self.ready.send_replace(true);
            }
            if tx.send(applied.reply).await.is_err() {
                return StreamError::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_xds_host_port() {
        for good in [
            "xds://127.0.0.1:15010",
            "xds://istiod.istio-system:15010/",
            "xds://[::1]:15010",
        ] {
            assert!(endpoint_of(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:15010",
            "http://127.0.0.1:15010",
            "xds://",
            "xds://host",
            "xds://:15010",
            "xds://host:http",
            "xds://host:99999",
            "xds://host:15010/path",
        ] {
            assert!(endpoint_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_to_its_bound_and_jitters_below_it() {
        assert_eq!(backoff_bound(0), BACKOFF_BASE);
        assert_eq!(backoff_bound(3), BACKOFF_BASE * 8);
        assert_eq!(backoff_bound(40), BACKOFF_MAX);
        assert!((0..100).all(|_| jittered(Duration::from_millis(50)) <= Duration::from_millis(50)));
    }
}
