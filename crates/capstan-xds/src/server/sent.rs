//! What one stream's client has of one type: the resources last sent to it, as shared
//! pointers into what generation produced (8 bytes per resource per connection; the names,
//! versions and bodies are shared by every connection that was sent the same resource), plus
//! the versions a Delta client claimed on reconnect (`initial_resource_versions`) for names not
//! sent on this stream yet.

use crate::resource::Resource;
use std::collections::HashMap;
use std::sync::Arc;

/// The resources a client has of one type.
#[derive(Debug, Default)]
pub(crate) struct SentSet {
    /// Sorted by name, unique.
    sent: Vec<Arc<Resource>>,
    /// Claimed on reconnect and not sent since: name → version string.
    claimed: HashMap<String, String>,
}

impl SentSet {
    /// Starts from the versions a reconnecting client says it has.
    pub fn claimed(versions: HashMap<String, String>) -> SentSet {
        SentSet {
            sent: Vec::new(),
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

    /// Forgets `name`.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.sent.remove(i);
        }
        self.claimed.remove(name);
    }

    /// Keeps only the names `keep` approves.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.sent.retain(|r| keep(&r.name));
        self.claimed.retain(|n, _| keep(n));
    }

    /// Replaces everything with `resources` (a SotW response's whole set).
    pub fn replace(&mut self, resources: &[Arc<Resource>]) {
        self.claimed.clear();
        self.sent = resources.to_vec();
        self.sent.sort_by(|a, b| a.name.cmp(&b.name));
        self.sent.dedup_by(|a, b| a.name == b.name);
        self.sent.shrink_to_fit();
    }

    /// Records that `changed` were sent and `removed` were removed.
    pub fn apply(&mut self, changed: &[Arc<Resource>], removed: &[String]) {
        for name in removed {
            self.remove(name);
        }
        if changed.is_empty() {
            return;
        }
        for r in changed {
            self.claimed.remove(&r.name);
        }
        if changed.len() <= 8 {
            for r in changed {
                match r.sent_at.search(&self.sent, &r.name, |s| s.name.as_str()) {
                    Ok(i) => self.sent[i] = r.clone(),
                    Err(i) => self.sent.insert(i, r.clone()),
                }
            }
            return;
        }
        // Many: merge two sorted lists, the new side winning.
        let mut new: Vec<Arc<Resource>> = changed.to_vec();
        new.sort_by(|a, b| a.name.cmp(&b.name));
        new.dedup_by(|a, b| a.name == b.name);
        let old = std::mem::take(&mut self.sent);
        let mut out = Vec::with_capacity(old.len() + new.len());
        let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
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
            let next = if take_new { b.next() } else { a.next() };
            out.extend(next);
        }
        out.shrink_to_fit();
        self.sent = out;
    }

    /// How many resources the client has.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sent.len() + self.claimed.len()
    }
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

    #[test]
    fn claimed_versions_count_until_sent() {
        let a = r("a", "1");
        let mut claimed = HashMap::new();
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
