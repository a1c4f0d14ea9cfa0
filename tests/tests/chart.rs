//! The Helm chart `charts/capstan` with the pinned helm:
//!
//! - its CRDs are the generated ones and every value is documented in its README;
//! - `helm lint --strict` is clean, `helm template` renders every object with flags
//!   `capstan discovery` documents and an injection template Capstan accepts, and
//!   `values.schema.json` refuses wrong types and unknown keys;
//! - `helm install` into a real API server creates every object, the ServiceAccount can do
//!   exactly what the binary does (`kubectl auth can-i` and real requests as the
//!   ServiceAccount), `helm upgrade` keeps the `caBundle` the control plane wrote, and
//!   `helm uninstall`
//!   removes everything but the CRDs (as Helm does).
//!
//! The install runs against a private API server: the webhook configurations are
//! cluster-wide and must not reach the shared test cluster.

mod chart_support;

use anyhow::{ensure, Context as _, Result};
use capstan_api::Kind;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{context, poll_until, repo_root, Infra};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn chart_dir() -> PathBuf {
    repo_root().join("charts/capstan")
}

fn chart() -> Result<String> {
    chart_dir()
        .to_str()
        .map(str::to_owned)
        .context("utf-8 chart path")
}

/// Every leaf of `value` as a dotted path; lists and empty maps are leaves.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented_in_the_readme() -> Result<()> {
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml"))?)?;
    let readme = std::fs::read_to_string(chart_dir().join("README.md"))?;
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    ensure!(paths.len() > 30, "values.yaml has only {paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("| `{p}` |")))
        .collect();
    ensure!(
        missing.is_empty(),
        "values missing from the table of charts/capstan/README.md: {missing:?}"
    );
    Ok(())
}

/// The chart's `crds/` is a symbolic link to `deploy/crds` (generated from the Rust types by
/// `CAPSTAN_UPDATE_CRDS=1 cargo test -p capstan-api --test crds`), so the two cannot drift.
#[test]
fn chart_crds_are_the_generated_ones() -> Result<()> {
    let generated = repo_root().join("deploy/crds");
    let shipped = chart_dir().join("crds");
    let link = std::fs::read_link(&shipped).with_context(|| {
        format!(
            "{} must be a symbolic link to ../../deploy/crds",
            shipped.display()
        )
    })?;
    ensure!(
        link == std::path::Path::new("../../deploy/crds"),
        "charts/capstan/crds -> {}",
        link.display()
    );
    ensure!(
        std::fs::canonicalize(&shipped)? == std::fs::canonicalize(&generated)?,
        "charts/capstan/crds does not resolve to deploy/crds"
    );
    let crds = std::fs::read_dir(&generated)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
        .count();
    ensure!(
        crds == Kind::ALL.len(),
        "deploy/crds has {crds} CRDs, not one per kind"
    );
    Ok(())
}

/// The documents of a rendered chart.
fn documents(rendered: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for text in rendered.split("\n---") {
        let value: Value = serde_yaml_ng::from_str(text)
            .with_context(|| format!("a rendered document is not YAML:\n{text}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .with_context(|| format!("no {kind} rendered"))
}

fn container_args(docs: &[Value]) -> Result<Vec<String>> {
    let deployment = find(docs, "Deployment")?;
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .context("the container has args")?;
    Ok(args
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect())
}

#[test]
fn chart_lints_renders_and_its_schema_refuses_bad_values() -> Result<()> {
    let Some(ctx) = context("chart-lint")? else {
        return Ok(());
    };
    let chart = chart()?;
    let lint = ctx.helm(&["lint", "--strict", &chart])?;
    ensure!(lint.contains("0 chart(s) failed"), "{lint}");

    let rendered = ctx.helm(&["template", "capstan", &chart, "--namespace", "mesh-a"])?;
    let docs = documents(&rendered)?;
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        ensure!(kinds.contains(kind), "{kind} not rendered; got {kinds:?}");
    }

    // Helm reads the CRDs through the link: one per kind, each the generated file.
    let with_crds = ctx.helm(&[
        "template",
        "capstan",
        &chart,
        "--include-crds",
        "--namespace",
        "mesh-a",
    ])?;
    let crds: Vec<Value> = documents(&with_crds)?
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some("CustomResourceDefinition"))
        .collect();
    ensure!(
        crds.len() == Kind::ALL.len(),
        "{} CRDs rendered",
        crds.len()
    );
    for kind in Kind::ALL {
        let name = format!("{}.{}", kind.plural(), kind.group());
        let file = repo_root().join(format!(
            "deploy/crds/{}_{}.yaml",
            kind.group(),
            kind.plural()
        ));
        let generated: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file)?)?;
        let rendered = crds
            .iter()
            .find(|d| d["metadata"]["name"].as_str() == Some(&name))
            .with_context(|| format!("CRD {name} not rendered"))?;
        ensure!(
            *rendered == generated,
            "CRD {name} differs from {}",
            file.display()
        );
    }

    // Every flag the Deployment passes is one `capstan discovery` documents.
    let flags_doc = std::fs::read_to_string(repo_root().join("docs/configuration.md"))?;
    let args = container_args(&docs)?;
    ensure!(
        args.first().map(String::as_str) == Some("discovery"),
        "{args:?}"
    );
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap_or_default();
        ensure!(
            flags_doc.contains(&format!("| `{flag}")),
            "the chart passes {arg}, which docs/configuration.md does not document"
        );
    }
    for want in [
        "--kubeconfig=in-cluster",
        "--system-namespace=mesh-a",
        "--xds-addr=127.0.0.1:15010",
        "--secure-xds-addr=0.0.0.0:15012",
        "--webhook-addr=0.0.0.0:15017",
        "--validation-webhook-config-name=istio-validator-mesh-a",
        "--injector-webhook-config-name=istio-sidecar-injector-mesh-a",
        // The names of the mesh CA's webhook certificate: istiod.mesh-a.svc.
        "--webhook-service=istiod",
        "--injection-template=/etc/capstan/injector/template.yaml",
    ] {
        ensure!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    // The webhooks serve the mesh CA's certificates: no Secret, no mounted certificate.
    ensure!(
        !args.iter().any(|a| a.starts_with("--webhook-cert-dir")),
        "{args:?}"
    );
    ensure!(
        !rendered.contains("kind: Secret") && !rendered.contains("name: webhook-cert"),
        "a webhook certificate is rendered"
    );
    let service = find(&docs, "Service")?;
    let ports: Vec<(String, u64)> = service["spec"]["ports"]
        .as_sequence()
        .context("service ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        ports
            == [
                ("https-dns".to_owned(), 15012),
                ("https-webhook".to_owned(), 443),
                ("http-monitoring".to_owned(), 15014)
            ],
        "plaintext xDS must be off by default: {ports:?}"
    );

    // The injection template is one Capstan's injector reads, pointing at this release.
    let config_map = find(&docs, "ConfigMap")?;
    let text = config_map["data"]["template.yaml"]
        .as_str()
        .context("template.yaml in the ConfigMap")?;
    let template = capstan_inject::InjectionTemplate::from_yaml(text)
        .map_err(|e| anyhow::anyhow!("the rendered template is refused: {e}\n{text}"))?;
    ensure!(
        template.discovery_address == "istiod.mesh-a.svc:15012"
            && template.ca_address.as_deref() == Some("istiod.mesh-a.svc:15012")
            && template.xds_tls
            && template.image == "capstan:0.1.0",
        "{text}"
    );

    // Neither webhook configuration carries a caBundle: the control plane writes the mesh
    // root there, and an upgrade must not overwrite it.
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let hooks = find(&docs, kind)?["webhooks"]
            .as_sequence()
            .context("webhooks")?;
        ensure!(!hooks.is_empty(), "{kind} has no webhooks");
        for hook in hooks {
            ensure!(
                hook["clientConfig"]["caBundle"].is_null(),
                "{kind} {:?} renders a caBundle",
                hook["name"]
            );
        }
    }

    // A certificate of one's own: mounted and served instead.
    let rendered = ctx.helm(&[
        "template",
        "capstan",
        &chart,
        "--namespace",
        "mesh-a",
        "--set",
        "webhook.certSecret=my-webhook-cert",
    ])?;
    let docs = documents(&rendered)?;
    let args = container_args(&docs)?;
    ensure!(
        args.iter()
            .any(|a| a == "--webhook-cert-dir=/var/run/secrets/capstan/webhook"),
        "{args:?}"
    );
    let pod = &find(&docs, "Deployment")?["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .context("volumes")?
        .iter()
        .find(|v| v["name"].as_str() == Some("webhook-cert"))
        .context("no webhook-cert volume")?;
    ensure!(
        volume["secret"]["secretName"].as_str() == Some("my-webhook-cert"),
        "{volume:?}"
    );
    let mounted = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .context("volumeMounts")?
        .iter()
        .any(|m| {
            m["name"].as_str() == Some("webhook-cert")
                && m["mountPath"].as_str() == Some("/var/run/secrets/capstan/webhook")
        });
    ensure!(mounted, "the webhook certificate is not mounted");
    ensure!(!rendered.contains("kind: Secret"), "a Secret is rendered");

    // Values change what they say.
    let rendered = ctx.helm(&[
        "template",
        "capstan",
        &chart,
        "--namespace",
        "istio-system",
        "--set",
        "xds.plaintext.enabled=true",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "replicaCount=3",
        "--set",
        "sidecarInjector.template.concurrency=4",
        "--set",
        "webhook.validation.enabled=false",
    ])?;
    let docs = documents(&rendered)?;
    let args = container_args(&docs)?;
    ensure!(
        args.iter().any(|a| a == "--xds-addr=0.0.0.0:15010"),
        "{args:?}"
    );
    ensure!(
        !args
            .iter()
            .any(|a| a.starts_with("--validation-webhook-config-name")),
        "{args:?}"
    );
    ensure!(
        args.iter()
            .any(|a| a == "--injector-webhook-config-name=istio-sidecar-injector"),
        "{args:?}"
    );
    ensure!(
        find(&docs, "Deployment")?["spec"]["replicas"].as_u64() == Some(3),
        "replicas"
    );
    ensure!(
        !rendered.contains("kind: HorizontalPodAutoscaler")
            && !rendered.contains("kind: ValidatingWebhookConfiguration"),
        "disabled objects rendered"
    );
    ensure!(
        find(&docs, "MutatingWebhookConfiguration")?["metadata"]["name"].as_str()
            == Some("istio-sidecar-injector"),
        "Istio's injector name in istio-system"
    );
    ensure!(rendered.contains("name: grpc-xds"), "grpc-xds port");
    let text = find(&docs, "ConfigMap")?["data"]["template.yaml"]
        .as_str()
        .context("template")?
        .to_owned();
    let template = capstan_inject::InjectionTemplate::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{e}\n{text}"))?;
    ensure!(template.concurrency == Some(4), "{text}");

    // values.schema.json: each of these is refused, naming the value.
    let cases: [(&str, &str); 7] = [
        ("replicaCount=abc", "/replicaCount"),
        ("bogus=1", "bogus"),
        ("image.bogus=1", "bogus"),
        (
            "webhook.validation.failurePolicy=Maybe",
            "/webhook/validation/failurePolicy",
        ),
        ("drainDuration=5 seconds", "/drainDuration"),
        ("sidecarInjector.template.imagee=x", "imagee"),
        ("podAntiAffinity=always", "/podAntiAffinity"),
    ];
    for (set, named) in cases {
        let out = ctx
            .infra
            .run_tool("helm", &["template", "capstan", &chart, "--set", set], None);
        let err = match out {
            Ok(stdout) => anyhow::bail!("--set {set} was accepted:\n{stdout}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(named),
            "--set {set}: unexpected error: {err}"
        );
    }
    Ok(())
}

/// `kubectl auth can-i VERB RESOURCE [-n NS | -A]` as the chart's ServiceAccount.
fn can_i(
    infra: &Infra,
    kube: &PrivateKube,
    sa: &str,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
) -> Result<bool> {
    // `<resource>#status`: the status subresource.
    let (resource, sub) = match resource.strip_suffix("#status") {
        Some(r) => (r, true),
        None => (resource, false),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", sa];
    if sub {
        args.extend(["--subresource", "status"]);
    }
    match ns {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = chart_support::kubectl_raw(infra, kube, &args, None)?;
    match out.stdout.trim() {
        "yes" => Ok(true),
        s if s.starts_with("no") => Ok(false),
        other => anyhow::bail!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            out.stderr
        ),
    }
}

#[test]
fn helm_install_grants_what_the_binary_needs_and_uninstall_removes_it() -> Result<()> {
    let Some(ctx) = context("chart-install")? else {
        return Ok(());
    };
    let infra = ctx.infra;
    let kube = PrivateKube::start("chart-install", &[])?;
    let k = |args: &[&str]| chart_support::kubectl(infra, &kube, args, None);
    let chart = chart()?;
    let ns = format!("capstan-{:x}", std::process::id());
    let release = "capstan-chart-test";
    let other = "workloads";
    k(&["create", "namespace", other])?;

    let out = chart_support::helm(
        infra,
        &kube,
        &[
            "install",
            release,
            &chart,
            "-n",
            &ns,
            "--create-namespace",
            "--timeout",
            "90s",
        ],
    )?;
    ensure!(out.contains("STATUS: deployed"), "{out}");

    let namespaced = [
        "deployment/capstan",
        "service/istiod",
        "serviceaccount/capstan",
        "role/capstan",
        "rolebinding/capstan",
        "configmap/capstan-sidecar-injector",
        "poddisruptionbudget/capstan",
        "horizontalpodautoscaler/capstan",
    ];
    let cluster = [
        format!("clusterrole/capstan-{ns}"),
        format!("clusterrolebinding/capstan-{ns}"),
        format!("validatingwebhookconfiguration/istio-validator-{ns}"),
        format!("mutatingwebhookconfiguration/istio-sidecar-injector-{ns}"),
    ];
    let crds: Vec<String> = Kind::ALL
        .iter()
        .map(|kind| format!("crd/{}.{}", kind.plural(), kind.group()))
        .collect();
    for object in namespaced {
        k(&["-n", &ns, "get", object, "-o", "name"])?;
    }
    for object in cluster.iter().chain(&crds) {
        k(&["get", object, "-o", "name"])?;
    }
    let ports = k(&[
        "-n",
        &ns,
        "get",
        "service/istiod",
        "-o",
        "jsonpath={range .spec.ports[*]}{.name}:{.port}>{.targetPort} {end}",
    ])?;
    ensure!(
        ports.trim() == "https-dns:15012>15012 https-webhook:443>15017 http-monitoring:15014>15014",
        "{ports}"
    );
    ensure!(
        k(&["-n", &ns, "get", "secrets", "-o", "name"])?
            .lines()
            .all(|s| s.starts_with("secret/sh.helm.release")),
        "the chart created a Secret"
    );
    // One line per webhook: its caBundle, empty until the control plane writes one.
    let bundles = |kind: &str| {
        k(&[
            "get",
            kind,
            "-o",
            "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}-{\"\\n\"}{end}",
        ])
    };
    for kind in &cluster[2..] {
        let got = bundles(kind)?;
        ensure!(
            !got.is_empty() && got.lines().all(|b| b == "-"),
            "{kind}: a caBundle is installed: {got}"
        );
    }

    // The ServiceAccount's permissions: each call of the binary, and nothing around it.
    let sa = format!("system:serviceaccount:{ns}:capstan");
    let validator = format!("validatingwebhookconfigurations/istio-validator-{ns}");
    let injector = format!("mutatingwebhookconfigurations/istio-sidecar-injector-{ns}");
    let mut allowed: Vec<(&str, String, Option<&str>)> = Vec::new();
    for resource in [
        "services",
        "pods",
        "nodes",
        "namespaces",
        "endpointslices.discovery.k8s.io",
    ] {
        for verb in ["list", "watch"] {
            allowed.push((verb, resource.to_owned(), None));
        }
    }
    for kind in Kind::ALL {
        for verb in ["list", "watch"] {
            allowed.push((verb, format!("{}.{}", kind.plural(), kind.group()), None));
        }
    }
    allowed.extend([
        (
            "create",
            "tokenreviews.authentication.k8s.io".to_owned(),
            None,
        ),
        (
            "create",
            "leases.coordination.k8s.io".to_owned(),
            Some(ns.as_str()),
        ),
        (
            "patch",
            "virtualservices.networking.istio.io#status".to_owned(),
            Some(other),
        ),
        (
            "patch",
            "authorizationpolicies.security.istio.io#status".to_owned(),
            Some(other),
        ),
        (
            "get",
            "leases.coordination.k8s.io/capstan-discovery-leader".to_owned(),
            Some(ns.as_str()),
        ),
        (
            "update",
            "leases.coordination.k8s.io/capstan-discovery-leader".to_owned(),
            Some(ns.as_str()),
        ),
        ("list", "configmaps/istio-ca-root-cert".to_owned(), None),
        ("watch", "configmaps/istio-ca-root-cert".to_owned(), None),
        (
            "patch",
            "configmaps/istio-ca-root-cert".to_owned(),
            Some(other),
        ),
        ("create", "configmaps".to_owned(), Some(other)),
        ("list", validator.clone(), None),
        ("watch", validator.clone(), None),
        ("update", validator.clone(), None),
        ("get", validator.clone(), None),
        ("list", injector.clone(), None),
        ("watch", injector.clone(), None),
        ("update", injector.clone(), None),
        (
            "create",
            "virtualservices.networking.istio.io".to_owned(),
            Some(ns.as_str()),
        ),
        (
            "get",
            "secrets/istio-ca-secret".to_owned(),
            Some(ns.as_str()),
        ),
        ("create", "secrets".to_owned(), Some(ns.as_str())),
        ("list", "secrets".to_owned(), Some(other)),
        ("watch", "secrets".to_owned(), None),
    ]);
    let denied: Vec<(&str, String, Option<&str>)> = vec![
        ("get", "secrets/istio-ca-secret".to_owned(), Some(other)),
        ("create", "secrets".to_owned(), Some(other)),
        (
            "get",
            "secrets/capstan-webhook-cert".to_owned(),
            Some(ns.as_str()),
        ),
        (
            "update",
            "secrets/istio-ca-secret".to_owned(),
            Some(ns.as_str()),
        ),
        ("list", "configmaps".to_owned(), None),
        (
            "patch",
            "configmaps/kube-root-ca.crt".to_owned(),
            Some(other),
        ),
        (
            "delete",
            "configmaps/istio-ca-root-cert".to_owned(),
            Some(other),
        ),
        ("list", "validatingwebhookconfigurations".to_owned(), None),
        (
            "update",
            "validatingwebhookconfigurations/someone-else".to_owned(),
            None,
        ),
        ("update", "mutatingwebhookconfigurations".to_owned(), None),
        (
            "update",
            "mutatingwebhookconfigurations/someone-else".to_owned(),
            None,
        ),
        ("delete", injector.clone(), None),
        (
            "create",
            "virtualservices.networking.istio.io".to_owned(),
            Some(other),
        ),
        ("delete", "pods".to_owned(), Some(other)),
        ("get", "services".to_owned(), Some(other)),
        (
            "create",
            "leases.coordination.k8s.io".to_owned(),
            Some(other),
        ),
        (
            "update",
            "leases.coordination.k8s.io/someone-elses".to_owned(),
            Some(ns.as_str()),
        ),
        (
            "patch",
            "virtualservices.networking.istio.io".to_owned(),
            Some(other),
        ),
    ];
    let mut wrong = Vec::new();
    for (want, cases) in [(true, &allowed), (false, &denied)] {
        for (verb, resource, namespace) in cases.iter() {
            if can_i(infra, &kube, &sa, verb, resource, *namespace)? != want {
                wrong.push(format!(
                    "{verb} {resource} in {namespace:?}: expected allowed={want}"
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "RBAC of the chart's ServiceAccount:\n{}",
        wrong.join("\n")
    );

    // Real requests shaped as the binary sends them: watches selected by name are
    // authorized by resourceNames, and a server-side apply creates the ConfigMap.
    let as_sa = ["--as", sa.as_str()];
    let field = format!("metadata.name=istio-validator-{ns}");
    k(&[
        &as_sa[..],
        &[
            "get",
            "validatingwebhookconfigurations",
            "--field-selector",
            &field,
            "-o",
            "name",
        ],
    ]
    .concat())?;
    k(&[
        &as_sa[..],
        &[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.name=istio-ca-root-cert",
        ],
    ]
    .concat())?;
    let root_cert = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio-ca-root-cert, namespace: {other}}}\ndata: {{root-cert.pem: test}}\n"
    );
    chart_support::kubectl(
        infra,
        &kube,
        &[
            &as_sa[..],
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "capstan-discovery",
                "-f",
                "-",
            ],
        ]
        .concat(),
        Some(&root_cert),
    )?;
    k(&["-n", other, "get", "configmap/istio-ca-root-cert"])?;
    let refused = chart_support::kubectl_raw(
        infra,
        &kube,
        &[&as_sa[..], &["apply", "--server-side", "-f", "-"]].concat(),
        Some(&root_cert.replace("istio-ca-root-cert", "not-ours")),
    )?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("forbidden"),
        "a ConfigMap of another name was written: {refused:?}"
    );
    k(&[
        &as_sa[..],
        &[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "istio-ca-secret",
            "--from-literal=ca-cert.pem=x",
        ],
    ]
    .concat())?;
    k(&[
        &as_sa[..],
        &["-n", &ns, "get", "secret/istio-ca-secret", "-o", "name"],
    ]
    .concat())?;

    // The caBundles as the control plane writes them (every webhook); an upgrade keeps them,
    // since no rendered manifest sets one.
    let ca = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnRlc3QKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    for kind in &cluster[2..] {
        let count = bundles(kind)?.lines().count();
        let ops: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    r#"{{"op":"add","path":"/webhooks/{i}/clientConfig/caBundle","value":"{ca}"}}"#
                )
            })
            .collect();
        k(&[
            "patch",
            kind,
            "--type",
            "json",
            "-p",
            &format!("[{}]", ops.join(",")),
        ])?;
        ensure!(
            bundles(kind)?.lines().all(|b| b == format!("{ca}-")),
            "{kind}: caBundle not written"
        );
    }
    chart_support::helm(
        infra,
        &kube,
        &[
            "upgrade",
            release,
            &chart,
            "-n",
            &ns,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--timeout",
            "90s",
        ],
    )?;
    for kind in &cluster[2..] {
        let got = bundles(kind)?;
        ensure!(
            got.lines().all(|b| b == format!("{ca}-")),
            "{kind}: caBundle changed on upgrade: {got}"
        );
    }

    let out = chart_support::helm(
        infra,
        &kube,
        &["uninstall", release, "-n", &ns, "--timeout", "90s"],
    )?;
    ensure!(out.contains("uninstalled"), "{out}");
    let gone = |object: &str, namespace: Option<&str>| -> Result<Option<()>> {
        let mut args = vec!["get", object, "--ignore-not-found", "-o", "name"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        Ok(k(&args)?.trim().is_empty().then_some(()))
    };
    for object in namespaced {
        poll_until(
            &format!("{object} deleted"),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || gone(object, Some(&ns)),
        )?;
    }
    for object in &cluster {
        poll_until(
            &format!("{object} deleted"),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || gone(object, None),
        )?;
    }
    // Helm never deletes the CRDs of `crds/` (objects of those kinds would go with them).
    for crd in &crds {
        k(&["get", crd, "-o", "name"])?;
    }
    Ok(())
}

/// The image the chart runs: the Dockerfile's runtime user is the chart's `runAsUser`, the
/// binaries are `capstan` and `capstan-proxy` on PATH (the chart's and the injection template's
/// `command` and `proxyCommand`), and the runtime stage has iptables for `capstan proxy-init`. (No container daemon or registry is
/// reachable here to build it; docs/operations.md.)
#[test]
fn the_dockerfile_builds_what_the_chart_runs() -> Result<()> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    ensure!(
        stages.len() == 2,
        "a build and a runtime stage: {}",
        stages.len()
    );
    let (build, runtime) = (stages[0], stages[1]);
    ensure!(
        build.contains("cargo build --profile dist -p capstan -p capstan-proxy --locked")
            && build.contains("target/dist/capstan /out/capstan")
            && build.contains("target/dist/capstan-proxy /out/capstan-proxy"),
        "the build stage: {build}"
    );
    // The sidecar's binary is built profile-guided unless `--build-arg PGO=0`, by the script
    // the benchmarks measure (bench/pgo_proxy.sh), which the image's context must carry.
    ensure!(
        build.contains("ARG PGO=1") && build.contains("bench/pgo_proxy.sh"),
        "the build stage builds capstan-proxy profile-guided: {build}"
    );
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore"))?;
    for script in [
        "pgo_proxy.sh",
        "load_tools.sh",
        "proxy_profile.sh",
        "proxy_mesh.sh",
        "proxy_mtls.sh",
    ] {
        ensure!(
            repo_root().join("bench").join(script).is_file()
                && ignore
                    .lines()
                    .any(|l| l.trim() == format!("!bench/{script}")),
            "bench/{script} exists and is in the image's build context"
        );
    }
    ensure!(
        runtime.contains("apt-get install") && runtime.contains(" iptables "),
        "the runtime stage installs no iptables: {runtime}"
    );
    ensure!(
        runtime.contains("COPY --from=build /out/capstan /out/capstan-proxy /usr/local/bin/")
            && runtime.contains("ENTRYPOINT [\"capstan\"]"),
        "capstan on PATH: {runtime}"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .context("the runtime stage sets USER")?;
    let (uid, gid) = user.trim().split_once(':').context("USER uid:gid")?;
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml"))?)?;
    let pod = &values["podSecurityContext"];
    ensure!(
        pod["runAsUser"].as_u64().map(|u| u.to_string()).as_deref() == Some(uid)
            && pod["runAsGroup"].as_u64().map(|g| g.to_string()).as_deref() == Some(gid)
            && uid != "0",
        "Dockerfile USER {user} vs the chart's podSecurityContext {pod:?}"
    );
    for excluded in ["target", ".git"] {
        ensure!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore keeps {excluded}"
        );
    }
    Ok(())
}
