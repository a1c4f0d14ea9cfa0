//! Lists that many streams hold identical, kept once (hash-consing). A thousand sidecars of one
//! namespace subscribe to the same two thousand EDS names and have been sent the same two
//! thousand clusters and assignments: as per-stream vectors that was 64 KiB a proxy (half the
//! server's memory per proxy at 2,000 proxies, heap-profiled), as shared lists it is a pointer.
//!
//! Items are shared pointers (interned names, generated resources) and lists are compared by
//! the items' addresses, never their contents: two lists are the same when they hold the same
//! allocations in the same order. Sharing is only ever an optimisation: a list that finds no
//! twin is registered and kept as it is.
//!
//! Two tables:
//! - [`Lists`] finds the registered twin of a newly built list (by a hash of its addresses).
//! - [`Transitions`] remembers what applying a change to a shared list gave, so the other
//!   streams holding that list and receiving the same change (a push reaches every proxy of a
//!   scope with the same resources) take the result without copying the list — copying is two
//!   thousand reference-count increments, and a push would pay it per proxy.
//!
//! Both hold weak references: a list lives as long as some stream holds it.

use crate::fast::FastMap;
use crate::resource::Resource;
use std::sync::{Arc, Mutex, Weak};

/// Shorter lists are not worth a look-up.
pub(crate) const MIN_SHARED: usize = 16;
/// Dead entries are swept after this many registrations (what a dead entry holds is the
/// list's allocation without its items, until then).
const SWEEP_EVERY: usize = 64;
/// Remembered transitions at most; beyond, the memory starts over.
const MAX_TRANSITIONS: usize = 1024;

/// A shared pointer whose address identifies its value.
pub(crate) trait Addressed {
    /// The allocation's address.
    fn addr(&self) -> usize;
}

impl Addressed for Arc<str> {
    fn addr(&self) -> usize {
        Arc::as_ptr(self).cast::<u8>() as usize
    }
}

impl Addressed for Arc<Resource> {
    fn addr(&self) -> usize {
        Arc::as_ptr(self) as usize
    }
}

/// A fast hash of the items' addresses (FxHash's mixing; the table only needs spread).
fn hash_addrs(seed: u64, addrs: impl Iterator<Item = usize>) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = seed;
    for a in addrs {
        h = (h.rotate_left(5) ^ a as u64).wrapping_mul(K);
    }
    h
}

fn same<T: Addressed>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr() == y.addr())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic under the lock leaves a consistent table (entries are only added or dropped).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registered lists by the hash of their addresses.
pub(crate) struct Lists<T> {
    table: Mutex<Table<T>>,
    empty: Arc<[T]>,
}

struct Table<T> {
    buckets: FastMap<u64, Vec<Weak<[T]>>>,
    since_sweep: usize,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Lists {
            table: Mutex::new(Table {
                buckets: FastMap::default(),
                since_sweep: 0,
            }),
            empty: Arc::from(Vec::new()),
        }
    }
}

impl<T> std::fmt::Debug for Lists<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists")
            .field("buckets", &lock(&self.table).buckets.len())
            .finish()
    }
}

impl<T: Addressed> Lists<T> {
    /// The one empty list.
    pub fn empty(&self) -> Arc<[T]> {
        self.empty.clone()
    }

    /// The registered list with the same items as `list`, or `list` itself, registered.
    pub fn share(&self, list: Vec<T>) -> Arc<[T]> {
        if list.is_empty() {
            return self.empty();
        }
        if list.len() < MIN_SHARED {
            return Arc::from(list);
        }
        let h = hash_addrs(list.len() as u64, list.iter().map(Addressed::addr));
        let mut t = lock(&self.table);
        let bucket = t.buckets.entry(h).or_default();
        let mut twin = None;
        bucket.retain(|w| match w.upgrade() {
            Some(l) => {
                if twin.is_none() && same(&l, &list) {
                    twin = Some(l);
                }
                true
            }
            None => false,
        });
        if let Some(l) = twin {
            drop(t);
            return l;
        }
        let shared: Arc<[T]> = Arc::from(list);
        bucket.push(Arc::downgrade(&shared));
        t.since_sweep += 1;
        if t.since_sweep >= SWEEP_EVERY {
            t.since_sweep = 0;
            t.buckets.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
        }
        shared
    }

    /// How many lists are registered and alive.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        lock(&self.table)
            .buckets
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// What applying a change (resources sent, names removed) to a shared list gave.
pub(crate) struct Transitions<T> {
    memo: Mutex<FastMap<u64, Vec<Transition<T>>>>,
}

struct Transition<T> {
    from: Weak<[T]>,
    changed: Vec<usize>,
    removed: Vec<String>,
    /// Weak too: while it is alive, so are the changed items it holds, so their addresses
    /// still name them.
    to: Weak<[T]>,
}

impl<T> Default for Transitions<T> {
    fn default() -> Self {
        Transitions {
            memo: Mutex::new(FastMap::default()),
        }
    }
}

impl<T> std::fmt::Debug for Transitions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transitions")
            .field("entries", &lock(&self.memo).len())
            .finish()
    }
}

fn transition_key<T: Addressed>(from: &Arc<[T]>, changed: &[T], removed: &[String]) -> u64 {
    let h = hash_addrs(
        Arc::as_ptr(from).cast::<u8>() as usize as u64,
        changed.iter().map(Addressed::addr),
    );
    removed.iter().fold(h, |h, n| {
        hash_addrs(h, n.bytes().map(usize::from).chain([usize::MAX]))
    })
}

impl<T: Addressed> Transitions<T> {
    /// What `from` became when `changed` and `removed` were applied to it, if remembered.
    pub fn get(&self, from: &Arc<[T]>, changed: &[T], removed: &[String]) -> Option<Arc<[T]>> {
        if from.len() < MIN_SHARED && changed.len() < MIN_SHARED {
            return None;
        }
        let key = transition_key(from, changed, removed);
        let memo = lock(&self.memo);
        memo.get(&key)?.iter().find_map(|t| {
            let was = t.from.upgrade()?;
            if !Arc::ptr_eq(&was, from)
                || t.removed != removed
                || t.changed.len() != changed.len()
                || !t.changed.iter().zip(changed).all(|(a, c)| *a == c.addr())
            {
                return None;
            }
            t.to.upgrade()
        })
    }

    /// Remembers that `from` became `to`.
    pub fn put(&self, from: &Arc<[T]>, changed: &[T], removed: &[String], to: &Arc<[T]>) {
        if from.len() < MIN_SHARED && changed.len() < MIN_SHARED {
            return;
        }
        let key = transition_key(from, changed, removed);
        let mut memo = lock(&self.memo);
        if memo.len() >= MAX_TRANSITIONS {
            memo.clear();
        }
        let entry = memo.entry(key).or_default();
        entry.retain(|t| t.from.strong_count() > 0 && t.to.strong_count() > 0);
        entry.push(Transition {
            from: Arc::downgrade(from),
            changed: changed.iter().map(Addressed::addr).collect(),
            removed: removed.to_vec(),
            to: Arc::downgrade(to),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, prefix: &str) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("{prefix}{i}"))).collect()
    }

    #[test]
    fn equal_lists_are_kept_once_and_forgotten_when_dropped() {
        let lists = Lists::default();
        let items = names(100, "n");
        let a = lists.share(items.clone());
        let b = lists.share(items.clone());
        assert!(Arc::ptr_eq(&a, &b), "the same items share one list");
        // Equal strings in other allocations are other items.
        let c = lists.share(names(100, "n"));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*a, *c);
        // A different order is a different list.
        let mut reversed = items.clone();
        reversed.reverse();
        assert!(!Arc::ptr_eq(&a, &lists.share(reversed)));
        assert_eq!(lists.live(), 2);
        drop((a, b, c));
        assert_eq!(lists.live(), 0);
        // Short lists are not registered; empty ones are all the one empty list.
        let short = names(3, "s");
        assert!(!Arc::ptr_eq(
            &lists.share(short.clone()),
            &lists.share(short)
        ));
        assert!(Arc::ptr_eq(&lists.share(vec![]), &lists.empty()));
    }

    #[test]
    fn a_transition_is_found_only_for_the_same_list_and_change() {
        let lists = Lists::default();
        let t = Transitions::default();
        let from = lists.share(names(50, "n"));
        let changed = names(2, "new");
        let removed = vec!["n3".to_string()];
        assert!(t.get(&from, &changed, &removed).is_none());
        let mut next: Vec<Arc<str>> = from.iter().filter(|n| &***n != "n3").cloned().collect();
        next.extend(changed.iter().cloned());
        let to = lists.share(next);
        t.put(&from, &changed, &removed, &to);
        let got = t.get(&from, &changed, &removed).expect("remembered");
        assert!(Arc::ptr_eq(&got, &to));
        // Another change, other removals, or another list with equal contents: not found.
        assert!(t.get(&from, &changed[..1], &removed).is_none());
        assert!(t.get(&from, &changed, &[]).is_none());
        assert!(t.get(&from, &names(2, "new"), &removed).is_none());
        let twin = lists.share(names(50, "n"));
        assert!(t.get(&twin, &changed, &removed).is_none());
        // Once nobody holds the result, it is not handed out again.
        drop((got, to));
        assert!(t.get(&from, &changed, &removed).is_none());
    }
}
