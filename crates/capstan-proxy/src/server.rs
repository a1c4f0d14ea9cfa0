//! Accept loops, listener filters, filter-chain selection and hand-off to the HTTP connection
//! manager or the TCP proxy; draining on listener updates and on shutdown.
//!
//! Every listener of the snapshot is *active* (bound or not). Bound ones accept; a connection
//! accepted by a listener with `use_original_dst` (Istio's `virtualOutbound`) is handed to the
//! active listener whose address is the connection's original destination (exact address first,
//! then the wildcard address with that port), as Envoy does. Each version of a listener has its
//! own drain ([`crate::drain`]): when the version is replaced or removed, its connections finish
//! their in-flight requests and close, while new connections get the new version; what is left
//! when the drain window ends (upgraded streams, TCP sessions) is closed.

use crate::drain::{self, Drain, Drainer};
use crate::listener::{ConnectionInfo, ListenerConfig, NetworkFilter};
use crate::listener_filter::Enabled;
use crate::net::{self, Prefixed};
use crate::sniff::{self, Sniff};
use crate::store::Store;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One version of a listener and the drain of its connections.
#[derive(Debug, Clone)]
struct Version {
    config: Arc<ListenerConfig>,
    drain: Drain,
}

struct Active {
    version: Version,
    drain: Drainer,
    /// The accept loop, when the listener binds its address.
    accept: Option<(SocketAddr, JoinHandle<()>, watch::Sender<Version>)>,
}

/// Shared by accept loops and connections.
struct Shared {
    store: Arc<Store>,
    active: Mutex<HashMap<String, Version>>,
    /// One clone per open connection; the count drains to 1 when all have closed.
    connections: Arc<()>,
    drain_time: Duration,
}

impl Shared {
    fn find(&self, addr: SocketAddr) -> Option<Version> {
        let active = self
            .active
            .lock()
            .expect("active-listener lock: no panics under it");
        let wildcard = SocketAddr::new(
            match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            addr.port(),
        );
        let by = |a: SocketAddr| active.values().find(|v| v.config.address == a).cloned();
        by(addr).or_else(|| by(wildcard))
    }
}

/// Runs the snapshot's listeners until `shutdown` becomes true, then drains: stops accepting,
/// signals every connection to finish its in-flight requests, and returns once all have closed
/// or `drain_time` has passed.
pub async fn run(store: Arc<Store>, mut shutdown: watch::Receiver<bool>, drain_time: Duration) {
    let shared = Arc::new(Shared {
        store: store.clone(),
        active: Mutex::new(HashMap::new()),
        connections: Arc::new(()),
        drain_time,
    });
    let mut listeners: HashMap<String, Active> = HashMap::new();
    let mut changes = store.subscribe();
    loop {
        reconcile(&shared, &mut listeners).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tracing::info!(
        connections = Arc::strong_count(&shared.connections) - 1,
        "draining listeners"
    );
    for (_, a) in listeners.drain() {
        if let Some((_, task, _)) = a.accept {
            task.abort();
        }
        a.drain.start(drain_time);
    }
    let deadline = Instant::now() + drain_time;
    while Arc::strong_count(&shared.connections) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Brings the active listeners in line with the current snapshot.
async fn reconcile(shared: &Arc<Shared>, listeners: &mut HashMap<String, Active>) {
    let snapshot = shared.store.snapshot();
    listeners.retain(|name, a| {
        let keep = snapshot.listeners.contains_key(name);
        if !keep {
            tracing::info!(listener = %name, "listener removed: draining");
            if let Some((_, task, _)) = &a.accept {
                task.abort();
            }
            a.drain.start(shared.drain_time);
        }
        keep
    });
    for (name, config) in &snapshot.listeners {
        if let Some(a) = listeners.get(name) {
            if Arc::ptr_eq(&a.version.config, config) {
                continue;
            }
        }
        let (drain, drain_rx) = drain::channel();
        let version = Version {
            config: config.clone(),
            drain: drain_rx,
        };
        let old = listeners.remove(name);
        let mut accept = None;
        if let Some(old) = old {
            tracing::info!(listener = %name, "listener updated: draining the old version");
            old.drain.start(shared.drain_time);
            if let Some((addr, task, tx)) = old.accept {
                if addr == config.address && config.bind_to_port {
                    tx.send_replace(version.clone());
                    accept = Some((addr, task, tx));
                } else {
                    task.abort();
                }
            }
        }
        if accept.is_none() && config.bind_to_port {
            match bind(config.address).await {
                Ok(l) => {
                    let (tx, rx) = watch::channel(version.clone());
                    let task = tokio::spawn(accept_loop(l, rx, shared.clone()));
                    tracing::info!(listener = %name, address = %config.address, "listening");
                    accept = Some((config.address, task, tx));
                }
                Err(e) => {
                    // Envoy rejects the listener; we keep serving the others and say why.
                    tracing::error!(listener = %name, address = %config.address, "cannot bind: {e}");
                }
            }
        }
        listeners.insert(
            name.clone(),
            Active {
                version,
                drain,
                accept,
            },
        );
    }
    let mut active = shared
        .active
        .lock()
        .expect("active-listener lock: no panics under it");
    active.clear();
    active.extend(
        listeners
            .iter()
            .map(|(n, a)| (n.clone(), a.version.clone())),
    );
}

async fn accept_loop(
    listener: TcpListener,
    version: watch::Receiver<Version>,
    shared: Arc<Shared>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let v = version.borrow().clone();
                let guard = shared.connections.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle(stream, peer, v, &shared).await;
                    drop(guard);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep accepting.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, mut version: Version, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let l = version.config.clone();
    let original = if l.use_original_dst || l.listener_filters.lists_original_dst() {
        net::original_dst(&stream).unwrap_or(local)
    } else {
        local
    };
    let mut filters = l.listener_filters.enabled(local.port(), original.port());
    let destination = if l.use_original_dst || filters.original_dst {
        original
    } else {
        local
    };
    if l.use_original_dst && destination != local {
        if let Some(target) = shared.find(destination) {
            if target.config.name != l.name {
                version = target;
                // Envoy hands the connection over with its local address restored: the target
                // listener's filters see the original destination's port.
                filters = version
                    .config
                    .listener_filters
                    .enabled(destination.port(), destination.port());
            }
        }
    }
    let config = version.config.clone();
    let Some((prefix, info)) = inspect(&mut stream, &config, filters, destination, peer).await
    else {
        tracing::debug!(listener = %config.name, %peer, "listener filters timed out");
        return;
    };
    let Some(chain) = config.select(&info) else {
        tracing::debug!(listener = %config.name, %peer, %destination, "no filter chain matched");
        return;
    };
    let io = Prefixed::new(prefix.freeze(), stream);
    let ctx = ChainCtx {
        listener: &config.name,
        peer,
        destination,
        server_name: info.server_name.as_deref(),
        rbac: &chain.rbac,
        buffer_limit: config.buffer_limit,
        drain: version.drain.clone(),
        shared,
    };
    match &chain.tls {
        None => serve_chain(io, &chain.filter, None, ctx).await,
        Some(tls) => {
            match tokio::time::timeout(Duration::from_secs(10), accept_tls(io, tls)).await {
                Ok(Ok(tls_stream)) => {
                    let session = tls_stream.get_ref().1;
                    let handshake = Handshake {
                        peer_cert: crate::identity::peer_cert(session.peer_certificates()),
                        alpn_h2: session.alpn_protocol() == Some(b"h2"),
                    };
                    serve_chain(tls_stream, &chain.filter, Some(handshake), ctx).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %config.name, %peer, "TLS handshake failed: {e}")
                }
                Err(_) => {
                    tracing::debug!(listener = %config.name, %peer, "TLS handshake timed out")
                }
            }
        }
    }
}

/// Accepts TLS as Envoy (BoringSSL) does: when the client offers ALPN protocols none of which
/// the chain lists (Istio's mTLS clients offer `istio-peer-exchange`/`istio` to servers that
/// list `h2`/`http/1.1`), the handshake goes on without ALPN instead of failing as RFC 7301 and
/// rustls would.
async fn accept_tls<IO>(
    io: IO,
    config: &Arc<rustls::ServerConfig>,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    let hello = start.client_hello();
    let disjoint = !config.alpn_protocols.is_empty()
        && hello.alpn().is_some_and(|mut offered| {
            !offered.any(|p| {
                config
                    .alpn_protocols
                    .iter()
                    .any(|ours| ours.as_slice() == p)
            })
        });
    let config = if disjoint {
        let mut c = (**config).clone();
        c.alpn_protocols.clear();
        Arc::new(c)
    } else {
        config.clone()
    };
    start.into_stream(config).await
}

struct ChainCtx<'a> {
    listener: &'a str,
    peer: SocketAddr,
    destination: SocketAddr,
    server_name: Option<&'a str>,
    rbac: &'a [Arc<crate::listener::NetworkRbac>],
    /// The listener's `per_connection_buffer_limit_bytes`.
    buffer_limit: usize,
    drain: Drain,
    shared: &'a Shared,
}

/// What a connection's TLS handshake settled.
struct Handshake {
    /// The client's certificate, if it showed one.
    peer_cert: Option<Arc<crate::identity::PeerCert>>,
    /// ALPN agreed on `h2`.
    alpn_h2: bool,
}

/// Hands the (decrypted) connection to the chain's network filter.
/// `tls`: the connection was TLS, and what its handshake settled.
async fn serve_chain<IO>(io: IO, filter: &NetworkFilter, tls: Option<Handshake>, ctx: ChainCtx<'_>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ChainCtx {
        listener,
        peer,
        destination,
        server_name,
        rbac,
        buffer_limit,
        mut drain,
        shared,
    } = ctx;
    if !rbac.is_empty() {
        let peer_cert = tls.as_ref().and_then(|h| h.peer_cert.as_deref());
        if let Some(delay) =
            network_rbac_denies(rbac, peer, destination, server_name, peer_cert, shared)
        {
            tracing::debug!(%listener, %peer, "RBAC: connection denied");
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            return;
        }
    }
    match filter {
        NetworkFilter::Http(hcm) => {
            let downstream = crate::http::Downstream {
                peer,
                local: destination,
                tls: tls.is_some(),
                alpn_h2: tls.as_ref().is_some_and(|h| h.alpn_h2),
                peer_cert: tls.and_then(|h| h.peer_cert),
                buffer_limit,
            };
            crate::http::serve_connection(io, hcm.clone(), shared.store.clone(), downstream, drain)
                .await;
        }
        NetworkFilter::Tcp(tcp) => {
            let stats = shared.store.stats().tcp(&tcp.stat_prefix);
            stats.downstream_cx_total.inc();
            stats.downstream_cx_active.inc();
            let snapshot = shared.store.snapshot();
            tokio::select! {
                r = crate::tcp::proxy(io, tcp, &snapshot, destination, shared.store.stats()) => {
                    if let Err(e) = r {
                        tracing::debug!(%listener, %peer, "tcp proxy: {e}");
                    }
                }
                // A TCP connection has no request boundary: it gets the drain window, then closes.
                _ = drain.ended() => {}
            }
            stats.downstream_cx_active.dec();
        }
    }
}

/// Runs a chain's network RBAC filters on a new connection. `Some(delay_deny)` when one
/// refuses it (the connection is then closed, after the delay if any).
fn network_rbac_denies(
    rbac: &[Arc<crate::listener::NetworkRbac>],
    peer: SocketAddr,
    destination: SocketAddr,
    server_name: Option<&str>,
    peer_cert: Option<&crate::identity::PeerCert>,
    shared: &Shared,
) -> Option<Option<Duration>> {
    let headers = http::HeaderMap::new();
    // A connection has no dynamic metadata from HTTP filters: metadata matchers see nothing.
    let metadata = crate::http::metadata::DynamicMetadata::default();
    let request = crate::http::rbac::RbacRequest {
        headers: &headers,
        method: "",
        path: "",
        authority: "",
        scheme: "",
        destination,
        direct_remote: peer.ip(),
        // No x-forwarded-for on a connection: the remote is the peer.
        remote: peer.ip(),
        peer: peer_cert,
        server_name,
        metadata: &metadata,
    };
    for f in rbac {
        let stats = shared.store.stats().network_rbac(&f.stats_instance);
        let (allowed, policy) = f.filter.check(&request);
        if !allowed {
            stats.denied.inc();
            tracing::debug!(?policy, "network RBAC denied");
            return Some(f.delay_deny);
        }
        stats.allowed.inc();
    }
    None
}

/// Runs the listener's inspectors enabled on this connection (`filters`) on its first bytes.
/// Returns the bytes read (to be replayed) and what was learnt; `None` when the inspectors timed
/// out and the listener does not continue on timeout.
async fn inspect(
    stream: &mut TcpStream,
    l: &ListenerConfig,
    filters: Enabled,
    destination: SocketAddr,
    source: SocketAddr,
) -> Option<(BytesMut, ConnectionInfo)> {
    let mut info = ConnectionInfo {
        destination,
        source,
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: Vec::new(),
    };
    let mut buf = BytesMut::new();
    if !filters.tls && !filters.http {
        return Some((buf, info));
    }
    let deadline = l.filters_timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let tls = if filters.tls {
            sniff::tls(&buf)
        } else {
            Sniff::No
        };
        let http = if filters.http && tls == Sniff::No {
            sniff::http(&buf)
        } else {
            Sniff::No
        };
        match (&tls, &http) {
            (Sniff::Yes(hello), _) => {
                info.transport_protocol = "tls";
                info.server_name = hello.server_name.clone();
                info.application_protocols = hello.alpn.clone();
                return Some((buf, info));
            }
            (_, Sniff::Yes(p)) => {
                info.application_protocols = vec![(*p).to_string()];
                return Some((buf, info));
            }
            (Sniff::No, Sniff::No) => return Some((buf, info)),
            _ => {}
        }
        if buf.len() >= sniff::MAX_PEEK {
            return Some((buf, info));
        }
        let read = stream.read_buf(&mut buf);
        let read = match deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r,
                Err(_) => return l.continue_on_timeout.then_some((buf, info)),
            },
            None => read.await,
        };
        match read {
            Ok(0) | Err(_) => return Some((buf, info)),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod alpn_tests {
    use super::accept_tls;
    use crate::identity::san::SanMatchers;
    use crate::identity::tests::TestCa;
    use crate::identity::Identity;
    use std::sync::Arc;

    /// An Istio mTLS client (ALPN `istio-peer-exchange`, `istio`) reaches a chain that lists
    /// `h2`, `http/1.1`: the handshake succeeds without ALPN, as with Envoy.
    #[tokio::test]
    async fn disjoint_alpn_is_not_fatal() {
        let ca = TestCa::new("mesh");
        let (server_id, client_id) = (Arc::new(Identity::default()), Arc::new(Identity::default()));
        server_id.set(ca.material("spiffe://cluster.local/ns/default/sa/b"));
        client_id.set(ca.material("spiffe://cluster.local/ns/default/sa/a"));
        let server = server_id.server_config(
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            true,
            SanMatchers::default(),
        );
        let client = client_id.client_config(
            vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()],
            SanMatchers::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept_tls(tcp, &server)
                .await
                .map(|s| s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("outbound_.80_._.b").unwrap();
        let c = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await;
        assert!(c.is_ok(), "{:?}", c.err());
        assert_eq!(srv.await.unwrap().unwrap(), None);
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod filter_disabled_tests;

#[cfg(test)]
#[path = "server_drain_tests.rs"]
mod drain_tests;
