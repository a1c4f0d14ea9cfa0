//! Shared copies of the resource names clients subscribe to. A thousand sidecars subscribing
//! to the same few thousand EDS cluster names hold one copy of each name between them.

use crate::fast::FastSet;
use std::sync::{Arc, Mutex};

/// Names interned at most; beyond, the set starts over (names already handed out stay valid,
/// only sharing restarts), so a client inventing names cannot grow it without bound.
const MAX_NAMES: usize = 1 << 20;

/// A set of shared names.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    names: Mutex<FastSet<Arc<str>>>,
}

impl Interner {
    /// The shared copy of `name`.
    pub fn intern(&self, name: String) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = names.get(name.as_str()) {
            return shared.clone();
        }
        if names.len() >= MAX_NAMES {
            names.clear();
        }
        let shared: Arc<str> = Arc::from(name);
        names.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_copy() {
        let i = Interner::default();
        let a = i.intern("outbound|80||a".to_string());
        let b = i.intern("outbound|80||a".to_string());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &i.intern("other".to_string())));
    }
}
