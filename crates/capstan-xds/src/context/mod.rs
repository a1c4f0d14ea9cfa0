//! PushContext: one immutable, indexed snapshot of config and services, built once per push and
//! shared (by `Arc`) by every proxy's generation.

mod authn;
mod authz;
pub(crate) mod cache;
pub mod credentials;
mod delegate;
mod index;
mod request_authn;
mod scope;
mod workload;

pub use authn::{MutualTlsMode, WorkloadMtls};
pub use authz::WorkloadAuthz;
pub use cache::CacheStats;
pub(crate) use index::resolve_gateway;
pub use index::{ConfigEntry, VirtualServiceEntry};
pub use request_authn::{
    jwks_sources, JwksKeys, JwksSource, DEFAULT_JWKS_TIMEOUT, FAKE_JWKS, GATEWAY_NAME_LABEL,
};
pub use scope::ProxyScope;
pub use workload::ServiceTarget;

use capstan_api::networking::OutboundTrafficMode;
use capstan_config::Snapshot;
use capstan_registry::IndexSnapshot;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Mesh-wide settings (the parts of Istio's MeshConfig generation reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// DNS suffix of the cluster (`cluster.local`).
    pub domain_suffix: String,
    /// Istio's root namespace: its Sidecar and DestinationRules are mesh defaults.
    pub root_namespace: String,
    /// What sidecars do with traffic to unknown destinations (Istio's default: ALLOW_ANY).
    pub outbound_traffic_policy: OutboundTrafficMode,
    /// Istio's `enableAutoMtls` (default true): clusters without DestinationRule TLS use
    /// mutual TLS to endpoints that have a sidecar, plaintext to the others.
    pub enable_auto_mtls: bool,
    /// Istio's `trustDomain`: the `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` identities
    /// expected of upstream workloads.
    pub trust_domain: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            outbound_traffic_policy: OutboundTrafficMode::AllowAny,
            enable_auto_mtls: true,
            trust_domain: "cluster.local".into(),
        }
    }
}

/// The immutable state one push generates from.
#[derive(Debug)]
pub struct PushContext {
    /// Version of this state (increases per push).
    pub version: u64,
    /// Mesh settings.
    pub mesh: MeshConfig,
    /// The config snapshot it was built from.
    pub config: Arc<Snapshot>,
    /// The service snapshot it was built from.
    pub services: Arc<IndexSnapshot>,
    /// Indexes of `config`; shared with the next context when the config is the same.
    pub(crate) index: Arc<index::ConfigIndex>,
    /// What proxies of this push share (see [`cache`]).
    pub(crate) cache: cache::Cache,
    /// The JWKS the control plane fetched for the RequestAuthentications' `jwksUri`s (the
    /// generator inlines them, as istiod does); empty until a resolver sets it.
    pub(crate) jwks: Arc<JwksKeys>,
}

impl PushContext {
    /// Builds and indexes a context.
    pub fn new(
        config: Arc<Snapshot>,
        services: Arc<IndexSnapshot>,
        mesh: MeshConfig,
        version: u64,
    ) -> PushContext {
        let index = Arc::new(index::ConfigIndex::build(&config, &mesh));
        PushContext {
            version,
            mesh,
            config,
            services,
            index,
            cache: cache::Cache::default(),
            jwks: Arc::default(),
        }
    }

    /// The context after this one. The config indexes are reused when the config snapshot is
    /// the same one; when, besides, only the endpoints of `endpoints_of` changed (an EDS-only
    /// push; `None` for anything else), the shared resources not derived from those endpoints
    /// are carried over.
    pub fn next(
        &self,
        config: Arc<Snapshot>,
        services: Arc<IndexSnapshot>,
        endpoints_of: Option<&BTreeSet<String>>,
        version: u64,
    ) -> PushContext {
        let same_config = Arc::ptr_eq(&config, &self.config);
        let index = if same_config {
            self.index.clone()
        } else {
            Arc::new(index::ConfigIndex::build(&config, &self.mesh))
        };
        let cache = match endpoints_of {
            Some(hosts) if same_config && services.same_services(&self.services) => {
                self.cache.carry_over(hosts)
            }
            _ => cache::Cache::default(),
        };
        PushContext {
            version,
            mesh: self.mesh.clone(),
            config,
            services,
            index,
            cache,
            jwks: self.jwks.clone(),
        }
    }

    /// Hits and misses of this context's shared-resource cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Resolves a (possibly short) host name written in an object of `namespace` to a FQDN, as
    /// Istio does: `reviews` in `default` is `reviews.default.svc.<suffix>`; names with a dot and
    /// wildcards are kept.
    pub fn resolve_host(&self, host: &str, namespace: &str) -> String {
        resolve_host(host, namespace, &self.mesh.domain_suffix)
    }
}

/// See [`PushContext::resolve_host`].
pub fn resolve_host(host: &str, namespace: &str, suffix: &str) -> String {
    if host == "*" || host.contains('.') || namespace.is_empty() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{suffix}")
    }
}

/// Istio's `exportTo` visibility: empty or `*` is public, `.` is the owner's namespace, `~` is
/// nobody, otherwise a list of namespaces.
pub fn exported_to(export_to: &[String], owner_ns: &str, proxy_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner_ns == proxy_ns,
        "~" => false,
        ns => ns == proxy_ns,
    })
}

/// Whether `host` matches `pattern` (exact, `*`, or `*.suffix`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => false,
    }
}

/// Whether every selector label is among `labels` (an empty selector selects everything).
pub fn selects(
    selector: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_like_istio() {
        assert_eq!(
            resolve_host("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("api.example.com", "default", "cluster.local"),
            "api.example.com"
        );
        assert_eq!(resolve_host("*", "default", "cluster.local"), "*");
    }

    #[test]
    fn export_to_and_wildcards() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&s(&["."]), "a", "a"));
        assert!(!exported_to(&s(&["."]), "a", "b"));
        assert!(!exported_to(&s(&["~"]), "a", "a"));
        assert!(exported_to(&s(&["b"]), "a", "b"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.org"));
    }
}
