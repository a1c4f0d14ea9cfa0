//! istiod's port 15012: gRPC over TLS serving the CA (`IstioCertificateService`) and xDS for
//! authenticated proxies.
//!
//! The serving certificate is the control plane's DNS certificate ([`DnsCertificate`]: issued
//! by the CA for istiod's DNS names, renewed without dropping connections). Client
//! certificates are optional at the TLS layer (a workload's first request has only its token)
//! and, when given, verified against the CA's trust bundle as it is at the handshake (a root
//! rotation changes it). Every xDS stream is authenticated before it starts (client
//! certificate, service-account token, development token file: `UNAUTHENTICATED` otherwise)
//! and its node authorized against the identities found (`PERMISSION_DENIED`).
//!
//! Served by hyper's HTTP/2 server as port 15010 is ([`grpc_server`]: the bounded per-stream
//! send buffer matters most here, where the sidecars connect). Without tonic's `Server`, no
//! `TlsConnectInfo` reaches the services: each connection's client certificates go into its
//! requests' extensions as [`PeerCertificates`], which both services read.

use super::ca::Ca;
use super::dns_cert::DnsCertificate;
use super::grpc_server;
use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use capstan_ca::authn::authenticate;
use capstan_ca::{
    Authenticator, CaService, Caller, CertificateAuthority, CurrentCa, PeerCertificates,
};
use capstan_xds::server::AdsService;
use capstan_xds::{AuthenticatedPeer, IstioGenerator, NamespaceAuthorizer, PeerIdentity};
use rustls::server::WebPkiClientVerifier;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::BoxFuture;

/// A TLS handshake that takes longer is abandoned (a client that connects and says nothing
/// must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration: current serving certificate, optional client certificates
/// verified against the CA's trust bundle, HTTP/2 by ALPN (gRPC clients insist on it).
fn tls_config(
    ca: &CertificateAuthority,
    cert: Arc<DnsCertificate>,
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for root in ca.roots() {
        roots
            .add(root.clone())
            .context("adding a CA root to the TLS trust store")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Keeps the client roots current, forever: when the CA changes (a root rotation changes
/// its trust bundle), the next handshakes verify client certificates against the new one.
/// The serving certificate renews itself ([`DnsCertificate`]).
async fn keep_client_roots(
    mut ca: CurrentCa,
    cert: Arc<DnsCertificate>,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
) {
    loop {
        let next = ca.changed().await;
        match tls_config(&next, cert.clone()) {
            Ok(c) => config.store(Arc::new(c)),
            Err(e) => tracing::error!(error = %format!("{e:#}"),
                "the TLS port keeps its client roots: the new trust bundle is unusable"),
        }
    }
}

/// The ADS service behind authentication: a stream whose caller no authenticator accepts is
/// refused before it starts; otherwise the caller's identities go with the request, for the
/// service's authorizer.
#[derive(Clone)]
struct AuthenticatedAds {
    inner: AdsService<IstioGenerator>,
    authenticators: Arc<[Arc<dyn Authenticator>]>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AuthenticatedAds {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        let authenticators = self.authenticators.clone();
        Box::pin(async move {
            let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
            let peer_certs = request
                .extensions()
                .get::<PeerCertificates>()
                .map(|certs| certs.0.clone());
            let caller = Caller {
                metadata: &metadata,
                peer_certificates: peer_certs.as_deref().map(Vec::as_slice),
            };
            match authenticate(&authenticators, &caller).await {
                Ok(identities) => {
                    let peer = AuthenticatedPeer::new(
                        identities
                            .iter()
                            .map(|id| PeerIdentity {
                                id: id.to_uri(),
                                namespace: id.namespace().to_owned(),
                            })
                            .collect(),
                    );
                    request.extensions_mut().insert(peer);
                    inner.call(request).await
                }
                Err(reasons) => {
                    tracing::info!(%reasons, "refusing an xDS stream: authentication failed");
                    Ok(
                        tonic::Status::unauthenticated(format!("authentication failed: {reasons}"))
                            .into_http(),
                    )
                }
            }
        })
    }
}

impl tonic::server::NamedService for AuthenticatedAds {
    const NAME: &'static str = <AdsService<IstioGenerator> as tonic::server::NamedService>::NAME;
}

/// A connection's service: its client's certificate chain (if it gave one) added to each of
/// its requests, for the services' authenticators.
#[derive(Clone)]
struct WithPeerCertificates<S> {
    inner: S,
    certs: Option<PeerCertificates>,
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for WithPeerCertificates<S>
where
    S: tonic::codegen::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(certs) = &self.certs {
            request.extensions_mut().insert(certs.clone());
        }
        self.inner.call(request)
    }
}

/// Serves port 15012, with `cert` (issued by `ca`), until the task is aborted (the shutdown
/// does, after the drain has closed the xDS streams of both ports).
pub async fn serve(
    addr: SocketAddr,
    ca: Ca,
    cert: Arc<DnsCertificate>,
    ads: AdsService<IstioGenerator>,
) -> Result<()> {
    let names = cert.names().to_vec();
    let config = Arc::new(ArcSwap::from_pointee(tls_config(
        &ca.authority.get(),
        cert.clone(),
    )?));
    tokio::spawn(keep_client_roots(
        ca.authority.clone(),
        cert,
        config.clone(),
    ));

    let ads = AuthenticatedAds {
        inner: ads.with_authorizer(Arc::new(NamespaceAuthorizer)),
        authenticators: ca.authenticators.clone().into(),
    };
    let ca_service =
        CaService::new(ca.authority.clone(), ca.authenticators).with_metrics(ca.metrics);
    // By gRPC path, as tonic's `Server` routes: another service is `UNIMPLEMENTED`.
    let routes = tonic::service::Routes::new(ca_service)
        .add_service(ads)
        .prepare();

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the secure xDS address {addr}"))?;
    tracing::info!(%addr, ?names, "serving xDS and the CA over TLS");
    // Handshakes run in their own tasks so that a slow client does not hold up the others.
    let (tx, rx) = tokio::sync::mpsc::channel::<(
        Box<dyn grpc_server::Io>,
        WithPeerCertificates<tonic::service::Routes>,
    )>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting on the secure xDS port failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // The configuration in force now: a CA change applies to the next handshake.
            let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
            let tx = tx.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let certs = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|chain| PeerCertificates(Arc::new(chain.to_vec())));
                        let service = WithPeerCertificates {
                            inner: routes,
                            certs,
                        };
                        let _ = tx.send((Box::new(tls), service)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });

    // Not stopped gracefully, as before: the xDS streams of this port are closed by the drain
    // (one ADS server behind both ports) and in-flight CA calls are short.
    grpc_server::serve(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        std::future::pending(),
    )
    .await;
    Ok(())
}
