//! State of the World ADS (`StreamAggregatedResources`): every response of a type carries the
//! whole subscribed set, except EDS-only pushes, which carry just the changed clusters (allowed
//! for EDS, which is not a wildcard type: absent resources are kept by the client).

use super::connection::{Ctx, Protocol, Reply, Track};
use super::intern::Interner;
use super::sent::SentSet;
use super::wire::SotwResponse;
use crate::generate::{PushRequest, Subscription};
use crate::resource::{is_wildcard_type, is_xds_type, Resource, PUSH_ORDER};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;
use tracing::warn;

/// Per type: what the proxy asked for and what it was last sent.
#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    track: Track,
    /// What the proxy was last sent (ACKed or not: after a NACK, the same content is not sent
    /// again, only changed content).
    sent: SentSet,
}

/// The SotW state machine of one stream.
#[derive(Debug, Default)]
pub(crate) struct Sotw {
    types: BTreeMap<&'static str, TypeState>,
    /// Some subscribed type is not one of Envoy's (pushes look past [`PUSH_ORDER`] only then).
    extra_types: bool,
}

/// The subscription a SotW request expresses: no names means everything for LDS/CDS and
/// nothing for EDS/RDS; `*` is an explicit wildcard.
fn subscription(interner: &Interner, type_url: &str, names: Vec<String>) -> Subscription {
    let mut sub = Subscription {
        wildcard: names.is_empty() && is_wildcard_type(type_url),
        ..Subscription::default()
    };
    let mut named = Vec::with_capacity(names.len());
    for name in names {
        if name == "*" {
            sub.wildcard = true;
        } else {
            named.push(interner.intern(name));
        }
    }
    sub.names.extend_names(named);
    sub
}

/// Builds a response with the whole subscribed set, or `None` when nothing changed (and
/// `force` is false) or generation failed.
fn full_response(
    cx: &mut Ctx,
    type_url: &'static str,
    state: &mut TypeState,
    push: &PushRequest,
    force: bool,
) -> Option<SotwResponse> {
    let resources = cx.generate(type_url, &state.sub, push)?;
    if !force && state.sent.is_exactly(&resources) {
        return None;
    }
    state.sent.replace(&resources);
    Some(response(cx, type_url, state, push, resources))
}

/// Builds a response with only the resources whose version changed (EDS-only pushes).
fn changed_response(
    cx: &mut Ctx,
    type_url: &'static str,
    state: &mut TypeState,
    push: &PushRequest,
) -> Option<SotwResponse> {
    let mut resources = cx.generate(type_url, &state.sub, push)?;
    resources.retain(|r| !state.sent.has(r));
    if resources.is_empty() {
        return None;
    }
    state.sent.apply(&resources, &[]);
    Some(response(cx, type_url, state, push, resources))
}

fn response(
    cx: &mut Ctx,
    type_url: &'static str,
    state: &mut TypeState,
    push: &PushRequest,
    resources: Vec<Arc<Resource>>,
) -> SotwResponse {
    let version = push.version.to_string();
    let nonce = cx.sent(type_url, &mut state.track, version.clone(), resources.len());
    SotwResponse {
        version_info: version,
        resources,
        type_url,
        nonce,
    }
}

/// The response one push makes for one subscribed type, if any.
fn push_type(
    cx: &mut Ctx,
    type_url: &'static str,
    state: &mut TypeState,
    push: &PushRequest,
) -> Option<SotwResponse> {
    // Never answered (generation failed at first): the client still waits for one.
    let force = state.track.nonce.is_empty();
    if !force && !push.needs(type_url) {
        return None;
    }
    if push.full || force {
        full_response(cx, type_url, state, push, force)
    } else {
        changed_response(cx, type_url, state, push)
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const DELTA: bool = false;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }

    fn on_request(
        &mut self,
        cx: &mut Ctx,
        req: DiscoveryRequest,
    ) -> Result<Vec<SotwResponse>, Status> {
        cx.check_names(&req.type_url, req.resource_names.len())?;
        let Some(type_url) = cx.known_type(&req.type_url) else {
            warn!(proxy = %cx.proxy.id, type_url = %req.type_url,
                "ignoring a request for a type Capstan does not serve");
            return Ok(Vec::new());
        };
        cx.admit(type_url)?;
        let sub = subscription(cx.interner(), type_url, req.resource_names);
        self.extra_types |= !is_xds_type(type_url);
        let state = self.types.entry(type_url).or_default();
        let reply = cx.reply(
            type_url,
            &mut state.track,
            &req.response_nonce,
            req.error_detail.as_ref(),
        );
        match reply {
            // A NACK changes nothing: the proxy keeps its last accepted config, and resending
            // the same content would only be rejected again.
            Reply::Stale | Reply::Nack => Ok(Vec::new()),
            Reply::Ack if sub == state.sub => Ok(Vec::new()),
            Reply::Ack | Reply::Fresh => {
                // A changed subscription is always answered, even with an unchanged set:
                // the client waits for a response to its request.
                state.sub = sub;
                cx.subscribed(type_url, &state.sub);
                let push = cx.request_push();
                Ok(full_response(cx, type_url, state, &push, true)
                    .into_iter()
                    .collect())
            }
        }
    }

    fn on_push(&mut self, cx: &mut Ctx, push: &PushRequest, affected: bool) -> Vec<SotwResponse> {
        let mut out = Vec::new();
        if affected {
            for type_url in PUSH_ORDER {
                if let Some(state) = self.types.get_mut(type_url) {
                    out.extend(push_type(cx, type_url, state, push));
                }
            }
        }
        if !self.extra_types {
            return out;
        }
        for (&type_url, state) in self.types.iter_mut() {
            if !is_xds_type(type_url) {
                out.extend(push_type(cx, type_url, state, push));
            }
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
    use crate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

    #[test]
    fn empty_names_are_wildcard_only_for_lds_and_cds() {
        let i = Interner::default();
        assert!(subscription(&i, LISTENER, vec![]).wildcard);
        assert!(subscription(&i, CLUSTER, vec![]).wildcard);
        assert!(!subscription(&i, ENDPOINT, vec![]).wildcard);
        assert!(!subscription(&i, ROUTE, vec![]).wildcard);
        let named = subscription(&i, LISTENER, vec!["a:80".to_string()]);
        assert!(!named.wildcard && named.wants("a:80"));
        assert!(subscription(&i, ENDPOINT, vec!["*".to_string()]).wildcard);
    }
}
