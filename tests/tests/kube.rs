//! Smoke tests against the real kube-apiserver started by tests/infra/up.sh.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use capstan_e2e::{context, poll_until, testdata, ChildGuard};

const CRD: &str = "widgets.e2e.capstan.dev";

fn ensure_crd(ctx: &capstan_e2e::TestContext) -> Result<()> {
    let path = testdata("crds/widgets.e2e.capstan.dev.yaml");
    ctx.infra
        .kubectl(&["apply", "-f", path.to_str().context("utf-8 path")?])?;
    ctx.infra.kubectl(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "30s",
        &format!("crd/{CRD}"),
    ])?;
    // Discovery can lag a moment behind Established.
    poll_until(
        "widgets in discovery",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            Ok(ctx
                .infra
                .kubectl(&[
                    "api-resources",
                    "--api-group",
                    "e2e.capstan.dev",
                    "-o",
                    "name",
                ])?
                .contains("widgets")
                .then_some(()))
        },
    )
}

#[test]
fn crd_and_custom_object_round_trip() -> Result<()> {
    let Some(ctx) = context("crd_round_trip")? else {
        return Ok(());
    };
    ensure_crd(&ctx)?;
    ctx.apply(
        "apiVersion: e2e.capstan.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n  color: blue\n",
    )?;
    let got: serde_json::Value =
        serde_json::from_str(&ctx.kubectl(&["get", "widget", "w1", "-o", "json"])?)?;
    assert_eq!(got["kind"], "Widget");
    assert_eq!(got["metadata"]["namespace"], ctx.namespace.as_str());
    assert_eq!(got["spec"]["size"], 3);
    assert_eq!(got["spec"]["color"], "blue");

    // The schema is enforced by the real apiserver.
    let bad = ctx.apply("apiVersion: e2e.capstan.dev/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 0\n  color: pink\n");
    let err = format!("{:#}", bad.expect_err("invalid Widget must be rejected"));
    assert!(
        err.contains("spec.size") && err.contains("spec.color"),
        "{err}"
    );
    Ok(())
}

#[test]
fn rbac_is_enforced() -> Result<()> {
    let Some(ctx) = context("rbac")? else {
        return Ok(());
    };
    // The admin is in system:masters; an impersonated nobody has no rights under RBAC.
    let me = ctx.infra.kubectl(&[
        "auth",
        "can-i",
        "create",
        "configmaps",
        "-n",
        &ctx.namespace,
    ])?;
    assert_eq!(me.trim(), "yes");
    let out = ctx
        .infra
        .command(ctx.infra.tool("kubectl")?)
        .args([
            "auth",
            "can-i",
            "create",
            "configmaps",
            "-n",
            &ctx.namespace,
            "--as",
            "system:serviceaccount:x:nobody",
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    Ok(())
}

#[test]
fn watch_sees_update() -> Result<()> {
    let Some(ctx) = context("watch")? else {
        return Ok(());
    };
    ctx.kubectl(&[
        "create",
        "configmap",
        "watched",
        "--from-literal",
        "value=v1",
    ])?;

    let mut cmd = ctx.infra.command(ctx.infra.tool("kubectl")?);
    cmd.args([
        "-n",
        &ctx.namespace,
        "get",
        "configmap",
        "watched",
        "--watch",
        "--request-timeout",
        "30s",
        "-o",
        "jsonpath={.data.value}{\"\\n\"}",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut watch = ChildGuard::new("kubectl watch", cmd.spawn()?);
    let stdout = watch.child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(100) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .context("watch printed nothing in 20s")?;
    assert_eq!(first.trim(), "v1");

    ctx.kubectl(&[
        "patch",
        "configmap",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"value":"v2"}}"#,
    ])?;
    for _ in 0..10 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "v2" => return Ok(()),
            Ok(_) => continue,
            Err(e) => bail!("watch did not report the update within 20s: {e}"),
        }
    }
    bail!("watch did not report v2 within 10 events")
}
