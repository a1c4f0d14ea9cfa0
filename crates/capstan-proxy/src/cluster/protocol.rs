//! The cluster's upstream HTTP protocol: `typed_extension_protocol_options`
//! (`envoy.extensions.upstreams.http.v3.HttpProtocolOptions`: explicit HTTP/1 or HTTP/2, or the
//! downstream's protocol), `protocol_selection`, `common_http_protocol_options` and the
//! deprecated `max_requests_per_connection`, compiled into the pool's settings.
#![allow(deprecated)]

use super::compile::duration;
use super::pool::{Http2Settings, PoolConfig, UpstreamProtocol};
use crate::CompileError;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use prost::Message;

/// The key Istio (and Envoy) use for upstream HTTP options.
pub const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn err(path: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError::new(path, message)
}

/// Fills the pool's protocol, HTTP/2 settings, idle timeout and requests per connection.
pub(crate) fn http_options(c: &Cluster, pool: &mut PoolConfig) -> Result<(), CompileError> {
    if let Some(m) = c.max_requests_per_connection {
        pool.max_requests_per_connection = Some(m.value);
    }
    if let Some(o) = &c.common_http_protocol_options {
        common(o, pool).map_err(|e| e.within("common_http_protocol_options"))?;
    }
    if c.protocol_selection == cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        pool.protocol = UpstreamProtocol::Downstream;
    }
    for (key, any) in &c.typed_extension_protocol_options {
        let path = format!("typed_extension_protocol_options[{key:?}]");
        if key != HTTP_OPTIONS || !any.type_url.ends_with(HTTP_OPTIONS) {
            return Err(err(
                path,
                "only envoy.extensions.upstreams.http.v3.HttpProtocolOptions is supported",
            ));
        }
        let o = HttpProtocolOptions::decode(any.value.as_slice())
            .map_err(|e| err(&path, format!("cannot decode: {e}")))?;
        upstream_options(&o, pool).map_err(|e| e.within(&path))?;
    }
    // Envoy: 0 means no limit.
    pool.max_requests_per_connection = pool.max_requests_per_connection.filter(|n| *n > 0);
    Ok(())
}

fn upstream_options(o: &HttpProtocolOptions, pool: &mut PoolConfig) -> Result<(), CompileError> {
    let checks = [
        (!o.http_filters.is_empty(), "http_filters"),
        (
            o.header_validation_config.is_some(),
            "header_validation_config",
        ),
        (o.outlier_detection.is_some(), "outlier_detection"),
        (
            !o.request_mirror_policies.is_empty(),
            "request_mirror_policies",
        ),
        (!o.hash_policy.is_empty(), "hash_policy"),
        (o.retry_policy.is_some(), "retry_policy"),
    ];
    if let Some((_, f)) = checks.iter().find(|(set, _)| *set) {
        return Err(err(*f, "not supported"));
    }
    // upstream_http_protocol_options (auto SNI / SAN) only act with TLS, which is rejected.
    if let Some(c) = &o.common_http_protocol_options {
        common(c, pool).map_err(|e| e.within("common_http_protocol_options"))?;
    }
    match &o.upstream_protocol_options {
        None => {}
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            None => {}
            Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                http1(h1).map_err(|e| e.within("explicit_http_config.http_protocol_options"))?;
                pool.protocol = UpstreamProtocol::Http1;
            }
            Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                pool.http2 = http2(h2)
                    .map_err(|e| e.within("explicit_http_config.http2_protocol_options"))?;
                pool.protocol = UpstreamProtocol::Http2;
            }
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                return Err(err(
                    "explicit_http_config.http3_protocol_options",
                    "HTTP/3 is not supported",
                ))
            }
        },
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
            let path = "use_downstream_protocol_config";
            if d.http3_protocol_options.is_some() {
                return Err(err(
                    format!("{path}.http3_protocol_options"),
                    "HTTP/3 is not supported",
                ));
            }
            if let Some(h1) = &d.http_protocol_options {
                http1(h1).map_err(|e| e.within(&format!("{path}.http_protocol_options")))?;
            }
            if let Some(h2) = &d.http2_protocol_options {
                pool.http2 =
                    http2(h2).map_err(|e| e.within(&format!("{path}.http2_protocol_options")))?;
            }
            pool.protocol = UpstreamProtocol::Downstream;
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return Err(err(
                "auto_config",
                "ALPN-negotiated upstream protocol needs TLS, which is not supported yet",
            ))
        }
    }
    Ok(())
}

fn common(o: &CommonOptions, pool: &mut PoolConfig) -> Result<(), CompileError> {
    let mut rest = *o;
    if let Some(d) = rest.idle_timeout.take() {
        let t = duration("idle_timeout", &d)?;
        // Envoy: 0 disables the idle timeout.
        pool.idle_timeout = (!t.is_zero()).then_some(t);
    }
    if let Some(m) = rest.max_requests_per_connection.take() {
        pool.max_requests_per_connection = Some(m.value);
    }
    if rest != CommonOptions::default() {
        return Err(err(
            "",
            "only idle_timeout and max_requests_per_connection are supported",
        ));
    }
    Ok(())
}

fn http1(o: &Http1ProtocolOptions) -> Result<(), CompileError> {
    if *o != Http1ProtocolOptions::default() {
        return Err(err("", "HTTP/1 options are not supported"));
    }
    Ok(())
}

fn http2(o: &Http2ProtocolOptions) -> Result<Http2Settings, CompileError> {
    let mut rest = o.clone();
    let mut out = Http2Settings {
        initial_stream_window: rest.initial_stream_window_size.take().map(|v| v.value),
        initial_connection_window: rest.initial_connection_window_size.take().map(|v| v.value),
        header_table_size: rest.hpack_table_size.take().map(|v| v.value),
        ..Http2Settings::default()
    };
    // The client's own SETTINGS_MAX_CONCURRENT_STREAMS limits streams the server opens (push),
    // which this client never accepts; the upstream's limit is honoured by the h2 crate.
    rest.max_concurrent_streams = None;
    if let Some(k) = rest.connection_keepalive.take() {
        let path = "connection_keepalive";
        if k.interval_jitter.is_some() || k.connection_idle_interval.is_some() {
            return Err(err(path, "only interval and timeout are supported"));
        }
        out.keepalive_interval = k
            .interval
            .map(|d| duration(&format!("{path}.interval"), &d))
            .transpose()?;
        out.keepalive_timeout = k
            .timeout
            .map(|d| duration(&format!("{path}.timeout"), &d))
            .transpose()?;
    }
    if rest != Http2ProtocolOptions::default() {
        return Err(err(
            "",
            "only initial_stream_window_size, initial_connection_window_size, hpack_table_size, \
             max_concurrent_streams and connection_keepalive are supported",
        ));
    }
    Ok(out)
}
