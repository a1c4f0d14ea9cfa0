//! Test harness for `capstan proxy` end-to-end tests: real `capstan discovery` and
//! `capstan proxy` processes on loopback, in-process HTTP/1.1 + HTTP/2 backends that say who
//! they are and what they received, and a hyper client.

#![allow(dead_code)]

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free loopback port outside the ephemeral range (see `capstan_e2e::free_port`).
pub fn free_port() -> u16 {
    capstan_e2e::free_port()
}

/// A child process killed on drop, its stderr kept in a file for failure reports.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }
    /// The last lines of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "port {port} not open within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `capstan discovery` serving `dir/config` and `dir/registry.yaml`.
pub struct Discovery {
    pub proc: Proc,
    pub xds_port: u16,
    pub debug_port: u16,
    pub dir: PathBuf,
}

pub fn discovery(dir: &Path, xds_port: Option<u16>) -> Result<Discovery> {
    discovery_with(dir, xds_port, &[])
}

/// [`discovery`] with extra flags.
pub fn discovery_with(dir: &Path, xds_port: Option<u16>, extra: &[&str]) -> Result<Discovery> {
    let (xds_port, debug_port, monitoring_port) =
        (xds_port.unwrap_or_else(free_port), free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("discovery")
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--registry-file")
        .arg(dir.join("registry.yaml"))
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--debug-addr", &format!("127.0.0.1:{debug_port}")])
        .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
        .args(["--file-debounce-ms", "20"])
        .args(extra);
    let proc = Proc::spawn("discovery", &mut cmd, dir)?;
    capstan_e2e::wait_http_ok(monitoring_port, "/ready", Duration::from_secs(30))
        .with_context(|| format!("discovery: {}", proc.tail()))?;
    Ok(Discovery {
        proc,
        xds_port,
        debug_port,
        dir: dir.to_path_buf(),
    })
}

/// `capstan proxy` from a bootstrap file like pilot-agent writes.
pub struct Proxy {
    pub proc: Proc,
    pub admin_port: u16,
}

pub fn bootstrap_json(
    node_id: &str,
    labels: &[(&str, &str)],
    xds_port: u16,
    admin_port: u16,
    delta: bool,
) -> serde_json::Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::json!({
        "node": {
            "id": node_id,
            "cluster": "test.default",
            "metadata": {"NAMESPACE": "default", "LABELS": labels, "ISTIO_VERSION": "1.28.0"},
            "locality": {}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}]},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        }]}
    })
}

/// The node id of an ingress gateway pod in `istio-system`.
pub const GATEWAY_NODE: &str =
    "router~127.0.0.1~ingress-0.istio-system~istio-system.svc.cluster.local";

/// An ingress gateway (`istio: ingressgateway`) on the Delta ADS of the discovery at
/// `xds_port`, once it has applied its first listeners.
pub async fn gateway(dir: &Path, xds_port: u16) -> Result<Proxy> {
    let boot = bootstrap_json(
        GATEWAY_NODE,
        &[("istio", "ingressgateway")],
        xds_port,
        free_port(),
        true,
    );
    let gateway = proxy(dir, "gateway", &boot)?;
    gateway.ready(Duration::from_secs(30)).await?;
    Ok(gateway)
}

pub fn proxy(dir: &Path, name: &str, bootstrap: &serde_json::Value) -> Result<Proxy> {
    proxy_with(dir, name, bootstrap, &[])
}

/// [`proxy`] with extra flags.
pub fn proxy_with(
    dir: &Path,
    name: &str,
    bootstrap: &serde_json::Value,
    extra: &[&str],
) -> Result<Proxy> {
    let admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
        .as_u64()
        .context("admin port")? as u16;
    let path = dir.join(format!("{name}-bootstrap.json"));
    std::fs::write(&path, serde_json::to_string_pretty(bootstrap)?)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("proxy")
        .arg("--bootstrap")
        .arg(&path)
        .args(["--drain-time", "2s"])
        .args(extra);
    cmd.env("RUST_LOG", "info,capstan_proxy=debug");
    let proc = Proc::spawn(name, &mut cmd, dir)?;
    let p = Proxy { proc, admin_port };
    wait_port(admin_port, Duration::from_secs(30)).with_context(|| p.proc.tail())?;
    Ok(p)
}

impl Proxy {
    /// Waits until `/ready` answers 200 (the first listeners are applied).
    pub async fn ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = get(&format!("http://127.0.0.1:{}/ready", self.admin_port), &[]).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("proxy not ready within {within:?}: {}", self.proc.tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    pub async fn admin(&self, path: &str) -> Result<String> {
        let r = get(&format!("http://127.0.0.1:{}{path}", self.admin_port), &[]).await?;
        Ok(r.body)
    }
    /// A counter from `/stats` (0 when absent).
    pub async fn stat(&self, name: &str) -> Result<u64> {
        Ok(stat_in(&self.admin("/stats").await?, name))
    }
}

/// The counter `name` in an admin `/stats` text (0 when absent).
pub fn stat_in(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A backend's behaviour, changeable while it runs.
#[derive(Default)]
pub struct Behaviour {
    /// Fail this percentage of requests with 503 (deterministic but scattered: request n fails
    /// when a hash of n, mod 100, is below it).
    pub fail_percent: AtomicU32,
    /// Delay every response by this many milliseconds.
    pub delay_ms: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// The `Host` (HTTP/1.1) or `:authority` (HTTP/2) of every request received, in order.
    pub hosts: std::sync::Mutex<Vec<String>>,
}

/// An in-process HTTP/1.1 + HTTP/2 (prior knowledge) backend that answers with a JSON
/// description of the request it received, its name in `x-backend`.
pub struct Backend {
    pub name: String,
    pub port: u16,
    pub behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn backend(name: &str) -> Result<Backend> {
    backend_on(name, tokio::net::TcpListener::bind("127.0.0.1:0").await?)
}

/// [`backend`] on a listener of the caller's (e.g. one bound inside a network namespace).
pub fn backend_on(name: &str, listener: tokio::net::TcpListener) -> Result<Backend> {
    let port = listener.local_addr()?.port();
    let behaviour = Arc::new(Behaviour::default());
    let b = behaviour.clone();
    let n = name.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (b, n) = (b.clone(), n.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (b, n) = (b.clone(), n.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(req, &b, &n).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Backend {
        name: name.to_string(),
        port,
        behaviour,
        task,
    })
}

async fn answer(
    req: hyper::Request<Incoming>,
    b: &Behaviour,
    name: &str,
) -> hyper::Response<Full<Bytes>> {
    let n = b.requests.fetch_add(1, Ordering::SeqCst);
    b.in_flight.fetch_add(1, Ordering::SeqCst);
    let delay = b.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    b.hosts
        .lock()
        .expect("the hosts list is only pushed to")
        .push(host);
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let info = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    });
    b.in_flight.fetch_sub(1, Ordering::SeqCst);
    let scattered = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 100;
    let fail = scattered < u64::from(b.fail_percent.load(Ordering::SeqCst));
    hyper::Response::builder()
        .status(if fail { 503 } else { 200 })
        .header("x-backend", name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(info.to_string())))
        .expect("a valid response")
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 GET on a new client.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    send(&client(false), url, headers).await
}

type LegacyClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A keep-alive client: HTTP/1.1 through hyper-util's pool, or one HTTP/2 connection with prior
/// knowledge whose `:authority` is the `host` header the caller gives (as a real h2 client
/// sends the service's name, not the address it connects to).
pub enum Client {
    H1(Box<LegacyClient>),
    H2(tokio::sync::Mutex<Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>>),
}

/// A keep-alive client (HTTP/2 prior knowledge when `h2`).
pub fn client(h2: bool) -> Client {
    if h2 {
        Client::H2(tokio::sync::Mutex::new(None))
    } else {
        Client::H1(Box::new(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        ))
    }
}

pub async fn send(client: &Client, url: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let uri: http::Uri = url.parse()?;
    let resp = match client {
        Client::H1(c) => {
            let mut req = hyper::Request::get(uri);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::new()))?;
            tokio::time::timeout(Duration::from_secs(20), c.request(req))
                .await
                .context("request timed out after 20 s")??
        }
        Client::H2(conn) => {
            let authority = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| (*v).to_string())
                .or_else(|| uri.authority().map(|a| a.to_string()))
                .context("no authority")?;
            let target = uri.authority().context("no address")?.to_string();
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut req = hyper::Request::get(format!("http://{authority}{path}"));
            for (k, v) in headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
            {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::new()))?;
            let mut guard = conn.lock().await;
            let reuse = match guard.as_mut() {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !reuse {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await?;
                tokio::spawn(connection);
                *guard = Some(sender);
            }
            let sender = guard.as_mut().context("an HTTP/2 connection")?;
            let fut = sender.send_request(req);
            drop(guard);
            tokio::time::timeout(Duration::from_secs(20), fut)
                .await
                .context("request timed out after 20 s")??
        }
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes a file atomically (write, then rename), as config tools do.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A TLS acceptor serving `chain`/`key` that requires a client certificate chaining to `roots`
/// (the mTLS backends of the certificate tests).
pub fn mtls_acceptor(
    roots: rustls::RootCertStore,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
