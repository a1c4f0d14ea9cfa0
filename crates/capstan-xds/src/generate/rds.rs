//! RDS: sidecar route configurations named by port (`9080`), one virtual host per service
//! with Istio's domains, VirtualService routes or the default route, and the catch-all host.

use super::common::{cluster_name, PASSTHROUGH_CLUSTER};
use super::rds_route::{default_route, virtual_service_routes, RouteCtx};
use crate::context::cache::{RouteKey, VhostKey};
use crate::context::{ProxyScope, PushContext};
use crate::proxy::{Proxy, ProxyType};
use crate::resource::Resource;
use crate::Subscription;
use capstan_api::networking::OutboundTrafficMode;
use capstan_registry::{Protocol, Service};
use envoy_types::pb::envoy::config::route::v3::{
    route, DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::google::protobuf::BoolValue;
use prost::Message;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Whether a port gets an HTTP route configuration (HTTP protocols, and sniffed ports).
pub fn routed(protocol: Protocol) -> bool {
    protocol.is_http() || protocol == Protocol::Unknown
}

/// Istio's domains for a service as seen from a sidecar in `proxy_ns` (istiod's
/// `generateVirtualHostDomains` for sidecars): the FQDN, the absolute FQDN (trailing dot),
/// the shorter forms of a Kubernetes name (`reviews` from the same namespace,
/// `reviews.default.svc`, `reviews.default`), then the VIPs — all without the port, which the
/// route configuration's `ignore_port_in_host_matching` strips from the request's host.
pub fn domains(svc: &Service, proxy_ns: &str, suffix: &str) -> Vec<String> {
    let host = svc.hostname.as_str();
    let mut names = vec![host.to_string()];
    if host.parse::<std::net::IpAddr>().is_err() {
        names.push(format!("{host}."));
    }
    if let Some(short) = host.strip_suffix(&format!(".svc.{suffix}")) {
        if let Some((name, _)) = short.split_once('.') {
            if svc.namespace == proxy_ns {
                names.push(name.to_string());
                names.push(format!("{short}.svc"));
                names.push(short.to_string());
            } else {
                names.push(short.to_string());
                names.push(format!("{short}.svc"));
            }
        }
    }
    names.extend(
        svc.addresses
            .iter()
            .filter(|a| a.as_str() != "0.0.0.0")
            .map(|a| match a.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => a.clone(),
            }),
    );
    names
}

/// The routes of a service's virtual host: the first applicable VirtualService's, else the
/// default route.
pub fn service_routes(rc: &RouteCtx<'_>, svc: &Service) -> Vec<Route> {
    for vs in rc
        .ctx
        .virtual_services_for_host(&rc.proxy.namespace, &svc.hostname)
    {
        let routes = virtual_service_routes(rc, vs);
        if !routes.is_empty() {
            return routes;
        }
    }
    // No VirtualService: the default route, hashing as the DestinationRule asks (Istio
    // applies a service's consistent hash to its default route too).
    let mut route = default_route(cluster_name("outbound", rc.port, "", &svc.hostname));
    if rc.proxy.proxy_type != crate::ProxyType::Proxyless {
        if let Some(route::Action::Route(a)) = route.action.as_mut() {
            super::rds_route::grpc_timeout_from_header(a);
        }
    }
    let own = capstan_api::networking::Destination {
        host: svc.hostname.clone(),
        subset: String::new(),
        port: Some(capstan_api::common::PortSelector {
            number: u32::from(rc.port),
        }),
    };
    if let (Some(h), Some(route::Action::Route(a))) =
        (rc.hash_policy(&own, &svc.namespace), route.action.as_mut())
    {
        a.hash_policy.push(h);
    }
    vec![route]
}

#[allow(deprecated)] // `max_grpc_timeout`, as istiod sets it
fn catch_all(policy: OutboundTrafficMode) -> VirtualHost {
    let (name, action) = match policy {
        OutboundTrafficMode::AllowAny => (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(
                    envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(
                        PASSTHROUGH_CLUSTER.into(),
                    ),
                ),
                timeout: Some(super::common::secs(0)),
                max_grpc_timeout: Some(super::common::secs(0)),
                ..RouteAction::default()
            }),
        ),
        OutboundTrafficMode::RegistryOnly => (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..DirectResponseAction::default()
            }),
        ),
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".into()],
        include_request_attempt_count: true,
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(super::rds_route::route_match(None)),
            action: Some(action),
            ..Route::default()
        }],
        ..VirtualHost::default()
    }
}

/// The ports that get sidecar route configurations.
pub fn routed_ports(scope: &ProxyScope) -> BTreeSet<u16> {
    scope
        .services
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter(|p| routed(p.protocol))
        .map(|p| p.port)
        .collect()
}

/// `RouteConfiguration.virtual_hosts`: a virtual host's field number in its configuration.
const VIRTUAL_HOSTS: u32 = 2;

/// One service's virtual host on `port`, encoded as a `virtual_hosts` entry of a route
/// configuration (field key, length, message), with a hash of the message; shared by every
/// proxy for which it is the same (see [`VhostKey`]), in any namespace, and by every route
/// configuration holding it.
fn shared_vhost(ctx: &PushContext, proxy: &Proxy, svc: &Service, port: u16) -> (bytes::Bytes, u64) {
    let key = VhostKey {
        host: svc.hostname.clone(),
        port,
        same_namespace: svc.namespace == proxy.namespace,
        namespace: ctx
            .routes_depend_on_namespace(&svc.hostname)
            .then(|| proxy.namespace.clone()),
        labels: (ctx.index.source_label_routes || ctx.index.workload_rules)
            .then(|| proxy.labels.clone()),
    };
    let hash = |bytes: &[u8], more: Option<u64>| {
        let mut hasher = crate::fast::content_hasher();
        std::hash::Hash::hash(bytes, &mut hasher);
        if let Some(more) = more {
            std::hash::Hasher::write_u64(&mut hasher, more);
        }
        std::hash::Hasher::finish(&hasher)
    };
    ctx.cache.vhost(key.clone(), || {
        // Encoded in two parts, concatenated in field order (so the bytes are exactly the
        // whole message's encoding): the name and domains, which depend on whether the proxy
        // shares the service's namespace, then the routes, which do not and are shared.
        let routes_key = VhostKey {
            same_namespace: false,
            ..key
        };
        let (routes, routes_hash) = ctx.cache.vhost_routes(routes_key, || {
            let rc = RouteCtx {
                ctx,
                proxy,
                port,
                gateway: "mesh",
            };
            let bytes = VirtualHost {
                routes: service_routes(&rc, svc),
                include_request_attempt_count: true,
                ..VirtualHost::default()
            }
            .encode_to_vec();
            let h = hash(&bytes, None);
            (bytes.into(), h)
        });
        let names = VirtualHost {
            name: format!("{}:{port}", svc.hostname),
            domains: domains(svc, &proxy.namespace, &ctx.mesh.domain_suffix),
            ..VirtualHost::default()
        }
        .encode_to_vec();
        let version = hash(&names, Some(routes_hash));
        (field_entry(VIRTUAL_HOSTS, &[&names, &routes]), version)
    })
}

/// A length-delimited field `tag` holding `parts` concatenated, in a buffer of exactly its
/// size (it is kept for the life of the push).
fn field_entry(tag: u32, parts: &[&[u8]]) -> bytes::Bytes {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut bytes = Vec::with_capacity(key_len(tag) + encoded_len_varint(len as u64) + len);
    encode_key(tag, WireType::LengthDelimited, &mut bytes);
    encode_varint(len as u64, &mut bytes);
    for p in parts {
        bytes.extend_from_slice(p);
    }
    bytes.into()
}

/// A sidecar's route configuration for `port`, shared by the proxies with the same scope
/// (and, when routes match on source labels, the same labels). It is assembled from the shared
/// virtual hosts: the configuration's own fields, then each virtual host as an encoded
/// `virtual_hosts` entry (protobuf allows fields in any order; decoders merge them). The
/// entries are the cached buffers themselves ([`Resource::from_parts`]), not a copy: the
/// configurations of a mesh's namespaces differ only in their own services' virtual hosts.
fn shared_route_config(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    port: u16,
) -> Arc<Resource> {
    let key = RouteKey {
        port,
        scope: ctx.scope_key(proxy),
        labels: (ctx.index.source_label_routes || ctx.index.workload_rules)
            .then(|| proxy.labels.clone()),
    };
    ctx.cache.route(key, || {
        let shell = RouteConfiguration {
            name: port.to_string(),
            validate_clusters: Some(BoolValue { value: false }),
            ignore_port_in_host_matching: true,
            ..RouteConfiguration::default()
        };
        let head = shell.encode_to_vec();
        // Versioned by the parts' hashes: hashing 500 KiB per namespace and push is avoidable.
        let mut version = crate::fast::content_hasher();
        std::hash::Hash::hash(&head, &mut version);
        let mut parts: Vec<bytes::Bytes> = scope
            .services
            .iter()
            .filter(|s| s.port(port).is_some_and(|p| routed(p.protocol)))
            .map(|svc| {
                let (entry, hash) = shared_vhost(ctx, proxy, svc, port);
                std::hash::Hasher::write_u64(&mut version, hash);
                entry
            })
            .collect();
        let catch_all = catch_all(scope.outbound_policy).encode_to_vec();
        std::hash::Hash::hash(&catch_all, &mut version);
        parts.push(field_entry(VIRTUAL_HOSTS, &[&catch_all]));
        Arc::new(Resource::from_parts(
            port.to_string(),
            crate::resource::ROUTE,
            &head,
            parts,
            std::hash::Hasher::finish(&version),
        ))
    })
}

/// Route configurations for a proxy.
pub fn generate(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &ProxyScope,
    sub: &Subscription,
) -> Vec<Arc<Resource>> {
    let configs: Vec<RouteConfiguration> = match proxy.proxy_type {
        ProxyType::Proxyless => sub
            .names
            .iter()
            .filter_map(|n| super::grpc::route_config(ctx, proxy, n))
            .collect(),
        // Never asked: Envoy's types are refused to config clients.
        ProxyType::ConfigClient => Vec::new(),
        ProxyType::Router => super::gateway::route_configs(ctx, proxy)
            .into_iter()
            .filter(|r| sub.wants(&r.name))
            .collect(),
        ProxyType::Sidecar => {
            let ports = routed_ports(scope);
            let wanted: Vec<u16> = if sub.wildcard {
                ports.into_iter().collect()
            } else {
                sub.names
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .filter(|p| ports.contains(p))
                    .collect()
            };
            return wanted
                .into_iter()
                .map(|p| shared_route_config(ctx, proxy, scope, p))
                .collect();
        }
    };
    configs
        .iter()
        .map(|r| Resource::shared(r.name.clone(), r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{route::Action, RouteAction, RouteMatch};

    /// A shared virtual host is its name and domains encoded, then its routes encoded: the
    /// same bytes as the whole message encoded at once.
    #[test]
    fn split_virtual_host_encoding_is_the_whole_encoding() {
        let whole = VirtualHost {
            name: "reviews.default.svc.cluster.local:9080".into(),
            domains: vec!["reviews".into(), "reviews:9080".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch::default()),
                action: Some(Action::Route(RouteAction::default())),
                ..Route::default()
            }],
            include_request_attempt_count: true,
            ..VirtualHost::default()
        };
        let mut split = VirtualHost {
            name: whole.name.clone(),
            domains: whole.domains.clone(),
            ..VirtualHost::default()
        }
        .encode_to_vec();
        split.extend(
            VirtualHost {
                routes: whole.routes.clone(),
                include_request_attempt_count: true,
                ..VirtualHost::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(split, whole.encode_to_vec());
    }
}
