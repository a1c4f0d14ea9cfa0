//! The mutation of one pod: the decision, then the RFC 6902 JSONPatch that adds Istio's
//! `istio-init` and `istio-proxy` containers, their volumes, the status annotation and the
//! mesh labels, shaped by the template and the pod's annotations.

use crate::capture::{self, CaptureError, CaptureOptions, SIDECAR_INBOUND_EXCLUDES};
use crate::policy::{self, Labels, PodFacts, Skip, INIT_CONTAINER, PROXY_CONTAINER, STATUS};
use crate::proxy_config::{self, ProxyConfigOverlay};
use crate::template::InjectionTemplate;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Per-pod ProxyConfig overlay (YAML).
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// Per-pod image of the injected containers.
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
/// Capture annotations, as Istio names them.
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// See [`INCLUDE_OUTBOUND_IP_RANGES`].
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// See [`INCLUDE_OUTBOUND_IP_RANGES`].
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// See [`INCLUDE_OUTBOUND_IP_RANGES`].
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// See [`INCLUDE_OUTBOUND_IP_RANGES`].
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// See [`INCLUDE_OUTBOUND_IP_RANGES`].
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";

/// Labels the injection adds (Istio's auto-mTLS and telemetry labels).
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
/// See [`TLS_MODE`].
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// See [`TLS_MODE`].
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Where the projected token and the root certificate are mounted (pilot-agent's paths).
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";

/// A pod that cannot be injected: Istio refuses it rather than inject something wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The object is not a pod we can read.
    #[error("pod: {0}")]
    Pod(String),
    /// An annotation has a value Istio would reject.
    #[error("annotation {0}")]
    Annotation(String),
}

impl From<CaptureError> for InjectError {
    fn from(e: CaptureError) -> Self {
        InjectError::Annotation(e.to_string())
    }
}

/// What happens to a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Left as it is.
    Skipped(Skip),
    /// The JSONPatch operations to apply.
    Patch(Vec<Value>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodView {
    metadata: Meta,
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    generate_name: Option<String>,
    labels: Option<Labels>,
    annotations: Option<Labels>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct OwnerReference {
    kind: String,
    name: String,
    controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    host_network: bool,
    containers: Vec<ContainerView>,
    init_containers: Option<Vec<ContainerView>>,
    volumes: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerView {
    name: String,
    ports: Vec<Value>,
}

/// The capture of a pod: the template's defaults overridden by its `traffic.sidecar.istio.io/*`
/// annotations, with the sidecar's own ports never captured inbound.
pub fn capture_options(
    template: &InjectionTemplate,
    annotations: &Labels,
) -> Result<CaptureOptions, CaptureError> {
    let d = &template.capture;
    let get = |key: &str, default: &str| -> (String, String) {
        match annotations.get(key) {
            Some(v) => (key.to_string(), v.clone()),
            None => (format!("capture default for {key}"), default.to_string()),
        }
    };
    let (k, v) = get(INCLUDE_OUTBOUND_IP_RANGES, &d.include_outbound_ip_ranges);
    let include_outbound_ranges = capture::parse_cidr_selection(&k, &v)?;
    let (k, v) = get(EXCLUDE_OUTBOUND_IP_RANGES, &d.exclude_outbound_ip_ranges);
    let exclude_outbound_ranges = capture::parse_cidrs(&k, &v)?;
    let (k, v) = get(INCLUDE_INBOUND_PORTS, &d.include_inbound_ports);
    let include_inbound_ports = capture::parse_port_selection(&k, &v)?;
    let (k, v) = get(EXCLUDE_INBOUND_PORTS, &d.exclude_inbound_ports);
    let mut exclude_inbound_ports = SIDECAR_INBOUND_EXCLUDES.to_vec();
    for port in capture::parse_ports(&k, &v)? {
        if !exclude_inbound_ports.contains(&port) {
            exclude_inbound_ports.push(port);
        }
    }
    let (k, v) = get(EXCLUDE_OUTBOUND_PORTS, &d.exclude_outbound_ports);
    let exclude_outbound_ports = capture::parse_ports(&k, &v)?;
    let (k, v) = get(INCLUDE_OUTBOUND_PORTS, "");
    let include_outbound_ports = capture::parse_ports(&k, &v)?;
    Ok(CaptureOptions {
        proxy_port: 15001,
        inbound_port: 15006,
        proxy_uids: vec![template.proxy_uid],
        proxy_gids: vec![template.proxy_gid],
        include_outbound_ranges,
        exclude_outbound_ranges,
        include_inbound_ports,
        exclude_inbound_ports,
        exclude_outbound_ports,
        include_outbound_ports,
    })
}

/// The workload a pod belongs to, as Istio derives it (`GetDeployMetaFromPod`): a ReplicaSet
/// owner minus its pod-template hash is the Deployment; otherwise the controller's name, else
/// the pod's name (or its `generateName` prefix).
fn workload_name(meta: &Meta) -> String {
    let owner = meta
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .or(meta.owner_references.first());
    if let Some(owner) = owner {
        if owner.kind == "ReplicaSet" {
            let hash = meta
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                return deployment.to_string();
            }
        }
        return owner.name.clone();
    }
    match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => g.trim_end_matches('-').to_string(),
        _ => String::new(),
    }
}

/// Istio's canonical service name and revision labels, from the pod's labels.
fn canonical(labels: &Labels, workload: &str) -> (String, String) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let name = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload.to_string());
    let revision = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".to_string());
    (name, revision)
}

/// A JSON pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// Names of the volumes the injection adds, in order.
pub const VOLUMES: [&str; 4] = [
    "istio-envoy",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

fn volumes() -> Vec<Value> {
    vec![
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        // The token the CA and xDS server authenticate (TokenReview, audience istio-ca).
        json!({"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}},
        ]}}),
        // istiod publishes its root in every namespace under this name.
        json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}),
    ]
}

fn pod_choice_annotations(meta: &Meta) -> Labels {
    meta.annotations.clone().unwrap_or_default()
}

/// Decides and, when the pod is injected, builds the patch. `namespace` is the request's
/// (a pod being created may not carry it yet); `namespace_labels` as in [`policy::decide`].
pub fn inject(
    template: &InjectionTemplate,
    pod: &Value,
    namespace: &str,
    namespace_labels: Option<&Labels>,
) -> Result<Outcome, InjectError> {
    let view: PodView =
        serde_json::from_value(pod.clone()).map_err(|e| InjectError::Pod(e.to_string()))?;
    let mut names: Vec<&str> = view
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    names.extend(
        view.spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str()),
    );
    let facts = PodFacts {
        labels: view.metadata.labels.as_ref(),
        annotations: view.metadata.annotations.as_ref(),
        host_network: view.spec.host_network,
        container_names: names,
    };
    if let Err(skip) = policy::decide(&facts, namespace, namespace_labels, &template.revision) {
        return Ok(Outcome::Skipped(skip));
    }

    let annotations = pod_choice_annotations(&view.metadata);
    let overlay = match annotations.get(PROXY_CONFIG) {
        Some(yaml) => ProxyConfigOverlay::parse(yaml).map_err(InjectError::Annotation)?,
        None => ProxyConfigOverlay::default(),
    };
    let capture = capture_options(template, &annotations)?;
    let image = match annotations.get(PROXY_IMAGE) {
        Some(i) if i.trim().is_empty() => {
            return Err(InjectError::Annotation(format!(
                "{PROXY_IMAGE}: must not be empty"
            )))
        }
        Some(i) => i.clone(),
        None => template.image.clone(),
    };

    // Labels after injection: the pod's, plus the mesh's where the pod has none.
    let mut labels = view.metadata.labels.clone().unwrap_or_default();
    let workload = workload_name(&view.metadata);
    let (canonical_name, canonical_revision) = canonical(&labels, &workload);
    let mut added_labels = BTreeMap::new();
    added_labels.insert(TLS_MODE.to_string(), "istio".to_string());
    if !labels.contains_key(CANONICAL_NAME) {
        added_labels.insert(CANONICAL_NAME.to_string(), canonical_name);
    }
    if !labels.contains_key(CANONICAL_REVISION) {
        added_labels.insert(CANONICAL_REVISION.to_string(), canonical_revision);
    }
    labels.extend(added_labels.clone());

    let init = init_container(template, &image, &capture);
    let sidecar = sidecar_container(template, &image, &overlay, &view, &labels, &workload);

    let mut ops = Vec::new();
    match &view.spec.init_containers {
        // Istio's init container runs before the application's (their traffic is captured).
        Some(list) if !list.is_empty() => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": init}))
        }
        _ => ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [init]})),
    }
    ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": sidecar}));
    match &view.spec.volumes {
        Some(_) => {
            for v in volumes() {
                ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
            }
        }
        None => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes()})),
    }

    let status = json!({
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": VOLUMES,
        "imagePullSecrets": null,
        "revision": template.revision,
    });
    let mut new_annotations = BTreeMap::new();
    new_annotations.insert(STATUS.to_string(), status.to_string());
    let default_container = "kubectl.kubernetes.io/default-container";
    if !annotations.contains_key(default_container) {
        if let Some(first) = view.spec.containers.first() {
            new_annotations.insert(default_container.to_string(), first.name.clone());
        }
    }
    add_map_entries(
        &mut ops,
        "/metadata/annotations",
        view.metadata.annotations.is_some(),
        new_annotations,
    );
    add_map_entries(
        &mut ops,
        "/metadata/labels",
        view.metadata.labels.is_some(),
        added_labels,
    );
    Ok(Outcome::Patch(ops))
}

/// Adds entries to a string map: one `add` per key when the map exists, else the whole map.
fn add_map_entries(ops: &mut Vec<Value>, path: &str, exists: bool, entries: Labels) {
    if exists {
        for (k, v) in entries {
            ops.push(json!({"op": "add", "path": format!("{path}/{}", escape(&k)), "value": v}));
        }
    } else {
        ops.push(json!({"op": "add", "path": path, "value": entries}));
    }
}

fn with_pull_policy(mut container: Value, template: &InjectionTemplate) -> Value {
    if let (Some(policy), Some(obj)) = (&template.image_pull_policy, container.as_object_mut()) {
        obj.insert("imagePullPolicy".into(), Value::String(policy.clone()));
    }
    container
}

fn init_container(template: &InjectionTemplate, image: &str, capture: &CaptureOptions) -> Value {
    let mut args = vec!["proxy-init".to_string()];
    args.extend(capture.to_args());
    with_pull_policy(
        json!({
            "name": INIT_CONTAINER,
            "image": image,
            "command": template.command,
            "args": args,
            "resources": template.init_resources,
            // Root with NET_ADMIN/NET_RAW only, to write the pod's iptables (Istio's init).
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "privileged": false,
                "readOnlyRootFilesystem": false,
                "runAsGroup": 0,
                "runAsNonRoot": false,
                "runAsUser": 0,
            },
        }),
        template,
    )
}

fn sidecar_container(
    template: &InjectionTemplate,
    image: &str,
    overlay: &ProxyConfigOverlay,
    view: &PodView,
    labels: &Labels,
    workload: &str,
) -> Value {
    let discovery = overlay
        .discovery_address
        .clone()
        .unwrap_or_else(|| template.discovery_address.clone());
    let mut args: Vec<String> = vec![
        // Node id and metadata from the Downward API environment below, as pilot-agent.
        "--node-from-env".into(),
        "--xds-address".into(),
        discovery,
        "--readiness-address".into(),
        format!("0.0.0.0:{}", template.readiness_port),
        "--trust-domain".into(),
        template.trust_domain.clone(),
    ];
    if let Some(ca) = &template.ca_address {
        args.extend(["--ca-address".into(), ca.clone()]);
    }
    if template.ca_address.is_some() || template.xds_tls {
        args.extend([
            "--ca-root-cert".into(),
            format!("{ROOT_CERT_DIR}/root-cert.pem"),
            "--ca-token-file".into(),
            format!("{TOKEN_DIR}/istio-token"),
            "--ca-server-name".into(),
            template.ca_server_name.clone(),
        ]);
    }
    if template.xds_tls {
        args.push("--xds-tls".into());
    }
    if let Some(n) = overlay.concurrency.or(template.concurrency) {
        args.extend(["--concurrency".into(), n.to_string()]);
    }
    let drain = overlay.termination_drain_duration.or_else(|| {
        template
            .termination_drain_duration
            .as_deref()
            .and_then(|d| proxy_config::parse_duration(d).ok())
    });
    if let Some(d) = drain {
        args.extend(["--drain-time".into(), proxy_config::proxy_duration(d)]);
    }
    args.extend(template.extra_args.iter().cloned());

    let app_ports: Vec<&Value> = view.spec.containers.iter().flat_map(|c| &c.ports).collect();
    let app_containers: Vec<&str> = view
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut env_list = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        env(
            "ISTIO_META_POD_PORTS",
            serde_json::to_string(&app_ports).unwrap_or_default(),
        ),
        env("ISTIO_META_APP_CONTAINERS", app_containers.join(",")),
        env("ISTIO_META_CLUSTER_ID", template.cluster_id.clone()),
        env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"),
        env("ISTIO_META_WORKLOAD_NAME", workload),
        env("ISTIO_META_MESH_ID", template.trust_domain.clone()),
        env(
            "ISTIO_METAJSON_LABELS",
            serde_json::to_string(labels).unwrap_or_default(),
        ),
        env("TRUST_DOMAIN", template.trust_domain.clone()),
    ];
    let mut metadata = template.proxy_metadata.clone();
    metadata.extend(overlay.proxy_metadata.clone());
    for (k, v) in metadata {
        // Explicit metadata replaces what the injector derived (one value per name).
        env_list.retain(|e| e["name"] != k.as_str());
        env_list.push(env(&k, v));
    }

    let mut container = Map::new();
    container.insert("name".into(), json!(PROXY_CONTAINER));
    container.insert("image".into(), json!(image));
    container.insert("command".into(), json!(template.proxy_command));
    container.insert("args".into(), json!(args));
    container.insert("env".into(), Value::Array(env_list));
    container.insert("ports".into(), json!(template.ports));
    container.insert(
        "readinessProbe".into(),
        // Istio's probe timings on the readiness port.
        json!({
            "httpGet": {"path": "/healthz/ready", "port": template.readiness_port},
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 30,
        }),
    );
    container.insert("resources".into(), template.resources.clone());
    container.insert(
        "securityContext".into(),
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": template.proxy_gid,
            "runAsNonRoot": true,
            "runAsUser": template.proxy_uid,
        }),
    );
    container.insert(
        "volumeMounts".into(),
        json!([
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
            {"name": "istio-token", "mountPath": TOKEN_DIR},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR},
        ]),
    );
    with_pull_policy(Value::Object(container), template)
}
