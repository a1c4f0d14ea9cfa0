//! Buffer limits from config through `serve_connection`: what a request keeps of its body for a
//! retry is the route's `per_request_buffer_limit_bytes` (at most the listener's limit) or
//! `request_body_buffer_limit`, else the listener's `per_connection_buffer_limit_bytes`, as
//! Envoy's router; a body past it is not retried, whether it has a `content-length` or streams.

use super::replay_tests::{
    apply, apply_cluster, chunks, concat, post, post_all, upstream, Answer, WITHIN,
};
use super::tests::{hcm_config, prefix_route, start_limited};
use super::*;
use crate::resources::ROUTE;
use crate::stats::Stats;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, RetryPolicy, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use prost::Message;

/// A route's (or virtual host's) buffer limit fields.
#[derive(Clone, Copy, Default)]
struct Limits {
    per_request: Option<u32>,
    request_body: Option<u64>,
}

/// Route `80`: host `app`, everything to cluster `up` with two retries on `5xx`; the route has
/// `route` limits, its virtual host `vhost` ones.
#[allow(deprecated)]
fn apply_route(store: &Store, vhost: Limits, route: Limits) {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("up".into())),
        retry_policy: Some(RetryPolicy {
            retry_on: "5xx".into(),
            num_retries: Some(UInt32Value { value: 2 }),
            ..RetryPolicy::default()
        }),
        ..RouteAction::default()
    };
    let mut r = prefix_route("/", route::Action::Route(action));
    r.per_request_buffer_limit_bytes = route.per_request.map(|value| UInt32Value { value });
    r.request_body_buffer_limit = route.request_body.map(|value| UInt64Value { value });
    let rc = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![VirtualHost {
            name: "app".into(),
            domains: vec!["app".into()],
            routes: vec![r],
            per_request_buffer_limit_bytes: vhost.per_request.map(|value| UInt32Value { value }),
            request_body_buffer_limit: vhost.request_body.map(|value| UInt64Value { value }),
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    apply(store, ROUTE, "80", rc.encode_to_vec());
}

/// How a test sends its body.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// Whole, with a `content-length`.
    Sized,
    /// In chunks of 500 bytes, without a length (chunked HTTP/1.1, HTTP/2 without
    /// `content-length`).
    Streamed,
}

/// Posts `len` bytes through a proxy whose listener limit is `listener`, with the route's and
/// virtual host's limits, to an upstream that answers the first attempt 503. The status, how
/// many attempts the upstream saw (each with the whole body) and `retry_or_shadow_abandoned`.
async fn attempts(
    listener: usize,
    vhost: Limits,
    route: Limits,
    sent: Sent,
    len: usize,
    h2: bool,
) -> (u16, usize, u64) {
    let (up, seen) = upstream(vec![Answer::Unavailable]).await;
    let store = Store::new(Arc::new(Stats::default()));
    apply_cluster(&store, "up", &[up], false);
    apply_route(&store, vhost, route);
    let (addr, _drain) = start_limited(store.clone(), hcm_config(), listener).await;
    let body = chunks(len / 500, 500);
    let status = match sent {
        Sent::Sized => {
            let full = http_body_util::Full::new(concat(&body))
                .map_err(|e| match e {})
                .boxed();
            let resp = tokio::time::timeout(WITHIN, post(addr, full, h2))
                .await
                .expect("answered in time")
                .expect("a response");
            resp.status().as_u16()
        }
        Sent::Streamed => post_all(addr, body.clone(), None, h2).await,
    };
    let seen = seen.seen();
    for s in &seen {
        assert_eq!(s.body, concat(&body), "every attempt gets the whole body");
    }
    let abandoned = store.stats().cluster("up").retry_or_shadow_abandoned.get();
    (status, seen.len(), abandoned)
}

const DEFAULT: usize = crate::listener::DEFAULT_BUFFER_LIMIT;
const NONE: Limits = Limits {
    per_request: None,
    request_body: None,
};

#[tokio::test]
async fn a_route_limit_below_the_body_disables_its_retry() {
    let route = Limits {
        per_request: Some(1000),
        ..NONE
    };
    for h2 in [false, true] {
        for sent in [Sent::Sized, Sent::Streamed] {
            let case = format!("{sent:?} h2={h2}");
            // Within the route's 1000 bytes: retried with the whole body.
            assert_eq!(
                attempts(DEFAULT, NONE, route, sent, 1000, h2).await,
                (200, 2, 0),
                "{case}"
            );
            // Past them (well within the listener's 1 MiB): one attempt, its 503 returned.
            assert_eq!(
                attempts(DEFAULT, NONE, route, sent, 3000, h2).await,
                (503, 1, 1),
                "{case}"
            );
            // The virtual host's limit applies to a route without one.
            assert_eq!(
                attempts(DEFAULT, route, NONE, sent, 3000, h2).await,
                (503, 1, 1),
                "{case}: virtual host"
            );
            // Without any route limit, the listener's 1 MiB: retried.
            assert_eq!(
                attempts(DEFAULT, NONE, NONE, sent, 3000, h2).await,
                (200, 2, 0),
                "{case}: no route limit"
            );
        }
    }
}

#[tokio::test]
async fn the_listener_limit_applies_when_the_route_has_none() {
    for sent in [Sent::Sized, Sent::Streamed] {
        let case = format!("{sent:?}");
        // A listener limit of 1000 bytes (as istiod's 32 KiB on an EDGE gateway, scaled down).
        assert_eq!(
            attempts(1000, NONE, NONE, sent, 1000, false).await,
            (200, 2, 0),
            "{case}"
        );
        assert_eq!(
            attempts(1000, NONE, NONE, sent, 3000, false).await,
            (503, 1, 1),
            "{case}"
        );
        // `per_request_buffer_limit_bytes` cannot raise it...
        let per_request = Limits {
            per_request: Some(5000),
            ..NONE
        };
        assert_eq!(
            attempts(1000, NONE, per_request, sent, 3000, false).await,
            (503, 1, 1),
            "{case}: per_request_buffer_limit_bytes"
        );
        // ...`request_body_buffer_limit` can.
        let request_body = Limits {
            request_body: Some(5000),
            ..NONE
        };
        assert_eq!(
            attempts(1000, NONE, request_body, sent, 3000, false).await,
            (200, 2, 0),
            "{case}: request_body_buffer_limit"
        );
    }
}
