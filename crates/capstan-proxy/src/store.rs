//! The config store: what the control plane sent, compiled, and the immutable [`Snapshot`] the
//! data path reads. Each applied response publishes a new snapshot (arc-swap); a request reads
//! the snapshot current when it starts, so a push never tears it.
//!
//! Warming follows Envoy: an EDS cluster enters the snapshot once its endpoints have arrived, a
//! listener once every route configuration it names over RDS has arrived. Until a new version of
//! a listener has warmed, the previous version keeps serving.
//!
//! A cluster's runtime (endpoints, balancer, breakers, outlier state, counters) survives an
//! update that does not change the cluster's config, and its endpoints survive one that does.

use crate::cluster::{self, Cluster, Discovery, EndpointSet};
use crate::listener::{self, ListenerConfig};
use crate::resources::{self, ResourceSink, Update};
use crate::route::{self, RouteTable};
use crate::sds::{self, Secrets};
use crate::stats::Stats;
use arc_swap::ArcSwap;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One applied resource as received (a secret redacted), for `/config_dump`.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Its version.
    pub version: String,
    /// The resource as received.
    pub resource: envoy_types::pb::google::protobuf::Any,
    /// When it was applied (seconds since the Unix epoch).
    pub applied_at: u64,
}

/// What the data path reads: active listeners, route tables and clusters, by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counts published snapshots; 0 is the empty one at start.
    pub generation: u64,
    /// Active (warm) listeners.
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    /// Route configurations received over RDS.
    pub routes: crate::fast_map::FastMap<String, Arc<RouteTable>>,
    /// Active (warm) clusters.
    pub clusters: crate::fast_map::FastMap<String, Arc<Cluster>>,
}

impl Snapshot {
    /// The cluster `name`, if it is active.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
    /// The route configuration `name`, if received.
    pub fn route(&self, name: &str) -> Option<&Arc<RouteTable>> {
        self.routes.get(name)
    }
}

#[derive(Default)]
struct State {
    clusters: BTreeMap<String, Arc<Cluster>>,
    /// EDS assignments by service name (a cluster's `eds_cluster_config.service_name`).
    endpoints: BTreeMap<String, EndpointSet>,
    listeners: BTreeMap<String, Arc<ListenerConfig>>,
    routes: BTreeMap<String, Arc<RouteTable>>,
    /// Resources as received, by type URL then name.
    raw: HashMap<&'static str, BTreeMap<String, Raw>>,
    generation: u64,
}

/// The proxy's config store; the xDS client's [`ResourceSink`].
pub struct Store {
    state: Mutex<State>,
    snapshot: ArcSwap<Snapshot>,
    stats: Arc<Stats>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("generation", &self.snapshot.load().generation)
            .finish()
    }
}

fn decode<M: Message + Default>(u: &Update, expected: &str) -> Result<M, String> {
    if u.resource.type_url != expected {
        return Err(format!(
            "{}: type_url {} where {} was subscribed",
            u.name, u.resource.type_url, expected
        ));
    }
    M::decode(u.resource.value.as_slice()).map_err(|e| format!("{}: cannot decode: {e}", u.name))
}

fn type_key(type_url: &str) -> Option<&'static str> {
    resources::ORDER.into_iter().find(|t| *t == type_url)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// An empty store whose clusters count into `stats`.
    pub fn new(stats: Arc<Stats>) -> Arc<Store> {
        Arc::new(Store {
            state: Mutex::new(State::default()),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            stats,
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The process's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Fires with the generation of every published snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Resources as received, by type URL then name (for `/config_dump`).
    pub fn raw(&self, type_url: &str) -> BTreeMap<String, Raw> {
        self.lock().raw.get(type_url).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("store lock is never poisoned: compilation returns errors, it does not panic")
    }

    fn apply_clusters(
        &self,
        state: &mut State,
        updated: &[Update],
        removed: &[String],
    ) -> Result<(), String> {
        let mut compiled = Vec::with_capacity(updated.len());
        for u in updated {
            let proto = decode(u, resources::CLUSTER)?;
            let config =
                cluster::compile(&proto).map_err(|e| format!("cluster {}: {e}", u.name))?;
            compiled.push(config);
        }
        for name in removed {
            state.clusters.remove(name);
        }
        for config in compiled {
            let name = config.name.clone();
            if let Some(old) = state.clusters.get(&name) {
                if **old.config() == config {
                    continue;
                }
            }
            let cluster = Cluster::new(Arc::new(config), self.stats.cluster(&name));
            if let Discovery::Eds(service) = &cluster.config().discovery {
                if let Some(eps) = state.endpoints.get(service) {
                    cluster.set_endpoints(eps.clone());
                }
            }
            state.clusters.insert(name, cluster);
        }
        Ok(())
    }

    fn apply_endpoints(
        &self,
        state: &mut State,
        updated: &[Update],
        removed: &[String],
    ) -> Result<(), String> {
        let mut compiled = Vec::with_capacity(updated.len());
        for u in updated {
            let proto = decode(u, resources::ENDPOINT)?;
            let set = cluster::compile_assignment(&proto)
                .map_err(|e| format!("endpoints {}: {e}", u.name))?;
            compiled.push((u.name.clone(), set));
        }
        for name in removed {
            state.endpoints.remove(name);
        }
        for (name, set) in compiled {
            for c in state.clusters.values() {
                if matches!(&c.config().discovery, Discovery::Eds(s) if *s == name) {
                    c.set_endpoints(set.clone());
                }
            }
            state.endpoints.insert(name, set);
        }
        Ok(())
    }

    fn apply_listeners(
        &self,
        state: &mut State,
        updated: &[Update],
        removed: &[String],
    ) -> Result<(), String> {
        let mut compiled = Vec::with_capacity(updated.len());
        for u in updated {
            // A listener re-sent byte for byte is not replaced: replacing it would drain its
            // connections for nothing.
            let unchanged = state
                .raw
                .get(resources::LISTENER)
                .and_then(|held| held.get(&u.name))
                .is_some_and(|r| r.resource == u.resource);
            if unchanged && state.listeners.contains_key(&u.name) {
                continue;
            }
            let proto = decode(u, resources::LISTENER)?;
            let l = listener::compile(&proto).map_err(|e| format!("listener {}: {e}", u.name))?;
            compiled.push(l);
        }
        for name in removed {
            state.listeners.remove(name);
        }
        for l in compiled {
            state.listeners.insert(l.name.clone(), Arc::new(l));
        }
        Ok(())
    }

    fn apply_routes(
        &self,
        state: &mut State,
        updated: &[Update],
        removed: &[String],
    ) -> Result<(), String> {
        let mut compiled = Vec::with_capacity(updated.len());
        for u in updated {
            let proto = decode(u, resources::ROUTE)?;
            let table = route::compile(&proto).map_err(|e| format!("route {}: {e}", u.name))?;
            compiled.push((u.name.clone(), table));
        }
        for name in removed {
            state.routes.remove(name);
        }
        for (name, table) in compiled {
            state.routes.insert(name, Arc::new(table));
        }
        Ok(())
    }

    /// SDS secrets: every one compiled before any is installed. A removed secret empties its
    /// slot, so later handshakes fail rather than use it.
    fn apply_secrets(&self, updated: &[Update], removed: &[String]) -> Result<(), String> {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
        let mut compiled = Vec::with_capacity(updated.len());
        for u in updated {
            let proto: Secret = decode(u, resources::SECRET)?;
            if proto.name != u.name {
                return Err(format!(
                    "secret {}: name: the resource is named {:?}",
                    u.name, proto.name
                ));
            }
            let value = sds::compile(&proto).map_err(|e| format!("secret {}: {e}", u.name))?;
            compiled.push((u.name.as_str(), value));
        }
        let secrets = Secrets::global();
        for name in removed {
            secrets.set(name, None);
        }
        for (name, value) in compiled {
            secrets.set(name, Some(value));
        }
        Ok(())
    }

    /// Publishes a snapshot of what is warm: EDS clusters with endpoints, listeners whose RDS
    /// routes have all arrived (else the previous version of the listener, if any).
    fn publish(&self, state: &mut State) {
        let previous = self.snapshot.load_full();
        let clusters = state
            .clusters
            .iter()
            .filter(|(_, c)| match &c.config().discovery {
                Discovery::Eds(service) => state.endpoints.contains_key(service),
                _ => true,
            })
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        let mut listeners = BTreeMap::new();
        for (name, l) in &state.listeners {
            let warm = l.rds_names().all(|r| state.routes.contains_key(r));
            if warm {
                listeners.insert(name.clone(), l.clone());
            } else if let Some(old) = previous.listeners.get(name) {
                listeners.insert(name.clone(), old.clone());
            }
        }
        state.generation += 1;
        let snapshot = Snapshot {
            generation: state.generation,
            listeners,
            routes: state
                .routes
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect(),
            clusters,
        };
        self.snapshot.store(Arc::new(snapshot));
        self.changed.send_replace(state.generation);
    }
}

impl ResourceSink for Store {
    fn apply(
        &self,
        type_url: &str,
        updated: Vec<Update>,
        removed: &[String],
        state_of_the_world: bool,
    ) -> Result<(), String> {
        let key = type_key(type_url).ok_or_else(|| format!("unsupported type {type_url}"))?;
        let mut state = self.lock();
        let mut removed = removed.to_vec();
        if state_of_the_world {
            let present: std::collections::HashSet<&str> =
                updated.iter().map(|u| u.name.as_str()).collect();
            if let Some(held) = state.raw.get(key) {
                removed.extend(
                    held.keys()
                        .filter(|n| !present.contains(n.as_str()))
                        .cloned(),
                );
            }
        }
        match key {
            resources::CLUSTER => self.apply_clusters(&mut state, &updated, &removed),
            resources::ENDPOINT => self.apply_endpoints(&mut state, &updated, &removed),
            resources::LISTENER => self.apply_listeners(&mut state, &updated, &removed),
            resources::SECRET => self.apply_secrets(&updated, &removed),
            _ => self.apply_routes(&mut state, &updated, &removed),
        }?;
        let at = now_secs();
        let raw = state.raw.entry(key).or_default();
        for name in &removed {
            raw.remove(name);
        }
        for u in updated {
            // A secret's key is never kept outside its compiled form: the copy for display
            // is redacted (as Envoy's config dump shows secrets).
            let resource = if key == resources::SECRET {
                sds::redacted(&u.resource)
            } else {
                u.resource
            };
            raw.insert(
                u.name,
                Raw {
                    version: u.version,
                    resource,
                    applied_at: at,
                },
            );
        }
        self.publish(&mut state);
        Ok(())
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<String> = match type_url {
            resources::ENDPOINT => state
                .clusters
                .values()
                .filter_map(|c| match &c.config().discovery {
                    Discovery::Eds(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            resources::ROUTE => state
                .listeners
                .values()
                .flat_map(|l| l.rds_names().map(str::to_string).collect::<Vec<_>>())
                .collect(),
            // The serving version of a listener still warming counts too: its handshakes
            // must not lose their secret before the new version takes over.
            resources::SECRET => state
                .listeners
                .values()
                .chain(self.snapshot.load().listeners.values())
                .flat_map(|l| l.sds_names().map(str::to_string).collect::<Vec<_>>())
                .collect(),
            _ => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }

    fn versions(&self, type_url: &str) -> Vec<(String, String)> {
        self.lock()
            .raw
            .get(type_url)
            .map(|m| {
                m.iter()
                    .map(|(n, r)| (n.clone(), r.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
