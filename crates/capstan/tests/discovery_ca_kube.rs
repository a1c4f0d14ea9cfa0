//! `capstan discovery --kubeconfig` as istiod runs in a cluster, against a private real
//! kube-apiserver (it publishes a ConfigMap in every namespace, which must not disturb the
//! shared test cluster):
//!
//! - the self-signed root is created once in the Secret `istio-system/istio-ca-secret` and a
//!   second start reuses it;
//! - `istio-ca-root-cert` is published in existing namespaces, appears in a namespace created
//!   after the start, and is restored when deleted or edited;
//! - service-account tokens (TokenReview, audience `istio-ca`) get certificates and open xDS
//!   streams on the TLS port for nodes of their own namespace only; an unauthenticated
//!   client is refused.

mod ca_support;

use anyhow::{ensure, Result};
use ca_support::*;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until};
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

fn secret_field(kube: &PrivateKube, template: &str) -> Result<String> {
    kube.kubectl(&[
        "-n",
        "istio-system",
        "get",
        "secret",
        "istio-ca-secret",
        "-o",
        &format!("go-template={template}"),
    ])
}

/// The ConfigMap's root in `namespace`, if the ConfigMap exists.
fn published_root(kube: &PrivateKube, namespace: &str) -> Result<Option<String>> {
    let out = kube.kubectl(&[
        "-n",
        namespace,
        "get",
        "configmap",
        "--ignore-not-found",
        "-o",
        "go-template={{range .items}}{{if eq .metadata.name \"istio-ca-root-cert\"}}{{index .data \"root-cert.pem\"}}{{end}}{{end}}",
    ])?;
    Ok(Some(out).filter(|s| !s.trim().is_empty()))
}

fn wait_published(kube: &PrivateKube, namespace: &str, root: &str) -> Result<()> {
    poll_until(
        &format!("istio-ca-root-cert in {namespace}"),
        WAIT,
        Duration::from_millis(200),
        || {
            let got = published_root(kube, namespace)?;
            Ok(got.filter(|g| g.trim() == root.trim()).map(|_| ()))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_in_kubernetes_keeps_its_root_publishes_it_and_checks_tokens() -> Result<()> {
    let Some(ctx) = context("discovery-ca-kube")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("discovery-ca", &[])?;
    for ns in ["istio-system", "alpha", "beta"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    for ns in ["alpha", "beta"] {
        kube.kubectl(&["-n", ns, "create", "serviceaccount", "app"])?;
    }
    let token = |ns: &str| -> Result<String> {
        Ok(kube
            .kubectl(&[
                "-n",
                ns,
                "create",
                "token",
                "app",
                "--audience",
                "istio-ca",
                "--duration",
                "10m",
            ])?
            .trim()
            .to_owned())
    };
    let (alpha_token, beta_token) = (token("alpha")?, token("beta")?);
    let kubeconfig = kube.kubeconfig().display().to_string();
    let args = ["--kubeconfig", kubeconfig.as_str()];

    let server = Discovery::start(&ctx.scratch, "first", &args)?;
    let root = secret_field(&kube, "{{index .data \"root-cert.pem\" | base64decode}}")?;
    ensure!(
        root.contains("BEGIN CERTIFICATE"),
        "root-cert.pem: {root:?}"
    );
    ensure!(secret_field(&kube, "{{.type}}")? == "istio.io/ca-root");
    let version = secret_field(&kube, "{{.metadata.resourceVersion}}")?;

    // The root in every namespace: existing ones, a new one, and restored after tampering.
    for ns in ["alpha", "beta", "default"] {
        wait_published(&kube, ns, &root)?;
    }
    kube.kubectl(&["create", "namespace", "gamma"])?;
    wait_published(&kube, "gamma", &root)?;
    kube.kubectl(&["-n", "alpha", "delete", "configmap", "istio-ca-root-cert"])?;
    wait_published(&kube, "alpha", &root)?;
    kube.kubectl(&[
        "-n",
        "beta",
        "patch",
        "configmap",
        "istio-ca-root-cert",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"root-cert.pem":"tampered"}}"#,
    ])?;
    wait_published(&kube, "beta", &root)?;

    // TokenReview: a token gets a certificate for its service account.
    let channel = server.tls_channel(&root, None).await?;
    let (chain, _) = create_certificate(channel.clone(), Some(&alpha_token)).await?;
    ensure!(uri_sans(&chain[0])? == ["spiffe://cluster.local/ns/alpha/sa/app"]);
    verify_chain(&chain, &root)?;

    // xDS on the TLS port: own namespace only; nobody is refused.
    let in_alpha = node_id("app-1", "alpha");
    delta_clusters(channel.clone(), Some(&alpha_token), &in_alpha).await?;
    let denied = delta_clusters(channel.clone(), Some(&beta_token), &in_alpha)
        .await
        .expect_err("a token of beta for a node in alpha");
    ensure!(denied.code() == Code::PermissionDenied, "{denied:?}");
    ensure!(denied.message().contains("ns/beta/sa/app"), "{denied:?}");
    let anonymous = delta_clusters(channel.clone(), None, &in_alpha)
        .await
        .expect_err("no credentials");
    ensure!(anonymous.code() == Code::Unauthenticated, "{anonymous:?}");
    let garbage = delta_clusters(channel, Some("not-a-token"), &in_alpha)
        .await
        .expect_err("a garbage token");
    ensure!(garbage.code() == Code::Unauthenticated, "{garbage:?}");

    // A second start reuses the stored root: the Secret is not rewritten.
    drop(server);
    let server = Discovery::start(&ctx.scratch, "second", &args)?;
    ensure!(secret_field(&kube, "{{.metadata.resourceVersion}}")? == version);
    let (chain, _) =
        create_certificate(server.tls_channel(&root, None).await?, Some(&beta_token)).await?;
    ensure!(
        chain.last() == Some(&root),
        "the second start signs with the same root"
    );
    Ok(())
}

/// With a plugged-in CA (`--cacerts`), `istio-ca-root-cert` carries the trust bundle and
/// follows it: a root added to `root-cert.pem` reaches every namespace without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_ca_root_cert_follows_a_cacerts_root_rotation() -> Result<()> {
    let Some(ctx) = context("discovery-ca-kube-rotation")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("discovery-ca-rotation", &[])?;
    for ns in ["istio-system", "alpha"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    let (old_root, new_root) = (TestCa::root("old root")?, TestCa::root("new root")?);
    let old_ca = old_root.intermediate("old intermediate")?;
    let cacerts = ctx.scratch.join("cacerts");
    write_cacerts(&cacerts, &old_ca, &old_root, &old_root.pem)?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let cacerts_arg = cacerts.display().to_string();
    let _server = Discovery::start(
        &ctx.scratch,
        "discovery",
        &["--kubeconfig", &kubeconfig, "--cacerts", &cacerts_arg],
    )?;
    wait_published(&kube, "alpha", &old_root.pem)?;

    let both = format!("{}{}", old_root.pem, new_root.pem);
    put_cacert(&cacerts, "root-cert.pem", &both)?;
    for ns in ["alpha", "default"] {
        wait_published(&kube, ns, &both)?;
    }
    kube.kubectl(&["create", "namespace", "beta"])?;
    wait_published(&kube, "beta", &both)?;
    Ok(())
}
