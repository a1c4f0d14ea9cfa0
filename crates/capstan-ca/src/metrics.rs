//! What the CA service counts, for istiod's `citadel_server_*` metric families (istiod's
//! `security/pkg/server/ca/monitoring.go`, incremented where istiod's `CreateCertificate`
//! increments them): requests, authentication failures, signing errors by istiod's error
//! type, and certificates issued.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sign::SignError;

/// istiod's `caerror.ErrorType()` names, the `error` label of `citadel_server_csr_sign_err_count`.
pub const SIGN_ERROR_TYPES: [&str; 4] =
    ["CA_NOT_READY", "CSR_ERROR", "TTL_ERROR", "CERT_GEN_ERROR"];

/// The counters of one CA service; shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct CaMetrics {
    requests: AtomicU64,
    authentication_failures: AtomicU64,
    sign_errors: [AtomicU64; SIGN_ERROR_TYPES.len()],
    issued: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaMetricsSnapshot {
    /// `CreateCertificate` calls received (`citadel_server_csr_count`).
    pub requests: u64,
    /// Callers refused: no credential accepted, or impersonation asked
    /// (`citadel_server_authentication_failure_count`).
    pub authentication_failures: u64,
    /// Requests not signed, by istiod's error type (`citadel_server_csr_sign_err_count`);
    /// only the types that occurred.
    pub sign_errors: Vec<(&'static str, u64)>,
    /// Certificates issued (`citadel_server_success_cert_issuance_count`).
    pub issued: u64,
}

impl SignError {
    /// istiod's error type for this failure: `CSR_ERROR` for the CSR, `TTL_ERROR` for the
    /// requested lifetime, `CA_NOT_READY` when the CA cannot sign, `CERT_GEN_ERROR` otherwise.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Csr(_) => "CSR_ERROR",
            Self::NegativeTtl(_) => "TTL_ERROR",
            Self::CaExpired(_) => "CA_NOT_READY",
            Self::NoIdentity
            | Self::ForeignTrustDomain { .. }
            | Self::DnsName(_)
            | Self::Issue(_) => "CERT_GEN_ERROR",
        }
    }
}

impl CaMetrics {
    /// A `CreateCertificate` call arrived.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A caller was refused before signing.
    pub(crate) fn authentication_failure(&self) {
        self.authentication_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was not signed, for `error_type` (one of [`SIGN_ERROR_TYPES`]).
    pub(crate) fn sign_error(&self, error_type: &str) {
        let i = SIGN_ERROR_TYPES
            .iter()
            .position(|t| *t == error_type)
            .unwrap_or(SIGN_ERROR_TYPES.len() - 1);
        self.sign_errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A certificate was issued.
    pub(crate) fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> CaMetricsSnapshot {
        CaMetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            authentication_failures: self.authentication_failures.load(Ordering::Relaxed),
            sign_errors: SIGN_ERROR_TYPES
                .iter()
                .zip(&self.sign_errors)
                .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            issued: self.issued.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_errors_appear_with_their_first_occurrence() {
        let m = CaMetrics::default();
        assert_eq!(m.snapshot(), CaMetricsSnapshot::default());
        m.request();
        m.sign_error("CSR_ERROR");
        m.sign_error("CSR_ERROR");
        m.sign_error("TTL_ERROR");
        m.authentication_failure();
        m.issued();
        let s = m.snapshot();
        assert_eq!(s.sign_errors, [("CSR_ERROR", 2), ("TTL_ERROR", 1)]);
        assert_eq!((s.requests, s.authentication_failures, s.issued), (1, 1, 1));
    }
}
