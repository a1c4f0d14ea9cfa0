//! Sidecar injection through a real kube-apiserver: `capstan discovery` serves `/inject` on its
//! webhook port, a MutatingWebhookConfiguration with Istio's chart selectors points at it
//! (clientConfig.url on 127.0.0.1), and `kubectl create --dry-run=server` shows what the API
//! server would store:
//!
//! - a pod in a namespace labelled `istio-injection=enabled` (or `capstan-injection=enabled`)
//!   gets `istio-init` and `istio-proxy`, the mesh labels and the status annotation;
//! - a pod with `sidecar.istio.io/inject: "false"` and a pod in an unlabelled namespace are
//!   untouched; a pod labelled `sidecar.istio.io/inject: "true"` in an unlabelled namespace
//!   is injected;
//! - an already injected pod submitted again keeps one sidecar;
//! - a malformed `proxy.istio.io/config` refuses the pod with the reason;
//! - the injected `istio-proxy` container, run as its spec says (Downward API values filled
//!   in), connects to the discovery server with pilot-agent's node id and metadata and turns
//!   ready.
//!
//! A private API server: the webhook configuration is cluster-wide and must not touch the
//! shared test cluster.

mod ca_support;

use anyhow::{ensure, Context as _, Result};
use ca_support::Discovery;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until, run_with_timeout};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A CA and a serving certificate for 127.0.0.1 in the layout `--webhook-cert-dir` reads;
/// returns the CA PEM (the webhook configuration's caBundle).
fn webhook_cert(dir: &Path) -> Result<String> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "inject-test-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    Ok(ca_cert.pem())
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Istio's chart's two injector webhooks (namespace-selected and object-selected), plus
/// Capstan's own namespace label.
fn webhook_configuration(port: u16, ca_pem: &str) -> Value {
    let hook = |name: &str, namespace_selector: Value, object_selector: Value| {
        json!({
            "name": name,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/inject"), "caBundle": b64(ca_pem.as_bytes())},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": namespace_selector,
            "objectSelector": object_selector,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
        })
    };
    let not_false = json!({"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]});
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "capstan-sidecar-injector"},
        "webhooks": [
            hook("namespace.sidecar-injector.istio.io",
                json!({"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]}),
                not_false.clone()),
            hook("capstan-namespace.sidecar-injector.istio.io",
                json!({"matchExpressions": [
                    {"key": "capstan-injection", "operator": "In", "values": ["enabled"]},
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                ]}),
                not_false),
            hook("object.sidecar-injector.istio.io",
                json!({"matchExpressions": [
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                    {"key": "capstan-injection", "operator": "DoesNotExist"},
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                ]}),
                json!({"matchExpressions": [
                    {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                ]})),
        ],
    })
}

fn pod(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "ports": [{"containerPort": 9080}]}]},
    })
}

/// `kubectl create --dry-run=server -o json` of `object` in `namespace`: the stored object, or
/// kubectl's error output.
fn dry_run(kube: &PrivateKube, namespace: &str, object: &Value) -> Result<Result<Value, String>> {
    let kubectl = capstan_e2e::infra()?.tool("kubectl")?;
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig").arg(kube.kubeconfig()).args([
        "-n",
        namespace,
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
    ]);
    let out = run_with_timeout(&mut cmd, Some(&object.to_string()), Duration::from_secs(60))?;
    if !out.status.success() {
        return Ok(Err(out.stderr));
    }
    Ok(Ok(
        serde_json::from_str(&out.stdout).context("kubectl's JSON")?
    ))
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn created(kube: &PrivateKube, namespace: &str, object: &Value) -> Result<Value> {
    dry_run(kube, namespace, object)?.map_err(|e| anyhow::anyhow!("kubectl create failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_injects_through_capstan() -> Result<()> {
    let Some(ctx) = context("inject-kube")? else {
        return Ok(());
    };
    let kube = PrivateKube::start("inject", &[])?;
    for (ns, label) in [
        ("istio-system", None),
        ("injected", Some("istio-injection=enabled")),
        ("capstan-labelled", Some("capstan-injection=enabled")),
        ("plain", None),
        ("disabled", Some("istio-injection=disabled")),
    ] {
        kube.kubectl(&["create", "namespace", ns])?;
        if let Some(label) = label {
            kube.kubectl(&["label", "namespace", ns, label])?;
        }
        // No controller-manager here: the ServiceAccount admission plugin needs `default`.
        kube.kubectl(&["-n", ns, "create", "serviceaccount", "default"])?;
    }
    let cert_dir = ctx.scratch.join("webhook-cert");
    let ca_pem = webhook_cert(&cert_dir)?;
    let template = ctx.scratch.join("injection-template.yaml");
    // Plaintext xDS and no CA, so that the injected container can also be run here as is.
    let (ready_port, admin_port) = (free_port()?, free_port()?);
    std::fs::write(
        &template,
        format!(
            "image: registry.example/capstan:test\ndiscoveryAddress: capstan.capstan-system.svc:15012\n\
             xdsTls: false\ncaAddress: null\nreadinessPort: {ready_port}\n\
             extraArgs: [--admin-address, \"127.0.0.1:{admin_port}\"]\n"
        ),
    )?;
    let webhook_port = free_port()?;
    let kubeconfig = kube.kubeconfig().display().to_string();
    let webhook_addr = format!("127.0.0.1:{webhook_port}");
    let cert_dir_arg = cert_dir.display().to_string();
    let template_arg = template.display().to_string();
    let server = Discovery::start(
        &ctx.scratch,
        "discovery",
        &[
            "--kubeconfig",
            &kubeconfig,
            "--webhook-addr",
            &webhook_addr,
            "--webhook-cert-dir",
            &cert_dir_arg,
            "--injection-template",
            &template_arg,
            "--injector-webhook-config-name",
            "capstan-sidecar-injector",
        ],
    )?;
    // Applied with an empty caBundle, as a chart that leaves the certificate to the control
    // plane renders it: discovery patches its serving CA in.
    kube.apply(&webhook_configuration(webhook_port, "").to_string())?;
    poll_until(
        "the injector's caBundle patched",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let got = kube.kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                "capstan-sidecar-injector",
                "-o",
                "jsonpath={.webhooks[*].clientConfig.caBundle}",
            ])?;
            let want = b64(ca_pem.as_bytes());
            Ok(
                (got.split_whitespace().count() == 3 && got.split_whitespace().all(|b| b == want))
                    .then_some(()),
            )
        },
    )
    .map_err(|e| e.context(server.tail()))?;

    // The API server picks the configuration up asynchronously: wait for the first injection.
    let plain_pod = pod(
        "reviews",
        json!({"app": "reviews", "version": "v1"}),
        json!({}),
    );
    let injected = poll_until(
        "the first injected pod",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let out = created(&kube, "injected", &plain_pod)?;
            Ok(names(&out, "containers")
                .contains(&"istio-proxy".to_string())
                .then_some(out))
        },
    )
    .with_context(|| format!("discovery log:\n{}", server.tail()))?;
    ensure!(
        names(&injected, "containers") == ["app", "istio-proxy"],
        "{injected:#}"
    );
    ensure!(names(&injected, "initContainers") == ["istio-init"]);
    let proxy = &injected["spec"]["containers"][1];
    ensure!(
        proxy["image"] == "registry.example/capstan:test",
        "{proxy:#}"
    );
    ensure!(proxy["securityContext"]["runAsUser"] == 1337);
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        args.windows(2)
            .any(|w| w == ["--xds-address", "capstan.capstan-system.svc:15012"]),
        "{args:?}"
    );
    ensure!(injected["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio");
    ensure!(injected["metadata"]["labels"]["service.istio.io/canonical-name"] == "reviews");
    ensure!(injected["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    let volumes: Vec<&str> = injected["spec"]["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["istio-token", "istiod-ca-cert"] {
        ensure!(volumes.contains(&v), "{volumes:?}");
    }

    // Capstan's own namespace label.
    let out = created(&kube, "capstan-labelled", &plain_pod)?;
    ensure!(
        names(&out, "containers") == ["app", "istio-proxy"],
        "{out:#}"
    );

    // Untouched: opted out, unlabelled namespace, disabled namespace even with the pod label.
    let opted_out = pod(
        "opted-out",
        json!({"app": "x"}),
        json!({"sidecar.istio.io/inject": "false"}),
    );
    let opted_out_by_label = pod(
        "opted-out-label",
        json!({"app": "x", "sidecar.istio.io/inject": "false"}),
        json!({}),
    );
    let labelled_in = pod(
        "opted-in",
        json!({"app": "x", "sidecar.istio.io/inject": "true"}),
        json!({}),
    );
    for (ns, p, want) in [
        ("injected", &opted_out, vec!["app"]),
        ("injected", &opted_out_by_label, vec!["app"]),
        ("plain", &plain_pod, vec!["app"]),
        ("disabled", &labelled_in, vec!["app"]),
        ("plain", &labelled_in, vec!["app", "istio-proxy"]),
    ] {
        let out = created(&kube, ns, p)?;
        ensure!(
            names(&out, "containers") == want,
            "{ns}/{}: {:?}",
            p["metadata"]["name"],
            names(&out, "containers")
        );
        if want.len() == 1 {
            ensure!(
                names(&out, "initContainers").is_empty(),
                "{ns}: init containers added"
            );
        }
    }

    // Re-injection is a no-op: the injected pod, submitted again, keeps one sidecar.
    let mut again = injected.clone();
    let meta = again["metadata"].as_object_mut().context("metadata")?;
    for k in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        meta.remove(k);
    }
    let out = created(&kube, "injected", &again)?;
    ensure!(
        names(&out, "containers") == ["app", "istio-proxy"],
        "{:?}",
        names(&out, "containers")
    );
    ensure!(names(&out, "initContainers") == ["istio-init"]);

    // A malformed ProxyConfig: refused, with the reason.
    let bad = pod(
        "bad-config",
        json!({"app": "x"}),
        json!({"proxy.istio.io/config": "concurrency: ["}),
    );
    let err = dry_run(&kube, "injected", &bad)?
        .err()
        .context("a pod with a malformed proxy.istio.io/config was admitted")?;
    ensure!(
        err.contains("proxy.istio.io/config") && err.contains("malformed YAML"),
        "{err}"
    );

    // The injected sidecar, run as its container spec says (Downward API values filled in),
    // connects with pilot-agent's node and turns ready. The xDS address comes from the pod's
    // proxy.istio.io/config.
    let runner = pod(
        "ratings-v1-0",
        json!({"app": "ratings", "version": "v1"}),
        json!({"proxy.istio.io/config": format!("discoveryAddress: 127.0.0.1:{}\nconcurrency: 1\n", server.xds_port)}),
    );
    let out = created(&kube, "injected", &runner)?;
    let sidecar = out["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "istio-proxy"))
        .context("no istio-proxy")?;
    let _proxy = run_container(sidecar, "ratings-v1-0", &ctx.scratch)?;
    capstan_e2e::wait_http_ok(ready_port, "/healthz/ready", Duration::from_secs(30)).with_context(
        || std::fs::read_to_string(ctx.scratch.join("istio-proxy.log")).unwrap_or_default(),
    )?;
    let dump = capstan_e2e::curl(
        "GET",
        &format!("http://127.0.0.1:{admin_port}/config_dump"),
        None,
        Duration::from_secs(10),
    )?
    .json()?;
    let node = dump["configs"]
        .as_array()
        .and_then(|c| c.iter().find_map(|c| c["bootstrap"]["node"].as_object()))
        .context("no bootstrap node in the config dump")?;
    ensure!(
        node["id"] == "sidecar~10.1.2.3~ratings-v1-0.injected~injected.svc.cluster.local",
        "{node:?}"
    );
    ensure!(node["cluster"] == "ratings.injected", "{node:?}");
    let meta = &node["metadata"];
    ensure!(
        meta["NAMESPACE"] == "injected" && meta["NAME"] == "ratings-v1-0",
        "{meta}"
    );
    ensure!(
        meta["INSTANCE_IPS"] == "10.1.2.3" && meta["SERVICE_ACCOUNT"] == "default",
        "{meta}"
    );
    ensure!(meta["CLUSTER_ID"] == "Kubernetes", "{meta}");
    ensure!(meta["LABELS"]["app"] == "ratings", "{meta}");
    ensure!(
        meta["LABELS"]["security.istio.io/tlsMode"] == "istio",
        "{meta}"
    );
    drop(server);
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(capstan_e2e::free_port())
}

/// A child process killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an injected container's command with its environment, resolving the Downward API
/// fields as the kubelet would for pod `pod_name` in `injected` with IP 10.1.2.3.
fn run_container(container: &Value, pod_name: &str, dir: &Path) -> Result<Running> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = strings(&container["command"]);
    ensure!(command == ["capstan-proxy"], "command {command:?}");
    // `capstan-proxy` is another package's binary, which cargo does not build for this test;
    // `capstan proxy` runs the same code with the same flags (one `Args`).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("proxy").args(strings(&container["args"]));
    for e in container["env"].as_array().context("env")? {
        let name = e["name"].as_str().context("env name")?;
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_string(),
            Some("metadata.namespace") => "injected".to_string(),
            Some("status.podIP") => "10.1.2.3".to_string(),
            Some("status.hostIP") => "127.0.0.1".to_string(),
            Some("spec.serviceAccountName") => "default".to_string(),
            Some(other) => anyhow::bail!("unexpected fieldRef {other}"),
            None => e["value"].as_str().context("env value")?.to_string(),
        };
        cmd.env(name, value);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("istio-proxy.log"))?)
        .spawn()
        .context("starting the injected proxy")?;
    Ok(Running(child))
}
