//! Downstream TLS termination (Envoy's `envoy.transport_sockets.tls` with a
//! `DownstreamTlsContext` on a filter chain): the certificate comes with the chain the TLS
//! inspector chose by SNI, as gateways serve several hosts on one port. Certificates come from
//! files (Istio's file-mounted gateway certificates) or inline data, from the workload identity
//! (SDS `default` and `ROOTCA`, Istio's inbound mTLS), or from SDS secrets the control plane
//! serves over ADS (Istio's gateway `credentialName`: `kubernetes://NAME` and
//! `kubernetes://NAME-cacert`, read at every handshake from [`crate::sds`]).

use crate::identity::san::SanMatchers;
use crate::identity::verify::SanChecked;
use crate::sds::handshake::{ClientAuth, Named};
use crate::sds::Secrets;
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{
    config_source, data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
    SdsSecretConfig,
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

/// The crypto provider of every TLS configuration built here.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bytes of a `DataSource`; errors name `field` (and a file's path), never the content.
pub(crate) fn read(source: Option<&DataSource>, field: &str) -> Result<Vec<u8>, CompileError> {
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

/// The certificates of PEM data (at least one).
pub(crate) fn certs(pem: &[u8], field: &str) -> Result<Vec<CertificateDer<'static>>, CompileError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CompileError::new(field, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(CompileError::new(field, "no certificate in the PEM data"));
    }
    Ok(certs)
}

/// A compiled downstream TLS context.
#[derive(Debug)]
pub struct DownstreamTls {
    /// The server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The SDS secrets it reads over ADS (never `default` or `ROOTCA`: the workload identity
    /// is not fetched over xDS).
    pub sds_names: Vec<String>,
}

impl DownstreamTls {
    fn local(config: Arc<rustls::ServerConfig>) -> DownstreamTls {
        DownstreamTls {
            config,
            sds_names: Vec::new(),
        }
    }
}

/// Compiles a filter chain's `transport_socket`. `Ok(None)` for plaintext (`raw_buffer`).
pub fn downstream(ts: &TransportSocket) -> Result<Option<DownstreamTls>, CompileError> {
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

fn server_config(ctx: &DownstreamTlsContext) -> Result<DownstreamTls, CompileError> {
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let at = |f: &str| format!("common_tls_context.{f}");
    let sds = &common.tls_certificate_sds_secret_configs;
    if sds
        .iter()
        .any(|s| s.name == crate::identity::DEFAULT_SECRET)
    {
        return workload_server_config(ctx).map(DownstreamTls::local);
    }
    if !sds.is_empty() {
        return ads_server_config(ctx, &common).map_err(|e| e.within("common_tls_context"));
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
            let sans = SanMatchers::compile(v).map_err(|e| e.within(&at("validation_context")))?;
            if sans.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(SanChecked {
                    inner: verifier,
                    sans,
                }))
            }
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
    config.alpn_protocols = alpn(&common);
    Ok(DownstreamTls::local(Arc::new(config)))
}

/// The ALPN protocols the server may select; never Istio's in-band metadata exchange, which
/// it does not speak (see [`crate::istio_ext`]).
fn alpn(common: &CommonTlsContext) -> Vec<Vec<u8>> {
    crate::istio_ext::without_peer_exchange(&common.alpn_protocols)
}

/// Istio's gateway `credentialName`(s): certificates, and for MUTUAL/OPTIONAL_MUTUAL a CA,
/// that istiod serves as SDS secrets over ADS. The configuration reads them at every
/// handshake, so they may arrive (or change) after the listener is compiled.
fn ads_server_config(
    ctx: &DownstreamTlsContext,
    common: &CommonTlsContext,
) -> Result<DownstreamTls, CompileError> {
    if !common.tls_certificates.is_empty() {
        return Err(CompileError::new(
            "tls_certificates",
            "cannot be combined with SDS certificates",
        ));
    }
    let mut names = Vec::new();
    for (i, s) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
        ads_secret(s).map_err(|e| e.within(&format!("tls_certificate_sds_secret_configs[{i}]")))?;
        names.push(s.name.clone());
    }
    let secrets = Secrets::global();
    let named = |n: &str| -> Named { (n.to_string(), secrets.slot(n)) };
    let certs = names.iter().map(|n| named(n)).collect();
    let mandatory = ctx.require_client_certificate.is_some_and(|b| b.value);
    let clients = match ads_validation(common)? {
        Some((ca, sans)) => {
            names.push(ca.clone());
            Some(ClientAuth {
                ca: named(&ca),
                sans,
                mandatory,
            })
        }
        None if mandatory => {
            return Err(CompileError::new(
                "validation_context",
                "require_client_certificate needs a trusted CA",
            ))
        }
        None => None,
    };
    let config = crate::sds::handshake::server_config(certs, clients, alpn(common));
    names.sort();
    names.dedup();
    Ok(DownstreamTls {
        config,
        sds_names: names,
    })
}

/// An SDS reference this proxy can serve from the ADS stream: named, with `sds_config: { ads:
/// {} }` (what Istio sets for `kubernetes://` secrets). The workload's own secrets come from
/// pilot-agent's SDS server in Envoy (`sds-grpc`), never with these.
fn ads_secret(s: &SdsSecretConfig) -> Result<(), CompileError> {
    use crate::identity::{DEFAULT_SECRET, ROOT_SECRET};
    if s.name.is_empty() {
        return Err(CompileError::new("name", "is required"));
    }
    if s.name == DEFAULT_SECRET || s.name == ROOT_SECRET {
        return Err(CompileError::new(
            "name",
            format!(
                "the workload secret {:?} cannot be combined with SDS secrets served over ADS",
                s.name
            ),
        ));
    }
    match s
        .sds_config
        .as_ref()
        .and_then(|c| c.config_source_specifier.as_ref())
    {
        Some(config_source::ConfigSourceSpecifier::Ads(_)) => Ok(()),
        Some(_) => Err(CompileError::new(
            "sds_config",
            format!("secret {:?}: only ADS (`ads: {{}}`) is supported", s.name),
        )),
        None => Err(CompileError::new(
            "sds_config",
            format!(
                "secret {:?}: is required (this proxy has no static secrets)",
                s.name
            ),
        )),
    }
}

/// The CA secret and SAN matchers of an SDS validation context (directly, or combined with a
/// default context as Istio writes it when the Gateway lists `subjectAltNames`).
fn ads_validation(
    common: &CommonTlsContext,
) -> Result<Option<(String, SanMatchers)>, CompileError> {
    use common_tls_context::ValidationContextType as V;
    match &common.validation_context_type {
        None => Ok(None),
        Some(V::ValidationContextSdsSecretConfig(s)) => {
            ads_secret(s).map_err(|e| e.within("validation_context_sds_secret_config"))?;
            Ok(Some((s.name.clone(), SanMatchers::default())))
        }
        Some(V::CombinedValidationContext(c)) => {
            let at = |f: &str| format!("combined_validation_context.{f}");
            let s = c.validation_context_sds_secret_config.as_ref().ok_or_else(|| {
                CompileError::new(at("validation_context_sds_secret_config"), "is required")
            })?;
            ads_secret(s).map_err(|e| e.within(&at("validation_context_sds_secret_config")))?;
            let sans = c
                .default_validation_context
                .as_ref()
                .map(default_context)
                .transpose()
                .map_err(|e| e.within(&at("default_validation_context")))?
                .unwrap_or_default();
            Ok(Some((s.name.clone(), sans)))
        }
        Some(_) => Err(CompileError::new(
            "validation_context_type",
            "only an SDS validation context (optionally combined) can be combined with SDS certificates",
        )),
    }
}

/// The SAN matchers of a default validation context; the checks this proxy does not implement
/// are refused rather than skipped.
fn default_context(v: &CertificateValidationContext) -> Result<SanMatchers, CompileError> {
    for (field, set) in [
        (
            "verify_certificate_spki",
            !v.verify_certificate_spki.is_empty(),
        ),
        (
            "verify_certificate_hash",
            !v.verify_certificate_hash.is_empty(),
        ),
        ("trusted_ca", v.trusted_ca.is_some()),
        ("crl", v.crl.is_some()),
    ] {
        if set {
            return Err(CompileError::new(field, "is not supported"));
        }
    }
    SanMatchers::compile(v)
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
    let mut sans = SanMatchers::default();
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
            if let Some(v) = &c.default_validation_context {
                sans = default_context(v).map_err(|e| {
                    e.within(&at(
                        "combined_validation_context.default_validation_context",
                    ))
                })?;
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
    Ok(Identity::workload().server_config(alpn(&common), require, sans))
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

    /// istiod's inbound mTLS chain: the workload certificate, clients checked against `ROOTCA`
    /// and the mesh's trust domain.
    #[test]
    fn istiod_inbound_mtls_compiles() {
        use crate::sds::tests::sds;
        use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
        use envoy_types::pb::google::protobuf::BoolValue;
        #[allow(deprecated)]
        let trust_domain = CertificateValidationContext {
            match_subject_alt_names: vec![StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix(
                    "spiffe://cluster.local/".into(),
                )),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds(crate::identity::DEFAULT_SECRET)],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(trust_domain),
                            validation_context_sds_secret_config: Some(sds(
                                crate::identity::ROOT_SECRET,
                            )),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            require_client_certificate: Some(BoolValue { value: true }),
            ..Default::default()
        };
        let tls = downstream(&socket(&ctx)).expect("compiles").expect("TLS");
        assert!(tls.sds_names.is_empty());
    }

    /// A listener with its own certificate and an inline validation context (Capstan's gateway
    /// MUTUAL with file certificates): clients are checked against the CA and the SANs.
    #[tokio::test]
    async fn inline_validation_checks_client_sans() {
        use crate::identity::tests::TestCa;
        use crate::sds::tests::{client, handshake, inline, server_cert, CLIENT_A, CLIENT_B};
        use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
        let (gateway, clients) = (TestCa::new("gateway"), TestCa::new("clients"));
        let cert = server_cert(&gateway);
        #[allow(deprecated)]
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: inline(&cert.0),
                    private_key: inline(&cert.1),
                    ..Default::default()
                }],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: inline(&clients.root_pem),
                            match_subject_alt_names: vec![StringMatcher {
                                match_pattern: Some(string_matcher::MatchPattern::Suffix(
                                    "/sa/a".into(),
                                )),
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tls = downstream(&socket(&ctx)).expect("compiles").expect("TLS");
        let a = clients.issue(CLIENT_A);
        handshake(tls.config.clone(), client(&gateway.root_pem, Some(&a)))
            .await
            .expect("client a");
        let err = handshake(
            tls.config.clone(),
            client(&gateway.root_pem, Some(&clients.issue(CLIENT_B))),
        )
        .await
        .expect_err("client b matches no SAN");
        assert!(err.contains("match none of"), "{err}");
    }

    #[test]
    fn sds_shapes_this_proxy_cannot_serve_are_refused() {
        use crate::sds::tests::{gateway_context, sds};
        use envoy_types::pb::envoy::config::core::v3::{ApiConfigSource, ConfigSource};
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            subject_alt_name_matcher, SubjectAltNameMatcher,
        };
        use envoy_types::pb::envoy::r#type::matcher::v3::{
            string_matcher, RegexMatcher, StringMatcher,
        };
        use envoy_types::pb::google::protobuf::BoolValue;
        type V = common_tls_context::ValidationContextType;
        let gateway = |f: fn(&mut CommonTlsContext)| {
            let mut ctx = gateway_context(&["kubernetes://a"], None, false);
            if let Some(c) = &mut ctx.common_tls_context {
                f(c);
            }
            ctx
        };
        let combined = |v: CertificateValidationContext| {
            V::CombinedValidationContext(common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(v),
                validation_context_sds_secret_config: Some(sds("kubernetes://a-cacert")),
                ..Default::default()
            })
        };
        let at = "typed_config.common_tls_context";
        let cases: Vec<(DownstreamTlsContext, String)> = vec![
            (
                gateway(|c| c.tls_certificate_sds_secret_configs[0].sds_config = None),
                format!("{at}.tls_certificate_sds_secret_configs[0].sds_config: secret \"kubernetes://a\": is required"),
            ),
            (
                // pilot-agent's SDS server (`sds-grpc`), which Istio names for file certificates.
                gateway(|c| {
                    c.tls_certificate_sds_secret_configs[0].sds_config = Some(ConfigSource {
                        config_source_specifier: Some(
                            config_source::ConfigSourceSpecifier::ApiConfigSource(
                                ApiConfigSource::default(),
                            ),
                        ),
                        ..Default::default()
                    })
                }),
                format!("{at}.tls_certificate_sds_secret_configs[0].sds_config: secret \"kubernetes://a\": only ADS"),
            ),
            (
                gateway(|c| c.tls_certificates = vec![Default::default()]),
                format!("{at}.tls_certificates: cannot be combined with SDS certificates"),
            ),
            (
                gateway(|c| {
                    c.validation_context_type =
                        Some(V::ValidationContextSdsSecretConfig(sds("ROOTCA")))
                }),
                format!("{at}.validation_context_sds_secret_config.name: the workload secret \"ROOTCA\""),
            ),
            (
                gateway(|c| c.validation_context_type = Some(V::ValidationContext(Default::default()))),
                format!("{at}.validation_context_type: only an SDS validation context"),
            ),
            (
                DownstreamTlsContext {
                    require_client_certificate: Some(BoolValue { value: true }),
                    ..gateway(|_| {})
                },
                format!("{at}.validation_context: require_client_certificate needs a trusted CA"),
            ),
            #[allow(deprecated)]
            (
                DownstreamTlsContext {
                    common_tls_context: Some(CommonTlsContext {
                        validation_context_type: Some(combined(CertificateValidationContext {
                            match_subject_alt_names: vec![
                                StringMatcher {
                                    match_pattern: Some(string_matcher::MatchPattern::Prefix(
                                        "spiffe://".into(),
                                    )),
                                    ..Default::default()
                                },
                                StringMatcher {
                                    match_pattern: Some(string_matcher::MatchPattern::SafeRegex(
                                        RegexMatcher {
                                            regex: "(unclosed".into(),
                                            ..Default::default()
                                        },
                                    )),
                                    ..Default::default()
                                },
                            ],
                            ..Default::default()
                        })),
                        ..gateway(|_| {}).common_tls_context.unwrap_or_default()
                    }),
                    ..Default::default()
                },
                format!("{at}.combined_validation_context.default_validation_context.match_subject_alt_names[1].safe_regex.regex: invalid regex"),
            ),
            (
                DownstreamTlsContext {
                    common_tls_context: Some(CommonTlsContext {
                        validation_context_type: Some(combined(CertificateValidationContext {
                            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                san_type: subject_alt_name_matcher::SanType::OtherName as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(string_matcher::MatchPattern::Exact(
                                        "user@example.com".into(),
                                    )),
                                    ..Default::default()
                                }),
                                oid: "1.3.6.1.4.1.311.20.2.3".into(),
                            }],
                            ..Default::default()
                        })),
                        ..gateway(|_| {}).common_tls_context.unwrap_or_default()
                    }),
                    ..Default::default()
                },
                format!("{at}.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type: OTHER_NAME is not supported"),
            ),
            (
                DownstreamTlsContext {
                    common_tls_context: Some(CommonTlsContext {
                        validation_context_type: Some(combined(CertificateValidationContext {
                            verify_certificate_spki: vec!["abc".into()],
                            ..Default::default()
                        })),
                        ..gateway(|_| {}).common_tls_context.unwrap_or_default()
                    }),
                    ..Default::default()
                },
                format!("{at}.combined_validation_context.default_validation_context.verify_certificate_spki: is not supported"),
            ),
        ];
        for (ctx, want) in cases {
            let err = downstream(&socket(&ctx)).expect_err(&want).to_string();
            assert!(err.starts_with(&want), "{err}\n(expected {want})");
        }
    }
}
