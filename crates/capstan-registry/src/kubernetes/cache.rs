//! The adapter's local copy of the watched objects, with the reverse indexes that make
//! updates incremental: EndpointSlices by Service, Services by referenced Pod, Pods by Node.
//! Pure (no I/O): each mutation returns what must be recomputed; [`Cache::flush`] writes it.
//!
//! Only what the conversions read is kept: Services as converted, EndpointSlices as
//! [`Slice`]s, Pods and Nodes stripped by the adapter ([`convert::strip_pod`]).

use super::convert::{self, ConvertError, PodInfo, ServiceOutput, Slice};
use crate::index::{EndpointKey, RegistryDelta, RegistryState};
use crate::model::Service;
use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use std::collections::{BTreeSet, HashMap};

/// `(namespace, name)` of a namespaced object.
pub type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// What a change made stale.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Services (by key) whose output must be recomputed.
    pub services: BTreeSet<Key>,
    /// Pods (by key) whose workload must be recomputed.
    pub pods: BTreeSet<Key>,
}

impl Dirty {
    /// Adds everything `other` marks.
    pub fn extend(&mut self, other: Dirty) {
        self.services.extend(other.services);
        self.pods.extend(other.pods);
    }
}

/// What one Service last wrote into the registry state (so a recompute can remove it).
#[derive(Debug, Default)]
struct Owned {
    // Boxed slices (sorted, from the output's map keys), not sets: a B-tree leaf per service
    // for its one hostname and its few ports cost ~0.6 KiB.
    hosts: Box<[String]>,
    endpoints: Box<[EndpointKey]>,
}

/// Watched objects and indexes.
#[derive(Debug, Default)]
pub struct Cache {
    suffix: String,
    /// Services as converted (a malformed one is kept as its error, logged at each use).
    services: HashMap<Key, Result<Service, ConvertError>>,
    slices: HashMap<Key, Slice>,
    /// Service key → names of its slices.
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, Pod>,
    nodes: HashMap<String, Node>,
    /// Pod key → keys of slices whose endpoints reference it.
    slices_by_pod: HashMap<Key, BTreeSet<Key>>,
    /// Node name → pods scheduled there.
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    owned: HashMap<Key, Owned>,
}

fn slice_key(slice: &Slice) -> Option<Key> {
    (!slice.namespace.is_empty() && !slice.name.is_empty())
        .then(|| (slice.namespace.clone(), slice.name.clone()))
}

fn slice_service(slice: &Slice) -> Option<Key> {
    Some((slice.namespace.clone(), slice.service.clone()?))
}

fn slice_pods(slice: &Slice) -> impl Iterator<Item = Key> + '_ {
    slice.endpoints.iter().filter_map(|e| {
        let (ns, name) = e.pod.as_ref()?;
        Some((
            ns.clone().unwrap_or_else(|| slice.namespace.clone()),
            name.clone(),
        ))
    })
}

impl Cache {
    /// An empty cache producing hostnames under `suffix`.
    pub fn new(suffix: &str) -> Cache {
        Cache {
            suffix: suffix.to_string(),
            ..Cache::default()
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: KubeService) -> Dirty {
        let Some(key) = key_of(&svc.metadata) else {
            tracing::warn!("Service without name/namespace skipped");
            return Dirty::default();
        };
        let converted = convert::convert_service(&svc, &self.suffix);
        self.services.insert(key.clone(), converted);
        Dirty {
            services: BTreeSet::from([key]),
            ..Dirty::default()
        }
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, svc: &KubeService) -> Dirty {
        let mut dirty = Dirty::default();
        if let Some(key) = key_of(&svc.metadata) {
            self.services.remove(&key);
            dirty.services.insert(key);
        }
        dirty
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, slice: Slice) -> Dirty {
        let Some(key) = slice_key(&slice) else {
            tracing::warn!("EndpointSlice without name/namespace skipped");
            return Dirty::default();
        };
        let mut dirty = self.remove_slice(&key);
        if let Some(svc) = slice_service(&slice) {
            self.slices_by_service
                .entry(svc.clone())
                .or_default()
                .insert(key.1.clone());
            dirty.services.insert(svc);
        }
        for pod in slice_pods(&slice) {
            self.slices_by_pod
                .entry(pod)
                .or_default()
                .insert(key.clone());
        }
        self.slices.insert(key, slice);
        dirty
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &Slice) -> Dirty {
        slice_key(slice)
            .map(|k| self.remove_slice(&k))
            .unwrap_or_default()
    }

    fn remove_slice(&mut self, key: &Key) -> Dirty {
        let mut dirty = Dirty::default();
        let Some(old) = self.slices.remove(key) else {
            return dirty;
        };
        if let Some(svc) = slice_service(&old) {
            if let Some(set) = self.slices_by_service.get_mut(&svc) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.slices_by_service.remove(&svc);
                }
            }
            dirty.services.insert(svc);
        }
        for pod in slice_pods(&old) {
            if let Some(set) = self.slices_by_pod.get_mut(&pod) {
                set.remove(key);
                if set.is_empty() {
                    self.slices_by_pod.remove(&pod);
                }
            }
        }
        dirty
    }

    /// Services whose slices reference this pod, plus the pod's own workload.
    fn pod_dirty(&self, pod: &Key) -> Dirty {
        let services = self
            .slices_by_pod
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s).and_then(slice_service))
            .collect();
        Dirty {
            services,
            pods: BTreeSet::from([pod.clone()]),
        }
    }

    /// Adds or replaces a Pod.
    pub fn apply_pod(&mut self, pod: Pod) -> Dirty {
        let Some(key) = key_of(&pod.metadata) else {
            tracing::warn!("Pod without name/namespace skipped");
            return Dirty::default();
        };
        self.unlink_pod(&key);
        if let Some(node) = convert::pod_node(&pod) {
            self.pods_by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key.clone(), pod);
        self.pod_dirty(&key)
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, pod: &Pod) -> Dirty {
        let Some(key) = key_of(&pod.metadata) else {
            return Dirty::default();
        };
        self.unlink_pod(&key);
        self.pods.remove(&key);
        self.pod_dirty(&key)
    }

    fn unlink_pod(&mut self, key: &Key) {
        let Some(old) = self.pods.get(key) else {
            return;
        };
        if let Some(node) = convert::pod_node(old) {
            if let Some(set) = self.pods_by_node.get_mut(node) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_node.remove(node);
                }
            }
        }
    }

    fn node_dirty(&self, node: &str) -> Dirty {
        let mut dirty = Dirty::default();
        for pod in self.pods_by_node.get(node).into_iter().flatten() {
            dirty.extend(self.pod_dirty(pod));
        }
        dirty
    }

    /// Adds or replaces a Node. Only a change of its locality labels dirties its pods.
    pub fn apply_node(&mut self, node: Node) -> Dirty {
        let Some(name) = node.metadata.name.clone() else {
            return Dirty::default();
        };
        let new = convert::node_locality(&node);
        let old = self.nodes.insert(name.clone(), node);
        if old.is_some_and(|o| convert::node_locality(&o) == new) {
            return Dirty::default();
        }
        self.node_dirty(&name)
    }

    /// Removes a Node.
    pub fn delete_node(&mut self, node: &Node) -> Dirty {
        let Some(name) = node.metadata.name.as_deref() else {
            return Dirty::default();
        };
        if self.nodes.remove(name).is_none() {
            return Dirty::default();
        }
        self.node_dirty(name)
    }

    /// Replaces every Service (after a re-list).
    pub fn reset_services(&mut self, items: Vec<KubeService>) {
        self.services.clear();
        for s in items {
            self.apply_service(s);
        }
    }

    /// Replaces every EndpointSlice (after a re-list).
    pub fn reset_slices(&mut self, items: Vec<Slice>) {
        self.slices.clear();
        self.slices_by_service.clear();
        self.slices_by_pod.clear();
        for s in items {
            self.apply_slice(s);
        }
    }

    /// Replaces every Pod (after a re-list).
    pub fn reset_pods(&mut self, items: Vec<Pod>) {
        self.pods.clear();
        self.pods_by_node.clear();
        for p in items {
            self.apply_pod(p);
        }
    }

    /// Replaces every Node (after a re-list).
    pub fn reset_nodes(&mut self, items: Vec<Node>) {
        self.nodes.clear();
        for n in items {
            self.apply_node(n);
        }
    }

    fn pod_info(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let pod = self.pods.get(&(namespace.to_string(), name.to_string()))?;
        let node = convert::pod_node(pod).and_then(|n| self.nodes.get(n));
        Some(convert::pod_info(pod, node))
    }

    fn output(&self, key: &Key) -> ServiceOutput {
        let Some(converted) = self.services.get(key) else {
            return ServiceOutput::default();
        };
        let service = match converted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "malformed Service skipped");
                return ServiceOutput::default();
            }
        };
        let slices = self
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())));
        convert::service_output(service, slices, &|ns, name| self.pod_info(ns, name))
    }

    /// Writes the recomputed output of everything `dirty` marks into `state`.
    pub fn flush(&mut self, dirty: &Dirty, state: &mut RegistryState) {
        self.flush_delta(dirty).apply_to(state);
    }

    /// The recomputed output of everything `dirty` marks, as keyed changes (for
    /// [`crate::ServiceIndex::apply`], which then costs O(what changed)).
    pub fn flush_delta(&mut self, dirty: &Dirty) -> RegistryDelta {
        let mut delta = RegistryDelta::default();
        for key in &dirty.services {
            let out = self.output(key);
            if let Some(old) = self.owned.remove(key) {
                for h in old
                    .hosts
                    .into_vec()
                    .into_iter()
                    .filter(|h| !out.services.contains_key(h))
                {
                    delta.services.insert(h, None);
                }
                for k in old
                    .endpoints
                    .into_vec()
                    .into_iter()
                    .filter(|k| !out.endpoints.contains_key(k))
                {
                    delta.endpoints.insert(k, None);
                }
            }
            let owned = Owned {
                hosts: out.services.keys().cloned().collect(),
                endpoints: out.endpoints.keys().cloned().collect(),
            };
            delta
                .services
                .extend(out.services.into_iter().map(|(k, v)| (k, Some(v))));
            delta
                .endpoints
                .extend(out.endpoints.into_iter().map(|(k, v)| (k, Some(v))));
            if !owned.hosts.is_empty() {
                self.owned.insert(key.clone(), owned);
            }
        }
        for key in &dirty.pods {
            let name = format!("{}/{}", key.0, key.1);
            let workload = self.pods.get(key).and_then(|pod| {
                let node = convert::pod_node(pod).and_then(|n| self.nodes.get(n));
                convert::workload(pod, node)
            });
            delta.workloads.insert(name, workload);
        }
        delta
    }

    /// The complete registry state from everything cached (used after a (re-)list).
    pub fn build(&mut self) -> RegistryState {
        self.owned.clear();
        let dirty = Dirty {
            services: self.services.keys().cloned().collect(),
            pods: self.pods.keys().cloned().collect(),
        };
        let mut state = RegistryState::default();
        self.flush(&dirty, &mut state);
        state
    }
}
