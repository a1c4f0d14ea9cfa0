//! Workload identities: SPIFFE ids of the form Istio issues,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

/// Istio's default trust domain (`meshConfig.trustDomain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// A workload identity: trust domain, Kubernetes namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a valid identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The id does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE id: it must start with spiffe://")]
    NotSpiffe(String),
    /// The trust domain is empty or has characters SPIFFE does not allow.
    #[error("invalid trust domain {0:?}: must be non-empty and only [a-z0-9.-_]")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE id {0:?} does not have the path /ns/<namespace>/sa/<service-account>")]
    Path(String),
    /// Query strings and fragments are not allowed in SPIFFE ids.
    #[error("SPIFFE id {0:?} must not have a query or fragment")]
    QueryOrFragment(String),
    /// The namespace is not a DNS-1123 label.
    #[error("invalid namespace {0:?}: must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63)")]
    Namespace(String),
    /// The service account is not a DNS-1123 subdomain.
    #[error("invalid service account {0:?}: must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253)")]
    ServiceAccount(String),
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// SPIFFE trust domain characters (SPIFFE-ID spec, section 2.1).
fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Checks a trust domain, as used by the CA's options and the authenticators.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    if is_trust_domain(trust_domain) {
        Ok(())
    } else {
        Err(IdentityError::TrustDomain(trust_domain.to_owned()))
    }
}

impl Identity {
    /// An identity from its parts, each validated.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let (trust_domain, namespace, service_account) = (
            trust_domain.into(),
            namespace.into(),
            service_account.into(),
        );
        validate_trust_domain(&trust_domain)?;
        if !is_dns_label(&namespace) {
            return Err(IdentityError::Namespace(namespace));
        }
        if !is_dns_subdomain(&service_account) {
            return Err(IdentityError::ServiceAccount(service_account));
        }
        Ok(Self {
            trust_domain,
            namespace,
            service_account,
        })
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` strictly: nothing before or after, no empty
    /// segments, no query or fragment.
    pub fn parse(id: &str) -> Result<Self, IdentityError> {
        let rest = id
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe(id.to_owned()))?;
        if rest.contains(['?', '#']) {
            return Err(IdentityError::QueryOrFragment(id.to_owned()));
        }
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_trust_domain(trust_domain)?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", namespace, "sa", service_account] => {
                Self::new(trust_domain, *namespace, *service_account)
            }
            _ => Err(IdentityError::Path(id.to_owned())),
        }
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The SPIFFE URI, as put in certificate SANs.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let id = Identity::new("cluster.local", "default", "bookinfo-productpage").unwrap();
        assert_eq!(
            id.to_uri(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(Identity::parse(&id.to_uri()).unwrap(), id);
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.trust_domain(), "cluster.local");
    }

    #[test]
    fn strict_parse_table() {
        use IdentityError as E;
        type IsKind = fn(&IdentityError) -> bool;
        let cases: &[(&str, IsKind)] = &[
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::NotSpiffe(_))
            }),
            ("SPIFFE://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::NotSpiffe(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| matches!(e, E::TrustDomain(_))),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| {
                matches!(e, E::TrustDomain(_))
            }),
            ("spiffe://cluster.local", |e| matches!(e, E::Path(_))),
            ("spiffe://cluster.local/", |e| matches!(e, E::Path(_))),
            ("spiffe://cluster.local/ns/a", |e| matches!(e, E::Path(_))),
            ("spiffe://cluster.local/ns/a/sa/b/", |e| {
                matches!(e, E::Path(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/c", |e| {
                matches!(e, E::Path(_))
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, E::Path(_))
            }),
            ("spiffe://cluster.local//ns/a/sa/b", |e| {
                matches!(e, E::Path(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(e, E::Namespace(_))
            }),
            ("spiffe://cluster.local/ns/A/sa/b", |e| {
                matches!(e, E::Namespace(_))
            }),
            ("spiffe://cluster.local/ns/a.b/sa/b", |e| {
                matches!(e, E::Namespace(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/", |e| {
                matches!(e, E::ServiceAccount(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/B", |e| {
                matches!(e, E::ServiceAccount(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", |e| {
                matches!(e, E::QueryOrFragment(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b#f", |e| {
                matches!(e, E::QueryOrFragment(_))
            }),
        ];
        for (input, expected) in cases {
            let err = Identity::parse(input).expect_err(input);
            assert!(expected(&err), "{input}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
        for ok in [
            "spiffe://cluster.local/ns/istio-system/sa/istiod",
            "spiffe://td_1.example-2/ns/a/sa/b.c",
        ] {
            assert_eq!(Identity::parse(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = Identity::parse("spiffe://cluster.local/ns/Bad/sa/x").unwrap_err();
        assert!(err.to_string().contains("namespace \"Bad\""), "{err}");
    }
}
