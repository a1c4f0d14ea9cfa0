//! Gateway credentials: the TLS material of Kubernetes Secrets, read as istiod's credentials
//! controller reads it (`pilot/pkg/credentials/kube`), for the gateways' `credentialName`s.
//!
//! A Secret holds a certificate as `tls.crt`/`tls.key` (type `kubernetes.io/tls`) or
//! `cert`/`key` (a generic Secret; this pair wins when both are present), and a CA bundle as
//! `ca.crt` or `cacert`. Only those values are kept. The PEM is checked here, so a Secret that
//! holds garbage is reported once and never reaches a proxy (whose all-or-nothing SDS update
//! would otherwise reject the good secrets sent with it).

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The certificate keys of a generic Secret.
const GENERIC_CERT: &str = "cert";
const GENERIC_KEY: &str = "key";
const GENERIC_CA: &str = "cacert";
/// The keys of a `kubernetes.io/tls` Secret.
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const TLS_CA: &str = "ca.crt";

/// A certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateMaterial {
    /// The chain, leaf first.
    pub chain: Bytes,
    /// The private key.
    pub key: Bytes,
}

impl std::fmt::Debug for CertificateMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertificateMaterial")
            .field("chain_bytes", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// What one Secret offers: a certificate, a CA bundle, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The certificate and key, or why the Secret has none usable.
    pub certificate: Result<CertificateMaterial, String>,
    /// The CA bundle (PEM), or why the Secret has none usable.
    pub ca: Result<Bytes, String>,
}

fn present<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> Option<&'a [u8]> {
    data.get(key).map(Vec::as_slice).filter(|v| !v.is_empty())
}

/// The Secret's keys for an error message (istiod's `truncatedKeysMessage`: at most three).
fn keys_message(data: &BTreeMap<String, Vec<u8>>) -> String {
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    if keys.len() > 3 {
        format!("{}, and {} more...", keys[..3].join(", "), keys.len() - 3)
    } else {
        keys.join(", ")
    }
}

fn check_chain(pem: &[u8], key: &str) -> Result<(), String> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| format!("key {key:?}: not a PEM certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("key {key:?}: no PEM certificate"));
    }
    Ok(())
}

fn check_key(pem: &[u8], key: &str) -> Result<(), String> {
    // The parser's error names the PEM section, never the key's bytes.
    PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|e| format!("key {key:?}: not a PEM private key: {e}"))
}

fn certificate(data: &BTreeMap<String, Vec<u8>>) -> Result<CertificateMaterial, String> {
    for (cert, key) in [(GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)] {
        if let (Some(c), Some(k)) = (present(data, cert), present(data, key)) {
            check_chain(c, cert)?;
            check_key(k, key)?;
            return Ok(CertificateMaterial {
                chain: Bytes::copy_from_slice(c),
                key: Bytes::copy_from_slice(k),
            });
        }
    }
    for (cert, key) in [(GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)] {
        if data.contains_key(cert) && data.contains_key(key) {
            return Err(format!(
                "found keys {cert:?} and {key:?}, but they were empty"
            ));
        }
    }
    Err(format!(
        "found secret, but didn't have expected keys ({GENERIC_CERT} and {GENERIC_KEY}) or \
         ({TLS_CERT} and {TLS_KEY}); found: {}",
        keys_message(data)
    ))
}

fn ca(data: &BTreeMap<String, Vec<u8>>) -> Result<Bytes, String> {
    for key in [GENERIC_CA, TLS_CA] {
        if let Some(v) = present(data, key) {
            check_chain(v, key)?;
            return Ok(Bytes::copy_from_slice(v));
        }
    }
    for key in [GENERIC_CA, TLS_CA] {
        if data.contains_key(key) {
            return Err(format!("found key {key:?}, but it was empty"));
        }
    }
    Err(format!(
        "found secret, but didn't have expected keys {GENERIC_CA} or {TLS_CA}; found: {}",
        keys_message(data)
    ))
}

impl Credential {
    /// Reads a Secret's `data` (values already base64-decoded).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Credential {
        Credential {
            certificate: certificate(data),
            ca: ca(data),
        }
    }
}

/// Every Secret's credential, by namespace then name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    by_name: BTreeMap<(String, String), Arc<Credential>>,
}

impl Credentials {
    /// The Secret `namespace/name`, if known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<Credential>> {
        self.by_name.get(&(namespace.to_string(), name.to_string()))
    }

    /// Adds or replaces a Secret; true when its credential changed.
    pub fn insert(&mut self, namespace: &str, name: &str, c: Credential) -> bool {
        let key = (namespace.to_string(), name.to_string());
        if self.by_name.get(&key).is_some_and(|old| **old == c) {
            return false;
        }
        self.by_name.insert(key, Arc::new(c));
        true
    }

    /// Drops a Secret; true when it was there.
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        self.by_name
            .remove(&(namespace.to_string(), name.to_string()))
            .is_some()
    }

    /// The Secrets (namespace, name) whose credential differs between `self` and `other`,
    /// including those only one of them has.
    pub fn diff(&self, other: &Credentials) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .by_name
            .iter()
            .filter(|(k, v)| other.by_name.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(
            other
                .by_name
                .keys()
                .filter(|k| !self.by_name.contains_key(*k))
                .cloned(),
        );
        out.sort();
        out
    }

    /// How many Secrets.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUb3Vyb3Vyb3Vyb3Vyb3Vyb3Vyb3UwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn tls_and_generic_secrets_are_read_generic_first() {
        let tls = Credential::from_data(&data(&[("tls.crt", CERT), ("tls.key", KEY)]));
        assert_eq!(
            tls.certificate.as_ref().unwrap().chain.as_ref(),
            CERT.as_bytes()
        );
        assert!(tls
            .ca
            .unwrap_err()
            .contains("expected keys cacert or ca.crt"));
        let both = Credential::from_data(&data(&[
            ("cert", CERT),
            ("key", KEY),
            ("tls.crt", "garbage"),
            ("tls.key", "garbage"),
            ("ca.crt", CERT),
        ]));
        assert!(both.certificate.is_ok());
        assert_eq!(both.ca.unwrap().as_ref(), CERT.as_bytes());
    }

    #[test]
    fn missing_empty_and_garbage_values_say_which_key_without_its_content() {
        let none = Credential::from_data(&data(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]));
        let err = none.certificate.unwrap_err();
        assert!(err.contains("found: a, b, c, and 1 more"), "{err}");
        let empty = Credential::from_data(&data(&[("tls.crt", ""), ("tls.key", "")]));
        assert!(empty
            .certificate
            .unwrap_err()
            .contains("but they were empty"));
        let secret_bytes = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n";
        let bad_key = Credential::from_data(&data(&[("tls.crt", CERT), ("tls.key", secret_bytes)]));
        let err = bad_key.certificate.unwrap_err();
        assert!(
            err.starts_with("key \"tls.key\": not a PEM private key"),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let bad_cert = Credential::from_data(&data(&[("tls.crt", "hello"), ("tls.key", KEY)]));
        assert!(bad_cert
            .certificate
            .unwrap_err()
            .contains("no PEM certificate"));
        let material = CertificateMaterial {
            chain: Bytes::from_static(b"x"),
            key: Bytes::from_static(b"the key"),
        };
        assert!(!format!("{material:?}").contains("the key"));
    }

    #[test]
    fn inserting_the_same_credential_is_no_change() {
        let mut all = Credentials::default();
        let c = Credential::from_data(&data(&[("tls.crt", CERT), ("tls.key", KEY)]));
        assert!(all.insert("ns", "a", c.clone()));
        assert!(!all.insert("ns", "a", c));
        assert!(all.get("ns", "a").is_some() && all.get("other", "a").is_none());
        let mut next = all.clone();
        next.insert("ns", "b", Credential::from_data(&data(&[])));
        next.insert("ns", "a", Credential::from_data(&data(&[("ca.crt", CERT)])));
        let mut gone = all.clone();
        gone.remove("ns", "a");
        let keys = |v: Vec<(String, String)>| -> Vec<String> {
            v.into_iter().map(|(n, s)| format!("{n}/{s}")).collect()
        };
        assert_eq!(keys(all.diff(&next)), ["ns/a", "ns/b"]);
        assert_eq!(keys(all.diff(&gone)), ["ns/a"]);
        assert!(all.diff(&all.clone()).is_empty());
        assert!(all.remove("ns", "a") && !all.remove("ns", "a"));
        assert!(all.is_empty());
    }
}
