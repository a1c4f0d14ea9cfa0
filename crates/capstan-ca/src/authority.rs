//! The certificate authority's key material: a plugged-in intermediate from a `cacerts`
//! directory (Istio's "plug in CA certificates"), or a self-signed root generated at first
//! start and kept in a [`CaStorage`] (Istio's `istio-ca-secret`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::PublicKeyData as _;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{validate_trust_domain, IdentityError, DEFAULT_TRUST_DOMAIN};
use crate::storage::{CaSecret, CaStorage, StorageError, CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use crate::trust::{TrustBundle, TrustedRoot};
use crate::{pem, sign};

/// Tunables, with Istio's defaults.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// SPIFFE trust domain of issued identities (`meshConfig.trustDomain`).
    pub trust_domain: String,
    /// Validity when the request asks for none (`DEFAULT_WORKLOAD_CERT_TTL`, 24 h).
    pub default_cert_ttl: Duration,
    /// Longest validity granted; longer requests are cut to it (`MAX_WORKLOAD_CERT_TTL`, 90 d).
    pub max_cert_ttl: Duration,
    /// Validity of a generated self-signed root (`CITADEL_SELF_SIGNED_CA_CERT_TTL`, 10 years).
    pub self_signed_root_ttl: Duration,
}

impl Default for CaOptions {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            default_cert_ttl: Duration::from_secs(DAY),
            max_cert_ttl: Duration::from_secs(90 * DAY),
            self_signed_root_ttl: Duration::from_secs(3650 * DAY),
        }
    }
}

/// Why the CA could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A `cacerts` file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key material is inconsistent or unusable; `what` names the file or secret key.
    #[error("{what}: {reason}")]
    Invalid {
        /// File or secret key at fault, e.g. `/etc/cacerts/ca-key.pem`.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The configured trust domain is not valid.
    #[error("trust domain: {0}")]
    TrustDomain(#[from] IdentityError),
    /// Loading or saving the self-signed secret failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A certificate authority ready to sign: its signing certificate and key, the chain above
/// it and the trust bundle, and what every response ends with. One version of the key
/// material: a reloaded `cacerts` is a new value (see [`crate::CurrentCa`]).
#[derive(Clone)]
pub struct CertificateAuthority {
    pub(crate) options: CaOptions,
    pub(crate) issuer: Arc<rcgen::Issuer<'static, rcgen::KeyPair>>,
    pub(crate) ca_not_after: OffsetDateTime,
    signing_cert: CertificateDer<'static>,
    /// Certificates between the leaf and the roots, the signing certificate first; empty
    /// when the signing certificate is itself a root.
    pub(crate) intermediates: Vec<CertificateDer<'static>>,
    /// The roots of `root-cert.pem`.
    listed_roots: Vec<CertificateDer<'static>>,
    /// The listed roots plus the retained ones: what workloads trust.
    bundle: TrustBundle,
    /// `intermediates` as one PEM entry each, then the trust bundle as one entry: appended to
    /// every leaf in a response.
    pub(crate) response_tail: Vec<String>,
    self_signed: bool,
    pub(crate) rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.options.trust_domain)
            .field("self_signed", &self.self_signed)
            .field("intermediates", &self.intermediates.len())
            .field("listed_roots", &self.listed_roots.len())
            .field("trusted_roots", &self.bundle.certificates().len())
            .field("ca_not_after", &self.ca_not_after)
            .finish_non_exhaustive()
    }
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Reads a directory in Istio's `cacerts` layout: `ca-cert.pem`, `ca-key.pem`,
/// `root-cert.pem` and, optionally, `cert-chain.pem`.
pub fn read_cacerts_dir(dir: &Path) -> Result<CaSecret, CaError> {
    let read = |name: &str, required: bool| -> Result<String, CaError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(CaError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    };
    Ok(CaSecret {
        ca_cert: read(CA_CERT, true)?,
        ca_key: read(CA_KEY, true)?,
        cert_chain: read(CERT_CHAIN, false)?,
        root_cert: read(ROOT_CERT, true)?,
    })
}

/// A certificate's expiry, for the trust bundle.
fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, parsed) =
        X509Certificate::from_der(cert).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(parsed.validity().not_after.to_datetime().into())
}

impl CertificateAuthority {
    /// Loads a plugged-in CA from a directory in Istio's `cacerts` layout: `ca-cert.pem`,
    /// `ca-key.pem`, `root-cert.pem` and, optionally, `cert-chain.pem`.
    pub fn from_cacerts_dir(dir: &Path, options: CaOptions) -> Result<Self, CaError> {
        let secret = read_cacerts_dir(dir)?;
        Self::from_secret(&secret, &dir.display().to_string(), options)
    }

    /// The self-signed CA stored in `storage`, or a new one generated and saved there. When
    /// another replica saves first, its root is loaded and used instead.
    pub async fn load_or_create_self_signed(
        storage: &dyn CaStorage,
        options: CaOptions,
    ) -> Result<Self, CaError> {
        if let Some(secret) = storage.load().await? {
            tracing::info!(location = %storage.location(), "loaded the self-signed CA");
            return Self::from_secret(&secret, &storage.location(), options);
        }
        let (ca, secret) = Self::generate_self_signed(options.clone())?;
        match storage.save(&secret).await {
            Ok(()) => {
                tracing::info!(location = %storage.location(), "generated and saved a new self-signed CA root");
                Ok(ca)
            }
            Err(StorageError::AlreadyExists(_)) => {
                let secret = storage.load().await?.ok_or_else(|| {
                    invalid(storage.location(), "reported as existing but not found")
                })?;
                Self::from_secret(&secret, &storage.location(), options)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A new self-signed root CA (ECDSA P-256, subject `O=<trust domain>` as Istio's), and
    /// the secret to persist it.
    pub fn generate_self_signed(options: CaOptions) -> Result<(Self, CaSecret), CaError> {
        validate_trust_domain(&options.trust_domain)?;
        let key = rcgen::KeyPair::generate()
            .map_err(|e| invalid("self-signed CA", format!("generating a key: {e}")))?;
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::OrganizationName,
            options.trust_domain.as_str(),
        );
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - sign::CLOCK_SKEW;
        params.not_after = time::Duration::try_from(options.self_signed_root_ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .ok_or_else(|| invalid("self-signed CA", "self_signed_root_ttl is too long"))?;
        params.serial_number = Some(sign::random_serial(&ring::rand::SystemRandom::new())?);
        let cert = params
            .self_signed(&key)
            .map_err(|e| invalid("self-signed CA", format!("signing the root: {e}")))?;
        let secret = CaSecret {
            ca_cert: cert.pem(),
            ca_key: key.serialize_pem(),
            cert_chain: String::new(),
            root_cert: cert.pem(),
        };
        let ca = Self::from_secret(&secret, "generated self-signed CA", options)?;
        Ok((ca, secret))
    }

    /// A CA from key material (a `cacerts` directory's files or `istio-ca-secret`'s keys).
    /// Checks that the key matches the certificate, that it is a CA, and that a certificate
    /// it signs verifies against the roots through the chain. `location` prefixes errors.
    pub fn from_secret(
        secret: &CaSecret,
        location: &str,
        options: CaOptions,
    ) -> Result<Self, CaError> {
        validate_trust_domain(&options.trust_domain)?;
        let at = |key: &str| format!("{location}/{key}");

        let ca_cert =
            match pem::certificates(&secret.ca_cert).map_err(|e| invalid(at(CA_CERT), e))? {
                certs if certs.len() == 1 => certs.into_iter().next().expect("length checked"),
                certs => {
                    return Err(invalid(
                        at(CA_CERT),
                        format!("expected exactly one certificate, found {}", certs.len()),
                    ))
                }
            };
        let key = pem::signing_key(&secret.ca_key).map_err(|e| invalid(at(CA_KEY), e))?;
        let (_, parsed) = X509Certificate::from_der(&ca_cert)
            .map_err(|e| invalid(at(CA_CERT), format!("not an X.509 certificate: {e}")))?;
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(
                at(CA_KEY),
                format!("private key does not match the public key of {CA_CERT}"),
            ));
        }
        if !parsed.is_ca() {
            return Err(invalid(
                at(CA_CERT),
                "not a CA certificate (basicConstraints CA:TRUE missing)",
            ));
        }
        let ca_not_after = parsed.validity().not_after.to_datetime();
        let self_signed = parsed.subject().as_raw() == parsed.issuer().as_raw();

        let mut roots =
            pem::certificates(&secret.root_cert).map_err(|e| invalid(at(ROOT_CERT), e))?;
        if roots.is_empty() {
            if !self_signed {
                return Err(invalid(at(ROOT_CERT), "no certificate found"));
            }
            // istio-ca-secret of a self-signed CA may leave root-cert.pem empty.
            roots.push(ca_cert.clone());
        }
        // A root listed twice (two bundles concatenated by hand) counts once.
        let mut listed: Vec<TrustedRoot> = Vec::with_capacity(roots.len());
        for root in &roots {
            if !listed.iter().any(|r| r.cert() == root) {
                let expiry = not_after(root).map_err(|e| invalid(at(ROOT_CERT), e))?;
                listed.push(TrustedRoot::listed(root.clone(), expiry));
            }
        }
        let roots: Vec<_> = listed.iter().map(|r| r.cert().clone()).collect();
        let chain =
            pem::certificates(&secret.cert_chain).map_err(|e| invalid(at(CERT_CHAIN), e))?;
        // cert-chain.pem conventionally starts with ca-cert.pem and may end with the root
        // (Istio's cert tooling writes both); keep each certificate once, roots only at the end.
        let mut intermediates = Vec::new();
        if !roots.contains(&ca_cert) {
            intermediates.push(ca_cert.clone());
        }
        for cert in chain {
            if !roots.contains(&cert) && !intermediates.contains(&cert) {
                intermediates.push(cert);
            }
        }

        let issuer = rcgen::Issuer::from_ca_cert_der(&ca_cert, key)
            .map_err(|e| invalid(at(CA_CERT), format!("cannot sign with it: {e}")))?;
        let mut ca = Self {
            options,
            issuer: Arc::new(issuer),
            ca_not_after,
            signing_cert: ca_cert.clone(),
            intermediates,
            listed_roots: roots,
            // Set below, once the root the chain leads to is known.
            bundle: TrustBundle::new(Vec::new(), &ca_cert),
            response_tail: Vec::new(),
            self_signed,
            rng: ring::rand::SystemRandom::new(),
        };
        let signing_root = ca
            .self_check()
            .map_err(|reason| invalid(location, reason))?;
        ca.set_bundle(TrustBundle::new(listed, &signing_root));
        Ok(ca)
    }

    /// Installs a trust bundle: what [`Self::roots`] and every response carry.
    fn set_bundle(&mut self, bundle: TrustBundle) {
        let mut tail: Vec<String> = self
            .intermediates
            .iter()
            .map(|c| pem::certificate_pem(c))
            .collect();
        tail.push(bundle.pem().to_owned());
        self.response_tail = tail;
        self.bundle = bundle;
    }

    /// This CA (freshly loaded from changed files) as the successor of `previous`: its trust
    /// bundle keeps the roots `previous` issued under that are no longer listed, until the
    /// certificates issued under them have expired (see [`TrustBundle`]).
    pub fn succeeding(mut self, previous: &CertificateAuthority, now: SystemTime) -> Self {
        let retention = self.options.max_cert_ttl.max(self.options.default_cert_ttl);
        let bundle = previous.bundle.succeed(&self.bundle, retention, now);
        self.set_bundle(bundle);
        self
    }

    /// This CA without the retained roots whose time has come at `now`, or `None` when the
    /// bundle stays as it is.
    pub fn without_expired_roots(&self, now: SystemTime) -> Option<Self> {
        let bundle = self.bundle.without_expired(now)?;
        let mut next = self.clone();
        next.set_bundle(bundle);
        Some(next)
    }

    /// Issues a short certificate for the CA's own key and verifies it as a client would:
    /// catches a chain that does not lead to the roots, a wrong key, an expired CA. Returns
    /// the root the chain leads to.
    fn self_check(&self) -> Result<CertificateDer<'static>, String> {
        let leaf =
            sign::self_check_leaf(self).map_err(|e| format!("test signature failed: {e}"))?;
        let now = rustls_pki_types::UnixTime::now();
        crate::authn::verify_chain(&leaf, &self.intermediates, &self.listed_roots, now).map_err(
            |e| {
                format!(
                    "a certificate signed by {CA_CERT} does not verify against {ROOT_CERT} \
                     through {CERT_CHAIN}: {e}"
                )
            },
        )?;
        // With several roots (a rotation), the one issued under is the one that verifies alone.
        self.listed_roots
            .iter()
            .find(|root| {
                crate::authn::verify_chain(
                    &leaf,
                    &self.intermediates,
                    std::slice::from_ref(*root),
                    now,
                )
                .is_ok()
            })
            .cloned()
            .ok_or_else(|| format!("no single root of {ROOT_CERT} verifies {CA_CERT}"))
    }

    /// The options in force.
    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// The trust domain of issued identities.
    pub fn trust_domain(&self) -> &str {
        &self.options.trust_domain
    }

    /// The trust bundle as one PEM text: what workloads trust (the last entry of every
    /// `CreateCertificate` response, the `istio-ca-root-cert` ConfigMap). Without a rotation
    /// in progress, the roots of `root-cert.pem`.
    pub fn root_cert_pem(&self) -> &str {
        self.bundle.pem()
    }

    /// The trusted root certificates: the trust bundle's.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        self.bundle.certificates()
    }

    /// The roots of `root-cert.pem` only.
    pub fn listed_roots(&self) -> &[CertificateDer<'static>] {
        &self.listed_roots
    }

    /// The trust bundle, with when each retained root leaves it.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The signing certificate (`ca-cert.pem`).
    pub fn signing_certificate(&self) -> &CertificateDer<'static> {
        &self.signing_cert
    }

    /// Certificates between an issued leaf and the roots, the signing certificate first.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Whether the CA was generated here (not plugged in).
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// When the signing certificate expires; no issued certificate outlives it.
    pub fn ca_not_after(&self) -> std::time::SystemTime {
        self.ca_not_after.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DirStorage;

    fn testdata(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel)
    }

    #[tokio::test]
    async fn second_start_loads_the_persisted_root() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = DirStorage::new(tmp.path());
        let first =
            CertificateAuthority::load_or_create_self_signed(&storage, CaOptions::default())
                .await
                .unwrap();
        assert!(first.is_self_signed());
        assert!(first.intermediates().is_empty());
        let second =
            CertificateAuthority::load_or_create_self_signed(&storage, CaOptions::default())
                .await
                .unwrap();
        assert_eq!(first.root_cert_pem(), second.root_cert_pem());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(ROOT_CERT)).unwrap(),
            first.root_cert_pem()
        );
    }

    #[tokio::test]
    async fn losing_the_save_race_loads_the_winner() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = DirStorage::new(tmp.path());
        let (winner, secret) =
            CertificateAuthority::generate_self_signed(CaOptions::default()).unwrap();
        // A storage that reports "empty" once, as if another replica saved in between.
        struct Racy<'a>(&'a DirStorage, std::sync::atomic::AtomicBool, &'a CaSecret);
        impl CaStorage for Racy<'_> {
            fn location(&self) -> String {
                self.0.location()
            }
            fn load(
                &self,
            ) -> futures::future::BoxFuture<'_, Result<Option<CaSecret>, StorageError>>
            {
                if self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    self.0.load()
                } else {
                    Box::pin(async {
                        self.0.save(self.2).await?;
                        Ok(None)
                    })
                }
            }
            fn save<'a>(
                &'a self,
                secret: &'a CaSecret,
            ) -> futures::future::BoxFuture<'a, Result<(), StorageError>> {
                self.0.save(secret)
            }
        }
        let racy = Racy(&storage, Default::default(), &secret);
        let loser = CertificateAuthority::load_or_create_self_signed(&racy, CaOptions::default())
            .await
            .unwrap();
        assert_eq!(loser.root_cert_pem(), winner.root_cert_pem());
    }

    #[test]
    fn plugged_cacerts_load_in_every_key_encoding() {
        for dir in ["cacerts-rsa-pkcs1", "cacerts-ec-sec1", "cacerts-ec-pkcs8"] {
            let ca = CertificateAuthority::from_cacerts_dir(&testdata(dir), CaOptions::default())
                .unwrap_or_else(|e| panic!("{dir}: {e}"));
            assert!(!ca.is_self_signed(), "{dir}");
            // cert-chain.pem is ca-cert (+ intermediate) + root: the root is not repeated as an
            // intermediate.
            let expected = if dir == "cacerts-ec-pkcs8" { 2 } else { 1 };
            assert_eq!(ca.intermediates().len(), expected, "{dir}");
            assert_eq!(ca.roots().len(), 1, "{dir}");
        }
    }

    #[test]
    fn broken_cacerts_are_rejected_with_the_file_named() {
        let src = testdata("cacerts-ec-pkcs8");
        let other = testdata("cacerts-rsa-pkcs1");
        type Breaker<'a> = &'a dyn Fn(&Path);
        let cases: &[(&str, Breaker, &str)] = &[
            (
                "missing key",
                &|d| std::fs::remove_file(d.join(CA_KEY)).unwrap(),
                "ca-key.pem",
            ),
            (
                "key of another CA",
                &|d| {
                    std::fs::copy(other.join(CA_KEY), d.join(CA_KEY))
                        .map(drop)
                        .unwrap()
                },
                "does not match",
            ),
            (
                "root of another CA",
                &|d| {
                    std::fs::copy(other.join(ROOT_CERT), d.join(ROOT_CERT))
                        .map(drop)
                        .unwrap()
                },
                "does not verify against root-cert.pem",
            ),
            (
                "garbage cert",
                &|d| {
                    std::fs::write(
                        d.join(CA_CERT),
                        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    )
                    .unwrap()
                },
                "ca-cert.pem",
            ),
            (
                "no root",
                &|d| std::fs::write(d.join(ROOT_CERT), "").unwrap(),
                "root-cert.pem: no certificate found",
            ),
            (
                "leaf as CA",
                &|d| {
                    // The root's key and a non-CA certificate for it.
                    let key = rcgen::KeyPair::generate().unwrap();
                    let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
                        .unwrap()
                        .self_signed(&key)
                        .unwrap();
                    std::fs::write(d.join(CA_CERT), cert.pem()).unwrap();
                    std::fs::write(d.join(CA_KEY), key.serialize_pem()).unwrap();
                },
                "not a CA certificate",
            ),
        ];
        for (name, break_it, expected) in cases {
            let tmp = tempfile::tempdir().unwrap();
            for f in [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT] {
                std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
            }
            break_it(tmp.path());
            let err = CertificateAuthority::from_cacerts_dir(tmp.path(), CaOptions::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn invalid_trust_domain_is_rejected() {
        let options = CaOptions {
            trust_domain: "Bad Domain".into(),
            ..CaOptions::default()
        };
        assert!(matches!(
            CertificateAuthority::generate_self_signed(options),
            Err(CaError::TrustDomain(_))
        ));
    }
}
