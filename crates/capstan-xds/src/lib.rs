//! Pilot for Capstan: per-proxy LDS/RDS/CDS/EDS generation with Istio's naming and semantics,
//! and the Aggregated Discovery Service (State of the World and Delta) that pushes them.

pub mod context;
pub mod debounce;
pub mod fast;
pub mod generate;
pub mod histogram;
pub mod pipeline_metrics;
pub mod proxy;
pub mod resource;
pub mod server;
mod share;

pub use context::{MeshConfig, ProxyScope, PushContext};
pub use generate::istio::IstioGenerator;
pub use generate::{GenerateError, Generator, NameSet, PushRequest, Subscription};
pub use proxy::{Proxy, ProxyError, ProxyType};
pub use resource::Resource;
pub use server::{
    AdsOptions, AdsServer, AuthenticatedPeer, Authorizer, ConnectionStatus, Metrics,
    NamespaceAuthorizer, PeerIdentity,
};
