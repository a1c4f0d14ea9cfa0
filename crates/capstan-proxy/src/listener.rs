//! Listeners compiled from LDS: address, listener filters, filter chains and their matches.

use crate::CompileError;
use envoy_types::pb::envoy::config::listener::v3::Listener;

/// A compiled listener.
#[derive(Debug)]
pub struct ListenerConfig {
    /// Its name.
    pub name: String,
}

impl ListenerConfig {
    /// The route configurations its HTTP filter chains read over RDS.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        std::iter::empty()
    }
}

/// Compiles a listener.
pub fn compile(l: &Listener) -> Result<ListenerConfig, CompileError> {
    Ok(ListenerConfig {
        name: l.name.clone(),
    })
}
