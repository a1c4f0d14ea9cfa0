//! Downstream handshakes with SDS secrets: a certificate resolver and a client verifier that
//! read their [`Slot`]s at every handshake. A secret not (or no longer) present fails that
//! handshake with an alert; nothing else is affected.

use super::Slot;
use crate::identity::san::SanMatchers;
use crate::identity::verify::{parse_leaf, PeerError};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;

/// A secret name and its slot.
pub type Named = (String, Arc<Slot>);

/// How clients are checked: against the CA secret `ca`, and their SANs against `sans` (the
/// default validation context's `match_subject_alt_names`, Istio's Gateway `subjectAltNames`).
#[derive(Debug)]
pub struct ClientAuth {
    /// The CA secret.
    pub ca: Named,
    /// SAN matchers; empty: any client of the CA.
    pub sans: SanMatchers,
    /// `require_client_certificate` (Istio's MUTUAL); otherwise a certificate is verified when
    /// presented (OPTIONAL_MUTUAL).
    pub mandatory: bool,
}

/// A server configuration serving the certificates `certs` (in order of preference) and
/// checking clients as `clients` says.
pub fn server_config(
    certs: Vec<Named>,
    clients: Option<ClientAuth>,
    alpn: Vec<Vec<u8>>,
) -> Arc<rustls::ServerConfig> {
    let provider = crate::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match clients {
        Some(c) => builder.with_client_cert_verifier(Arc::new(Clients { auth: c, provider })),
        None => builder.with_no_client_auth(),
    };
    let mut c = builder.with_cert_resolver(Arc::new(Certificates(certs)));
    c.alpn_protocols = alpn;
    // No resumption: a resumed session skips both the certificate and the client check, so a
    // rotated or removed secret (a revoked CA, say) would still admit holders of old sessions.
    // Envoy scopes its session cache to the secret versions; rustls's cache is not.
    c.session_storage = Arc::new(NoServerSessionStorage {});
    c.send_tls13_tickets = 0;
    Arc::new(c)
}

/// Serves the first certificate present whose key can sign with a scheme the client offers
/// (Istio's `credentialNames`: say one RSA and one ECDSA certificate).
#[derive(Debug)]
struct Certificates(Vec<Named>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        let found = self
            .0
            .iter()
            .filter_map(|(_, slot)| slot.certificate())
            .find(|k| k.key.choose_scheme(offered).is_some());
        if found.is_none() {
            let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
            tracing::debug!(
                secrets = ?names,
                "TLS handshake refused: no certificate received for these SDS secrets, or none the client can verify"
            );
        }
        found
    }
}

#[derive(Debug)]
struct Clients {
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
}

fn invalid(message: String) -> Error {
    Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(PeerError(message)),
    )))
}

impl ClientCertVerifier for Clients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth.mandatory
    }

    /// No hints: the CA can change at any handshake, and clients send their certificate
    /// regardless when the list is empty.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let (name, slot) = &self.auth.ca;
        let Some(ca) = slot.authority() else {
            return Err(invalid(format!("CA secret {name} has not been received")));
        };
        ca.verify_client_cert(end_entity, intermediates, now)?;
        if !self.auth.sans.is_empty() {
            let leaf = parse_leaf(end_entity).map_err(invalid)?;
            self.auth.sans.check(&leaf).map_err(invalid)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
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
