//! The protocol-independent part of the ADS client: which types to subscribe, in Envoy's order,
//! and what to answer each response. Pure and sync; the Delta and SotW adapters turn its
//! [`Action`]s into requests.
//!
//! Envoy's order (`envoy/source/common/upstream/cds_api_helper.cc`, `lds_api.cc`): CDS first
//! (wildcard); after each CDS response, EDS for the EDS clusters it holds; LDS (wildcard) once the
//! first CDS response has been handled (accepted or rejected: Envoy's init continues on a rejected
//! first CDS too); after each LDS response, RDS for the route configurations the listeners name
//! and SDS for the secrets they name (gateway `credentialName`s, over ADS as istiod serves them).

use super::XdsStatus;
use crate::resources::{self, ResourceSink, Update};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

/// One response, as either protocol delivers it.
#[derive(Debug)]
pub(crate) struct Response {
    /// The response's type URL.
    pub type_url: String,
    /// SotW `version_info`; Delta `system_version_info`.
    pub version: String,
    /// The response's nonce.
    pub nonce: String,
    /// Resources added or replaced.
    pub updated: Vec<Update>,
    /// Names removed (Delta `removed_resources`).
    pub removed: Vec<String>,
    /// A SotW response of a wildcard type: every resource of the type is listed.
    pub state_of_the_world: bool,
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Subscribe to `type_url` or change its names. `names` is the full set (`None` for a
    /// wildcard subscription); `added`/`removed` the change since the last request of the type.
    /// `first` marks the type's first request on this stream.
    Subscribe {
        type_url: &'static str,
        names: Option<Vec<String>>,
        added: Vec<String>,
        removed: Vec<String>,
        first: bool,
    },
    /// ACK (`error` is `None`) or NACK a response. `version` is the version now held: the
    /// response's when accepted, the last accepted one when rejected.
    Ack {
        type_url: String,
        names: Option<Vec<String>>,
        version: String,
        nonce: String,
        error: Option<String>,
    },
}

/// Subscriptions and their order; lives across streams so a reconnect resubscribes.
pub(crate) struct Machine {
    sink: Arc<dyn ResourceSink>,
    status: Arc<XdsStatus>,
    /// EDS names subscribed (`None`: never subscribed).
    endpoints: Option<BTreeSet<String>>,
    /// RDS names subscribed.
    routes: Option<BTreeSet<String>>,
    /// SDS names subscribed.
    secrets: Option<BTreeSet<String>>,
    /// LDS subscribed (after the first CDS response).
    listeners: bool,
    /// Types requested on the current stream.
    sent: HashSet<&'static str>,
}

impl Machine {
    /// A machine with nothing subscribed.
    pub fn new(sink: Arc<dyn ResourceSink>, status: Arc<XdsStatus>) -> Machine {
        Machine {
            sink,
            status,
            endpoints: None,
            routes: None,
            secrets: None,
            listeners: false,
            sent: HashSet::new(),
        }
    }

    /// The sink's current versions of `type_url` (for Delta's `initial_resource_versions`).
    pub fn versions(&self, type_url: &str) -> Vec<(String, String)> {
        self.sink.versions(type_url)
    }

    /// The requests that open a stream: CDS, then whatever was subscribed on earlier streams,
    /// in Envoy's order.
    pub fn start(&mut self) -> Vec<Action> {
        self.sent.clear();
        let mut out = vec![self.wildcard(resources::CLUSTER)];
        if let Some(a) = self.named(resources::ENDPOINT) {
            out.push(a);
        }
        if self.listeners {
            out.push(self.wildcard(resources::LISTENER));
        }
        out.extend(self.named(resources::ROUTE));
        out.extend(self.named(resources::SECRET));
        out
    }

    fn wildcard(&mut self, type_url: &'static str) -> Action {
        let first = self.sent.insert(type_url);
        Action::Subscribe {
            type_url,
            names: None,
            added: Vec::new(),
            removed: Vec::new(),
            first,
        }
    }

    /// The subscription of a named type (EDS, RDS or SDS).
    fn names_mut(&mut self, type_url: &str) -> &mut Option<BTreeSet<String>> {
        match type_url {
            resources::ENDPOINT => &mut self.endpoints,
            resources::SECRET => &mut self.secrets,
            _ => &mut self.routes,
        }
    }

    /// The subscription names of `type_url` as an action's `names`.
    fn names_of(&self, type_url: &str) -> Option<Vec<String>> {
        let set = match type_url {
            resources::ENDPOINT => &self.endpoints,
            resources::ROUTE => &self.routes,
            resources::SECRET => &self.secrets,
            _ => return None,
        };
        Some(set.iter().flatten().cloned().collect())
    }

    /// Resends a named type's current subscription at the start of a stream. An empty name
    /// list is not sent: as a first request it would mean "wildcard".
    fn named(&mut self, type_url: &'static str) -> Option<Action> {
        let names: Vec<String> = self.names_mut(type_url).iter().flatten().cloned().collect();
        if names.is_empty() {
            return None;
        }
        self.sent.insert(type_url);
        Some(Action::Subscribe {
            type_url,
            added: names.clone(),
            names: Some(names),
            removed: Vec::new(),
            first: true,
        })
    }

    /// Brings a named type's subscription in line with `sink.wanted`. Names no longer wanted
    /// are dropped from the sink too, as Envoy drops the resources it unsubscribes from.
    fn resubscribe(&mut self, type_url: &'static str) -> Option<Action> {
        let wanted: BTreeSet<String> = self.sink.wanted(type_url).into_iter().collect();
        let old = self.names_mut(type_url).clone().unwrap_or_default();
        let added: Vec<String> = wanted.difference(&old).cloned().collect();
        let removed: Vec<String> = old.difference(&wanted).cloned().collect();
        let first_on_stream = !self.sent.contains(type_url);
        *self.names_mut(type_url) = Some(wanted.clone());
        if !removed.is_empty() {
            if let Err(e) = self.sink.apply(type_url, Vec::new(), &removed, false) {
                tracing::warn!(type_url, error = %e, "dropping unsubscribed resources failed");
            }
        }
        if first_on_stream {
            if wanted.is_empty() {
                return None;
            }
            self.sent.insert(type_url);
            let names: Vec<String> = wanted.into_iter().collect();
            return Some(Action::Subscribe {
                type_url,
                added: names.clone(),
                names: Some(names),
                removed: Vec::new(),
                first: true,
            });
        }
        if added.is_empty() && removed.is_empty() {
            return None;
        }
        Some(Action::Subscribe {
            type_url,
            names: Some(wanted.into_iter().collect()),
            added,
            removed,
            first: false,
        })
    }

    /// Applies one response and says what to send: subscription changes it causes, then its
    /// ACK or NACK.
    pub fn on_response(&mut self, r: Response) -> Vec<Action> {
        self.handle(r, None)
    }

    /// Rejects a response the protocol adapter could not read, without applying it.
    pub fn reject(&mut self, r: Response, error: String) -> Vec<Action> {
        self.handle(r, Some(error))
    }

    fn handle(&mut self, r: Response, unreadable: Option<String>) -> Vec<Action> {
        let known = resources::ORDER.into_iter().find(|t| *t == r.type_url);
        let result = match (unreadable, known) {
            (Some(e), _) => Err(e),
            (None, None) => Err(format!("unsupported type {}", r.type_url)),
            (None, Some(t)) => self
                .sink
                .apply(t, r.updated, &r.removed, r.state_of_the_world),
        };
        let error = result.err();
        let version = self
            .status
            .record(&r.type_url, &r.version, &r.nonce, error.as_deref());
        if let Some(e) = &error {
            tracing::warn!(type_url = %r.type_url, nonce = %r.nonce, error = %e, "xDS update rejected (NACK)");
        } else {
            tracing::debug!(type_url = %r.type_url, version = %r.version, "xDS update applied");
        }
        let mut out = Vec::new();
        // Secrets follow the listeners (and clusters: no cluster names one yet, so this only
        // keeps the subscription in step); RDS and SDS, like EDS, are never sent empty as a
        // first request, which would mean wildcard.
        match known {
            Some(resources::CLUSTER) => {
                out.extend(self.resubscribe(resources::ENDPOINT));
                out.extend(self.resubscribe(resources::SECRET));
            }
            Some(resources::LISTENER) => {
                out.extend(self.resubscribe(resources::ROUTE));
                out.extend(self.resubscribe(resources::SECRET));
            }
            _ => {}
        }
        out.push(Action::Ack {
            names: self.names_of(&r.type_url),
            type_url: r.type_url,
            version,
            nonce: r.nonce,
            error,
        });
        if known == Some(resources::CLUSTER) && !self.listeners {
            self.listeners = true;
            out.push(self.wildcard(resources::LISTENER));
        }
        out
    }
}
