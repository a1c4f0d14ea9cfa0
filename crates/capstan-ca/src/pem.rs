//! PEM in and out: certificate bundles and CA private keys in the encodings Istio's `cacerts`
//! and `istio-ca-secret` use (PKCS#8, and also PKCS#1 RSA and SEC1 EC keys, which `openssl`
//! and Istio's own tooling write but *ring* cannot read directly).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in a PEM bundle, in order. Other PEM sections are ignored (as Go's
/// `x509.CertPool.AppendCertsFromPEM` does); text that is not PEM at all is an error.
pub(crate) fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))
}

/// A DER certificate as a PEM block, with LF line ends as Go's `encoding/pem` writes them.
pub(crate) fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A PEM bundle of several DER certificates.
pub(crate) fn bundle_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs.into_iter().map(|c| certificate_pem(c)).collect()
}

/// The CA signing key from PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
/// `EC PRIVATE KEY` (SEC1, P-256 or P-384).
pub(crate) fn signing_key(text: &str) -> Result<rcgen::KeyPair, String> {
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| format!("no PEM private key found: {e}"))?;
    let pkcs8_candidates: Vec<Vec<u8>> = match &key {
        PrivateKeyDer::Pkcs8(k) => vec![k.secret_pkcs8_der().to_vec()],
        PrivateKeyDer::Pkcs1(k) => vec![wrap_pkcs8(RSA_ENCRYPTION, k.secret_pkcs1_der())],
        // SEC1 does not always name its curve; try the curves *ring* supports.
        PrivateKeyDer::Sec1(k) => [EC_P256, EC_P384]
            .iter()
            .map(|alg| wrap_pkcs8(alg, k.secret_sec1_der()))
            .collect(),
        _ => return Err("unsupported private key encoding".to_owned()),
    };
    let mut last = String::new();
    for der in pkcs8_candidates {
        match rcgen::KeyPair::try_from(der.as_slice()) {
            Ok(kp) => return Ok(kp),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "private key not usable for signing (RSA, ECDSA P-256/P-384 or Ed25519 expected): {last}"
    ))
}

/// AlgorithmIdentifier DER: rsaEncryption with NULL parameters.
const RSA_ENCRYPTION: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// AlgorithmIdentifier DER: id-ecPublicKey, prime256v1.
const EC_P256: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// AlgorithmIdentifier DER: id-ecPublicKey, secp384r1.
const EC_P384: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// PKCS#8 v1 `PrivateKeyInfo { version 0, algorithm, privateKey OCTET STRING }` (RFC 5208).
fn wrap_pkcs8(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(algorithm);
    der_tlv(0x04, key, &mut body);
    let mut out = Vec::with_capacity(body.len() + 6);
    der_tlv(0x30, &body, &mut out);
    out
}

fn der_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_bundles_round_trip() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = format!("{}{}", cert.pem(), cert.pem());
        let certs = certificates(&bundle).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(bundle_pem(&certs), bundle);
        assert!(certificates("").unwrap().is_empty());
        assert!(
            certificates("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn pkcs8_keys_load() {
        let key = rcgen::KeyPair::generate().unwrap();
        let loaded = signing_key(&key.serialize_pem()).unwrap();
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        assert!(signing_key("not a key").is_err());
    }

    #[test]
    fn der_lengths() {
        let mut out = Vec::new();
        der_tlv(0x04, &[0; 300], &mut out);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
