//! `capstan proxy`: the bundled data plane. It is configured only by xDS (Envoy's v3 API, as Istio
//! generates it) and depends on no control-plane crate.
//!
//! Layers, each one concern (see `docs/architecture.md`, "The data plane"):
//! - [`bootstrap`]: the subset of Envoy's bootstrap that Istio's pilot-agent writes;
//! - [`xds`]: the ADS client (Delta or SotW), ACK/NACK, reconnect;
//! - [`store`]: compiled resources, warming, one immutable [`store::Snapshot`] per applied update;
//! - [`listener`], [`route`], [`cluster`]: pure compilation of Envoy protos into resolved types;
//! - [`server`]: accept loops, filter-chain selection, TCP proxy; [`drain`]: listener drains and
//!   their window; [`http`]: the HTTP request path;
//! - [`tls`], [`identity`] and [`sds`]: downstream TLS, the workload identity, SDS secrets;
//! - [`admin`] and [`stats`]: Envoy's admin endpoints and counters;
//! - `cli` (feature `cli`, on by default): the flags of the `capstan-proxy` binary and of
//!   `capstan proxy`, one definition for both; `alloc`, the binaries' allocator.

pub mod admin;
#[cfg(feature = "cli")]
pub mod alloc;
pub mod bootstrap;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod drain;
pub mod error;
pub mod fast_map;
pub mod http;
// Not wired into the server yet (issue 10): only its tests use it for now.
mod http2;
pub mod identity;
pub mod istio_ext;
pub mod istio_metrics;
pub mod listener;
pub mod listener_filter;
pub mod net;
pub mod resources;
pub mod route;
pub mod run;
pub mod sds;
pub mod server;
pub mod sniff;
pub mod stats;
pub mod store;
pub mod tcp;
pub mod tls;
pub mod xds;

pub use error::CompileError;
