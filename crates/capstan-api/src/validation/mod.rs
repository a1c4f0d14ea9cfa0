//! Istio's validation rules, one module per kind, plus shared checks in [`common`].

mod authorization_policy;
pub mod common;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod request_authentication;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload_entry;

use crate::report::Report;

/// What a validator knows about the object besides its spec.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace` (empty when the object does not say; files often omit it).
    pub namespace: &'a str,
    /// The mesh's DNS suffix, `cluster.local` by default.
    pub domain_suffix: &'a str,
    /// Istio's `PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE` (default on): a VirtualService without
    /// hosts is a delegate. When off, hosts are required, as in Istio before delegation existed.
    pub virtual_service_delegate: bool,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context {
            name: "",
            namespace: "",
            domain_suffix: "cluster.local",
            virtual_service_delegate: true,
        }
    }
}

/// Implemented by each kind's spec: records errors and warnings under `spec.*`.
pub trait Validate {
    /// Validates `self`, appending findings to `out`.
    fn validate(&self, cx: &Context<'_>, out: &mut Report);
}
