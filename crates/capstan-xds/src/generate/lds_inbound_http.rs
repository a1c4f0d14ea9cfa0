//! The HTTP connection manager of a `virtualInbound` chain, as istiod's
//! `buildSidecarInboundHTTPOpts` and `buildSidecarInboundHTTPRouteConfig` shape it: the
//! workload's security filters, then `fault`, `cors` and the router (istiod's
//! `buildHTTPConnectionManager` order, telemetry filters left out); the peer's certificate
//! appended to `x-forwarded-client-cert`; one inline route to the chain's cluster
//! (`BuildDefaultHTTPInboundRoute`).

use super::common::{
    any, hcm_filter, hcm_rds, secs, u32v, CORS_FILTER, FAULT_FILTER, ROUTER_FILTER,
};
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{
        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
    },
    http_filter, HttpFilter,
};
use envoy_types::pb::google::protobuf::BoolValue;
use prost::{Message, Name};

/// What one inbound HTTP chain serves.
pub struct InboundHttp<'a> {
    /// The connection manager's `stat_prefix` (`inbound_0.0.0.0_PORT`, or the passthrough
    /// cluster's name).
    pub stat_prefix: &'a str,
    /// The cluster requests go to; also the route configuration's name.
    pub cluster: &'a str,
    /// The port named by the virtual host, `inbound|http|PORT` (0 for the passthrough).
    pub port: u16,
    /// gRPC ports get no retry policy: `reset-before-request` does not suit streams.
    pub grpc: bool,
    /// The workload's RequestAuthentication and AuthorizationPolicy filters, first.
    pub security: &'a [HttpFilter],
}

fn http_filter<M: Message + Name>(name: &str, m: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(m))),
        ..HttpFilter::default()
    }
}

/// The HTTP filters: authentication and authorization, then fault and CORS (istiod adds them
/// inbound too, for per-route config), the router last.
fn filters(security: &[HttpFilter]) -> Vec<HttpFilter> {
    let mut out = security.to_vec();
    out.push(http_filter(FAULT_FILTER, &HttpFault::default()));
    out.push(http_filter(CORS_FILTER, &Cors {}));
    out.push(http_filter(ROUTER_FILTER, &Router::default()));
    out
}

/// Istio's inbound default route: every path to the cluster with no timeout, the stream bound
/// only by the client's `grpc-timeout` (`max_stream_duration` 0 s, `grpc_timeout_header_max`
/// 0 s), and two retries of requests the application never received
/// (`reset-before-request`), except on gRPC ports.
pub fn inbound_route(cluster: &str, grpc: bool) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(secs(0)),
            max_stream_duration: Some(route_action::MaxStreamDuration {
                max_stream_duration: Some(secs(0)),
                grpc_timeout_header_max: Some(secs(0)),
                ..route_action::MaxStreamDuration::default()
            }),
            retry_policy: (!grpc).then(|| RetryPolicy {
                retry_on: "reset-before-request".into(),
                num_retries: Some(u32v(2)),
                ..RetryPolicy::default()
            }),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// The connection manager network filter, routes inline (no RDS inbound).
pub fn connection_manager(h: &InboundHttp<'_>) -> Filter {
    let mut hcm = hcm_rds(h.stat_prefix, "", filters(h.security));
    // Istio's default proxy headers: append the mTLS peer's subject, URI and DNS SANs.
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        uri: true,
        dns: true,
        ..SetCurrentClientCertDetails::default()
    });
    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(RouteConfiguration {
        name: h.cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{}", h.port),
            domains: vec!["*".into()],
            routes: vec![inbound_route(h.cluster, h.grpc)],
            ..VirtualHost::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    }));
    hcm_filter(&hcm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_routes_do_not_retry() {
        let action = |grpc| match inbound_route("inbound|9080||", grpc).action {
            Some(route::Action::Route(a)) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            action(false)
                .retry_policy
                .map(|r| (r.retry_on, r.num_retries)),
            Some(("reset-before-request".to_string(), Some(u32v(2))))
        );
        assert!(action(true).retry_policy.is_none());
        assert_eq!(action(true).timeout, Some(secs(0)));
    }

    #[test]
    fn security_filters_come_first_and_the_router_last() {
        let rbac = HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            ..HttpFilter::default()
        };
        let names: Vec<String> = filters(&[rbac]).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.rbac",
                FAULT_FILTER,
                CORS_FILTER,
                ROUTER_FILTER
            ]
        );
    }
}
