//! WebSocket through `capstan proxy` as an ingress gateway, driven by `capstan discovery` (which
//! enables `websocket` upgrades on every HTTP connection manager, as istiod does): an RFC 6455
//! handshake and masked frames echoed by a backend that accepts the upgrade, past the route's
//! timeout; an upgrade type the connection manager does not list is refused with Envoy's 403.
//! To a service whose port speaks HTTP/2 (`http2`, so the cluster has explicit
//! `http2_protocol_options`) the upgrade goes as an RFC 8441 extended CONNECT, Envoy's
//! "WebSocket over HTTP/2 hops"; an HTTP/2 backend that does not offer extended CONNECT resets
//! it, answered 503.

mod proxy;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy::{discovery, free_port};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// RFC 6455's GUID, appended to the key for `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;

fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One final frame; clients mask (RFC 6455 §5.3), servers do not.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame: (opcode, unmasked payload, whether it was masked).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>, bool)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    ensure!(head[0] & 0x80 != 0, "fragmented frames are not used here");
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len)?];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload, masked))
}

/// A WebSocket echo backend (hyper, `hyper::upgrade::on`): data frames come back unmasked, a
/// close frame is answered with one and ends the stream. Plain requests get 200 `plain`.
struct WsBackend {
    port: u16,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_backend() -> Result<WsBackend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, std::convert::Infallible>(answer(req)) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades(),
            );
        }
    });
    Ok(WsBackend {
        port,
        requests,
        task,
    })
}

fn answer(mut req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = header("sec-websocket-key");
    let websocket = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (key, websocket) else {
        return hyper::Response::new(Full::new(Bytes::from_static(b"plain")));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let _ = echo_frames(TokioIo::new(io)).await;
    });
    hyper::Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept_key(&key))
        .body(Full::new(Bytes::new()))
        .expect("a valid 101")
}

async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Result<()> {
    loop {
        let (opcode, payload, masked) = read_frame(&mut io).await?;
        ensure!(masked, "a client frame arrived unmasked");
        let reply = if opcode == CLOSE { CLOSE } else { opcode };
        io.write_all(&frame(reply, &payload, None)).await?;
        if opcode == CLOSE {
            io.shutdown().await?;
            return Ok(());
        }
    }
}

struct Gateway {
    _tmp: tempfile::TempDir,
    port: u16,
    discovery: proxy::Discovery,
    proxy: proxy::Proxy,
}

impl Gateway {
    fn logs(&self) -> String {
        format!(
            "--- gateway:\n{}\n--- discovery:\n{}",
            self.proxy.proc.tail(),
            self.discovery.proc.tail()
        )
    }
}

/// A service behind the gateway: its short name (routed from `<name>.example.com`), its port's
/// name (which decides the upstream protocol, as in Istio) and its backend's port.
struct Service<'a> {
    name: &'a str,
    port_name: &'a str,
    backend: u16,
}

/// discovery + a gateway routing `<name>.example.com` to each service's backend, with a 1 s
/// route timeout; returned once a plain request reaches each backend (answered `plain`).
async fn gateway(services: &[Service<'_>]) -> Result<Gateway> {
    let tmp = tempfile::Builder::new().prefix("capstan-ws").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    std::fs::create_dir_all(dir.join("config"))?;
    let mut registry = String::from("services:\n");
    let mut config = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
    );
    for (i, s) in services.iter().enumerate() {
        let (name, port_name, backend) = (s.name, s.port_name, s.backend);
        registry.push_str(&format!(
            "- hostname: {name}.default.svc.cluster.local\n  namespace: default\n  ports: [{{name: {port_name}, port: 8080}}]\n  addresses: [10.96.10.{}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{{port_name}: {backend}}}, labels: {{app: {name}}}, workload: {name}-0}}\n",
            9 + i
        ));
        config.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.example.com]\n  gateways: [web]\n  http:\n  - timeout: 1s\n    route:\n    - destination: {{host: {name}.default.svc.cluster.local}}\n"
        ));
    }
    std::fs::write(dir.join("registry.yaml"), registry)?;
    std::fs::write(dir.join("config/gateway.yaml"), config)?;
    let discovery = discovery(&dir, None)?;
    let gw = proxy::gateway(&dir, discovery.xds_port).await?;
    let g = Gateway {
        _tmp: tmp,
        port,
        discovery,
        proxy: gw,
    };
    // Routed once a plain request reaches every backend.
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in services {
        loop {
            let r = proxy::get(
                &format!("http://127.0.0.1:{port}/"),
                &[("host", &format!("{}.example.com", s.name))],
            )
            .await;
            if matches!(&r, Ok(r) if r.body == "plain") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no route to {} through the gateway: {r:?}\n{}",
                s.name,
                g.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(g)
}

/// Sends an HTTP/1.1 request head asking for `upgrade`; the status, the response headers
/// (lower-cased names) and the stream, positioned after the head.
async fn open(
    port: u16,
    host: &str,
    upgrade: &str,
    key: &str,
) -> Result<(u16, Vec<(String, String)>, BufReader<tokio::net::TcpStream>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!(
                "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed inside the response head");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers, reader))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn exchange(
    io: &mut BufReader<tokio::net::TcpStream>,
    opcode: u8,
    payload: &[u8],
) -> Result<(u8, Vec<u8>)> {
    io.get_mut()
        .write_all(&frame(opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d])))
        .await?;
    let (op, back, masked) = tokio::time::timeout(Duration::from_secs(5), read_frame(io))
        .await
        .context("no echo within 5 s")??;
    ensure!(!masked, "a server frame arrived masked");
    Ok((op, back))
}

/// Over an open WebSocket through the gateway: echoes `text` and a 70,000-byte binary
/// message; after the route's 1 s timeout (Envoy does not apply it to an upgraded stream)
/// echoes once more, with one upgraded stream counted active; then the closing handshake,
/// after which both ends close.
async fn echo_then_close(
    ws: &mut BufReader<tokio::net::TcpStream>,
    g: &Gateway,
    text: &[u8],
) -> Result<()> {
    let (op, back) = exchange(ws, TEXT, text).await?;
    ensure!(op == TEXT && back == text, "echo {op} {back:?}");
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let (op, back) = exchange(ws, BINARY, &big).await?;
    ensure!(
        op == BINARY && back == big,
        "binary echo of {} bytes",
        back.len()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (op, back) = exchange(ws, TEXT, b"still open").await?;
    ensure!(
        op == TEXT && back == b"still open",
        "after the route timeout"
    );
    let stat = format!(
        "http.outbound_0.0.0.0_{}.downstream_cx_upgrades_active",
        g.port
    );
    ensure!(
        g.proxy.stat(&stat).await? == 1,
        "one upgraded stream open:\n{}",
        g.proxy.admin("/stats").await?
    );
    let (op, back) = exchange(ws, CLOSE, &1000u16.to_be_bytes()).await?;
    ensure!(op == CLOSE && back == 1000u16.to_be_bytes(), "close echo");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), ws.read_to_end(&mut rest))
        .await
        .context("the tunnel did not close")??;
    ensure!(rest.is_empty(), "bytes after the close: {rest:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway_and_unlisted_upgrades_refused() -> Result<()> {
    let backend = ws_backend().await?;
    let g = gateway(&[Service {
        name: "chat",
        port_name: "http",
        backend: backend.port,
    }])
    .await?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let (status, headers, mut ws) = open(g.port, "chat.example.com", "websocket", key).await?;
    ensure!(
        status == 101,
        "WebSocket handshake answered {status} {headers:?}\n{}",
        g.logs()
    );
    ensure!(
        header(&headers, "sec-websocket-accept") == Some(accept_key(key).as_str()),
        "handshake headers not the backend's: {headers:?}"
    );
    ensure!(
        header(&headers, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{headers:?}"
    );
    echo_then_close(&mut ws, &g, b"hello through capstan").await?;

    // An upgrade type the connection manager does not list: Envoy's 403, no body, and the
    // backend never sees it.
    let before = backend.requests.load(Ordering::SeqCst);
    let (status, headers, mut refused) = open(g.port, "chat.example.com", "spdy/3.1", key).await?;
    ensure!(status == 403, "unlisted upgrade answered {status}");
    ensure!(
        header(&headers, "content-length") == Some("0"),
        "a body on the refusal: {headers:?}"
    );
    let _ = refused.get_mut().shutdown().await;
    ensure!(
        backend.requests.load(Ordering::SeqCst) == before,
        "the refused upgrade reached the backend"
    );
    let total = format!(
        "http.outbound_0.0.0.0_{}.downstream_cx_upgrades_total",
        g.port
    );
    ensure!(
        g.proxy.stat(&total).await? == 1,
        "upgrades counted:\n{}",
        g.proxy.admin("/stats").await?
    );
    Ok(())
}

/// What the HTTP/2 backend saw of an extended CONNECT.
#[derive(Debug, Clone)]
struct Connect {
    protocol: Option<String>,
    path: String,
    headers: http::HeaderMap,
}

/// An HTTP/2 (prior knowledge) WebSocket backend as RFC 8441 describes one: with
/// `extended_connect` it advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and answers a `CONNECT`
/// with `:protocol websocket` by `200` (no `Sec-WebSocket-Accept`: RFC 8441 §5 has no key
/// exchange), then echoes frames on the stream. Plain requests get 200 `plain`.
struct H2WsBackend {
    port: u16,
    connects: Arc<std::sync::Mutex<Vec<Connect>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn h2_ws_backend(extended_connect: bool) -> Result<H2WsBackend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let connects = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = connects.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let (status, body) = if req.method() == hyper::Method::CONNECT {
                    let protocol = req
                        .extensions()
                        .get::<hyper::ext::Protocol>()
                        .map(|p| p.as_str().to_string());
                    seen.lock().expect("only pushed to").push(Connect {
                        protocol: protocol.clone(),
                        path: req.uri().path().to_string(),
                        headers: req.headers().clone(),
                    });
                    if protocol.as_deref() == Some("websocket") {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(io) = upgrade.await else { return };
                            let _ = echo_frames(TokioIo::new(io)).await;
                        });
                        (200, "")
                    } else {
                        (400, "not websocket")
                    }
                } else {
                    (200, "plain")
                };
                let resp = hyper::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .expect("a valid response");
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let mut b =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            if extended_connect {
                b.enable_connect_protocol();
            }
            tokio::spawn(b.serve_connection(TokioIo::new(stream), svc));
        }
    });
    Ok(H2WsBackend {
        port,
        connects,
        task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_an_http2_service_goes_as_an_extended_connect() -> Result<()> {
    let h2 = h2_ws_backend(true).await?;
    let old = h2_ws_backend(false).await?;
    let g = gateway(&[
        Service {
            name: "live",
            port_name: "http2",
            backend: h2.port,
        },
        Service {
            name: "old",
            port_name: "http2-old",
            backend: old.port,
        },
    ])
    .await?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let (status, headers, mut ws) = open(g.port, "live.example.com", "websocket", key).await?;
    ensure!(
        status == 101,
        "WebSocket handshake to an HTTP/2 service answered {status} {headers:?}\n{}",
        g.logs()
    );
    ensure!(
        header(&headers, "upgrade") == Some("websocket")
            && header(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{headers:?}"
    );
    // Envoy makes up no accept key; the backend sent none.
    ensure!(
        header(&headers, "sec-websocket-accept").is_none(),
        "{headers:?}"
    );
    let connect = h2.connects.lock().expect("only pushed to")[0].clone();
    ensure!(
        connect.protocol.as_deref() == Some("websocket") && connect.path == "/chat",
        "the backend saw {connect:?}"
    );
    ensure!(
        connect
            .headers
            .get("sec-websocket-key")
            .is_some_and(|k| k == key)
            && !connect.headers.contains_key("connection")
            && !connect.headers.contains_key("upgrade"),
        "the backend saw {connect:?}"
    );
    echo_then_close(&mut ws, &g, b"hello over h2").await?;

    // An HTTP/2 backend without extended CONNECT resets the stream: Envoy's 503.
    let (status, headers, mut refused) = open(g.port, "old.example.com", "websocket", key).await?;
    ensure!(status == 503, "answered {status} {headers:?}\n{}", g.logs());
    let mut body = vec![
        0u8;
        header(&headers, "content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
    ];
    refused.read_exact(&mut body).await?;
    ensure!(
        body == b"upstream connect error or disconnect/reset before headers. reset reason: remote reset",
        "body {:?}",
        String::from_utf8_lossy(&body)
    );
    let reset = "cluster.outbound|8080||old.default.svc.cluster.local.upstream_rq_rx_reset";
    ensure!(
        g.proxy.stat(reset).await? == 1,
        "the reset counted:\n{}",
        g.proxy.admin("/stats").await?
    );
    Ok(())
}
