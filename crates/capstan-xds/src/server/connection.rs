//! One ADS stream: the task that reads requests, receives push announcements, and writes
//! responses, with the bookkeeping both protocols share (nonces, ACK/NACK, status, metrics).
//!
//! The protocol state machines ([`super::sotw`], [`super::delta`]) are synchronous: they turn a
//! request or a push into responses. This module owns everything that waits: the request stream,
//! the push broadcast, the ACK timeout and the bounded outbound channel.

use super::metrics::{incr, Counters};
use super::requests::Requests;
use super::status::{now_unix_ms, ConnectionStatus, NackStatus, TypeStatus};
use super::wire::Wire;
use super::{Core, PushEvent};
use crate::generate::{Generator, PushRequest, Subscription};
use crate::proxy::{Proxy, ProxyError, ProxyType};
use crate::resource::{is_xds_type, Resource, PUSH_ORDER};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use tracing::{debug, info, warn};

/// A protocol state machine (SotW or Delta) driven by [`serve`].
pub(crate) trait Protocol: Default + Send + 'static {
    /// Request message of the stream.
    type Request: prost::Message + Default + Send + 'static;
    /// Response message of the stream.
    type Response: super::wire::Wire;
    /// True for Delta (shown in syncz).
    const DELTA: bool;
    /// The node of a request (only the first request of a stream must carry one).
    fn node(req: &Self::Request) -> Option<&Node>;
    /// The type URL a request is about.
    fn type_url(req: &Self::Request) -> &str;
    /// Handles one request; an error closes the stream with that status.
    fn on_request(
        &mut self,
        cx: &mut Ctx,
        req: Self::Request,
    ) -> Result<Vec<Self::Response>, Status>;
    /// Handles one (possibly merged) push, returning what changed, in [`PUSH_ORDER`] and then
    /// the generator's extra types. Envoy's xDS types are regenerated only when `affected`
    /// (the generator's [`Generator::affects`]); extra types whenever the push needs them.
    fn on_push(&mut self, cx: &mut Ctx, push: &PushRequest, affected: bool) -> Vec<Self::Response>;
    /// The ACK trackers of all types (to expire them at the ACK timeout).
    fn tracks(&mut self) -> Vec<&mut Track>;
    /// When the oldest response still waiting for its ACK was sent (`None`: everything sent
    /// was acknowledged). Runs at every turn of the stream's loop, so it allocates nothing.
    fn earliest_awaiting(&self) -> Option<Instant>;
}

/// ACK bookkeeping of one type on one stream.
#[derive(Debug, Default)]
pub(crate) struct Track {
    /// Nonce of the last response sent (empty: nothing sent yet).
    pub nonce: String,
    /// Version of the last response sent.
    pub version: String,
    /// Set while the last response waits for its ACK or NACK.
    pub awaiting_since: Option<Instant>,
}

/// How a request relates to the last response of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// No nonce: an initial request (or a client starting over).
    Fresh,
    /// Accepts the last response.
    Ack,
    /// Rejects the last response.
    Nack,
    /// Answers an older response: Envoy semantics say ignore it.
    Stale,
}

/// The static copy of a type URL the server serves: Envoy's xDS types, then the generator's.
fn known_type(generator: &dyn Generator, type_url: &str) -> Option<&'static str> {
    PUSH_ORDER
        .into_iter()
        .chain(generator.extra_types().iter().copied())
        .find(|t| *t == type_url)
}

/// Whether a stream whose node is not a proxy's may still be served: it names itself (an id
/// of bounded length) and starts with a type that needs no proxy.
fn config_client(generator: &dyn Generator, node: Option<&Node>, type_url: &str) -> Option<Proxy> {
    let extra = known_type(generator, type_url).is_some_and(|t| !is_xds_type(t));
    extra.then(|| Proxy::config_client(node).ok()).flatten()
}

/// What the protocol state machines may use: the proxy, the generator, status and metrics.
pub(crate) struct Ctx {
    pub proxy: Proxy,
    generator: Arc<dyn Generator>,
    core: Arc<Core>,
    status: Arc<Mutex<ConnectionStatus>>,
    conn: u64,
    next_nonce: u64,
    /// A NACK arrived since the current push was sent (its convergence is not recorded).
    push_nacked: bool,
    /// Why the node is not a proxy's, for a config client: Envoy's types are refused with it.
    not_a_proxy: Option<ProxyError>,
    /// The stream is on an authorizing service (the TLS port).
    gated: bool,
    /// Generation time of each type generated since the last responses were sent (their
    /// `pilot_xds_push_time` is generation plus hand-over, as istiod measures it).
    built: Vec<(&'static str, Duration)>,
}

impl Ctx {
    /// Fails with `resource_exhausted` when a request names more resources than allowed.
    pub fn check_names(&self, type_url: &str, count: usize) -> Result<(), Status> {
        let max = self.core.options.max_resource_names;
        if count > max {
            incr(&self.core.counters.rejected_streams);
            return Err(Status::resource_exhausted(format!(
                "request for {type_url} names {count} resources; at most {max} are accepted"
            )));
        }
        Ok(())
    }

    /// The static copy of `type_url` when the server serves it.
    pub fn known_type(&self, type_url: &str) -> Option<&'static str> {
        known_type(self.generator.as_ref(), type_url)
    }

    /// Whether this stream may subscribe to `type_url`. Envoy's xDS types need a proxy's node
    /// (a config client asking for one is refused as a bad node would have been at once); the
    /// other types serve Istio config of every namespace, which the authorizing (TLS) service,
    /// whose callers are workloads proven for their own namespaces, does not hand out.
    pub fn admit(&self, type_url: &str) -> Result<(), Status> {
        let refuse = |status: Status| {
            incr(&self.core.counters.rejected_streams);
            Err(status)
        };
        if is_xds_type(type_url) {
            if let Some(e) = &self.not_a_proxy {
                return refuse(Status::invalid_argument(format!("invalid node: {e}")));
            }
        } else if self.gated {
            return refuse(Status::permission_denied(format!(
                "{type_url} is served on the plaintext xDS port only: it carries the config \
                 of every namespace, and this port authorizes workloads for their own"
            )));
        }
        Ok(())
    }

    /// The shared copies of subscribed names.
    pub fn interner(&self) -> &super::intern::Interner {
        &self.core.names
    }

    /// The push a request is answered from: the current state, everything.
    pub fn request_push(&self) -> PushRequest {
        PushRequest {
            version: self.core.version.load(Ordering::Relaxed),
            full: true,
            ..PushRequest::default()
        }
    }

    /// Generates `type_url` for the proxy, keeping only wanted resources. On error: log, count,
    /// and return `None` so the proxy keeps what it has.
    pub fn generate(
        &mut self,
        type_url: &str,
        sub: &Subscription,
        push: &PushRequest,
    ) -> Option<Vec<Arc<Resource>>> {
        let started = Instant::now();
        match self.generator.generate(&self.proxy, type_url, sub, push) {
            Ok(mut resources) => {
                resources.retain(|r| sub.wants_resource(r));
                if let Some(t) = self.known_type(type_url) {
                    self.built.push((t, started.elapsed()));
                }
                Some(resources)
            }
            Err(e) => {
                incr(&self.core.counters.generation_errors);
                warn!(proxy = %self.proxy.id, type_url, error = %e,
                    "generation failed; the proxy keeps its last config for this type");
                None
            }
        }
    }

    /// Classifies a request against the type's last response and records an ACK or NACK.
    pub fn reply(
        &mut self,
        type_url: &str,
        track: &mut Track,
        nonce: &str,
        error: Option<&RpcStatus>,
    ) -> Reply {
        if nonce.is_empty() || track.nonce.is_empty() {
            return Reply::Fresh;
        }
        if nonce != track.nonce {
            debug!(type_url, nonce, latest = %track.nonce, "ignoring a request with a stale nonce");
            self.core.counters.record_expired_nonce(type_url);
            return Reply::Stale;
        }
        track.awaiting_since = None;
        match error {
            None => {
                let version = track.version.clone();
                self.update(type_url, |t| t.last_acked_version = version);
                Reply::Ack
            }
            Some(e) => {
                self.core.counters.record_reject(type_url);
                self.push_nacked = true;
                warn!(proxy = %self.proxy.id, type_url, nonce, version = %track.version,
                    message = %e.message, "proxy rejected (NACK) a response; it keeps its last accepted config");
                let nack = NackStatus {
                    message: e.message.clone(),
                    code: e.code,
                    nonce: nonce.to_string(),
                    version: track.version.clone(),
                    at_unix_ms: now_unix_ms(),
                };
                self.update(type_url, |t| t.last_nack = Some(nack));
                Reply::Nack
            }
        }
    }

    /// Records a response about to be sent and returns its fresh nonce.
    pub fn sent(
        &mut self,
        type_url: &str,
        track: &mut Track,
        version: String,
        resources: usize,
    ) -> String {
        self.next_nonce += 1;
        let nonce = format!("{:x}-{}", self.conn, self.next_nonce);
        track.nonce = nonce.clone();
        track.version = version.clone();
        track.awaiting_since = Some(Instant::now());
        self.update(type_url, |t| {
            t.last_sent_version = version;
            t.last_sent_nonce = nonce.clone();
            t.last_response_resources = resources;
            t.resources_sent += resources as u64;
            t.responses_sent += 1;
        });
        nonce
    }

    /// Records what the proxy subscribes to.
    pub fn subscribed(&self, type_url: &str, sub: &Subscription) {
        self.update(type_url, |t| {
            t.wildcard = sub.wildcard;
            t.subscribed_names = sub.names.len();
        });
    }

    fn update(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before inserting: most updates are for a type already present, and this
        // runs for every response and every ACK.
        if let Some(t) = status.types.get_mut(type_url) {
            f(t);
        } else {
            f(status.types.entry(type_url.to_string()).or_default());
        }
    }
}

/// Removes the connection from syncz and the gauge however the task ends.
struct Registration {
    core: Arc<Core>,
    conn: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.core
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.conn);
        self.core
            .closers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.conn);
        self.core
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outbound side of a stream: the channel to its response body, and the bytes that body
/// holds (see [`super::wire::Unsent`]).
pub(crate) struct Outbound<R> {
    pub tx: mpsc::Sender<Result<R, Status>>,
    pub unsent: super::wire::Unsent,
}

/// Sends one response, bounded by the send timeout. False: stop serving this stream (the
/// client went away, or does not read and would otherwise hold this task forever).
async fn send<R: Wire>(
    core: &Core,
    out: &Outbound<R>,
    resp: R,
    built: Duration,
    proxy: &str,
) -> bool {
    let bytes = resp.encoded_len() as u64;
    let type_url = resp.type_url();
    let started = Instant::now();
    // Counted before it is handed over, so the body never takes off more than was added.
    out.unsent.handed(bytes as usize + 5);
    match tokio::time::timeout(core.options.send_timeout, out.tx.send(Ok(resp))).await {
        Ok(Ok(())) => {
            let sent = started.elapsed();
            core.counters.record_sent(type_url, bytes, built, sent);
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            incr(&core.counters.send_timeouts);
            warn!(proxy, timeout = ?core.options.send_timeout,
                "proxy does not read its responses; closing the stream");
            false
        }
    }
}

/// Sends `responses` in order; `built` holds their types' generation times.
async fn send_all<R: Wire>(
    core: &Core,
    out: &Outbound<R>,
    responses: Vec<R>,
    mut built: Vec<(&'static str, Duration)>,
    counter: &std::sync::atomic::AtomicU64,
    proxy: &str,
) -> bool {
    for resp in responses {
        let took = match built.iter().position(|(t, _)| *t == resp.type_url()) {
            Some(i) => built.swap_remove(i).1,
            None => Duration::ZERO,
        };
        if !send(core, out, resp, took, proxy).await {
            return false;
        }
        incr(counter);
    }
    true
}

/// Ends a stream the server drains: only a drain closes; a dropped sender (never) would end
/// the stream the same way.
async fn drained<R>(
    core: &Core,
    tx: &mpsc::Sender<Result<R, Status>>,
    closing: Result<Status, tokio::sync::oneshot::error::RecvError>,
    proxy: &str,
) {
    let status = closing.unwrap_or_else(|_| Status::unavailable(super::drain::SHUTTING_DOWN));
    info!(proxy, %status, "closing the ADS stream: the server drains");
    let _ = tokio::time::timeout(core.options.send_timeout, tx.send(Err(status))).await;
}

/// Waits for a permit to have responses in flight (see `max_streams_in_flight`); `None`: the
/// server drained the stream meanwhile (it is closed).
async fn admit_in_flight<R>(
    core: &Core,
    tx: &mpsc::Sender<Result<R, Status>>,
    close: &mut tokio::sync::oneshot::Receiver<Status>,
    proxy: &str,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        // The semaphore is never closed, so acquiring only fails if it were.
        permit = core.inflight_permits.clone().acquire_owned() => permit.ok(),
        closing = close => {
            drained(core, tx, closing, proxy).await;
            None
        }
    }
}

/// A timer kept across the turns of a stream's loop and moved only when its deadline moves.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<tokio::time::Instant>,
}

impl Timer {
    fn new() -> Timer {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(far)),
            armed: None,
        }
    }

    /// Sets the deadline (`None`: the caller does not poll [`Timer::fired`]).
    fn arm(&mut self, deadline: Option<tokio::time::Instant>) {
        if let Some(at) = deadline {
            if self.armed != Some(at) {
                self.sleep.as_mut().reset(at);
                self.armed = Some(at);
            }
        }
    }

    /// Completes at the deadline; it must be armed again after (a fired timer stays ready).
    async fn fired(&mut self) {
        (&mut self.sleep).await;
        self.armed = None;
    }
}

/// Serves one stream until the client closes it, breaks a rule, or stops reading.
pub(crate) async fn serve<P: Protocol>(
    core: Arc<Core>,
    generator: Arc<dyn Generator>,
    conn: u64,
    mut requests: Requests<P::Request>,
    gate: Option<super::authz::Gate>,
    out: Outbound<P::Response>,
    mut pushes: broadcast::Receiver<Arc<PushEvent>>,
) {
    let tx = &out.tx;
    let first = match requests.message().await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(status) => {
            debug!(%status, "stream failed before its first request");
            return;
        }
    };
    let node = P::node(&first);
    let parsed = Proxy::from_node(node).map_err(|e| {
        // Not a proxy: still served as a config client if it only wants config types.
        match config_client(generator.as_ref(), node, P::type_url(&first)) {
            Some(client) => Ok((client, e)),
            None => Err(e),
        }
    });
    let (mut proxy, not_a_proxy) = match parsed {
        Ok(proxy) => (proxy, None),
        Err(Ok((client, e))) => {
            info!(node = %client.id, reason = %e, "serving a config client (not a proxy)");
            (client, Some(e))
        }
        Err(Err(e)) => {
            incr(&core.counters.rejected_streams);
            warn!(error = %e, "refusing an ADS stream: bad node");
            let status = Status::invalid_argument(format!("invalid node: {e}"));
            // The client may not read; do not wait for it longer than for any response.
            let _ = tokio::time::timeout(core.options.send_timeout, tx.send(Err(status))).await;
            return;
        }
    };
    let gated = gate.is_some();
    if let Some(gate) = gate {
        if let Err(refusal) = gate.check(&proxy) {
            incr(&core.counters.rejected_streams);
            warn!(proxy = %proxy.id, status = %refusal, "refusing an ADS stream: not authorized");
            let _ = tokio::time::timeout(core.options.send_timeout, tx.send(Err(refusal))).await;
            return;
        }
        proxy.authenticated = gate.authenticated();
    }
    tracing::Span::current().record("proxy", proxy.id.as_str());
    let status = Arc::new(Mutex::new(ConnectionStatus {
        proxy_id: proxy.id.clone(),
        connection_id: format!("{}-{}", proxy.id, conn),
        delta: P::DELTA,
        connected_since_unix_ms: now_unix_ms(),
        proxy: proxy.clone(),
        types: BTreeMap::new(),
    }));
    core.connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(conn, status.clone());
    incr(&core.counters.connections);
    incr(&core.counters.connections_total);
    // Registered after `connections`: a drain that lists a stream can always close it.
    let (closer, mut close) = tokio::sync::oneshot::channel::<Status>();
    core.closers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(conn, closer);
    let _registration = Registration {
        core: core.clone(),
        conn,
    };
    info!(proxy = %proxy.id, delta = P::DELTA, "ADS stream connected");

    let counters: &Counters = &core.counters;
    let mut cx = Ctx {
        proxy,
        generator,
        core: core.clone(),
        status,
        conn,
        next_nonce: 0,
        push_nacked: false,
        not_a_proxy,
        gated,
        built: Vec::new(),
    };
    let proxy_id = cx.proxy.id.clone();
    let mut proto = P::default();
    // Pushes that arrived while a response waited for its ACK, merged into one.
    let mut pending: Option<(PushRequest, Instant)> = None;
    // Creation time of the push whose ACKs are awaited (for convergence time).
    let mut inflight: Option<Instant> = None;
    let mut pushes_open = true;
    // Held while responses of this stream are unacknowledged (see `max_streams_in_flight`),
    // since the last send.
    let mut in_flight: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut in_flight_since = Instant::now();
    // While a permit is kept past the ACK timeout: the bytes the body held and since when it
    // has not passed any on.
    let mut stalled: Option<(usize, Instant)> = None;
    // The two deadlines' timers, made once and moved only when their deadline moves (a timer
    // made and dropped at every turn of this loop cost every proxy a timer registration per
    // push and per ACK).
    let mut permit_timer = Timer::new();
    let mut ack_timer = Timer::new();
    let mut next = Some(first);
    loop {
        if let Some(req) = next.take() {
            // Answering a request generates too (a reconnect storm is a push to everyone).
            let answered = {
                let Ok(_permit) = core.push_permits.clone().acquire_owned().await else {
                    return;
                };
                proto.on_request(&mut cx, req)
            };
            match answered {
                Ok(responses) => {
                    if !responses.is_empty() {
                        if in_flight.is_none() {
                            let admitted = admit_in_flight(&core, tx, &mut close, &proxy_id);
                            let Some(permit) = admitted.await else {
                                return;
                            };
                            in_flight = Some(permit);
                        }
                        in_flight_since = Instant::now();
                    }
                    let ok = send_all(
                        &core,
                        &out,
                        responses,
                        std::mem::take(&mut cx.built),
                        &counters.request_responses,
                        &proxy_id,
                    );
                    if !ok.await {
                        return;
                    }
                }
                Err(status) => {
                    warn!(proxy = %proxy_id, %status, "closing the ADS stream");
                    let wait = core.options.send_timeout;
                    let _ = tokio::time::timeout(wait, tx.send(Err(status))).await;
                    return;
                }
            }
        }
        if let Some(created) = inflight {
            if proto.earliest_awaiting().is_none() {
                if !cx.push_nacked {
                    counters.record_convergence(created.elapsed());
                }
                inflight = None;
            }
        }
        if proto.earliest_awaiting().is_none() {
            // Everything sent was acknowledged: nothing of this stream is in flight.
            in_flight = None;
            stalled = None;
            if let Some((push, created)) = pending.take() {
                cx.push_nacked = false;
                let responses = {
                    // Throttle: only so many connections generate a push at once. The
                    // semaphore is never closed, so acquiring only fails if it were.
                    let Ok(_permit) = core.push_permits.clone().acquire_owned().await else {
                        return;
                    };
                    counters.record_queue_time(created.elapsed());
                    let affected = cx.proxy.proxy_type != ProxyType::ConfigClient
                        && cx.generator.affects(&cx.proxy, &push);
                    proto.on_push(&mut cx, &push, affected)
                };
                if !responses.is_empty() {
                    inflight = Some(created);
                    let Some(permit) = admit_in_flight(&core, tx, &mut close, &proxy_id).await
                    else {
                        return;
                    };
                    in_flight = Some(permit);
                    in_flight_since = Instant::now();
                }
                let built = std::mem::take(&mut cx.built);
                if !send_all(
                    &core,
                    &out,
                    responses,
                    built,
                    &counters.push_responses,
                    &proxy_id,
                )
                .await
                {
                    return;
                }
            }
        }
        // Only a waiting push needs the ACK timeout: without one, a missing ACK harms nothing.
        let ack_deadline = pending
            .as_ref()
            .and(proto.earliest_awaiting())
            .map(|t| tokio::time::Instant::from_std(t + core.options.ack_timeout));
        // A proxy that does not acknowledge in time gives its permit back (its responses
        // still wait for it, bounded by the send buffer and the send timeout).
        let permit_deadline = in_flight
            .as_ref()
            .map(|_| tokio::time::Instant::from_std(in_flight_since + core.options.ack_timeout));
        permit_timer.arm(permit_deadline);
        ack_timer.arm(ack_deadline);
        tokio::select! {
            closing = &mut close => {
                drained(&core, tx, closing, &proxy_id).await;
                return;
            },
            () = permit_timer.fired(), if permit_deadline.is_some() => {
                // No ACK in time. The permit bounds what responses hold in this process, so it
                // is kept while the body still holds bytes: they leave as the proxy reads.
                let held = out.unsent.bytes();
                if held == 0 {
                    debug!(proxy = %proxy_id, timeout = ?core.options.ack_timeout,
                        "no ACK in time; its responses have left: no longer counted as in flight");
                    in_flight = None;
                    stalled = None;
                } else {
                    let now = Instant::now();
                    match stalled {
                        Some((before, since)) if held >= before => {
                            if now.duration_since(since) >= core.options.send_timeout {
                                incr(&counters.send_timeouts);
                                warn!(proxy = %proxy_id, timeout = ?core.options.send_timeout,
                                    "proxy does not read its responses; closing the stream");
                                return;
                            }
                        }
                        _ => stalled = Some((held, now)),
                    }
                    in_flight_since = now;
                }
            },
            msg = requests.message() => match msg {
                Ok(Some(req)) => next = Some(req),
                Ok(None) => {
                    info!(proxy = %proxy_id, "ADS stream closed by the proxy");
                    return;
                }
                Err(status) => {
                    debug!(proxy = %proxy_id, %status, "ADS stream failed");
                    return;
                }
            },
            event = pushes.recv(), if pushes_open => {
                let event = match event {
                    Ok(event) => (event.request.clone(), event.created),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // We do not know what the missed pushes covered: push everything.
                        debug!(proxy = %proxy_id, missed, "push announcements lagged; doing a full push");
                        let request = PushRequest {
                            version: core.version.load(Ordering::Relaxed),
                            full: true,
                            ..PushRequest::default()
                        };
                        (request, Instant::now())
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        pushes_open = false;
                        continue;
                    }
                };
                pending = Some(match pending.take() {
                    Some((queued, created)) => (queued.merge(event.0), created.min(event.1)),
                    None => event,
                });
            },
            () = ack_timer.fired(), if ack_deadline.is_some() => {
                let mut expired = 0;
                for track in proto.tracks() {
                    if track.awaiting_since.take().is_some() {
                        expired += 1;
                    }
                }
                core.counters.ack_timeouts.fetch_add(expired, Ordering::Relaxed);
                warn!(proxy = %proxy_id, timeout = ?core.options.ack_timeout,
                    "no ACK in time; sending the next push anyway");
                inflight = None;
            },
        }
    }
}
