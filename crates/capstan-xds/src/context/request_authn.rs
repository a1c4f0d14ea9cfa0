//! RequestAuthentication selection: the JWT rules a workload validates, as istiod's
//! `AuthenticationPolicies.GetJwtPoliciesForWorkload` and `NewPolicyApplier` compute them.
//! Policies of the root namespace without a selector apply mesh-wide, others without one to
//! their namespace; `selector.matchLabels` narrows to workloads with those labels (in the root
//! namespace too: such a policy selects matching workloads of every namespace). Policies with
//! `targetRef(s)` attach only to a Kubernetes Gateway's proxies (kind `Gateway` of
//! `gateway.networking.k8s.io`, matched by the `gateway.networking.k8s.io/gateway-name` label in
//! the policy's namespace), never to sidecars. Unlike PeerAuthentication, every applicable
//! policy counts: their `jwtRules` are concatenated and sorted by issuer.
//!
//! Also here: the JWKS each rule needs ([`JwksSource`]) and the keys the control plane resolved
//! for them ([`JwksKeys`]), which the push carries so that generation stays free of I/O.

use super::{selects, ConfigEntry, PushContext};
use crate::fast::FastMap;
use capstan_api::security::{JwtRule, PolicyTargetReference, RequestAuthentication};
use capstan_api::{Kind, Spec};
use capstan_config::Snapshot;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

type Policy = Arc<ConfigEntry<RequestAuthentication>>;

/// The label Kubernetes Gateway API deployments carry (istiod's `constants.GatewayNameLabel`).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Where a JWT rule's keys come from when they are not given inline.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JwksSource {
    /// The rule's `jwksUri`.
    Uri(String),
    /// No `jwksUri`: the issuer's OpenID discovery document names it
    /// (`<issuer>/.well-known/openid-configuration`, `jwks_uri`), as istiod resolves it.
    Discovery(String),
}

impl JwksSource {
    /// What `rule` needs fetched; None when its keys are inline (`jwks`, used as is) or it
    /// names neither a URI nor an issuer.
    pub fn of(rule: &JwtRule) -> Option<JwksSource> {
        if !rule.jwks.is_empty() {
            None
        } else if !rule.jwks_uri.is_empty() {
            Some(JwksSource::Uri(rule.jwks_uri.clone()))
        } else if !rule.issuer.is_empty() {
            Some(JwksSource::Discovery(rule.issuer.clone()))
        } else {
            None
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Uri(u) => f.write_str(u),
            JwksSource::Discovery(i) => write!(f, "{i} (OpenID discovery)"),
        }
    }
}

/// The JWKS (JSON text) fetched for each source. A source absent from the map has not been
/// fetched successfully (yet): its providers get [`FAKE_JWKS`].
pub type JwksKeys = BTreeMap<JwksSource, String>;

/// The JWKS inlined when a rule's keys could not be fetched (istiod's `FakeJwks`): a
/// well-formed RSA key nobody holds the private half of, so every token is refused rather than
/// the provider being left without keys. Unlike istiod's constant, it carries the public half
/// only (istiod's includes the private exponent, which would let anyone sign for it). Static
/// across versions so that pushes stay byte-stable.
pub const FAKE_JWKS: &str = include_str!("fake_jwks.json");

/// The default JWKS fetch timeout (istiod: 5 s), when a rule sets none.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Every JWKS source the RequestAuthentications of `config` reference, with the longest
/// fetch timeout a rule gives it (`JWTRule.timeout`, 5 s by default). The control plane's
/// JWKS resolver fetches these; any other cached source is dropped.
pub fn jwks_sources(config: &Snapshot) -> BTreeMap<JwksSource, Duration> {
    let mut out: BTreeMap<JwksSource, Duration> = BTreeMap::new();
    for (key, stored) in config.objects.iter() {
        let (Spec::RequestAuthentication(ra), Kind::RequestAuthentication) =
            (&stored.object.spec, key.kind)
        else {
            continue;
        };
        for rule in &ra.jwt_rules {
            let Some(source) = JwksSource::of(rule) else {
                continue;
            };
            let timeout = rule
                .timeout
                .as_ref()
                .filter(|t| t.seconds >= 0 && t.nanos >= 0 && (t.seconds > 0 || t.nanos > 0))
                .map_or(DEFAULT_JWKS_TIMEOUT, |t| {
                    Duration::new(t.seconds as u64, t.nanos as u32)
                });
            let slot = out.entry(source).or_insert(timeout);
            *slot = (*slot).max(timeout);
        }
    }
    out
}

/// The RequestAuthentications of a config snapshot by namespace.
#[derive(Debug, Default)]
pub(crate) struct RequestAuthentications {
    /// Namespace → policies, by name.
    by_namespace: FastMap<String, Vec<Policy>>,
}

fn attaches_to_gateway(
    target: &PolicyTargetReference,
    ns: &str,
    proxy_ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    target.kind == "Gateway"
        && target.group == "gateway.networking.k8s.io"
        && (target.namespace.is_empty() || target.namespace == ns)
        && ns == proxy_ns
        && labels.get(GATEWAY_NAME_LABEL) == Some(&target.name)
}

impl RequestAuthentications {
    /// Indexes `policies`.
    pub fn build(mut policies: Vec<Policy>) -> Self {
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut out = RequestAuthentications::default();
        for p in policies {
            out.by_namespace
                .entry(p.namespace.clone())
                .or_default()
                .push(p);
        }
        out
    }

    /// The policies applying to a workload in `namespace` with `labels`: its namespace's,
    /// then the root namespace's.
    pub fn policies_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> Vec<&Policy> {
        let namespaces: &[&str] = if namespace == root_namespace {
            &[namespace]
        } else {
            &[namespace, root_namespace]
        };
        let mut out = Vec::new();
        for ns in namespaces {
            for p in self.by_namespace.get(*ns).into_iter().flatten() {
                let targets: Vec<&PolicyTargetReference> = p
                    .spec
                    .target_ref
                    .iter()
                    .chain(&p.spec.target_refs)
                    .collect();
                let applies = if targets.is_empty() {
                    p.spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| selects(&s.match_labels, labels))
                } else {
                    targets
                        .iter()
                        .any(|t| attaches_to_gateway(t, &p.namespace, namespace, labels))
                };
                if applies {
                    out.push(p);
                }
            }
        }
        out
    }

    /// istiod's `NewPolicyApplier`: the `jwtRules` of every applicable policy, sorted by issuer
    /// (stable: rules of one issuer keep their policies' order). Rules with the same issuer are
    /// not merged (istio/istio#19245): each becomes its own provider.
    pub fn rules_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> Vec<JwtRule> {
        let mut rules: Vec<JwtRule> = self
            .policies_for(namespace, labels, root_namespace)
            .into_iter()
            .flat_map(|p| p.spec.jwt_rules.iter().cloned())
            .collect();
        rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        rules
    }
}

impl PushContext {
    /// The JWT rules a workload in `namespace` with `labels` validates (sorted by issuer).
    pub fn workload_jwt_rules(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<JwtRule> {
        self.index
            .request_authentications
            .rules_for(namespace, labels, &self.mesh.root_namespace)
    }

    /// The JWKS the control plane resolved for this push.
    pub fn jwks(&self) -> &JwksKeys {
        &self.jwks
    }

    /// This context with `keys` as its resolved JWKS.
    pub fn with_jwks(mut self, keys: Arc<JwksKeys>) -> PushContext {
        self.jwks = keys;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::common::WorkloadSelector;

    fn policy(ns: &str, name: &str, selector: &[(&str, &str)], issuers: &[&str]) -> Policy {
        Arc::new(ConfigEntry {
            name: name.into(),
            namespace: ns.into(),
            spec: Arc::new(RequestAuthentication {
                selector: (!selector.is_empty()).then(|| WorkloadSelector {
                    match_labels: selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                jwt_rules: issuers
                    .iter()
                    .map(|i| JwtRule {
                        issuer: i.to_string(),
                        // The policy name, to tell rules of one issuer apart.
                        audiences: vec![name.to_string()],
                        ..JwtRule::default()
                    })
                    .collect(),
                ..RequestAuthentication::default()
            }),
        })
    }

    fn targeted(ns: &str, name: &str, kind: &str, target: &str, issuer: &str) -> Policy {
        let mut p = (*policy(ns, name, &[], &[issuer])).clone();
        Arc::make_mut(&mut p.spec).target_refs = vec![PolicyTargetReference {
            group: "gateway.networking.k8s.io".into(),
            kind: kind.into(),
            name: target.into(),
            ..PolicyTargetReference::default()
        }];
        Arc::new(p)
    }

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Selection and merging, one case a row: policies → `issuer(policy)` of the rules applying
    /// to a workload of `ns` labelled app=a.
    #[test]
    fn selection_and_merge_follow_istio() {
        let app = [("app", "a")];
        type Case<'a> = (&'a str, Vec<Policy>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("none", vec![], vec![]),
            (
                "namespace-wide",
                vec![policy("ns", "n", &[], &["i1"])],
                vec!["i1(n)"],
            ),
            (
                "root namespace is mesh-wide",
                vec![policy("istio-system", "m", &[], &["i1"])],
                vec!["i1(m)"],
            ),
            (
                "root namespace selectors select in every namespace",
                vec![
                    policy("istio-system", "w", &app, &["i1"]),
                    policy("istio-system", "x", &[("app", "b")], &["i2"]),
                ],
                vec!["i1(w)"],
            ),
            (
                "selector narrows",
                vec![
                    policy("ns", "w", &app, &["i1"]),
                    policy("ns", "x", &[("app", "b")], &["i2"]),
                ],
                vec!["i1(w)"],
            ),
            (
                "other namespaces do not apply",
                vec![policy("other", "n", &[], &["i1"])],
                vec![],
            ),
            (
                "targetRef policies do not attach to sidecars",
                vec![targeted("ns", "t", "Gateway", "gw", "i1")],
                vec![],
            ),
            (
                "all applicable policies merge, sorted by issuer, same issuers kept",
                vec![
                    policy("istio-system", "m", &[], &["zeta", "alpha"]),
                    policy("ns", "n", &[], &["mid", "alpha"]),
                    policy("ns", "w", &app, &["beta"]),
                ],
                vec!["alpha(n)", "alpha(m)", "beta(w)", "mid(n)", "zeta(m)"],
            ),
        ];
        for (name, policies, want) in cases {
            let index = RequestAuthentications::build(policies);
            let got: Vec<String> = index
                .rules_for("ns", &labels(&app), "istio-system")
                .iter()
                .map(|r| format!("{}({})", r.issuer, r.audiences[0]))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn target_refs_attach_to_their_gateway_only() {
        let index = RequestAuthentications::build(vec![
            targeted("gw-ns", "t", "Gateway", "public", "i1"),
            targeted("gw-ns", "s", "Service", "public", "i2"),
            targeted("gw-ns", "o", "Gateway", "other", "i3"),
        ]);
        let gw = labels(&[(GATEWAY_NAME_LABEL, "public")]);
        let issuers = |ns: &str| -> Vec<String> {
            index
                .rules_for(ns, &gw, "istio-system")
                .into_iter()
                .map(|r| r.issuer)
                .collect()
        };
        assert_eq!(issuers("gw-ns"), vec!["i1".to_string()]);
        assert!(
            issuers("elsewhere").is_empty(),
            "same name, other namespace"
        );
    }

    #[test]
    fn sources_need_fetching_unless_inline() {
        let rule = |uri: &str, jwks: &str, issuer: &str| JwtRule {
            issuer: issuer.into(),
            jwks_uri: uri.into(),
            jwks: jwks.into(),
            ..JwtRule::default()
        };
        assert_eq!(
            JwksSource::of(&rule("https://k/jwks", "", "iss")),
            Some(JwksSource::Uri("https://k/jwks".into()))
        );
        assert_eq!(JwksSource::of(&rule("https://k/jwks", "{}", "iss")), None);
        assert_eq!(
            JwksSource::of(&rule("", "", "https://iss")),
            Some(JwksSource::Discovery("https://iss".into()))
        );
        assert_eq!(JwksSource::of(&rule("", "", "")), None);
    }

    /// What the resolver is asked to fetch: each source once, with the longest timeout a rule
    /// gives it (5 s by default); inline keys need nothing.
    #[test]
    fn sources_of_a_snapshot() {
        let config = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: a, namespace: ns}
spec:
  jwtRules:
  - {issuer: i1, jwksUri: "https://k.example/jwks", timeout: 2s}
  - {issuer: i2, jwks: '{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}'}
  - {issuer: "https://idp.example"}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: b, namespace: other}
spec:
  jwtRules:
  - {issuer: i3, jwksUri: "https://k.example/jwks", timeout: 10s}
"#;
        let store = capstan_config::ConfigStore::new();
        let mut objects = Vec::new();
        for r in capstan_api::check_text(config, &capstan_api::CheckOptions::default()) {
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            objects.extend(r.object.map(|o| *o));
        }
        store.replace_source("test", objects);
        let got = jwks_sources(&store.snapshot());
        assert_eq!(
            got,
            BTreeMap::from([
                (
                    JwksSource::Uri("https://k.example/jwks".into()),
                    Duration::from_secs(10)
                ),
                (
                    JwksSource::Discovery("https://idp.example".into()),
                    DEFAULT_JWKS_TIMEOUT
                ),
            ])
        );
    }

    #[test]
    fn the_fake_jwks_is_a_public_rsa_key_set() {
        let v: serde_json::Value = serde_json::from_str(FAKE_JWKS).expect("valid JSON");
        let keys = v["keys"].as_array().expect("a keys array");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kty"], "RSA");
        assert!(keys[0]["n"].as_str().is_some_and(|n| n.len() > 300));
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(keys[0].get(private).is_none(), "no private part {private}");
        }
    }
}
