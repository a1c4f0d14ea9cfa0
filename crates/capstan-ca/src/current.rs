//! The CA in force, shared by everything that signs or verifies with it (the CA service, the
//! client-certificate authenticator, the TLS port, the root publisher): a snapshot for each
//! request, and a signal when a reload replaces it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::authority::CertificateAuthority;

/// The current [`CertificateAuthority`], replaced whole when its key material or trust bundle
/// changes. Cheap to clone; every clone sees the same versions.
#[derive(Clone)]
pub struct CurrentCa {
    versions: watch::Receiver<Arc<CertificateAuthority>>,
}

impl std::fmt::Debug for CurrentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CurrentCa").field(&*self.get()).finish()
    }
}

impl CurrentCa {
    /// A CA that never changes (a self-signed root).
    pub fn fixed(ca: Arc<CertificateAuthority>) -> Self {
        Self::channel(ca).1
    }

    /// A CA whose later versions are sent on the returned sender.
    pub(crate) fn channel(
        ca: Arc<CertificateAuthority>,
    ) -> (watch::Sender<Arc<CertificateAuthority>>, Self) {
        let (tx, versions) = watch::channel(ca);
        (tx, Self { versions })
    }

    /// The version in force now.
    pub fn get(&self) -> Arc<CertificateAuthority> {
        self.versions.borrow().clone()
    }

    /// Waits for a version newer than the last one this handle returned from here, and
    /// returns it; waits forever when no new version can come (a fixed CA).
    pub async fn changed(&mut self) -> Arc<CertificateAuthority> {
        if self.versions.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.versions.borrow_and_update().clone()
    }
}

impl From<Arc<CertificateAuthority>> for CurrentCa {
    fn from(ca: Arc<CertificateAuthority>) -> Self {
        Self::fixed(ca)
    }
}
