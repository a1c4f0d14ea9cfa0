//! Smoke tests of the proxyless gRPC client programs (tests/clients/{python,node}):
//! with an xds:/// target they load the xDS resolver and contact the xDS server named in the
//! bootstrap (a plain TCP listener here, which records the HTTP/2 preface it receives); with a
//! plain target they reach a real backend and report which backend answered.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capstan_e2e::{clients_dir, context, run_with_timeout, ChildGuard, TestContext};
use serde_json::Value;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A fake xDS server: accepts one connection (within 30 s) and reports its first bytes.
fn fake_xds_server() -> Result<(u16, mpsc::Receiver<Vec<u8>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = vec![0u8; H2_PREFACE.len()];
                    let n = conn.read(&mut buf).unwrap_or(0);
                    buf.truncate(n);
                    let _ = tx.send(buf);
                    return;
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok((port, rx))
}

fn bootstrap(ctx: &TestContext, xds_port: u16, client: &str) -> Result<PathBuf> {
    let json = serde_json::json!({
        "xds_servers": [{
            "server_uri": format!("127.0.0.1:{xds_port}"),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": format!("capstan-e2e~{client}~{}", ctx.namespace), "cluster": "capstan-e2e", "locality": {}},
    });
    ctx.write_scratch(
        &format!("bootstrap-{client}.json"),
        &serde_json::to_string_pretty(&json)?,
    )
}

fn python_cmd(ctx: &TestContext, script: &str) -> Result<Command> {
    let mut cmd = ctx.infra.command(ctx.infra.python()?);
    cmd.arg(clients_dir(&format!("python/{script}")));
    Ok(cmd)
}

fn node_cmd(ctx: &TestContext, script: &str) -> Result<Command> {
    ctx.infra.node_modules()?;
    let mut cmd = ctx.infra.command("node");
    cmd.arg(clients_dir(&format!("node/{script}")));
    Ok(cmd)
}

/// Runs a client program and parses its JSON summary (last stdout line).
fn run_client(mut cmd: Command, args: &[&str]) -> Result<Value> {
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60))?;
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "client printed no JSON summary ({}); stdout: {}; stderr: {}",
            out.status, out.stdout, out.stderr
        )
    })
}

fn check_xds_contact(
    ctx: &TestContext,
    client: &str,
    cmd: Command,
    xds_port: u16,
    seen: mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let target = "xds:///some.host:1234";
    let summary = run_client(cmd, &["--target", target, "--calls", "1", "--timeout", "3"])?;
    assert_eq!(summary["target"], target);
    assert_eq!(summary["calls"], 1);
    assert_eq!(summary["ok"], 0, "{summary}");
    let code = summary["results"][0]["code"].as_str().unwrap_or_default();
    assert!(
        code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED",
        "{client}: unexpected status: {summary}"
    );
    let bytes = seen
        .recv_timeout(Duration::from_secs(10))
        .with_context(|| {
            format!("{client} never connected to the xDS server at 127.0.0.1:{xds_port}: {summary}")
        })?;
    assert!(
        bytes.starts_with(b"PRI * HTTP/2.0"),
        "{client} sent something other than an HTTP/2 preface: {bytes:?}"
    );
    let _ = ctx;
    Ok(())
}

#[test]
fn python_client_contacts_xds_server() -> Result<()> {
    let Some(ctx) = context("grpc_python_xds")? else {
        return Ok(());
    };
    let (port, seen) = fake_xds_server()?;
    let bs = bootstrap(&ctx, port, "python")?;
    let mut cmd = python_cmd(&ctx, "xds_client.py")?;
    cmd.env("GRPC_XDS_BOOTSTRAP", &bs);
    check_xds_contact(&ctx, "python", cmd, port, seen)
}

#[test]
fn node_client_contacts_xds_server() -> Result<()> {
    let Some(ctx) = context("grpc_node_xds")? else {
        return Ok(());
    };
    let (port, seen) = fake_xds_server()?;
    let bs = bootstrap(&ctx, port, "node")?;
    let mut cmd = node_cmd(&ctx, "xds_client.js")?;
    cmd.env("GRPC_XDS_BOOTSTRAP", &bs);
    check_xds_contact(&ctx, "node", cmd, port, seen)
}

/// Starts a backend program and waits (bounded) for its `LISTENING host:port` line.
fn start_backend(mut cmd: Command, name: &str) -> Result<(ChildGuard, String)> {
    cmd.args(["--name", name, "--port", "0", "--max-seconds", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::new(name, cmd.spawn()?);
    let stdout = guard.child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(50) {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                let _ = tx.send(addr.to_owned());
                break;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok((guard, addr)),
        Err(_) => bail!("backend {name} did not print LISTENING within 30s"),
    }
}

#[test]
fn clients_reach_backends_and_report_them() -> Result<()> {
    let Some(ctx) = context("grpc_backends")? else {
        return Ok(());
    };
    let (_py_backend, py_addr) = start_backend(python_cmd(&ctx, "backend.py")?, "py-backend")?;
    let (_node_backend, node_addr) = start_backend(node_cmd(&ctx, "backend.js")?, "node-backend")?;

    for (client, addr, backend) in [
        ("python", &py_addr, "py-backend"),
        ("node", &py_addr, "py-backend"),
        ("python", &node_addr, "node-backend"),
        ("node", &node_addr, "node-backend"),
    ] {
        let cmd = if client == "python" {
            python_cmd(&ctx, "xds_client.py")?
        } else {
            node_cmd(&ctx, "xds_client.js")?
        };
        let summary = run_client(cmd, &["--target", addr, "--calls", "3", "--require-ok"])?;
        assert_eq!(summary["client"], client);
        assert_eq!(summary["ok"], 3, "{summary}");
        assert_eq!(summary["by_backend"][backend], 3, "{summary}");
        assert_eq!(summary["by_code"]["OK"], 3, "{summary}");
    }
    Ok(())
}
