//! Upstream transport sockets: plaintext or TLS (`UpstreamTlsContext`), per cluster and per
//! endpoint through `transport_socket_matches` (Istio's auto mTLS: endpoints labelled
//! `tlsMode: istio` in `envoy.transport_socket_match` metadata get ISTIO_MUTUAL, others
//! plaintext). The workload certificate and roots are the SDS secrets `default` and `ROOTCA`,
//! served by the proxy's own [`crate::identity`]; file certificates are read at compile time.

use super::compile::err;
use crate::identity::san::SanMatchers;
use crate::identity::verify::SanChecked;
use crate::identity::{Identity, DEFAULT_SECRET, ROOT_SECRET};
use crate::CompileError;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, UpstreamTlsContext,
};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

const TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// Where a TLS client certificate or its trust comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The workload identity (SDS `default` / `ROOTCA`).
    Workload,
    /// PEM data (files read when compiled, or inline).
    Pem(Vec<u8>),
}

/// A compiled `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// SNI sent (empty: none).
    pub sni: String,
    /// ALPN offered.
    pub alpn: Vec<String>,
    /// Client certificate chain and key (`None`: no client certificate).
    pub client_cert: Option<(Source, Vec<u8>)>,
    /// Trusted roots (`None`: the server is not verified, as Envoy without a validation
    /// context).
    pub roots: Option<Source>,
    /// The server's accepted subject alternative names (empty: any). With PEM roots they are
    /// checked on top of rustls's WebPKI verification, which also checks the SNI.
    pub sans: SanMatchers,
}

/// One `transport_socket_matches` entry: criteria and the socket (None: plaintext).
pub type SocketMatch = (Vec<(String, String)>, Option<TlsSpec>);

/// The cluster's transport: a default socket and the `transport_socket_matches`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportConfig {
    /// `transport_socket` (None: plaintext).
    pub default: Option<TlsSpec>,
    /// `transport_socket_matches`: criteria (all must equal the endpoint's
    /// `envoy.transport_socket_match` metadata) and the socket.
    pub matches: Vec<SocketMatch>,
}

impl TransportConfig {
    /// The socket for an endpoint with `metadata`: index 0 is the default, `i + 1` the
    /// `i`-th match (Envoy: the first match whose criteria are a subset of the metadata).
    pub fn choose(&self, metadata: &[(String, String)]) -> usize {
        self.matches
            .iter()
            .position(|(criteria, _)| {
                criteria
                    .iter()
                    .all(|(k, v)| metadata.iter().any(|(mk, mv)| mk == k && mv == v))
            })
            .map_or(0, |i| i + 1)
    }

    /// The socket at an index from [`TransportConfig::choose`].
    pub fn spec(&self, index: usize) -> Option<&TlsSpec> {
        match index {
            0 => self.default.as_ref(),
            i => self.matches.get(i - 1).and_then(|(_, s)| s.as_ref()),
        }
    }

    /// Whether any endpoint may use TLS.
    pub fn any_tls(&self) -> bool {
        self.default.is_some() || self.matches.iter().any(|(_, s)| s.is_some())
    }
}

/// Compiles `transport_socket` and `transport_socket_matches`.
pub fn compile(c: &Cluster) -> Result<TransportConfig, CompileError> {
    let default = match &c.transport_socket {
        Some(t) => socket(t).map_err(|e| e.within("transport_socket"))?,
        None => None,
    };
    let mut matches = Vec::with_capacity(c.transport_socket_matches.len());
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let at = format!("transport_socket_matches[{i}]");
        let mut criteria = Vec::new();
        if let Some(s) = &m.r#match {
            for (k, v) in &s.fields {
                match &v.kind {
                    Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                        criteria.push((k.clone(), s.clone()))
                    }
                    _ => {
                        return Err(err(
                            &format!("{at}.match.{k}"),
                            "only string criteria are supported",
                        ))
                    }
                }
            }
        }
        let spec = match &m.transport_socket {
            Some(t) => socket(t).map_err(|e| e.within(&format!("{at}.transport_socket")))?,
            None => None,
        };
        matches.push((criteria, spec));
    }
    Ok(TransportConfig { default, matches })
}

fn socket(t: &TransportSocket) -> Result<Option<TlsSpec>, CompileError> {
    let any = match &t.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        None if t.name == "envoy.transport_sockets.raw_buffer" || t.name.is_empty() => {
            return Ok(None)
        }
        None => return Err(err("typed_config", "is required")),
    };
    match any.type_url.as_str() {
        RAW_TYPE => Ok(None),
        TLS_TYPE => {
            let ctx = UpstreamTlsContext::decode(any.value.as_slice())
                .map_err(|e| err("typed_config", format!("cannot decode: {e}")))?;
            tls(&ctx).map(Some).map_err(|e| e.within("typed_config"))
        }
        other => Err(err(
            "typed_config",
            format!("transport socket {} ({other}) is not supported", t.name),
        )),
    }
}

fn pem(
    d: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>,
    field: &str,
) -> Result<Vec<u8>, CompileError> {
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(p)) => {
            std::fs::read(p).map_err(|e| err(&format!("{field}.filename"), format!("{p}: {e}")))
        }
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.clone().into_bytes()),
        _ => Err(err(field, "a filename or inline data is required")),
    }
}

fn sds_name(name: &str, want: &str, field: &str) -> Result<(), CompileError> {
    if name == want {
        Ok(())
    } else {
        Err(err(
            field,
            format!("SDS secret {name:?} is not served by this proxy (only {want:?}: the workload identity)"),
        ))
    }
}

/// The SAN matchers of a validation context; SPKI and hash pinning are refused, not skipped.
fn sans(v: &CertificateValidationContext, field: &str) -> Result<SanMatchers, CompileError> {
    for (name, set) in [
        (
            "verify_certificate_spki",
            !v.verify_certificate_spki.is_empty(),
        ),
        (
            "verify_certificate_hash",
            !v.verify_certificate_hash.is_empty(),
        ),
    ] {
        if set {
            return Err(err(&format!("{field}.{name}"), "is not supported"));
        }
    }
    SanMatchers::compile(v).map_err(|e| e.within(field))
}

fn tls(ctx: &UpstreamTlsContext) -> Result<TlsSpec, CompileError> {
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let at = |f: &str| format!("common_tls_context.{f}");
    let client_cert = match (
        common.tls_certificates.as_slice(),
        common.tls_certificate_sds_secret_configs.as_slice(),
    ) {
        ([], []) => None,
        ([c], []) => Some((
            Source::Pem(pem(
                c.certificate_chain.as_ref(),
                &at("tls_certificates[0].certificate_chain"),
            )?),
            pem(
                c.private_key.as_ref(),
                &at("tls_certificates[0].private_key"),
            )?,
        )),
        ([], [s]) => {
            sds_name(
                &s.name,
                DEFAULT_SECRET,
                &at("tls_certificate_sds_secret_configs[0].name"),
            )?;
            Some((Source::Workload, Vec::new()))
        }
        _ => {
            return Err(err(
                &at("tls_certificates"),
                "exactly one client certificate is supported",
            ))
        }
    };
    use common_tls_context::ValidationContextType as V;
    let (roots, sans) = match &common.validation_context_type {
        None => (None, SanMatchers::default()),
        Some(V::ValidationContext(v)) => {
            let field = at("validation_context");
            let roots = match &v.trusted_ca {
                Some(_) => Some(Source::Pem(pem(
                    v.trusted_ca.as_ref(),
                    &format!("{field}.trusted_ca"),
                )?)),
                None => None,
            };
            let sans = sans(v, &field)?;
            if roots.is_none() && !sans.is_empty() {
                // As Envoy: SANs prove nothing about a certificate no root vouches for.
                return Err(err(
                    &field,
                    "SAN matchers need trusted_ca: checking SANs of an unverified certificate is insecure",
                ));
            }
            (roots, sans)
        }
        Some(V::ValidationContextSdsSecretConfig(s)) => {
            sds_name(
                &s.name,
                ROOT_SECRET,
                &at("validation_context_sds_secret_config.name"),
            )?;
            (Some(Source::Workload), SanMatchers::default())
        }
        Some(V::CombinedValidationContext(c)) => {
            let field = at("combined_validation_context");
            let s = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    err(
                        &format!("{field}.validation_context_sds_secret_config"),
                        "is required",
                    )
                })?;
            sds_name(
                &s.name,
                ROOT_SECRET,
                &format!("{field}.validation_context_sds_secret_config.name"),
            )?;
            let sans = match &c.default_validation_context {
                Some(v) => sans(v, &format!("{field}.default_validation_context"))?,
                None => SanMatchers::default(),
            };
            (Some(Source::Workload), sans)
        }
        Some(_) => {
            return Err(err(
                &at("validation_context_type"),
                "this validation context is not supported",
            ))
        }
    };
    let mixed = (matches!(client_cert, Some((Source::Workload, _)))
        && matches!(roots, Some(Source::Pem(_))))
        || (matches!(roots, Some(Source::Workload))
            && matches!(client_cert, Some((Source::Pem(_), _))));
    if mixed {
        return Err(err(
            "common_tls_context",
            "the workload certificate and workload roots must be used together",
        ));
    }
    let spec = TlsSpec {
        sni: ctx.sni.clone(),
        alpn: common.alpn_protocols.clone(),
        client_cert,
        roots,
        sans,
    };
    // Files and SNI are checked now, so a bad one is a NACK rather than failed connections.
    connector(&spec).map_err(|e| err("common_tls_context", e))?;
    Ok(spec)
}

/// A TLS client configuration and the server name to send.
#[derive(Debug, Clone)]
pub struct Connector {
    /// rustls configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI (an IP-address name sends none).
    pub name: rustls_pki_types::ServerName<'static>,
}

/// Builds the client side of a [`TlsSpec`].
pub fn connector(spec: &TlsSpec) -> Result<Connector, String> {
    // Never Istio's in-band metadata exchange, which this proxy does not speak.
    let alpn = crate::istio_ext::without_peer_exchange(&spec.alpn);
    let name = if spec.sni.is_empty() {
        rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
    } else {
        rustls_pki_types::ServerName::try_from(spec.sni.clone())
            .map_err(|e| format!("sni {:?}: {e}", spec.sni))?
    };
    let config = match (&spec.client_cert, &spec.roots) {
        (Some((Source::Workload, _)), _) | (None, Some(Source::Workload)) => {
            Identity::workload().client_config(alpn, spec.sans.clone())
        }
        (client, roots) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let builder = match roots {
                Some(Source::Pem(p)) => {
                    let mut store = rustls::RootCertStore::empty();
                    for c in rustls_pki_types::CertificateDer::pem_slice_iter(p) {
                        store
                            .add(c.map_err(|e| format!("trusted_ca: {e}"))?)
                            .map_err(|e| format!("trusted_ca: {e}"))?;
                    }
                    if spec.sans.is_empty() {
                        builder.with_root_certificates(store)
                    } else {
                        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(store),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| format!("trusted_ca: {e}"))?;
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(SanChecked {
                                inner: webpki,
                                sans: spec.sans.clone(),
                            }))
                    }
                }
                _ => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
            };
            let mut c = match client {
                Some((Source::Pem(chain), key)) => {
                    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(chain)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("client certificate: {e}"))?;
                    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key)
                        .map_err(|e| format!("client key: {e}"))?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| format!("client certificate: {e}"))?
                }
                _ => builder.with_no_client_auth(),
            };
            c.alpn_protocols = alpn;
            Arc::new(c)
        }
    };
    Ok(Connector { config, name })
}

/// Envoy without a validation context: the server's certificate is not verified.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
