//! Istio config served as itself, as istiod's config server does (MCP-over-xDS): one type per
//! kind (`networking.istio.io/v1alpha3/VirtualService`, ...), one resource per validated object
//! of the push's config snapshot, named `namespace/name` (see [`capstan_config::mcp`]).
//!
//! Every subscriber of a kind gets the same `Arc<Resource>`s: a kind's resources are built once
//! per config snapshot (on the first request for it), and an object whose stored version did not
//! change since the last build (same `Arc`) keeps its encoded resource, so a config change
//! encodes only the objects it changed. Versions are content hashes of the encoding (stable
//! across processes: maps are encoded in key order), so a reconnecting client that claims what
//! it has is sent nothing for unchanged objects, even by a restarted server.

use crate::resource::Resource;
use capstan_api::{IstioObject, Kind};
use capstan_config::mcp::{encode, resource_name, RESOURCE_TYPE};
use capstan_config::{ConfigKey, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// One kind's resources as last built.
#[derive(Debug, Default)]
struct Built {
    /// The snapshot they were built from (weak: the cache must not keep old snapshots alive,
    /// and a live `Weak` keeps the allocation, so the address cannot be reused meanwhile).
    snapshot: Weak<Snapshot>,
    /// Each object with its resource, in key order.
    entries: Vec<(ConfigKey, Arc<IstioObject>, Arc<Resource>)>,
    /// The resources, as handed out.
    resources: Arc<[Arc<Resource>]>,
}

/// The encoded config of every kind, built when asked for.
#[derive(Debug, Default)]
pub(crate) struct McpResources {
    kinds: Mutex<HashMap<Kind, Built>>,
}

impl McpResources {
    /// The resources of `kind` in `config`.
    pub fn resources(&self, config: &Arc<Snapshot>, kind: Kind) -> Vec<Arc<Resource>> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let built = kinds.entry(kind).or_default();
        if !Weak::ptr_eq(&built.snapshot, &Arc::downgrade(config)) {
            *built = build(config, kind, std::mem::take(&mut built.entries));
        }
        built.resources.to_vec()
    }
}

/// Builds `kind`'s resources from `config`, reusing `previous` entries whose object is the
/// same stored version.
fn build(
    config: &Arc<Snapshot>,
    kind: Kind,
    previous: Vec<(ConfigKey, Arc<IstioObject>, Arc<Resource>)>,
) -> Built {
    let mut previous: HashMap<ConfigKey, (Arc<IstioObject>, Arc<Resource>)> = previous
        .into_iter()
        .map(|(key, object, resource)| (key, (object, resource)))
        .collect();
    let entries: Vec<_> = config
        .of_kind(kind)
        .map(|(key, stored)| {
            let resource = match previous.remove(key) {
                Some((object, resource)) if Arc::ptr_eq(&object, &stored.object) => resource,
                _ => Arc::new(Resource::from_encoded(
                    resource_name(&key.namespace, &key.name),
                    RESOURCE_TYPE,
                    encode(&stored.object),
                )),
            };
            (key.clone(), stored.object.clone(), resource)
        })
        .collect();
    let resources = entries.iter().map(|(_, _, r)| r.clone()).collect();
    Built {
        snapshot: Arc::downgrade(config),
        entries,
        resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::{check_text, CheckOptions};
    use capstan_config::ConfigStore;

    const PA: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME, namespace: ns}\nspec: {mtls: {mode: MODE}}\n";

    fn pa(name: &str, mode: &str) -> Vec<IstioObject> {
        let text = PA.replace("NAME", name).replace("MODE", mode);
        check_text(&text, &CheckOptions::default())
            .into_iter()
            .filter_map(|r| r.object.map(|o| *o))
            .collect()
    }

    #[test]
    fn built_once_per_snapshot_and_reused_for_unchanged_objects() {
        let store = ConfigStore::new();
        let mut objects = pa("a", "STRICT");
        objects.extend(pa("b", "STRICT"));
        store.replace_source("files", objects);
        let cache = McpResources::default();
        let first = store.snapshot();
        let one = cache.resources(&first, Kind::PeerAuthentication);
        let two = cache.resources(&first, Kind::PeerAuthentication);
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].name, "ns/a");
        assert!(Arc::ptr_eq(&one[0], &two[0]), "shared by every subscriber");
        assert!(cache.resources(&first, Kind::VirtualService).is_empty());

        let mut objects = pa("a", "STRICT");
        objects.extend(pa("b", "PERMISSIVE"));
        store.replace_source("files", objects);
        let next = cache.resources(&store.snapshot(), Kind::PeerAuthentication);
        assert!(
            Arc::ptr_eq(&one[0], &next[0]),
            "a did not change: not encoded again"
        );
        assert_eq!(next[1].name, "ns/b");
        assert_ne!(next[1].version, one[1].version, "b changed: new version");

        // Versions are content hashes: an equal object in another store has the same version.
        let other = ConfigStore::new();
        let mut objects = pa("a", "STRICT");
        objects.extend(pa("b", "PERMISSIVE"));
        other.replace_source("elsewhere", objects);
        let elsewhere =
            McpResources::default().resources(&other.snapshot(), Kind::PeerAuthentication);
        assert_eq!(
            elsewhere.iter().map(|r| r.version).collect::<Vec<_>>(),
            next.iter().map(|r| r.version).collect::<Vec<_>>()
        );
    }
}
