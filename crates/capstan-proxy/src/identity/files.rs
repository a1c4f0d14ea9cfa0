//! Workload certificates mounted as files, in Istio's `/etc/certs` layout (`cert-chain.pem`,
//! `key.pem`, `root-cert.pem`), as pilot-agent reads them when they exist. Re-read when a file
//! changes; a bad set is logged and the last good material stays.

use super::{Identity, Material};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The three files of a directory.
pub fn paths(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("cert-chain.pem"),
        dir.join("key.pem"),
        dir.join("root-cert.pem"),
    ]
}

/// Reads the directory's material.
pub fn load(dir: &Path) -> Result<Material, String> {
    let [chain, key, roots] = paths(dir);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Material::from_pem(&read(&chain)?, &read(&key)?, &read(&roots)?)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn stamp(dir: &Path) -> Vec<Option<SystemTime>> {
    paths(dir)
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Loads the directory into `identity`, then polls it every `every` and reloads on change.
pub async fn run(dir: PathBuf, identity: Arc<Identity>, every: Duration) {
    let mut seen = None;
    loop {
        let now = stamp(&dir);
        if seen.as_ref() != Some(&now) {
            match load(&dir) {
                Ok(m) => identity.set(m),
                Err(error) => {
                    tracing::error!(%error, "workload certificate files not loaded; keeping the last good ones")
                }
            }
            seen = Some(now);
        }
        tokio::time::sleep(every).await;
    }
}
