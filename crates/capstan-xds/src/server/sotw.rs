//! State of the World ADS (`StreamAggregatedResources`): every response of a type carries the
//! whole subscribed set, except EDS-only pushes, which carry just the changed clusters (allowed
//! for EDS, which is not a wildcard type: absent resources are kept by the client).

use super::connection::{is_known_type, Ctx, Protocol, Reply, Track};
use crate::generate::{PushRequest, Subscription};
use crate::resource::{is_wildcard_type, ENDPOINT, PUSH_ORDER};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::BTreeMap;
use tonic::Status;
use tracing::warn;

/// Per type: what the proxy asked for and what it was last sent.
#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    track: Track,
    /// Name → version of what the proxy was last sent (ACKed or not: after a NACK, the same
    /// content is not sent again, only changed content).
    sent: BTreeMap<String, String>,
}

/// The SotW state machine of one stream.
#[derive(Debug, Default)]
pub(crate) struct Sotw {
    types: BTreeMap<String, TypeState>,
}

/// The subscription a SotW request expresses: no names means everything for LDS/CDS and
/// nothing for EDS/RDS; `*` is an explicit wildcard.
fn subscription(type_url: &str, names: &[String]) -> Subscription {
    let mut sub = Subscription {
        wildcard: names.is_empty() && is_wildcard_type(type_url),
        ..Subscription::default()
    };
    for name in names {
        if name == "*" {
            sub.wildcard = true;
        } else {
            sub.names.insert(name.clone());
        }
    }
    sub
}

/// Builds a response with the whole subscribed set, or `None` when nothing changed (and
/// `force` is false) or generation failed.
fn full_response(
    cx: &mut Ctx,
    type_url: &str,
    state: &mut TypeState,
    push: &PushRequest,
    force: bool,
) -> Option<DiscoveryResponse> {
    let resources = cx.generate(type_url, &state.sub, push)?;
    let now: BTreeMap<String, String> = resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    if !force && now == state.sent {
        return None;
    }
    state.sent = now;
    Some(response(cx, type_url, state, push, resources))
}

/// Builds a response with only the resources whose version changed (EDS-only pushes).
fn changed_response(
    cx: &mut Ctx,
    type_url: &str,
    state: &mut TypeState,
    push: &PushRequest,
) -> Option<DiscoveryResponse> {
    let mut resources = cx.generate(type_url, &state.sub, push)?;
    resources.retain(|r| state.sent.get(&r.name) != Some(&r.version));
    if resources.is_empty() {
        return None;
    }
    for r in &resources {
        state.sent.insert(r.name.clone(), r.version.clone());
    }
    Some(response(cx, type_url, state, push, resources))
}

fn response(
    cx: &mut Ctx,
    type_url: &str,
    state: &mut TypeState,
    push: &PushRequest,
    resources: Vec<crate::resource::Resource>,
) -> DiscoveryResponse {
    let version = push.version.to_string();
    let nonce = cx.sent(type_url, &mut state.track, version.clone(), resources.len());
    DiscoveryResponse {
        version_info: version,
        resources: resources.into_iter().map(|r| r.body).collect(),
        type_url: type_url.to_string(),
        nonce,
        ..DiscoveryResponse::default()
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const DELTA: bool = false;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        cx: &mut Ctx,
        req: DiscoveryRequest,
    ) -> Result<Vec<DiscoveryResponse>, Status> {
        cx.check_names(&req.type_url, req.resource_names.len())?;
        if !is_known_type(&req.type_url) {
            warn!(proxy = %cx.proxy.id, type_url = %req.type_url,
                "ignoring a request for a type Capstan does not serve");
            return Ok(Vec::new());
        }
        let type_url = req.type_url.as_str();
        let sub = subscription(type_url, &req.resource_names);
        let state = self.types.entry(type_url.to_string()).or_default();
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

    fn on_push(&mut self, cx: &mut Ctx, push: &PushRequest) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for type_url in PUSH_ORDER {
            if !push.full && type_url != ENDPOINT {
                continue;
            }
            let Some(state) = self.types.get_mut(type_url) else {
                continue;
            };
            // Never answered (generation failed at first): the client still waits for one.
            let force = state.track.nonce.is_empty();
            let resp = if push.full || force {
                full_response(cx, type_url, state, push, force)
            } else {
                changed_response(cx, type_url, state, push)
            };
            out.extend(resp);
        }
        out
    }

    fn tracks(&mut self) -> Vec<&mut Track> {
        self.types.values_mut().map(|t| &mut t.track).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{CLUSTER, LISTENER, ROUTE};

    #[test]
    fn empty_names_are_wildcard_only_for_lds_and_cds() {
        assert!(subscription(LISTENER, &[]).wildcard);
        assert!(subscription(CLUSTER, &[]).wildcard);
        assert!(!subscription(ENDPOINT, &[]).wildcard);
        assert!(!subscription(ROUTE, &[]).wildcard);
        let named = subscription(LISTENER, &["a:80".to_string()]);
        assert!(!named.wildcard && named.wants("a:80"));
        assert!(subscription(ENDPOINT, &["*".to_string()]).wildcard);
    }
}
