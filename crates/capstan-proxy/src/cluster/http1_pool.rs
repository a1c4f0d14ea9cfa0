//! A cluster's HTTP/1.1 upstream connections, kept idle per endpoint (and transport socket) and
//! reused most recently used first, as Envoy's HTTP/1 connection pool does. A plain request is
//! sent with the proxy's own client codec ([`super::http1_codec`]); one it does not take
//! (an upgrade, `CONNECT`, `Expect`, request trailers) with hyper's `client::conn::http1`,
//! which takes the connection over for good (the pool holds both kinds).
//!
//! It replaces hyper-util's legacy client for HTTP/1, whose per-request costs showed in the
//! proxy's profile (docs/benchmarks.md): a pool key built and hashed per request, a boxed connect
//! future raced against the checkout, and a task spawned per response to put the connection back.
//! Here a connection goes back to the idle list when its response body ends (at once when the
//! response has none); one whose body is dropped unfinished is closed. A connection is
//! retired after `max_requests_per_connection` requests and closed after `idle_timeout` idle.
//! When `max_connections` are open, a request waits, as one of Envoy's pending requests (up to
//! `max_pending_requests` of them, up to the connect timeout), for a connection to become idle
//! or to close. A request that finds its reused connection closed before anything was written
//! is sent again on another one, as the legacy client did.
//!
//! No connection has a task of its own: the codec's reads and writes, or hyper's connection
//! future, are polled by the request using it, alongside the request until the response head
//! arrives, then by the response body until it ends, all in the downstream connection's task
//! (hyper's: [`super::http1_link`]). A spawned connection task cost task polls and cross-task
//! wake-ups per request (docs/benchmarks.md). An idle connection is not polled unless woken: a
//! peer's close wakes the pool's idle watcher, which polls it and drops it (hyper's ends, as
//! the connection's own task did). A close not yet seen when the next request comes is seen
//! when the connection is taken (the codec's) or by that request's first poll (hyper hands the
//! request back unwritten); either way the request goes on another connection, as above. Only
//! an upgraded connection (`101`, or a `2xx` to `CONNECT`) and the rare one returned before its
//! request is all written (a request body still being written after the response ended) get a
//! task.

use super::breaker::Resource;
use super::http1_codec::decode::Decoder;
use super::http1_codec::Connection;
use super::http1_link::Link;
use super::pool::{ConnectError, Pool, Tracked};
use super::{Outgoing, UpstreamError};
use crate::fast_map::FastMap;
use crate::http::BoxBody;
pub use body::UpstreamBody;
use body::{Inner, OwnReturning, Returning};
use hyper::body::Body;
use hyper::client::conn::http1::SendRequest;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[path = "http1_body.rs"]
mod body;

/// An endpoint and the transport-socket index its connections use.
type Key = (SocketAddr, usize);

/// An open connection.
struct Conn {
    kind: Kind,
    /// Requests sent on it so far.
    uses: u32,
}

/// Whose codec a connection speaks.
enum Kind {
    /// The plain codec's (boxed: moving a connection in and out of the pool and into a
    /// response body moves a pointer).
    Own(Box<Connection<Tracked>>),
    /// hyper's: its request sender and the connection's I/O.
    Hyper { tx: SendRequest<BoxBody>, io: Link },
}

impl Conn {
    /// Whether it is known to have ended.
    fn ended(&self) -> bool {
        match &self.kind {
            Kind::Own(_) => false,
            Kind::Hyper { tx, io } => io.ended() || tx.is_closed(),
        }
    }

    /// Whether it turns out closed as it leaves the pool.
    fn closed(&mut self) -> bool {
        match &mut self.kind {
            Kind::Own(c) => c.closed(),
            Kind::Hyper { tx, io } => {
                if tx.is_closed() {
                    return true;
                }
                io.unpool();
                false
            }
        }
    }

    /// It goes idle in the pool; false when it turns out closed.
    fn pool(&mut self) -> bool {
        match &mut self.kind {
            Kind::Own(c) => c.watch(),
            Kind::Hyper { io, .. } => {
                io.pool();
                true
            }
        }
    }

    /// For the idle watcher: true when a woken idle connection has ended.
    fn reap(&mut self) -> bool {
        match &mut self.kind {
            Kind::Own(c) => c.reap(),
            Kind::Hyper { io, .. } => io.reap(),
        }
    }
}

/// Drives hyper's connection until it can take a request: false when it ended instead.
async fn hyper_ready(tx: &mut SendRequest<BoxBody>, io: &mut Link) -> bool {
    std::future::poll_fn(|cx| {
        io.drive(cx, true, |cx| tx.poll_ready(cx))
            .map(|r| r.is_ok())
    })
    .await
}

/// An open connection not carrying a request.
struct Idle {
    conn: Conn,
    /// When it last went idle.
    since: Instant,
}

#[derive(Default)]
struct State {
    /// Idle connections by endpoint, the most recently used last.
    idle: FastMap<Key, Vec<Idle>>,
    /// The idle watcher runs ([`sweep`]).
    sweeping: bool,
}

/// The HTTP/1.1 connections of one cluster.
pub struct Http1Pool {
    state: Mutex<State>,
    /// Fires when a connection goes idle, for requests waiting at `max_connections`.
    returned: tokio::sync::Notify,
    /// How many requests wait on `returned` (no notification is paid for when none do).
    waiting: AtomicUsize,
    /// Fires when an idle connection is woken (see [`sweep`]).
    stirred: Arc<tokio::sync::Notify>,
    idle_timeout: Option<Duration>,
    max_requests: Option<u32>,
    /// Idle connections are kept for at most this many endpoints.
    max_endpoints: usize,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool")
            .field("idle_timeout", &self.idle_timeout)
            .field("max_requests", &self.max_requests)
            .finish_non_exhaustive()
    }
}

/// Clears `waiting` again however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Http1Pool {
    /// An empty pool.
    pub fn new(
        idle_timeout: Option<Duration>,
        max_requests: Option<u32>,
        max_endpoints: usize,
    ) -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            state: Mutex::new(State::default()),
            returned: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
            stirred: Arc::default(),
            idle_timeout,
            max_requests,
            max_endpoints,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("http1 pool lock is never poisoned: no panics under it")
    }

    /// The most recently used open idle connection of `key`.
    fn take_idle(&self, key: Key) -> Option<Idle> {
        loop {
            let mut stale = Vec::new();
            let mut found = {
                let mut state = self.lock();
                let list = state.idle.get_mut(&key)?;
                let found = list.pop();
                if found
                    .as_ref()
                    .is_some_and(|c| self.idle_timeout.is_some_and(|t| c.since.elapsed() >= t))
                {
                    // Older ones went idle earlier: expired too.
                    stale.append(list);
                    stale.extend(found);
                    None
                } else {
                    found
                }
            }?;
            // Dropped outside the lock: each closes its connection.
            drop(stale);
            // Checked outside the lock: the codec's check reads the socket.
            if !found.conn.closed() {
                return Some(found);
            }
        }
    }

    /// Puts a connection whose response has ended back on the idle list, unless it has served
    /// `max_requests_per_connection` (dropping it closes it) or has ended. One hyper has not
    /// finished with (a request body still being written) gets a task until it has.
    fn release(self: &Arc<Self>, key: Key, mut conn: Conn) {
        if self.max_requests.is_some_and(|m| conn.uses >= m) || conn.ended() {
            return;
        }
        let finished = match &conn.kind {
            Kind::Own(c) => !c.sending(),
            Kind::Hyper { tx, .. } => tx.is_ready(),
        };
        if !finished {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                let ready = match &mut conn.kind {
                    Kind::Own(c) => std::future::poll_fn(|cx| c.poll_send(cx)).await.is_ok(),
                    Kind::Hyper { tx, io } => hyper_ready(tx, io).await,
                };
                if ready {
                    if let Some(pool) = pool.upgrade() {
                        pool.release(key, conn);
                    }
                }
            });
            return;
        }
        if matches!(&conn.kind, Kind::Own(c) if !c.reusable()) || !conn.pool() {
            return;
        }
        let mut dropped = None;
        let start_sweeper = {
            let mut state = self.lock();
            // ORIGINAL_DST clusters see arbitrary destinations: past the bound, start again.
            if state.idle.len() >= self.max_endpoints && !state.idle.contains_key(&key) {
                dropped = Some(std::mem::take(&mut state.idle));
            }
            state.idle.entry(key).or_default().push(Idle {
                conn,
                since: Instant::now(),
            });
            let start = !state.sweeping;
            state.sweeping = true;
            start
        };
        drop(dropped);
        if start_sweeper {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep(
                    Arc::downgrade(self),
                    self.idle_timeout,
                    self.stirred.clone(),
                ));
            } else {
                self.lock().sweeping = false;
            }
        }
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.returned.notify_waiters();
        }
    }

    /// Drops the idle connections of endpoints not kept (an endpoint update).
    pub fn retain(&self, keep: &dyn Fn(&SocketAddr) -> bool) {
        let dropped: Vec<_> = {
            let mut state = self.lock();
            let gone: Vec<Key> = state
                .idle
                .keys()
                .filter(|(a, _)| !keep(a))
                .copied()
                .collect();
            gone.into_iter()
                .filter_map(|k| state.idle.remove(&k))
                .collect()
        };
        drop(dropped);
    }

    /// An idle connection of `key`, else a new one; when `max_connections` are open, waits (as a
    /// pending request) for one to go idle or close, up to the connect timeout. The flag says
    /// whether the connection was used before.
    async fn checkout(&self, key: Key, pool: &Pool) -> Result<(Conn, bool), UpstreamError> {
        if let Some(c) = self.take_idle(key) {
            return Ok((c.conn, true));
        }
        // Waiting, dialing (TLS included) and the handshake get a box of their own: inline,
        // their futures would enlarge every request's future, which is copied as it is moved.
        Box::pin(self.checkout_slow(key, pool)).await
    }

    /// [`Self::checkout`] when no idle connection is at hand.
    async fn checkout_slow(&self, key: Key, pool: &Pool) -> Result<(Conn, bool), UpstreamError> {
        let breaker = pool.breaker();
        let permit = match breaker.try_acquire(Resource::Connections) {
            Some(p) => p,
            None => {
                pool.stats().upstream_cx_overflow.inc();
                let _pending = breaker
                    .try_acquire(Resource::Pending)
                    .ok_or(UpstreamError::Overflow)?;
                let deadline = tokio::time::Instant::now() + pool.config().connect_timeout;
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let _waiting = Waiting(&self.waiting);
                loop {
                    let returned = self.returned.notified();
                    let released = breaker.connection_released();
                    tokio::pin!(returned, released);
                    returned.as_mut().enable();
                    released.as_mut().enable();
                    if let Some(c) = self.take_idle(key) {
                        return Ok((c.conn, true));
                    }
                    if let Some(p) = breaker.try_acquire(Resource::Connections) {
                        break p;
                    }
                    tokio::select! {
                        _ = returned => {}
                        _ = released => {}
                        _ = tokio::time::sleep_until(deadline) => return Err(UpstreamError::Overflow),
                    }
                }
            }
        };
        let io = pool
            .connector(key.0, key.1)
            .dial(permit)
            .await
            .map_err(|e| match e {
                ConnectError::Overflow => UpstreamError::Overflow,
                ConnectError::Failed(m) => UpstreamError::ConnectFailure(m),
            })?;
        let conn = Box::new(Connection::new(io, self.stirred.clone()));
        Ok((
            Conn {
                kind: Kind::Own(conn),
                uses: 0,
            },
            false,
        ))
    }

    /// Sends the request (origin-form, with its Host header) on a connection to `key`: a plain
    /// one ([`super::http1_codec::takes`]) on an idle connection of the proxy's codec, written
    /// from the lent head, anything else with hyper's client.
    pub async fn send(
        self: &Arc<Self>,
        key: Key,
        pool: &Pool,
        out: Outgoing<'_>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        // hyper's path (upgrades, trailers, `Expect`, HTTP/1.0, a connection hyper took over
        // before) is rare and its futures are large: boxed, so that every request's future,
        // which is copied as it is moved, stays small.
        if !super::http1_codec::takes(out.head, &out.body) {
            return Box::pin(self.send_hyper(key, pool, out.into_request(), None)).await;
        }
        let (conn, reused) = self.checkout(key, pool).await?;
        let Conn { kind, uses } = conn;
        let mut c = match kind {
            Kind::Own(c) => c,
            kind => {
                let first = Some((Conn { kind, uses }, reused));
                return Box::pin(self.send_hyper(key, pool, out.into_request(), first)).await;
            }
        };
        c.start(out);
        let head = std::future::poll_fn(|cx| c.poll_head(cx))
            .await
            .map_err(|e| reset(&e))?;
        let (parts, ()) = head.response.into_parts();
        let mut body = UpstreamBody(Inner::Own {
            decoder: Decoder::new(head.framing),
            // A `101` nobody asked for (the codec takes no upgrade) ends the connection.
            conn: (!head.upgrade).then(|| OwnReturning {
                pool: Arc::downgrade(self),
                key,
                conn: c,
                uses: uses + 1,
            }),
        });
        if body.is_end_stream() {
            body.release();
        }
        Ok(http::Response::from_parts(parts, body))
    }

    /// Sends `req` with hyper's client on a connection to `key`: `first` if given, else one
    /// checked out (an idle connection of the proxy's codec is handed to hyper).
    async fn send_hyper(
        self: &Arc<Self>,
        key: Key,
        pool: &Pool,
        mut req: http::Request<BoxBody>,
        mut first: Option<(Conn, bool)>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        loop {
            let (Conn { kind, uses }, reused) = match first.take() {
                Some(c) => c,
                None => self.checkout(key, pool).await?,
            };
            let (mut tx, mut io) = match kind {
                // hyper takes the connection over (nothing is buffered on an idle one).
                Kind::Own(c) => handshake(c.into_io(), self.stirred.clone()).await?,
                Kind::Hyper { tx, io } => (tx, io),
            };
            // A reused connection is returned ready; should it not be, it is driven until it is.
            if reused && !tx.is_ready() && !hyper_ready(&mut tx, &mut io).await {
                continue;
            }
            let connect = req.method() == http::Method::CONNECT;
            let mut sent = pin!(tx.try_send_request(req));
            let sent =
                std::future::poll_fn(|cx| io.drive(cx, false, |cx| sent.as_mut().poll(cx))).await;
            match sent {
                Ok(resp)
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                        || (connect && resp.status().is_success()) =>
                {
                    // The connection is the upgrade's now: its future hands the socket over to
                    // the response's `OnUpgrade` in a task of its own, the sender kept alive
                    // until then (as the legacy client kept it).
                    if let Some(driver) = io.driver.take() {
                        tokio::spawn(async move {
                            let _tx = tx;
                            if let Err(e) = driver.into_inner().await {
                                tracing::debug!("upstream connection: {e}");
                            }
                        });
                    }
                    return Ok(resp.map(UpstreamBody::new));
                }
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let mut body = UpstreamBody(Inner::Hyper {
                        body,
                        conn: (!io.ended()).then(|| Returning {
                            pool: Arc::downgrade(self),
                            key,
                            tx,
                            io,
                            uses: uses + 1,
                        }),
                    });
                    if body.is_end_stream() {
                        body.release();
                    }
                    return Ok(http::Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Nothing was written: the idle connection had closed. Another one.
                    Some(r) if reused => req = r,
                    _ => return Err(reset(&e.into_error())),
                },
            }
        }
    }
}

/// The HTTP/1.1 handshake (no I/O). The connection closes, releasing its `max_connections`
/// permit, when its future ends or is dropped.
async fn handshake(
    io: Tracked,
    stirred: Arc<tokio::sync::Notify>,
) -> Result<(SendRequest<BoxBody>, Link), UpstreamError> {
    let (tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| reset(&e))?;
    Ok((tx, Link::new(Box::pin(conn.with_upgrades()), stirred)))
}

/// A failure after the connection was made, with its causes.
fn reset(e: &(dyn std::error::Error + 'static)) -> UpstreamError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    UpstreamError::Reset(msg)
}

/// The pool's idle watcher, while it has idle connections: closes those idle for `timeout`
/// (checked every `timeout`, as hyper-util's pool does), and polls those woken while idle (a
/// peer's close, which hyper then ends them on, as a connection's own task did). Stops when
/// the pool is gone or has nothing idle.
async fn sweep(
    pool: Weak<Http1Pool>,
    timeout: Option<Duration>,
    stirred: Arc<tokio::sync::Notify>,
) {
    // Without an idle timeout, whether the pool is still there is checked now and then.
    let every = timeout.map_or(Duration::from_secs(60), |t| {
        t.max(Duration::from_millis(100))
    });
    let mut next = tokio::time::Instant::now() + every;
    loop {
        let expire = tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                next += every;
                timeout
            }
            _ = stirred.notified() => None,
        };
        let Some(pool) = pool.upgrade() else { return };
        let gone: Vec<Idle> = {
            let mut state = pool.lock();
            let mut gone = Vec::new();
            for list in state.idle.values_mut() {
                if let Some(timeout) = expire {
                    // Oldest first: expired ones are a prefix.
                    let n = list
                        .iter()
                        .take_while(|c| c.since.elapsed() >= timeout)
                        .count();
                    gone.extend(list.drain(..n));
                }
                let mut i = 0;
                while i < list.len() {
                    if list[i].conn.reap() {
                        gone.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            state.idle.retain(|_, l| !l.is_empty());
            if state.idle.is_empty() {
                state.sweeping = false;
                drop(state);
                return;
            }
            gone
        };
        drop(gone);
    }
}
