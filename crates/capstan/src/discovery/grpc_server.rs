//! The gRPC ports (15010, 15012) served with hyper's HTTP/2 server directly rather than
//! through tonic's `Server`, for one setting tonic does not expose: how much response data one
//! stream may hand to HTTP/2 ahead of the socket (`max_send_buf_size`, 400 KiB in hyper by
//! default). An ADS response body is polled whenever its stream has that much room and the
//! proxy's flow-control window allows (Envoy opens windows of megabytes), so with thousands of
//! proxies syncing at once on two cores each stream piled up to 400 KiB of encoded response
//! in HTTP/2's queue before its connection task could write it: memory growing with the
//! number of proxies connecting together, not with the mesh. [`MAX_SEND_BUF`] bounds it by
//! design.

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// What one stream may queue in HTTP/2 beyond what the socket has taken: two of the ADS
/// body's chunks (`capstan_xds` encodes responses 16 KiB at a time).
pub const MAX_SEND_BUF: usize = 32 * 1024;

/// The HTTP/2 settings of both gRPC ports.
fn builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        // Find dead peers, but give a busy one (thousands of proxies syncing on two cores) a
        // minute to answer a ping before its connection is dropped.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(60))
        .max_send_buf_size(MAX_SEND_BUF);
    b
}

/// Serves each accepted connection with its service until `stop`, then stops accepting and
/// shuts the connections down gracefully (GOAWAY, in-flight streams finish).
pub async fn serve<I, S>(incoming: I, stop: impl Future<Output = ()>)
where
    I: Stream<Item = (Box<dyn Io>, S)>,
    S: tonic::codegen::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let mut incoming = std::pin::pin!(incoming);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            next = incoming.next() => {
                let Some((io, service)) = next else { break };
                let conn = builder
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "gRPC connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    graceful.shutdown().await;
}

/// A connection's byte stream (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
