use super::*;
use crate::identity::tests::TestCa;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::CombinedCertificateValidationContext;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, SdsSecretConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::Any;
use rcgen::{KeyPair, SanType};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "api.example.com";
const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/api";

fn cluster(ctx: &UpstreamTlsContext) -> Cluster {
    Cluster {
        name: "outbound|443||api.example.com".into(),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
                type_url: TLS_TYPE.into(),
                value: ctx.encode_to_vec(),
            })),
        }),
        ..Default::default()
    }
}

fn matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

#[allow(deprecated)] // match_subject_alt_names: what istiod sends
fn with_sans(sans: Vec<StringMatcher>) -> CertificateValidationContext {
    CertificateValidationContext {
        match_subject_alt_names: sans,
        ..Default::default()
    }
}

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.into())),
        ..Default::default()
    })
}

fn context(v: common_tls_context::ValidationContextType) -> UpstreamTlsContext {
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(v),
            ..Default::default()
        }),
        sni: HOST.into(),
        ..Default::default()
    }
}

/// istiod's ISTIO_MUTUAL: `ROOTCA` combined with the service's identities.
fn istio_mutual(v: CertificateValidationContext) -> UpstreamTlsContext {
    let sds = |name: &str| SdsSecretConfig {
        name: name.into(),
        ..Default::default()
    };
    let mut ctx = context(
        common_tls_context::ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(v),
                validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                ..Default::default()
            },
        ),
    );
    if let Some(c) = &mut ctx.common_tls_context {
        c.tls_certificate_sds_secret_configs = vec![sds(DEFAULT_SECRET)];
    }
    ctx
}

#[test]
fn validation_contexts_compile_to_san_matchers_or_errors_by_path() {
    let at = "transport_socket.typed_config.common_tls_context";
    let ok = compile(&cluster(&istio_mutual(with_sans(vec![matcher(
        MatchPattern::Exact(SPIFFE.into()),
    )]))))
    .expect("istiod's ISTIO_MUTUAL compiles");
    assert_eq!(ok.default.expect("TLS").sans, SanMatchers::exact([SPIFFE]));
    let cases: Vec<(UpstreamTlsContext, String)> = vec![
        (
            istio_mutual(with_sans(vec![
                matcher(MatchPattern::Exact(SPIFFE.into())),
                matcher(MatchPattern::SafeRegex(
                    envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                        regex: "(unclosed".into(),
                        ..Default::default()
                    },
                )),
            ])),
            format!("{at}.combined_validation_context.default_validation_context.match_subject_alt_names[1].safe_regex.regex: invalid regex"),
        ),
        (
            istio_mutual(CertificateValidationContext {
                verify_certificate_spki: vec!["pin".into()],
                ..Default::default()
            }),
            format!("{at}.combined_validation_context.default_validation_context.verify_certificate_spki: is not supported"),
        ),
        (
            context(common_tls_context::ValidationContextType::ValidationContext(
                with_sans(vec![matcher(MatchPattern::Prefix("spiffe://".into()))]),
            )),
            format!("{at}.validation_context: SAN matchers need trusted_ca"),
        ),
    ];
    for (ctx, want) in cases {
        let err = compile(&cluster(&ctx)).expect_err(&want).to_string();
        assert!(err.starts_with(&want), "{err}\n(expected {want})");
    }
}

/// Connects with `config` to a server presenting `cert`; the client's error if any.
async fn connect(config: Arc<rustls::ClientConfig>, cert: &(String, String)) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.0.as_bytes())
                .collect::<Result<_, _>>()
                .expect("PEM"),
            PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("PEM key"),
        )
        .expect("a server certificate");
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = async {
        let mut s = tokio_rustls::TlsAcceptor::from(Arc::new(server))
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"ok").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())
    };
    let cli = async {
        let name = rustls_pki_types::ServerName::try_from(HOST).expect("a server name");
        let mut c = tokio_rustls::TlsConnector::from(config)
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let (_, c) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(srv, cli) })
        .await
        .expect("a handshake within 5 s");
    c
}

#[tokio::test]
async fn pem_roots_check_the_server_sans_too() {
    let ca = TestCa::new("upstream");
    let cert = ca.issue_for(
        vec![
            SanType::DnsName(HOST.try_into().expect("a DNS name")),
            SanType::URI(SPIFFE.try_into().expect("a URI")),
        ],
        KeyPair::generate().expect("key generation"),
    );
    let spec_with = |sans: Vec<StringMatcher>| {
        let mut v = with_sans(sans);
        v.trusted_ca = inline(&ca.root_pem);
        let ctx = context(common_tls_context::ValidationContextType::ValidationContext(v));
        compile(&cluster(&ctx))
            .expect("compiles")
            .default
            .expect("TLS")
    };
    let connector_for = |spec: &TlsSpec| connector(spec).expect("a connector").config;
    let cases = [
        (vec![], true),
        (
            vec![matcher(MatchPattern::Prefix(
                "spiffe://cluster.local/".into(),
            ))],
            true,
        ),
        (
            vec![matcher(MatchPattern::Exact("web.example.com".into()))],
            false,
        ),
        (
            vec![
                matcher(MatchPattern::Exact("web.example.com".into())),
                matcher(MatchPattern::Suffix(".example.com".into())),
            ],
            true,
        ),
    ];
    for (i, (sans, want)) in cases.into_iter().enumerate() {
        let spec = spec_with(sans);
        let got = connect(connector_for(&spec), &cert).await;
        assert_eq!(got.is_ok(), want, "case {i}: {got:?}");
        if let Err(e) = got {
            assert!(e.contains("match none of"), "case {i}: {e}");
        }
    }
}
