//! Proxyless gRPC: for `xds:///HOST:PORT` the client asks LDS for `HOST:PORT`; it gets an
//! `api_listener` HttpConnectionManager reading route config `HOST:PORT` over ADS, with the
//! router filter last (and the fault filter when the routes inject faults).

use super::common::{any, hcm_rds, http_filters, ROUTER_FILTER};
use super::rds::service_routes;
use super::rds_route::RouteCtx;
use crate::context::{exported_to, PushContext};
use crate::proxy::Proxy;
use capstan_registry::Service;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use std::sync::Arc;

/// The service and port named by `host:port`, when visible to the proxy.
pub fn target<'a>(
    ctx: &'a PushContext,
    proxy: &Proxy,
    name: &str,
) -> Option<(&'a Arc<Service>, u16)> {
    let (host, port) = name.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = if host.contains('.') {
        host.to_string()
    } else {
        ctx.resolve_host(host, &proxy.namespace)
    };
    let svc = ctx.services.service(&host)?;
    if svc.port(port).is_none() || !exported_to(&svc.export_to, &svc.namespace, &proxy.namespace) {
        return None;
    }
    Some((svc, port))
}

fn has_fault(ctx: &PushContext, proxy: &Proxy, host: &str) -> bool {
    ctx.virtual_services_for_host(&proxy.namespace, host)
        .iter()
        .any(|vs| vs.has_fault())
}

/// The api_listener for `host:port`.
pub fn listener(ctx: &PushContext, proxy: &Proxy, name: &str) -> Option<Listener> {
    let (svc, _) = target(ctx, proxy, name)?;
    let fault = has_fault(ctx, proxy, &svc.hostname);
    // istiod's proxyless listener (grpcgen) has no upgrades (gRPC clients never upgrade) and
    // no stream idle timeout.
    let hcm = HttpConnectionManager {
        upgrade_configs: Vec::new(),
        stream_idle_timeout: None,
        ..hcm_rds(name, name, http_filters(false, fault))
    };
    debug_assert_eq!(
        hcm.http_filters.last().map(|f| f.name.as_str()),
        Some(ROUTER_FILTER)
    );
    Some(Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Listener::default()
    })
}

/// The route configuration `host:port`: one virtual host for that service.
pub fn route_config(ctx: &PushContext, proxy: &Proxy, name: &str) -> Option<RouteConfiguration> {
    let (svc, port) = target(ctx, proxy, name)?;
    let rc = RouteCtx {
        ctx,
        proxy,
        port,
        gateway: "mesh",
    };
    let mut domains = vec![name.to_string()];
    if let Some((host, _)) = name.rsplit_once(':') {
        domains.push(host.to_string());
    }
    Some(RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains,
            routes: service_routes(&rc, svc),
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    })
}
