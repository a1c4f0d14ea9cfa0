//! Where the self-signed CA keeps its key material between starts: Istio's `istio-ca-secret`
//! (keys `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`). A directory holds
//! the same four files; a Kubernetes Secret implementation plugs in behind the same trait.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

/// Key of the CA certificate in the secret (and in a `cacerts` directory).
pub const CA_CERT: &str = "ca-cert.pem";
/// Key of the CA private key.
pub const CA_KEY: &str = "ca-key.pem";
/// Key of the chain from the CA certificate up to (possibly including) the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Key of the root certificate(s).
pub const ROOT_CERT: &str = "root-cert.pem";
/// Name of Istio's secret holding a self-signed CA (`istio-system/istio-ca-secret`).
pub const SELF_SIGNED_SECRET_NAME: &str = "istio-ca-secret";

/// The CA's key material, PEM text under Istio's secret keys.
#[derive(Clone, PartialEq, Eq)]
pub struct CaSecret {
    /// `ca-cert.pem`: the signing certificate.
    pub ca_cert: String,
    /// `ca-key.pem`: its private key.
    pub ca_key: String,
    /// `cert-chain.pem`: intermediates above the signing certificate; empty for a root CA.
    pub cert_chain: String,
    /// `root-cert.pem`: the trust anchor(s); for a self-signed CA, the CA certificate.
    pub root_cert: String,
}

impl std::fmt::Debug for CaSecret {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSecret")
            .field("ca_cert", &self.ca_cert)
            .field("ca_key", &"<redacted>")
            .field("cert_chain", &self.cert_chain)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// [`CaStorage::save`] found a secret already stored (another replica won the race):
    /// load that one instead.
    #[error("a CA secret already exists in {0}")]
    AlreadyExists(String),
    /// The stored secret is incomplete or unreadable.
    #[error("CA secret in {location} is unusable: {reason}")]
    Invalid {
        /// Where the secret lives.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend failed (file system, API server).
    #[error("CA storage {location}: {source}")]
    Io {
        /// Where the secret lives.
        location: String,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Persistence of the self-signed CA's secret. Async so that a Kubernetes Secret backend (one
/// GET / one CREATE) fits; `save` is create-if-absent so that two control-plane replicas
/// starting together converge on one root.
pub trait CaStorage: Send + Sync {
    /// Human-readable location, for errors and logs.
    fn location(&self) -> String;
    /// The stored secret, or `None` when nothing was stored yet.
    fn load(&self) -> BoxFuture<'_, Result<Option<CaSecret>, StorageError>>;
    /// Stores `secret`; [`StorageError::AlreadyExists`] if one is stored already.
    fn save<'a>(&'a self, secret: &'a CaSecret) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// A directory holding the four files. Each file is written to a temporary name, synced and
/// renamed, the key with mode 0600, and `ca-cert.pem` last: it marks a complete secret.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Storage in `dir` (created on save if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, what: &str, e: std::io::Error) -> StorageError {
        StorageError::Io {
            location: self.dir.join(what).display().to_string(),
            source: Box::new(e),
        }
    }

    fn read(&self, name: &str) -> Result<Option<String>, StorageError> {
        match std::fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(name, e)),
        }
    }

    fn load_sync(&self) -> Result<Option<CaSecret>, StorageError> {
        let Some(ca_cert) = self.read(CA_CERT)? else {
            return Ok(None);
        };
        let ca_key = self.read(CA_KEY)?.ok_or_else(|| StorageError::Invalid {
            location: self.location(),
            reason: format!("{CA_CERT} exists but {CA_KEY} does not"),
        })?;
        Ok(Some(CaSecret {
            ca_cert,
            ca_key,
            cert_chain: self.read(CERT_CHAIN)?.unwrap_or_default(),
            root_cert: self.read(ROOT_CERT)?.unwrap_or_default(),
        }))
    }

    fn write_atomically(&self, name: &str, contents: &str, mode: u32) -> Result<(), StorageError> {
        let target = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            let mut file = options.open(&tmp)?;
            // `mode` applies only to new files: an old temp file keeps its bits otherwise.
            #[cfg(unix)]
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            file.write_all(contents.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io(name, e)
        })
    }

    fn save_sync(&self, secret: &CaSecret) -> Result<(), StorageError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io("", e))?;
        if self.dir.join(CA_CERT).exists() {
            return Err(StorageError::AlreadyExists(self.location()));
        }
        self.write_atomically(CA_KEY, &secret.ca_key, 0o600)?;
        self.write_atomically(CERT_CHAIN, &secret.cert_chain, 0o644)?;
        self.write_atomically(ROOT_CERT, &secret.root_cert, 0o644)?;
        self.write_atomically(CA_CERT, &secret.ca_cert, 0o644)?;
        // The renames are durable only once the directory entry is.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl CaStorage for DirStorage {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    // Four small files at start-up: blocking the executor briefly is cheaper than a thread hop.
    fn load(&self) -> BoxFuture<'_, Result<Option<CaSecret>, StorageError>> {
        Box::pin(async move { self.load_sync() })
    }

    fn save<'a>(&'a self, secret: &'a CaSecret) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.save_sync(secret) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> CaSecret {
        CaSecret {
            ca_cert: "cert".into(),
            ca_key: "key".into(),
            cert_chain: String::new(),
            root_cert: "root".into(),
        }
    }

    #[tokio::test]
    async fn dir_round_trip_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = DirStorage::new(tmp.path().join("ca"));
        assert!(storage.load().await.unwrap().is_none());
        storage.save(&secret()).await.unwrap();
        assert_eq!(storage.load().await.unwrap(), Some(secret()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |n: &str| {
                std::fs::metadata(storage.dir().join(n))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(CA_KEY), 0o600);
            assert_eq!(mode(CA_CERT), 0o644);
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(storage.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(matches!(
            storage.save(&secret()).await,
            Err(StorageError::AlreadyExists(_))
        ));
    }

    #[tokio::test]
    async fn cert_without_key_is_invalid() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CA_CERT), "cert").unwrap();
        let err = DirStorage::new(tmp.path()).load().await.unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", secret());
        assert!(!shown.contains("\"key\""), "{shown}");
    }
}
