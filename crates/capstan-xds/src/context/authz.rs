//! AuthorizationPolicy selection: which policies apply to a workload, grouped by action, as
//! istiod's `AuthorizationPolicies.ListAuthorizationPolicies` does for sidecars: policies of
//! the root namespace apply mesh-wide, others to their namespace; `selector.matchLabels`
//! narrows to workloads with those labels (in the root namespace too, unlike
//! PeerAuthentication). Policies with `targetRef(s)` attach to gateways, services or waypoints,
//! never to sidecars.

use super::{selects, ConfigEntry, PushContext};
use crate::fast::FastMap;
use crate::generate::authz::{rule_policy, Layer};
use capstan_api::security::{AuthorizationAction, AuthorizationPolicy};
use envoy_types::pb::envoy::config::rbac::v3::rbac;
use std::collections::BTreeMap;
use std::sync::Arc;

type Policy = Arc<ConfigEntry<AuthorizationPolicy>>;

/// The policies selecting one workload, by the action they take.
#[derive(Clone, Debug, Default)]
pub struct WorkloadAuthz {
    /// AUDIT policies (an RBAC filter with action LOG).
    pub audit: Vec<Policy>,
    /// DENY policies.
    pub deny: Vec<Policy>,
    /// ALLOW policies.
    pub allow: Vec<Policy>,
    /// CUSTOM policies: no `ext_authz` is generated; their workloads deny everything (see
    /// [`PushContext::authorization_skipped`]).
    pub custom: Vec<Policy>,
}

impl WorkloadAuthz {
    /// Whether no policy selects the workload (no RBAC filter at all).
    pub fn is_empty(&self) -> bool {
        self.audit.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.custom.is_empty()
    }
}

/// The AuthorizationPolicies of a config snapshot by namespace, and the ones left out.
#[derive(Debug, Default)]
pub(crate) struct AuthorizationPolicies {
    /// Namespace → policies, by name.
    by_namespace: FastMap<String, Vec<Policy>>,
    /// `ns/name` (or `ns/name rule[i]`) → why it generates nothing, or less than it says.
    skipped: BTreeMap<String, String>,
}

impl AuthorizationPolicies {
    /// Indexes `policies`; CUSTOM ones are recorded (and logged) as not generated.
    pub fn build(mut policies: Vec<Policy>) -> Self {
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut out = AuthorizationPolicies::default();
        for p in policies {
            let key = format!("{}/{}", p.namespace, p.name);
            let action = match p.spec.action {
                AuthorizationAction::Custom => {
                    let reason = "action CUSTOM (ext_authz) is not supported: as istiod does \
                                  when a CUSTOM policy's provider cannot be used, the workloads \
                                  it selects deny every request (fail closed)";
                    tracing::error!(policy = %key, "AuthorizationPolicy skipped: {reason}");
                    out.skipped.insert(key.clone(), reason.to_string());
                    None
                }
                AuthorizationAction::Allow => Some(rbac::Action::Allow),
                AuthorizationAction::Deny => Some(rbac::Action::Deny),
                AuthorizationAction::Audit => Some(rbac::Action::Log),
            };
            // Say once per config change what generation will leave out, and why.
            for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
                let Some(action) = action else { break };
                let mut widened = Vec::new();
                match rule_policy(rule, &p.namespace, action, Layer::Http, &mut widened) {
                    Err(reason) => {
                        tracing::warn!(policy = %key, rule = i, "ALLOW rule left out (it allows nothing): {reason}");
                        out.skipped
                            .insert(format!("{key} rule[{i}]"), format!("left out: {reason}"));
                    }
                    Ok(_) if !widened.is_empty() => {
                        let reason = widened.join("; ");
                        tracing::warn!(policy = %key, rule = i, "rule widened (fails closed): {reason}");
                        out.skipped
                            .insert(format!("{key} rule[{i}]"), format!("widened: {reason}"));
                    }
                    Ok(_) => {}
                }
            }
            out.by_namespace
                .entry(p.namespace.clone())
                .or_default()
                .push(p);
        }
        out
    }

    /// The policies applying to a sidecar in `namespace` with `labels`.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> WorkloadAuthz {
        let mut out = WorkloadAuthz::default();
        let namespaces: &[&str] = if namespace == root_namespace {
            &[namespace]
        } else {
            &[root_namespace, namespace]
        };
        for ns in namespaces {
            for p in self.by_namespace.get(*ns).into_iter().flatten() {
                if p.spec.target_ref.is_some() || !p.spec.target_refs.is_empty() {
                    continue;
                }
                let selected = p
                    .spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| selects(&s.match_labels, labels));
                if !selected {
                    continue;
                }
                let list = match p.spec.action {
                    AuthorizationAction::Audit => &mut out.audit,
                    AuthorizationAction::Deny => &mut out.deny,
                    AuthorizationAction::Allow => &mut out.allow,
                    AuthorizationAction::Custom => &mut out.custom,
                };
                list.push(p.clone());
            }
        }
        out
    }
}

impl PushContext {
    /// The AuthorizationPolicies applying to a sidecar workload in `namespace` with `labels`.
    pub fn workload_authz(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadAuthz {
        self.index
            .authorization_policies
            .for_workload(namespace, labels, &self.mesh.root_namespace)
    }

    /// AuthorizationPolicies (`ns/name`) and rules (`ns/name rule[i]`) generated as nothing or
    /// widened (DENY/AUDIT), with the reason.
    pub fn authorization_skipped(&self) -> &BTreeMap<String, String> {
        &self.index.authorization_policies.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::common::WorkloadSelector;
    use capstan_api::security::PolicyTargetReference;

    fn policy(
        ns: &str,
        name: &str,
        action: AuthorizationAction,
        selector: &[(&str, &str)],
    ) -> Policy {
        Arc::new(ConfigEntry {
            name: name.into(),
            namespace: ns.into(),
            spec: Arc::new(AuthorizationPolicy {
                selector: (!selector.is_empty()).then(|| WorkloadSelector {
                    match_labels: selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                action,
                ..AuthorizationPolicy::default()
            }),
        })
    }

    fn names(v: &[Policy]) -> Vec<String> {
        v.iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    /// Selection, one case a row: policies → (deny, allow) names applying to `ns` app=a.
    #[test]
    fn selection_follows_istio() {
        use AuthorizationAction::{Allow, Deny};
        let app = [("app", "a")];
        let mut targeted = (*policy("ns", "t", Allow, &[])).clone();
        Arc::make_mut(&mut targeted.spec).target_ref = Some(PolicyTargetReference {
            kind: "Gateway".into(),
            name: "gw".into(),
            ..PolicyTargetReference::default()
        });
        type Case<'a> = (&'a str, Vec<Policy>, (Vec<&'a str>, Vec<&'a str>));
        let cases: Vec<Case> = vec![
            ("none", vec![], (vec![], vec![])),
            (
                "namespace-wide",
                vec![policy("ns", "n", Allow, &[])],
                (vec![], vec!["ns/n"]),
            ),
            (
                "root namespace is mesh-wide",
                vec![policy("istio-system", "m", Deny, &[])],
                (vec!["istio-system/m"], vec![]),
            ),
            (
                "root namespace selectors apply in every namespace",
                vec![
                    policy("istio-system", "w", Deny, &app),
                    policy("istio-system", "x", Deny, &[("app", "b")]),
                ],
                (vec!["istio-system/w"], vec![]),
            ),
            (
                "selector narrows",
                vec![
                    policy("ns", "w", Allow, &app),
                    policy("ns", "x", Allow, &[("app", "b")]),
                ],
                (vec![], vec!["ns/w"]),
            ),
            (
                "other namespaces do not apply",
                vec![policy("other", "n", Deny, &[])],
                (vec![], vec![]),
            ),
            (
                "targetRef policies do not attach to sidecars",
                vec![Arc::new(targeted)],
                (vec![], vec![]),
            ),
            (
                "all selected policies of an action apply",
                vec![
                    policy("istio-system", "m", Allow, &[]),
                    policy("ns", "n", Allow, &[]),
                    policy("ns", "d", Deny, &app),
                ],
                (vec!["ns/d"], vec!["istio-system/m", "ns/n"]),
            ),
        ];
        for (name, policies, (deny, allow)) in cases {
            let index = AuthorizationPolicies::build(policies);
            let labels = app
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let got = index.for_workload("ns", &labels, "istio-system");
            assert_eq!(
                (names(&got.deny), names(&got.allow)),
                (
                    deny.iter().map(|s| s.to_string()).collect(),
                    allow.iter().map(|s| s.to_string()).collect()
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn custom_is_recorded_not_selected_as_allow_or_deny() {
        let index = AuthorizationPolicies::build(vec![policy(
            "ns",
            "ext",
            AuthorizationAction::Custom,
            &[],
        )]);
        let got = index.for_workload("ns", &BTreeMap::new(), "istio-system");
        assert!(
            !got.is_empty(),
            "a CUSTOM policy selects (and closes) the workload"
        );
        assert!(got.allow.is_empty() && got.deny.is_empty() && got.audit.is_empty());
        assert_eq!(names(&got.custom), vec!["ns/ext".to_string()]);
        assert!(index.skipped["ns/ext"].contains("CUSTOM"));
    }

    #[test]
    fn unexpressible_rules_are_recorded() {
        let mut allow = (*policy("ns", "a", AuthorizationAction::Allow, &[])).clone();
        Arc::make_mut(&mut allow.spec).rules = Some(vec![serde_json::from_str(
            r#"{"when":[{"key":"experimental.envoy.filters.a[b]","values":["x"]}]}"#,
        )
        .unwrap()]);
        let mut deny = allow.clone();
        deny.name = "d".into();
        Arc::make_mut(&mut deny.spec).action = AuthorizationAction::Deny;
        let index = AuthorizationPolicies::build(vec![Arc::new(allow), Arc::new(deny)]);
        assert!(index.skipped["ns/a rule[0]"].starts_with("left out: Envoy metadata"));
        assert!(index.skipped["ns/d rule[0]"].starts_with("widened: Envoy metadata"));
    }
}
