//! The contract between the ADS server and resource generation.
//!
//! The server knows streams, subscriptions, nonces and versions; a [`Generator`] knows what each
//! proxy should have. Pushes are announced as [`PushRequest`]s; a connection that is busy merges
//! the requests that arrive meanwhile into one ([`PushRequest::merge`]), so newer state
//! supersedes queued older state and at most one push per connection is in flight.

pub mod authz;
pub mod cds;
pub mod cds_policy;
pub mod cds_tls;
pub mod common;
pub mod eds;
pub mod gateway;
pub mod grpc;
pub mod istio;
pub mod jwt;
pub mod lds;
pub mod lds_inbound;
pub mod lds_inbound_http;
pub mod lds_tcp;
pub mod locality_lb;
mod mcp;
pub mod rds;
pub mod rds_route;
pub mod sds;

use crate::proxy::Proxy;
use crate::resource::Resource;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Every stream's sets of subscribed names.
static NAME_LISTS: std::sync::LazyLock<crate::share::Lists<Arc<str>>> =
    std::sync::LazyLock::new(crate::share::Lists::default);

/// A set of resource names: sorted shared strings, kept in a list shared by every set with the
/// same names ([`crate::share`]): a thousand sidecars each subscribing to the same few thousand
/// EDS clusters hold one copy of each name and one list between them, a pointer each. A change
/// builds the next list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSet(Arc<[Arc<str>]>);

impl Default for NameSet {
    fn default() -> Self {
        NameSet(NAME_LISTS.empty())
    }
}

impl NameSet {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|n| (**n).cmp(name))
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Whether the resource's name is in the set (looked up where the last set held it first).
    fn contains_resource(&self, r: &Resource) -> bool {
        r.subscribed_at
            .search(&self.0, &r.name, |n| n.as_ref())
            .is_ok()
    }

    /// Adds `name`; true when it was not there.
    pub fn insert(&mut self, name: Arc<str>) -> bool {
        self.extend_names([name])
    }

    /// Adds many names at once (sorting once); true when any was new.
    pub fn extend_names(&mut self, names: impl IntoIterator<Item = Arc<str>>) -> bool {
        // Most requests (ACKs) carry none, and most names are already there: build a new list
        // only when something is new.
        let mut new: Vec<Arc<str>> = names
            .into_iter()
            .filter(|n| self.find(n).is_err())
            .collect();
        if new.is_empty() {
            return false;
        }
        new.extend(self.0.iter().cloned());
        new.sort_unstable();
        new.dedup();
        self.0 = NAME_LISTS.share(new);
        true
    }

    /// Removes `name`; true when it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.remove_all(&[name])
    }

    /// Removes every name of `names` at once (one new list); true when any was there.
    pub fn remove_all(&mut self, names: &[&str]) -> bool {
        if !names.iter().any(|n| self.find(n).is_ok()) {
            return false;
        }
        let gone: std::collections::HashSet<&str> = names.iter().copied().collect();
        let kept = self
            .0
            .iter()
            .filter(|n| !gone.contains(&***n))
            .cloned()
            .collect();
        self.0 = NAME_LISTS.share(kept);
        true
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.0.iter()
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both sets hold the same list (for tests of sharing).
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &NameSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromIterator<Arc<str>> for NameSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(iter: I) -> Self {
        let mut set = NameSet::default();
        set.extend_names(iter);
        set
    }
}

impl<'a> IntoIterator for &'a NameSet {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Which resources of one type a client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Everything of the type (LDS/CDS with no names, or Delta's `*`).
    pub wildcard: bool,
    /// Explicitly named resources (EDS cluster names, RDS route names, gRPC's LDS `host:port`).
    pub names: NameSet,
}

impl Subscription {
    /// True when `name` is wanted.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// True when the resource is wanted ([`Subscription::wants`] for a generated resource).
    pub fn wants_resource(&self, r: &Resource) -> bool {
        self.wildcard || self.names.contains_resource(r)
    }
}

/// Why a push happens and what it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushRequest {
    /// Version of the state to push (the PushContext version); increases.
    pub version: u64,
    /// Config or services changed: every type is recomputed for every proxy.
    pub full: bool,
    /// For a non-full push: the hostnames whose endpoints changed (EDS only, only clusters of
    /// these hosts are sent).
    pub eds_hosts: BTreeSet<String>,
    /// For a full push: the config keys / hostnames that changed, rendered (`VirtualService/default/reviews`,
    /// `reviews.default.svc.cluster.local`); empty means "unknown, assume everything". Generators
    /// use it to skip proxies whose scope contains none of them.
    pub changed: BTreeSet<String>,
}

impl PushRequest {
    /// Whether this push must regenerate `type_url`, like Istio's per-type "needs push"
    /// checks: an endpoints-only push concerns EDS only; a full push every type that depends
    /// on something that changed. Hostnames, workloads and unknown changes concern every type.
    pub fn needs(&self, type_url: &str) -> bool {
        if !self.full {
            return type_url == crate::resource::ENDPOINT;
        }
        self.changed.is_empty() || self.changed.iter().any(|key| key_concerns(key, type_url))
    }

    /// Combines a queued request with a newer one: the union of what both cover.
    pub fn merge(mut self, newer: PushRequest) -> PushRequest {
        self.version = self.version.max(newer.version);
        let full = self.full || newer.full;
        if full {
            // A full push recomputes everything; changed keys still narrow which proxies care,
            // unless either side did not know what changed.
            if (self.full && self.changed.is_empty()) || (newer.full && newer.changed.is_empty()) {
                self.changed.clear();
            } else {
                self.changed.extend(newer.changed);
            }
            self.changed.extend(self.eds_hosts.iter().cloned());
            self.changed.extend(newer.eds_hosts);
            self.eds_hosts.clear();
        } else {
            self.eds_hosts.extend(newer.eds_hosts);
        }
        self.full = full;
        self
    }
}

/// Whether a changed key (`Kind/namespace/name`, a hostname, `workload:<address>`) can change
/// resources of `type_url`. Clusters and their endpoints depend on services, DestinationRules,
/// ServiceEntries, WorkloadEntries and Sidecars, not on routing (VirtualService, Gateway).
/// Secrets (SDS) depend on Kubernetes Secrets only, and Secrets on nothing else: a config change
/// that makes a gateway name a new secret reaches it through the gateway's new subscription.
/// Istio config served as itself (MCP-over-xDS types) depends on its own kind's objects only.
fn key_concerns(key: &str, type_url: &str) -> bool {
    use crate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
    let kind = key.split_once('/').map(|(kind, _)| kind);
    match type_url {
        LISTENER | ROUTE | CLUSTER | ENDPOINT => match kind {
            Some("VirtualService" | "Gateway") => type_url == LISTENER || type_url == ROUTE,
            Some(SECRET_KIND) => false,
            _ => true,
        },
        SECRET => kind == Some(SECRET_KIND),
        config => {
            capstan_config::mcp::kind_of_type_url(config).is_none_or(|k| kind == Some(k.name()))
        }
    }
}

/// The kind of the changed keys that name Kubernetes Secrets: `Secret/<namespace>/<name>`.
pub const SECRET_KIND: &str = "Secret";

/// Why generation failed (the server logs it and keeps the proxy on its last config).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GenerateError(pub String);

/// Produces the resources a proxy should have.
pub trait Generator: Send + Sync + 'static {
    /// Resources of `type_url` for `proxy`. For a wildcard subscription: everything the proxy
    /// should have; for names: those of the names that exist (absent names are simply missing).
    /// For a non-full EDS push, only clusters of `push.eds_hosts` need to be returned; the server
    /// then updates only those.
    fn generate(
        &self,
        proxy: &Proxy,
        type_url: &str,
        subscription: &Subscription,
        push: &PushRequest,
    ) -> Result<Vec<Arc<Resource>>, GenerateError>;

    /// Whether `push` can change anything `proxy` has of Envoy's xDS types (scoping by Sidecar
    /// and exportTo). The default is conservative: yes. [`Generator::extra_types`] are not
    /// gated by it: they are regenerated whenever the push [needs](PushRequest::needs) them.
    fn affects(&self, _proxy: &Proxy, _push: &PushRequest) -> bool {
        true
    }

    /// Type URLs served besides Envoy's xDS types ([`crate::resource::PUSH_ORDER`]), pushed
    /// after them (in type URL order): for the Istio generator, Istio's config as MCP-over-xDS
    /// resources. Subscribing to them does not need a proxy's node: a node id the server
    /// cannot parse as a proxy's may still subscribe to these (and only these).
    fn extra_types(&self) -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> BTreeSet<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    /// Sets of the same names hold one list, whichever order the names came in; a change
    /// makes the next list, leaving the other sets as they were.
    #[test]
    fn name_sets_with_the_same_names_share_one_list() {
        let names: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("n{i:02}"))).collect();
        let a: NameSet = names.iter().cloned().collect();
        let mut b = NameSet::default();
        b.extend_names(names[25..].iter().cloned());
        assert!(b.extend_names(names[..25].iter().rev().cloned()));
        assert!(!b.extend_names(names[..3].iter().cloned()), "nothing new");
        assert!(a.shares_with(&b));
        assert!(b.remove("n07"));
        assert!(!a.shares_with(&b));
        assert!(a.contains("n07") && !b.contains("n07") && b.len() == 49);
        assert!(b.insert(names[7].clone()));
        assert!(a.shares_with(&b));
        let sorted: Vec<&str> = a.iter().map(|n| &**n).collect();
        let mut want = sorted.clone();
        want.sort_unstable();
        assert_eq!(sorted, want);
    }

    #[test]
    fn eds_pushes_merge_by_union_and_full_wins() {
        let a = PushRequest {
            version: 1,
            full: false,
            eds_hosts: hosts(&["a"]),
            changed: BTreeSet::new(),
        };
        let b = PushRequest {
            version: 2,
            full: false,
            eds_hosts: hosts(&["b"]),
            changed: BTreeSet::new(),
        };
        let m = a.clone().merge(b);
        assert_eq!(
            (m.version, m.full, m.eds_hosts),
            (2, false, hosts(&["a", "b"]))
        );
        let full = PushRequest {
            version: 3,
            full: true,
            eds_hosts: BTreeSet::new(),
            changed: hosts(&["VirtualService/default/reviews"]),
        };
        let m = a.merge(full);
        assert!(m.full && m.eds_hosts.is_empty());
        assert_eq!(m.changed, hosts(&["VirtualService/default/reviews", "a"]));
    }

    /// Subscriptions of different contents asked in turn about one resource answer exactly
    /// (the remembered index is only tried first).
    #[test]
    fn wanted_resources_are_found_whatever_the_last_set_was() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let sub = |names: &[&str]| Subscription {
            wildcard: false,
            names: names.iter().map(|n| Arc::from(*n)).collect(),
        };
        let (big, small, other) = (sub(&["a", "b", "c"]), sub(&["b"]), sub(&["a", "c"]));
        let b = Resource::new("b", &Cluster::default());
        for _ in 0..2 {
            assert!(big.wants_resource(&b));
            assert!(small.wants_resource(&b));
            assert!(!other.wants_resource(&b));
            assert!(!Subscription::default().wants_resource(&b));
        }
        let all = Subscription {
            wildcard: true,
            ..Subscription::default()
        };
        assert!(all.wants_resource(&b));
    }

    #[test]
    fn name_sets_stay_sorted_and_unique() {
        let mut set: NameSet = ["b", "a", "b"].into_iter().map(Arc::from).collect();
        assert_eq!(set.len(), 2);
        assert!(set.insert(Arc::from("c")) && !set.insert(Arc::from("a")));
        assert!(!set.extend_names(["a", "c"].into_iter().map(Arc::from)));
        assert!(set.extend_names(["0"].into_iter().map(Arc::from)));
        assert!(set.remove("b") && !set.remove("b"));
        let names: Vec<&str> = set.iter().map(|n| &**n).collect();
        assert_eq!(names, ["0", "a", "c"]);
        assert!(set.contains("c") && !set.contains("b"));
    }

    #[test]
    fn routing_changes_need_no_clusters_or_endpoints() {
        use crate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
        let push = |keys: &[&str]| PushRequest {
            version: 1,
            full: true,
            changed: hosts(keys),
            ..PushRequest::default()
        };
        let vs = push(&["VirtualService/default/reviews", "Gateway/istio-system/gw"]);
        assert!(vs.needs(LISTENER) && vs.needs(ROUTE));
        assert!(!vs.needs(CLUSTER) && !vs.needs(ENDPOINT));
        for other in [
            "DestinationRule/default/reviews",
            "Sidecar/default/default",
            "reviews.default.svc.cluster.local",
            "workload:10.0.0.1",
        ] {
            let p = push(&["VirtualService/default/reviews", other]);
            assert!([CLUSTER, ENDPOINT, LISTENER, ROUTE]
                .iter()
                .all(|t| p.needs(t)));
        }
        assert!(
            push(&[]).needs(CLUSTER),
            "unknown changes concern everything"
        );
        use crate::resource::SECRET;
        let secret = push(&["Secret/gw/site-cert"]);
        assert!(secret.needs(SECRET));
        assert!(![CLUSTER, ENDPOINT, LISTENER, ROUTE]
            .iter()
            .any(|t| secret.needs(t)));
        assert!(!push(&["reviews.default.svc.cluster.local", "DestinationRule/a/b"]).needs(SECRET));
        assert!(push(&[]).needs(SECRET));
        let eds = PushRequest {
            eds_hosts: hosts(&["a"]),
            ..PushRequest::default()
        };
        assert!(eds.needs(ENDPOINT) && !eds.needs(CLUSTER) && !eds.needs(ROUTE));
    }

    #[test]
    fn config_types_need_only_changes_of_their_kind() {
        use crate::resource::CLUSTER;
        use capstan_config::mcp::type_url;
        let push = |keys: &[&str]| PushRequest {
            version: 1,
            full: true,
            changed: hosts(keys),
            ..PushRequest::default()
        };
        let vs = type_url(capstan_api::Kind::VirtualService);
        let dr = type_url(capstan_api::Kind::DestinationRule);
        let change = push(&["VirtualService/default/reviews"]);
        assert!(change.needs(vs) && !change.needs(dr));
        for other in [
            "reviews.default.svc.cluster.local",
            "workload:10.0.0.1",
            "Secret/gw/cert",
        ] {
            let p = push(&[other]);
            assert!(!p.needs(vs), "{other}");
            assert!(p.needs(CLUSTER) != other.starts_with("Secret"), "{other}");
        }
        assert!(push(&[]).needs(vs), "unknown changes concern everything");
        let eds = PushRequest {
            eds_hosts: hosts(&["a"]),
            ..PushRequest::default()
        };
        assert!(!eds.needs(vs));
    }

    #[test]
    fn an_unknown_full_push_stays_unknown() {
        let unknown = PushRequest {
            version: 1,
            full: true,
            ..PushRequest::default()
        };
        let known = PushRequest {
            version: 2,
            full: true,
            changed: hosts(&["x"]),
            ..PushRequest::default()
        };
        assert!(unknown.merge(known).changed.is_empty());
    }
}
