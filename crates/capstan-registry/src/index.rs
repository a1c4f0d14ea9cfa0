//! The aggregate service index: every registry's services, endpoints and workloads merged by
//! hostname into immutable snapshots, with incremental events for what changed.
//!
//! Merge rules (documented in docs/architecture.md):
//! - a service's attributes (ports, VIPs, resolution...) come from the registry of highest
//!   precedence that defines the hostname ([`RegistryKind`] order: Kubernetes, ServiceEntry,
//!   Consul, File; then by registry name);
//! - endpoints of a (hostname, port) are the union over all registries, deduplicated;
//! - a workload address maps to the workload of highest precedence.
//!
//! Many hostnames may share endpoints at one address (coarse-grained services: one process
//! hosting several logical services); [`IndexSnapshot::services_at`] answers which.

use crate::model::{Endpoint, RegistryKind, Service, Workload};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

mod cowmap;
use cowmap::CowMap;

/// Identifies one registry instance (there may be several Consul or file registries).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RegistryId {
    /// Kind, which sets precedence.
    pub kind: RegistryKind,
    /// Name, unique within the kind (`consul@127.0.0.1:8500`, `file:/etc/capstan/registry.yaml`).
    pub name: String,
}

/// Key of an endpoint set: hostname and service port.
pub type EndpointKey = (String, u16);

/// Everything one registry knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryState {
    /// Services by hostname.
    pub services: BTreeMap<String, Service>,
    /// Endpoints by (hostname, service port).
    pub endpoints: BTreeMap<EndpointKey, Vec<Endpoint>>,
    /// Workloads by name (`namespace/name`).
    pub workloads: BTreeMap<String, Workload>,
}

/// A change to the merged view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RegistryEvent {
    /// A hostname appeared.
    ServiceAdded(String),
    /// A hostname's merged service changed.
    ServiceChanged(String),
    /// A hostname disappeared.
    ServiceRemoved(String),
    /// The merged endpoints of (hostname, port) changed.
    EndpointsChanged(String, u16),
    /// The workload at an address changed (added, removed, or different).
    WorkloadChanged(String),
}

/// An immutable merged view.
#[derive(Clone, Debug, Default)]
pub struct IndexSnapshot {
    /// Increases with every change to the merged view.
    pub version: u64,
    // Every change publishes a new snapshot while readers may still hold the old one, so the
    // maps are shared copy-on-write: publishing costs O(touched keys), not O(mesh size).
    services: Arc<BTreeMap<String, Arc<Service>>>,
    endpoints: CowMap<EndpointKey, Arc<[Endpoint]>>,
    workloads: CowMap<String, Arc<Workload>>,
    /// Address → (hostname, how many of the host's ports have an endpoint there), sorted by
    /// hostname. A small vector: most addresses serve one host, and a B-tree node per address
    /// would cost ~300 bytes each on a 50,000-endpoint mesh.
    services_by_address: CowMap<String, Arc<Vec<(String, u32)>>>,
}

impl IndexSnapshot {
    /// All services, by hostname.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// Whether `other` has exactly this snapshot's services (the same shared map: no service
    /// changed between the two; endpoints and workloads may have).
    pub fn same_services(&self, other: &IndexSnapshot) -> bool {
        Arc::ptr_eq(&self.services, &other.services)
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The service with this hostname.
    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.services.get(hostname)
    }

    /// Endpoints of (hostname, port) whose labels include every `subset` label.
    pub fn endpoints<'a>(
        &'a self,
        hostname: &str,
        port: u16,
        subset: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .get(&(hostname.to_string(), port))
            .into_iter()
            .flat_map(|e| e.iter())
            .filter(move |e| subset.iter().all(|(k, v)| e.meta.labels.get(k) == Some(v)))
    }

    /// All endpoints of (hostname, port), shared.
    pub fn endpoint_set(&self, hostname: &str, port: u16) -> Option<&Arc<[Endpoint]>> {
        self.endpoints.get(&(hostname.to_string(), port))
    }

    /// Every workload once (a workload with several addresses is indexed under each).
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        let mut seen = std::collections::HashSet::new();
        self.workloads
            .shards
            .iter()
            .flat_map(|shard| shard.values())
            .filter(move |w| seen.insert((w.registry, w.namespace.as_str(), w.name.as_str())))
    }

    /// The workload that has this address.
    pub fn workload_by_ip(&self, address: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(address)
    }

    /// Hostnames with an endpoint at this address (coarse-grained services share one).
    pub fn services_at(&self, address: &str) -> impl Iterator<Item = &String> {
        self.services_by_address
            .get(address)
            .into_iter()
            .flat_map(|s| s.iter().map(|(host, _)| host))
    }
}

/// Keyed changes to one registry's state, for [`ServiceIndex::apply`]: `Some` sets a key,
/// `None` removes it (later entries for a key replace earlier ones, as sequential writes
/// would). Applying costs O(changed keys), where [`ServiceIndex::update`] has to compare the
/// registry's whole state — what a watch adapter wants on large meshes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryDelta {
    /// Services by hostname.
    pub services: BTreeMap<String, Option<Service>>,
    /// Endpoints by (hostname, service port).
    pub endpoints: BTreeMap<EndpointKey, Option<Vec<Endpoint>>>,
    /// Workloads by name.
    pub workloads: BTreeMap<String, Option<Workload>>,
}

/// Sets or removes `key` unless it already has that value; the previous value if it changed.
fn set_key<K: Ord, V: PartialEq + ?Sized>(
    map: &mut BTreeMap<K, Arc<V>>,
    key: K,
    value: Option<Arc<V>>,
) -> Option<Option<Arc<V>>> {
    if map.get(&key).map(|v| &**v) == value.as_deref() {
        return None;
    }
    Some(match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    })
}

/// One registry's state as the index keeps it: every value is an `Arc` the merged view
/// shares, so a service, endpoint set or workload that only one registry has (nearly all of
/// them) is held once, not once per registry state and again in the merged view.
#[derive(Debug, Default)]
struct Stored {
    services: BTreeMap<String, Arc<Service>>,
    endpoints: BTreeMap<EndpointKey, Arc<[Endpoint]>>,
    workloads: BTreeMap<String, Arc<Workload>>,
}

impl From<RegistryState> for Stored {
    fn from(state: RegistryState) -> Stored {
        Stored {
            services: state
                .services
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
            endpoints: state
                .endpoints
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
            workloads: state
                .workloads
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        }
    }
}

impl Stored {
    /// A copy as a plain [`RegistryState`].
    fn to_state(&self) -> RegistryState {
        RegistryState {
            services: self
                .services
                .iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect(),
            workloads: self
                .workloads
                .iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect(),
        }
    }
}

impl RegistryDelta {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.endpoints.is_empty() && self.workloads.is_empty()
    }

    /// Applies the changes to `state` directly (without an index).
    pub fn apply_to(self, state: &mut RegistryState) {
        fn set<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
        for (host, service) in self.services {
            set(&mut state.services, host, service);
        }
        for (key, endpoints) in self.endpoints {
            set(&mut state.endpoints, key, endpoints);
        }
        for (name, workload) in self.workloads {
            set(&mut state.workloads, name, workload);
        }
    }

    /// The keyed changes that turn the stored `before` into `after`.
    fn between(before: &Stored, after: &RegistryState) -> RegistryDelta {
        fn keyed<K, T, A, V>(
            before: &BTreeMap<K, A>,
            after: &BTreeMap<K, V>,
        ) -> BTreeMap<K, Option<V>>
        where
            K: Ord + Clone,
            T: PartialEq + ?Sized,
            A: std::ops::Deref<Target = T>,
            V: std::borrow::Borrow<T> + Clone,
        {
            let mut out: BTreeMap<K, Option<V>> = before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| (k.clone(), None))
                .collect();
            out.extend(
                after
                    .iter()
                    .filter(|(k, v)| before.get(*k).map(|b| &**b) != Some((*v).borrow()))
                    .map(|(k, v)| (k.clone(), Some(v.clone()))),
            );
            out
        }
        RegistryDelta {
            services: keyed(&before.services, &after.services),
            endpoints: keyed(&before.endpoints, &after.endpoints),
            workloads: keyed(&before.workloads, &after.workloads),
        }
    }

    /// Applies the changes and records the keys whose value really changed.
    fn apply_tracked(self, state: &mut Stored, touched: &mut Touched) {
        for (host, service) in self.services {
            if set_key(&mut state.services, host.clone(), service.map(Arc::new)).is_some() {
                touched.hosts.insert(host);
            }
        }
        for (key, endpoints) in self.endpoints {
            let endpoints = endpoints.map(Arc::<[Endpoint]>::from);
            if set_key(&mut state.endpoints, key.clone(), endpoints).is_some() {
                touched.endpoints.insert(key);
            }
        }
        for (name, workload) in self.workloads {
            let new_addresses: Vec<String> = workload
                .iter()
                .flat_map(|w| w.addresses.iter().cloned())
                .collect();
            if let Some(old) = set_key(&mut state.workloads, name, workload.map(Arc::new)) {
                touched.addresses.extend(new_addresses);
                touched
                    .addresses
                    .extend(old.iter().flat_map(|w| w.addresses.iter().cloned()));
            }
        }
    }
}

/// The aggregate index. Adapters write with [`ServiceIndex::replace`] or [`ServiceIndex::update`];
/// readers take [`ServiceIndex::snapshot`] and [`ServiceIndex::subscribe`] to events.
pub struct ServiceIndex {
    registries: Mutex<BTreeMap<RegistryId, Stored>>,
    current: ArcSwap<IndexSnapshot>,
    events: broadcast::Sender<Arc<Vec<RegistryEvent>>>,
}

impl Default for ServiceIndex {
    fn default() -> Self {
        ServiceIndex::new()
    }
}

/// Keys one registry change touched.
#[derive(Default)]
struct Touched {
    hosts: BTreeSet<String>,
    endpoints: BTreeSet<EndpointKey>,
    addresses: BTreeSet<String>,
}

impl Touched {
    /// Keys that differ between two states of one registry.
    fn diff(before: &Stored, after: &Stored) -> Touched {
        let mut touched = Touched::default();
        diff_into(&before.services, &after.services, &mut touched.hosts);
        diff_into(&before.endpoints, &after.endpoints, &mut touched.endpoints);
        let mut workload_names = BTreeSet::new();
        diff_into(&before.workloads, &after.workloads, &mut workload_names);
        for name in &workload_names {
            for w in [before.workloads.get(name), after.workloads.get(name)]
                .into_iter()
                .flatten()
            {
                touched.addresses.extend(w.addresses.iter().cloned());
            }
        }
        touched
    }

    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.endpoints.is_empty() && self.addresses.is_empty()
    }
}

fn diff_into<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    out: &mut BTreeSet<K>,
) {
    for (k, v) in old {
        if new.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for k in new.keys() {
        if !old.contains_key(k) {
            out.insert(k.clone());
        }
    }
}

impl ServiceIndex {
    /// An empty index.
    pub fn new() -> ServiceIndex {
        let (events, _) = broadcast::channel(4096);
        ServiceIndex {
            registries: Mutex::new(BTreeMap::new()),
            current: ArcSwap::from_pointee(IndexSnapshot::default()),
            events,
        }
    }

    /// The current merged view.
    pub fn snapshot(&self) -> Arc<IndexSnapshot> {
        self.current.load_full()
    }

    /// Events of every change to the merged view, one batch per change. A lagging subscriber
    /// resynchronises from [`ServiceIndex::snapshot`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<RegistryEvent>>> {
        self.events.subscribe()
    }

    /// Replaces everything a registry knows (a full re-list). Only real differences produce
    /// events, so a re-list after a reconnect emits nothing when nothing changed.
    pub fn replace(&self, id: &RegistryId, state: RegistryState) -> Vec<RegistryEvent> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let current = registries.entry(id.clone()).or_default();
        let before = std::mem::replace(current, Stored::from(state));
        let touched = Touched::diff(&before, current);
        self.merge(&registries, touched)
    }

    /// Removes a registry and everything it contributed.
    pub fn remove_registry(&self, id: &RegistryId) -> Vec<RegistryEvent> {
        let events = self.replace(id, RegistryState::default());
        self.registries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        events
    }

    /// Changes a registry's state in place and merges only the keys that changed. The state
    /// is compared before and after `change`, which costs O(registry size): watch adapters
    /// on large meshes should prefer [`ServiceIndex::apply`].
    pub fn update(
        &self,
        id: &RegistryId,
        change: impl FnOnce(&mut RegistryState),
    ) -> Vec<RegistryEvent> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let stored = registries.entry(id.clone()).or_default();
        let mut after = stored.to_state();
        change(&mut after);
        // Only the changed keys are stored anew: the others stay shared with the merged view.
        let mut touched = Touched::default();
        RegistryDelta::between(stored, &after).apply_tracked(stored, &mut touched);
        self.merge(&registries, touched)
    }

    /// Applies keyed changes to a registry's state (incremental updates from watches), in
    /// O(changed keys + their endpoints).
    pub fn apply(&self, id: &RegistryId, delta: RegistryDelta) -> Vec<RegistryEvent> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let state = registries.entry(id.clone()).or_default();
        let mut touched = Touched::default();
        delta.apply_tracked(state, &mut touched);
        self.merge(&registries, touched)
    }

    fn merge(
        &self,
        registries: &BTreeMap<RegistryId, Stored>,
        touched: Touched,
    ) -> Vec<RegistryEvent> {
        if touched.is_empty() {
            return Vec::new();
        }
        let old = self.current.load_full();
        let mut next = (*old).clone();
        let mut events = Vec::new();
        // Copied (once) only when a service changes; endpoint churn leaves it shared.
        let services = &mut next.services;
        for host in &touched.hosts {
            let merged = registries.values().find_map(|r| r.services.get(host));
            match (old.services.get(host), merged) {
                (None, None) => {}
                (Some(_), None) => {
                    Arc::make_mut(services).remove(host);
                    events.push(RegistryEvent::ServiceRemoved(host.clone()));
                }
                (None, Some(s)) => {
                    Arc::make_mut(services).insert(host.clone(), s.clone());
                    events.push(RegistryEvent::ServiceAdded(host.clone()));
                }
                (Some(o), Some(s)) if **o != **s => {
                    Arc::make_mut(services).insert(host.clone(), s.clone());
                    events.push(RegistryEvent::ServiceChanged(host.clone()));
                }
                _ => {}
            }
        }
        for key in &touched.endpoints {
            let sets: Vec<&Arc<[Endpoint]>> = registries
                .values()
                .filter_map(|r| r.endpoints.get(key))
                .collect();
            let merged: Arc<[Endpoint]> = match sets[..] {
                // One registry's set, already sorted and without duplicates: shared.
                [one] if one.windows(2).all(|w| w[0] < w[1]) => one.clone(),
                _ => {
                    let mut merged: Vec<Endpoint> =
                        sets.iter().flat_map(|s| s.iter()).cloned().collect();
                    merged.sort();
                    merged.dedup();
                    merged.into()
                }
            };
            let old_set = old.endpoints.get(key);
            if old_set.map(|e| &e[..]) == Some(&merged[..])
                || (old_set.is_none() && merged.is_empty())
            {
                continue;
            }
            let old_addresses: BTreeSet<&str> = old_set
                .into_iter()
                .flat_map(|e| e.iter())
                .map(|e| e.address.as_str())
                .collect();
            let new_addresses: BTreeSet<&str> = merged.iter().map(|e| e.address.as_str()).collect();
            // Counting the host's ports per address keeps this O(changed addresses): the host
            // stays listed at an address while any of its ports still has an endpoint there.
            for gone in old_addresses.difference(&new_addresses) {
                let Some(hosts) = next.services_by_address.get_mut(*gone) else {
                    continue;
                };
                let hosts_mut = Arc::make_mut(hosts);
                if let Ok(i) = hosts_mut.binary_search_by(|(h, _)| h.as_str().cmp(&key.0)) {
                    hosts_mut[i].1 -= 1;
                    if hosts_mut[i].1 == 0 {
                        hosts_mut.remove(i);
                    }
                }
                if hosts_mut.is_empty() {
                    next.services_by_address.remove(*gone);
                }
            }
            for added in new_addresses.difference(&old_addresses) {
                match next.services_by_address.get_mut(*added) {
                    Some(hosts) => {
                        let hosts = Arc::make_mut(hosts);
                        match hosts.binary_search_by(|(h, _)| h.as_str().cmp(&key.0)) {
                            Ok(i) => hosts[i].1 += 1,
                            Err(i) => hosts.insert(i, (key.0.clone(), 1)),
                        }
                    }
                    None => next
                        .services_by_address
                        .insert(added.to_string(), Arc::new(vec![(key.0.clone(), 1)])),
                }
            }
            if merged.is_empty() {
                next.endpoints.remove(key);
            } else {
                next.endpoints.insert(key.clone(), merged);
            }
            events.push(RegistryEvent::EndpointsChanged(key.0.clone(), key.1));
        }
        for address in &touched.addresses {
            let merged = registries
                .values()
                .flat_map(|r| r.workloads.values())
                .find(|w| w.addresses.iter().any(|a| a == address));
            let changed = match (old.workloads.get(address), merged) {
                (None, None) => false,
                (Some(o), Some(w)) => **o != **w,
                _ => true,
            };
            if changed {
                match merged {
                    Some(w) => next.workloads.insert(address.clone(), w.clone()),
                    None => next.workloads.remove(address),
                };
                events.push(RegistryEvent::WorkloadChanged(address.clone()));
            }
        }
        if !events.is_empty() {
            next.version = old.version + 1;
            self.current.store(Arc::new(next));
            let _ = self.events.send(Arc::new(events.clone()));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;

    fn id() -> RegistryId {
        RegistryId {
            kind: RegistryKind::File,
            name: "f".into(),
        }
    }

    /// The keyed changes that turn `before` into `after`.
    fn delta(before: &RegistryState, after: &RegistryState) -> RegistryDelta {
        RegistryDelta::between(&Stored::from(before.clone()), after)
    }

    /// Everything a reader can see, for comparing two indexes.
    fn view(s: &IndexSnapshot) -> String {
        let mut out = format!("{:?}\n", s.services);
        let mut eps: Vec<_> = s.endpoints.shards.iter().flat_map(|m| m.iter()).collect();
        eps.sort_by(|a, b| a.0.cmp(b.0));
        let mut addrs: Vec<_> = s
            .services_by_address
            .shards
            .iter()
            .flat_map(|m| m.iter())
            .collect();
        addrs.sort_by(|a, b| a.0.cmp(b.0));
        let mut wls: Vec<_> = s.workloads.shards.iter().flat_map(|m| m.iter()).collect();
        wls.sort_by(|a, b| a.0.cmp(b.0));
        out += &format!("{eps:?}\n{addrs:?}\n{wls:?}");
        out
    }

    const STEPS: [&str; 4] = [
        "services:\n- hostname: a.shop\n  ports: [{name: http, port: 80}, {name: grpc, port: 90}]\n  endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2}]\nworkloads:\n- {name: vm, addresses: [10.0.0.1, 192.168.0.1]}\n",
        "services:\n- hostname: a.shop\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 10.0.0.1}, {address: 10.0.0.3}]\n- hostname: b.shop\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 10.0.0.1}]\nworkloads:\n- {name: vm, addresses: [10.0.0.1]}\n",
        "services:\n- hostname: b.shop\n  ports: [{name: http, port: 8080}]\n  endpoints: [{address: 10.0.0.1}]\n",
        "services: []\n",
    ];

    #[test]
    fn apply_equals_replace_with_the_same_change() {
        let (by_replace, by_apply) = (ServiceIndex::new(), ServiceIndex::new());
        let mut before = RegistryState::default();
        for step in STEPS {
            let after = parse(step).unwrap();
            let expected = by_replace.replace(&id(), after.clone());
            let got = by_apply.apply(&id(), delta(&before, &after));
            assert_eq!(got, expected, "events after {step}");
            assert_eq!(
                view(&by_apply.snapshot()),
                view(&by_replace.snapshot()),
                "view after {step}"
            );
            assert!(
                by_apply.apply(&id(), delta(&before, &after)).is_empty(),
                "re-applying the same change is silent"
            );
            before = after;
        }
        assert_eq!(by_apply.snapshot().service_count(), 0);
        assert!(by_apply.snapshot().services_at("10.0.0.1").next().is_none());
    }

    #[test]
    fn a_host_stays_at_an_address_while_any_of_its_ports_has_it() {
        let index = ServiceIndex::new();
        index.replace(&id(), parse(STEPS[0]).unwrap());
        let at = |a: &str| -> Vec<String> { index.snapshot().services_at(a).cloned().collect() };
        assert_eq!(at("10.0.0.2"), ["a.shop"]);
        // Port 90 loses 10.0.0.2, port 80 still has it.
        let mut d = RegistryDelta::default();
        let key = ("a.shop".to_string(), 90);
        let mut eps = index.registries.lock().unwrap()[&id()].endpoints[&key].to_vec();
        eps.retain(|e| e.address != "10.0.0.2");
        d.endpoints.insert(key, Some(eps));
        assert_eq!(
            index.apply(&id(), d),
            [RegistryEvent::EndpointsChanged("a.shop".into(), 90)]
        );
        assert_eq!(at("10.0.0.2"), ["a.shop"]);
        let mut d = RegistryDelta::default();
        d.endpoints.insert(("a.shop".to_string(), 80), None);
        index.apply(&id(), d);
        assert!(at("10.0.0.2").is_empty());
        assert_eq!(at("10.0.0.1"), ["a.shop"]);
    }
}
