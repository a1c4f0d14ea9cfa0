//! The `capstan-proxy` binary, the injected sidecar's entrypoint: it parses `capstan proxy`'s
//! flags, serves the admin port and drains on SIGTERM. (Traffic through it is tested with
//! `capstan proxy`, the same code, in `crates/capstan/tests/proxy_*.rs`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_capstan-proxy");

/// A child process killed on drop, so a failed assertion leaves no proxy behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port below the ephemeral range, so nothing else is given it before the proxy binds it.
fn free_port() -> u16 {
    capstan_e2e::free_port()
}

/// `GET path` over HTTP/1.0: the status line and body, or None while nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn version_and_usage() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("capstan-proxy {}", env!("CARGO_PKG_VERSION"))
    );

    // Neither a bootstrap nor an xDS address: the usage, exit status 1.
    let out = Command::new(BIN).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give --bootstrap FILE"), "{stderr}");

    // The injected sidecar's flags are known (a typo would be clap's exit status 2).
    let out = Command::new(BIN).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--node-from-env",
        "--xds-address",
        "--readiness-address",
        "--trust-domain",
        "--ca-address",
        "--ca-root-cert",
        "--ca-token-file",
        "--ca-server-name",
        "--xds-tls",
        "--concurrency",
        "--drain-time",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn serves_admin_until_sigterm() {
    let admin = free_port();
    // An xDS server nobody serves: the proxy keeps retrying and stays unready.
    let xds = format!("127.0.0.1:{}", free_port());
    let mut proxy = Running(
        Command::new(BIN)
            .args(["--concurrency", "1", "--drain-time", "100ms"])
            .args(["--xds-address", &xds])
            .args([
                "--node-id",
                "router~127.0.0.1~gw-0.default~default.svc.cluster.local",
            ])
            .args(["--admin-address", &format!("127.0.0.1:{admin}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(r) = get(admin, "/ready") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "admin port {admin} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        ready.lines().next().is_some_and(|l| l.contains(" 503 ")),
        "{ready}"
    );
    assert!(ready.ends_with("INITIALIZING\n"), "{ready}");

    // SIGTERM: Envoy's shutdown, exit status 0.
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    let rc = unsafe { libc::kill(proxy.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.0.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
