//! Authentication by TLS client certificate (istiod's `ClientCertAuthenticator`): a workload
//! renewing its certificate presents the one it holds. The chain is verified here against the
//! CA's roots, whatever the TLS layer already checked, so a transport configured without
//! client verification cannot let an unverified certificate through.

use futures::future::BoxFuture;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{verify_chain, AuthError, Authenticator, Caller};
use crate::authority::CertificateAuthority;
use crate::current::CurrentCa;
use crate::identity::Identity;

/// Accepts callers whose client certificate chains to the CA's roots and names SPIFFE
/// identities of the CA's trust domain.
#[derive(Debug, Clone)]
pub struct ClientCertAuthenticator {
    trust_domain: String,
    trust: Trust,
}

/// What chains are verified against.
#[derive(Debug, Clone)]
enum Trust {
    Fixed {
        roots: Vec<CertificateDer<'static>>,
        /// The CA's own intermediates, so a client that sends only its leaf still verifies.
        intermediates: Vec<CertificateDer<'static>>,
    },
    /// The trust bundle and intermediates of the CA in force at each call: a certificate
    /// issued under a root that is being rotated out still authenticates while the bundle
    /// keeps that root.
    Current(CurrentCa),
}

impl ClientCertAuthenticator {
    /// An authenticator for `trust_domain` trusting `roots`, completing chains with
    /// `intermediates`.
    pub fn new(
        trust_domain: impl Into<String>,
        roots: Vec<CertificateDer<'static>>,
        intermediates: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            trust: Trust::Fixed {
                roots,
                intermediates,
            },
        }
    }

    /// An authenticator trusting what the CA in force at each call trusts.
    pub fn for_current(ca: CurrentCa) -> Self {
        Self {
            trust_domain: ca.get().trust_domain().to_owned(),
            trust: Trust::Current(ca),
        }
    }

    /// An authenticator trusting what `ca` issues.
    pub fn for_ca(ca: &CertificateAuthority) -> Self {
        Self::new(
            ca.trust_domain(),
            ca.roots().to_vec(),
            ca.intermediates().to_vec(),
        )
    }

    /// The identities of a presented chain (leaf first), verified at `now`.
    pub fn identities_at(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Vec<Identity>, AuthError> {
        let Some((leaf, presented)) = chain.split_first() else {
            return Err(AuthError::Absent("no client certificate presented".into()));
        };
        let current;
        let (roots, own) = match &self.trust {
            Trust::Fixed {
                roots,
                intermediates,
            } => (roots.as_slice(), intermediates.as_slice()),
            Trust::Current(ca) => {
                current = ca.get();
                (current.roots(), current.intermediates())
            }
        };
        let mut intermediates: Vec<CertificateDer<'_>> = presented.to_vec();
        intermediates.extend(own.iter().cloned());
        verify_chain(leaf, &intermediates, roots, now).map_err(|e| {
            AuthError::Rejected(format!(
                "client certificate does not verify against the CA root: {e}"
            ))
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| {
            AuthError::Rejected(format!("client certificate is not valid X.509: {e}"))
        })?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| AuthError::Rejected(format!("client certificate SAN: {e}")))?;
        let mut identities = Vec::new();
        for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
            let GeneralName::URI(uri) = name else {
                continue;
            };
            if !uri.starts_with("spiffe://") {
                continue;
            }
            let id = Identity::parse(uri)
                .map_err(|e| AuthError::Rejected(format!("client certificate URI SAN: {e}")))?;
            if id.trust_domain() != self.trust_domain {
                return Err(AuthError::Rejected(format!(
                    "client certificate identity {id} is not in trust domain {}",
                    self.trust_domain
                )));
            }
            identities.push(id);
        }
        if identities.is_empty() {
            return Err(AuthError::Rejected(
                "client certificate has no SPIFFE URI SAN".into(),
            ));
        }
        Ok(identities)
    }
}

impl Authenticator for ClientCertAuthenticator {
    fn name(&self) -> &'static str {
        "client certificate"
    }

    fn authenticate<'a>(
        &'a self,
        caller: &'a Caller<'a>,
    ) -> BoxFuture<'a, Result<Vec<Identity>, AuthError>> {
        let result = self.identities_at(caller.peer_certificates.unwrap_or(&[]), UnixTime::now());
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{csr, id, raw_leaf, self_signed_ca, testdata, uri};
    use crate::{CaOptions, CaSecret, CertificateAuthority};
    use std::time::Duration;
    use time::OffsetDateTime;

    fn chain_of(pems: &[String]) -> Vec<CertificateDer<'static>> {
        pems.iter()
            .flat_map(|p| crate::pem::certificates(p).unwrap())
            .collect()
    }

    #[test]
    fn issued_certificates_authenticate_with_or_without_the_chain() {
        let ca = CertificateAuthority::from_cacerts_dir(
            &testdata("cacerts-ec-pkcs8"),
            CaOptions::default(),
        )
        .unwrap();
        let auth = ClientCertAuthenticator::for_ca(&ca);
        let caller = id("bookinfo", "ratings");
        let issued = ca
            .sign(&csr("spiffe://x").1, std::slice::from_ref(&caller), 0)
            .unwrap();
        let full = chain_of(&issued[..issued.len() - 1]);
        assert_eq!(full.len(), 3);
        assert_eq!(
            auth.identities_at(&full, UnixTime::now()).unwrap(),
            vec![caller.clone()]
        );
        // Leaf only: the CA completes the chain with its own intermediates.
        assert_eq!(
            auth.identities_at(&full[..1], UnixTime::now()).unwrap(),
            vec![caller]
        );
    }

    #[test]
    fn rejections_table() {
        let ca = self_signed_ca();
        let auth = ClientCertAuthenticator::for_ca(&ca);
        let now = OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3600);
        let valid = |sans| raw_leaf(&ca, sans, now - hour, now + hour);
        let other_ca = self_signed_ca();
        let plugged = CertificateAuthority::from_cacerts_dir(
            &testdata("cacerts-ec-sec1"),
            CaOptions::default(),
        )
        .unwrap();
        let other_td = ClientCertAuthenticator::new(
            "other.domain",
            ca.roots().to_vec(),
            ca.intermediates().to_vec(),
        );
        let good = vec![uri("spiffe://cluster.local/ns/a/sa/b")];

        let cases: Vec<(
            &str,
            &ClientCertAuthenticator,
            Vec<CertificateDer<'static>>,
            &str,
        )> = vec![
            (
                "no certificate",
                &auth,
                vec![],
                "no client certificate presented",
            ),
            (
                "expired",
                &auth,
                vec![raw_leaf(&ca, good.clone(), now - 2 * hour, now - hour)],
                "CertExpired",
            ),
            (
                "not yet valid",
                &auth,
                vec![raw_leaf(&ca, good.clone(), now + hour, now + 2 * hour)],
                "CertNotValidYet",
            ),
            (
                "another CA",
                &auth,
                // Same subject name as this CA's root (O=cluster.local): found, signature wrong.
                vec![raw_leaf(&other_ca, good.clone(), now - hour, now + hour)],
                "InvalidSignatureForPublicKey",
            ),
            (
                "a CA of another name",
                &auth,
                vec![raw_leaf(&plugged, good.clone(), now - hour, now + hour)],
                "UnknownIssuer",
            ),
            (
                "garbage",
                &auth,
                vec![CertificateDer::from(vec![0x30, 0x00])],
                "does not verify",
            ),
            (
                "foreign trust domain in the SAN",
                &auth,
                vec![valid(vec![uri("spiffe://evil.example/ns/a/sa/b")])],
                "not in trust domain cluster.local",
            ),
            (
                "authenticator of another trust domain",
                &other_td,
                vec![valid(good.clone())],
                "not in trust domain other.domain",
            ),
            (
                "no SPIFFE SAN",
                &auth,
                vec![valid(vec![rcgen::SanType::DnsName(
                    "a.example".try_into().unwrap(),
                )])],
                "no SPIFFE URI SAN",
            ),
            (
                "malformed SPIFFE SAN",
                &auth,
                vec![valid(vec![uri("spiffe://cluster.local/ns/a")])],
                "/ns/<namespace>/sa/<service-account>",
            ),
        ];
        for (name, authenticator, chain, expected) in cases {
            let err = authenticator
                .identities_at(&chain, UnixTime::now())
                .expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
        // Non-SPIFFE URIs next to a SPIFFE one are ignored.
        let mixed = valid(vec![uri("https://example.com/x"), good[0].clone()]);
        assert_eq!(
            auth.identities_at(&[mixed], UnixTime::now()).unwrap(),
            vec![id("a", "b")]
        );
    }

    /// Through a root switch the authenticator follows the CA in force: a certificate
    /// issued under the old root keeps authenticating while the trust bundle keeps that root,
    /// and one issued under the new root authenticates at once, even with both roots named
    /// alike (a rotation that reuses the subject).
    #[test]
    fn follows_the_current_ca_through_a_root_switch() {
        use crate::test_support::TestRoot;
        let (old, new) = (TestRoot::new("root"), TestRoot::new("root"));
        let first = old.intermediate("intermediate");
        let before =
            CertificateAuthority::from_secret(&first, "first", CaOptions::default()).unwrap();
        let (versions, current) = CurrentCa::channel(std::sync::Arc::new(before));
        let auth = ClientCertAuthenticator::for_current(current.clone());
        let caller = id("bookinfo", "ratings");
        let issue = |ca: &CertificateAuthority| {
            let chain = ca
                .sign(&csr("spiffe://x").1, std::slice::from_ref(&caller), 0)
                .unwrap();
            chain_of(&chain[..chain.len() - 1])
        };
        let old_leaf = issue(&current.get());
        assert!(auth.identities_at(&old_leaf, UnixTime::now()).is_ok());

        // One step: new intermediate, only the new root listed.
        let second = CaSecret {
            root_cert: new.pem(),
            ..new.intermediate("intermediate 2")
        };
        let after = CertificateAuthority::from_secret(&second, "second", CaOptions::default())
            .unwrap()
            .succeeding(&current.get(), std::time::SystemTime::now());
        versions.send_replace(std::sync::Arc::new(after));
        let new_leaf = issue(&current.get());
        assert_eq!(
            auth.identities_at(&new_leaf, UnixTime::now()).unwrap(),
            vec![caller.clone()]
        );
        assert_eq!(
            auth.identities_at(&old_leaf, UnixTime::now()).unwrap(),
            vec![caller.clone()],
            "the old root is retained"
        );
        // A fixed snapshot of the new CA without history trusts the new root only.
        let fresh =
            CertificateAuthority::from_secret(&second, "fresh", CaOptions::default()).unwrap();
        assert!(ClientCertAuthenticator::for_ca(&fresh)
            .identities_at(&old_leaf, UnixTime::now())
            .is_err());
    }
}
