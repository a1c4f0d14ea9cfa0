//! The injection template: what the injected containers look like. Istio renders a Go template
//! from the `istio-sidecar-injector` ConfigMap; Capstan's is data (YAML read into
//! [`InjectionTemplate`], from the chart's `capstan-sidecar-injector` ConfigMap), so every
//! injected field is either a value here, a pod annotation, or fixed Istio behaviour.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Values of the injected `istio-init` and `istio-proxy` containers. Every field has Istio's
/// default; unknown fields are an error (a typo must not silently change nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectionTemplate {
    /// Image of both containers (it holds the `capstan` and `capstan-proxy` binaries).
    pub image: String,
    /// `imagePullPolicy` of both containers; unset: Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Entrypoint of the init container (`istio-init`); its first arg is the subcommand
    /// `proxy-init`.
    pub command: Vec<String>,
    /// Entrypoint of the sidecar (`istio-proxy`), followed by the proxy's flags: the proxy-only
    /// binary, whose resident memory holds no control-plane code (`capstan proxy` takes the
    /// same flags: `[capstan, proxy]` runs the all-in-one binary instead).
    pub proxy_command: Vec<String>,
    /// The xDS server (ProxyConfig `discoveryAddress`), HOST:PORT.
    pub discovery_address: String,
    /// Whether the xDS server is istiod's TLS port (15012): verified with the mounted root
    /// certificate, authenticated with the projected token.
    pub xds_tls: bool,
    /// The mesh CA (pilot-agent's `CA_ADDR`); unset: no workload certificate.
    pub ca_address: Option<String>,
    /// Name on the control plane's serving certificate.
    pub ca_server_name: String,
    /// `ISTIO_META_CLUSTER_ID`.
    pub cluster_id: String,
    /// Trust domain of the workload's SPIFFE id.
    pub trust_domain: String,
    /// The proxy's UID and GID (excluded from capture; the container runs as them).
    pub proxy_uid: u32,
    /// See `proxy_uid`.
    pub proxy_gid: u32,
    /// Proxy worker threads (ProxyConfig `concurrency`); unset: one per core.
    pub concurrency: Option<u32>,
    /// How long in-flight requests get after SIGTERM (ProxyConfig `terminationDrainDuration`),
    /// in Istio's duration form (`5s`).
    pub termination_drain_duration: Option<String>,
    /// Istio's readiness port (`/healthz/ready`); the readiness probe targets it.
    pub readiness_port: u16,
    /// Ports declared on the sidecar container, as Kubernetes `containerPort` objects.
    pub ports: Vec<Value>,
    /// `resources` of the sidecar container.
    pub resources: Value,
    /// `resources` of the init container.
    pub init_resources: Value,
    /// Arguments appended to the proxy's (after `proxyCommand` and the injected flags).
    pub extra_args: Vec<String>,
    /// Environment of the sidecar (ProxyConfig `proxyMetadata`): `ISTIO_META_*` entries become
    /// node metadata.
    pub proxy_metadata: BTreeMap<String, String>,
    /// Capture defaults, overridden per pod by the `traffic.sidecar.istio.io/*` annotations.
    pub capture: CaptureDefaults,
    /// The control-plane revision this injector serves (`istio.io/rev`), `default` for none.
    pub revision: String,
}

/// Mesh-wide capture defaults (Istio's `values.global.proxy.includeIPRanges` and friends),
/// in the annotations' syntax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CaptureDefaults {
    /// `*` or CIDRs.
    #[serde(rename = "includeOutboundIPRanges")]
    pub include_outbound_ip_ranges: String,
    /// CIDRs.
    #[serde(rename = "excludeOutboundIPRanges")]
    pub exclude_outbound_ip_ranges: String,
    /// `*` or ports.
    pub include_inbound_ports: String,
    /// Ports, added to the sidecar's own (15090, 15021, 15020).
    pub exclude_inbound_ports: String,
    /// Ports.
    pub exclude_outbound_ports: String,
}

impl Default for CaptureDefaults {
    fn default() -> Self {
        CaptureDefaults {
            include_outbound_ip_ranges: "*".into(),
            exclude_outbound_ip_ranges: String::new(),
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
        }
    }
}

impl Default for InjectionTemplate {
    fn default() -> Self {
        InjectionTemplate {
            image: "capstan:latest".into(),
            image_pull_policy: None,
            command: vec!["capstan".into()],
            proxy_command: vec!["capstan-proxy".into()],
            discovery_address: "istiod.istio-system.svc:15012".into(),
            xds_tls: true,
            ca_address: Some("istiod.istio-system.svc:15012".into()),
            ca_server_name: "istiod.istio-system.svc".into(),
            cluster_id: "Kubernetes".into(),
            trust_domain: "cluster.local".into(),
            proxy_uid: 1337,
            proxy_gid: 1337,
            concurrency: Some(2),
            termination_drain_duration: None,
            readiness_port: 15021,
            ports: vec![
                json!({"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}),
            ],
            resources: json!({
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            }),
            init_resources: json!({
                "requests": {"cpu": "10m", "memory": "40Mi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            }),
            extra_args: Vec::new(),
            proxy_metadata: BTreeMap::new(),
            capture: CaptureDefaults::default(),
            revision: "default".into(),
        }
    }
}

/// A template file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Not YAML of the template's shape; the path names the field.
    #[error("injection template: {path}: {message}")]
    Invalid {
        /// Field path (`.` for the document).
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl InjectionTemplate {
    /// Reads a template from YAML (or JSON); missing fields take Istio's defaults, and the
    /// values are checked as they would be for a pod (durations, capture lists).
    pub fn from_yaml(text: &str) -> Result<InjectionTemplate, TemplateError> {
        let template: InjectionTemplate = if text.trim().is_empty() {
            InjectionTemplate::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| TemplateError::Invalid {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?
        };
        template.check()?;
        Ok(template)
    }

    fn check(&self) -> Result<(), TemplateError> {
        let invalid = |path: &str, message: String| TemplateError::Invalid {
            path: path.to_string(),
            message,
        };
        if self.image.is_empty() {
            return Err(invalid("image", "must not be empty".into()));
        }
        if self.command.is_empty() {
            return Err(invalid("command", "must name the capstan binary".into()));
        }
        if self.proxy_command.is_empty() {
            return Err(invalid(
                "proxyCommand",
                "must name the capstan-proxy binary".into(),
            ));
        }
        if self.discovery_address.is_empty() {
            return Err(invalid("discoveryAddress", "must not be empty".into()));
        }
        if let Some(d) = &self.termination_drain_duration {
            crate::proxy_config::parse_duration(d)
                .map_err(|m| invalid("terminationDrainDuration", m))?;
        }
        crate::inject::capture_options(self, &BTreeMap::new())
            .map_err(|e| invalid("capture", e.to_string()))?;
        Ok(())
    }
}
