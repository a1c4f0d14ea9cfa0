//! `docs/quickstart-kind.md`, exercised: every ```sh block is marked `run` or `manual`; the
//! `run` blocks are executed in order by bash, with the pinned kubectl and helm, against a
//! private kube-apiserver (the chart's webhook configurations are cluster-wide), and the
//! objects they should have made are checked; `manual` blocks (Docker, kind, running pods)
//! must not hide a command that could run here.

mod chart_support;

use anyhow::{bail, ensure, Context as _, Result};
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until, repo_root, run_with_timeout};
use std::time::Duration;

const GUIDE: &str = "docs/quickstart-kind.md";
const MARKER: &str = "<!-- quickstart: ";

#[derive(Debug, PartialEq)]
enum Mode {
    Run,
    Manual,
}

#[derive(Debug)]
struct Block {
    mode: Mode,
    /// Line of the opening fence, 1-based.
    line: usize,
    /// Whether it comes after the "## Clean up" heading.
    cleanup: bool,
    script: String,
}

/// The ```sh blocks of the guide with their markers.
fn blocks(text: &str) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    let mut marker: Option<Mode> = None;
    let mut current: Option<Block> = None;
    let mut cleanup = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(block) = current.as_mut() {
            if line.trim_end() == "```" {
                out.push(current.take().expect("inside a block"));
            } else {
                block.script.push_str(line);
                block.script.push('\n');
            }
            continue;
        }
        if line.starts_with("## ") {
            cleanup = line.trim() == "## Clean up";
        }
        if let Some(rest) = line.strip_prefix(MARKER) {
            let rest = rest.trim_end().trim_end_matches("-->");
            marker = Some(match rest.split(':').next().map(str::trim) {
                Some("run") => Mode::Run,
                Some(m) if m.starts_with("manual") => Mode::Manual,
                _ => bail!("{GUIDE}:{}: unknown marker {line:?}", i + 1),
            });
            continue;
        }
        if line.trim_end() == "```sh" {
            let mode = marker
                .take()
                .with_context(|| format!("{GUIDE}:{}: a ```sh block without a `{MARKER}run -->` or `{MARKER}manual: why -->` line before it", i + 1))?;
            current = Some(Block {
                mode,
                line: i + 1,
                cleanup,
                script: String::new(),
            });
        } else if line.starts_with("```") {
            marker = None;
        } else if !line.trim().is_empty() {
            // A marker belongs to the block right after it.
            ensure!(
                marker.is_none(),
                "{GUIDE}:{}: text between a marker and its block",
                i + 1
            );
        }
    }
    ensure!(current.is_none(), "{GUIDE}: unterminated ```sh block");
    Ok(out)
}

/// What only a real cluster with nodes, Docker or kind can do.
fn needs_more_than_an_api_server(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or_default();
    matches!(first, "kind" | "docker")
        || [
            " exec ",
            "rollout status",
            "port-forward",
            "wait --for",
            " logs ",
        ]
        .iter()
        .any(|t| line.contains(t))
}

#[test]
fn the_guide_marks_every_block_and_hides_nothing_runnable() -> Result<()> {
    let text = std::fs::read_to_string(repo_root().join(GUIDE))?;
    let blocks = blocks(&text)?;
    let run: String = blocks
        .iter()
        .filter(|b| b.mode == Mode::Run)
        .map(|b| b.script.as_str())
        .collect();
    for step in [
        "helm install capstan charts/capstan",
        "kubectl label namespace bookinfo istio-injection=enabled",
        "apply -f examples/bookinfo/kube/bookinfo.yaml",
        "kind: VirtualService",
        "helm uninstall capstan",
    ] {
        ensure!(
            run.contains(step),
            "no `run` block of {GUIDE} does {step:?}"
        );
    }
    for block in blocks.iter().filter(|b| b.mode == Mode::Manual) {
        ensure!(
            block.script.lines().any(needs_more_than_an_api_server),
            "{GUIDE}:{}: a `manual` block that could run against an API server",
            block.line
        );
        for line in block.script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.iter().any(|w| *w == "kubectl" || *w == "helm") {
                ensure!(
                    needs_more_than_an_api_server(line),
                    "{GUIDE}:{}: `{line}` can run against an API server: mark its block `run`",
                    block.line
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_guide_runs_against_a_real_api_server() -> Result<()> {
    let Some(ctx) = context("quickstart-kind")? else {
        return Ok(());
    };
    let infra = ctx.infra;
    let text = std::fs::read_to_string(repo_root().join(GUIDE))?;
    let blocks = blocks(&text)?;
    let kube = PrivateKube::start("quickstart", &[])?;
    let k = |args: &[&str]| chart_support::kubectl(infra, &kube, args, None);
    let run = |block: &Block| -> Result<()> {
        let mut cmd = chart_support::command(infra, &kube, "bash")?;
        cmd.args(["-euo", "pipefail", "-c", &block.script]);
        let out = run_with_timeout(&mut cmd, None, Duration::from_secs(240))
            .with_context(|| format!("{GUIDE}:{}\n{}", block.line, kube.diagnose()))?;
        ensure!(
            out.status.success(),
            "{GUIDE}:{} failed ({}):\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
            block.line,
            out.status,
            block.script,
            out.stdout,
            out.stderr,
            kube.diagnose()
        );
        Ok(())
    };

    for block in blocks.iter().filter(|b| b.mode == Mode::Run && !b.cleanup) {
        run(block)?;
    }
    let status = chart_support::helm(infra, &kube, &["status", "capstan", "-n", "istio-system"])?;
    ensure!(status.contains("STATUS: deployed"), "{status}");
    let label = k(&[
        "get",
        "namespace",
        "bookinfo",
        "-o",
        "jsonpath={.metadata.labels.istio-injection}",
    ])?;
    ensure!(
        label == "enabled",
        "bookinfo's istio-injection label: {label:?}"
    );
    let deployments = k(&["-n", "bookinfo", "get", "deployments", "-o", "name"])?;
    for name in [
        "productpage-v1",
        "details-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ] {
        ensure!(
            deployments.contains(&format!("deployment.apps/{name}")),
            "{name} missing: {deployments}"
        );
    }
    let split = k(&[
        "-n",
        "bookinfo",
        "get",
        "virtualservice/reviews",
        "-o",
        "jsonpath={range .spec.http[0].route[*]}{.destination.subset}={.weight} {end}",
    ])?;
    ensure!(
        split.trim() == "v1=50 v3=50",
        "the VirtualService's split: {split:?}"
    );
    let subsets = k(&[
        "-n",
        "bookinfo",
        "get",
        "destinationrule/reviews",
        "-o",
        "jsonpath={.spec.subsets[*].name}",
    ])?;
    ensure!(subsets == "v1 v2 v3", "{subsets}");
    // The namespace label is the one the installed injector selects.
    let selector = k(&[
        "get", "mutatingwebhookconfiguration/istio-sidecar-injector", "-o",
        "jsonpath={.webhooks[?(@.name==\"namespace.sidecar-injector.istio.io\")].namespaceSelector.matchExpressions[0]}",
    ])?;
    ensure!(
        selector.contains("\"key\":\"istio-injection\"") && selector.contains("\"enabled\""),
        "{selector}"
    );

    for block in blocks.iter().filter(|b| b.mode == Mode::Run && b.cleanup) {
        run(block)?;
    }
    let releases = chart_support::helm(infra, &kube, &["list", "-n", "istio-system", "-q"])?;
    ensure!(releases.trim().is_empty(), "releases left: {releases}");
    for object in [
        "mutatingwebhookconfiguration/istio-sidecar-injector",
        "validatingwebhookconfiguration/istio-validator-istio-system",
        "crd/virtualservices.networking.istio.io",
    ] {
        poll_until(
            &format!("{object} deleted"),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                Ok(k(&["get", object, "--ignore-not-found", "-o", "name"])?
                    .trim()
                    .is_empty()
                    .then_some(()))
            },
        )?;
    }
    Ok(())
}
