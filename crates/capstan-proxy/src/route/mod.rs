//! Route configurations (RDS, or inline in an HTTP connection manager) compiled into a table:
//! virtual hosts matched by domain as Envoy does, routes matched by path, headers and query.
//!
//! SKELETON: the HTTP helper owns this module and replaces this file. `compile` and
//! `RouteTable` are the contract the rest of the crate codes against.

use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

/// A compiled route configuration.
#[derive(Debug)]
pub struct RouteTable {
    /// The configuration's name.
    pub name: String,
}

/// Compiles a route configuration.
pub fn compile(rc: &RouteConfiguration) -> Result<RouteTable, CompileError> {
    Ok(RouteTable {
        name: rc.name.clone(),
    })
}
