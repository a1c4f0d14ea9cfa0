//! istiod (`pilot-discovery`, built by `tests/infra/install-tools.sh` from the pinned
//! `istio.io/istio` module) run out of cluster against a [`PrivateKube`], as the reference to
//! compare Capstan with. What it needs there: the `istio-system` namespace, the `istio`
//! ConfigMap (keys `mesh` and `meshNetworks`), Istio's CRDs, and environment switches that turn
//! off what needs a real cluster (injection, the validation webhook, analysis) and, unless
//! [`Istiod::start_with_ca`], its CA.
//!
//! With its CA, istiod is as installed by default (`PILOT_CERT_PROVIDER=istiod`): it creates a
//! self-signed root in the Secret `istio-system/istio-ca-secret`, copies the root into the
//! ConfigMap `istio-ca-root-cert` of every namespace (what a pod mounts), signs its own serving
//! certificate for `istiod.istio-system.svc` (and `istiod-remote`, `istio-pilot`) with it, and
//! serves xDS and `IstioCertificateService` on `--secureGRPCAddr` (15012 in a cluster),
//! authenticating callers by client certificate or ServiceAccount token (TokenReview, audience
//! `istio-ca`).

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
    /// TLS xDS and the CA (`--secureGRPCAddr`), with [`Istiod::start_with_ca`].
    pub secure_grpc_port: Option<u16>,
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
        Istiod::start_inner(kube, dir, false)
    }

    /// Like [`Istiod::start`], with its CA on and TLS xDS on [`Istiod::secure_grpc_port`].
    /// Runs in `dir`, so the relative paths where istiod looks for plugged-in CA material
    /// (`./etc/cacerts`) and serving certificates (`./var/run/secrets/istiod/tls`) are empty:
    /// it generates its own root.
    pub fn start_with_ca(kube: &PrivateKube, dir: &Path) -> Result<Istiod> {
        Istiod::start_inner(kube, dir, true)
    }

    fn start_inner(kube: &PrivateKube, dir: &Path, ca: bool) -> Result<Istiod> {
        kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
        kube.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: ''\n  meshNetworks: 'networks: {}'\n",
        )?;
        let binary = infra()?.tool("pilot-discovery")?;
        use crate::free_port;
        let (grpc_port, monitoring_port, http_port, ctrlz) =
            (free_port(), free_port(), free_port(), free_port());
        let secure_grpc_port = ca.then(free_port);
        let log = dir.join("istiod.log");
        let mut cmd = Command::new(binary);
        cmd.args(["discovery", "--kubeconfig"])
            .arg(kube.kubeconfig())
            .args(["--grpcAddr", &format!("127.0.0.1:{grpc_port}")])
            .args([
                "--secureGRPCAddr",
                &secure_grpc_port.map_or_else(String::new, |p| format!("127.0.0.1:{p}")),
            ])
            .args(["--monitoringAddr", &format!("127.0.0.1:{monitoring_port}")])
            .args(["--httpsAddr", ""])
            .args(["--httpAddr", &format!("127.0.0.1:{http_port}")])
            .args(["--ctrlz_port", &ctrlz.to_string()])
            .env("INJECT_ENABLED", "false")
            .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
            .env("POD_NAMESPACE", "istio-system")
            .env("PILOT_ENABLE_ANALYSIS", "false");
        if ca {
            cmd.current_dir(dir);
        } else {
            cmd.env("ENABLE_CA_SERVER", "false");
        }
        let child = cmd
            // istiod logs to stdout.
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting pilot-discovery")?;
        let istiod = Istiod {
            grpc_port,
            secure_grpc_port,
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
