//! Who is asking: Istio's `security.Authenticator`s. Each looks at one kind of credential
//! (a TLS client certificate, a Kubernetes service-account token, a development token file); the first that accepts the
//! caller names its identities, and if none does the request is unauthenticated.

mod client_cert;
mod kube_token;
mod static_token;

pub use client_cert::ClientCertAuthenticator;
pub use kube_token::{
    identity_from_review, TokenCache, TokenReviewAuthenticator, DEFAULT_AUDIENCE, DEFAULT_CACHE_TTL,
};
pub use static_token::{StaticTokenAuthenticator, TokenFileError};

use std::sync::Arc;

use futures::future::BoxFuture;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::metadata::MetadataMap;

use crate::identity::Identity;

/// What a caller presented: its gRPC request metadata and, over TLS, its certificate chain
/// (leaf first) as the handshake received it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Request headers (`authorization: Bearer ...` lives here).
    pub metadata: &'a MetadataMap,
    /// The TLS peer's chain, leaf first; `None` without TLS or without a client certificate.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
}

/// Why an authenticator did not accept a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The caller did not present this kind of credential.
    #[error("{0}")]
    Absent(String),
    /// The credential was presented and is not valid.
    #[error("{0}")]
    Rejected(String),
    /// The credential could not be checked (e.g. the API server did not answer).
    #[error("{0}")]
    Unavailable(String),
}

/// A way to authenticate callers.
pub trait Authenticator: Send + Sync {
    /// Short name for error messages, e.g. `client certificate`.
    fn name(&self) -> &'static str;
    /// The caller's identities, or why this authenticator does not accept it.
    fn authenticate<'a>(
        &'a self,
        caller: &'a Caller<'a>,
    ) -> BoxFuture<'a, Result<Vec<Identity>, AuthError>>;
}

/// The caller's identities from the first authenticator that accepts it (in order, as
/// istiod tries them); otherwise every authenticator's reason, joined.
pub async fn authenticate(
    authenticators: &[Arc<dyn Authenticator>],
    caller: &Caller<'_>,
) -> Result<Vec<Identity>, String> {
    let mut reasons = Vec::with_capacity(authenticators.len());
    for authenticator in authenticators {
        match authenticator.authenticate(caller).await {
            Ok(ids) if !ids.is_empty() => return Ok(ids),
            Ok(_) => reasons.push(format!("{}: no identity", authenticator.name())),
            Err(e) => reasons.push(format!("{}: {e}", authenticator.name())),
        }
    }
    if reasons.is_empty() {
        reasons.push("no authenticator is configured".to_owned());
    }
    Err(reasons.join("; "))
}

/// The bearer token of the `authorization` header, if any (scheme matched case-insensitively,
/// RFC 7235).
pub(crate) fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Rejected("authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(AuthError::Rejected(
            "authorization header is not 'Bearer <token>'".into(),
        )),
    }
}

/// Signature algorithms accepted in client chains: those rustls' *ring* provider verifies.
static VERIFY_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Verifies `leaf` as a TLS client certificate: a path through `intermediates` to one of
/// `roots`, every certificate valid at `now`, the leaf allowed for client authentication.
pub(crate) fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), webpki::Error> {
    let anchors = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)?;
    end_entity
        .verify_for_usage(
            VERIFY_ALGS,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Vec<Identity>, AuthError>);
    impl Authenticator for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn authenticate<'a>(
            &'a self,
            _: &'a Caller<'a>,
        ) -> BoxFuture<'a, Result<Vec<Identity>, AuthError>> {
            Box::pin(async move { self.0.clone() })
        }
    }

    #[tokio::test]
    async fn first_accepting_authenticator_wins_and_failures_are_joined() {
        let metadata = MetadataMap::new();
        let caller = Caller {
            metadata: &metadata,
            peer_certificates: None,
        };
        let id = Identity::new("cluster.local", "a", "b").unwrap();
        let no: Arc<dyn Authenticator> = Arc::new(Fixed(Err(AuthError::Absent("nothing".into()))));
        let yes: Arc<dyn Authenticator> = Arc::new(Fixed(Ok(vec![id.clone()])));
        assert_eq!(
            authenticate(&[no.clone(), yes], &caller).await.unwrap(),
            vec![id]
        );
        let err = authenticate(&[no.clone(), no], &caller).await.unwrap_err();
        assert_eq!(err, "fixed: nothing; fixed: nothing");
        assert!(authenticate(&[], &caller).await.is_err());
    }

    #[test]
    fn bearer_tokens() {
        let with = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("authorization", v.parse().unwrap());
            m
        };
        assert_eq!(bearer_token(&MetadataMap::new()), Ok(None));
        assert_eq!(bearer_token(&with("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&with("bearer abc")), Ok(Some("abc")));
        assert!(bearer_token(&with("Basic abc")).is_err());
        assert!(bearer_token(&with("Bearer ")).is_err());
        assert!(bearer_token(&with("abc")).is_err());
    }
}
