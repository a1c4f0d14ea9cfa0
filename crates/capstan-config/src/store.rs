//! A revisioned in-memory store of validated Istio config.
//!
//! Readers take an immutable [`Snapshot`] (an `Arc`, never blocked by writers); writers are
//! config sources, each owning the objects it put in. Every change that alters the store bumps
//! the revision and is announced on a broadcast channel as a [`ConfigChange`]; a change that
//! alters nothing announces nothing.

use arc_swap::ArcSwap;
use capstan_api::{IstioObject, Kind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Identifies one object: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConfigKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ConfigKey {
    /// The key of an object.
    pub fn of(object: &IstioObject) -> ConfigKey {
        ConfigKey {
            kind: object.kind,
            namespace: object.metadata.namespace.clone(),
            name: object.metadata.name.clone(),
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// One stored object and where it came from.
#[derive(Clone, Debug, Serialize)]
pub struct StoredObject {
    /// The validated object.
    pub object: Arc<IstioObject>,
    /// The source that owns it (`file:/etc/istio/config`, `kubernetes`, ...).
    pub source: Arc<str>,
    /// Store revision at which this version was stored.
    pub revision: u64,
}

/// An immutable view of the whole store at one revision.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Revision: increases by one with every change that alters the store.
    pub revision: u64,
    /// Every object, by key.
    pub objects: BTreeMap<ConfigKey, StoredObject>,
}

impl Snapshot {
    /// Objects of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ConfigKey, &StoredObject)> {
        self.objects.iter().filter(move |(k, _)| k.kind == kind)
    }
}

/// What happened to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// A new key.
    Added,
    /// A key whose object changed.
    Updated,
    /// A key that went away.
    Deleted,
}

/// One change in one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigEvent {
    /// What happened.
    pub event: EventKind,
    /// To which object.
    pub key: ConfigKey,
}

/// All events of one store revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    /// The revision these events produced.
    pub revision: u64,
    /// The events, in key order.
    pub events: Vec<ConfigEvent>,
}

/// The store. Cheap to share behind an `Arc`.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    /// Serialises writers so each revision is computed from the previous one.
    write: Mutex<()>,
    changes: broadcast::Sender<ConfigChange>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new()
    }
}

impl ConfigStore {
    /// An empty store at revision 0.
    pub fn new() -> ConfigStore {
        let (changes, _) = broadcast::channel(1024);
        ConfigStore {
            current: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            changes,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Subscribes to changes. A subscriber that lags behind by more than the channel's capacity
    /// gets `RecvError::Lagged` and should resynchronise from [`ConfigStore::snapshot`].
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigChange> {
        self.changes.subscribe()
    }

    /// Replaces everything `source` owns with `objects`: new keys are added, changed ones updated,
    /// keys the source no longer has are deleted. Keys owned by other sources are untouched, and
    /// an object whose key another source owns is not taken over (the first owner keeps it).
    /// Returns the change, or `None` when nothing changed.
    pub fn replace_source(&self, source: &str, objects: Vec<IstioObject>) -> Option<ConfigChange> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let revision = old.revision + 1;
        let source: Arc<str> = Arc::from(source);
        let mut next = old.objects.clone();
        let mut events = Vec::new();
        let mut incoming: BTreeMap<ConfigKey, IstioObject> = BTreeMap::new();
        for object in objects {
            incoming.insert(ConfigKey::of(&object), object);
        }
        for (key, stored) in old.objects.iter() {
            if *stored.source == *source && !incoming.contains_key(key) {
                next.remove(key);
                events.push(ConfigEvent {
                    event: EventKind::Deleted,
                    key: key.clone(),
                });
            }
        }
        for (key, object) in incoming {
            match old.objects.get(&key) {
                Some(stored) if *stored.source != *source => {
                    tracing::warn!(%key, owner = %stored.source, other = %source, "object defined by two sources; keeping the first");
                }
                Some(stored) if *stored.object == object => {}
                existing => {
                    let event = if existing.is_some() {
                        EventKind::Updated
                    } else {
                        EventKind::Added
                    };
                    events.push(ConfigEvent {
                        event,
                        key: key.clone(),
                    });
                    next.insert(
                        key,
                        StoredObject {
                            object: Arc::new(object),
                            source: source.clone(),
                            revision,
                        },
                    );
                }
            }
        }
        self.commit(revision, next, events)
    }

    /// Adds or updates one object owned by `source` (for watch-style sources).
    pub fn upsert(&self, source: &str, object: IstioObject) -> Option<ConfigChange> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let key = ConfigKey::of(&object);
        let event = match old.objects.get(&key) {
            Some(stored) if *stored.object == object => return None,
            Some(stored) if *stored.source != *source => {
                tracing::warn!(%key, owner = %stored.source, other = %source, "object defined by two sources; keeping the first");
                return None;
            }
            Some(_) => EventKind::Updated,
            None => EventKind::Added,
        };
        let revision = old.revision + 1;
        let mut next = old.objects.clone();
        next.insert(
            key.clone(),
            StoredObject {
                object: Arc::new(object),
                source: Arc::from(source),
                revision,
            },
        );
        self.commit(revision, next, vec![ConfigEvent { event, key }])
    }

    /// Deletes one object owned by `source`.
    pub fn delete(&self, source: &str, key: &ConfigKey) -> Option<ConfigChange> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        match old.objects.get(key) {
            Some(stored) if *stored.source == *source => {}
            _ => return None,
        }
        let revision = old.revision + 1;
        let mut next = old.objects.clone();
        next.remove(key);
        self.commit(
            revision,
            next,
            vec![ConfigEvent {
                event: EventKind::Deleted,
                key: key.clone(),
            }],
        )
    }

    /// Adds or updates `upserts` and deletes `deletes`, all owned by `source`, as one revision
    /// (for sources that receive increments, like the MCP source: one response, one change).
    /// Keys of other sources are left alone, as in [`ConfigStore::upsert`] and
    /// [`ConfigStore::delete`]. Returns the change, or `None` when nothing changed.
    pub fn update_source(
        &self,
        source: &str,
        upserts: Vec<IstioObject>,
        deletes: &[ConfigKey],
    ) -> Option<ConfigChange> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let revision = old.revision + 1;
        let owner: Arc<str> = Arc::from(source);
        let mut next = None::<BTreeMap<ConfigKey, StoredObject>>;
        let mut events: BTreeMap<ConfigKey, EventKind> = BTreeMap::new();
        for key in deletes {
            if old.objects.get(key).is_some_and(|s| *s.source == *source) {
                next.get_or_insert_with(|| old.objects.clone()).remove(key);
                events.insert(key.clone(), EventKind::Deleted);
            }
        }
        for object in upserts {
            let key = ConfigKey::of(&object);
            let event = match old.objects.get(&key) {
                Some(stored) if *stored.source != *source => {
                    tracing::warn!(%key, owner = %stored.source, other = %source, "object defined by two sources; keeping the first");
                    continue;
                }
                Some(stored) if *stored.object == object => {
                    // Deleted and put back unchanged in one batch: no change at all.
                    if events.remove(&key).is_some() {
                        next.get_or_insert_with(|| old.objects.clone())
                            .insert(key, stored.clone());
                    }
                    continue;
                }
                Some(_) => EventKind::Updated,
                None => EventKind::Added,
            };
            events.insert(key.clone(), event);
            next.get_or_insert_with(|| old.objects.clone()).insert(
                key,
                StoredObject {
                    object: Arc::new(object),
                    source: owner.clone(),
                    revision,
                },
            );
        }
        let next = next?;
        let events = events
            .into_iter()
            .map(|(key, event)| ConfigEvent { event, key })
            .collect();
        self.commit(revision, next, events)
    }

    fn commit(
        &self,
        revision: u64,
        objects: BTreeMap<ConfigKey, StoredObject>,
        mut events: Vec<ConfigEvent>,
    ) -> Option<ConfigChange> {
        if events.is_empty() {
            return None;
        }
        events.sort_by(|a, b| a.key.cmp(&b.key));
        self.current.store(Arc::new(Snapshot { revision, objects }));
        let change = ConfigChange { revision, events };
        // No subscribers is fine: the snapshot is the source of truth.
        let _ = self.changes.send(change.clone());
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_api::{check_text, CheckOptions};

    fn objects(yaml: &str) -> Vec<IstioObject> {
        check_text(yaml, &CheckOptions::default())
            .into_iter()
            .filter_map(|r| r.object.map(|o| *o))
            .collect()
    }

    const PA: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME, namespace: ns}\nspec: {}\n";

    fn pa(name: &str) -> Vec<IstioObject> {
        objects(&PA.replace("NAME", name))
    }

    #[test]
    fn replace_source_emits_adds_updates_deletes_and_nothing_for_no_op() {
        let store = ConfigStore::new();
        let mut rx = store.subscribe();
        let mut first = pa("a");
        first.extend(pa("b"));
        let change = store.replace_source("files", first.clone()).expect("adds");
        assert_eq!(change.revision, 1);
        assert_eq!(
            change.events.iter().map(|e| e.event).collect::<Vec<_>>(),
            vec![EventKind::Added, EventKind::Added]
        );
        assert_eq!(rx.try_recv().expect("broadcast"), change);

        assert_eq!(
            store.replace_source("files", first),
            None,
            "no-op replace must not emit"
        );
        assert_eq!(store.snapshot().revision, 1);

        let change = store.replace_source("files", pa("b")).expect("delete a");
        assert_eq!(
            change.events,
            vec![ConfigEvent {
                event: EventKind::Deleted,
                key: ConfigKey {
                    kind: Kind::PeerAuthentication,
                    namespace: "ns".into(),
                    name: "a".into()
                }
            }]
        );
        assert_eq!(store.snapshot().objects.len(), 1);
    }

    #[test]
    fn update_source_applies_a_batch_as_one_revision() {
        let store = ConfigStore::new();
        store.replace_source("other", pa("theirs"));
        let key = |name: &str| ConfigKey {
            kind: Kind::PeerAuthentication,
            namespace: "ns".into(),
            name: name.into(),
        };
        let mut batch = pa("a");
        batch.extend(pa("b"));
        let change = store.update_source("mcp", batch, &[]).expect("adds");
        assert_eq!((change.revision, change.events.len()), (2, 2));
        assert_eq!(
            store.update_source("mcp", pa("a"), &[]),
            None,
            "unchanged: no event"
        );
        let mut changed = pa("a").remove(0);
        changed.metadata.labels.insert("v".into(), "2".into());
        let change = store
            .update_source(
                "mcp",
                vec![changed],
                &[key("b"), key("theirs"), key("none")],
            )
            .expect("one update, one delete");
        assert_eq!(
            change.events,
            vec![
                ConfigEvent {
                    event: EventKind::Updated,
                    key: key("a")
                },
                ConfigEvent {
                    event: EventKind::Deleted,
                    key: key("b")
                },
            ]
        );
        assert_eq!(change.revision, 3);
        let keys: Vec<ConfigKey> = store.snapshot().objects.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![key("a"), key("theirs")],
            "another source's key stays"
        );
        assert!(
            store.update_source("mcp", pa("theirs"), &[]).is_none(),
            "no take-over"
        );
        // Deleted and put back unchanged in one batch: nothing happened.
        let unchanged = store.snapshot().objects[&key("a")].object.as_ref().clone();
        assert_eq!(
            store.update_source("mcp", vec![unchanged], &[key("a")]),
            None
        );
        assert_eq!(store.snapshot().revision, 3);
    }

    #[test]
    fn sources_do_not_delete_each_others_objects() {
        let store = ConfigStore::new();
        store.replace_source("one", pa("a"));
        store.replace_source("two", pa("b"));
        assert_eq!(
            store
                .replace_source("two", vec![])
                .expect("b deleted")
                .events
                .len(),
            1
        );
        assert_eq!(store.snapshot().objects.len(), 1);
        assert!(
            store.upsert("two", pa("a").remove(0)).is_none(),
            "two cannot take over one's object"
        );
        assert!(store
            .delete(
                "two",
                &ConfigKey {
                    kind: Kind::PeerAuthentication,
                    namespace: "ns".into(),
                    name: "a".into()
                }
            )
            .is_none());
    }
}
