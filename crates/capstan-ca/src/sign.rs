//! Issuing certificates: workload certificates from CSRs (istiod's `IstioCA.Sign`), and the
//! control plane's own serving certificate.

use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SerialNumber,
};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::authority::{CaError, CertificateAuthority};
use crate::csr::{verified_public_key, CsrError};
use crate::identity::Identity;

/// Issued certificates start this long before now, so that peers whose clocks lag a little
/// do not see them as not yet valid.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is malformed, not self-signed by its key, or has an unacceptable key.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// A negative `validity_duration`.
    #[error("requested validity_duration {0}s is negative")]
    NegativeTtl(i64),
    /// No identity to put in the certificate.
    #[error("no identity to issue a certificate for")]
    NoIdentity,
    /// An identity outside the CA's trust domain.
    #[error("identity {identity} is not in the CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity.
        identity: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// A DNS name that cannot be put in a certificate.
    #[error("invalid DNS name {0:?}")]
    DnsName(String),
    /// The CA certificate has expired: nothing can be issued until it is replaced.
    #[error("the CA certificate expired at {0}")]
    CaExpired(OffsetDateTime),
    /// Encoding or signing failed (a bug or a broken key, not the caller's fault).
    #[error("issuing the certificate failed: {0}")]
    Issue(String),
}

impl SignError {
    /// Whether the caller's input caused it (gRPC `InvalidArgument`) rather than the CA
    /// (`Internal`).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Self::Csr(_)
                | Self::NegativeTtl(_)
                | Self::DnsName(_)
                | Self::ForeignTrustDomain { .. }
        )
    }
}

impl From<rcgen::Error> for SignError {
    fn from(e: rcgen::Error) -> Self {
        Self::Issue(e.to_string())
    }
}

/// A certificate and key for serving TLS, e.g. the xDS/CA port 15012.
#[derive(Clone)]
pub struct ServingCertificate {
    /// PEM: the leaf, then the intermediates (not the root).
    pub cert_chain_pem: String,
    /// PEM PKCS#8 private key of the leaf.
    pub key_pem: String,
    /// When the leaf expires (renew before).
    pub not_after: SystemTime,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A positive random 159-bit serial (RFC 5280 allows 20 octets; the top bit clear keeps the
/// DER integer within them).
pub(crate) fn random_serial(rng: &ring::rand::SystemRandom) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 20];
    rng.fill(&mut bytes).map_err(|_| CaError::Invalid {
        what: "random serial".into(),
        reason: "the system random generator failed".into(),
    })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a shorter encoding
    Ok(SerialNumber::from_slice(&bytes))
}

fn leaf_params(
    ca: &CertificateAuthority,
    sans: Vec<SanType>,
    ttl: Duration,
) -> Result<CertificateParams, SignError> {
    let now = OffsetDateTime::now_utc();
    if ca.ca_not_after <= now {
        return Err(SignError::CaExpired(ca.ca_not_after));
    }
    let mut params = CertificateParams::default();
    // Empty subject, identity only in the (then critical) SAN, as istiod issues them.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    // A leaf that outlives its issuer fails verification after the issuer expires anyway.
    // (A TTL past the year 9999 cannot overflow here: it is simply the CA's expiry.)
    params.not_after = time::Duration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .map_or(ca.ca_not_after, |end| end.min(ca.ca_not_after));
    params.serial_number =
        Some(random_serial(&ca.rng).map_err(|e| SignError::Issue(e.to_string()))?);
    Ok(params)
}

/// The validity to grant: `requested` seconds if positive, else the default; at most the
/// maximum. (istiod rejects requests above the maximum instead; cutting them lets an agent
/// configured for longer still get a certificate.)
pub(crate) fn granted_ttl(
    ca: &CertificateAuthority,
    requested: i64,
) -> Result<Duration, SignError> {
    let options = ca.options();
    let ttl = match requested {
        r if r < 0 => return Err(SignError::NegativeTtl(r)),
        0 => options.default_cert_ttl,
        r => Duration::from_secs(r as u64),
    };
    Ok(ttl.min(options.max_cert_ttl))
}

impl CertificateAuthority {
    /// Issues a workload certificate for the public key of `csr_pem`, naming exactly
    /// `identities` (the authenticated caller's, never the CSR's SANs), valid for
    /// `requested_ttl_seconds` (0: default; capped at the maximum). Returns the PEM chain as
    /// istiod does: the leaf, each intermediate, then the root bundle last.
    pub fn sign(
        &self,
        csr_pem: &str,
        identities: &[Identity],
        requested_ttl_seconds: i64,
    ) -> Result<Vec<String>, SignError> {
        let ttl = granted_ttl(self, requested_ttl_seconds)?;
        if identities.is_empty() {
            return Err(SignError::NoIdentity);
        }
        let mut sans = Vec::with_capacity(identities.len());
        for id in identities {
            if id.trust_domain() != self.trust_domain() {
                return Err(SignError::ForeignTrustDomain {
                    identity: id.to_uri(),
                    trust_domain: self.trust_domain().to_owned(),
                });
            }
            let uri = Ia5String::try_from(id.to_uri())
                .map_err(|e| SignError::Issue(format!("identity {id} as a URI SAN: {e}")))?;
            sans.push(SanType::URI(uri));
        }
        let public_key = verified_public_key(csr_pem)?;
        let cert = leaf_params(self, sans, ttl)?.signed_by(&public_key, &*self.issuer)?;
        let mut chain = Vec::with_capacity(1 + self.response_tail.len());
        chain.push(cert.pem());
        chain.extend(self.response_tail.iter().cloned());
        Ok(chain)
    }

    /// Issues the control plane's serving certificate, with a fresh P-256 key: DNS SANs
    /// `dns_names` (e.g. `istiod.istio-system.svc`), plus `identity` as a URI SAN if given,
    /// valid for `ttl` (not capped by the workload maximum; capped by the CA's own expiry).
    pub fn issue_serving_certificate(
        &self,
        dns_names: &[String],
        identity: Option<&Identity>,
        ttl: Duration,
    ) -> Result<ServingCertificate, SignError> {
        let mut sans = Vec::new();
        for name in dns_names {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                });
            let dns = Ia5String::try_from(name.as_str())
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| SignError::DnsName(name.clone()))?;
            sans.push(SanType::DnsName(dns));
        }
        if let Some(id) = identity {
            let uri = Ia5String::try_from(id.to_uri())
                .map_err(|e| SignError::Issue(format!("identity {id} as a URI SAN: {e}")))?;
            sans.push(SanType::URI(uri));
        }
        if sans.is_empty() {
            return Err(SignError::NoIdentity);
        }
        let key = rcgen::KeyPair::generate()?;
        let params = leaf_params(self, sans, ttl)?;
        let not_after = params.not_after.into();
        let cert = params.signed_by(&key, &*self.issuer)?;
        let mut cert_chain_pem = cert.pem();
        for c in &self.intermediates {
            cert_chain_pem.push_str(&crate::pem::certificate_pem(c));
        }
        Ok(ServingCertificate {
            cert_chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// A short-lived leaf for the CA's own public key, used to check the CA at load.
pub(crate) fn self_check_leaf(
    ca: &CertificateAuthority,
) -> Result<CertificateDer<'static>, SignError> {
    let id = Identity::new(ca.trust_domain(), "istio-system", "capstan-ca-self-check")
        .map_err(|e| SignError::Issue(e.to_string()))?;
    let uri = Ia5String::try_from(id.to_uri()).map_err(|e| SignError::Issue(e.to_string()))?;
    let params = leaf_params(ca, vec![SanType::URI(uri)], Duration::from_secs(60))?;
    let cert = params.signed_by(ca.issuer.key(), &*ca.issuer)?;
    Ok(cert.der().clone())
}
