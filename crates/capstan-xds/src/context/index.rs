//! Indexes of the config snapshot: VirtualServices by gateway and host, DestinationRules by
//! host, Sidecars by namespace, Gateways; and the look-ups with Istio's precedence.

use super::{exported_to, host_matches, resolve_host, selects, MeshConfig, PushContext};
use crate::fast::FastMap;
use crate::proxy::Proxy;
use capstan_api::networking::{DestinationRule, Gateway, Sidecar, VirtualService};
use capstan_api::{Kind, Spec};
use capstan_config::Snapshot;
use std::sync::Arc;

/// One config object of type `T`, with its name and namespace.
#[derive(Clone, Debug)]
pub struct ConfigEntry<T> {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The spec, shared with the config store's object.
    pub spec: Arc<T>,
}

/// A VirtualService with its hosts and gateways resolved to FQDNs / `ns/name` (or `mesh`).
#[derive(Clone, Debug)]
pub struct VirtualServiceEntry {
    /// The object.
    pub config: ConfigEntry<VirtualService>,
    /// Hosts, resolved relative to the VirtualService's namespace.
    pub hosts: Vec<String>,
    /// Gateways, `ns/name` or `mesh` (default when none given).
    pub gateways: Vec<String>,
}

impl VirtualServiceEntry {
    /// Whether any http route uses fault injection.
    pub fn has_fault(&self) -> bool {
        self.config.spec.http.iter().any(|r| r.fault.is_some())
    }
}

#[derive(Debug, Default)]
pub(crate) struct ConfigIndex {
    pub virtual_services: Vec<Arc<VirtualServiceEntry>>,
    /// Gateway (`mesh` or `ns/name`) → indexes into `virtual_services`.
    pub vs_by_gateway: FastMap<String, Vec<usize>>,
    /// For VirtualServices bound to `mesh`: exact host → indexes, in order.
    pub mesh_vs_by_host: FastMap<String, Vec<usize>>,
    /// Mesh-bound VirtualServices with a wildcard host, in order.
    pub mesh_vs_wildcard: Vec<usize>,
    /// Resolved host → DestinationRules for it, in snapshot order.
    pub destination_rules: FastMap<String, Vec<Arc<ConfigEntry<DestinationRule>>>>,
    /// DestinationRules whose host is a wildcard.
    pub wildcard_rules: Vec<(String, Arc<ConfigEntry<DestinationRule>>)>,
    /// Namespace → Sidecars.
    pub sidecars: FastMap<String, Vec<Arc<ConfigEntry<Sidecar>>>>,
    pub gateways: Vec<Arc<ConfigEntry<Gateway>>>,
    /// Whether some VirtualService matches on `sourceLabels` (routes then depend on the
    /// proxy's labels, not only its namespace).
    pub source_label_routes: bool,
    /// Whether some DestinationRule selects workloads (routes' hash policies then depend on
    /// the proxy's labels).
    pub workload_rules: bool,
    /// Whether some DestinationRule sets client TLS anywhere (endpoint metadata for auto mTLS
    /// then depends on the rule).
    pub tls_rules: bool,
    /// Whether some DestinationRule sets outlier detection anywhere (endpoint priorities then
    /// depend on the rule and the proxy's locality).
    pub failover_rules: bool,
    /// PeerAuthentications.
    pub peer_authentications: super::authn::PeerAuthentications,
    /// AuthorizationPolicies.
    pub authorization_policies: super::authz::AuthorizationPolicies,
    /// RequestAuthentications.
    pub request_authentications: super::request_authn::RequestAuthentications,
}

/// Whether a rule sets client TLS at any level (top, port, subset, subset port).
fn sets_tls(dr: &DestinationRule) -> bool {
    let policy_tls = |p: &capstan_api::networking::TrafficPolicy| {
        p.tls.is_some() || p.port_level_settings.iter().any(|pl| pl.tls.is_some())
    };
    dr.traffic_policy.as_deref().is_some_and(policy_tls)
        || dr
            .subsets
            .iter()
            .any(|s| s.traffic_policy.as_deref().is_some_and(policy_tls))
}

/// Whether a DestinationRule sets outlier detection anywhere (Istio's locality failover then
/// orders the endpoints of its clusters).
fn sets_outlier_detection(dr: &DestinationRule) -> bool {
    let policy_outlier = |p: &capstan_api::networking::TrafficPolicy| {
        p.outlier_detection.is_some()
            || p.port_level_settings
                .iter()
                .any(|pl| pl.outlier_detection.is_some())
    };
    dr.traffic_policy.as_deref().is_some_and(policy_outlier)
        || dr
            .subsets
            .iter()
            .any(|s| s.traffic_policy.as_deref().is_some_and(policy_outlier))
}

fn entry<T>(key: &capstan_config::ConfigKey, spec: &Arc<T>) -> ConfigEntry<T> {
    ConfigEntry {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        spec: spec.clone(),
    }
}

/// Resolves a VirtualService gateway reference (`name`, `ns/name`, `mesh`).
pub(crate) fn resolve_gateway(gw: &str, namespace: &str) -> String {
    if gw == "mesh" || gw.contains('/') {
        gw.to_string()
    } else {
        format!("{namespace}/{gw}")
    }
}

impl ConfigIndex {
    pub fn build(config: &Snapshot, mesh: &MeshConfig) -> ConfigIndex {
        let mut index = ConfigIndex::default();
        let mut peer_authentications = Vec::new();
        let mut authorization_policies = Vec::new();
        let mut request_authentications = Vec::new();
        let delegates: super::delegate::Delegates<'_> = config
            .objects
            .iter()
            .filter_map(|(key, stored)| match (&stored.object.spec, key.kind) {
                (Spec::VirtualService(vs), Kind::VirtualService) if vs.is_delegate() => {
                    Some(((key.namespace.as_str(), key.name.as_str()), &**vs))
                }
                _ => None,
            })
            .collect();
        for (key, stored) in config.objects.iter() {
            match (&stored.object.spec, key.kind) {
                (Spec::VirtualService(vs), Kind::VirtualService) => {
                    if vs.is_delegate() {
                        continue;
                    }
                    let expanded = super::delegate::expand(
                        vs,
                        &key.namespace,
                        &delegates,
                        &mesh.domain_suffix,
                    );
                    let vs: &Arc<VirtualService> = expanded.as_ref().unwrap_or(vs);
                    let hosts: Vec<String> = vs
                        .hosts
                        .iter()
                        .map(|h| resolve_host(h, &key.namespace, &mesh.domain_suffix))
                        .collect();
                    let gateways: Vec<String> = if vs.gateways.is_empty() {
                        vec!["mesh".to_string()]
                    } else {
                        vs.gateways
                            .iter()
                            .map(|g| resolve_gateway(g, &key.namespace))
                            .collect()
                    };
                    index.source_label_routes |= vs
                        .http
                        .iter()
                        .flat_map(|r| r.r#match.iter())
                        .any(|m| !m.source_labels.is_empty());
                    let at = index.virtual_services.len();
                    for g in &gateways {
                        index.vs_by_gateway.entry(g.clone()).or_default().push(at);
                    }
                    if gateways.iter().any(|g| g == "mesh") {
                        for h in &hosts {
                            if h.starts_with('*') {
                                if index.mesh_vs_wildcard.last() != Some(&at) {
                                    index.mesh_vs_wildcard.push(at);
                                }
                            } else {
                                let list = index.mesh_vs_by_host.entry(h.clone()).or_default();
                                if list.last() != Some(&at) {
                                    list.push(at);
                                }
                            }
                        }
                    }
                    index.virtual_services.push(Arc::new(VirtualServiceEntry {
                        config: entry(key, vs),
                        hosts,
                        gateways,
                    }));
                }
                (Spec::DestinationRule(dr), Kind::DestinationRule) => {
                    index.tls_rules |= sets_tls(dr);
                    index.failover_rules |= sets_outlier_detection(dr);
                    index.workload_rules |= dr
                        .workload_selector
                        .as_ref()
                        .is_some_and(|s| !s.match_labels.is_empty());
                    let host = resolve_host(&dr.host, &key.namespace, &mesh.domain_suffix);
                    let e = Arc::new(entry(key, dr));
                    if host.starts_with('*') {
                        index.wildcard_rules.push((host, e));
                    } else {
                        index.destination_rules.entry(host).or_default().push(e);
                    }
                }
                (Spec::Sidecar(sc), Kind::Sidecar) => {
                    index
                        .sidecars
                        .entry(key.namespace.clone())
                        .or_default()
                        .push(Arc::new(entry(key, sc)));
                }
                (Spec::Gateway(gw), Kind::Gateway) => {
                    index.gateways.push(Arc::new(entry(key, gw)));
                }
                (Spec::PeerAuthentication(pa), Kind::PeerAuthentication) => {
                    let created = stored.object.metadata.creation_timestamp.clone();
                    peer_authentications.push((created, Arc::new(entry(key, pa))));
                }
                (Spec::AuthorizationPolicy(ap), Kind::AuthorizationPolicy) => {
                    authorization_policies.push(Arc::new(entry(key, ap)));
                }
                (Spec::RequestAuthentication(ra), Kind::RequestAuthentication) => {
                    request_authentications.push(Arc::new(entry(key, ra)));
                }
                _ => {}
            }
        }
        index.peer_authentications =
            super::authn::PeerAuthentications::build(peer_authentications, &mesh.root_namespace);
        index.authorization_policies =
            super::authz::AuthorizationPolicies::build(authorization_policies);
        index.request_authentications =
            super::request_authn::RequestAuthentications::build(request_authentications);
        // Most specific wildcard first.
        index
            .wildcard_rules
            .sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        index
    }
}

impl PushContext {
    /// VirtualServices bound to `gateway` (`mesh` or `ns/name`) visible from `proxy_ns`.
    pub fn virtual_services(
        &self,
        proxy_ns: &str,
        gateway: &str,
    ) -> impl Iterator<Item = &Arc<VirtualServiceEntry>> + '_ {
        let proxy_ns = proxy_ns.to_string();
        let gateway_scoped = gateway != "mesh";
        self.index
            .vs_by_gateway
            .get(gateway)
            .into_iter()
            .flatten()
            .map(|i| &self.index.virtual_services[*i])
            .filter(move |vs| {
                gateway_scoped
                    || exported_to(&vs.config.spec.export_to, &vs.config.namespace, &proxy_ns)
            })
    }

    /// The VirtualServices for the mesh whose hosts match `host`, visible from `proxy_ns`
    /// (exact host first, then wildcards).
    pub fn virtual_services_for_host(
        &self,
        proxy_ns: &str,
        host: &str,
    ) -> Vec<&Arc<VirtualServiceEntry>> {
        let visible = |vs: &&Arc<VirtualServiceEntry>| {
            exported_to(&vs.config.spec.export_to, &vs.config.namespace, proxy_ns)
        };
        let exact_at = self.index.mesh_vs_by_host.get(host);
        let mut out: Vec<_> = exact_at
            .into_iter()
            .flatten()
            .map(|i| &self.index.virtual_services[*i])
            .filter(visible)
            .collect();
        out.extend(
            self.index
                .mesh_vs_wildcard
                .iter()
                .filter(|i| !exact_at.is_some_and(|e| e.contains(i)))
                .map(|i| &self.index.virtual_services[*i])
                .filter(|vs| vs.hosts.iter().any(|h| host_matches(h, host)))
                .filter(visible),
        );
        out
    }

    /// The DestinationRule that applies to `host` for a proxy, with Istio's precedence: a rule
    /// selecting the proxy's workload, then the proxy's namespace, the service's namespace, the
    /// root namespace, then any other rule exported to the proxy; exact hosts before wildcards.
    pub fn destination_rule(
        &self,
        proxy: &Proxy,
        host: &str,
    ) -> Option<&Arc<ConfigEntry<DestinationRule>>> {
        let proxy_ns = proxy.namespace.as_str();
        let applicable = |dr: &&Arc<ConfigEntry<DestinationRule>>| {
            match &dr.spec.workload_selector {
                Some(sel) if !sel.match_labels.is_empty() => {
                    return dr.namespace == proxy_ns && selects(&sel.match_labels, &proxy.labels)
                }
                _ => {}
            }
            exported_to(&dr.spec.export_to, &dr.namespace, proxy_ns)
        };
        // The service's namespace decides only between several rules: looked up then (a
        // registry look-up per cluster and proxy was 4 % of a sync's instructions).
        let roots = || {
            let service_ns = self
                .services
                .service(host)
                .map(|s| s.namespace.as_str())
                .unwrap_or("");
            [proxy_ns, service_ns, self.mesh.root_namespace.as_str()]
        };
        let exact: Vec<_> = self
            .index
            .destination_rules
            .get(host)
            .into_iter()
            .flatten()
            .filter(applicable)
            .collect();
        if let Some(dr) = pick(exact, roots) {
            return Some(dr);
        }
        let wild: Vec<_> = self
            .index
            .wildcard_rules
            .iter()
            .filter(|(h, _)| host_matches(h, host))
            .map(|(_, dr)| dr)
            .filter(applicable)
            .collect();
        pick(wild, roots)
    }

    /// Whether a host's sidecar routes can differ between proxy namespaces beyond the
    /// short-name domains: a VirtualService or DestinationRule for it with a restricted
    /// `exportTo`, a route matching on `sourceNamespace`, or several DestinationRules (whose
    /// precedence depends on the proxy's namespace).
    pub(crate) fn routes_depend_on_namespace(&self, host: &str) -> bool {
        let public = |e: &[String]| e.iter().all(|x| x == "*");
        let exact = self
            .index
            .mesh_vs_by_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|i| &self.index.virtual_services[*i]);
        let wild = self
            .index
            .mesh_vs_wildcard
            .iter()
            .map(|i| &self.index.virtual_services[*i])
            .filter(|vs| vs.hosts.iter().any(|h| host_matches(h, host)));
        let sensitive_vs = exact.chain(wild).any(|vs| {
            !public(&vs.config.spec.export_to)
                || vs
                    .config
                    .spec
                    .http
                    .iter()
                    .flat_map(|r| r.r#match.iter())
                    .any(|m| !m.source_namespace.is_empty())
        });
        if sensitive_vs {
            return true;
        }
        let rules: Vec<_> = self
            .index
            .destination_rules
            .get(host)
            .into_iter()
            .flatten()
            .chain(
                self.index
                    .wildcard_rules
                    .iter()
                    .filter(|(h, _)| host_matches(h, host))
                    .map(|(_, dr)| dr),
            )
            .collect();
        rules.len() > 1 || rules.iter().any(|dr| !public(&dr.spec.export_to))
    }

    /// The Sidecar for a proxy: one in its namespace selecting its labels, else the
    /// namespace's selector-less one, else the root namespace's selector-less one.
    pub fn sidecar(&self, proxy: &Proxy) -> Option<&Arc<ConfigEntry<Sidecar>>> {
        let has_selector = |s: &Arc<ConfigEntry<Sidecar>>| {
            s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|w| !w.labels.is_empty())
        };
        let in_ns = self.index.sidecars.get(&proxy.namespace);
        if let Some(s) = in_ns.into_iter().flatten().find(|s| {
            has_selector(s)
                && selects(
                    &s.spec.workload_selector.as_ref().expect("checked").labels,
                    &proxy.labels,
                )
        }) {
            return Some(s);
        }
        if let Some(s) = in_ns.into_iter().flatten().find(|s| !has_selector(s)) {
            return Some(s);
        }
        self.index
            .sidecars
            .get(&self.mesh.root_namespace)
            .into_iter()
            .flatten()
            .find(|s| !has_selector(s))
    }

    /// Gateways whose selector matches the proxy's labels.
    pub fn gateways_for(&self, proxy: &Proxy) -> Vec<&Arc<ConfigEntry<Gateway>>> {
        self.index
            .gateways
            .iter()
            .filter(|g| !g.spec.selector.is_empty() && selects(&g.spec.selector, &proxy.labels))
            .collect()
    }
}

type Rule = Arc<ConfigEntry<DestinationRule>>;

/// Istio's precedence among applicable rules for one host: a workload-selecting rule, then
/// by namespace order (`roots`), then the first other one.
fn pick<'a, 'n>(rules: Vec<&'a Rule>, roots: impl FnOnce() -> [&'n str; 3]) -> Option<&'a Rule> {
    if rules.len() < 2 {
        return rules.first().copied();
    }
    if let Some(dr) = rules.iter().find(|dr| {
        dr.spec
            .workload_selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }) {
        return Some(*dr);
    }
    for ns in roots() {
        if let Some(dr) = rules.iter().find(|dr| dr.namespace == ns) {
            return Some(*dr);
        }
    }
    rules.first().copied()
}
