//! `capstan discovery --webhook-addr` with a CA and no `--webhook-cert-dir`: the webhooks serve
//! the mesh CA's DNS certificate and the leader writes the CA's trust bundle as `caBundle`, as
//! istiod does. Against a private kube-apiserver:
//!
//! - two replicas sharing `istio-ca-secret` each serve their own short-lived certificate
//!   (fetched by a TLS handshake), both verify against the `caBundle` the leader wrote, also
//!   after renewal, and `kubectl apply` of an invalid VirtualService is denied through the
//!   webhook pointed at each replica in turn (the leader killed before the second);
//! - with a plugged-in `cacerts`, a root rotation re-patches the `caBundle` with both roots and
//!   the certificate re-issued under the new root verifies against it.

mod ca_support;
mod discovery_support;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, infra, poll_until, run_with_timeout, CmdOutput};
use discovery_support::Discovery;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const CONFIG: &str = "capstan-validator";
/// What the API server verifies for a `service` reference to the chart's Service.
const SERVICE_NAME: &str = "istiod.istio-system.svc";
const INVALID_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: -10\n";
const DENIED: &str = "admission webhook \"validation.istio.io\" denied the request";

/// `kubectl --kubeconfig <private> ARGS` with `stdin`, whatever its exit status.
fn kubectl(kube: &PrivateKube, args: &[&str], stdin: Option<&str>) -> Result<CmdOutput> {
    let mut cmd = Command::new(infra()?.tool("kubectl")?);
    cmd.arg("--kubeconfig").arg(kube.kubeconfig()).args(args);
    run_with_timeout(&mut cmd, stdin, Duration::from_secs(60))
}

/// The URL the API server calls a replica's webhook at: `localhost`, a name the mesh CA's
/// certificate carries (it has no IP addresses, as istiod's).
fn url(replica: &Discovery) -> String {
    format!("https://localhost:{}/validate", replica.webhook_port)
}

/// The validating configuration, created with no `caBundle` as a chart leaves it.
fn webhook_configuration(url: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: {CONFIG}\nwebhooks:\n- name: validation.istio.io\n  clientConfig:\n    url: {url}\n  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [networking.istio.io]\n    apiVersions: ['*']\n    resources: ['*']\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Fail\n  timeoutSeconds: 10\n"
    )
}

/// The decoded `caBundle` of every webhook of the configuration, if all have one and agree.
fn ca_bundle(kube: &PrivateKube) -> Result<Option<String>> {
    let encoded = kube.kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        CONFIG,
        "-o",
        "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}",
    ])?;
    let bundles: Vec<&str> = encoded.lines().collect();
    if bundles.is_empty()
        || bundles
            .iter()
            .any(|b| b.trim().is_empty() || *b != bundles[0])
    {
        return Ok(None);
    }
    let pem = base64::engine::general_purpose::STANDARD.decode(bundles[0].trim())?;
    Ok(Some(String::from_utf8(pem)?))
}

/// Waits until the `caBundle` holds exactly the certificates of `roots_pem`.
fn wait_bundle(kube: &PrivateKube, roots_pem: &str, log: impl Fn() -> String) -> Result<String> {
    let want = certs(roots_pem)?;
    poll_until(
        "the caBundle to be the trust bundle",
        WAIT,
        Duration::from_millis(200),
        || Ok(ca_bundle(kube)?.filter(|b| certs(b).is_ok_and(|c| c == want))),
    )
    .with_context(log)
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// The chain served on `port` to a client that dials `server_name` and trusts only
/// `bundle_pem` (the `caBundle`); an error if the handshake does not verify.
fn served_chain(
    port: u16,
    server_name: &str,
    bundle_pem: &str,
) -> Result<Vec<CertificateDer<'static>>> {
    let mut roots = rustls::RootCertStore::empty();
    for root in certs(bundle_pem)? {
        roots.add(root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .with_context(|| format!("TLS handshake with port {port} as {server_name}"))?;
    }
    conn.writer().flush()?;
    let chain = conn.peer_certificates().context("no server certificate")?;
    Ok(chain.iter().map(|c| c.clone().into_owned()).collect())
}

/// The served chain, verified against the bundle for every name a client may dial.
fn verified_leaf(port: u16, bundle_pem: &str) -> Result<CertificateDer<'static>> {
    let chain = served_chain(port, SERVICE_NAME, bundle_pem)?;
    served_chain(port, "localhost", bundle_pem)?;
    chain.into_iter().next().context("an empty chain")
}

/// Seconds from now until the certificate expires.
fn seconds_left(leaf: &CertificateDer<'_>) -> Result<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf).context("the leaf's DER")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(cert.validity().not_after.timestamp() - now.as_secs() as i64)
}

/// Waits until the API server refuses the invalid VirtualService in a dry run (it picks up
/// configuration changes after a moment), then checks that a real apply is refused too.
fn denied_through_the_api_server(kube: &PrivateKube, log: impl Fn() -> String) -> Result<()> {
    let dry = ["apply", "--dry-run=server", "-f", "-"];
    let mut last = String::new();
    poll_until(
        "the webhook refusing a dry run",
        WAIT,
        Duration::from_millis(500),
        || {
            let out = kubectl(kube, &dry, Some(INVALID_VS))?;
            last = out.stderr.clone();
            Ok((!out.status.success() && out.stderr.contains(DENIED)).then_some(()))
        },
    )
    .with_context(|| format!("last refusal: {last}\n{}", log()))?;
    let out = kubectl(kube, &["apply", "-f", "-"], Some(INVALID_VS))?;
    ensure!(
        !out.status.success()
            && out.stderr.contains(DENIED)
            && out
                .stderr
                .contains("configuration is invalid: spec.http[0].route[0].weight"),
        "{out:?}"
    );
    Ok(())
}

/// A private API server with the VirtualService CRD and the namespaces the tests use.
fn private_kube(name: &str) -> Result<PrivateKube> {
    let kube = PrivateKube::start(name, &[])?;
    kube.install_istio_crds(&["virtualservices.networking.istio.io"])?;
    for ns in ["istio-system", "shop"] {
        kube.kubectl(&["create", "namespace", ns])?;
    }
    Ok(kube)
}

#[test]
fn replicas_serve_their_own_mesh_certificates_which_the_leaders_ca_bundle_trusts() -> Result<()> {
    let Some(ctx) = context("discovery-webhook-mesh-ca")? else {
        return Ok(());
    };
    let kube = private_kube("webhook-replicas")?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let args = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--validation-webhook-config-name",
        CONFIG,
        "--leader-lease-duration",
        "3s",
        "--leader-renew-period",
        "500ms",
        "--drain-duration",
        "1s",
        // The serving certificates live 30 s and are renewed every 15 s.
        "--workload-cert-ttl",
        "30s",
    ];
    // A first, so that it creates istio-ca-secret and leads; then B, which loads that root.
    let mut a = Discovery::start(&ctx.scratch, "a", &args)?;
    let b = Discovery::start(&ctx.scratch, "b", &args)?;
    let logs = || format!("--- a:\n{}\n--- b:\n{}", a.tail(), b.tail());
    kube.apply(&webhook_configuration(&url(&a)))?;

    // The leader writes the mesh root, the one root of istio-ca-secret.
    let root = kube.kubectl(&[
        "-n",
        "istio-system",
        "get",
        "secret",
        "istio-ca-secret",
        "-o",
        "go-template={{index .data \"root-cert.pem\" | base64decode}}",
    ])?;
    let bundle = wait_bundle(&kube, &root, logs)?;

    // Each replica its own certificate, short-lived, and trusted through the caBundle.
    let leaf_a = verified_leaf(a.webhook_port, &bundle).with_context(logs)?;
    let leaf_b = verified_leaf(b.webhook_port, &bundle).with_context(logs)?;
    ensure!(leaf_a != leaf_b, "the replicas serve the same certificate");
    for leaf in [&leaf_a, &leaf_b] {
        let left = seconds_left(leaf)?;
        ensure!(
            (1..=30).contains(&left),
            "expires in {left} s, not within --workload-cert-ttl"
        );
    }

    denied_through_the_api_server(&kube, logs).context("through A")?;

    // Pointed at B with the leader gone: B answers, with the bundle A wrote.
    kube.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        CONFIG,
        "--type",
        "json",
        "-p",
        &format!(
            r#"[{{"op":"replace","path":"/webhooks/0/clientConfig/url","value":"{}"}}]"#,
            url(&b)
        ),
    ])?;
    a.terminate()?;
    let status = a.wait_exit(WAIT)?;
    ensure!(status.success(), "A exited with {status}\n{}", a.tail());
    ensure!(
        ca_bundle(&kube)?.as_deref() == Some(bundle.as_str()),
        "the caBundle changed"
    );
    denied_through_the_api_server(&kube, || b.tail()).context("through B")?;

    // Renewed at half its life, and still trusted.
    let renewed = poll_until(
        "B's certificate renewed",
        WAIT,
        Duration::from_millis(500),
        || Ok(Some(verified_leaf(b.webhook_port, &bundle)?).filter(|l| *l != leaf_b)),
    )
    .with_context(|| b.tail())?;
    ensure!(
        seconds_left(&renewed)? > seconds_left(&leaf_b)?,
        "not a newer certificate"
    );
    denied_through_the_api_server(&kube, || b.tail()).context("through B, renewed")?;
    Ok(())
}

#[test]
fn a_root_rotation_repatches_the_ca_bundle_with_both_roots() -> Result<()> {
    let Some(ctx) = context("discovery-webhook-rotation")? else {
        return Ok(());
    };
    let kube = private_kube("webhook-rotation")?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let cacerts = ctx.scratch.join("cacerts");
    let cacerts_arg = cacerts.display().to_string();
    let (old_root, new_root) = (
        ca_support::TestCa::root("old root")?,
        ca_support::TestCa::root("new root")?,
    );
    let (old_ca, new_ca) = (
        old_root.intermediate("old intermediate")?,
        new_root.intermediate("new intermediate")?,
    );
    ca_support::write_cacerts(&cacerts, &old_ca, &old_root, &old_root.pem)?;
    let server = Discovery::start(
        &ctx.scratch,
        "discovery",
        &[
            "--kubeconfig",
            kubeconfig.as_str(),
            "--cacerts",
            cacerts_arg.as_str(),
            "--validation-webhook-config-name",
            CONFIG,
        ],
    )?;
    let logs = || server.tail();
    kube.apply(&webhook_configuration(&url(&server)))?;
    let bundle = wait_bundle(&kube, &old_root.pem, logs)?;
    let first = verified_leaf(server.webhook_port, &bundle)?;
    denied_through_the_api_server(&kube, logs).context("under the old root")?;

    // Step 2 of a root rotation: trust both. The caBundle follows the trust bundle.
    let both = format!("{}{}", old_root.pem, new_root.pem);
    ca_support::put_cacert(&cacerts, "root-cert.pem", &both)?;
    let bundle = wait_bundle(&kube, &both, logs)?;
    ensure!(
        verified_leaf(server.webhook_port, &bundle)? == first,
        "re-issued though the signing certificate did not change"
    );

    // Step 3: sign under the new root. The certificate is re-issued under it at once and
    // verifies against the bundle the API server has.
    let reordered = format!("{}{}", new_root.pem, old_root.pem);
    ca_support::write_cacerts(&cacerts, &new_ca, &new_root, &reordered)?;
    let bundle = wait_bundle(&kube, &reordered, logs)?;
    let only_new = new_root.pem.clone();
    poll_until(
        "a certificate of the new root",
        WAIT,
        Duration::from_millis(200),
        || Ok(verified_leaf(server.webhook_port, &only_new).ok()),
    )
    .with_context(logs)?;
    verified_leaf(server.webhook_port, &bundle)?;
    denied_through_the_api_server(&kube, logs).context("under the new root")?;
    Ok(())
}
