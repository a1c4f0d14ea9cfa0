//! Content watches: what the orchestrator tells every simulated proxy to look for in the
//! responses it receives ("a ClusterLoadAssignment of this cluster holding this address"), so
//! a change is recognised by what it changed, not by a response merely naming the resource.
//! Set before the change is written; each proxy reports its first match once.

use std::sync::{Arc, RwLock};

/// One thing to look for.
#[derive(Clone, Debug)]
pub struct Watch {
    /// Reported back with the match.
    pub id: u64,
    /// The response type it appears in (one of the `client` type URL constants).
    pub type_url: &'static str,
    /// The resource's name.
    pub resource: String,
    /// Bytes the resource's body must contain; empty: the name alone is enough.
    pub needle: Vec<u8>,
}

impl Watch {
    /// Whether the resource `name` with serialized body `body` is what this watch looks for.
    pub fn matches(&self, name: &[u8], body: &[u8]) -> bool {
        name == self.resource.as_bytes()
            && (self.needle.is_empty() || memchr::memmem::find(body, &self.needle).is_some())
    }
}

/// The watches shared by the orchestrator and every proxy (read once per response: an
/// uncontended read lock and an `Arc` clone).
#[derive(Clone, Default)]
pub struct Watches(Arc<RwLock<Arc<[Watch]>>>);

impl Watches {
    /// Replaces the current watches.
    pub fn set(&self, watches: Vec<Watch>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = watches.into();
    }

    /// The current watches.
    pub fn current(&self) -> Arc<[Watch]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_needs_the_name_and_the_bytes() {
        let w = Watch {
            id: 1,
            type_url: crate::client::ENDPOINT,
            resource: "a".into(),
            needle: b"xyz".to_vec(),
        };
        assert!(w.matches(b"a", b"..xyz.."));
        assert!(!w.matches(b"a", b"..xy.z.."));
        assert!(!w.matches(b"b", b"xyz"));
        let by_name = Watch {
            needle: vec![],
            ..w.clone()
        };
        assert!(by_name.matches(b"a", b""));
        let shared = Watches::default();
        assert!(shared.current().is_empty());
        shared.set(vec![w, by_name]);
        assert_eq!(shared.clone().current().len(), 2);
    }
}
