//! End-to-end test support for Capstan.
//!
//! The real dependencies (etcd, kube-apiserver, Consul, kubectl, helm, Python/Node gRPC clients)
//! are installed by `tests/infra/install-tools.sh` and started by `tests/infra/up.sh`, which
//! writes `target/infra/env`. [`infra`] reads that file; when it is absent or the processes it
//! names are dead, it runs the scripts itself once per test binary (under `up.sh`'s file lock,
//! so parallel test binaries do not race) with a watchdog TTL so nothing outlives the run.
//!
//! Each test takes a [`TestContext`]: its own Kubernetes namespace (deleted on drop) and its own
//! Consul service-name prefix (services deregistered on drop), so tests run in parallel.
//!
//! Tests never skip silently: a missing tool is an error naming the reason. The only opt-out is
//! `CAPSTAN_SKIP_INFRA=1`, which makes [`context`] print a loud notice and return `None`.
//!
//! Every wait in this crate is bounded in time, and every poll loop in count.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

pub mod istiod;
pub mod private_consul;
pub mod private_kube;

/// Default limit for a single helper command (kubectl, helm, curl...).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds after which infrastructure started by a test binary itself is stopped by a watchdog.
const AUTOSTART_TTL_SECS: u64 = 1800;

/// Repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A binary `tests/infra/install-tools.sh` builds (`install` is its installer's name, e.g.
/// `h2spec`), found through `target/tools/env`, which `tests/run.sh` writes first; built on
/// first use when absent. No cluster is needed.
pub fn installed_tool(install: &str, bin: &str) -> Result<PathBuf> {
    let root = repo_root();
    let env_file = root.join("target/tools/env");
    let find = || -> Option<PathBuf> {
        let vars = parse_env_file(&std::fs::read_to_string(&env_file).ok()?);
        let path = PathBuf::from(vars.get("CAPSTAN_TOOLS_BIN")?).join(bin);
        path.exists().then_some(path)
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    eprintln!("{bin} not in target/tools: running tests/infra/install-tools.sh {install}");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/infra/install-tools.sh"))
        .arg(install)
        .current_dir(&root);
    run_ok(&mut cmd, None, Duration::from_secs(3 * 3600))?;
    find().with_context(|| {
        format!(
            "{bin} still missing after install-tools.sh {install} ({})",
            env_file.display()
        )
    })
}

/// Path of a file under `tests/testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    repo_root().join("tests").join("testdata").join(rel)
}

/// Path of a file under `tests/clients/`.
pub fn clients_dir(rel: &str) -> PathBuf {
    repo_root().join("tests").join("clients").join(rel)
}

// ------------------------------------------------------------------------------------------
// Running commands with a deadline.

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            let _ = write!(s, " '{a}'");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

/// Runs `cmd` with `stdin` (if any), killing it after `timeout`. Returns its output whatever the
/// exit status; use [`run_ok`] to require success.
pub fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<CmdOutput> {
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // A separate thread, so a child that does not read its stdin cannot block us.
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let out_reader = spawn_reader(child.stdout.take().expect("piped stdout"));
    let err_reader = spawn_reader(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            bail!(
                "`{what}` did not finish within {timeout:?} (killed)\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
                truncate(&stdout, 4000),
                truncate(&stderr, 4000)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(CmdOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` and requires exit status 0; the error names the command, status, stdout and stderr.
pub fn run_ok(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<String> {
    let what = describe(cmd);
    let out = run_with_timeout(cmd, stdin, timeout)?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({})\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            out.status,
            truncate(&out.stdout, 4000),
            truncate(&out.stderr, 4000)
        );
    }
    Ok(out.stdout)
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child,
            name: name.into(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ports [`free_port`] hands out: below Linux's default ephemeral range (32768–60999), so
/// the kernel never gives one of them to a `bind(:0)` or to an outgoing connection between the
/// moment a test picks it and the moment the process it starts binds it. Picking from the
/// ephemeral range raced exactly that way ("Address already in use" in CI).
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A TCP port on 127.0.0.1 that is free now and that no other caller in this process is handed
/// again (until the range wraps): a process-wide counter walks [`TEST_PORTS`] from an offset
/// derived from the process id (so two test binaries run at once start far apart), skipping
/// ports something already listens on.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7_919) % span));
    for _ in 0..span {
        let port = (TEST_PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{TEST_PORTS:?}");
}

/// Polls `f` every `every` until it returns `Ok(Some(v))`, for at most `timeout`. The error
/// carries the last failure `f` reported.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let max_tries = (timeout.as_millis() / every.as_millis().max(1)) as u64 + 2;
    let mut last = String::from("condition never held");
    for _ in 0..max_tries {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(every);
    }
    bail!("timed out after {timeout:?} waiting for {what}: {last}")
}

// ------------------------------------------------------------------------------------------
// The infrastructure.

/// The running test infrastructure, as described by `target/infra/env`.
#[derive(Debug)]
pub struct Infra {
    root: PathBuf,
    vars: BTreeMap<String, String>,
}

static INFRA: OnceLock<std::result::Result<Infra, String>> = OnceLock::new();

/// Whether the loud opt-out `CAPSTAN_SKIP_INFRA=1` is set.
pub fn skip_infra() -> bool {
    std::env::var("CAPSTAN_SKIP_INFRA")
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false)
}

/// The shared infrastructure, started on first use if needed. Errors (cached for the binary)
/// explain what is missing and how to fix it.
pub fn infra() -> Result<&'static Infra> {
    INFRA
        .get_or_init(|| Infra::load_or_start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("test infrastructure unavailable: {e}"))
}

/// Parses the `export KEY='value'` lines the infra scripts write.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        vars.insert(k.trim().to_owned(), v.to_owned());
    }
    vars
}

fn pid_alive(pid_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let pid = text.trim();
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && Path::new("/proc").join(pid).exists()
}

impl Infra {
    fn env_file(root: &Path) -> PathBuf {
        root.join("target/infra/env")
    }

    fn running(root: &Path) -> bool {
        let pids = root.join("target/infra/pids");
        Self::env_file(root).exists()
            && ["etcd", "kube-apiserver", "consul"]
                .iter()
                .all(|n| pid_alive(&pids.join(format!("{n}.pid"))))
    }

    fn load_or_start() -> Result<Infra> {
        let root = repo_root();
        if !Self::running(&root) {
            eprintln!(
                "capstan-e2e: target/infra/env absent or its processes are dead: running tests/infra/install-tools.sh and \
                 tests/infra/up.sh (watchdog stops them after {AUTOSTART_TTL_SECS}s; stop earlier with tests/infra/down.sh)"
            );
            let infra_dir = root.join("tests/infra");
            // install-tools.sh only builds what is missing from the cache; a cold cache takes long.
            run_script(
                &infra_dir.join("install-tools.sh"),
                &root,
                Duration::from_secs(3 * 3600),
                &[],
            )?;
            run_script(
                &infra_dir.join("up.sh"),
                &root,
                Duration::from_secs(600),
                &[("CAPSTAN_INFRA_TTL", AUTOSTART_TTL_SECS.to_string())],
            )?;
        }
        let env_file = Self::env_file(&root);
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let infra = Infra {
            vars: parse_env_file(&text),
            root,
        };
        for key in [
            "KUBECONFIG",
            "CONSUL_HTTP_ADDR",
            "CAPSTAN_TOOLS_BIN",
            "CAPSTAN_PYTHON",
            "CAPSTAN_NODE_MODULES",
        ] {
            infra.var(key)?;
        }
        for tool in [
            "kubectl",
            "helm",
            "kube-apiserver",
            "etcd",
            "consul",
            "pilot-discovery",
        ] {
            let p = infra.tool(tool)?;
            if !p.exists() {
                bail!(
                    "{tool} missing at {}: run tests/infra/install-tools.sh",
                    p.display()
                );
            }
        }
        Ok(infra)
    }

    /// Repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A variable from `target/infra/env`.
    pub fn var(&self, key: &str) -> Result<&str> {
        self.vars.get(key).map(String::as_str).ok_or_else(|| {
            anyhow!("{key} is not set in target/infra/env (re-run tests/infra/up.sh)")
        })
    }

    /// All variables from `target/infra/env`.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// Path of an installed tool (kubectl, helm, consul, etcd, kube-apiserver, istioctl,
    /// pilot-discovery).
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        Ok(Path::new(self.var("CAPSTAN_TOOLS_BIN")?).join(name))
    }

    /// Python interpreter of the gRPC client virtualenv.
    pub fn python(&self) -> Result<PathBuf> {
        let p = PathBuf::from(self.var("CAPSTAN_PYTHON")?);
        if !p.exists() {
            bail!(
                "CAPSTAN_PYTHON {} does not exist: run tests/infra/install-tools.sh python",
                p.display()
            );
        }
        Ok(p)
    }

    /// `node_modules` of tests/clients/node.
    pub fn node_modules(&self) -> Result<PathBuf> {
        let p = PathBuf::from(self.var("CAPSTAN_NODE_MODULES")?);
        if !p.join("@grpc/grpc-js-xds").exists() {
            bail!(
                "{} lacks @grpc/grpc-js-xds: run tests/infra/install-tools.sh node",
                p.display()
            );
        }
        Ok(p)
    }

    /// `host:port` of the Consul HTTP API.
    pub fn consul_addr(&self) -> Result<&str> {
        self.var("CONSUL_HTTP_ADDR")
    }

    /// A command with the infra environment: every env-file variable, the tools dir first on
    /// PATH, and helm's cache/config/data under target/infra/helm.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let bin = self
            .vars
            .get("CAPSTAN_TOOLS_BIN")
            .cloned()
            .unwrap_or_default();
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{bin}:{path}"));
        let helm = self.root.join("target/infra/helm");
        cmd.env("HELM_CACHE_HOME", helm.join("cache"))
            .env("HELM_CONFIG_HOME", helm.join("config"))
            .env("HELM_DATA_HOME", helm.join("data"));
        cmd.current_dir(&self.root);
        cmd
    }

    /// Runs an installed tool with `args`, requiring success; returns stdout.
    pub fn run_tool(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.command(self.tool(tool)?);
        cmd.args(args);
        run_ok(&mut cmd, stdin, COMMAND_TIMEOUT)
    }

    /// `kubectl ARGS` (cluster-wide), requiring success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.run_tool("kubectl", args, None)
    }

    /// `helm ARGS`, requiring success.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        self.run_tool("helm", args, None)
    }

    /// HTTP request to the Consul API with curl: `method` `path` (starting with `/v1/`), optional
    /// JSON body. Returns (status, headers lowercased, body). `timeout` bounds the whole request.
    pub fn consul_http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        let url = format!("http://{}{path}", self.consul_addr()?);
        curl(method, &url, body, timeout)
    }
}

fn run_script(script: &Path, root: &Path, timeout: Duration, env: &[(&str, String)]) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, None, timeout)?;
    eprint!("{}", out.stderr);
    if !out.status.success() {
        bail!(
            "{} failed ({}); its output is above. Fix the cause, or set CAPSTAN_SKIP_INFRA=1 to skip infra tests explicitly",
            script.display(),
            out.status
        );
    }
    Ok(())
}

/// A minimal HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("response is not JSON: {}", truncate(&self.body, 2000)))
    }
}

/// An HTTP request with curl (loopback addresses only).
pub fn curl(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("");
    if !(host.starts_with("127.") || host == "localhost") {
        bail!("refusing to contact {url}: tests only talk to 127.0.0.0/8");
    }
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time"])
        .arg(format!("{:.1}", timeout.as_secs_f64()))
        .args(["-X", method, url]);
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let out = run_ok(&mut cmd, body, timeout + Duration::from_secs(5))?;
    parse_http(&out).with_context(|| format!("{method} {url}"))
}

fn parse_http(raw: &str) -> Result<HttpResponse> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {}", truncate(raw, 500)))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

// ------------------------------------------------------------------------------------------
// Per-test isolation.

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// DNS-1123 label from a test name: lowercase alphanumerics and '-', at most `max` chars.
pub fn dns_label(name: &str, max: usize) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(max);
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "t".to_owned()
    } else {
        s
    }
}

/// One test's slice of the shared infrastructure: a namespace and a Consul name prefix.
pub struct TestContext {
    pub infra: &'static Infra,
    /// Kubernetes namespace created for this test (deleted on drop).
    pub namespace: String,
    /// Prefix for this test's Consul service names (services deregistered on drop).
    pub consul_prefix: String,
    /// Scratch directory under target/infra/tmp (removed on drop).
    pub scratch: PathBuf,
}

/// A context for test `name`, or `None` (after a loud notice) when `CAPSTAN_SKIP_INFRA=1`.
pub fn context(name: &str) -> Result<Option<TestContext>> {
    if skip_infra() {
        // Written to fd 2 directly: libtest's output capture would hide an eprintln! of a passing test.
        let _ = std::io::stderr().lock().write_all(
            format!("\n!!!!! SKIPPED {name}: CAPSTAN_SKIP_INFRA=1 is set; this infra test did NOT run !!!!!\n\n").as_bytes(),
        );
        return Ok(None);
    }
    TestContext::new(name).map(Some)
}

impl TestContext {
    /// Creates the namespace `e2e-<name>-<pid>-<n>` and the Consul prefix `e2e-<name>-<pid>-<n>-`.
    pub fn new(name: &str) -> Result<Self> {
        let infra = infra()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("e2e-{}-{:x}-{n}", dns_label(name, 36), std::process::id());
        let scratch = infra.root().join("target/infra/tmp").join(&id);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        infra
            .kubectl(&["create", "namespace", &id])
            .with_context(|| format!("creating namespace {id}"))?;
        Ok(TestContext {
            infra,
            consul_prefix: format!("{id}-"),
            namespace: id,
            scratch,
        })
    }

    /// `kubectl -n <namespace> ARGS`, requiring success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.namespace.as_str()];
        full.extend_from_slice(args);
        self.infra.kubectl(&full)
    }

    /// `kubectl -n <namespace> apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.infra.run_tool(
            "kubectl",
            &["-n", &self.namespace, "apply", "-f", "-"],
            Some(yaml),
        )
    }

    /// `helm ARGS`, requiring success.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        self.infra.helm(args)
    }

    /// A Consul service name unique to this test.
    pub fn consul_service(&self, suffix: &str) -> String {
        format!("{}{}", self.consul_prefix, suffix)
    }

    /// Writes a file in this test's scratch directory and returns its path.
    pub fn write_scratch(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let p = self.scratch.join(name);
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    fn cleanup_consul(&self) -> Result<()> {
        let resp =
            self.infra
                .consul_http("GET", "/v1/agent/services", None, Duration::from_secs(10))?;
        let services = resp.json()?;
        let Some(map) = services.as_object() else {
            return Ok(());
        };
        for (id, svc) in map {
            let name = svc
                .get("Service")
                .and_then(|s| s.as_str())
                .unwrap_or_default();
            if name.starts_with(&self.consul_prefix) {
                self.infra.consul_http(
                    "PUT",
                    &format!("/v1/agent/service/deregister/{id}"),
                    None,
                    Duration::from_secs(10),
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        // No controller-manager runs, so the namespace stays Terminating; do not wait for it.
        if let Err(e) = self.infra.kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--wait=false",
            "--ignore-not-found",
        ]) {
            eprintln!(
                "capstan-e2e: cleanup of namespace {} failed: {e:#}",
                self.namespace
            );
        }
        if let Err(e) = self.cleanup_consul() {
            eprintln!(
                "capstan-e2e: cleanup of Consul services {}* failed: {e:#}",
                self.consul_prefix
            );
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Waits (bounded) until `GET http://127.0.0.1:<port><path>` answers 200: e.g. `capstan
/// discovery`'s `/ready`, which turns 200 once every source has synced and been pushed.
pub fn wait_http_ok(port: u16, path: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer");
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
            {
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                    return Ok(());
                }
                last = answer.lines().next().unwrap_or_default().to_string();
            }
        }
        if Instant::now() >= deadline {
            bail!("GET 127.0.0.1:{port}{path} not 200 within {within:?}; last: {last}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_file() {
        let vars =
            parse_env_file("# c\nexport A='x y'\nexport B=\"z\"\nexport C=plain\nnot a line\n");
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "z");
        assert_eq!(vars["C"], "plain");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn dns_labels_are_valid() {
        assert_eq!(dns_label("kube::crd_roundtrip", 36), "kube--crd-roundtrip");
        assert_eq!(dns_label("___", 10), "t");
        assert!(dns_label(&"x".repeat(100), 36).len() <= 36);
    }

    #[test]
    fn parses_http_response() {
        let r = parse_http("HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\n\r\n[1]").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-consul-index"), Some("42"));
        assert_eq!(r.json().unwrap(), serde_json::json!([1]));
    }

    #[test]
    fn commands_time_out() {
        let err = run_with_timeout(
            Command::new("sleep").arg("5"),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(format!("{err}").contains("did not finish"), "{err}");
    }

    #[test]
    fn curl_refuses_non_loopback() {
        assert!(curl("GET", "http://10.0.0.1/", None, Duration::from_secs(1)).is_err());
    }
}
