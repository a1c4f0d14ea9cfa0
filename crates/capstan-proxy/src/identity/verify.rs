//! Peer verification as Envoy does it for Istio's mTLS: the chain must lead to the current
//! roots (rotations included), and the leaf's SANs must pass the context's SAN matchers
//! ([`SanMatchers`]: istiod's exact SPIFFE ids outbound, its trust-domain prefix inbound). The
//! TLS server name is not checked: Istio's SNI (`outbound_.9080_._.reviews...`) names a
//! cluster, not the peer.

use super::san::SanMatchers;
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
    /// Email (rfc822Name) subject alternative names.
    pub emails: Vec<String>,
    /// IP address subject alternative names, as text (`10.0.0.1`, `2001:db8::1`).
    pub ips: Vec<String>,
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
    let (mut uris, mut dns, mut emails, mut ips) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_string()),
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::RFC822Name(e) => emails.push((*e).to_string()),
                GeneralName::IPAddress(ip) => ips.extend(ip_text(ip)),
                _ => {}
            }
        }
    }
    Ok(Leaf {
        uris,
        dns,
        emails,
        ips,
        subject: cert.subject().to_string(),
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
    })
}

/// An IP address SAN's octets as text; anything but 4 or 16 octets (a name constraint's
/// address and mask, say) is no address.
fn ip_text(octets: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok()?.into(),
        16 => <[u8; 16]>::try_from(octets).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
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

/// Checks peers against the identity's current roots and the SAN matchers.
#[derive(Debug)]
pub struct PeerVerifier {
    identity: Arc<Identity>,
    sans: SanMatchers,
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PeerVerifier {
    /// A verifier; `mandatory` only matters for client certificates (STRICT vs. optional).
    pub fn new(
        identity: Arc<Identity>,
        sans: SanMatchers,
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
            self.sans.check(&parsed).map_err(other)?;
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

/// Another verifier's verdict, then the SAN matchers: rustls's WebPKI verifiers for
/// `trusted_ca` roots given as PEM, which know nothing of Envoy's SAN matchers.
#[derive(Debug)]
pub struct SanChecked<V: ?Sized> {
    /// The chain verifier.
    pub inner: Arc<V>,
    /// Checked once `inner` accepts the chain.
    pub sans: SanMatchers,
}

impl<V: ?Sized> SanChecked<V> {
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        parse_leaf(leaf)
            .and_then(|l| self.sans.check(&l))
            .map_err(|m| {
                Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                    Arc::new(PeerError(m)),
                )))
            })
    }
}

impl<V: ServerCertVerifier + ?Sized> ServerCertVerifier for SanChecked<V> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        self.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ServerCertVerifier::verify_tls12_signature(&*self.inner, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ServerCertVerifier::verify_tls13_signature(&*self.inner, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(&*self.inner)
    }
}

impl<V: ClientCertVerifier + ?Sized> ClientCertVerifier for SanChecked<V> {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ClientCertVerifier::verify_tls12_signature(&*self.inner, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ClientCertVerifier::verify_tls13_signature(&*self.inner, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(&*self.inner)
    }
}
