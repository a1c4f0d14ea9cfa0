//! Downstream connections as clients see them: plain requests on the fast path, others handed
//! to hyper mid-connection, pipelining, error answers, and a client leaving mid-request.

use crate::http::tests::{
    apply_static_cluster, hcm_config, prefix_route, routes, rq_active_becomes, start_with,
    store_with_routes,
};
use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteAction};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(5);

/// Reads one response (head, then a `content-length` or chunked body) from `s`, leaving what
/// follows in `pending`.
async fn response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, String) {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let status = head[9..12].parse().expect("a status");
            let body_start = end + 4;
            let len = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse::<usize>().expect("a length"));
            if let Some(len) = len {
                if pending.len() >= body_start + len {
                    let body = String::from_utf8_lossy(&pending[body_start..body_start + len])
                        .into_owned();
                    pending.drain(..body_start + len);
                    return (status, head, body);
                }
            } else if lower.contains("transfer-encoding: chunked") {
                if let Some(e) = pending[body_start..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                {
                    let body =
                        String::from_utf8_lossy(&pending[body_start..body_start + e]).into_owned();
                    pending.drain(..body_start + e + 5);
                    return (status, head, body);
                }
            } else {
                pending.drain(..body_start);
                return (status, head, String::new());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed; have {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 64];
    matches!(
        tokio::time::timeout(LIMIT, s.read(&mut chunk)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn proxy() -> (
    SocketAddr,
    crate::drain::Drainer,
    std::sync::Arc<crate::store::Store>,
) {
    let store = store_with_routes();
    let (addr, drainer) = start_with(store.clone(), hcm_config()).await;
    (addr, drainer, store)
}

#[tokio::test]
async fn plain_requests_then_one_for_hyper_on_one_connection() {
    let (addr, _d, store) = proxy().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut pending = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET /direct HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .expect("write");
        let (status, head, body) = response(&mut s, &mut pending).await;
        assert_eq!((status, body.as_str()), (418, "teapot"), "{head}");
        assert!(head.contains("\r\nserver: envoy\r\n"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
    }
    // A chunked body is hyper's: the connection goes on under its codec.
    s.write_all(b"POST /direct HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .await
        .expect("write");
    let (status, _, body) = response(&mut s, &mut pending).await;
    assert_eq!((status, body.as_str()), (418, "teapot"));
    s.write_all(b"HEAD /nothing HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    let (status, _, _) = response(&mut s, &mut pending).await;
    assert_eq!(status, 404);
    let stats = store.stats().http("test");
    assert_eq!(stats.downstream_rq_total.get(), 4);
    assert_eq!(stats.downstream_cx_total.get(), 1);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (addr, _d, _) = proxy().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /direct HTTP/1.1\r\nHost: app\r\n\r\nPOST /nothing HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nabcGET /old/x HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await
    .expect("write");
    let mut pending = Vec::new();
    let statuses = [
        response(&mut s, &mut pending).await.0,
        response(&mut s, &mut pending).await.0,
        response(&mut s, &mut pending).await.0,
    ];
    assert_eq!(statuses, [418, 404, 301]);
}

#[tokio::test]
async fn malformed_and_long_heads_are_answered_by_hyper() {
    let (addr, _d, _) = proxy().await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /direct HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    let mut pending = Vec::new();
    assert_eq!(response(&mut s, &mut pending).await.0, 418);
    s.write_all(b"GET /direct HTTP/1.1\r\nHost app\r\n\r\n")
        .await
        .expect("write");
    let (status, head, _) = response(&mut s, &mut pending).await;
    assert_eq!(status, 400, "{head}");
    assert!(closed(&mut s).await);

    // A head longer than the fast path reads is handed to hyper part-read; hyper reads the
    // rest and serves it (its own limit, 431, is far above this).
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut big = b"GET /direct HTTP/1.1\r\nHost: app\r\n".to_vec();
    for i in 0..12 {
        big.extend_from_slice(format!("x-big-{i}: {}\r\n", "v".repeat(8000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    s.write_all(&big).await.expect("write");
    let mut pending = Vec::new();
    assert_eq!(response(&mut s, &mut pending).await.0, 418);
    s.write_all(b"GET /direct HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(response(&mut s, &mut pending).await.0, 418);
}

#[tokio::test]
async fn drain_closes_a_connection_between_requests() {
    let (addr, drainer, _) = proxy().await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut pending = Vec::new();
    idle.write_all(b"GET /direct HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(response(&mut idle, &mut pending).await.0, 418);
    drainer.start(Duration::from_secs(60));
    assert!(
        closed(&mut idle).await,
        "an idle connection closes when the drain begins"
    );
}

/// An upstream that reads a request and never answers; it reports when its connection closes.
async fn silent_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                loop {
                    match sock.read(&mut b).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send("closed");
                            return;
                        }
                        Ok(_) => {
                            let _ = tx.send("request");
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A client closing its connection while the response is pending cancels the upstream request,
/// and the request is no longer active: on the fast path, and on hyper's codec (a chunked
/// request body goes there).
#[tokio::test]
async fn a_client_leaving_mid_request_cancels_the_upstream_request() {
    let (upstream, mut seen) = silent_upstream().await;
    let store = store_with_routes();
    apply_static_cluster(&store, "up", upstream);
    let mut rc = routes();
    rc.virtual_hosts[0].routes.insert(
        0,
        prefix_route(
            "/up",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
                ..RouteAction::default()
            }),
        ),
    );
    crate::http::tests::apply_routes(&store, "80", "2", &rc);
    let (addr, _d) = start_with(store.clone(), hcm_config()).await;
    for request in [
        &b"GET /up HTTP/1.1\r\nHost: app\r\n\r\n"[..],
        b"POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let what = String::from_utf8_lossy(request);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let first = tokio::time::timeout(LIMIT, seen.recv())
            .await
            .expect("in time");
        assert_eq!(first, Some("request"), "{what}");
        assert!(rq_active_becomes(&store, 1).await, "{what}");
        drop(s);
        let next = tokio::time::timeout(LIMIT, seen.recv())
            .await
            .expect("upstream closed in time");
        assert_eq!(next, Some("closed"), "{what}");
        assert!(rq_active_becomes(&store, 0).await, "{what}");
    }
}
