//! A private etcd + kube-apiserver for tests that must stop or restart the API server (the
//! shared infra must never be disturbed). Same certificates and flags as `tests/infra/up.sh`;
//! the etcd data dir and the API server port survive [`PrivateKube::restart_apiserver`].
//! Both processes are killed on drop and the directory is removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::{infra, poll_until, run_ok, ChildGuard, Infra, COMMAND_TIMEOUT};

/// A private etcd and kube-apiserver on 127.0.0.1.
pub struct PrivateKube {
    infra: &'static Infra,
    dir: PathBuf,
    /// etcd client port.
    pub etcd_port: u16,
    etcd_peer_port: u16,
    /// kube-apiserver secure port.
    pub kube_port: u16,
    /// Extra kube-apiserver flags given at start.
    extra_flags: Vec<String>,
    /// etcd's data directory (removed on drop).
    etcd_data: PathBuf,
    // Field order: the API server is dropped (killed) before etcd.
    apiserver: Option<ChildGuard>,
    etcd: Option<ChildGuard>,
}

/// Fails, with the end of its log, when `child` has exited: a poll for its readiness then stops
/// at once instead of waiting out its whole timeout.
fn still_running(child: &mut Option<ChildGuard>, log: &Path) -> Result<()> {
    let Some(guard) = child.as_mut() else {
        return Ok(());
    };
    if let Some(status) = guard.child.try_wait()? {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = text
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|l| format!("{l}\n"))
            .collect();
        anyhow::bail!(
            "{} exited ({status}); end of {}:\n{tail}",
            guard.name,
            log.display()
        );
    }
    Ok(())
}

/// Held while a private etcd and API server start: two tests of one binary starting theirs at
/// once on a 2-core machine starved each other past their readiness timeouts (CI).
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run_ok(
        Command::new("openssl").args(args).current_dir(dir),
        None,
        COMMAND_TIMEOUT,
    )
    .map(|_| ())
}

fn sign(dir: &Path, name: &str, subject: &str, ext: &str) -> Result<()> {
    let (key, csr, crt, extf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    )?;
    std::fs::write(dir.join(&extf), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &extf,
        ],
    )
}

impl PrivateKube {
    /// Starts etcd and kube-apiserver under `target/infra/tmp/private-kube-<name>-<pid>`,
    /// with `extra_flags` for the API server, and waits until the API server is ready.
    pub fn start(name: &str, extra_flags: &[&str]) -> Result<PrivateKube> {
        PrivateKube::start_with_etcd_dir(name, extra_flags, None)
    }

    /// Like [`PrivateKube::start`], with etcd's data under `etcd_parent` (e.g. `/dev/shm`, so
    /// load tests are not bound by disk writes); `None` keeps it in the private directory.
    pub fn start_with_etcd_dir(
        name: &str,
        extra_flags: &[&str],
        etcd_parent: Option<&Path>,
    ) -> Result<PrivateKube> {
        let infra = infra()?;
        let dir = infra.root().join("target/infra/tmp").join(format!(
            "private-kube-{}-{:x}",
            crate::dns_label(name, 30),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let etcd_data = match etcd_parent {
            Some(parent) => parent.join(format!(
                "capstan-etcd-{}-{:x}",
                crate::dns_label(name, 30),
                std::process::id()
            )),
            None => dir.join("etcd-data"),
        };
        let _ = std::fs::remove_dir_all(&etcd_data);
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        openssl(
            &certs,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=capstan-private-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        sign(&certs, "apiserver", "/CN=kube-apiserver",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        sign(&certs, "admin", "/O=system:masters/CN=capstan-admin",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")?;
        openssl(&certs, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(
            &certs,
            &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        let mut kube = PrivateKube {
            infra,
            dir,
            etcd_port: crate::free_port(),
            etcd_peer_port: crate::free_port(),
            kube_port: crate::free_port(),
            extra_flags: extra_flags.iter().map(|s| s.to_string()).collect(),
            etcd_data,
            apiserver: None,
            etcd: None,
        };
        std::fs::write(kube.kubeconfig(), kube.kubeconfig_text())?;
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        kube.start_etcd()?;
        kube.start_apiserver()?;
        Ok(kube)
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?)
    }

    fn kubeconfig_text(&self) -> String {
        let c = self.dir.join("certs");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: private\n  context:\n    cluster: private\n    user: admin\ncurrent-context: private\n",
            self.kube_port,
            c.join("ca.crt").display(),
            c.join("admin.crt").display(),
            c.join("admin.key").display()
        )
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Its keys and certificates: `ca.{crt,key}`, `apiserver.*`, `admin.*` (the client
    /// certificate of the kubeconfig) and `sa.key`/`sa.pub` (the ServiceAccount token signing
    /// key pair, RSA 2048).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// `http://127.0.0.1:<port>` of etcd (its v3 JSON gateway answers under `/v3/`).
    pub fn etcd_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    fn start_etcd(&mut self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let client = self.etcd_endpoint();
        let child = Command::new(self.infra.tool("etcd")?)
            .args(["--name", "private", "--data-dir"])
            .arg(&self.etcd_data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("private={peer}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(self.log("etcd")?)
            .stderr(self.log("etcd")?)
            .spawn()
            .context("starting private etcd")?;
        self.etcd = Some(ChildGuard::new("private-etcd", child));
        let url = format!("{client}/health");
        let log = self.dir.join("etcd.log");
        let etcd = &mut self.etcd;
        poll_until(
            "private etcd health",
            Duration::from_secs(60),
            Duration::from_millis(200),
            // A dead process ends the wait at once: `Some(Err)` stops the poll.
            || {
                if let Err(e) = still_running(etcd, &log) {
                    return Ok(Some(Err(e)));
                }
                Ok(crate::curl("GET", &url, None, Duration::from_secs(2))
                    .ok()
                    .filter(|r| r.body.contains("\"health\":\"true\""))
                    .map(|_| Ok(())))
            },
        )?
    }

    /// Starts the API server (again), on the same port and etcd, and waits for `/readyz`.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let c = self.dir.join("certs");
        let child = Command::new(self.infra.tool("kube-apiserver")?)
            .args(["--etcd-servers", &self.etcd_endpoint()])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.kube_port.to_string()])
            .arg("--tls-cert-file")
            .arg(c.join("apiserver.crt"))
            .arg("--tls-private-key-file")
            .arg(c.join("apiserver.key"))
            .arg("--client-ca-file")
            .arg(c.join("ca.crt"))
            .arg("--cert-dir")
            .arg(self.dir.join("kube-cert-dir"))
            .arg("--service-account-key-file")
            .arg(c.join("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(c.join("sa.key"))
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .args([
                "--authorization-mode",
                "RBAC",
                "--service-cluster-ip-range",
                "10.97.0.0/16",
            ])
            .args([
                "--endpoint-reconciler-type",
                "none",
                "--profiling=false",
                "--v",
                "1",
            ])
            .args(&self.extra_flags)
            .stdin(Stdio::null())
            .stdout(self.log("kube-apiserver")?)
            .stderr(self.log("kube-apiserver")?)
            .spawn()
            .context("starting private kube-apiserver")?;
        self.apiserver = Some(ChildGuard::new("private-kube-apiserver", child));
        let kubeconfig = self.kubeconfig();
        let kubectl = self.infra.tool("kubectl")?;
        let log = self.dir.join("kube-apiserver.log");
        let (apiserver, etcd) = (&mut self.apiserver, &mut self.etcd);
        poll_until(
            "private kube-apiserver ready",
            Duration::from_secs(180),
            Duration::from_millis(500),
            || {
                let alive = still_running(apiserver, &log)
                    .and_then(|_| still_running(etcd, &log.with_file_name("etcd.log")));
                if let Err(e) = alive {
                    return Ok(Some(Err(e)));
                }
                let out = run_ok(
                    Command::new(&kubectl)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["--request-timeout", "3s", "get", "--raw", "/readyz"]),
                    None,
                    Duration::from_secs(10),
                );
                Ok(out.ok().filter(|o| o.trim() == "ok").map(|_| Ok(())))
            },
        )
        .and_then(|r| r)
        .with_context(|| format!("see {}", self.dir.join("kube-apiserver.log").display()))?;
        // Namespace `default` is created by the API server itself shortly after readyz.
        poll_until(
            "namespace default",
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                Ok(self
                    .kubectl(&["get", "namespace", "default"])
                    .ok()
                    .map(|_| ()))
            },
        )
    }

    /// Kills the API server (etcd keeps running).
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Stops and starts the API server.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        self.stop_apiserver();
        self.start_apiserver()
    }

    /// `kubectl --kubeconfig <private> ARGS`, requiring success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(self.infra.tool("kubectl")?);
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        run_ok(&mut cmd, None, COMMAND_TIMEOUT)
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let mut cmd = Command::new(self.infra.tool("kubectl")?);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"]);
        run_ok(&mut cmd, Some(yaml), COMMAND_TIMEOUT)
    }

    /// The `holderIdentity` of the Lease `namespace/name`, if the Lease exists and is held.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        let out = self.kubectl(&[
            "-n",
            namespace,
            "get",
            "lease",
            "--ignore-not-found",
            "-o",
            &format!("go-template={{{{range .items}}}}{{{{if eq .metadata.name \"{name}\"}}}}{{{{.spec.holderIdentity}}}}{{{{end}}}}{{{{end}}}}"),
        ])?;
        Ok(Some(out.trim().to_owned()).filter(|s| !s.is_empty()))
    }

    /// Installs the project's Istio CRDs (`deploy/crds`) and waits until `wait_for` (CRD names
    /// like `virtualservices.networking.istio.io`) are established.
    pub fn install_istio_crds(&self, wait_for: &[&str]) -> Result<()> {
        let crds = crate::repo_root().join("deploy/crds");
        let crds = crds.to_str().context("deploy/crds is not UTF-8")?;
        self.kubectl(&["apply", "--server-side", "-f", crds])?;
        let names: Vec<String> = wait_for.iter().map(|n| format!("crd/{n}")).collect();
        let mut args = vec!["wait", "--for", "condition=Established", "--timeout", "60s"];
        args.extend(names.iter().map(String::as_str));
        // A CRD read before the API server has written its first status makes `kubectl wait`
        // fail at once (".status.conditions accessor error: <nil>") instead of waiting: retry
        // that, a bounded number of times.
        let mut attempts = 0;
        loop {
            match self.kubectl(&args) {
                Ok(_) => return Ok(()),
                Err(e) if attempts < 20 && format!("{e:#}").contains("accessor error") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What a stuck deletion needs explained: every CRD's finalizers and `Terminating`
    /// condition, and the API server's log lines about finalizing, deleting or failing (the
    /// last 40). For a test's error message; never fails itself.
    pub fn diagnose(&self) -> String {
        let crds = self
            .kubectl(&[
                "get",
                "crd",
                "-o",
                "custom-columns=NAME:.metadata.name,DELETING:.metadata.deletionTimestamp,FINALIZERS:.metadata.finalizers,TERMINATING:.status.conditions[?(@.type==\"Terminating\")].message",
            ])
            .unwrap_or_else(|e| format!("kubectl get crd: {e:#}"));
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["finaliz", "delet", "error", "fail", "timeout"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- CRDs ---\n{crds}\n--- kube-apiserver log (matching lines, last 40) ---\n{tail}"
        )
    }

    /// A JSON request to etcd's v3 gateway (`path` like `/v3/kv/compaction`).
    pub fn etcd_json(&self, path: &str, body: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.etcd_endpoint());
        crate::curl("POST", &url, Some(body), Duration::from_secs(10))?.json()
    }
}

impl Drop for PrivateKube {
    fn drop(&mut self) {
        self.apiserver = None;
        self.etcd = None;
        let _ = std::fs::remove_dir_all(&self.etcd_data);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
