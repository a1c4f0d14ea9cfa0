//! PeerAuthentication: the mutual-TLS mode a workload accepts, composed from mesh, namespace,
//! workload and port-level policies as Istio's `ComposePeerAuthentication` does, and the mode
//! a client infers for a service (Istio's `BestEffortInferServiceMTLSMode`), which decides
//! auto mTLS.

use super::{selects, ConfigEntry, PushContext};
use crate::fast::FastMap;
use capstan_api::security::{MtlsMode, MutualTls, PeerAuthentication};
use capstan_registry::{Resolution, Service};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A resolved mutual-TLS mode (Istio's `MutualTLSMode` without UNKNOWN, which is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MutualTlsMode {
    /// Plain text only.
    Disable,
    /// Plain text and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MutualTlsMode {
    /// The mode a policy sets; None for UNSET (inherit).
    fn of(mtls: Option<&MutualTls>) -> Option<MutualTlsMode> {
        match mtls.map(|m| m.mode) {
            Some(MtlsMode::Disable) => Some(MutualTlsMode::Disable),
            Some(MtlsMode::Permissive) => Some(MutualTlsMode::Permissive),
            Some(MtlsMode::Strict) => Some(MutualTlsMode::Strict),
            Some(MtlsMode::Unset) | None => None,
        }
    }
}

/// The mode one workload accepts: overall and per workload port (Istio's
/// `MergedPeerAuthentication`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadMtls {
    /// The workload-wide mode (PERMISSIVE when no policy sets one).
    pub mode: MutualTlsMode,
    /// Port-level overrides of the selected workload policy, by workload (target) port.
    pub per_port: BTreeMap<u16, MutualTlsMode>,
}

impl WorkloadMtls {
    /// The mode for traffic arriving on `port`.
    pub fn for_port(&self, port: u16) -> MutualTlsMode {
        self.per_port.get(&port).copied().unwrap_or(self.mode)
    }
}

type Policy = Arc<ConfigEntry<PeerAuthentication>>;

/// The PeerAuthentications of a config snapshot, indexed as Istio's `AuthenticationPolicies`.
#[derive(Debug, Default)]
pub(crate) struct PeerAuthentications {
    /// Namespace → policies, oldest first (creation time, then name).
    by_namespace: FastMap<String, Vec<Policy>>,
    /// Mode of each namespace's namespace-level policy, UNSET resolved to the mesh's mode.
    namespace_modes: FastMap<String, MutualTlsMode>,
    /// Mode of the mesh-level policy (the root namespace's selector-less one), if there is one.
    mesh_mode: Option<MutualTlsMode>,
}

fn selector_less(p: &PeerAuthentication) -> bool {
    p.selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
}

impl PeerAuthentications {
    /// Indexes `policies` given with their creation timestamps (RFC 3339, comparable as text).
    pub fn build(mut policies: Vec<(Option<String>, Policy)>, root_namespace: &str) -> Self {
        // Istio's sortConfigByCreationTime: the oldest of competing policies wins.
        policies.sort_by(|(ta, a), (tb, b)| {
            (ta, &a.name, &a.namespace).cmp(&(tb, &b.name, &b.namespace))
        });
        let mut out = PeerAuthentications::default();
        let mut namespace_level: BTreeMap<String, Option<MutualTlsMode>> = BTreeMap::new();
        let mut mesh_seen = false;
        for (_, p) in policies {
            if selector_less(&p.spec) {
                let mode = MutualTlsMode::of(p.spec.mtls.as_ref());
                if p.namespace == root_namespace {
                    if mesh_seen {
                        continue;
                    }
                    mesh_seen = true;
                    // UNSET at mesh level means PERMISSIVE.
                    out.mesh_mode = Some(mode.unwrap_or(MutualTlsMode::Permissive));
                } else {
                    if namespace_level.contains_key(&p.namespace) {
                        continue;
                    }
                    namespace_level.insert(p.namespace.clone(), mode);
                }
            }
            out.by_namespace
                .entry(p.namespace.clone())
                .or_default()
                .push(p);
        }
        let inherited = out.mesh_mode.unwrap_or(MutualTlsMode::Permissive);
        out.namespace_modes = namespace_level
            .into_iter()
            .map(|(ns, mode)| (ns, mode.unwrap_or(inherited)))
            .collect();
        out
    }

    /// Whether there is no policy at all (everything is PERMISSIVE).
    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }

    /// Istio's `GetNamespaceMutualTLSMode`: the namespace-level mode, else the mesh-level
    /// mode, else None (no policy says).
    pub fn namespace_mode(&self, namespace: &str) -> Option<MutualTlsMode> {
        self.namespace_modes
            .get(namespace)
            .copied()
            .or(self.mesh_mode)
    }

    /// Istio's `ComposePeerAuthentication` over the policies applying to a workload (its
    /// namespace's and the root namespace's whose selector matches its labels): the most
    /// specific scope that sets a mode wins (workload over namespace over mesh, UNSET
    /// inherits, PERMISSIVE by default); among policies of one scope the oldest. Port-level
    /// settings come from the selected workload policy, UNSET ones inheriting its mode.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> WorkloadMtls {
        let mut out = WorkloadMtls {
            mode: MutualTlsMode::Permissive,
            per_port: BTreeMap::new(),
        };
        if self.is_empty() {
            return out;
        }
        let namespaces: &[&str] = if namespace == root_namespace {
            &[namespace]
        } else {
            &[namespace, root_namespace]
        };
        let (mut mesh, mut ns_level, mut workload): (Option<&Policy>, Option<&Policy>, _) =
            (None, None, None::<&Policy>);
        for ns in namespaces {
            for p in self.by_namespace.get(*ns).into_iter().flatten() {
                let matches = p
                    .spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| selects(&s.match_labels, labels));
                if !matches {
                    continue;
                }
                let slot = if selector_less(&p.spec) {
                    if p.namespace == root_namespace {
                        &mut mesh
                    } else {
                        &mut ns_level
                    }
                } else if p.namespace != root_namespace {
                    &mut workload
                } else {
                    // Istio ignores workload selectors in the root namespace.
                    continue;
                };
                slot.get_or_insert(p);
            }
        }
        for p in [mesh, ns_level, workload].into_iter().flatten() {
            if let Some(mode) = MutualTlsMode::of(p.spec.mtls.as_ref()) {
                out.mode = mode;
            }
        }
        if let Some(ports) = workload.and_then(|w| w.spec.port_level_mtls.as_ref()) {
            for (port, mtls) in ports {
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                let mode = MutualTlsMode::of(Some(mtls)).unwrap_or(out.mode);
                out.per_port.insert(port, mode);
            }
        }
        out
    }
}

impl PushContext {
    /// The mutual-TLS mode a workload in `namespace` with `labels` accepts.
    pub fn workload_mtls(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadMtls {
        self.index
            .peer_authentications
            .for_workload(namespace, labels, &self.mesh.root_namespace)
    }

    /// Istio's `BestEffortInferServiceMTLSMode`: what a client assumes a service's port
    /// accepts. None for services outside the mesh. A passthrough service (or a
    /// DestinationRule load balancer set to PASSTHROUGH) is DISABLE unless every endpoint has
    /// a sidecar; otherwise the namespace- or mesh-level PeerAuthentication decides
    /// (workload-level policies are not considered), PERMISSIVE by default.
    pub fn service_mtls_mode(
        &self,
        svc: &Service,
        port: u16,
        lb_passthrough: bool,
    ) -> Option<MutualTlsMode> {
        if svc.mesh_external {
            return None;
        }
        if svc.resolution == Resolution::Passthrough || lb_passthrough {
            let endpoints = self
                .services
                .endpoint_set(&svc.hostname, port)
                .map_or(&[][..], |e| &e[..]);
            if endpoints.is_empty() || endpoints.iter().any(|e| e.meta.tls_mode == "disabled") {
                return Some(MutualTlsMode::Disable);
            }
        }
        Some(
            self.index
                .peer_authentications
                .namespace_mode(&svc.namespace)
                .unwrap_or(MutualTlsMode::Permissive),
        )
    }

    /// Whether any PeerAuthentication exists (when none does, every workload is PERMISSIVE).
    pub(crate) fn has_peer_authentications(&self) -> bool {
        !self.index.peer_authentications.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::common::WorkloadSelector;

    fn policy(
        ns: &str,
        name: &str,
        selector: &[(&str, &str)],
        mode: MtlsMode,
        ports: &[(&str, MtlsMode)],
    ) -> (Option<String>, Policy) {
        let spec = PeerAuthentication {
            selector: (!selector.is_empty()).then(|| WorkloadSelector {
                match_labels: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            mtls: Some(MutualTls { mode }),
            port_level_mtls: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|(p, m)| (p.to_string(), MutualTls { mode: *m }))
                    .collect()
            }),
        };
        (
            None,
            Arc::new(ConfigEntry {
                name: name.into(),
                namespace: ns.into(),
                spec: Arc::new(spec),
            }),
        )
    }

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    use MtlsMode::{Disable as D, Permissive as P, Strict as S, Unset as U};
    use MutualTlsMode::{Disable, Permissive, Strict};

    /// Istio's precedence, one case a row: policies → (workload mode, port 8080's mode).
    #[test]
    fn composition_follows_istio() {
        let app = [("app", "a")];
        type Case<'a> = (
            &'a str,
            Vec<(Option<String>, Policy)>,
            (MutualTlsMode, MutualTlsMode),
        );
        let cases: Vec<Case> = vec![
            ("no policy", vec![], (Permissive, Permissive)),
            (
                "mesh strict",
                vec![policy("istio-system", "m", &[], S, &[])],
                (Strict, Strict),
            ),
            (
                "mesh unset is permissive",
                vec![policy("istio-system", "m", &[], U, &[])],
                (Permissive, Permissive),
            ),
            (
                "namespace over mesh",
                vec![
                    policy("istio-system", "m", &[], S, &[]),
                    policy("ns", "n", &[], D, &[]),
                ],
                (Disable, Disable),
            ),
            (
                "namespace unset inherits mesh",
                vec![
                    policy("istio-system", "m", &[], S, &[]),
                    policy("ns", "n", &[], U, &[]),
                ],
                (Strict, Strict),
            ),
            (
                "workload over namespace",
                vec![
                    policy("ns", "n", &[], S, &[]),
                    policy("ns", "w", &app, P, &[]),
                ],
                (Permissive, Permissive),
            ),
            (
                "workload selecting others does not apply",
                vec![
                    policy("ns", "n", &[], S, &[]),
                    policy("ns", "w", &[("app", "b")], D, &[]),
                ],
                (Strict, Strict),
            ),
            (
                "port level over workload",
                vec![policy("ns", "w", &app, S, &[("8080", D)])],
                (Strict, Disable),
            ),
            (
                "port level unset inherits the composed mode",
                vec![
                    policy("istio-system", "m", &[], D, &[]),
                    policy("ns", "w", &app, U, &[("8080", U)]),
                ],
                (Disable, Disable),
            ),
            (
                "other namespaces do not apply",
                vec![policy("other", "n", &[], S, &[])],
                (Permissive, Permissive),
            ),
            (
                "root namespace workload selectors are ignored",
                vec![policy("istio-system", "w", &app, S, &[])],
                (Permissive, Permissive),
            ),
            (
                "the oldest namespace policy wins (by name without timestamps)",
                vec![
                    policy("ns", "b", &[], D, &[]),
                    policy("ns", "a", &[], S, &[]),
                ],
                (Strict, Strict),
            ),
        ];
        for (name, policies, (mode, port)) in cases {
            let index = PeerAuthentications::build(policies, "istio-system");
            let got = index.for_workload("ns", &labels(&app), "istio-system");
            assert_eq!((got.mode, got.for_port(8080)), (mode, port), "{name}");
        }
    }

    #[test]
    fn namespace_modes_resolve_unset_to_the_mesh() {
        let index = PeerAuthentications::build(
            vec![
                policy("istio-system", "m", &[], S, &[]),
                policy("a", "n", &[], U, &[]),
                policy("b", "n", &[], D, &[]),
                policy("c", "w", &[("app", "x")], D, &[]),
            ],
            "istio-system",
        );
        assert_eq!(index.namespace_mode("a"), Some(Strict));
        assert_eq!(index.namespace_mode("b"), Some(Disable));
        assert_eq!(
            index.namespace_mode("c"),
            Some(Strict),
            "workload policies do not count"
        );
        let none = PeerAuthentications::build(vec![], "istio-system");
        assert_eq!(none.namespace_mode("a"), None);
    }
}
