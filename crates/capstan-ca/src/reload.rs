//! Reloading a plugged-in CA when its `cacerts` files change, as istiod does with
//! `AUTO_RELOAD_PLUGIN_CERTS` (it watches `/etc/cacerts`, the mounted `cacerts` Secret): a new
//! intermediate, a new root added to `root-cert.pem`, a switch to a new root, without a
//! restart and without a failed handshake.
//!
//! A changed set is loaded with every check of the first load (key matches certificate, the
//! chain leads to a root of `root-cert.pem`); a set that fails them, for instance one whose
//! files are being replaced one at a time, is refused with an error naming the file, and the
//! previous CA keeps signing. The new CA's trust bundle keeps the roots the previous one
//! issued under (see [`crate::TrustBundle`]); retained roots are dropped when their time comes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::{read_cacerts_dir, CaError, CaOptions, CertificateAuthority};
use crate::current::CurrentCa;
use crate::storage::CaSecret;

/// Quiet period after a change before the files are read (a finished write or an atomic
/// rename ends it at once; Kubernetes replaces a Secret volume's files in one rename).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The files are also compared this often, should file notifications be lost or unavailable.
const POLL: Duration = Duration::from_secs(30);

/// What a look at the directory found.
#[derive(Debug)]
pub enum Reload {
    /// Nothing new: the files are those loaded, or those already refused.
    Unchanged,
    /// A new, valid set: the CA to use from now on.
    Loaded(Box<CertificateAuthority>),
    /// A new set that cannot be used; the reason names the file.
    Refused(String),
}

/// Compares a `cacerts` directory with what was loaded from it, and loads what changed.
#[derive(Debug)]
pub struct CacertsReloader {
    dir: PathBuf,
    options: CaOptions,
    loaded: CaSecret,
    /// The last refused content (or the read error), so a refusal is reported once.
    refused: Option<Result<CaSecret, String>>,
}

impl CacertsReloader {
    /// A reloader for `dir`, whose files currently hold `loaded`.
    pub fn new(dir: impl Into<PathBuf>, options: CaOptions, loaded: CaSecret) -> Self {
        Self {
            dir: dir.into(),
            options,
            loaded,
            refused: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory; a new valid set becomes the successor of `current` at `now`.
    pub fn check(&mut self, current: &CertificateAuthority, now: SystemTime) -> Reload {
        let secret = match read_cacerts_dir(&self.dir) {
            Ok(secret) => secret,
            Err(e) => {
                let reason = e.to_string();
                return self.refuse(Err(reason.clone()), reason);
            }
        };
        if secret == self.loaded {
            self.refused = None;
            return Reload::Unchanged;
        }
        if matches!(&self.refused, Some(Ok(refused)) if *refused == secret) {
            return Reload::Unchanged;
        }
        let location = self.dir.display().to_string();
        match CertificateAuthority::from_secret(&secret, &location, self.options.clone()) {
            Ok(ca) => {
                self.loaded = secret;
                self.refused = None;
                Reload::Loaded(Box::new(ca.succeeding(current, now)))
            }
            Err(e) => self.refuse(Ok(secret), e.to_string()),
        }
    }

    /// Records a refusal; only a new one is reported.
    fn refuse(&mut self, what: Result<CaSecret, String>, reason: String) -> Reload {
        if self.refused.as_ref() == Some(&what) {
            return Reload::Unchanged;
        }
        self.refused = Some(what);
        Reload::Refused(reason)
    }
}

/// The subject of a certificate, for logs.
fn subject(cert: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(cert)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "<unparsable>".to_owned())
}

/// Loads the plugged-in CA of `dir` and returns it with the task that keeps it current:
/// run the task (it never ends) and every clone of the [`CurrentCa`] sees each new version.
pub fn watch_cacerts(
    dir: &Path,
    options: CaOptions,
) -> Result<(CurrentCa, impl Future<Output = ()> + Send + 'static), CaError> {
    let secret = read_cacerts_dir(dir)?;
    let ca =
        CertificateAuthority::from_secret(&secret, &dir.display().to_string(), options.clone())?;
    let (versions, current) = CurrentCa::channel(Arc::new(ca));
    let reloader = CacertsReloader::new(dir, options, secret);
    Ok((current, keep_current(reloader, versions)))
}

/// Aborts the file watcher when the reload task ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_current(
    mut reloader: CacertsReloader,
    versions: tokio::sync::watch::Sender<Arc<CertificateAuthority>>,
) {
    let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let targets = [capstan_fswatch::Target::Tree(reloader.dir().to_owned())];
    let _watcher = AbortOnDrop(tokio::spawn(async move {
        let watched =
            capstan_fswatch::watch(&targets, DEBOUNCE, move || changes_tx.send(()).is_ok());
        if let Err(e) = watched.await {
            tracing::warn!(error = %e, every = ?POLL, "watching the cacerts directory failed; comparing its files periodically only");
        }
    }));
    let dir = reloader.dir().display().to_string();
    loop {
        let current = versions.borrow().clone();
        let expiry = current.trust_bundle().next_expiry();
        let retained_root_expires = async {
            match expiry {
                Some(at) => {
                    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = changes.recv() => {}
            () = tokio::time::sleep(POLL) => {}
            () = retained_root_expires => {}
        }
        let now = SystemTime::now();
        let next = match reloader.check(&current, now) {
            Reload::Loaded(ca) => {
                let retained = ca
                    .trust_bundle()
                    .roots()
                    .iter()
                    .filter(|r| r.kept_until().is_some())
                    .count();
                tracing::info!(
                    %dir,
                    signing = %subject(ca.signing_certificate()),
                    signing_changed = ca.signing_certificate() != current.signing_certificate(),
                    listed_roots = ca.listed_roots().len(),
                    trusted_roots = ca.roots().len(),
                    retained_roots = retained,
                    "reloaded the plugged-in CA"
                );
                Some(*ca)
            }
            Reload::Refused(reason) => {
                tracing::error!(%dir, error = %reason, "refused the changed cacerts; the previous CA keeps signing");
                None
            }
            Reload::Unchanged => None,
        };
        let next = next.or_else(|| {
            let trimmed = current.without_expired_roots(now)?;
            tracing::info!(%dir, trusted_roots = trimmed.roots().len(),
                "a retained root left the trust bundle: every certificate issued under it has expired");
            Some(trimmed)
        });
        if let Some(next) = next {
            versions.send_replace(Arc::new(next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
    use crate::test_support::{csr, id, TestRoot};
    use crate::trust::Issuance;

    fn write(dir: &Path, secret: &CaSecret) {
        for (name, text) in [
            (CA_CERT, &secret.ca_cert),
            (CA_KEY, &secret.ca_key),
            (CERT_CHAIN, &secret.cert_chain),
            (ROOT_CERT, &secret.root_cert),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        crate::pem::certificates(pem).unwrap().remove(0)
    }

    fn loaded(r: Reload) -> CertificateAuthority {
        match r {
            Reload::Loaded(ca) => *ca,
            other => panic!("expected a new CA, got {other:?}"),
        }
    }

    fn refused(r: Reload) -> String {
        match r {
            Reload::Refused(reason) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The last entry of a response: the trust bundle.
    fn response_roots(ca: &CertificateAuthority) -> Vec<CertificateDer<'static>> {
        let chain = ca.sign(&csr("spiffe://x").1, &[id("a", "b")], 0).unwrap();
        crate::pem::certificates(chain.last().unwrap()).unwrap()
    }

    /// Istio's root rotation through the files: add the new root, sign under it, drop the old
    /// one; a half-written set in between is refused and the old CA keeps signing.
    #[test]
    fn root_rotation_through_the_files() {
        let (old, new) = (TestRoot::new("old root"), TestRoot::new("new root"));
        let tmp = tempfile::tempdir().unwrap();
        let first = old.intermediate("old intermediate");
        write(tmp.path(), &first);
        let options = CaOptions::default();
        let ca = CertificateAuthority::from_cacerts_dir(tmp.path(), options.clone()).unwrap();
        let mut reloader = CacertsReloader::new(tmp.path(), options, first.clone());
        let t0 = SystemTime::now();
        assert!(matches!(reloader.check(&ca, t0), Reload::Unchanged));

        // 1. Both roots in root-cert.pem, still signing with the old intermediate.
        let both = format!("{}{}", old.pem(), new.pem());
        std::fs::write(tmp.path().join(ROOT_CERT), &both).unwrap();
        let ca = loaded(reloader.check(&ca, t0));
        assert_eq!(ca.roots(), [old.der(), new.der()]);
        assert_eq!(response_roots(&ca), [old.der(), new.der()]);
        assert_eq!(ca.root_cert_pem(), both);

        // Half-written switch: the new intermediate's certificate with the old key.
        let second = new.intermediate("new intermediate");
        std::fs::write(tmp.path().join(CA_CERT), &second.ca_cert).unwrap();
        let reason = refused(reloader.check(&ca, t0));
        assert!(
            reason.contains("ca-key.pem") && reason.contains("does not match"),
            "{reason}"
        );
        // Reported once; the CA in force is untouched and still signs under the old root.
        assert!(matches!(reloader.check(&ca, t0), Reload::Unchanged));
        assert_eq!(ca.signing_certificate(), &der(&first.ca_cert));
        // A missing file is refused too.
        std::fs::remove_file(tmp.path().join(CA_KEY)).unwrap();
        assert!(refused(reloader.check(&ca, t0)).contains("ca-key.pem"));

        // 2. The rest of the switch: signing under the new root, both still trusted.
        write(
            tmp.path(),
            &CaSecret {
                root_cert: format!("{}{}", new.pem(), old.pem()),
                ..second.clone()
            },
        );
        let t1 = t0 + Duration::from_secs(60);
        let ca = loaded(reloader.check(&ca, t1));
        assert_eq!(ca.signing_certificate(), &der(&second.ca_cert));
        assert_eq!(response_roots(&ca), [new.der(), old.der()]);

        // 3. The old root leaves root-cert.pem: kept until certificates issued under it
        // (until t1) may have expired, i.e. the maximum lifetime (90 d) after t1.
        write(tmp.path(), &second);
        let t2 = t1 + Duration::from_secs(60);
        let ca = loaded(reloader.check(&ca, t2));
        assert_eq!(ca.listed_roots(), [new.der()]);
        assert_eq!(ca.roots(), [new.der(), old.der()]);
        let kept = &ca.trust_bundle().roots()[1];
        assert_eq!(kept.issuance(), Issuance::Until(t1));
        let until = t1 + CaOptions::default().max_cert_ttl;
        assert_eq!(kept.kept_until(), Some(until));
        assert!(ca
            .without_expired_roots(until - Duration::from_secs(1))
            .is_none());
        let ca = ca
            .without_expired_roots(until)
            .expect("the old root leaves");
        assert_eq!(response_roots(&ca), [new.der()]);
    }
}
