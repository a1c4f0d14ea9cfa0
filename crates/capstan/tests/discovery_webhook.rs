//! `capstan discovery --webhook-addr`: the validating admission webhook.
//!
//! - on loopback, over HTTPS with a certificate from `--webhook-cert-dir`: reviews answered
//!   with `capstan validate`'s field paths, bad bodies refused with 400/413/415, the
//!   certificate re-read when the directory changes;
//! - against a private real kube-apiserver: the mesh CA's trust bundle is patched into a
//!   ValidatingWebhookConfiguration (and again after a reset), and `kubectl apply` of an
//!   invalid VirtualService is refused by the API server calling the webhook, a valid one with
//!   a warning is accepted and shows it, and `--dry-run=server` goes through the webhook
//!   without storing anything.
//!
//! Two replicas and root rotations with the mesh CA's certificate: `discovery_webhook_mesh_ca.rs`.

mod discovery_support;

use anyhow::{ensure, Context, Result};
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, infra, poll_until, run_with_timeout, CmdOutput};
use discovery_support::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn response(body: &str) -> Result<Value> {
    let review: Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
    ensure!(review["kind"] == "AdmissionReview", "{review}");
    Ok(review["response"].clone())
}

#[test]
fn webhook_on_loopback_answers_reviews_and_refuses_bad_requests() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let (config, certs) = (scratch.path().join("config"), scratch.path().join("certs"));
    std::fs::create_dir_all(&config)?;
    write_cert_dir(&certs)?;
    let ca = certs.join("ca.crt");
    let mut discovery = Discovery::start(
        scratch.path(),
        "discovery",
        &[
            "--config-dir",
            config.to_str().context("utf-8")?,
            "--webhook-cert-dir",
            certs.to_str().context("utf-8")?,
        ],
    )?;
    let url = discovery.webhook_url("/validate");
    let post_json =
        |url: &str, body: &[u8]| post(url, &ca, "application/json", body, scratch.path());

    let invalid = virtual_service(
        "bad",
        json!({"route": [{"destination": {"host": "reviews"}, "weight": -10}]}),
    );
    let (code, body) = post_json(&url, &admission_review("CREATE", Some(invalid)))?;
    ensure!(code == 200, "{code} {body}");
    let denied = response(&body)?;
    ensure!(denied["allowed"] == false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.starts_with("configuration is invalid: spec.http[0].route[0].weight"),
        "{denied}"
    );

    // Istio's path with a trailing slash, and a warning.
    let warned = virtual_service(
        "mirrored",
        json!({"route": [{"destination": {"host": "reviews"}}],
               "mirror": {"host": "shadow"}, "mirrorPercent": 5}),
    );
    let (code, body) = post_json(
        &discovery.webhook_url("/validate/"),
        &admission_review("UPDATE", Some(warned)),
    )?;
    ensure!(code == 200, "{code} {body}");
    let allowed = response(&body)?;
    ensure!(allowed["allowed"] == true, "{allowed}");
    ensure!(
        allowed["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("spec.http[0].mirrorPercent: using deprecated")),
        "{allowed}"
    );

    let (code, body) = post_json(&url, b"{\"kind\": 42")?;
    ensure!(
        code == 400 && body.contains("not an AdmissionReview"),
        "{code} {body}"
    );
    let (code, body) = post(&url, &ca, "text/plain", b"{}", scratch.path())?;
    ensure!(
        code == 415 && body.contains("application/json"),
        "{code} {body}"
    );
    let oversized = vec![b' '; 7 * 1024 * 1024];
    let (code, body) = post_json(&url, &oversized)?;
    ensure!(code == 413, "{code} {body}");
    let (code, body) = post_json(&discovery.webhook_url("/nowhere"), b"{}")?;
    ensure!(code == 404, "{code} {body}");

    // A new certificate in the directory is served within the reload period; the old CA no
    // longer verifies it.
    let old_ca = scratch.path().join("old-ca.crt");
    std::fs::copy(&ca, &old_ca)?;
    write_cert_dir(&certs)?;
    poll_until(
        "the reloaded certificate",
        WAIT,
        Duration::from_millis(250),
        || {
            Ok(post_json(&url, &admission_review("DELETE", None))
                .ok()
                .filter(|(code, _)| *code == 200)
                .map(|_| ()))
        },
    )?;
    ensure!(
        post(&url, &old_ca, "application/json", b"{}", scratch.path()).is_err(),
        "the old certificate is still served"
    );

    discovery.terminate()?;
    let status = discovery.wait_exit(Duration::from_secs(20))?;
    ensure!(
        status.code() == Some(0),
        "{status}; log:\n{}",
        discovery.tail()
    );
    Ok(())
}

/// `kubectl --kubeconfig <private> ARGS` with `stdin`, whatever its exit status.
fn kubectl(kube: &PrivateKube, args: &[&str], stdin: Option<&str>) -> Result<CmdOutput> {
    let mut cmd = Command::new(infra()?.tool("kubectl")?);
    cmd.arg("--kubeconfig").arg(kube.kubeconfig()).args(args);
    run_with_timeout(&mut cmd, stdin, Duration::from_secs(60))
}

fn ca_bundle(kube: &PrivateKube) -> Result<String> {
    kube.kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        "capstan-validator",
        "-o",
        "jsonpath={.webhooks[*].clientConfig.caBundle}",
    ])
}

const INVALID_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: -10\n";
const WARNING_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: mirrored\n  namespace: shop\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n    mirror:\n      host: shadow\n    mirrorPercent: 5\n";
const DENIED: &str = "admission webhook \"validation.istio.io\" denied the request";

#[test]
fn kube_apiserver_calls_the_webhook_with_the_patched_ca_bundle() -> Result<()> {
    let Some(ctx) = context("discovery-webhook-kube")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("webhook", &[])?;
    kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
    for ns in ["istio-system", "shop"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    let kubeconfig = kube.kubeconfig().display().to_string();
    let discovery = Discovery::start(
        &ctx.scratch,
        "discovery",
        &[
            "--kubeconfig",
            kubeconfig.as_str(),
            "--validation-webhook-config-name",
            "capstan-validator",
        ],
    )?;
    // Created empty after the start, as a chart would: discovery fills in the mesh root. The
    // URL names `localhost`: the mesh CA's certificate, as istiod's, has no IP addresses.
    let url = format!("https://localhost:{}/validate", discovery.webhook_port);
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: capstan-validator\nwebhooks:\n- name: validation.istio.io\n  clientConfig:\n    url: {}\n  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [networking.istio.io]\n    apiVersions: ['*']\n    resources: ['*']\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Ignore\n  timeoutSeconds: 10\n",
        url
    );
    kube.apply(&config)?;
    let patched = poll_until(
        "the CA bundle patched in",
        WAIT,
        Duration::from_millis(200),
        || Ok(Some(ca_bundle(&kube)?).filter(|b| !b.trim().is_empty())),
    )
    .with_context(|| discovery.tail())?;

    // The API server picks up the new bundle after a moment; probe without side effects.
    let dry = ["apply", "--dry-run=server", "-f", "-"];
    let refusal = poll_until(
        "the webhook refusing a dry run",
        WAIT,
        Duration::from_millis(500),
        || {
            let out = kubectl(&kube, &dry, Some(INVALID_VS))?;
            Ok((!out.status.success() && out.stderr.contains(DENIED)).then_some(out.stderr))
        },
    )
    .with_context(|| discovery.tail())?;
    ensure!(
        refusal.contains("spec.http[0].route[0].weight"),
        "{refusal}"
    );
    // Installed failing open (Ignore, as Istio's chart does); once the webhook is seen refusing
    // invalid config, discovery makes it fail closed.
    poll_until(
        "failurePolicy switched to Fail",
        WAIT,
        Duration::from_millis(300),
        || {
            let p = kube.kubectl(&[
                "get",
                "validatingwebhookconfiguration",
                "capstan-validator",
                "-o",
                "jsonpath={.webhooks[*].failurePolicy}",
            ])?;
            Ok((p.trim() == "Fail").then_some(()))
        },
    )
    .with_context(|| discovery.tail())?;

    // For real: refused with the field path, and not stored.
    let out = kubectl(&kube, &["apply", "-f", "-"], Some(INVALID_VS))?;
    ensure!(
        !out.status.success(),
        "an invalid VirtualService was stored: {out:?}"
    );
    ensure!(
        out.stderr.contains(DENIED)
            && out
                .stderr
                .contains("configuration is invalid: spec.http[0].route[0].weight"),
        "{out:?}"
    );
    let stored = kube.kubectl(&[
        "-n",
        "shop",
        "get",
        "virtualservice",
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    ensure!(stored.trim().is_empty(), "stored: {stored}");

    // A valid one with a warning: a dry run stores nothing, then the apply stores it; both
    // show the warning.
    let out = kubectl(&kube, &dry, Some(WARNING_VS))?;
    ensure!(
        out.status.success() && out.stdout.contains("server dry run"),
        "{out:?}"
    );
    ensure!(
        out.stderr
            .contains("Warning: spec.http[0].mirrorPercent: using deprecated"),
        "{out:?}"
    );
    let stored = kube.kubectl(&[
        "-n",
        "shop",
        "get",
        "virtualservice",
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    ensure!(stored.trim().is_empty(), "a dry run stored: {stored}");
    let out = kubectl(&kube, &["apply", "-f", "-"], Some(WARNING_VS))?;
    ensure!(out.status.success(), "{out:?}");
    ensure!(
        out.stderr
            .contains("Warning: spec.http[0].mirrorPercent: using deprecated"),
        "{out:?}"
    );
    kube.kubectl(&["-n", "shop", "get", "virtualservice", "mirrored"])?;

    // Someone resets the bundle (a helm upgrade renders it empty): it is patched again.
    kube.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        "capstan-validator",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]"#,
    ])?;
    poll_until(
        "the CA bundle patched again",
        WAIT,
        Duration::from_millis(200),
        || Ok(Some(ca_bundle(&kube)?).filter(|b| b.trim() == patched.trim())),
    )
    .with_context(|| discovery.tail())?;
    Ok(())
}
