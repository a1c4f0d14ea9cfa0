//! A copy-on-write sharded hash map for the index's snapshots: every change publishes a new
//! snapshot while readers may still hold the old one, so cloning must not cost O(map size).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// foldhash rather than std's SipHash: the keys are service hostnames and workload names from
/// the registries (docs/benchmarks.md, session 9, for what SipHash cost).
type RandomState = foldhash::fast::RandomState;

/// Number of shards of a [`CowMap`].
const SHARDS: usize = 256;

/// A hash map split into [`SHARDS`] shards behind `Arc`s. Cloning copies only the shard
/// pointers; a write copies the one shard it touches (about 1/256 of the map) if an older
/// snapshot still shares it.
#[derive(Debug)]
pub(super) struct CowMap<K, V> {
    hasher: RandomState,
    pub(super) shards: Vec<Arc<HashMap<K, V, RandomState>>>,
}

impl<K, V> Clone for CowMap<K, V> {
    fn clone(&self) -> Self {
        CowMap {
            hasher: self.hasher.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            hasher: RandomState::default(),
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(key);
        Arc::make_mut(&mut self.shards[i]).get_mut(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        let i = self.shard(&key);
        Arc::make_mut(&mut self.shards[i]).insert(key, value);
    }

    pub(super) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(key);
        if self.shards[i].contains_key(key) {
            Arc::make_mut(&mut self.shards[i]).remove(key);
        }
    }
}
