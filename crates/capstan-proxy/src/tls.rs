//! Downstream TLS termination (Envoy's `envoy.transport_sockets.tls` with a
//! `DownstreamTlsContext` on a filter chain): the certificate comes with the chain the TLS
//! inspector chose by SNI, as gateways serve several hosts on one port. Certificates are read
//! from files (Istio's file-mounted gateway certificates) or inline data; SDS arrives with the
//! security work.

use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, DownstreamTlsContext,
};
use prost::Message;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const DOWNSTREAM_TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(source: Option<&DataSource>, field: &str) -> Result<Vec<u8>, CompileError> {
    match source.and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(path)) => std::fs::read(path)
            .map_err(|e| CompileError::new(format!("{field}.filename"), format!("{path}: {e}"))),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.clone().into_bytes()),
        Some(data_source::Specifier::EnvironmentVariable(v)) => {
            std::env::var(v).map(String::into_bytes).map_err(|_| {
                CompileError::new(
                    format!("{field}.environment_variable"),
                    format!("{v} is not set"),
                )
            })
        }
        None => Err(CompileError::new(field, "is required")),
    }
}

fn certs(pem: &[u8], field: &str) -> Result<Vec<CertificateDer<'static>>, CompileError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CompileError::new(field, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(CompileError::new(field, "no certificate in the PEM data"));
    }
    Ok(certs)
}

/// Compiles a filter chain's `transport_socket`. `Ok(None)` for plaintext (`raw_buffer`).
pub fn downstream(ts: &TransportSocket) -> Result<Option<Arc<rustls::ServerConfig>>, CompileError> {
    let any = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        None => return Err(CompileError::new("typed_config", "is required")),
    };
    if any.type_url == RAW_BUFFER_TYPE {
        return Ok(None);
    }
    if ts.name != TLS_SOCKET && any.type_url != DOWNSTREAM_TLS_TYPE {
        return Err(CompileError::new(
            "name",
            format!("transport socket {} is not supported", ts.name),
        ));
    }
    if any.type_url != DOWNSTREAM_TLS_TYPE {
        return Err(CompileError::new(
            "typed_config",
            format!(
                "type {} where {DOWNSTREAM_TLS_TYPE} was expected",
                any.type_url
            ),
        ));
    }
    let ctx = DownstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| CompileError::new("typed_config", format!("cannot decode: {e}")))?;
    server_config(&ctx)
        .map(Some)
        .map_err(|e| e.within("typed_config"))
}

fn server_config(ctx: &DownstreamTlsContext) -> Result<Arc<rustls::ServerConfig>, CompileError> {
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let at = |f: &str| format!("common_tls_context.{f}");
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return workload_server_config(ctx);
    }
    let [cert] = common.tls_certificates.as_slice() else {
        return Err(CompileError::new(
            at("tls_certificates"),
            "exactly one certificate is supported",
        ));
    };
    let chain = certs(
        &read(
            cert.certificate_chain.as_ref(),
            &at("tls_certificates[0].certificate_chain"),
        )?,
        &at("tls_certificates[0].certificate_chain"),
    )?;
    let key_pem = read(
        cert.private_key.as_ref(),
        &at("tls_certificates[0].private_key"),
    )?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        CompileError::new(
            at("tls_certificates[0].private_key"),
            format!("not a PEM private key: {e}"),
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CompileError::new("", e.to_string()))?;
    let require = ctx.require_client_certificate.is_some_and(|b| b.value);
    let builder = match &common.validation_context_type {
        None if require => {
            return Err(CompileError::new(
                at("validation_context"),
                "require_client_certificate needs a trusted CA",
            ))
        }
        None => builder.with_no_client_auth(),
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => {
            let mut roots = rustls::RootCertStore::empty();
            let field = at("validation_context.trusted_ca");
            for c in certs(&read(v.trusted_ca.as_ref(), &field)?, &field)? {
                roots
                    .add(c)
                    .map_err(|e| CompileError::new(field.clone(), e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if require {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| CompileError::new(field, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        Some(_) => {
            return Err(CompileError::new(
                at("validation_context_type"),
                "only an inline validation_context is supported (SDS is not yet)",
            ))
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        CompileError::new(
            at("tls_certificates[0]"),
            format!("certificate and key: {e}"),
        )
    })?;
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

/// Istio's inbound mTLS: the workload certificate (SDS `default`) and, when a validation
/// context names `ROOTCA`, clients verified against the workload roots (and the SANs of the
/// combined context).
fn workload_server_config(
    ctx: &DownstreamTlsContext,
) -> Result<Arc<rustls::ServerConfig>, CompileError> {
    use crate::identity::{Identity, DEFAULT_SECRET, ROOT_SECRET};
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let at = |f: &str| format!("common_tls_context.{f}");
    match common.tls_certificate_sds_secret_configs.as_slice() {
        [s] if s.name == DEFAULT_SECRET => {}
        [s] => {
            return Err(CompileError::new(
                at("tls_certificate_sds_secret_configs[0].name"),
                format!(
                    "SDS secret {:?} is not served by this proxy (only {DEFAULT_SECRET:?}: the workload identity; gateway credentialName secrets are not yet)",
                    s.name
                ),
            ))
        }
        _ => {
            return Err(CompileError::new(
                at("tls_certificate_sds_secret_configs"),
                "exactly one certificate is supported",
            ))
        }
    }
    if !common.tls_certificates.is_empty() {
        return Err(CompileError::new(
            at("tls_certificates"),
            "cannot be combined with an SDS certificate",
        ));
    }
    let root = |name: &str, field: String| {
        if name == ROOT_SECRET {
            Ok(())
        } else {
            Err(CompileError::new(
                field,
                format!("SDS secret {name:?} is not served by this proxy (only {ROOT_SECRET:?})"),
            ))
        }
    };
    let mut sans = Vec::new();
    let verify = match &common.validation_context_type {
        None => false,
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            root(&s.name, at("validation_context_sds_secret_config.name"))?;
            true
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            let field = at("combined_validation_context.validation_context_sds_secret_config");
            let s = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| CompileError::new(field.clone(), "is required"))?;
            root(&s.name, format!("{field}.name"))?;
            #[allow(deprecated)]
            if let Some(v) = &c.default_validation_context {
                use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
                for (i, m) in v.match_subject_alt_names.iter().enumerate() {
                    match &m.match_pattern {
                        Some(MatchPattern::Exact(s)) => sans.push(s.clone()),
                        _ => {
                            return Err(CompileError::new(
                                at(&format!("combined_validation_context.default_validation_context.match_subject_alt_names[{i}]")),
                                "only exact matches are supported",
                            ))
                        }
                    }
                }
            }
            true
        }
        Some(_) => {
            return Err(CompileError::new(
                at("validation_context"),
                "an inline validation context cannot be combined with the workload certificate",
            ))
        }
    };
    let require = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require && !verify {
        return Err(CompileError::new(
            at("validation_context"),
            "require_client_certificate needs a trusted CA",
        ));
    }
    let alpn = common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Identity::workload().server_config(alpn, require, sans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, TlsCertificate,
    };

    fn socket(ctx: &DownstreamTlsContext) -> TransportSocket {
        TransportSocket {
            name: TLS_SOCKET.into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(
                envoy_types::pb::google::protobuf::Any {
                    type_url: DOWNSTREAM_TLS_TYPE.into(),
                    value: ctx.encode_to_vec(),
                },
            )),
        }
    }

    fn file(path: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(data_source::Specifier::Filename(path.into())),
            ..Default::default()
        })
    }

    #[test]
    fn errors_name_the_field() {
        let missing = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: file("/nonexistent/cert.pem"),
                    private_key: file("/nonexistent/key.pem"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = downstream(&socket(&missing)).unwrap_err().to_string();
        assert!(
            err.starts_with("typed_config.common_tls_context.tls_certificates[0].certificate_chain.filename: /nonexistent/cert.pem"),
            "{err}"
        );
        let none = DownstreamTlsContext::default();
        let err = downstream(&socket(&none)).unwrap_err().to_string();
        assert!(err.contains("exactly one certificate"), "{err}");
        let garbage = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString("nope".into())),
                        ..Default::default()
                    }),
                    private_key: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString("nope".into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = downstream(&socket(&garbage)).unwrap_err().to_string();
        assert!(err.contains("no certificate in the PEM data"), "{err}");
    }
}
