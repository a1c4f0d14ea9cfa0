//! `compile_hcm`: an `HttpConnectionManager` into [`HcmConfig`]: codec, routes (RDS or inline),
//! HTTP filters (JWT authentication, RBAC, fault, CORS, in their listed order; router last),
//! timeouts, the forwarding-header settings and the upgrade types allowed.

use super::{HcmConfig, HttpFilter, RouteSource};
use crate::route::filters::{FaultConfig, FAULT_TYPE};
use crate::CompileError;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
    RequestIdExtension,
};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";

fn dur(
    d: &Option<envoy_types::pb::google::protobuf::Duration>,
    field: &str,
) -> Result<Option<Duration>, CompileError> {
    d.as_ref()
        .map(|d| crate::listener::duration(d).map_err(|e| e.within(field)))
        .transpose()
}

/// `request_id_extension`: only Envoy's UUID extension, which istiod sets on every connection
/// manager. Its ids are random UUIDv4s, as the proxy generates; its two options concern
/// tracing only (`pack_trace_reason` writes the trace decision into the id,
/// `use_request_id_for_trace_sampling` samples on it), and the proxy makes no trace decisions,
/// so its ids are those Envoy sends for an untraced request.
fn request_id_extension(r: &RequestIdExtension) -> Result<(), CompileError> {
    use envoy_types::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
    use prost::Name;
    match &r.typed_config {
        Some(a) if a.type_url == UuidRequestIdConfig::type_url() => {
            UuidRequestIdConfig::decode(a.value.as_slice())
                .map(|_| ())
                .map_err(|e| CompileError::new("typed_config", format!("cannot decode: {e}")))
        }
        Some(a) => Err(CompileError::new(
            "typed_config",
            format!("request ID extension {} is not supported", a.type_url),
        )),
        None => Err(CompileError::new("typed_config", "is required")),
    }
}

/// Compiles an `HttpConnectionManager` network filter's config.
#[allow(deprecated)]
pub fn compile_hcm(h: &HttpConnectionManager) -> Result<HcmConfig, CompileError> {
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::Rds(r)) if !r.route_config_name.is_empty() => {
            RouteSource::Rds(r.route_config_name.clone())
        }
        Some(RouteSpecifier::Rds(_)) => {
            return Err(CompileError::new("rds.route_config_name", "is required"))
        }
        Some(RouteSpecifier::RouteConfig(rc)) => RouteSource::Inline(Arc::new(
            crate::route::compile(rc).map_err(|e| e.within("route_config"))?,
        )),
        Some(_) => return Err(CompileError::new("scoped_routes", "is not supported")),
        None => return Err(CompileError::new("route_specifier", "is required")),
    };
    let codec = match h.codec_type {
        0 => super::Codec::Auto,
        1 => super::Codec::Http1,
        2 => super::Codec::Http2,
        c => {
            return Err(CompileError::new(
                "codec_type",
                format!("{c} is not supported"),
            ))
        }
    };
    let mut filters = Vec::new();
    let mut router = false;
    for (i, f) in h.http_filters.iter().enumerate() {
        let path = format!("http_filters[{i}]");
        if router {
            return Err(CompileError::new(
                path,
                "the router must be the last filter",
            ));
        }
        if f.disabled {
            continue;
        }
        let any = match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => Some(a),
            _ => None,
        };
        let type_url = any.map(|a| a.type_url.as_str()).unwrap_or("");
        match (f.name.as_str(), type_url) {
            (_, ROUTER_TYPE) | ("envoy.filters.http.router", "") => router = true,
            (_, CORS_TYPE) | ("envoy.filters.http.cors", "") => filters.push(HttpFilter::Cors),
            (_, FAULT_TYPE) | ("envoy.filters.http.fault", "") => {
                let proto = match any {
                    Some(a) => HttpFault::decode(a.value.as_slice()).map_err(|e| {
                        CompileError::new(
                            format!("{path}.typed_config"),
                            format!("cannot decode: {e}"),
                        )
                    })?,
                    None => HttpFault::default(),
                };
                filters.push(HttpFilter::Fault(Arc::new(
                    FaultConfig::compile(&proto)
                        .map_err(|e| e.within(&format!("{path}.typed_config")))?,
                )));
            }
            (_, super::rbac::RBAC_TYPE) | ("envoy.filters.http.rbac", "") => {
                let proto = match any {
                    Some(a) => prost::Message::decode(a.value.as_slice()).map_err(|e| {
                        CompileError::new(
                            format!("{path}.typed_config"),
                            format!("cannot decode: {e}"),
                        )
                    })?,
                    None => Default::default(),
                };
                filters.push(HttpFilter::Rbac(Arc::new(
                    super::rbac::RbacFilter::compile(&proto)
                        .map_err(|e| e.within(&format!("{path}.typed_config")))?,
                )));
            }
            (_, super::jwt_authn::JWT_AUTHN_TYPE) | (super::jwt_authn::JWT_AUTHN_NAME, "") => {
                let proto = match any {
                    Some(a) => prost::Message::decode(a.value.as_slice()).map_err(|e| {
                        CompileError::new(
                            format!("{path}.typed_config"),
                            format!("cannot decode: {e}"),
                        )
                    })?,
                    None => Default::default(),
                };
                filters.push(HttpFilter::JwtAuthn(Arc::new(
                    super::jwt_authn::JwtAuthnFilter::compile(&proto)
                        .map_err(|e| e.within(&format!("{path}.typed_config")))?,
                )));
            }
            _ if f.is_optional => {}
            (name, _) if crate::istio_ext::telemetry_http_filter(name, any) => {}
            (name, t) => {
                return Err(CompileError::new(
                    path,
                    format!("HTTP filter {name} ({t}) is not supported"),
                ))
            }
        }
    }
    if !router {
        return Err(CompileError::new(
            "http_filters",
            "the router filter is required",
        ));
    }
    let unsupported = [
        ("local_reply_config", h.local_reply_config.is_some()),
        (
            "original_ip_detection_extensions",
            !h.original_ip_detection_extensions.is_empty(),
        ),
        (
            "early_header_mutation_extensions",
            !h.early_header_mutation_extensions.is_empty(),
        ),
        (
            "path_with_escaped_slashes_action",
            h.path_with_escaped_slashes_action > 1,
        ),
        ("via", !h.via.is_empty()),
        ("proxy_status_config", h.proxy_status_config.is_some()),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*f, "is not supported"));
    }
    if let Some(r) = &h.request_id_extension {
        request_id_extension(r).map_err(|e| e.within("request_id_extension"))?;
    }
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode;
    let strip_port = match &h.strip_port_mode {
        Some(StripPortMode::StripAnyHostPort(true)) => super::StripPort::Any,
        _ if h.strip_matching_host_port => super::StripPort::Matching,
        _ => super::StripPort::None,
    };
    Ok(HcmConfig {
        stat_prefix: h.stat_prefix.clone(),
        routes,
        codec,
        filters,
        stream_idle_timeout: match dur(&h.stream_idle_timeout, "stream_idle_timeout")? {
            None => Some(Duration::from_secs(300)),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
        request_timeout: dur(&h.request_timeout, "request_timeout")?.filter(|d| !d.is_zero()),
        use_remote_address: h.use_remote_address.is_some_and(|b| b.value),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h.generate_request_id.is_none_or(|b| b.value),
        preserve_external_request_id: h.preserve_external_request_id,
        always_set_request_id_in_response: h.always_set_request_id_in_response,
        server_name: if h.server_name.is_empty() {
            "envoy".into()
        } else {
            h.server_name.clone()
        },
        // server_header_transformation: 0 OVERWRITE, 1 APPEND_IF_ABSENT, 2 PASS_THROUGH.
        server_header: h.server_header_transformation,
        strip_port,
        normalize_path: h.normalize_path.is_some_and(|b| b.value),
        merge_slashes: h.merge_slashes,
        xfcc: super::headers::Xfcc::compile(h)?,
        upgrades: super::upgrade::compile_hcm(&h.upgrade_configs)
            .map_err(|e| e.within("upgrade_configs"))?,
        allow_connect: h
            .http2_protocol_options
            .as_ref()
            .is_some_and(|o| o.allow_connect),
        http2: match &h.http2_protocol_options {
            Some(o) => http2_settings(o).map_err(|e| e.within("http2_protocol_options"))?,
            None => super::Http2Settings::default(),
        },
    })
}

/// The downstream HTTP/2 server's settings. Envoy's flood bounds (`max_outbound_frames` and
/// the like) are accepted with the server's own bounds in their place (docs/compatibility.md);
/// what would change the protocol spoken and is not implemented is refused by name.
fn http2_settings(
    o: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
) -> Result<super::Http2Settings, CompileError> {
    let unsupported = [
        ("allow_metadata", o.allow_metadata),
        (
            "custom_settings_parameters",
            !o.custom_settings_parameters.is_empty(),
        ),
        ("connection_keepalive", o.connection_keepalive.is_some()),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*f, "is not supported"));
    }
    let defaults = super::Http2Settings::default();
    // Envoy's bounds (its proto's validation rules).
    let ranged = |field: &str, v: Option<u32>, min: u32, max: u32, default: u32| match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(CompileError::new(
            field,
            format!("{v} is outside {min}..={max}"),
        )),
    };
    let window_max = (1 << 31) - 1;
    Ok(super::Http2Settings {
        max_concurrent_streams: ranged(
            "max_concurrent_streams",
            o.max_concurrent_streams.map(|v| v.value),
            1,
            window_max,
            defaults.max_concurrent_streams,
        )?,
        initial_stream_window_size: ranged(
            "initial_stream_window_size",
            o.initial_stream_window_size.map(|v| v.value),
            65_535,
            window_max,
            defaults.initial_stream_window_size,
        )?,
        initial_connection_window_size: ranged(
            "initial_connection_window_size",
            o.initial_connection_window_size.map(|v| v.value),
            65_535,
            window_max,
            defaults.initial_connection_window_size,
        )?,
        hpack_table_size: o
            .hpack_table_size
            .map_or(defaults.hpack_table_size, |v| v.value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, Rds,
    };
    use envoy_types::pb::google::protobuf::Any;

    fn filter(name: &str, type_url: &str, optional: bool) -> HttpFilter {
        HttpFilter {
            name: name.into(),
            is_optional: optional,
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: type_url.into(),
                value: vec![],
            })),
            ..HttpFilter::default()
        }
    }

    fn hcm(filters: Vec<HttpFilter>) -> HttpConnectionManager {
        HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_80".into(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "80".into(),
                ..Rds::default()
            })),
            http_filters: filters,
            ..HttpConnectionManager::default()
        }
    }

    #[test]
    fn filter_lists() {
        let router = || filter("envoy.filters.http.router", ROUTER_TYPE, false);
        let cases: Vec<(Vec<HttpFilter>, Option<&str>)> = vec![
            (vec![router()], None),
            (
                vec![
                    filter("envoy.filters.http.cors", CORS_TYPE, false),
                    filter("envoy.filters.http.fault", FAULT_TYPE, false),
                    router(),
                ],
                None,
            ),
            (
                vec![filter("x", "type.googleapis.com/x.Y", true), router()],
                None,
            ),
            (
                vec![filter("x", "type.googleapis.com/x.Y", false), router()],
                Some("http_filters[0]"),
            ),
            (
                vec![
                    router(),
                    filter("envoy.filters.http.cors", CORS_TYPE, false),
                ],
                Some("http_filters[1]"),
            ),
            (vec![], Some("http_filters")),
        ];
        for (i, (filters, err)) in cases.into_iter().enumerate() {
            let r = compile_hcm(&hcm(filters));
            assert_eq!(r.err().map(|e| e.path), err.map(str::to_string), "case {i}");
        }
        // Filters keep their listed order (the JWT filter must run before RBAC reads its
        // metadata); an empty typed config is a valid JwtAuthentication and RBAC.
        let c = compile_hcm(&hcm(vec![
            filter(
                "envoy.filters.http.jwt_authn",
                super::super::jwt_authn::JWT_AUTHN_TYPE,
                false,
            ),
            filter(
                "envoy.filters.http.rbac",
                super::super::rbac::RBAC_TYPE,
                false,
            ),
            filter("envoy.filters.http.fault", FAULT_TYPE, false),
            filter("envoy.filters.http.cors", CORS_TYPE, false),
            router(),
        ]))
        .unwrap();
        let kinds: Vec<&str> = c
            .filters
            .iter()
            .map(|f| match f {
                super::HttpFilter::JwtAuthn(_) => "jwt_authn",
                super::HttpFilter::Rbac(_) => "rbac",
                super::HttpFilter::Fault(_) => "fault",
                super::HttpFilter::Cors => "cors",
            })
            .collect();
        assert_eq!(kinds, ["jwt_authn", "rbac", "fault", "cors"]);
        let c = compile_hcm(&hcm(vec![router()])).unwrap();
        assert_eq!(c.stat_prefix, "outbound_0.0.0.0_80");
        assert!(matches!(&c.routes, RouteSource::Rds(n) if n == "80"));
        assert!(c.generate_request_id);
        assert_eq!(c.server_name, "envoy");
    }

    /// istiod's connection-manager settings (WebSocket upgrades, the UUID request-id
    /// extension) compile; the shapes the proxy does not carry are NACKed by path.
    #[test]
    fn istiod_upgrade_and_request_id_settings() {
        use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig;
        use envoy_types::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
        use envoy_types::pb::google::protobuf::BoolValue;
        use prost::Name;
        let router = || filter("envoy.filters.http.router", ROUTER_TYPE, false);
        let istiod = HttpConnectionManager {
            upgrade_configs: vec![UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..UpgradeConfig::default()
            }],
            request_id_extension: Some(RequestIdExtension {
                typed_config: Some(Any {
                    type_url: UuidRequestIdConfig::type_url(),
                    value: UuidRequestIdConfig {
                        use_request_id_for_trace_sampling: Some(BoolValue { value: true }),
                        pack_trace_reason: None,
                    }
                    .encode_to_vec(),
                }),
            }),
            ..hcm(vec![router()])
        };
        let c = compile_hcm(&istiod).expect("istiod's connection manager");
        assert_eq!(c.upgrades.get("websocket"), Some(true));
        assert!(!c.allow_connect);
        // WebSocket over HTTP/2 downstream (RFC 8441): Envoy's second hop of "WebSocket over
        // HTTP/2 hops".
        let connect = HttpConnectionManager {
            http2_protocol_options: Some(Http2ProtocolOptions {
                allow_connect: true,
                ..Http2ProtocolOptions::default()
            }),
            ..istiod.clone()
        };
        assert!(compile_hcm(&connect).expect("allow_connect").allow_connect);
        let cases: Vec<(HttpConnectionManager, &str)> = vec![
            (
                HttpConnectionManager {
                    upgrade_configs: vec![UpgradeConfig {
                        upgrade_type: "CONNECT".into(),
                        ..UpgradeConfig::default()
                    }],
                    ..istiod.clone()
                },
                "upgrade_configs[0].upgrade_type",
            ),
            (
                HttpConnectionManager {
                    request_id_extension: Some(RequestIdExtension {
                        typed_config: Some(Any {
                            type_url: "type.googleapis.com/x.RequestId".into(),
                            value: vec![],
                        }),
                    }),
                    ..istiod.clone()
                },
                "request_id_extension.typed_config",
            ),
        ];
        for (h, path) in cases {
            assert_eq!(compile_hcm(&h).err().map(|e| e.path).as_deref(), Some(path));
        }
    }

    /// The HTTP/2 server takes its settings from `http2_protocol_options`, within Envoy's
    /// bounds, and refuses by name what it does not implement.
    #[test]
    fn http2_protocol_options_set_the_servers_settings() {
        use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, KeepaliveSettings};
        use envoy_types::pb::google::protobuf::UInt32Value;
        let router = || filter("envoy.filters.http.router", ROUTER_TYPE, false);
        let with = |o: Http2ProtocolOptions| HttpConnectionManager {
            http2_protocol_options: Some(o),
            ..hcm(vec![router()])
        };
        let n = |value| Some(UInt32Value { value });
        assert_eq!(
            compile_hcm(&hcm(vec![router()])).unwrap().http2,
            crate::http::Http2Settings::default()
        );
        let c = compile_hcm(&with(Http2ProtocolOptions {
            max_concurrent_streams: n(100),
            initial_stream_window_size: n(65_535),
            initial_connection_window_size: n(4 << 20),
            hpack_table_size: n(0),
            // Flood bounds: the server's own apply.
            max_outbound_frames: n(10_000),
            ..Http2ProtocolOptions::default()
        }))
        .unwrap();
        assert_eq!(
            c.http2,
            crate::http::Http2Settings {
                max_concurrent_streams: 100,
                initial_stream_window_size: 65_535,
                initial_connection_window_size: 4 << 20,
                hpack_table_size: 0,
            }
        );
        for (o, path) in [
            (
                Http2ProtocolOptions {
                    initial_stream_window_size: n(1024),
                    ..Http2ProtocolOptions::default()
                },
                "http2_protocol_options.initial_stream_window_size",
            ),
            (
                Http2ProtocolOptions {
                    max_concurrent_streams: n(0),
                    ..Http2ProtocolOptions::default()
                },
                "http2_protocol_options.max_concurrent_streams",
            ),
            (
                Http2ProtocolOptions {
                    connection_keepalive: Some(KeepaliveSettings::default()),
                    ..Http2ProtocolOptions::default()
                },
                "http2_protocol_options.connection_keepalive",
            ),
            (
                Http2ProtocolOptions {
                    allow_metadata: true,
                    ..Http2ProtocolOptions::default()
                },
                "http2_protocol_options.allow_metadata",
            ),
        ] {
            assert_eq!(
                compile_hcm(&with(o)).err().map(|e| e.path).as_deref(),
                Some(path)
            );
        }
    }
}
