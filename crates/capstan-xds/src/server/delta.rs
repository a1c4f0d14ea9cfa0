//! Delta ADS (`DeltaAggregatedResources`): per type, the server tracks which version of each
//! resource the client has, and sends only what differs plus the names that went away.

use super::connection::{Ctx, Protocol, Track};
use super::intern::Interner;
use super::sent::SentSet;
use super::wire::DeltaResponse;
use crate::fast::FastSet;
use crate::generate::{PushRequest, Subscription};
use crate::resource::{is_wildcard_type, is_xds_type, PUSH_ORDER};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::BTreeMap;
use tonic::Status;
use tracing::warn;

/// Per type: what the client subscribes to and which versions it has.
#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    track: Track,
    /// What the client has: from `initial_resource_versions` on (re)connect, then from what
    /// was sent. A NACKed response stays recorded, so the rejected content is resent only once
    /// it changes.
    client: SentSet,
}

/// The Delta state machine of one stream.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    types: BTreeMap<&'static str, TypeState>,
    /// Some subscribed type is not one of Envoy's (pushes look past [`PUSH_ORDER`] only then).
    extra_types: bool,
}

/// Applies a request's subscribe/unsubscribe lists; true when something new is wanted.
fn apply_subscription(
    names: &Interner,
    type_url: &str,
    state: &mut TypeState,
    first: bool,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
) -> bool {
    let mut grew = false;
    // The xDS legacy rule: a first LDS/CDS request without names is a wildcard subscription.
    if first && subscribe.is_empty() && is_wildcard_type(type_url) {
        state.sub.wildcard = true;
        grew = true;
    }
    let mut named = Vec::with_capacity(subscribe.len());
    for name in subscribe {
        if name == "*" {
            grew |= !state.sub.wildcard;
            state.sub.wildcard = true;
        } else {
            named.push(names.intern(name));
        }
    }
    grew |= state.sub.names.extend_names(named);
    let mut dropped_wildcard = false;
    let mut gone: Vec<&str> = Vec::with_capacity(unsubscribe.len());
    for name in &unsubscribe {
        if name == "*" {
            dropped_wildcard |= state.sub.wildcard;
            state.sub.wildcard = false;
        } else {
            gone.push(name);
        }
    }
    // Shared lists are rebuilt, not edited: all the names go in one new list each.
    if !gone.is_empty() {
        state.sub.names.remove_all(&gone);
        // The client forgets what it unsubscribed; if it subscribes again it gets it again.
        if !state.sub.wildcard {
            let gone: FastSet<&str> = gone.into_iter().collect();
            state.client.retain(|name| !gone.contains(name));
        }
    }
    if dropped_wildcard {
        let names = &state.sub.names;
        state.client.retain(|name| names.contains(name));
    }
    grew
}

/// Builds a response with the resources the client lacks or has at another version, and, when
/// `removals` (the generated set is complete), the names it has that no longer exist. `None`
/// when there is nothing to say (unless `force`) or generation failed.
fn diff_response(
    cx: &mut Ctx,
    type_url: &'static str,
    state: &mut TypeState,
    push: &PushRequest,
    removals: bool,
    force: bool,
) -> Option<DeltaResponse> {
    let resources = cx.generate(type_url, &state.sub, push)?;
    let removed: Vec<String> = if removals {
        let present: FastSet<&str> = resources.iter().map(|r| r.name.as_str()).collect();
        state
            .client
            .names()
            .filter(|name| !present.contains(name))
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    let changed: Vec<_> = resources
        .into_iter()
        .filter(|r| !state.client.has(r))
        .collect();
    if changed.is_empty() && removed.is_empty() && !force {
        return None;
    }
    state.client.apply(&changed, &removed);
    let version = push.version.to_string();
    let count = changed.len();
    // When the client has exactly what this response sends (a first response), the response
    // carries the stream's shared record of it instead of a list of its own: a thousand
    // proxies syncing at once then queue one list between them, not one each.
    let resources = match state.client.list_if_len(count) {
        Some(list) => list,
        None => changed.into(),
    };
    let nonce = cx.sent(type_url, &mut state.track, version.clone(), count);
    Some(DeltaResponse {
        system_version_info: version,
        resources,
        type_url,
        removed_resources: removed,
        nonce,
    })
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const DELTA: bool = true;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn on_request(
        &mut self,
        cx: &mut Ctx,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaResponse>, Status> {
        let names = req.resource_names_subscribe.len()
            + req.resource_names_unsubscribe.len()
            + req.initial_resource_versions.len();
        cx.check_names(&req.type_url, names)?;
        let Some(type_url) = cx.known_type(&req.type_url) else {
            warn!(proxy = %cx.proxy.id, type_url = %req.type_url,
                "ignoring a request for a type Capstan does not serve");
            return Ok(Vec::new());
        };
        cx.admit(type_url)?;
        let first = !self.types.contains_key(type_url);
        self.extra_types |= !is_xds_type(type_url);
        let state = self.types.entry(type_url).or_default();
        if first {
            state.client = SentSet::claimed(req.initial_resource_versions.into_iter().collect());
        }
        // ACK/NACK bookkeeping only: subscription changes are increments and must be applied
        // whatever nonce they carry, or the server and client would disagree on the set.
        cx.reply(
            type_url,
            &mut state.track,
            &req.response_nonce,
            req.error_detail.as_ref(),
        );
        let grew = apply_subscription(
            cx.interner(),
            type_url,
            state,
            first,
            req.resource_names_subscribe,
            req.resource_names_unsubscribe,
        );
        cx.subscribed(type_url, &state.sub);
        if !(first || grew) {
            return Ok(Vec::new());
        }
        let push = cx.request_push();
        // The first request of a type is always answered (possibly empty) so the client's
        // initialization, which waits for it, completes.
        Ok(diff_response(cx, type_url, state, &push, true, first)
            .into_iter()
            .collect())
    }

    fn on_push(&mut self, cx: &mut Ctx, push: &PushRequest, affected: bool) -> Vec<DeltaResponse> {
        let mut out = Vec::new();
        for type_url in PUSH_ORDER {
            if !affected || !push.needs(type_url) {
                continue;
            }
            let Some(state) = self.types.get_mut(type_url) else {
                continue;
            };
            // An EDS-only push generates only the changed hosts' clusters: absent ones are not
            // gone, so removals are computed on full pushes only.
            out.extend(diff_response(cx, type_url, state, push, push.full, false));
        }
        if !self.extra_types {
            return out;
        }
        for (&type_url, state) in self.types.iter_mut() {
            if is_xds_type(type_url) || !push.needs(type_url) {
                continue;
            }
            out.extend(diff_response(cx, type_url, state, push, push.full, false));
        }
        out
    }

    fn tracks(&mut self) -> Vec<&mut Track> {
        self.types.values_mut().map(|t| &mut t.track).collect()
    }

    fn earliest_awaiting(&self) -> Option<std::time::Instant> {
        self.types
            .values()
            .filter_map(|t| t.track.awaiting_since)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, CLUSTER, ROUTE};
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn legacy_wildcard_explicit_star_and_unsubscribe() {
        let i = Interner::default();
        let mut s = TypeState::default();
        assert!(apply_subscription(
            &i,
            CLUSTER,
            &mut s,
            true,
            vec![],
            vec![]
        ));
        assert!(s.sub.wildcard);
        let mut s = TypeState::default();
        assert!(!apply_subscription(&i, ROUTE, &mut s, true, vec![], vec![]));
        assert!(!s.sub.wildcard);
        assert!(apply_subscription(
            &i,
            ROUTE,
            &mut s,
            false,
            names(&["80", "*"]),
            vec![]
        ));
        let route = |n: &str| Resource::shared(n, &RouteConfiguration::default());
        s.client.apply(&[route("80"), route("90")], &[]);
        assert!(!apply_subscription(
            &i,
            ROUTE,
            &mut s,
            false,
            vec![],
            names(&["*"])
        ));
        assert_eq!(s.client.names().collect::<Vec<_>>(), vec!["80"]);
        apply_subscription(&i, ROUTE, &mut s, false, vec![], names(&["80"]));
        assert!(s.client.names().next().is_none() && s.sub.names.is_empty());
    }
}
