//! The Istio generator: CDS/EDS/LDS/RDS over the current PushContext, per proxy type, SDS
//! for gateways, and the config itself over MCP-over-xDS for other control planes.

use crate::context::PushContext;
use crate::proxy::{Proxy, ProxyType};
use crate::resource::{Resource, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use crate::{GenerateError, Generator, PushRequest, Subscription};
use arc_swap::ArcSwap;
use capstan_api::{Kind, Spec};
use std::sync::Arc;

/// Generates Istio-shaped xDS from the latest [`PushContext`].
pub struct IstioGenerator {
    ctx: ArcSwap<PushContext>,
    /// Cache reads of the contexts already replaced (each context counts its own).
    retired: std::sync::Mutex<crate::context::CacheStats>,
    /// The JWKS resolved by the control plane, for the next context ([`Self::set_jwks`]).
    jwks: ArcSwap<crate::context::JwksKeys>,
    /// The gateways' credentials (Kubernetes Secrets), served as SDS secrets.
    credentials: ArcSwap<crate::context::credentials::Credentials>,
    /// The config as MCP-over-xDS resources, shared by every subscriber.
    mcp: super::mcp::McpResources,
}

impl IstioGenerator {
    /// A generator starting at `ctx`.
    pub fn new(ctx: PushContext) -> IstioGenerator {
        IstioGenerator {
            jwks: ArcSwap::new(ctx.jwks.clone()),
            ctx: ArcSwap::from_pointee(ctx),
            retired: std::sync::Mutex::default(),
            credentials: ArcSwap::default(),
            mcp: super::mcp::McpResources::default(),
        }
    }

    /// Switches to a newer context (the next push generates from it).
    pub fn update(&self, ctx: PushContext) {
        let old = self.ctx.swap(Arc::new(ctx));
        let done = old.cache_stats();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.hits += done.hits;
        retired.misses += done.misses;
    }

    /// Cache reads since start, over every context (`capstan_xds_cache_reads` in `/metrics`). Reads
    /// made through a replaced context after its replacement are not counted.
    pub fn cache_stats(&self) -> crate::context::CacheStats {
        let now = self.ctx.load().cache_stats();
        let retired = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        crate::context::CacheStats {
            hits: retired.hits + now.hits,
            misses: retired.misses + now.misses,
        }
    }

    /// Switches to the context for `push`, built from the latest snapshots: indexes and
    /// shared resources of the current context are reused where the push leaves them valid
    /// ([`PushContext::next`]).
    pub fn advance(
        &self,
        config: Arc<capstan_config::Snapshot>,
        services: Arc<capstan_registry::IndexSnapshot>,
        push: &PushRequest,
    ) {
        let current = self.ctx.load_full();
        let endpoints_only = (!push.full).then_some(&push.eds_hosts);
        let next = current.next(config, services, endpoints_only, push.version);
        self.update(next.with_jwks(self.jwks.load_full()));
    }

    /// The JWKS the contexts from the next [`Self::advance`] on inline (the caller then asks
    /// for a full push).
    pub fn set_jwks(&self, keys: Arc<crate::context::JwksKeys>) {
        self.jwks.store(keys);
    }

    /// The credentials SDS serves from now on (the caller then pushes the changed Secrets'
    /// keys, `Secret/<namespace>/<name>`).
    pub fn set_credentials(&self, credentials: Arc<crate::context::credentials::Credentials>) {
        self.credentials.store(credentials);
    }

    /// The current context.
    pub fn context(&self) -> Arc<PushContext> {
        self.ctx.load_full()
    }
}

impl Generator for IstioGenerator {
    fn generate(
        &self,
        proxy: &Proxy,
        type_url: &str,
        subscription: &Subscription,
        push: &PushRequest,
    ) -> Result<Vec<Arc<Resource>>, GenerateError> {
        if type_url == SECRET {
            return Ok(super::sds::generate(
                &self.credentials.load(),
                proxy,
                subscription,
            ));
        }
        let ctx = self.ctx.load();
        if let Some(kind) = capstan_config::mcp::kind_of_type_url(type_url) {
            return Ok(self.mcp.resources(&ctx.config, kind));
        }
        // istiod takes the proxy's locality from the registry (its pod's Node) before the one
        // the proxy reports; EDS priorities are relative to it.
        let located = ctx.located(proxy);
        let proxy = &*located;
        let scope = ctx.scope(proxy);
        Ok(match type_url {
            CLUSTER => super::cds::generate(&ctx, proxy, &scope, subscription),
            ENDPOINT => super::eds::generate(&ctx, proxy, &scope, subscription, push),
            LISTENER => super::lds::generate(&ctx, proxy, &scope, subscription),
            ROUTE => super::rds::generate(&ctx, proxy, &scope, subscription),
            other => return Err(GenerateError(format!("unsupported type {other}"))),
        })
    }

    fn extra_types(&self) -> &'static [&'static str] {
        &capstan_config::mcp::TYPE_URLS
    }

    fn affects(&self, proxy: &Proxy, push: &PushRequest) -> bool {
        let ctx = self.ctx.load();
        if !push.full {
            let scope = ctx.scope(proxy);
            return push.eds_hosts.iter().any(|h| match proxy.proxy_type {
                ProxyType::Proxyless => ctx.services.service(h).is_some(),
                _ => scope.contains(h),
            });
        }
        if push.changed.is_empty() {
            return true;
        }
        let scope = ctx.scope(proxy);
        push.changed
            .iter()
            .any(|key| config_affects(&ctx, proxy, &scope, key))
    }
}

/// How a changed workload is named among a push's changed keys (`workload:<address>`).
const WORKLOAD_KEY_PREFIX: &str = "workload:";

/// Whether one changed key (`Kind/ns/name` or a hostname) can matter to the proxy.
fn config_affects(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &crate::context::ProxyScope,
    key: &str,
) -> bool {
    if let Some(address) = key.strip_prefix(WORKLOAD_KEY_PREFIX) {
        // The proxy's own workload concerns it: its Node's locality is the proxy's
        // (istiod pushes such a proxy update to the proxy).
        if proxy.ip_addresses.iter().any(|ip| ip == address) {
            return true;
        }
    }
    let parts: Vec<&str> = key.splitn(3, '/').collect();
    let [kind, ns, name] = parts.as_slice() else {
        // A hostname.
        return proxy.proxy_type != ProxyType::Sidecar || scope.contains(key);
    };
    if *kind == super::SECRET_KIND {
        // Only a proxy of the Secret's namespace is ever sent it.
        return *ns == proxy.namespace;
    }
    let Some(stored) = ctx
        .config
        .objects
        .iter()
        .find(|(k, _)| k.kind.name() == *kind && k.namespace == *ns && k.name == *name)
        .map(|(_, v)| v)
    else {
        // Deleted or unknown: be conservative.
        return true;
    };
    match (&stored.object.spec, stored.object.kind) {
        (Spec::VirtualService(vs), Kind::VirtualService) => {
            // A delegate has no hosts of its own: whoever uses its root may be affected.
            if proxy.proxy_type == ProxyType::Router || vs.is_delegate() {
                return true;
            }
            crate::context::exported_to(&vs.export_to, ns, &proxy.namespace)
                && vs.hosts.iter().any(|h| {
                    let h = ctx.resolve_host(h, ns);
                    scope
                        .hosts
                        .iter()
                        .any(|s| crate::context::host_matches(&h, s))
                })
        }
        (Spec::DestinationRule(dr), Kind::DestinationRule) => {
            let h = ctx.resolve_host(&dr.host, ns);
            crate::context::exported_to(&dr.export_to, ns, &proxy.namespace)
                && scope
                    .hosts
                    .iter()
                    .any(|s| crate::context::host_matches(&h, s))
        }
        (Spec::Sidecar(_), Kind::Sidecar) => {
            *ns == proxy.namespace || *ns == ctx.mesh.root_namespace
        }
        (Spec::Gateway(_), Kind::Gateway) => proxy.proxy_type == ProxyType::Router,
        _ => true,
    }
}
