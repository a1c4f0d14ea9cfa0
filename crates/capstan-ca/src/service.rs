//! The `istio.v1.auth.IstioCertificateService/CreateCertificate` gRPC service (istiod's
//! `security/pkg/server/ca.Server`): authenticate the caller, refuse impersonation, sign the
//! CSR for the caller's identities.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use capstan_ca_proto::{
    IstioCertificateRequest, IstioCertificateResponse, CREATE_CERTIFICATE_PATH,
    IMPERSONATED_IDENTITY, SERVICE_NAME,
};
use rustls_pki_types::CertificateDer;
use tonic::codegen::{BoxFuture, StdError};
use tonic::{Request, Response, Status};

use crate::authn::{authenticate, Authenticator, Caller};
use crate::current::CurrentCa;
use crate::metrics::CaMetrics;

/// Largest request accepted: a CSR is about a kilobyte; this leaves room for RSA-4096 and
/// metadata while keeping hostile messages small.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The TLS client's certificate chain (leaf first), for servers that terminate TLS
/// themselves: insert it in the request extensions. Tonic's own TLS server is read directly.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The CA gRPC service; cheap to clone.
#[derive(Clone)]
pub struct CaService {
    ca: CurrentCa,
    authenticators: Arc<[Arc<dyn Authenticator>]>,
    metrics: Arc<CaMetrics>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.authenticators.iter().map(|a| a.name()).collect();
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("authenticators", &names)
            .finish()
    }
}

impl CaService {
    /// A service signing with `ca` (the version in force at each request), trying
    /// `authenticators` in order.
    pub fn new(ca: impl Into<CurrentCa>, authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self {
            ca: ca.into(),
            authenticators: authenticators.into(),
            metrics: Arc::default(),
        }
    }

    /// Counts into `metrics` (shared with the metrics endpoint) instead of its own counters.
    pub fn with_metrics(mut self, metrics: Arc<CaMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What it has counted.
    pub fn metrics(&self) -> &Arc<CaMetrics> {
        &self.metrics
    }

    /// Handles one `CreateCertificate` call.
    pub async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.request();
        let peer_certs = request.peer_certs().or_else(|| {
            request
                .extensions()
                .get::<PeerCertificates>()
                .map(|p| p.0.clone())
        });
        let caller = Caller {
            metadata: request.metadata(),
            peer_certificates: peer_certs.as_deref().map(Vec::as_slice),
        };
        let identities = authenticate(&self.authenticators, &caller)
            .await
            .map_err(|reasons| {
                self.metrics.authentication_failure();
                tracing::info!(%reasons, "CreateCertificate: authentication failed");
                Status::unauthenticated(format!("request authentication failed: {reasons}"))
            })?;
        // istiod lets trusted node agents (ztunnel) ask on behalf of pods on their node; this
        // CA has no node authorizer, so such a request is refused, as istiod does without one.
        let message = request.into_inner();
        if message
            .metadata_string(IMPERSONATED_IDENTITY)
            .is_some_and(|s| !s.is_empty())
        {
            self.metrics.authentication_failure();
            return Err(Status::unauthenticated(format!(
                "request impersonation authentication failure: {IMPERSONATED_IDENTITY} is not \
                 supported by this CA (no node authorizer)"
            )));
        }
        // One version for the whole request: the chain and the bundle returned match.
        let ca = self.ca.get();
        let ids = identities.clone();
        // Signing is CPU work (an RSA CA key takes milliseconds): keep it off the I/O threads.
        let signed = tokio::task::spawn_blocking(move || {
            ca.sign(&message.csr, &ids, message.validity_duration)
        })
        .await
        .map_err(|e| {
            self.metrics.sign_error("CERT_GEN_ERROR");
            Status::internal(format!("signing task failed: {e}"))
        })?;
        match signed {
            Ok(cert_chain) => {
                self.metrics.issued();
                tracing::debug!(identities = ?identities, "CreateCertificate: issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(e) if e.is_caller_error() => {
                self.metrics.sign_error(e.error_type());
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => {
                self.metrics.sign_error(e.error_type());
                tracing::warn!(error = %e, "CreateCertificate: signing failed");
                Err(Status::internal(e.to_string()))
            }
        }
    }
}

struct CreateCertificate(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.create_certificate(request).await })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for CaService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CREATE_CERTIFICATE_PATH {
            let response =
                Status::unimplemented(format!("unknown method {}", request.uri().path()))
                    .into_http::<tonic::body::Body>();
            return Box::pin(async move { Ok(response) });
        }
        let method = CreateCertificate(self.clone());
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<IstioCertificateResponse, IstioCertificateRequest>::default();
            let mut grpc =
                tonic::server::Grpc::new(codec).max_decoding_message_size(MAX_REQUEST_BYTES);
            Ok(grpc.unary(method, request).await)
        })
    }
}

impl tonic::server::NamedService for CaService {
    const NAME: &'static str = SERVICE_NAME;
}
