//! Citadel for Capstan: Istio's certificate authority.
//!
//! - [`CertificateAuthority`]: key material from a plugged-in `cacerts` directory, or a
//!   self-signed root generated at first start and persisted through [`CaStorage`]
//!   (Istio's `istio-ca-secret`: [`DirStorage`] or [`KubeSecretStorage`]); signs workload CSRs for authenticated [`Identity`]s and
//!   issues the control plane's serving certificate.
//! - [`authn`]: who is calling, by TLS client certificate or Kubernetes service-account token.
//! - [`CaService`]: the `istio.v1.auth.IstioCertificateService` gRPC service, counting into
//!   [`CaMetrics`] (istiod's `citadel_server_*` families).
//! - [`watch_cacerts`]: a plugged-in CA reloaded when its files change, shared as a
//!   [`CurrentCa`]; its [`TrustBundle`] keeps old roots through a root rotation.
//!
//! Signing is plain synchronous code; only storage, TokenReview and the service are async.

#![deny(missing_docs)]

pub mod authn;
mod authority;
mod csr;
mod current;
mod identity;
mod metrics;
mod pem;
mod reload;
mod secret_storage;
mod service;
mod sign;
mod storage;
mod trust;

pub use authn::{
    AuthError, Authenticator, Caller, ClientCertAuthenticator, StaticTokenAuthenticator,
    TokenCache, TokenFileError, TokenReviewAuthenticator,
};
pub use authority::{read_cacerts_dir, CaError, CaOptions, CertificateAuthority};
pub use csr::CsrError;
pub use current::CurrentCa;
pub use identity::{validate_trust_domain, Identity, IdentityError, DEFAULT_TRUST_DOMAIN};
pub use metrics::{CaMetrics, CaMetricsSnapshot, SIGN_ERROR_TYPES};
pub use reload::{watch_cacerts, CacertsReloader, Reload};
pub use secret_storage::{
    object_from_secret, secret_from_object, KubeSecretStorage, CA_SECRET_TYPE,
};
pub use service::{CaService, PeerCertificates};
pub use sign::{ServingCertificate, SignError};
pub use storage::{
    CaSecret, CaStorage, DirStorage, StorageError, CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT,
    SELF_SIGNED_SECRET_NAME,
};
pub use trust::{Issuance, TrustBundle, TrustedRoot};

#[cfg(test)]
mod sign_tests;
#[cfg(test)]
mod test_support;
