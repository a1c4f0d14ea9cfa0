//! The push's cache of what does not depend on the individual proxy (Istio's XdsCache, scoped
//! to one [`PushContext`](super::PushContext) so that it never needs invalidating by hand).
//!
//! Generation asks the cache first; a miss generates and stores. The keys are exactly what the
//! generated resource depends on besides the context itself:
//!
//! | entry | key |
//! |---|---|
//! | a proxy's scope | proxy namespace, the Sidecar that applies |
//! | a service's outbound clusters | hostname, the DestinationRule that applies, proxyless or not |
//! | a cluster's load assignment | cluster name, the DestinationRule that applies (subsets, locality failover, and any rule when some rule sets TLS: endpoint `tlsMode` metadata follows it), the proxy's locality (locality failover only) |
//! | all load assignments of a host (endpoints-only pushes) | hostname, the DestinationRule that applies, the proxy's locality |
//! | a sidecar virtual host's routes (encoded) | as the virtual host, but never the namespace flag (the routes do not depend on it) |
//! | a sidecar virtual host (encoded as a `virtual_hosts` entry; route configurations share the buffer) | hostname, port, whether the proxy shares the service's namespace, the proxy's namespace when the host's VirtualServices or DestinationRules depend on it, labels as for routes |
//! | a sidecar's route configuration for a port | port, scope key, proxy labels if any VirtualService matches on source labels or any DestinationRule selects workloads |
//!
//! Config objects are keyed by their `Arc` (pointer identity, the `Arc` held by the key so an
//! address cannot be reused while the entry lives). A new context starts empty, except after
//! an endpoints-only push, when everything not derived from the changed hosts' endpoints is
//! carried over ([`Cache::carry_over`]).

use super::index::ConfigEntry;
use super::ProxyScope;
use crate::fast::FastMap;
use crate::generate::common::parse_outbound;
use crate::resource::Resource;
use capstan_api::networking::{DestinationRule, Sidecar};
use capstan_registry::Locality;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An `Arc` compared and hashed by address.
#[derive(Debug)]
pub(crate) struct ByAddress<T>(pub Arc<T>);

impl<T> Clone for ByAddress<T> {
    fn clone(&self) -> Self {
        ByAddress(self.0.clone())
    }
}

impl<T> PartialEq for ByAddress<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for ByAddress<T> {}

impl<T> Hash for ByAddress<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8).hash(state);
    }
}

/// The DestinationRule an entry was generated with.
pub(crate) type RuleKey = Option<ByAddress<ConfigEntry<DestinationRule>>>;

/// What a sidecar's scope depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ScopeKey {
    pub namespace: String,
    pub sidecar: Option<ByAddress<ConfigEntry<Sidecar>>>,
}

/// What a sidecar's route configuration for one port depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey {
    pub port: u16,
    pub scope: ScopeKey,
    /// The proxy's labels, only when some VirtualService matches on source labels or some
    /// DestinationRule selects workloads.
    pub labels: Option<BTreeMap<String, String>>,
}

/// What one sidecar virtual host (a service on a port) depends on besides the service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VhostKey {
    pub host: String,
    pub port: u16,
    /// Whether the proxy is in the service's namespace (short-name domains).
    pub same_namespace: bool,
    /// The proxy's namespace, only when the host's VirtualServices or DestinationRules make
    /// its routes depend on it (`exportTo`, `sourceNamespace`, several DestinationRules).
    pub namespace: Option<String>,
    /// The proxy's labels, only when some route depends on labels.
    pub labels: Option<BTreeMap<String, String>>,
}

type Shared = Arc<[Arc<Resource>]>;
/// Host → (rule, proxyless, the service's clusters).
type ClusterMap = FastMap<String, Vec<(RuleKey, bool, Shared)>>;
/// Cluster name → (rule, proxy locality for locality failover, its assignment if it has one).
type EndpointMap = FastMap<String, Vec<(RuleKey, Option<Locality>, Option<Arc<Resource>>)>>;
/// Host → (rule, proxy locality, the assignments of all its clusters).
type HostEndpointMap = FastMap<String, Vec<(RuleKey, Locality, Shared)>>;

/// Hits and misses, for benchmarks and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Look-ups answered from the cache.
    pub hits: u64,
    /// Look-ups that generated.
    pub misses: u64,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Cache {
    scopes: Mutex<FastMap<ScopeKey, Arc<ProxyScope>>>,
    clusters: Mutex<ClusterMap>,
    endpoints: Mutex<EndpointMap>,
    host_endpoints: Mutex<HostEndpointMap>,
    routes: Mutex<FastMap<RouteKey, Arc<Resource>>>,
    vhosts: Mutex<FastMap<VhostKey, (bytes::Bytes, u64)>>,
    vhost_routes: Mutex<FastMap<VhostKey, (bytes::Bytes, u64)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    fn hit<T>(&self, v: T) -> T {
        self.hits.fetch_add(1, Ordering::Relaxed);
        v
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The scope for `key`, made by `make` on a miss. The lock is not held while generating:
    /// two proxies missing at once both generate, and the first stored wins.
    pub fn scope(&self, key: ScopeKey, make: impl FnOnce() -> ProxyScope) -> Arc<ProxyScope> {
        if let Some(s) = lock(&self.scopes).get(&key) {
            return self.hit(s.clone());
        }
        self.miss();
        let made = Arc::new(make());
        lock(&self.scopes).entry(key).or_insert(made).clone()
    }

    /// A service's outbound clusters.
    pub fn clusters(
        &self,
        host: &str,
        rule: RuleKey,
        proxyless: bool,
        make: impl FnOnce() -> Vec<Arc<Resource>>,
    ) -> Shared {
        if let Some(list) = lock(&self.clusters).get(host) {
            if let Some((_, _, v)) = list.iter().find(|(r, p, _)| *r == rule && *p == proxyless) {
                return self.hit(v.clone());
            }
        }
        self.miss();
        let made: Shared = make().into();
        let mut map = lock(&self.clusters);
        let list = map.entry(host.to_string()).or_default();
        if let Some((_, _, v)) = list.iter().find(|(r, p, _)| *r == rule && *p == proxyless) {
            return v.clone();
        }
        list.push((rule, proxyless, made.clone()));
        made
    }

    /// A cluster's load assignment (`None`: the cluster has none). `locality` is the proxy's,
    /// when locality failover orders the endpoints for it.
    pub fn endpoints(
        &self,
        cluster: &str,
        rule: RuleKey,
        locality: Option<Locality>,
        make: impl FnOnce() -> Option<Arc<Resource>>,
    ) -> Option<Arc<Resource>> {
        let same = |(r, l, _): &&(RuleKey, Option<Locality>, _)| *r == rule && *l == locality;
        if let Some(list) = lock(&self.endpoints).get(cluster) {
            if let Some((_, _, v)) = list.iter().find(same) {
                return self.hit(v.clone());
            }
        }
        self.miss();
        let made = make();
        let mut map = lock(&self.endpoints);
        let list = map.entry(cluster.to_string()).or_default();
        if let Some((_, _, v)) = list.iter().find(same) {
            return v.clone();
        }
        list.push((rule, locality, made.clone()));
        made
    }

    /// Every load assignment of one host's clusters, as a proxy with DestinationRule `rule`
    /// and `locality` gets them (what an endpoints-only push sends for a changed host).
    pub fn host_endpoints(
        &self,
        host: &str,
        rule: RuleKey,
        locality: &Locality,
        make: impl FnOnce() -> Vec<Arc<Resource>>,
    ) -> Shared {
        let same = |(r, l, _): &&(RuleKey, Locality, _)| *r == rule && l == locality;
        if let Some(list) = lock(&self.host_endpoints).get(host) {
            if let Some((_, _, v)) = list.iter().find(same) {
                return self.hit(v.clone());
            }
        }
        self.miss();
        let made: Shared = make().into();
        let mut map = lock(&self.host_endpoints);
        let list = map.entry(host.to_string()).or_default();
        if let Some((_, _, v)) = list.iter().find(same) {
            return v.clone();
        }
        list.push((rule, locality.clone(), made.clone()));
        made
    }

    /// A sidecar route configuration.
    pub fn route(&self, key: RouteKey, make: impl FnOnce() -> Arc<Resource>) -> Arc<Resource> {
        if let Some(r) = lock(&self.routes).get(&key) {
            return self.hit(r.clone());
        }
        self.miss();
        let made = make();
        lock(&self.routes).entry(key).or_insert(made).clone()
    }

    /// A sidecar virtual host, encoded as a route configuration's `virtual_hosts` entry, with
    /// a hash of the message (route configurations are versioned from these). Route
    /// configurations hold these buffers as parts of their bodies, so a namespace's
    /// configuration costs a list of references, not a generation or a copy.
    pub fn vhost(
        &self,
        key: VhostKey,
        make: impl FnOnce() -> (bytes::Bytes, u64),
    ) -> (bytes::Bytes, u64) {
        if let Some(v) = lock(&self.vhosts).get(&key) {
            return self.hit(v.clone());
        }
        self.miss();
        let made = make();
        lock(&self.vhosts).entry(key).or_insert(made).clone()
    }

    /// The encoded fields of a sidecar virtual host after its name and domains (its routes),
    /// keyed like [`Cache::vhost`] with `same_namespace` always false: only the domains depend
    /// on it, so the first proxy of a namespace reuses the routes other namespaces generated.
    pub fn vhost_routes(
        &self,
        key: VhostKey,
        make: impl FnOnce() -> (bytes::Bytes, u64),
    ) -> (bytes::Bytes, u64) {
        debug_assert!(!key.same_namespace);
        if let Some(v) = lock(&self.vhost_routes).get(&key) {
            return self.hit(v.clone());
        }
        self.miss();
        let made = make();
        lock(&self.vhost_routes).entry(key).or_insert(made).clone()
    }

    /// The entries still valid after an endpoints-only change of `hosts` (same config, same
    /// services): everything except those hosts' clusters (DNS clusters embed endpoints) and
    /// load assignments. Scopes and routes depend on no endpoint.
    ///
    /// The entries are moved out, not copied: the context this cache belongs to is being
    /// replaced, and a proxy still generating from it finds the entries gone and generates
    /// them afresh (the cache only ever saves work), so the push does not pay for copying
    /// thousands of keys and dropping the originals.
    pub fn carry_over(&self, hosts: &BTreeSet<String>) -> Cache {
        let mut clusters = std::mem::take(&mut *lock(&self.clusters));
        clusters.retain(|host, _| !hosts.contains(host));
        let mut endpoints = std::mem::take(&mut *lock(&self.endpoints));
        endpoints.retain(|name, _| parse_outbound(name).is_none_or(|k| !hosts.contains(k.host)));
        Cache {
            scopes: Mutex::new(std::mem::take(&mut *lock(&self.scopes))),
            clusters: Mutex::new(clusters),
            endpoints: Mutex::new(endpoints),
            // Per-host groups serve the hosts an endpoints-only push changed: never carried.
            host_endpoints: Mutex::default(),
            routes: Mutex::new(std::mem::take(&mut *lock(&self.routes))),
            vhosts: Mutex::new(std::mem::take(&mut *lock(&self.vhosts))),
            vhost_routes: Mutex::new(std::mem::take(&mut *lock(&self.vhost_routes))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}
