//! `capstan discovery` run as the Helm chart runs it: `helm install charts/capstan` into a
//! private kube-apiserver, then the binary started with the rendered Deployment's arguments,
//! the mounted Secret and ConfigMap as files, and the chart's ServiceAccount's token as its
//! only credential (in-cluster config is replaced by a kubeconfig holding that token). With
//! nothing but the chart's RBAC it must:
//!
//! - become ready (every watch listed) and create `istio-ca-secret`;
//! - publish `istio-ca-root-cert` in every namespace;
//! - write the mesh root into both webhook configurations' `caBundle`, and restore it after a
//!   reset;
//! - serve the webhooks with the mesh CA's certificate for `istiod.<ns>.svc` (trusted by that
//!   `caBundle`) and read the chart's injection template;
//! - check a workload's ServiceAccount token by TokenReview and issue its certificate;
//!
//! with no request refused for lack of permission in its log.

mod ca_support;

use anyhow::{ensure, Context as _, Result};
use base64::Engine as _;
use ca_support::*;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until, repo_root, run_ok, Infra};
use std::path::Path;
use std::time::Duration;

const NS: &str = "istio-system";
const WAIT: Duration = Duration::from_secs(30);

fn helm(infra: &Infra, kube: &PrivateKube, args: &[&str]) -> Result<String> {
    let mut cmd = infra.command(infra.tool("helm")?);
    cmd.env("KUBECONFIG", kube.kubeconfig()).args(args);
    run_ok(&mut cmd, None, Duration::from_secs(120))
}

/// A kubeconfig for the private API server that authenticates with `token` only.
fn token_kubeconfig(kube: &PrivateKube, token: &str, path: &Path) -> Result<()> {
    let admin: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kube.kubeconfig())?)?;
    let cluster = admin["clusters"][0]["cluster"].clone();
    ensure!(cluster["server"].is_string(), "admin kubeconfig: {admin:?}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "private", "cluster": serde_json::to_value(&cluster)?}],
        "users": [{"name": "capstan", "user": {"token": token}}],
        "contexts": [{"name": "capstan", "context": {"cluster": "private", "user": "capstan"}}],
        "current-context": "capstan",
    });
    std::fs::write(path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

/// `{{index .data "<key>"}}` of a namespaced object, base64-decoded for Secrets.
fn data(kube: &PrivateKube, object: &str, key: &str, decode: bool) -> Result<String> {
    let pipe = if decode { " | base64decode" } else { "" };
    kube.kubectl(&[
        "-n",
        NS,
        "get",
        object,
        "-o",
        &format!("go-template={{{{index .data \"{key}\"{pipe}}}}}"),
    ])
}

/// The decoded `caBundle` of each webhook of `config` (empty where none is set).
fn bundles(kube: &PrivateKube, config: &str) -> Result<Vec<String>> {
    let encoded = kube.kubectl(&[
        "get",
        config,
        "-o",
        "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}-{\"\\n\"}{end}",
    ])?;
    encoded
        .lines()
        .map(|line| {
            let b64 = line.strip_suffix('-').unwrap_or(line);
            let pem = base64::engine::general_purpose::STANDARD.decode(b64)?;
            Ok(String::from_utf8(pem)?)
        })
        .collect()
}

/// Waits until every webhook of `config` (`count` of them) has `root` as its `caBundle`.
fn wait_bundles(kube: &PrivateKube, config: &str, count: usize, root: &str) -> Result<()> {
    poll_until(
        &format!("the mesh root in the caBundle of {config}"),
        WAIT,
        Duration::from_millis(200),
        || {
            let got = bundles(kube, config)?;
            Ok((got.len() == count && got.iter().all(|b| b.trim() == root.trim())).then_some(()))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_runs_with_the_charts_arguments_files_and_rbac() -> Result<()> {
    let Some(ctx) = context("chart-discovery")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("chart-discovery", &[])?;
    kube.kubectl(&["create", "namespace", "workloads"])?;
    kube.kubectl(&["-n", "workloads", "create", "serviceaccount", "app"])?;
    let chart = repo_root().join("charts/capstan");
    let chart = chart.to_str().context("utf-8 path")?;
    helm(
        ctx.infra,
        &kube,
        &[
            "install",
            "capstan",
            chart,
            "-n",
            NS,
            "--create-namespace",
            "--timeout",
            "90s",
        ],
    )?;

    // What the pod would get: its arguments, the Secret and ConfigMap as files, its token.
    let args: Vec<String> = serde_json::from_str(&kube.kubectl(&[
        "-n",
        NS,
        "get",
        "deployment/capstan",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ])?)?;
    ensure!(
        args.first().map(String::as_str) == Some("discovery"),
        "{args:?}"
    );
    let template = ctx.scratch.join("template.yaml");
    std::fs::write(
        &template,
        data(
            &kube,
            "configmap/capstan-sidecar-injector",
            "template.yaml",
            false,
        )?,
    )?;
    let token = kube
        .kubectl(&["-n", NS, "create", "token", "capstan", "--duration", "1h"])?
        .trim()
        .to_owned();
    let kubeconfig = ctx.scratch.join("serviceaccount.kubeconfig");
    token_kubeconfig(&kube, &token, &kubeconfig)?;

    // The pod's addresses become loopback ports (ca_support::Discovery sets xDS, TLS xDS,
    // debug and monitoring); files and the client point at the copies above.
    let webhook_port = free_port();
    let mut rewritten = Vec::new();
    let mut replaced = Vec::new();
    for arg in &args[1..] {
        let (flag, _) = arg.split_once('=').unwrap_or((arg, ""));
        let new = match flag {
            "--xds-addr" | "--secure-xds-addr" | "--debug-addr" | "--monitoring-addr" => None,
            "--kubeconfig" => Some(format!("--kubeconfig={}", kubeconfig.display())),
            "--webhook-addr" => Some(format!("--webhook-addr=127.0.0.1:{webhook_port}")),
            "--injection-template" => Some(format!("--injection-template={}", template.display())),
            _ => {
                rewritten.push(arg.clone());
                continue;
            }
        };
        replaced.push(flag.to_owned());
        rewritten.extend(new);
    }
    replaced.sort();
    ensure!(
        replaced
            == [
                "--debug-addr",
                "--injection-template",
                "--kubeconfig",
                "--monitoring-addr",
                "--secure-xds-addr",
                "--webhook-addr",
                "--xds-addr"
            ],
        "the chart's arguments changed: {args:?}"
    );
    let rewritten: Vec<&str> = rewritten.iter().map(String::as_str).collect();
    let server = Discovery::start(&ctx.scratch, "chart", &rewritten)?;
    let log_has_no_denial = || -> Result<()> {
        let log = std::fs::read_to_string(&server.log)?;
        ensure!(
            // The API server's refusals read "... is forbidden: User ... cannot ...".
            !log.to_ascii_lowercase().contains("forbidden"),
            "a request was refused:\n{}",
            server.tail()
        );
        Ok(())
    };

    // The CA's root: created in the Secret, published in every namespace.
    let root = data(&kube, "secret/istio-ca-secret", "root-cert.pem", true)?;
    ensure!(
        root.contains("BEGIN CERTIFICATE"),
        "root-cert.pem: {root:?}"
    );
    for ns in ["workloads", "default", NS] {
        poll_until(
            &format!("istio-ca-root-cert in {ns}"),
            WAIT,
            Duration::from_millis(200),
            || {
                let got = kube.kubectl(&[
                "-n", ns, "get", "configmap", "--ignore-not-found", "-o",
                "go-template={{range .items}}{{if eq .metadata.name \"istio-ca-root-cert\"}}{{index .data \"root-cert.pem\"}}{{end}}{{end}}",
            ])?;
                Ok((got.trim() == root.trim()).then_some(()))
            },
        )?;
    }

    // Both webhook configurations get the mesh root as caBundle; the validating one's, reset
    // as a `helm upgrade` of another chart might, comes back.
    let validator = "validatingwebhookconfiguration/istio-validator-istio-system";
    let injector = "mutatingwebhookconfiguration/istio-sidecar-injector";
    wait_bundles(&kube, validator, 2, &root).with_context(|| server.tail())?;
    wait_bundles(&kube, injector, 3, &root).with_context(|| server.tail())?;
    kube.kubectl(&[
        "patch",
        validator,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]"#,
    ])?;
    wait_bundles(&kube, validator, 2, &root).with_context(|| server.tail())?;

    // The webhook port serves the mesh CA's certificate for the Service, which the
    // configurations trust.
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "chart-1",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "namespace": "workloads", "name": "bad", "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "bad", "namespace": "workloads"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]},
            },
        },
    });
    let ca_file = ctx.scratch.join("mesh-root.pem");
    std::fs::write(&ca_file, &root)?;
    let host = format!("istiod.{NS}.svc");
    let answer = run_ok(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &format!("{host}:{webhook_port}:127.0.0.1")])
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ])
            .arg(format!("https://{host}:{webhook_port}/validate")),
        Some(&review.to_string()),
        Duration::from_secs(20),
    )?;
    let answer: serde_json::Value = serde_json::from_str(&answer).context("the review's answer")?;
    ensure!(
        answer["response"]["uid"] == "chart-1" && answer["response"]["allowed"] == false,
        "{answer}"
    );

    // `/inject` uses the chart's template: the sidecar dials this release's Service over TLS
    // with the chart's image.
    let pod_review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "chart-2",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "workloads", "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "app-0", "namespace": "workloads", "labels": {"app": "app"}},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    });
    let answer = run_ok(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &format!("{host}:{webhook_port}:127.0.0.1")])
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ])
            .arg(format!("https://{host}:{webhook_port}/inject")),
        Some(&pod_review.to_string()),
        Duration::from_secs(20),
    )?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).context("the injection answer")?;
    let patch = answer["response"]["patch"]
        .as_str()
        .with_context(|| format!("no patch: {answer}"))?;
    let patch = run_ok(
        std::process::Command::new("base64").arg("-d"),
        Some(patch),
        Duration::from_secs(10),
    )?;
    for want in [
        "\"istio-proxy\"",
        "\"istio-init\"",
        "istiod.istio-system.svc:15012",
        "\"capstan:0.1.0\"",
    ] {
        ensure!(
            patch.contains(want),
            "{want} not in the injection patch: {patch}"
        );
    }

    // TokenReview as the chart's ServiceAccount: a workload token gets its certificate.
    let app_token = kube
        .kubectl(&[
            "-n",
            "workloads",
            "create",
            "token",
            "app",
            "--audience",
            "istio-ca",
            "--duration",
            "10m",
        ])?
        .trim()
        .to_owned();
    let (chain, _) =
        create_certificate(server.tls_channel(&root, None).await?, Some(&app_token)).await?;
    ensure!(
        uri_sans(&chain[0])? == ["spiffe://cluster.local/ns/workloads/sa/app"],
        "issued: {chain:?}"
    );
    log_has_no_denial()?;
    Ok(())
}
