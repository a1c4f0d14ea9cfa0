//! istiod (`pilot-discovery`, built by `tests/infra/install-tools.sh` from the pinned
//! `istio.io/istio` module) run out of cluster against a [`PrivateKube`], as the reference to
//! compare Capstan with. What it needs there: the `istio-system` namespace, the `istio`
//! ConfigMap (keys `mesh` and `meshNetworks`), Istio's CRDs, and environment switches that turn
//! off what needs a real cluster (its CA, injection, the validation webhook, analysis).

use crate::private_kube::PrivateKube;
use crate::{infra, ChildGuard};
use anyhow::{Context as _, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running istiod; killed on drop.
pub struct Istiod {
    /// Plaintext xDS (`--grpcAddr`).
    pub grpc_port: u16,
    /// `/metrics` (`--monitoringAddr`).
    pub monitoring_port: u16,
    /// `/ready`, `/debug/*` (`--httpAddr`).
    pub http_port: u16,
    /// Its log file.
    pub log: std::path::PathBuf,
    _child: ChildGuard,
}

impl Istiod {
    /// Prepares the API server (namespace, mesh ConfigMap, CRDs: idempotent) and starts
    /// istiod with its log in `dir`; waits until `/ready` answers 200.
    pub fn start(kube: &PrivateKube, dir: &Path) -> Result<Istiod> {
        kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
        kube.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: ''\n  meshNetworks: 'networks: {}'\n",
        )?;
        let binary = infra()?.tool("pilot-discovery")?;
        use crate::free_port;
        let (grpc_port, monitoring_port, http_port, ctrlz) =
            (free_port(), free_port(), free_port(), free_port());
        let log = dir.join("istiod.log");
        let child = Command::new(binary)
            .args(["discovery", "--kubeconfig"])
            .arg(kube.kubeconfig())
            .args(["--grpcAddr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--secureGRPCAddr", ""])
            .args(["--monitoringAddr", &format!("127.0.0.1:{monitoring_port}")])
            .args(["--httpsAddr", ""])
            .args(["--httpAddr", &format!("127.0.0.1:{http_port}")])
            .args(["--ctrlz_port", &ctrlz.to_string()])
            .env("ENABLE_CA_SERVER", "false")
            .env("INJECT_ENABLED", "false")
            .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
            .env("POD_NAMESPACE", "istio-system")
            .env("PILOT_ENABLE_ANALYSIS", "false")
            // istiod logs to stdout.
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting pilot-discovery")?;
        let istiod = Istiod {
            grpc_port,
            monitoring_port,
            http_port,
            log,
            _child: ChildGuard::new("istiod", child),
        };
        crate::wait_http_ok(http_port, "/ready", Duration::from_secs(60))
            .with_context(|| format!("istiod not ready; log:\n{}", istiod.tail()))?;
        Ok(istiod)
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
