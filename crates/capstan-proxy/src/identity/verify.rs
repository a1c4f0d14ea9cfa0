//! Peer verification as Envoy does it for Istio's mTLS: the chain must lead to the current
//! roots (rotations included), and the leaf must carry one of the expected SPIFFE ids
//! (`match_subject_alt_names`) when any are given. The TLS server name is not checked: Istio's
//! SNI (`outbound_.9080_._.reviews...`) names a cluster, not the peer.

use super::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the proxy needs from a leaf certificate.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// The subject (RFC 4514).
    pub subject: String,
    /// Validity.
    pub not_before: SystemTime,
    /// Validity.
    pub not_after: SystemTime,
}

fn system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// Parses a DER certificate's SANs and validity.
pub fn parse_leaf(der: &CertificateDer<'_>) -> Result<Leaf, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_string()),
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                _ => {}
            }
        }
    }
    Ok(Leaf {
        uris,
        dns,
        subject: cert.subject().to_string(),
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
    })
}

/// Verifies `leaf` (with `intermediates`) up to one of `roots` for `usage` at `now`.
pub fn chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    usage: webpki::KeyUsage,
    now: UnixTime,
) -> Result<(), String> {
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    if anchors.is_empty() {
        return Err("no usable root certificate".into());
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("leaf: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Checks peers against the identity's current roots and an optional SPIFFE id allow-list.
#[derive(Debug)]
pub struct PeerVerifier {
    identity: Arc<Identity>,
    sans: Vec<String>,
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PeerVerifier {
    /// A verifier; `mandatory` only matters for client certificates (STRICT vs. optional).
    pub fn new(
        identity: Arc<Identity>,
        sans: Vec<String>,
        mandatory: bool,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> PeerVerifier {
        PeerVerifier {
            identity,
            sans,
            mandatory,
            provider,
        }
    }

    fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: webpki::KeyUsage,
        now: UnixTime,
    ) -> Result<(), Error> {
        let other = |m: String| {
            Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(PeerError(m)),
            )))
        };
        let Some(material) = self.identity.current() else {
            return Err(other("no workload certificate and roots yet".into()));
        };
        chain(leaf, intermediates, &material.roots, usage, now).map_err(|e| {
            if e.contains("Expired") || e.contains("NotValidYet") {
                Error::InvalidCertificate(rustls::CertificateError::Expired)
            } else if e.contains("UnknownIssuer") {
                Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            } else {
                other(e)
            }
        })?;
        if !self.sans.is_empty() {
            let parsed = parse_leaf(leaf).map_err(other)?;
            if !parsed.uris.iter().any(|u| self.sans.contains(u)) {
                return Err(other(format!(
                    "peer identity {:?} is not one of {:?}",
                    parsed.uris, self.sans
                )));
            }
        }
        Ok(())
    }
}

/// A verification failure's reason, carried in `CertificateError::Other`.
#[derive(Debug)]
pub(crate) struct PeerError(pub(crate) String);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerError {}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(
            end_entity,
            intermediates,
            webpki::KeyUsage::server_auth(),
            now,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(
            end_entity,
            intermediates,
            webpki::KeyUsage::client_auth(),
            now,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
