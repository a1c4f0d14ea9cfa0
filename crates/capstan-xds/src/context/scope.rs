//! What one proxy can see: services visible by `exportTo`, narrowed by its Sidecar's egress
//! hosts, and its outbound traffic policy.

use super::cache::{ByAddress, ScopeKey};
use super::{exported_to, host_matches, PushContext};
use crate::fast::FastSet;
use crate::proxy::Proxy;
use capstan_api::networking::OutboundTrafficMode;
use capstan_registry::Service;
use std::sync::Arc;

/// A proxy's view of the mesh for one push.
#[derive(Clone, Debug)]
pub struct ProxyScope {
    /// Visible services, sorted by hostname.
    pub services: Vec<Arc<Service>>,
    /// Their hostnames.
    pub hosts: FastSet<String>,
    /// ALLOW_ANY or REGISTRY_ONLY.
    pub outbound_policy: OutboundTrafficMode,
    /// The Sidecar that scoped it (`ns/name`), if any.
    pub sidecar: Option<String>,
}

impl ProxyScope {
    /// Whether `host` is in scope.
    pub fn contains(&self, host: &str) -> bool {
        self.hosts.contains(host)
    }
}

/// Whether an egress host `ns/host` of a Sidecar in `sidecar_ns` selects a service.
fn egress_selects(entry: &str, sidecar_ns: &str, service: &Service) -> bool {
    let (ns, host) = entry.split_once('/').unwrap_or(("*", entry));
    let ns_ok = match ns {
        "*" => true,
        "." => service.namespace == sidecar_ns,
        "~" => false,
        ns => service.namespace == ns,
    };
    ns_ok && host_matches(host, &service.hostname)
}

impl PushContext {
    /// The key of the proxy's scope in the cache: what the scope depends on.
    pub(crate) fn scope_key(&self, proxy: &Proxy) -> ScopeKey {
        ScopeKey {
            namespace: proxy.namespace.clone(),
            sidecar: self.sidecar(proxy).cloned().map(ByAddress),
        }
    }

    /// The proxy's scope (computed once per namespace and Sidecar per push).
    pub fn scope(&self, proxy: &Proxy) -> Arc<ProxyScope> {
        let key = self.scope_key(proxy);
        self.cache.scope(key, || self.compute_scope(proxy))
    }

    fn compute_scope(&self, proxy: &Proxy) -> ProxyScope {
        let sidecar = self.sidecar(proxy);
        let egress_hosts: Option<Vec<&str>> =
            sidecar.filter(|s| !s.spec.egress.is_empty()).map(|s| {
                s.spec
                    .egress
                    .iter()
                    .flat_map(|e| e.hosts.iter().map(String::as_str))
                    .collect()
            });
        let sidecar_ns = sidecar.map(|s| s.namespace.as_str()).unwrap_or("");
        // A root-namespace Sidecar's `.` means the proxy's own namespace.
        let egress_ns = if sidecar_ns == self.mesh.root_namespace {
            proxy.namespace.as_str()
        } else {
            sidecar_ns
        };
        let services: Vec<Arc<Service>> = self
            .services
            .services()
            .filter(|s| exported_to(&s.export_to, &s.namespace, &proxy.namespace))
            .filter(|s| match &egress_hosts {
                None => true,
                Some(hosts) => hosts.iter().any(|h| egress_selects(h, egress_ns, s)),
            })
            .cloned()
            .collect();
        let hosts = services.iter().map(|s| s.hostname.clone()).collect();
        let outbound_policy = sidecar
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
            .unwrap_or(self.mesh.outbound_traffic_policy);
        ProxyScope {
            services,
            hosts,
            outbound_policy,
            sidecar: sidecar.map(|s| format!("{}/{}", s.namespace, s.name)),
        }
    }
}
