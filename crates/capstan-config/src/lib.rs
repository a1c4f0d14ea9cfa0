//! Galley for Capstan: config sources feed a revisioned store of validated Istio objects.
//! Invalid objects never enter the store; each source owns the objects it put there.

pub mod file;
pub mod kube;
pub mod mcp;
pub mod store;

pub use file::FileSource;
pub use kube::KubernetesSource;
pub use mcp::XdsSource;
pub use store::{
    ConfigChange, ConfigEvent, ConfigKey, ConfigStore, EventKind, Snapshot, StoredObject,
};
