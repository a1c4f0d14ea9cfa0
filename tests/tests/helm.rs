//! Smoke test: the pinned helm lints and renders the test chart, and the real apiserver
//! accepts the rendered manifests (server-side dry run).

use anyhow::{Context, Result};
use capstan_e2e::{context, testdata};

#[test]
fn helm_lint_and_template() -> Result<()> {
    let Some(ctx) = context("helm")? else {
        return Ok(());
    };
    let chart = testdata("charts/capstan-smoke");
    let chart = chart.to_str().context("utf-8 path")?;

    let version = ctx.helm(&["version", "--short"])?;
    assert!(version.starts_with("v3."), "helm version: {version}");

    let lint = ctx.helm(&["lint", "--strict", chart])?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let rendered = ctx.helm(&[
        "template",
        "smoke",
        chart,
        "--namespace",
        &ctx.namespace,
        "--set",
        "greeting=hi there",
        "--set",
        "backends=3",
    ])?;
    assert!(rendered.contains("kind: ConfigMap"), "{rendered}");
    assert!(rendered.contains("name: smoke-capstan-smoke"), "{rendered}");
    assert!(rendered.contains("greeting: \"hi there\""), "{rendered}");
    assert!(rendered.contains("backend-2"), "{rendered}");

    let applied = ctx.infra.run_tool(
        "kubectl",
        &["-n", &ctx.namespace, "apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    )?;
    assert!(
        applied.contains("configmap/smoke-capstan-smoke created (server dry run)"),
        "{applied}"
    );
    Ok(())
}
