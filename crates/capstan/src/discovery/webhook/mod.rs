//! istiod's port 15017: admission webhooks over HTTPS.
//!
//! A small router: each path has one [`Handler`], a pure function from an AdmissionRequest
//! to an AdmissionResponse ([`review`]); this module only does TLS, HTTP, body limits and
//! graceful shutdown around them. `/validate` (Istio's path) validates Istio objects;
//! another module adds `/inject` the same way ([`Routes::add`]).
//!
//! The serving certificate, in order of preference: `--webhook-cert-dir`; the mesh CA's DNS
//! certificate, as istiod serves its webhooks, with the CA's trust bundle as `caBundle` (every
//! replica has its own certificate and all are trusted); without a CA, one generated at start
//! with its own CA (file-only development).

mod ca_bundle;
pub mod cert;
mod fail_closed;
pub mod review;

use super::dns_cert::DnsCertificate;
use anyhow::{Context as _, Result};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use capstan_api::decode::CheckOptions;
use capstan_ca::CurrentCa;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use review::{AdmissionRequest, AdmissionResponse};
use rustls::server::ResolvesServerCert;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Largest AdmissionReview body accepted: the API server's own request limit is 3 MiB and a
/// review carries the object and, on update, the old object.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// A TLS handshake that takes longer is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server.
const ACCEPT_QUEUE: usize = 128;

/// Flags of the webhook server.
#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// Admission webhooks over HTTPS (`/validate`); off unless given (istiod: 0.0.0.0:15017).
    #[arg(long = "webhook-addr")]
    pub addr: Option<SocketAddr>,
    /// Serving certificate of the webhooks: a directory with `tls.crt`, `tls.key` and,
    /// optionally, `ca.crt` (re-read when they change). Without it, the mesh CA's DNS
    /// certificate (when a CA runs), else a certificate generated at start with its own CA.
    #[arg(long = "webhook-cert-dir")]
    pub cert_dir: Option<PathBuf>,
    /// Name of the Service in front of the webhooks: the mesh CA's or the generated
    /// certificate is also for `<name>.<system namespace>.svc`.
    #[arg(long = "webhook-service", default_value = "istiod")]
    pub service: String,
    /// ValidatingWebhookConfiguration whose webhooks get the CA bundle (with `--kubeconfig`:
    /// the mesh CA's trust bundle, the generated CA or `ca.crt`), kept patched as istiod does.
    #[arg(long = "validation-webhook-config-name")]
    pub validation_config: Option<String>,
    /// MutatingWebhookConfiguration (the sidecar injector's, Istio's
    /// `INJECTION_WEBHOOK_CONFIG_NAME`) whose webhooks get the serving CA in their `caBundle`.
    #[arg(long = "injector-webhook-config-name")]
    pub injector_config: Option<String>,
}

/// The mesh CA's DNS certificate and the CA that issues it: what the webhooks serve with when
/// no `--webhook-cert-dir` is given, the CA's trust bundle being the `caBundle`.
pub struct MeshCertificate {
    /// The certificate, kept current by the CA.
    pub cert: Arc<DnsCertificate>,
    /// The CA in force: its trust bundle verifies `cert`.
    pub authority: CurrentCa,
}

/// The answer of one path: pure, no I/O.
pub type Handler = Arc<dyn Fn(&AdmissionRequest) -> AdmissionResponse + Send + Sync>;

/// The webhook paths and their handlers.
#[derive(Default, Clone)]
pub struct Routes(Vec<(&'static str, Handler)>);

impl Routes {
    /// Serves `handler` on `path` (and on `path/`, which the API server may call).
    pub fn add(mut self, path: &'static str, handler: Handler) -> Self {
        self.0.push((path, handler));
        self
    }

    /// The HTTP router.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        for (path, handler) in &self.0 {
            let route = axum::routing::post(admit).with_state(handler.clone());
            router = router
                .route(path, route.clone())
                .route(&format!("{path}/"), route);
        }
        router
    }
}

/// The routes of `capstan discovery`: `/validate`.
pub fn routes(opts: CheckOptions) -> Routes {
    Routes::default().add(
        "/validate",
        Arc::new(move |request: &AdmissionRequest| {
            let response = review::validate(request, &opts);
            tracing::debug!(uid = %request.uid, kind = %request.kind.kind, name = %request.name,
                namespace = %request.namespace, operation = %request.operation,
                dry_run = request.dry_run.unwrap_or(false), allowed = response.allowed, "validated");
            response
        }),
    )
}

async fn admit(AxState(handler): AxState<Handler>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an AdmissionReview must be sent as Content-Type: application/json\n",
        )
            .into_response();
    }
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match review::review(&body, |request| handler(request)) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(review::BadReview(message)) => {
            tracing::debug!(%message, "refusing a bad AdmissionReview");
            (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
        }
    }
}

/// The request body, at most [`MAX_BODY_BYTES`]. A declared `Content-Length` past it is
/// refused before anything is read: a client waiting on `Expect: 100-continue` (curl does for
/// large bodies) gets the 413 instead of `100 Continue` and sends nothing, where reading up
/// to the limit first would close the connection on a client still sending, whose kernel may
/// then drop the 413 for the reset.
async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, Response> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an AdmissionReview is at most {MAX_BODY_BYTES} bytes\n"),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    use futures::StreamExt as _;
    // What the client declares is trusted only up to 64 KiB ahead of what it sends.
    let mut read = Vec::with_capacity(declared.map_or(0, |n| n.min(64 * 1024) as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}\n"),
            )
                .into_response()
        })?;
        if read.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(read))
}

impl WebhookArgs {
    /// Whether the webhooks are served with the mesh CA's DNS certificate, if a CA runs: they
    /// are on and no `--webhook-cert-dir` is given.
    pub fn wants_mesh_certificate(&self) -> bool {
        self.addr.is_some() && self.cert_dir.is_none()
    }

    /// The names the API server dials the webhook Service by (`<service>.<ns>.svc`, what it
    /// verifies for a `service` reference) and its fully qualified form.
    pub fn service_dns_names(&self, system_namespace: &str) -> Vec<String> {
        vec![
            format!("{}.{system_namespace}.svc", self.service),
            format!("{}.{system_namespace}.svc.cluster.local", self.service),
        ]
    }

    /// Picks the certificate (`--webhook-cert-dir`, else `mesh`, else a generated one), starts
    /// its reload and, with Kubernetes, the CA bundle patching; returns what handshakes read,
    /// or `None` when the webhooks are off.
    pub fn start(
        &self,
        system_namespace: &str,
        kube: Option<&kube::Client>,
        leader: watch::Receiver<bool>,
        mesh: Option<MeshCertificate>,
    ) -> Result<Option<Arc<dyn ResolvesServerCert>>> {
        if self.addr.is_none() {
            return Ok(None);
        }
        let (serving, ca_rx): (Arc<dyn ResolvesServerCert>, _) = match (&self.cert_dir, mesh) {
            (Some(dir), _) => {
                let pem = cert::read_dir(dir)
                    .with_context(|| format!("the webhook certificate in {}", dir.display()))?;
                let serving =
                    cert::ServingCert::new(&pem).context("the webhook serving certificate")?;
                let (ca_tx, ca_rx) = watch::channel(pem.ca.clone());
                tokio::spawn(cert::reload(dir.clone(), pem, serving.clone(), ca_tx));
                (serving as Arc<dyn ResolvesServerCert>, ca_rx)
            }
            (None, Some(mesh)) => {
                tracing::info!(names = ?mesh.cert.names(),
                    "the webhooks serve the mesh CA's certificate; their caBundle is the CA's trust bundle");
                let cert = mesh.cert as Arc<dyn ResolvesServerCert>;
                (cert, ca_bundle::trust_bundle(mesh.authority))
            }
            (None, None) => {
                let mut names = self.service_dns_names(system_namespace);
                names.push("localhost".to_owned());
                let ips = [
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ];
                let pem = cert::generate(&names, &ips)?;
                let serving =
                    cert::ServingCert::new(&pem).context("the webhook serving certificate")?;
                // The sender is dropped: the CA never changes, `ca_bundle::run` keeps it.
                (
                    serving as Arc<dyn ResolvesServerCert>,
                    watch::channel(pem.ca).1,
                )
            }
        };
        if let (Some(client), Some(name)) = (kube, &self.validation_config) {
            // Only the leader patches: replicas would otherwise overwrite each other.
            let (client, name) = (client.clone(), name.clone());
            let rx = ca_rx.clone();
            tokio::spawn(super::leader::while_leader(
                leader.clone(),
                "validating webhook CA bundle",
                move || {
                    ca_bundle::run::<ValidatingWebhookConfiguration>(
                        client.clone(),
                        name.clone(),
                        rx.clone(),
                    )
                },
            ));
        }
        if let (Some(client), Some(name)) = (kube, &self.validation_config) {
            // Fail closed once the webhook is seen refusing invalid config (istiod's switch).
            let (client, name, ns) = (client.clone(), name.clone(), system_namespace.to_owned());
            tokio::spawn(super::leader::while_leader(
                leader.clone(),
                "validating webhook failurePolicy",
                move || fail_closed::run(client.clone(), name.clone(), ns.clone()),
            ));
        }
        if let (Some(client), Some(name)) = (kube, &self.injector_config) {
            let (client, name) = (client.clone(), name.clone());
            tokio::spawn(super::leader::while_leader(
                leader,
                "injector webhook CA bundle",
                move || {
                    ca_bundle::run::<MutatingWebhookConfiguration>(
                        client.clone(),
                        name.clone(),
                        ca_rx.clone(),
                    )
                },
            ));
        }
        if kube.is_none() && (self.validation_config.is_some() || self.injector_config.is_some()) {
            tracing::warn!(
                "--validation-webhook-config-name and --injector-webhook-config-name need --kubeconfig; no CA bundle is patched"
            );
        }
        Ok(Some(serving))
    }
}

/// TLS connections, handshaken off the accept loop, for axum.
struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends with the process.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and hands the ones whose handshake succeeds to `tx`.
async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting a webhook connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
            }
        });
    }
}

/// Serves `routes` on `addr` over TLS until `stop` turns true, then lets the requests in
/// flight finish (connections close after their current request) and returns.
pub async fn serve(
    addr: SocketAddr,
    cert: Arc<dyn ResolvesServerCert>,
    routes: Routes,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the webhook address {addr}"))?;
    let local = listener.local_addr()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    // HTTP/1.1 only: what the router is built for; the API server speaks it to webhooks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, tx));
    tracing::info!(addr = %local, "serving admission webhooks (HTTPS)");
    let result = axum::serve(TlsListener { local, accepted }, routes.router())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await
        .context("serving the webhooks");
    accepting.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> axum::body::Body {
        let parts: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b' '; *n])))
            .collect();
        axum::body::Body::from_stream(futures::stream::iter(parts))
    }

    fn length(n: usize) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_whatever_their_framing() {
        let no_length = axum::http::HeaderMap::new();
        // Streamed without a length: read to the limit, then refused.
        let at_limit = read_body(
            &no_length,
            chunks(&[MAX_BODY_BYTES / 2, MAX_BODY_BYTES / 2]),
        );
        assert_eq!(at_limit.await.map(|b| b.len()).ok(), Some(MAX_BODY_BYTES));
        let over = read_body(&no_length, chunks(&[MAX_BODY_BYTES, 1])).await;
        assert_eq!(
            over.err().map(|r| r.status()),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        // A declared length past the limit is refused without reading anything: the body
        // here would fail if it were polled.
        let failing = axum::body::Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("must not be read"),
        )]));
        let declared = read_body(&length(MAX_BODY_BYTES + 1), failing).await;
        assert_eq!(
            declared.err().map(|r| r.status()),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        // A body that fails while read is a bad request.
        let failing = axum::body::Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("reset"),
        )]));
        let broken = read_body(&length(10), failing).await;
        assert_eq!(
            broken.err().map(|r| r.status()),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
