//! Whether a pod gets a sidecar, as Istio decides it.
//!
//! Istio's documented logic ("Controlling the injection policy"): a `disabled` namespace label
//! or a pod `sidecar.istio.io/inject: "false"` wins; otherwise an `enabled` namespace label or a
//! pod `sidecar.istio.io/inject: "true"` label injects; with neither, nothing is injected
//! (`enableNamespacesByDefault` is off by default). Istio implements the namespace half with the
//! webhook configuration's selectors (the AdmissionReview carries no namespace labels) and the
//! pod half in `injectRequired` (host network, ignored namespaces, the pod's label or
//! annotation). Here both halves are one function: with the namespace's labels it decides
//! everything; without them (`None`) it trusts that the selectors only sent pods to inject.

use std::collections::BTreeMap;

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// The pod label or annotation that opts a pod in or out.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// Istio's namespace label.
pub const ISTIO_INJECTION: &str = "istio-injection";
/// Capstan's own namespace label, equivalent to Istio's.
pub const CAPSTAN_INJECTION: &str = "capstan-injection";
/// The revision label (namespace or pod).
pub const REVISION: &str = "istio.io/rev";
/// Istio's record of an injection, on the pod.
pub const STATUS: &str = "sidecar.istio.io/status";
/// The sidecar container's name.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init container's name.
pub const INIT_CONTAINER: &str = "istio-init";

/// Namespaces Istio never injects into (`IgnoredNamespaces`).
const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It already has the sidecar (`istio-proxy`) or Istio's status annotation.
    AlreadyInjected,
    /// `hostNetwork: true`: capture would rewrite the node's iptables.
    HostNetwork,
    /// `kube-system` and `kube-public`.
    IgnoredNamespace,
    /// The pod says `sidecar.istio.io/inject: "false"` (or any value that is not true).
    OptedOut,
    /// The namespace's label says `disabled`.
    NamespaceDisabled,
    /// Neither the namespace nor the pod asks for injection.
    NotEnabled,
    /// The namespace or pod names another control-plane revision.
    OtherRevision(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::AlreadyInjected => f.write_str("already injected"),
            Skip::HostNetwork => f.write_str("host network pod"),
            Skip::IgnoredNamespace => f.write_str("system namespace"),
            Skip::OptedOut => write!(f, "{INJECT} is not true"),
            Skip::NamespaceDisabled => f.write_str("injection disabled on the namespace"),
            Skip::NotEnabled => f.write_str("injection not enabled for the namespace or pod"),
            Skip::OtherRevision(r) => write!(f, "revision {r:?} is served elsewhere"),
        }
    }
}

/// What the decision reads of a pod.
#[derive(Debug, Clone, Default)]
pub struct PodFacts<'a> {
    /// The pod's labels.
    pub labels: Option<&'a Labels>,
    /// The pod's annotations.
    pub annotations: Option<&'a Labels>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Names of its containers and init containers.
    pub container_names: Vec<&'a str>,
}

/// The pod's own choice: `Some(true)`/`Some(false)` when it says, `None` when it does not.
/// Istio reads the label first, then the annotation; YAML's truthy words count as true and any
/// other non-empty value as false.
fn pod_choice(pod: &PodFacts<'_>) -> Option<bool> {
    let value = pod
        .labels
        .and_then(|l| l.get(INJECT))
        .or_else(|| pod.annotations.and_then(|a| a.get(INJECT)))?;
    match value.to_ascii_lowercase().as_str() {
        "" => None,
        "y" | "yes" | "true" | "on" => Some(true),
        _ => Some(false),
    }
}

/// Decides whether to inject the pod in `namespace` for the injector of `revision`;
/// `namespace_labels` is `None` when unknown (see the module doc).
pub fn decide(
    pod: &PodFacts<'_>,
    namespace: &str,
    namespace_labels: Option<&Labels>,
    revision: &str,
) -> Result<(), Skip> {
    // First, so that re-injection is reported as such whatever else changed.
    if pod
        .container_names
        .iter()
        .any(|n| *n == PROXY_CONTAINER || *n == INIT_CONTAINER)
        || pod.annotations.is_some_and(|a| a.contains_key(STATUS))
    {
        return Err(Skip::AlreadyInjected);
    }
    if pod.host_network {
        return Err(Skip::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Err(Skip::IgnoredNamespace);
    }
    let choice = pod_choice(pod);
    if choice == Some(false) {
        return Err(Skip::OptedOut);
    }
    let Some(ns) = namespace_labels else {
        // The webhook configuration's selectors chose this pod.
        return Ok(());
    };
    let ours = |rev: &String| rev == revision;
    for label in [ISTIO_INJECTION, CAPSTAN_INJECTION] {
        if let Some(v) = ns.get(label) {
            return if v == "enabled" {
                Ok(())
            } else {
                Err(Skip::NamespaceDisabled)
            };
        }
    }
    if let Some(rev) = ns.get(REVISION) {
        return if ours(rev) {
            Ok(())
        } else {
            Err(Skip::OtherRevision(rev.clone()))
        };
    }
    // Unlabelled namespace: only the pod's label opts in (Istio's object selector matches
    // labels, not annotations).
    let labelled_in = pod
        .labels
        .and_then(|l| l.get(INJECT))
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "y" | "yes" | "true" | "on"));
    if let Some(rev) = pod.labels.and_then(|l| l.get(REVISION)) {
        return if ours(rev) {
            Ok(())
        } else {
            Err(Skip::OtherRevision(rev.clone()))
        };
    }
    if labelled_in {
        Ok(())
    } else {
        Err(Skip::NotEnabled)
    }
}
