//! Route configuration names a listener references (RDS), found the way a proxy finds them:
//! in the HTTP connection managers of its filter chains and of its API listener.

use capstan_xds::Resource;
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn rds_name(any: &Any) -> Option<String> {
    if any.type_url != HCM {
        return None;
    }
    match HttpConnectionManager::decode(any.value.as_slice())
        .ok()?
        .route_specifier?
    {
        RouteSpecifier::Rds(rds) => Some(rds.route_config_name),
        _ => None,
    }
}

/// The RDS names a listener resource references.
pub fn route_names(resource: &std::sync::Arc<Resource>) -> Vec<std::sync::Arc<str>> {
    let Ok(listener) = resource.decode::<Listener>() else {
        return Vec::new();
    };
    let mut names: Vec<String> = listener
        .filter_chains
        .iter()
        .flat_map(|fc| fc.filters.iter())
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => rds_name(any),
            _ => None,
        })
        .collect();
    if let Some(api) = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
    {
        names.extend(rds_name(api));
    }
    names.sort();
    names.dedup();
    names.into_iter().map(Into::into).collect()
}
