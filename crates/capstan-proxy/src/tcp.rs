//! Envoy's TCP proxy network filter: one upstream connection per downstream connection to a
//! cluster chosen by weight, bytes copied both ways until either side closes or the idle
//! timeout passes.

use crate::cluster::LbContext;
use crate::listener::TcpProxyConfig;
use crate::store::Snapshot;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a TCP proxy session ended early.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// The chosen cluster is not (yet) in the config.
    #[error("cluster {0} not found")]
    NoCluster(String),
    /// No upstream connection.
    #[error("cluster {cluster}: {source}")]
    Upstream {
        /// The cluster.
        cluster: String,
        /// Why.
        source: crate::cluster::UpstreamError,
    },
}

/// Proxies `downstream` to an endpoint of the config's cluster.
pub async fn proxy<S>(
    downstream: S,
    config: &TcpProxyConfig,
    snapshot: &Snapshot,
    original_dst: SocketAddr,
    stats: &crate::stats::Stats,
) -> Result<(), TcpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let roll = fastrand::u64(0..config.total_weight().max(1));
    let name = config.pick(roll).unwrap_or_default().to_string();
    let cluster = snapshot
        .cluster(&name)
        .ok_or_else(|| TcpError::NoCluster(name.clone()))?
        .clone();
    let ctx = LbContext {
        original_dst: Some(original_dst),
        ..LbContext::default()
    };
    // Tracked: the connection counts against max_connections and cx_active until it closes.
    let (upstream, _) =
        cluster
            .connect_tracked(&ctx)
            .await
            .map_err(|source| TcpError::Upstream {
                cluster: name.clone(),
                source,
            })?;
    let istio = stats.istio.tcp(&name);
    istio.opened.inc();
    let (rx, tx) = copy_with_idle(downstream, upstream, config.idle_timeout).await;
    istio.closed.inc();
    istio.received_bytes.add(rx);
    istio.sent_bytes.add(tx);
    let tcp = stats.tcp(&config.stat_prefix);
    tcp.rx_bytes.add(rx);
    tcp.tx_bytes.add(tx);
    Ok(())
}

/// Copies both ways until both directions have closed, an error, or `idle` passes with no byte
/// in either direction. Returns bytes (downstream→upstream, upstream→downstream).
pub async fn copy_with_idle<A, B>(a: A, b: B, idle: Option<Duration>) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let (mut up, mut down) = (0u64, 0u64);
    let (mut a_open, mut b_open) = (true, true);
    let idle = idle.unwrap_or(Duration::MAX);
    while a_open || b_open {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                r = ar.read(&mut abuf), if a_open => (true, r),
                r = br.read(&mut bbuf), if b_open => (false, r),
            }
        })
        .await;
        let keep_going = match step {
            Err(_) => false, // idle timeout
            Ok((true, read)) => forward(read, &abuf, &mut bw, &mut a_open, &mut up).await,
            Ok((false, read)) => forward(read, &bbuf, &mut aw, &mut b_open, &mut down).await,
        };
        if !keep_going {
            break;
        }
    }
    (up, down)
}

/// Writes what one side read to the other; on EOF or a read error, half-closes the other side.
/// Returns false when the session must end (a write failed).
async fn forward<W: AsyncWrite + Unpin>(
    read: std::io::Result<usize>,
    buf: &[u8],
    writer: &mut W,
    open: &mut bool,
    count: &mut u64,
) -> bool {
    match read {
        Ok(0) | Err(_) => {
            *open = false;
            let _ = writer.shutdown().await;
            true
        }
        Ok(n) => {
            *count += n as u64;
            writer.write_all(&buf[..n]).await.is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, server) = tokio::io::duplex(1024);
        let session = tokio::spawn(copy_with_idle(proxy_down, proxy_up, None));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        cw.write_all(b"ping").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        sw.write_all(b"pong!").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        assert_eq!(session.await.unwrap(), (4, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_the_session() {
        let (_client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, _server) = tokio::io::duplex(1024);
        let out = copy_with_idle(proxy_down, proxy_up, Some(Duration::from_secs(5))).await;
        assert_eq!(out, (0, 0));
    }
}
