//! Injection: the decision table, every honoured annotation, idempotency, and the patch applied
//! with an independent RFC 6902 implementation (the `json-patch` crate).

use capstan_inject::inject::{
    self, EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS, INCLUDE_OUTBOUND_IP_RANGES, PROXY_CONFIG, PROXY_IMAGE,
};
use capstan_inject::policy::{Labels, Skip};
use capstan_inject::{InjectionTemplate, Outcome};
use serde_json::{json, Value};

/// A pod under construction.
struct PodBuilder(Value);

fn pod() -> PodBuilder {
    PodBuilder(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-6f9d5c7b8-",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "6f9d5c7b8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "reviews-v1-6f9d5c7b8", "uid": "u1", "controller": true}],
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [{"name": "reviews", "image": "reviews:v1",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}]}],
        },
    }))
}

impl PodBuilder {
    fn annotation(mut self, k: &str, v: &str) -> Self {
        let meta = &mut self.0["metadata"];
        if meta.get("annotations").is_none() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][k] = json!(v);
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    fn no_labels(mut self) -> Self {
        self.0["metadata"]
            .as_object_mut()
            .expect("metadata is an object")
            .remove("labels");
        self
    }
    fn spec(mut self, k: &str, v: Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    fn build(self) -> Value {
        self.0
    }
}

fn ns(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn enabled() -> Labels {
    ns(&[("istio-injection", "enabled")])
}

/// Injects and applies the patch; `None` when skipped.
fn injected_with(template: &InjectionTemplate, pod: &Value, labels: &Labels) -> Option<Value> {
    match inject::inject(template, pod, "bookinfo", Some(labels)).expect("injectable") {
        Outcome::Skipped(_) => None,
        Outcome::Patch(ops) => {
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).expect("the patch is RFC 6902");
            let mut doc = pod.clone();
            json_patch::patch(&mut doc, &patch).expect("the patch applies cleanly");
            Some(doc)
        }
    }
}

fn injected(pod: &Value) -> Value {
    injected_with(&InjectionTemplate::default(), pod, &enabled()).expect("injected")
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {pod:#}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The value following `flag` in the container's args.
fn flag(c: &Value, flag: &str) -> Option<String> {
    let a = args(c);
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1).cloned())
}

fn env(c: &Value, name: &str) -> Option<Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

#[test]
fn decision_table() {
    let t = InjectionTemplate::default();
    let skip = |p: &Value, labels: &Labels| match inject::inject(&t, p, "bookinfo", Some(labels))
        .expect("valid")
    {
        Outcome::Skipped(s) => Some(s),
        Outcome::Patch(_) => None,
    };
    let cases: Vec<(&str, Value, Labels, Option<Skip>)> = vec![
        ("istio label", pod().build(), enabled(), None),
        (
            "capstan label",
            pod().build(),
            ns(&[("capstan-injection", "enabled")]),
            None,
        ),
        (
            "namespace not labelled",
            pod().build(),
            ns(&[]),
            Some(Skip::NotEnabled),
        ),
        (
            "pod label true in unlabelled namespace",
            pod().label("sidecar.istio.io/inject", "true").build(),
            ns(&[]),
            None,
        ),
        (
            "pod annotation true in unlabelled namespace: the object selector reads labels",
            pod().annotation("sidecar.istio.io/inject", "true").build(),
            ns(&[]),
            Some(Skip::NotEnabled),
        ),
        (
            "disabled namespace wins over the pod",
            pod().label("sidecar.istio.io/inject", "true").build(),
            ns(&[("istio-injection", "disabled")]),
            Some(Skip::NamespaceDisabled),
        ),
        (
            "annotation false",
            pod().annotation("sidecar.istio.io/inject", "false").build(),
            enabled(),
            Some(Skip::OptedOut),
        ),
        (
            "label false",
            pod().label("sidecar.istio.io/inject", "false").build(),
            enabled(),
            Some(Skip::OptedOut),
        ),
        (
            "label wins over annotation",
            pod()
                .label("sidecar.istio.io/inject", "true")
                .annotation("sidecar.istio.io/inject", "false")
                .build(),
            enabled(),
            None,
        ),
        (
            "host network",
            pod().spec("hostNetwork", json!(true)).build(),
            enabled(),
            Some(Skip::HostNetwork),
        ),
        (
            "already has istio-proxy",
            pod()
                .spec(
                    "containers",
                    json!([{"name": "app"}, {"name": "istio-proxy"}]),
                )
                .build(),
            enabled(),
            Some(Skip::AlreadyInjected),
        ),
        (
            "Istio's status annotation",
            pod().annotation("sidecar.istio.io/status", "{}").build(),
            enabled(),
            Some(Skip::AlreadyInjected),
        ),
        (
            "our revision",
            pod().build(),
            ns(&[("istio.io/rev", "default")]),
            None,
        ),
        (
            "another revision",
            pod().build(),
            ns(&[("istio.io/rev", "canary")]),
            Some(Skip::OtherRevision("canary".into())),
        ),
    ];
    for (name, p, labels, want) in cases {
        assert_eq!(skip(&p, &labels), want, "{name}");
    }
    // System namespaces are never injected.
    let out = inject::inject(&t, &pod().build(), "kube-system", Some(&enabled())).expect("valid");
    assert_eq!(out, Outcome::Skipped(Skip::IgnoredNamespace));
    // Without namespace labels the webhook's selectors decided: inject unless opted out.
    let out = inject::inject(&t, &pod().build(), "bookinfo", None).expect("valid");
    assert!(matches!(out, Outcome::Patch(_)));
    let out = inject::inject(
        &t,
        &pod().annotation("sidecar.istio.io/inject", "no").build(),
        "bookinfo",
        None,
    )
    .expect("valid");
    assert_eq!(out, Outcome::Skipped(Skip::OptedOut));
}

#[test]
fn injected_pod_has_istios_shape() {
    let p = injected(&pod().build());
    // App container untouched and first; sidecar appended.
    assert_eq!(p["spec"]["containers"][0]["name"], "reviews");
    let proxy = container(&p, "containers", "istio-proxy");
    assert_eq!(proxy["image"], "capstan:latest");
    // The proxy-only binary, its flags first (no subcommand).
    assert_eq!(proxy["command"], json!(["capstan-proxy"]));
    assert_eq!(args(proxy)[0], "--node-from-env");
    assert!(args(proxy).contains(&"--node-from-env".to_string()));
    assert!(args(proxy).contains(&"--xds-tls".to_string()));
    assert_eq!(
        flag(proxy, "--xds-address").as_deref(),
        Some("istiod.istio-system.svc:15012")
    );
    assert_eq!(
        flag(proxy, "--readiness-address").as_deref(),
        Some("0.0.0.0:15021")
    );
    assert_eq!(
        flag(proxy, "--ca-token-file").as_deref(),
        Some("/var/run/secrets/tokens/istio-token")
    );
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["runAsGroup"], 1337);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    assert_eq!(proxy["ports"][0]["containerPort"], 15090);
    // The node comes from the Downward API, as pilot-agent's.
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("INSTANCE_IP", "status.podIP"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        let e = env(proxy, name).unwrap_or_else(|| panic!("env {name}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], path, "{name}");
    }
    assert_eq!(
        env(proxy, "ISTIO_META_CLUSTER_ID").expect("cluster id")["value"],
        "Kubernetes"
    );
    assert_eq!(
        env(proxy, "ISTIO_META_WORKLOAD_NAME").expect("workload")["value"],
        "reviews-v1"
    );
    let labels: Value = serde_json::from_str(
        env(proxy, "ISTIO_METAJSON_LABELS").expect("labels")["value"]
            .as_str()
            .expect("string"),
    )
    .expect("JSON labels");
    assert_eq!(labels["app"], "reviews");
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(
        env(proxy, "ISTIO_META_POD_PORTS").expect("ports")["value"],
        r#"[{"containerPort":9080,"protocol":"TCP"}]"#
    );

    let init = container(&p, "initContainers", "istio-init");
    assert_eq!(
        args(init),
        [
            "proxy-init",
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-g",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020"
        ]
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(init["command"], json!(["capstan"]));

    // Volumes: the root certificate ConfigMap and the istio-ca token.
    let vols = p["spec"]["volumes"].as_array().expect("volumes");
    let vol = |n: &str| vols.iter().find(|v| v["name"] == n).expect(n).clone();
    assert_eq!(
        vol("istiod-ca-cert")["configMap"]["name"],
        "istio-ca-root-cert"
    );
    let token = &vol("istio-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "istio-ca");
    assert_eq!(token["path"], "istio-token");

    // Labels and the status annotation.
    let labels = &p["metadata"]["labels"];
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
    let status: Value = serde_json::from_str(
        p["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .expect("status annotation"),
    )
    .expect("status is JSON");
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert_eq!(status["initContainers"], json!(["istio-init"]));
    assert_eq!(
        p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "reviews"
    );
}

#[test]
fn injection_is_idempotent() {
    let t = InjectionTemplate::default();
    let once = injected(&pod().build());
    let again = inject::inject(&t, &once, "bookinfo", Some(&enabled())).expect("valid");
    assert_eq!(again, Outcome::Skipped(Skip::AlreadyInjected));
    // Through the AdmissionReview too: no patch at all.
    let body = review_body(&once);
    let answer = capstan_inject::review(&t, &body).expect("a review");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer:#}");
}

#[test]
fn patch_applies_to_pods_with_and_without_existing_lists() {
    // Existing init containers, volumes and annotations are kept; ours go first / last.
    let p = pod()
        .spec("initContainers", json!([{"name": "migrate", "image": "m"}]))
        .spec("volumes", json!([{"name": "data", "emptyDir": {}}]))
        .annotation("example.com/a~b/c", "kept")
        .build();
    let out = injected(&p);
    let inits: Vec<&str> = out["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(inits, ["istio-init", "migrate"]);
    assert_eq!(out["spec"]["volumes"][0]["name"], "data");
    assert_eq!(out["spec"]["volumes"].as_array().map(Vec::len), Some(5));
    assert_eq!(out["metadata"]["annotations"]["example.com/a~b/c"], "kept");
    // No labels at all: the map is created; the canonical name falls back to the workload.
    let out = injected(&pod().no_labels().build());
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-name"],
        "reviews-v1-6f9d5c7b8"
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-revision"],
        "latest"
    );
    // User-set canonical labels are kept.
    let out = injected(
        &pod()
            .label("service.istio.io/canonical-name", "mine")
            .build(),
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-name"],
        "mine"
    );
}

#[test]
fn capture_annotations() {
    let init_args = |k: &str, v: &str| {
        let p = injected(&pod().annotation(k, v).build());
        let init = container(&p, "initContainers", "istio-init");
        (args(init), |a: &[String], f: &str| {
            a.iter()
                .position(|x| x == f)
                .and_then(|i| a.get(i + 1).cloned())
        })
    };
    let cases = [
        (
            INCLUDE_OUTBOUND_IP_RANGES,
            "10.96.0.0/12, 10.1.2.3",
            "-i",
            Some("10.96.0.0/12,10.1.2.3/32"),
        ),
        (
            EXCLUDE_OUTBOUND_IP_RANGES,
            "169.254.169.254/32",
            "-x",
            Some("169.254.169.254/32"),
        ),
        (INCLUDE_INBOUND_PORTS, "9080,9443", "-b", Some("9080,9443")),
        (INCLUDE_INBOUND_PORTS, "", "-b", Some("")),
        (
            EXCLUDE_INBOUND_PORTS,
            "8081",
            "-d",
            Some("15090,15021,15020,8081"),
        ),
        (EXCLUDE_OUTBOUND_PORTS, "3306,5432", "-o", Some("3306,5432")),
        (
            "traffic.sidecar.istio.io/includeOutboundPorts",
            "443",
            "-q",
            Some("443"),
        ),
    ];
    for (annotation, value, f, want) in cases {
        let (a, get) = init_args(annotation, value);
        assert_eq!(get(&a, f).as_deref(), want, "{annotation}={value:?}");
    }
    // Invalid values refuse the pod with the annotation named.
    let t = InjectionTemplate::default();
    for (annotation, value) in [
        (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
        (EXCLUDE_OUTBOUND_IP_RANGES, "not-an-ip"),
        (INCLUDE_INBOUND_PORTS, "http"),
        (EXCLUDE_OUTBOUND_PORTS, "70000"),
    ] {
        let err = inject::inject(
            &t,
            &pod().annotation(annotation, value).build(),
            "bookinfo",
            Some(&enabled()),
        )
        .expect_err(annotation);
        assert!(err.to_string().contains(annotation), "{err}");
    }
}

#[test]
fn proxy_image_and_proxy_config() {
    let p = injected(
        &pod()
            .annotation(PROXY_IMAGE, "registry.example/capstan:canary")
            .annotation(
                PROXY_CONFIG,
                "discoveryAddress: capstan.mesh.svc:15010\nconcurrency: 4\nterminationDrainDuration: 1.5s\ndrainDuration: 45s\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\nholdApplicationUntilProxyStarts: true\nsomeFutureField: {a: 1}\n",
            )
            .build(),
    );
    let proxy = container(&p, "containers", "istio-proxy");
    let init = container(&p, "initContainers", "istio-init");
    assert_eq!(proxy["image"], "registry.example/capstan:canary");
    assert_eq!(init["image"], "registry.example/capstan:canary");
    assert_eq!(
        flag(proxy, "--xds-address").as_deref(),
        Some("capstan.mesh.svc:15010")
    );
    assert_eq!(flag(proxy, "--concurrency").as_deref(), Some("4"));
    assert_eq!(flag(proxy, "--drain-time").as_deref(), Some("1500ms"));
    assert_eq!(
        env(proxy, "ISTIO_META_DNS_CAPTURE").expect("proxyMetadata env")["value"],
        "true"
    );

    // Malformed or mistyped ProxyConfig refuses the pod.
    let t = InjectionTemplate::default();
    for (yaml, needle) in [
        ("concurrency: [", "malformed YAML"),
        ("concurrency: lots", "concurrency"),
        (
            "terminationDrainDuration: 5 minutes",
            "terminationDrainDuration",
        ),
        ("drainDuration: 10", "drainDuration"),
        ("discoveryAddress: {}", "discoveryAddress"),
        ("- a list", "expected a mapping"),
    ] {
        let err = inject::inject(
            &t,
            &pod().annotation(PROXY_CONFIG, yaml).build(),
            "bookinfo",
            Some(&enabled()),
        )
        .expect_err(yaml);
        let msg = err.to_string();
        assert!(
            msg.contains("proxy.istio.io/config") && msg.contains(needle),
            "{yaml}: {msg}"
        );
    }
    let err = inject::inject(
        &t,
        &pod().annotation(PROXY_IMAGE, " ").build(),
        "bookinfo",
        Some(&enabled()),
    )
    .expect_err("empty image");
    assert!(err.to_string().contains(PROXY_IMAGE), "{err}");
}

#[test]
fn template_from_yaml() {
    let t = InjectionTemplate::from_yaml(
        r#"
image: example.org/capstan:1.0
imagePullPolicy: Always
discoveryAddress: capstan.capstan-system.svc:15010
xdsTls: false
caAddress: null
concurrency: null
terminationDrainDuration: 10s
readinessPort: 15021
ports: []
command: [/usr/local/bin/capstan]
proxyCommand: [/usr/local/bin/capstan, proxy]
extraArgs: ["--workload-cert-ttl", "12h"]
proxyMetadata: {ISTIO_META_MESH_ID: mesh1}
capture:
  excludeOutboundIPRanges: 169.254.169.254/32
  excludeInboundPorts: "22"
"#,
    )
    .expect("a valid template");
    let p = injected_with(&t, &pod().build(), &enabled()).expect("injected");
    let proxy = container(&p, "containers", "istio-proxy");
    assert_eq!(proxy["image"], "example.org/capstan:1.0");
    assert_eq!(proxy["imagePullPolicy"], "Always");
    let a = args(proxy);
    assert!(!a.contains(&"--xds-tls".to_string()), "{a:?}");
    assert!(!a.contains(&"--ca-address".to_string()), "{a:?}");
    assert!(!a.contains(&"--concurrency".to_string()), "{a:?}");
    assert_eq!(flag(proxy, "--drain-time").as_deref(), Some("10000ms"));
    assert!(a.ends_with(&["--workload-cert-ttl".to_string(), "12h".to_string()]));
    // `capstan proxy` takes the same flags as `capstan-proxy`.
    assert_eq!(proxy["command"], json!(["/usr/local/bin/capstan", "proxy"]));
    assert_eq!(a[0], "--node-from-env");
    // The template's proxyMetadata replaces the derived value.
    let mesh_ids: Vec<&Value> = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| e["name"] == "ISTIO_META_MESH_ID")
        .collect();
    assert_eq!(
        mesh_ids,
        [&json!({"name": "ISTIO_META_MESH_ID", "value": "mesh1"})]
    );
    let init = container(&p, "initContainers", "istio-init");
    assert_eq!(init["command"], json!(["/usr/local/bin/capstan"]));
    assert_eq!(args(init)[0], "proxy-init");
    assert_eq!(flag(init, "-x").as_deref(), Some("169.254.169.254/32"));
    assert_eq!(flag(init, "-d").as_deref(), Some("15090,15021,15020,22"));
    // An annotation replaces the template's value.
    let p = injected_with(
        &t,
        &pod().annotation(EXCLUDE_OUTBOUND_IP_RANGES, "").build(),
        &enabled(),
    )
    .expect("injected");
    assert_eq!(
        flag(container(&p, "initContainers", "istio-init"), "-x").as_deref(),
        Some("")
    );

    // Empty text: Istio's defaults. Errors name the field.
    assert_eq!(
        InjectionTemplate::from_yaml("").expect("defaults"),
        InjectionTemplate::default()
    );
    for (yaml, needle) in [
        ("imge: x", "imge"),
        ("image: \"\"", "image"),
        ("proxyCommand: []", "proxyCommand"),
        ("proxyUid: root", "proxyUid"),
        ("terminationDrainDuration: soon", "terminationDrainDuration"),
        ("capture: {includeInboundPorts: http}", "capture"),
    ] {
        let err = InjectionTemplate::from_yaml(yaml)
            .expect_err(yaml)
            .to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
}

fn review_body(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0b2891-916f-4ed6-b7cd-27bff1815a8c",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo",
            "operation": "CREATE",
            "object": pod,
            "dryRun": true,
        },
    }))
    .expect("serializable")
}

#[test]
fn admission_review() {
    use base64::Engine as _;
    let t = InjectionTemplate::default();
    let original = pod().build();
    let answer = capstan_inject::review(&t, &review_body(&original)).expect("a review");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let r = &answer["response"];
    assert_eq!(r["uid"], "7f0b2891-916f-4ed6-b7cd-27bff1815a8c");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSONPatch");
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &patch).expect("applies");
    assert!(container(&doc, "containers", "istio-proxy").is_object());

    // A bad annotation: refused, with the reason.
    let bad = pod().annotation(PROXY_CONFIG, "concurrency: [").build();
    let answer = capstan_inject::review(&t, &review_body(&bad)).expect("a review");
    assert_eq!(answer["response"]["allowed"], false);
    assert!(answer["response"]["status"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("proxy.istio.io/config")));

    // Not a pod, or not a create: untouched.
    let mut other: Value = serde_json::from_slice(&review_body(&original)).expect("JSON");
    other["request"]["operation"] = json!("UPDATE");
    let answer =
        capstan_inject::review(&t, &serde_json::to_vec(&other).expect("JSON")).expect("a review");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    // Not an AdmissionReview: an error for the server's 400.
    for body in [
        &b"not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        assert!(capstan_inject::review(&t, body).is_err());
    }
}
