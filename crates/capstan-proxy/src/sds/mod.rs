//! SDS over ADS: the secrets istiod serves on the xDS stream (Istio's gateway `credentialName`:
//! `kubernetes://NAME` holds a certificate and key, `kubernetes://NAME-cacert` a CA bundle), as
//! Envoy's secret manager holds them.
//!
//! One registry per process ([`Secrets::global`], like [`crate::identity::Identity::workload`]),
//! with one [`Slot`] per secret name, created on first reference: a listener compiled before its
//! secret arrives holds the slot that the store fills later. TLS configurations read the slot at
//! every handshake ([`handshake`]), so a new version applies to new connections without
//! replacing the listener, and established connections are untouched.
//!
//! [`secret`] compiles and redacts the `Secret` protos.

pub mod handshake;
pub mod secret;

use arc_swap::ArcSwapOption;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use secret::{compile, redacted};

/// One compiled secret.
#[derive(Clone)]
pub enum SecretValue {
    /// `tls_certificate`: a chain and its signing key, as rustls serves them.
    Certificate(Arc<CertifiedKey>),
    /// `validation_context`: a verifier of client chains built from the trusted CA (and CRL).
    Authority(Arc<dyn ClientCertVerifier>),
}

impl std::fmt::Debug for SecretValue {
    // Never the key: only what kind of secret this is and the chain's length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::Certificate(k) => write!(f, "Certificate({} certs)", k.cert.len()),
            SecretValue::Authority(_) => f.write_str("Authority"),
        }
    }
}

/// The current value of one secret name; empty until the control plane sends it and after it
/// removes it.
#[derive(Debug, Default)]
pub struct Slot {
    value: ArcSwapOption<SecretValue>,
}

impl Slot {
    /// Replaces the value (`None`: removed); new handshakes see it from now on.
    pub fn set(&self, value: Option<SecretValue>) {
        self.value.store(value.map(Arc::new));
    }

    /// The current value, if any.
    pub fn get(&self) -> Option<Arc<SecretValue>> {
        self.value.load_full()
    }

    /// The current certificate, if the slot holds one.
    pub fn certificate(&self) -> Option<Arc<CertifiedKey>> {
        match self.get().as_deref() {
            Some(SecretValue::Certificate(k)) => Some(k.clone()),
            _ => None,
        }
    }

    /// The current client verifier, if the slot holds a CA.
    pub fn authority(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        match self.get().as_deref() {
            Some(SecretValue::Authority(v)) => Some(v.clone()),
            _ => None,
        }
    }
}

/// The process's secrets by SDS name.
#[derive(Debug, Default)]
pub struct Secrets {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Secrets {
    /// The process's registry: listeners compiled from xDS and the store share it.
    pub fn global() -> &'static Secrets {
        static GLOBAL: OnceLock<Secrets> = OnceLock::new();
        GLOBAL.get_or_init(Secrets::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots
            .lock()
            .expect("secrets lock is never poisoned: nothing panics under it")
    }

    /// The slot of `name`, created empty on first reference.
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        self.lock().entry(name.to_string()).or_default().clone()
    }

    /// Installs `value` as `name` (`None`: removes it, so later handshakes fail rather than use
    /// a deleted secret). A name nobody referred to yet gets its slot now.
    pub fn set(&self, name: &str, value: Option<SecretValue>) {
        if value.is_none() {
            if let Some(slot) = self.lock().get(name) {
                slot.set(None);
            }
            return;
        }
        self.slot(name).set(value);
    }
}

#[cfg(test)]
pub(crate) mod tests;
