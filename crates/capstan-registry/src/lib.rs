//! Service discovery for Capstan: the service model, registry adapters, and the aggregate
//! index the xDS server reads.

pub mod consul;
pub mod file;
pub mod index;
pub mod kubernetes;
pub mod model;
pub mod serviceentry;

pub use index::{
    IndexSnapshot, RegistryDelta, RegistryEvent, RegistryId, RegistryState, ServiceIndex,
};
pub use model::{
    Endpoint, EndpointMeta, Health, Locality, Protocol, RegistryKind, Resolution, Service,
    ServicePort, Workload,
};
