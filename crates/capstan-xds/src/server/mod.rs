//! The Aggregated Discovery Service: State of the World and Delta ADS over gRPC.
//!
//! [`AdsServer`] is a cheap handle. Every stream gets its own task ([`connection`]) with a
//! bounded outbound channel, so a slow proxy only ever slows itself. Pushes are announced on a
//! broadcast channel; each task merges the announcements that arrive while a response awaits
//! its ACK into one pending push, so at most one push per connection is in flight.

mod authz;
mod connection;
mod delta;
mod drain;
mod intern;
mod metrics;
mod requests;
mod sent;
mod sotw;
mod status;
mod wire;

pub use authz::{
    claimed_namespaces, AuthenticatedPeer, Authorizer, NamespaceAuthorizer, PeerIdentity,
};
pub use drain::{close_schedule, SHUTTING_DOWN};
pub use metrics::{metric_type, Metrics, TypeMetrics};
pub use status::{ConnectionStatus, NackStatus, TypeStatus};
pub use wire::AdsService;

use crate::generate::{Generator, PushRequest};
use connection::Protocol;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use tracing::Instrument;

/// Limits and timeouts of the ADS server.
#[derive(Clone, Debug)]
pub struct AdsOptions {
    /// Most resource names one request may carry; beyond, the stream is closed with
    /// `resource_exhausted` (bounds the memory a hostile client can make us hold).
    pub max_resource_names: usize,
    /// How long a connection waits for the ACK of a response before sending the next push.
    pub ack_timeout: Duration,
    /// How long a connection waits for room in its outbound channel before closing the stream
    /// (the proxy does not read).
    pub send_timeout: Duration,
    /// Responses buffered per connection.
    pub send_buffer: usize,
    /// Push announcements buffered per connection; a connection that falls further behind does
    /// one full push instead.
    pub push_buffer: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Connections that may generate and hand over a push at the same time (Istio's
    /// `PILOT_PUSH_THROTTLE`): bounds the CPU and the memory of generated-but-unsent
    /// responses when thousands of proxies need the same push.
    pub max_concurrent_pushes: usize,
    /// Streams that may have responses in flight (sent, not yet acknowledged) at the same time.
    /// A response in flight holds buffers until the proxy reads it (the encoding block, up to
    /// the send buffer of HTTP/2 data, the proxy's flow-control window): without this bound, a
    /// reconnect storm or the initial sync of 10,000 proxies holds them all at once. A stream
    /// with nothing in flight waits for a permit before sending; the permit is returned at the
    /// last ACK or after `ack_timeout`.
    pub max_streams_in_flight: usize,
}

impl Default for AdsOptions {
    fn default() -> Self {
        AdsOptions {
            max_resource_names: 100_000,
            ack_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            send_buffer: 16,
            push_buffer: 64,
            max_request_bytes: 16 * 1024 * 1024,
            max_concurrent_pushes: 100,
            max_streams_in_flight: 1024,
        }
    }
}

/// A push announcement with the time it was made (for convergence time).
#[derive(Debug)]
pub(crate) struct PushEvent {
    request: PushRequest,
    created: Instant,
}

/// State shared by the handle and every connection task.
pub(crate) struct Core {
    options: AdsOptions,
    counters: metrics::Counters,
    /// Highest push version announced: what requests are answered from.
    version: AtomicU64,
    pushes: broadcast::Sender<Arc<PushEvent>>,
    connections: Mutex<BTreeMap<u64, Arc<Mutex<ConnectionStatus>>>>,
    next_conn: AtomicU64,
    /// Permits for generating and handing over a push (see `max_concurrent_pushes`).
    push_permits: Arc<tokio::sync::Semaphore>,
    /// Permits for having responses in flight (see `max_streams_in_flight`).
    inflight_permits: Arc<tokio::sync::Semaphore>,
    /// Subscribed resource names, shared between connections.
    names: intern::Interner,
    /// Whether new streams are accepted (see [`AdsServer::set_ready`]).
    ready: std::sync::atomic::AtomicBool,
    /// Set for good once the server drains (see [`AdsServer::drain`]): never ready again.
    draining: std::sync::atomic::AtomicBool,
    /// How to end each registered stream from outside its task (see [`AdsServer::drain`]).
    closers: Mutex<BTreeMap<u64, tokio::sync::oneshot::Sender<Status>>>,
}

/// The ADS server: mount [`AdsServer::service`] in tonic, announce pushes with
/// [`AdsServer::push`], and read [`AdsServer::syncz`] and [`AdsServer::metrics`].
pub struct AdsServer<G: Generator> {
    core: Arc<Core>,
    generator: Arc<G>,
}

impl<G: Generator> Clone for AdsServer<G> {
    fn clone(&self) -> Self {
        AdsServer {
            core: self.core.clone(),
            generator: self.generator.clone(),
        }
    }
}

impl<G: Generator> AdsServer<G> {
    /// A server generating resources with `generator`.
    pub fn new(generator: Arc<G>, options: AdsOptions) -> Self {
        let (pushes, _) = broadcast::channel(options.push_buffer.max(1));
        let push_permits = Arc::new(tokio::sync::Semaphore::new(
            options.max_concurrent_pushes.max(1),
        ));
        let inflight_permits = Arc::new(tokio::sync::Semaphore::new(
            options.max_streams_in_flight.max(1),
        ));
        AdsServer {
            core: Arc::new(Core {
                push_permits,
                inflight_permits,
                options,
                counters: metrics::Counters::default(),
                version: AtomicU64::new(0),
                pushes,
                connections: Mutex::new(BTreeMap::new()),
                next_conn: AtomicU64::new(1),
                names: intern::Interner::default(),
                ready: std::sync::atomic::AtomicBool::new(true),
                draining: std::sync::atomic::AtomicBool::new(false),
                closers: Mutex::new(BTreeMap::new()),
            }),
            generator,
        }
    }

    /// Announces a push to every connection. Returns at once; each connection applies it when
    /// its previous push is ACKed.
    pub fn push(&self, request: PushRequest) {
        self.core
            .version
            .fetch_max(request.version, Ordering::Relaxed);
        metrics::incr(&self.core.counters.pushes);
        let event = Arc::new(PushEvent {
            request,
            created: Instant::now(),
        });
        // An error only means no stream is connected: nobody to tell.
        let _ = self.core.pushes.send(event);
    }

    /// Opens or closes the door to new streams. A server that is not ready refuses every new
    /// stream with `UNAVAILABLE` (as istiod does until its caches have synced), so a proxy
    /// retries with backoff instead of receiving a partial mesh that would remove the clusters
    /// and listeners it is serving with. Open streams are not affected. Ready by default.
    pub fn set_ready(&self, ready: bool) {
        self.core.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether new streams are accepted: ready, and not draining.
    pub fn is_ready(&self) -> bool {
        self.core.ready.load(Ordering::SeqCst) && !self.is_draining()
    }

    /// Whether [`AdsServer::drain`] has started: the server refuses new streams for good.
    pub fn is_draining(&self) -> bool {
        self.core.draining.load(Ordering::SeqCst)
    }

    /// The tonic service to add to a `tonic::transport::Server`.
    pub fn service(&self) -> AdsService<G> {
        AdsService::new(self.clone(), self.core.options.max_request_bytes)
    }

    /// Status of every open stream, ordered by connection.
    pub fn syncz(&self) -> Vec<ConnectionStatus> {
        // Clone the handles first so no two locks are held together.
        let handles: Vec<_> = self
            .core
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        handles
            .iter()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.core.counters.snapshot()
    }

    /// Calls `f` with the status of every open stream, without copying them (a scrape reads
    /// every connection; [`AdsServer::syncz`] would clone each proxy). Each status is locked
    /// only while `f` runs on it.
    pub fn visit_connections(&self, mut f: impl FnMut(&ConnectionStatus)) {
        let handles: Vec<_> = self
            .core
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for h in handles {
            f(&h.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    pub(crate) fn spawn<P: Protocol>(
        &self,
        requests: requests::Requests<P::Request>,
        gate: Option<authz::Gate>,
    ) -> (mpsc::Receiver<Result<P::Response, Status>>, wire::Unsent) {
        let requests = requests.recording_largest(self.core.counters.recv_max.clone());
        let (tx, rx) = mpsc::channel(self.core.options.send_buffer.max(1));
        let unsent = wire::Unsent::default();
        let conn = self.core.next_conn.fetch_add(1, Ordering::Relaxed);
        let span =
            tracing::info_span!("ads", conn, delta = P::DELTA, proxy = tracing::field::Empty);
        let generator: Arc<dyn Generator> = self.generator.clone();
        let task = connection::serve::<P>(
            self.core.clone(),
            generator,
            conn,
            requests,
            gate,
            connection::Outbound {
                tx,
                unsent: unsent.clone(),
            },
            self.core.pushes.subscribe(),
        );
        tokio::spawn(task.instrument(span));
        (rx, unsent)
    }
}
