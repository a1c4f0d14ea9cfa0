//! Shared by the webhook and shutdown tests of `capstan discovery`: the process on loopback
//! ports (xDS, monitoring, webhook), signals, its exit, curl over TLS, certificates on disk.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    capstan_e2e::free_port()
}

/// `capstan discovery` on loopback ports; killed on drop, its log kept for failure reports.
pub struct Discovery {
    child: Child,
    pub log: PathBuf,
    pub xds_port: u16,
    pub monitoring_port: u16,
    pub webhook_port: u16,
    /// Every port it was given.
    pub ports: Ports,
}

/// The loopback ports of one `capstan discovery`.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub xds: u16,
    pub secure: u16,
    pub debug: u16,
    pub monitoring: u16,
    pub webhook: u16,
}

impl Ports {
    /// Free ports, one for each.
    pub fn free() -> Ports {
        Ports {
            xds: free_port(),
            secure: free_port(),
            debug: free_port(),
            monitoring: free_port(),
            webhook: free_port(),
        }
    }
}

impl Discovery {
    /// Starts it with `args` plus a webhook on a free port, and waits for `/ready`.
    pub fn start(log_dir: &Path, name: &str, args: &[&str]) -> Result<Discovery> {
        Discovery::start_on(log_dir, name, Ports::free(), args)
    }

    /// [`Discovery::start`] on given ports (e.g. a restart on the ports of the last run).
    pub fn start_on(log_dir: &Path, name: &str, ports: Ports, args: &[&str]) -> Result<Discovery> {
        let Ports {
            xds: xds_port,
            secure: secure_port,
            debug: debug_port,
            monitoring: monitoring_port,
            webhook: webhook_port,
        } = ports;
        let log = log_dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("discovery")
            .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
            .args(["--secure-xds-addr", &format!("127.0.0.1:{secure_port}")])
            .args(["--debug-addr", &format!("127.0.0.1:{debug_port}")])
            .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting capstan discovery")?;
        let discovery = Discovery {
            child,
            log,
            xds_port,
            monitoring_port,
            webhook_port,
            ports,
        };
        capstan_e2e::wait_http_ok(monitoring_port, "/ready", Duration::from_secs(60))
            .with_context(|| format!("discovery not ready; log:\n{}", discovery.tail()))?;
        Ok(discovery)
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid")?;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        anyhow::ensure!(rc == 0, "kill: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("still running after {within:?}; log:\n{}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status code of `GET /ready` on the monitoring port.
    pub fn ready_status(&self) -> Result<u16> {
        let url = format!("http://127.0.0.1:{}/ready", self.monitoring_port);
        Ok(capstan_e2e::curl("GET", &url, None, Duration::from_secs(5))?.status)
    }

    /// `https://127.0.0.1:<webhook port><path>`.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.webhook_port)
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POST over HTTPS with curl trusting `ca` (a PEM file): status and body.
pub fn post(
    url: &str,
    ca: &Path,
    content_type: &str,
    body: &[u8],
    scratch: &Path,
) -> Result<(u16, String)> {
    let file = scratch.join(format!("body-{}", free_port()));
    std::fs::write(&file, body)?;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(["-o", "-", "-w", "\n%{http_code}", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some((body, code)) = text.rsplit_once('\n') else {
        bail!("curl printed no status: {text} {}", stderr(&out));
    };
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("curl: {} {}", text, stderr(&out)))?;
    if code == 0 {
        bail!("curl could not connect: {}", stderr(&out));
    }
    Ok((code, body.to_owned()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A CA and a leaf for 127.0.0.1 written as `ca.crt`, `tls.crt`, `tls.key` in `dir` (a
/// Kubernetes TLS Secret's layout); the CA's PEM is returned.
pub fn write_cert_dir(dir: &Path) -> Result<String> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test-ca-{}", free_port()),
    );
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    let leaf = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(dir)?;
    // Not atomic: a reload that reads a half-written pair keeps the last one and retries.
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("tls.crt"), leaf.pem())?;
    Ok(ca_cert.pem())
}

/// An AdmissionReview (v1) of `operation` on `object`.
pub fn admission_review(operation: &str, object: Option<serde_json::Value>) -> Vec<u8> {
    let mut request = serde_json::json!({
        "uid": "1b4a2c1e-0000-4000-8000-000000000001",
        "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
        "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
        "name": "reviews",
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "test"},
        "dryRun": false,
    });
    if let Some(object) = object {
        request["object"] = object;
    }
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))
    .expect("JSON values serialize")
}

/// A VirtualService for host `reviews` with one HTTP route given as YAML-ish JSON.
pub fn virtual_service(name: &str, http_route: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": ["reviews"], "http": [http_route]},
    })
}
