//! Real proxyless gRPC clients nobody here wrote (Python `grpcio`, Node `@grpc/grpc-js-xds`)
//! pointed at `capstan discovery` through `GRPC_XDS_BOOTSTRAP`, calling real gRPC backends via
//! `xds:///` targets. Traffic shifting by VirtualService weights (100/0 → 80/20 → 0/100) moves
//! where calls land, and an abort fault makes them fail with the configured status.

use anyhow::{ensure, Context, Result};
use capstan_e2e::{clients_dir, context, run_with_timeout, ChildGuard, TestContext};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const HOST: &str = "greeter.default.svc.cluster.local";
const PORT: u16 = 50051;
const CALLS: u64 = 1000;

fn free_port() -> Result<u16> {
    Ok(capstan_e2e::free_port())
}

/// Starts a Python backend named `name` and returns it with its port.
fn backend(ctx: &TestContext, name: &str) -> Result<(ChildGuard, u16)> {
    let mut cmd = ctx.infra.command(ctx.infra.python()?);
    cmd.arg(clients_dir("python/backend.py"))
        .args(["--name", name, "--max-seconds", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting backend.py")?;
    let stdout = child.stdout.take().context("backend stdout")?;
    let guard = ChildGuard::new(name, child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                let _ = tx.send(addr.to_string());
                return;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .context("backend did not start within 30s")?;
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("backend address")?;
    Ok((guard, port))
}

fn registry(v1: u16, v2: u16) -> String {
    format!(
        "services:\n- hostname: {HOST}\n  namespace: default\n  ports: [{{name: grpc, port: {PORT}}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{grpc: {v1}}}, labels: {{app: greeter, version: v1}}, workload: greeter-v1}}\n  - {{address: 127.0.0.1, ports: {{grpc: {v2}}}, labels: {{app: greeter, version: v2}}, workload: greeter-v2}}\n"
    )
}

const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: greeter, namespace: default}\nspec:\n  host: greeter\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

fn virtual_service(v1: u32, v2: u32, fault: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: greeter, namespace: default}}\nspec:\n  hosts: [greeter]\n  http:\n  - {fault}route:\n    - destination: {{host: greeter, subset: v1}}\n      weight: {v1}\n    - destination: {{host: greeter, subset: v2}}\n      weight: {v2}\n"
    )
}

/// `capstan discovery` on free loopback ports, serving `dir`.
struct Discovery {
    _child: ChildGuard,
    xds_port: u16,
    debug_port: u16,
}

fn discovery(dir: &Path) -> Result<Discovery> {
    let (xds_port, debug_port, monitoring_port) = (free_port()?, free_port()?, free_port()?);
    let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("discovery")
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--registry-file")
        .arg(dir.join("registry.yaml"))
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--debug-addr", &format!("127.0.0.1:{debug_port}")])
        .args(["--monitoring-addr", &format!("127.0.0.1:{monitoring_port}")])
        .args(["--file-debounce-ms", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting capstan discovery")?;
    let guard = ChildGuard::new("capstan-discovery", child);
    capstan_e2e::wait_http_ok(monitoring_port, "/ready", Duration::from_secs(30))
        .context("capstan discovery did not become ready")?;
    Ok(Discovery {
        _child: guard,
        xds_port,
        debug_port,
    })
}

fn bootstrap(ctx: &TestContext, xds_port: u16, client: &str) -> Result<PathBuf> {
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": format!("127.0.0.1:{xds_port}"), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {
            "id": format!("sidecar~127.0.0.1~{client}.default~default.svc.cluster.local"),
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
            "locality": {}
        },
    });
    ctx.write_scratch(
        &format!("bootstrap-{client}.json"),
        &serde_json::to_string_pretty(&json)?,
    )
}

/// Runs one client program for `CALLS` calls and returns its JSON summary.
fn calls(ctx: &TestContext, client: &str, bootstrap: &Path) -> Result<Value> {
    let mut cmd = match client {
        "python" => {
            let mut c = ctx.infra.command(ctx.infra.python()?);
            c.arg(clients_dir("python/xds_client.py"));
            c
        }
        _ => {
            ctx.infra.node_modules()?;
            let mut c = ctx.infra.command("node");
            c.arg(clients_dir("node/xds_client.js"));
            c
        }
    };
    cmd.args([
        "--target",
        &format!("xds:///{HOST}:{PORT}"),
        "--calls",
        &CALLS.to_string(),
        "--timeout",
        "5",
        "--wait-for-ready",
    ]);
    cmd.arg("--bootstrap").arg(bootstrap);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(120))?;
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("{client} client printed no summary; stderr: {}", out.stderr))
}

fn count(summary: &Value, backend: &str) -> u64 {
    summary["by_backend"][backend].as_u64().unwrap_or(0)
}

fn write_vs(dir: &Path, yaml: &str) -> Result<()> {
    // Write-then-rename, as editors and config sync tools do.
    let tmp = dir.join("config/.greeter-vs.tmp");
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, dir.join("config/greeter-vs.yaml"))?;
    Ok(())
}

fn shift_traffic_and_inject_faults(client: &str) -> Result<()> {
    let Some(ctx) = context(&format!("xds-{client}"))? else {
        return Ok(());
    };
    let (_v1, v1_port) = backend(&ctx, "v1")?;
    let (_v2, v2_port) = backend(&ctx, "v2")?;
    let dir = ctx.scratch.join("mesh");
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), registry(v1_port, v2_port))?;
    std::fs::write(dir.join("config/greeter-dr.yaml"), DESTINATION_RULE)?;
    write_vs(&dir, &virtual_service(100, 0, ""))?;
    let server = discovery(&dir)?;
    let boot = bootstrap(&ctx, server.xds_port, client)?;

    let mut checks = Vec::new();
    for (v1, v2) in [(100u32, 0u32), (80, 20), (0, 100)] {
        if (v1, v2) != (100, 0) {
            write_vs(&dir, &virtual_service(v1, v2, ""))?;
            // The bound: clients route by the new weights within 2 s of the change.
            std::thread::sleep(Duration::from_secs(2));
        }
        let summary = calls(&ctx, client, &boot)?;
        ensure!(
            summary["ok"].as_u64() == Some(CALLS),
            "{client} at {v1}/{v2}: not every call succeeded: {}",
            summary["by_code"]
        );
        let got = count(&summary, "v1");
        let want = CALLS * u64::from(v1) / 100;
        checks.push(format!("{v1}/{v2}: v1={got} v2={}", count(&summary, "v2")));
        // Within ±5 % of the calls.
        ensure!(got.abs_diff(want) <= CALLS / 20, "{client} at {v1}/{v2}: {got} of {CALLS} calls went to v1 (want {want} ± 5%); {checks:?}");
    }

    write_vs(
        &dir,
        &virtual_service(
            100,
            0,
            "fault:\n      abort:\n        httpStatus: 503\n        percentage: {value: 100}\n    ",
        ),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let summary = calls(&ctx, client, &boot)?;
    // gRPC maps an injected HTTP 503 to UNAVAILABLE (gRFC A33).
    ensure!(
        summary["by_code"]["UNAVAILABLE"].as_u64() == Some(CALLS),
        "{client} with abort 503: {}",
        summary["by_code"]
    );
    eprintln!("{client}: {checks:?}; abort: {}", summary["by_code"]);
    let _ = server.debug_port;
    Ok(())
}

#[test]
fn python_grpcio_follows_virtual_service_weights_and_faults() -> Result<()> {
    shift_traffic_and_inject_faults("python")
}

#[test]
fn node_grpc_js_xds_follows_virtual_service_weights_and_faults() -> Result<()> {
    shift_traffic_and_inject_faults("node")
}
