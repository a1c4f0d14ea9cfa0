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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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
    services: BTreeMap<String, Arc<Service>>,
    endpoints: HashMap<EndpointKey, Arc<[Endpoint]>>,
    workloads: HashMap<String, Arc<Workload>>,
    services_by_address: HashMap<String, Arc<BTreeSet<String>>>,
}

impl IndexSnapshot {
    /// All services, by hostname.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
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
            .filter(move |e| subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
    }

    /// All endpoints of (hostname, port), shared.
    pub fn endpoint_set(&self, hostname: &str, port: u16) -> Option<&Arc<[Endpoint]>> {
        self.endpoints.get(&(hostname.to_string(), port))
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
            .flat_map(|s| s.iter())
    }
}

/// The aggregate index. Adapters write with [`ServiceIndex::replace`] or [`ServiceIndex::update`];
/// readers take [`ServiceIndex::snapshot`] and [`ServiceIndex::subscribe`] to events.
pub struct ServiceIndex {
    registries: Mutex<BTreeMap<RegistryId, RegistryState>>,
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
        self.update(id, |s| *s = state)
    }

    /// Removes a registry and everything it contributed.
    pub fn remove_registry(&self, id: &RegistryId) -> Vec<RegistryEvent> {
        let events = self.update(id, |s| *s = RegistryState::default());
        self.registries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        events
    }

    /// Changes a registry's state in place (incremental updates from watches) and merges only
    /// the keys that changed.
    pub fn update(
        &self,
        id: &RegistryId,
        change: impl FnOnce(&mut RegistryState),
    ) -> Vec<RegistryEvent> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let state = registries.entry(id.clone()).or_default();
        let before = state.clone();
        change(state);
        let mut touched = Touched::default();
        diff_into(&before.services, &state.services, &mut touched.hosts);
        diff_into(&before.endpoints, &state.endpoints, &mut touched.endpoints);
        let mut workload_names = BTreeSet::new();
        diff_into(&before.workloads, &state.workloads, &mut workload_names);
        for name in &workload_names {
            for w in [before.workloads.get(name), state.workloads.get(name)]
                .into_iter()
                .flatten()
            {
                touched.addresses.extend(w.addresses.iter().cloned());
            }
        }
        if touched.hosts.is_empty() && touched.endpoints.is_empty() && touched.addresses.is_empty()
        {
            return Vec::new();
        }
        self.merge(&registries, touched)
    }

    fn merge(
        &self,
        registries: &BTreeMap<RegistryId, RegistryState>,
        touched: Touched,
    ) -> Vec<RegistryEvent> {
        let old = self.current.load_full();
        let mut next = (*old).clone();
        let mut events = Vec::new();
        for host in &touched.hosts {
            let merged = registries.values().find_map(|r| r.services.get(host));
            match (old.services.get(host), merged) {
                (None, None) => {}
                (Some(_), None) => {
                    next.services.remove(host);
                    events.push(RegistryEvent::ServiceRemoved(host.clone()));
                }
                (None, Some(s)) => {
                    next.services.insert(host.clone(), Arc::new(s.clone()));
                    events.push(RegistryEvent::ServiceAdded(host.clone()));
                }
                (Some(o), Some(s)) if **o != *s => {
                    next.services.insert(host.clone(), Arc::new(s.clone()));
                    events.push(RegistryEvent::ServiceChanged(host.clone()));
                }
                _ => {}
            }
        }
        for key in &touched.endpoints {
            let mut merged: Vec<Endpoint> = registries
                .values()
                .filter_map(|r| r.endpoints.get(key))
                .flatten()
                .cloned()
                .collect();
            merged.sort();
            merged.dedup();
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
            for gone in old_addresses.difference(&new_addresses) {
                // Still present under another port of the same host? Then the host stays listed.
                let elsewhere = next
                    .endpoints
                    .iter()
                    .any(|(k, e)| k.0 == key.0 && k != key && e.iter().any(|e| e.address == *gone));
                if !elsewhere {
                    if let Some(hosts) = next.services_by_address.get_mut(*gone) {
                        let mut set = (**hosts).clone();
                        set.remove(&key.0);
                        if set.is_empty() {
                            next.services_by_address.remove(*gone);
                        } else {
                            *hosts = Arc::new(set);
                        }
                    }
                }
            }
            for added in new_addresses.difference(&old_addresses) {
                let entry = next
                    .services_by_address
                    .entry(added.to_string())
                    .or_default();
                if !entry.contains(&key.0) {
                    let mut set = (**entry).clone();
                    set.insert(key.0.clone());
                    *entry = Arc::new(set);
                }
            }
            if merged.is_empty() {
                next.endpoints.remove(key);
            } else {
                next.endpoints.insert(key.clone(), merged.into());
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
                (Some(o), Some(w)) => **o != *w,
                _ => true,
            };
            if changed {
                match merged {
                    Some(w) => next.workloads.insert(address.clone(), Arc::new(w.clone())),
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
