//! The load simulator's parts: the mesh (shared with the generation benchmark, `capstan-xds`'s
//! `benches/generate.rs`, so that both measure the same mesh), the simulated proxy (a Delta xDS
//! client, also used by the load generator's end-to-end test) and its reports; for the mode
//! whose mesh lives in a Kubernetes API server, the same mesh as API objects, content watches
//! and reconnecting proxies; and the startup benchmark's larger mesh of every Istio kind.

pub mod client;
pub mod fleet;
pub mod kube_mesh;
pub mod mesh;
pub mod reports;
pub mod startup_mesh;
mod subscription;
pub mod watch;
mod wire;
