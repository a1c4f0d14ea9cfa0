//! Per-filter configuration the proxy implements: `envoy.filters.http.fault` (`HTTPFault`) and
//! `envoy.filters.http.cors` (`CorsPolicy`), from `typed_per_filter_config` (optionally wrapped in
//! `envoy.config.route.v3.FilterConfig`) or from the HCM's filter list.

use super::matcher::{Fraction, HeaderMatcher, StringMatcher};
use crate::CompileError;
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// `HTTPFault` type URL.
pub const FAULT_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
/// Per-route CORS policy type URL.
pub const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
/// `FilterConfig` wrapper type URL.
pub const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// What a fault aborts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status (HTTP 200 with `grpc-status`).
    Grpc(u32),
}

/// A compiled `HTTPFault`.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Fixed delay and the fraction of requests delayed.
    pub delay: Option<(Duration, Fraction)>,
    /// Abort and the fraction of requests aborted.
    pub abort: Option<(Abort, Fraction)>,
    /// The fault applies only to requests whose headers match.
    pub headers: Vec<HeaderMatcher>,
    /// The fault applies only when routing to this cluster.
    pub upstream_cluster: Option<String>,
    /// `max_active_faults`.
    pub max_active: Option<u32>,
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Result<Duration, CompileError> {
    crate::listener::duration(d)
}

impl FaultConfig {
    /// Compiles an `HTTPFault`.
    pub fn compile(f: &HttpFault) -> Result<FaultConfig, CompileError> {
        let delay = match &f.delay {
            Some(d) => {
                let dur = match &d.fault_delay_secifier {
                    Some(FaultDelaySecifier::FixedDelay(fd)) => {
                        duration(fd).map_err(|e| e.within("delay.fixed_delay"))?
                    }
                    Some(FaultDelaySecifier::HeaderDelay(_)) => {
                        return Err(CompileError::new("delay.header_delay", "is not supported"))
                    }
                    None => return Err(CompileError::new("delay.fixed_delay", "is required")),
                };
                let pct = Fraction::compile(&d.percentage.unwrap_or_default())
                    .map_err(|e| e.within("delay.percentage"))?;
                Some((dur, pct))
            }
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => {
                let what = match &a.error_type {
                    Some(fault_abort::ErrorType::HttpStatus(s)) if (200..600).contains(s) => {
                        Abort::Http(*s as u16)
                    }
                    Some(fault_abort::ErrorType::HttpStatus(s)) => {
                        return Err(CompileError::new(
                            "abort.http_status",
                            format!("{s} is not in [200, 600)"),
                        ))
                    }
                    Some(fault_abort::ErrorType::GrpcStatus(s)) => Abort::Grpc(*s),
                    Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                        return Err(CompileError::new("abort.header_abort", "is not supported"))
                    }
                    None => return Err(CompileError::new("abort.error_type", "is required")),
                };
                let pct = Fraction::compile(&a.percentage.unwrap_or_default())
                    .map_err(|e| e.within("abort.percentage"))?;
                Some((what, pct))
            }
            None => None,
        };
        if !f.downstream_nodes.is_empty() {
            return Err(CompileError::new("downstream_nodes", "is not supported"));
        }
        if f.response_rate_limit.is_some() {
            return Err(CompileError::new("response_rate_limit", "is not supported"));
        }
        let headers = f
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::compile(h).map_err(|e| e.within(&format!("headers[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(FaultConfig {
            delay,
            abort,
            headers,
            upstream_cluster: (!f.upstream_cluster.is_empty()).then(|| f.upstream_cluster.clone()),
            max_active: f.max_active_faults.map(|v| v.value),
        })
    }
}

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// `allow_origin_string_match`.
    pub origins: Vec<StringMatcher>,
    /// `allow_methods`.
    pub allow_methods: String,
    /// `allow_headers`.
    pub allow_headers: String,
    /// `expose_headers`.
    pub expose_headers: String,
    /// `max_age`.
    pub max_age: String,
    /// `allow_credentials`.
    pub allow_credentials: bool,
    /// `forward_not_matching_preflights` (default true).
    pub forward_not_matching_preflights: bool,
    /// `filter_enabled` default value: the fraction of requests the policy is enforced for.
    pub enabled: Fraction,
}

impl CorsConfig {
    /// Compiles a per-route `CorsPolicy`.
    pub fn compile(c: &CorsPolicy) -> Result<CorsConfig, CompileError> {
        let origins = c
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                StringMatcher::compile(m)
                    .map_err(|e| e.within(&format!("allow_origin_string_match[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        if c.allow_private_network_access.is_some_and(|b| b.value) {
            return Err(CompileError::new(
                "allow_private_network_access",
                "is not supported",
            ));
        }
        let enabled = match c
            .filter_enabled
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
        {
            Some(p) => Fraction::compile(p).map_err(|e| e.within("filter_enabled"))?,
            None => Fraction::ALL,
        };
        Ok(CorsConfig {
            origins,
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age: c.max_age.clone(),
            allow_credentials: c.allow_credentials.is_some_and(|b| b.value),
            forward_not_matching_preflights: c
                .forward_not_matching_preflights
                .is_none_or(|b| b.value),
            enabled,
        })
    }
}

/// A per-route override of one filter's config.
#[derive(Debug, Default)]
pub enum Override<T> {
    /// Not set here: a less specific level (or the filter's own config) applies.
    #[default]
    Inherit,
    /// `FilterConfig.disabled`: the filter does nothing for this route.
    Disabled,
    /// This config.
    Set(Arc<T>),
}

impl<T> Override<T> {
    /// This level if set, else `less_specific`.
    pub fn or(&self, less_specific: &Override<T>) -> Override<T> {
        match self {
            Override::Inherit => less_specific.clone(),
            other => other.clone(),
        }
    }
}

impl<T> Clone for Override<T> {
    fn clone(&self) -> Self {
        match self {
            Override::Inherit => Override::Inherit,
            Override::Disabled => Override::Disabled,
            Override::Set(t) => Override::Set(t.clone()),
        }
    }
}

/// Per-filter overrides at one level.
#[derive(Debug, Clone, Default)]
pub struct FilterOverrides {
    /// Fault injection.
    pub fault: Override<FaultConfig>,
    /// CORS.
    pub cors: Override<CorsConfig>,
}

impl FilterOverrides {
    /// Compiles a `typed_per_filter_config` map.
    pub fn compile(map: &HashMap<String, Any>) -> Result<FilterOverrides, CompileError> {
        let mut out = FilterOverrides::default();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            let path = format!("typed_per_filter_config[{key}]");
            let mut any = &map[key];
            let mut optional = false;
            let wrapper;
            if any.type_url == FILTER_CONFIG_TYPE {
                wrapper = FilterConfig::decode(any.value.as_slice())
                    .map_err(|e| CompileError::new(path.clone(), format!("cannot decode: {e}")))?;
                optional = wrapper.is_optional;
                if wrapper.disabled {
                    match key.as_str() {
                        "envoy.filters.http.fault" => out.fault = Override::Disabled,
                        "envoy.filters.http.cors" => out.cors = Override::Disabled,
                        _ => {}
                    }
                    continue;
                }
                match &wrapper.config {
                    Some(c) => any = c,
                    None => continue,
                }
            }
            let bad =
                |e: prost::DecodeError| CompileError::new(&path, format!("cannot decode: {e}"));
            match any.type_url.as_str() {
                FAULT_TYPE => {
                    let f = HttpFault::decode(any.value.as_slice()).map_err(bad)?;
                    out.fault = Override::Set(Arc::new(
                        FaultConfig::compile(&f).map_err(|e| e.within(&path))?,
                    ));
                }
                CORS_POLICY_TYPE => {
                    let c = CorsPolicy::decode(any.value.as_slice()).map_err(bad)?;
                    out.cors = Override::Set(Arc::new(
                        CorsConfig::compile(&c).map_err(|e| e.within(&path))?,
                    ));
                }
                _ if optional => {}
                other => {
                    return Err(CompileError::new(
                        path,
                        format!("filter config {other} is not supported"),
                    ))
                }
            }
        }
        Ok(out)
    }
}
