//! The servers under test, started on the API server's mesh with every port on loopback:
//! `capstan discovery --kubeconfig`, and istiod (`pilot-discovery discovery`) out of cluster with
//! the work Capstan does not do switched off (its CA, sidecar injection, the validation
//! webhook, config analysis), as `tests/src/istiod.rs` runs it.

use crate::http;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// `pilot-discovery discovery`.
    Istiod,
    /// `capstan discovery`.
    Capstan,
}

impl ServerKind {
    /// The name in tables.
    pub fn label(self) -> &'static str {
        match self {
            ServerKind::Istiod => "istiod",
            ServerKind::Capstan => "Capstan",
        }
    }
}

/// istiod's environment, before `--istiod-env` overrides: what needs a real cluster or is
/// work Capstan does not do yet is off. `PILOT_MAX_REQUESTS_PER_SECOND` is left at istiod's
/// default (15 + 5 per core: 25 new streams a second on two cores) unless overridden.
pub const ISTIOD_ENV: &[(&str, &str)] = &[
    ("ENABLE_CA_SERVER", "false"),
    ("INJECT_ENABLED", "false"),
    ("VALIDATION_WEBHOOK_CONFIG_NAME", ""),
    ("POD_NAMESPACE", "istio-system"),
    ("PILOT_ENABLE_ANALYSIS", "false"),
];

/// How `capstan discovery` and istiod are started (flags shared by the `kube` and `startup`
/// modes).
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The capstan binary.
    #[arg(long, default_value = "target/release/capstan")]
    pub capstan: PathBuf,
    /// Extra arguments for `capstan discovery` (repeat).
    #[arg(long = "capstan-arg", allow_hyphen_values = true)]
    pub capstan_args: Vec<String>,
    /// `RUST_LOG` of `capstan discovery` (its log goes to the work directory).
    #[arg(long, default_value = "warn")]
    pub capstan_log: String,
    /// The `pilot-discovery` binary (built by `tests/infra/install-tools.sh istio-pilot`).
    #[arg(long)]
    pub pilot_discovery: Option<PathBuf>,
    /// Extra arguments for `pilot-discovery discovery` (repeat).
    #[arg(long = "istiod-arg", allow_hyphen_values = true)]
    pub istiod_args: Vec<String>,
    /// Extra environment of istiod, `NAME=VALUE` (repeat), e.g.
    /// `PILOT_MAX_REQUESTS_PER_SECOND=1000` to lift its admission rate.
    #[arg(long = "istiod-env")]
    pub istiod_env: Vec<String>,
    /// Istio's CRDs, applied before the mesh.
    #[arg(long, default_value = "deploy/crds")]
    pub crds: PathBuf,
}

impl ServerArgs {
    /// The launch settings against the API server of `kubeconfig`, logs in `dir`.
    pub fn launch(
        &self,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
    ) -> anyhow::Result<Launch> {
        Ok(Launch {
            kubeconfig: kubeconfig.to_path_buf(),
            capstan: self.capstan.clone(),
            capstan_args: self.capstan_args.clone(),
            capstan_log: self.capstan_log.clone(),
            pilot_discovery: self.pilot_discovery.clone(),
            istiod_args: self.istiod_args.clone(),
            istiod_env: super::parse_env(&self.istiod_env)?,
            dir: dir.to_path_buf(),
        })
    }
}

/// How to start each server.
#[derive(Clone, Debug)]
pub struct Launch {
    pub kubeconfig: PathBuf,
    pub capstan: PathBuf,
    pub capstan_args: Vec<String>,
    pub capstan_log: String,
    pub pilot_discovery: Option<PathBuf>,
    pub istiod_args: Vec<String>,
    pub istiod_env: Vec<(String, String)>,
    /// Where the servers' logs go.
    pub dir: PathBuf,
}

/// A running server; killed on drop.
pub struct Server {
    pub kind: ServerKind,
    pub pid: u32,
    /// Plaintext xDS.
    pub xds: SocketAddr,
    /// The port answering `/ready`.
    ready_port: u16,
    log: PathBuf,
    child: Child,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Server {
    /// Starts `kind`; its log goes to `<dir>/<kind>-<n>.log`.
    pub fn start(kind: ServerKind, launch: &Launch, run: usize) -> Result<Server> {
        let xds_port = free_port()?;
        let log = launch.dir.join(format!("{}-{run}.log", kind.label()));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let (mut cmd, ready_port) = match kind {
            ServerKind::Capstan => {
                let monitoring = free_port()?;
                let mut cmd = Command::new(&launch.capstan);
                cmd.arg("discovery")
                    .arg("--kubeconfig")
                    .arg(&launch.kubeconfig)
                    .args(["--xds-addr", &local(xds_port)])
                    .args(["--secure-xds-addr", &local(free_port()?)])
                    .args(["--debug-addr", &local(free_port()?)])
                    .args(["--monitoring-addr", &local(monitoring)])
                    .args(&launch.capstan_args)
                    .env("RUST_LOG", &launch.capstan_log);
                (cmd, monitoring)
            }
            ServerKind::Istiod => {
                let binary = launch
                    .pilot_discovery
                    .as_ref()
                    .context("measuring istiod needs --pilot-discovery PATH")?;
                let http = free_port()?;
                let mut cmd = Command::new(binary);
                cmd.arg("discovery")
                    .arg("--kubeconfig")
                    .arg(&launch.kubeconfig)
                    .args(["--grpcAddr", &local(xds_port)])
                    .args(["--secureGRPCAddr", ""])
                    .args(["--monitoringAddr", &local(free_port()?)])
                    .args(["--httpsAddr", ""])
                    .args(["--httpAddr", &local(http)])
                    .args(["--ctrlz_port", &free_port()?.to_string()])
                    .args(&launch.istiod_args);
                for (k, v) in ISTIOD_ENV {
                    cmd.env(k, v);
                }
                for (k, v) in &launch.istiod_env {
                    cmd.env(k, v);
                }
                (cmd, http)
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", kind.label()))?;
        Ok(Server {
            kind,
            pid: child.id(),
            xds: SocketAddr::from(([127, 0, 0, 1], xds_port)),
            ready_port,
            log,
            child,
        })
    }

    /// Waits until `/ready` answers 200 (both servers: every informer has synced once).
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        self.wait_ready_polling(limit, Duration::from_millis(100))
            .await
    }

    /// [`Server::wait_ready`], asking every `every`.
    pub async fn wait_ready_polling(&mut self, limit: Duration, every: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}); log:\n{}",
                    self.kind.label(),
                    self.tail()
                );
            }
            if matches!(http::get(self.ready_port, "/ready").await, Ok((200, _))) {
                return Ok(());
            }
            tokio::time::sleep(every).await;
        }
        bail!(
            "{} not ready within {limit:?}; log:\n{}",
            self.kind.label(),
            self.tail()
        )
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
