//! Reading a PKCS#10 certificate request: only its public key is used, and only after the
//! request's self-signature proves the sender holds the private key. Every other field
//! (subject, requested SANs and extensions) is ignored: the CA decides them, as istiod does.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Why a CSR was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// No `CERTIFICATE REQUEST` PEM block.
    #[error("CSR is not PEM: expected a '-----BEGIN CERTIFICATE REQUEST-----' block ({0})")]
    NotPem(String),
    /// The PEM block does not hold a PKCS#10 request.
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Malformed(String),
    /// The self-signature does not verify with the request's own public key.
    #[error("CSR signature does not verify with the CSR's public key: {0}")]
    BadSignature(String),
    /// The key type or size is not accepted.
    #[error("CSR public key not accepted: {0}")]
    UnsupportedKey(String),
}

/// Smallest RSA modulus accepted; rustls' verifiers refuse anything shorter anyway.
const MIN_RSA_BITS: usize = 2048;

/// One DER TLV with a definite length: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The unsigned envelope of the request, which the signature does not protect and the parser
/// reads leniently: `SEQUENCE { info SEQUENCE, algorithm SEQUENCE { OID, ... }, BIT STRING with
/// no unused bits }`. A request with any other shape was not made by a real PKCS#10 encoder.
fn check_envelope(der: &[u8]) -> Result<(), String> {
    let shape = || -> Option<()> {
        let (0x30, body, []) = tlv(der)? else {
            return None;
        };
        let (0x30, _info, rest) = tlv(body)? else {
            return None;
        };
        let (0x30, algorithm, rest) = tlv(rest)? else {
            return None;
        };
        let (0x06, _, _) = tlv(algorithm)? else {
            return None;
        };
        let (0x03, signature, []) = tlv(rest)? else {
            return None;
        };
        (signature.first() == Some(&0)).then_some(())
    };
    shape().ok_or_else(|| {
        "not DER SEQUENCE { request info, signature algorithm, signature BIT STRING }".to_owned()
    })
}

/// The verified public key of a PEM CSR.
pub(crate) fn verified_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, CsrError> {
    if csr_pem.trim().is_empty() {
        return Err(CsrError::NotPem("the csr field is empty".to_owned()));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| CsrError::NotPem(e.to_string()))?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    check_envelope(der.as_ref()).map_err(CsrError::Malformed)?;
    // The key before the signature: the verifier refuses short RSA keys too, and would call
    // a valid signature by one "does not verify".
    let spki = &csr.certification_request_info.subject_pki;
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
        if rsa.key_size() < MIN_RSA_BITS {
            return Err(CsrError::UnsupportedKey(format!(
                "RSA key of {} bits, at least {MIN_RSA_BITS} required",
                rsa.key_size()
            )));
        }
    }
    csr.verify_signature()
        .map_err(|e| CsrError::BadSignature(e.to_string()))?;
    rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::UnsupportedKey(e.to_string()))
}
