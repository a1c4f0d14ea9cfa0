//! What one stream's client has of one type: the resources last sent to it, as shared
//! pointers into what generation produced, plus the versions a Delta client claimed on
//! reconnect (`initial_resource_versions`) for names not sent on this stream yet.
//!
//! The list of sent resources is itself shared ([`crate::share`]): the thousand sidecars of a
//! namespace were sent the same clusters and assignments, and hold one list between them (a
//! pointer each) instead of 8 bytes per resource each. A list is never changed in place: a
//! change builds the next list, or takes the one another stream built from the same list and
//! the same change.

use crate::fast::FastMap;
use crate::resource::Resource;
use crate::share::{Lists, Transitions};
use std::sync::{Arc, LazyLock};

/// Every stream's lists of sent resources, and how they changed.
static LISTS: LazyLock<Lists<Arc<Resource>>> = LazyLock::new(Lists::default);
static TRANSITIONS: LazyLock<Transitions<Arc<Resource>>> = LazyLock::new(Transitions::default);

/// The resources a client has of one type.
#[derive(Debug)]
pub(crate) struct SentSet {
    /// Sorted by name, unique; shared.
    sent: Arc<[Arc<Resource>]>,
    /// Claimed on reconnect and not sent since: name → version string.
    claimed: FastMap<String, String>,
}

impl Default for SentSet {
    fn default() -> Self {
        SentSet::claimed(FastMap::default())
    }
}

impl SentSet {
    /// Starts from the versions a reconnecting client says it has.
    pub fn claimed(versions: FastMap<String, String>) -> SentSet {
        SentSet {
            sent: LISTS.empty(),
            claimed: versions,
        }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.sent.binary_search_by(|r| r.name.as_str().cmp(name))
    }

    /// Whether the client has exactly this resource (same name and version).
    pub fn has(&self, r: &Resource) -> bool {
        if let Ok(i) = r.sent_at.search(&self.sent, &r.name, |s| s.name.as_str()) {
            return self.sent[i].version == r.version;
        }
        self.claimed
            .get(&r.name)
            .is_some_and(|v| *v == r.version_string())
    }

    /// Every name the client has.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.sent
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.claimed.keys().map(String::as_str))
    }

    /// Whether the client has exactly `resources` (any order, no more, no less).
    pub fn is_exactly(&self, resources: &[Arc<Resource>]) -> bool {
        self.claimed.is_empty()
            && self.sent.len() == resources.len()
            && resources.iter().all(|r| self.has(r))
    }

    /// Keeps only the names `keep` approves.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let kept: Vec<_> = self
            .sent
            .iter()
            .filter(|r| keep(&r.name))
            .cloned()
            .collect();
        if kept.len() != self.sent.len() {
            self.sent = LISTS.share(kept);
        }
        self.claimed.retain(|n, _| keep(n));
    }

    /// Replaces everything with `resources` (a SotW response's whole set).
    pub fn replace(&mut self, resources: &[Arc<Resource>]) {
        self.claimed.clear();
        let mut sent = resources.to_vec();
        sent.sort_by(|a, b| a.name.cmp(&b.name));
        sent.dedup_by(|a, b| a.name == b.name);
        self.sent = LISTS.share(sent);
    }

    /// Records that `changed` were sent and `removed` were removed.
    pub fn apply(&mut self, changed: &[Arc<Resource>], removed: &[String]) {
        for name in removed {
            self.claimed.remove(name);
        }
        for r in changed {
            self.claimed.remove(&r.name);
        }
        if changed.is_empty() && !removed.iter().any(|n| self.find(n).is_ok()) {
            return;
        }
        if let Some(next) = TRANSITIONS.get(&self.sent, changed, removed) {
            self.sent = next;
            return;
        }
        let next = LISTS.share(merge(&self.sent, changed, removed));
        TRANSITIONS.put(&self.sent, changed, removed, &next);
        self.sent = next;
    }

    /// The list of what the client has, when that is `len` resources and nothing claimed:
    /// then a response that just sent `len` resources sent exactly this list.
    pub fn list_if_len(&self, len: usize) -> Option<Arc<[Arc<Resource>]>> {
        (self.claimed.is_empty() && self.sent.len() == len).then(|| self.sent.clone())
    }

    /// How many resources the client has.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sent.len() + self.claimed.len()
    }

    /// The list of sent resources (for tests of sharing).
    #[cfg(test)]
    fn list(&self) -> &Arc<[Arc<Resource>]> {
        &self.sent
    }
}

/// `old` (sorted by name, unique) without `removed`, with `changed` added or replacing the
/// resources of the same name; sorted, unique, the last of equal names in `changed` winning.
fn merge(
    old: &[Arc<Resource>],
    changed: &[Arc<Resource>],
    removed: &[String],
) -> Vec<Arc<Resource>> {
    let mut new: Vec<Arc<Resource>> = changed.to_vec();
    // Stable, then keep the last of each name: a later resource of the same name wins.
    new.sort_by(|a, b| a.name.cmp(&b.name));
    new.reverse();
    new.dedup_by(|a, b| a.name == b.name);
    new.reverse();
    let gone = |r: &Arc<Resource>| removed.iter().any(|n| *n == r.name);
    let mut out = Vec::with_capacity(old.len() + new.len());
    let (mut a, mut b) = (old.iter().peekable(), new.into_iter().peekable());
    loop {
        let take_new = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(x), Some(y)) => match x.name.cmp(&y.name) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => {
                    a.next();
                    true
                }
            },
        };
        if take_new {
            out.extend(b.next());
        } else if let Some(r) = a.next() {
            if removed.is_empty() || !gone(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn r(name: &str, tag: &str) -> Arc<Resource> {
        Resource::shared(
            name,
            &Cluster {
                name: name.into(),
                alt_stat_name: tag.into(),
                ..Cluster::default()
            },
        )
    }

    #[test]
    fn apply_merges_small_and_large_updates() {
        let mut s = SentSet::default();
        let many: Vec<_> = (0..20).map(|i| r(&format!("c{i:02}"), "1")).collect();
        s.apply(&many, &[]);
        assert_eq!(s.len(), 20);
        assert!(many.iter().all(|x| s.has(x)));
        // A small update replaces in place.
        let c05 = r("c05", "2");
        s.apply(std::slice::from_ref(&c05), &["c00".into()]);
        assert!(s.has(&c05) && !s.has(&many[5]));
        assert!(!s.names().any(|n| n == "c00"));
        // A large update with new and replaced names.
        let big: Vec<_> = (10..30).map(|i| r(&format!("c{i:02}"), "3")).collect();
        s.apply(&big, &[]);
        assert_eq!(s.len(), 29);
        assert!(big.iter().all(|x| s.has(x)));
        assert!(s.has(&c05));
        let names: Vec<_> = s.names().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    /// The index a resource was last found at is only tried first: sets of other sizes and
    /// contents still answer exactly.
    #[test]
    fn found_positions_are_hints_only() {
        let (a, b, c) = (r("a", "1"), r("b", "1"), r("c", "1"));
        let mut three = SentSet::default();
        three.apply(&[a.clone(), b.clone(), c.clone()], &[]);
        let mut two = SentSet::default();
        two.apply(&[b.clone(), c.clone()], &[]);
        let mut newer_b = SentSet::default();
        newer_b.apply(&[a.clone(), r("b", "2"), c.clone()], &[]);
        for _ in 0..2 {
            assert!(three.has(&b));
            assert!(two.has(&b));
            assert!(!newer_b.has(&b), "same index, same name, other version");
            assert!(two.has(&c) && three.has(&c));
            assert!(!two.has(&a) && three.has(&a));
            assert!(!SentSet::default().has(&c));
        }
    }

    /// Streams sent the same resources hold one list; a change applied to it by one stream is
    /// taken as it is by the next stream with the same list and change, and streams whose
    /// histories differ but end with the same resources share too.
    #[test]
    fn streams_sent_the_same_resources_share_one_list() {
        let all: Vec<_> = (0..40).map(|i| r(&format!("c{i:02}"), "1")).collect();
        let mut sets: Vec<SentSet> = (0..3).map(|_| SentSet::default()).collect();
        for s in &mut sets {
            s.apply(&all, &[]);
        }
        assert!(Arc::ptr_eq(sets[0].list(), sets[1].list()));
        assert!(Arc::ptr_eq(sets[1].list(), sets[2].list()));
        // A push: one resource changes, one goes.
        let c07 = r("c07", "2");
        for s in &mut sets[..2] {
            s.apply(std::slice::from_ref(&c07), &["c09".into()]);
        }
        assert!(Arc::ptr_eq(sets[0].list(), sets[1].list()));
        assert!(sets[0].has(&c07) && !sets[0].has(&all[7]));
        assert!(!sets[0].names().any(|n| n == "c09"));
        assert_eq!(sets[0].len(), 39);
        // The third stream was not part of that push; its list is unchanged.
        assert!(sets[2].has(&all[7]) && sets[2].len() == 40);
        // It gets there another way (removal first, then the change): same list again.
        sets[2].retain(|n| n != "c09");
        sets[2].apply(std::slice::from_ref(&c07), &[]);
        assert!(Arc::ptr_eq(sets[0].list(), sets[2].list()));
        // A stream sent other versions holds its own list.
        let mut other = SentSet::default();
        let other_versions: Vec<_> = (0..40).map(|i| r(&format!("c{i:02}"), "9")).collect();
        other.apply(&other_versions, &[]);
        assert!(!Arc::ptr_eq(other.list(), sets[1].list()));
    }

    #[test]
    fn claimed_versions_count_until_sent() {
        let a = r("a", "1");
        let mut claimed = FastMap::default();
        claimed.insert("a".to_string(), a.version_string());
        claimed.insert("b".to_string(), "old".to_string());
        let mut s = SentSet::claimed(claimed);
        assert!(s.has(&a));
        assert!(!s.has(&r("b", "1")));
        assert!(!s.is_exactly(std::slice::from_ref(&a)));
        s.apply(std::slice::from_ref(&a), &["b".into()]);
        assert!(s.is_exactly(std::slice::from_ref(&a)));
        s.retain(|n| n != "a");
        assert_eq!(s.len(), 0);
    }
}
