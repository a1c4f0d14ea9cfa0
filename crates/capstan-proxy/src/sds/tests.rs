//! SDS secrets: compilation and redaction, and real handshakes (over in-memory pipes) through
//! listeners compiled before and after their secrets arrive. Each test uses its own secret
//! names: the registry is the process's.

use super::*;
use crate::identity::tests::TestCa;
use crate::resources::{ResourceSink, Update, LISTENER, SECRET};
use crate::stats::Stats;
use crate::store::Store;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, data_source, socket_address, transport_socket, Address,
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{self, CombinedCertificateValidationContext},
    secret, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, GenericSecret,
    SdsSecretConfig, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::Message;
use rcgen::{KeyPair, SanType};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::time::Duration;

/// The host the gateway certificates are issued for.
pub(crate) const HOST: &str = "gw.example.com";
pub(crate) const CLIENT_A: &str = "spiffe://cluster.local/ns/default/sa/a";
pub(crate) const CLIENT_B: &str = "spiffe://cluster.local/ns/default/sa/b";

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

fn update<M: Message>(type_url: &str, name: &str, version: &str, m: &M) -> Update {
    Update {
        name: name.into(),
        version: version.into(),
        resource: any(type_url, m),
    }
}

pub(crate) fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    })
}

/// What istiod sends for `kubernetes://NAME`.
pub(crate) fn cert_secret(name: &str, chain: &str, key: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..Default::default()
        })),
    }
}

/// What istiod sends for `kubernetes://NAME-cacert`.
pub(crate) fn ca_secret(name: &str, pem: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem),
                ..Default::default()
            },
        )),
    }
}

/// An SDS reference as Istio writes it for `credentialName`: over ADS, API v3.
pub(crate) fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// Istio's gateway context: `certs` (`credentialName`s) and, for MUTUAL/OPTIONAL_MUTUAL, the
/// `-cacert` secret.
pub(crate) fn gateway_context(
    certs: &[&str],
    ca: Option<&str>,
    require: bool,
) -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: certs.iter().map(|n| sds(n)).collect(),
            validation_context_type: ca.map(|c| {
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(c))
            }),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: require }),
        ..Default::default()
    }
}

pub(crate) fn tls_socket(ctx: &DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            ctx,
        ))),
    }
}

/// A gateway listener: one TLS chain with `ctx`, proxying TCP to `backend`.
pub(crate) fn gateway_listener(name: &str, ctx: &DownstreamTlsContext) -> Listener {
    let proxy = TcpProxy {
        stat_prefix: "backend".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("backend".into())),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8443)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    &proxy,
                ))),
            }],
            transport_socket: Some(tls_socket(ctx)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A server certificate for [`HOST`] (chain PEM, key PEM).
pub(crate) fn server_cert(ca: &TestCa) -> (String, String) {
    ca.issue_for(
        vec![SanType::DnsName(HOST.try_into().expect("a DNS name"))],
        KeyPair::generate().expect("key generation"),
    )
}

fn apply_secrets(store: &Store, version: &str, secrets: &[Secret]) -> Result<(), String> {
    let updates = secrets
        .iter()
        .map(|s| update(SECRET, &s.name, version, s))
        .collect();
    store.apply(SECRET, updates, &[], false)
}

fn apply_listener(store: &Store, l: &Listener) {
    store
        .apply(LISTENER, vec![update(LISTENER, &l.name, "1", l)], &[], true)
        .expect("the listener compiles");
}

/// The TLS configuration of the listener's only chain.
fn server_of(store: &Store, listener: &str) -> Arc<rustls::ServerConfig> {
    store.snapshot().listeners[listener].chains[0]
        .tls
        .clone()
        .expect("a TLS chain")
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A client trusting `roots_pem`, presenting `cert` when given, offering what `provider`
/// verifies.
fn client_with(
    roots_pem: &str,
    cert: Option<&(String, String)>,
    provider: Arc<CryptoProvider>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.expect("PEM")).expect("a root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut c = match cert {
        Some((chain, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("PEM"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("PEM key"),
            )
            .expect("a client certificate"),
        None => b.with_no_client_auth(),
    };
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

pub(crate) fn client(
    roots_pem: &str,
    cert: Option<&(String, String)>,
) -> Arc<rustls::ClientConfig> {
    client_with(roots_pem, cert, crate::tls::provider())
}

/// A client that offers only ECDSA P-384 signatures (and verifies P-256 chains).
fn p384_only() -> Arc<CryptoProvider> {
    static ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
        all: &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P384_SHA384,
        ],
        mapping: &[(
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[webpki::ring::ECDSA_P384_SHA384],
        )],
    };
    Arc::new(CryptoProvider {
        signature_verification_algorithms: ALGS,
        ..rustls::crypto::ring::default_provider()
    })
}

/// What each side saw of the other after one handshake over an in-memory pipe.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The server's leaf (DER).
    server: Vec<u8>,
    /// The client's leaf, if it presented one.
    client: Option<Vec<u8>>,
}

pub(crate) async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Seen, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(HOST).expect("a server name");
    let srv = async {
        tokio_rustls::TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| format!("server: {e}"))
    };
    let cli = async {
        tokio_rustls::TlsConnector::from(client)
            .connect(name, b)
            .await
            .map_err(|e| format!("client: {e}"))
    };
    let (s, c) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(srv, cli) })
        .await
        .expect("a handshake within 5 s");
    // TLS 1.3 clients finish before the server has checked their certificate: the server's
    // verdict comes first.
    let s = s?;
    let c = c?;
    let leaf =
        |certs: Option<&[CertificateDer<'_>]>| certs.and_then(|c| c.first()).map(|c| c.to_vec());
    Ok(Seen {
        server: leaf(c.get_ref().1.peer_certificates()).ok_or("no server certificate")?,
        client: leaf(s.get_ref().1.peer_certificates()),
    })
}

/// The PEM body lines of a key: none may appear in an error or a dump.
pub(crate) fn key_lines(pem: &str) -> Vec<&str> {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn compile_errors_name_the_field_and_never_the_key() {
    let ca = TestCa::new("gateway");
    let (chain, key) = server_cert(&ca);
    let (_, other_key) = server_cert(&ca);
    // Valid PEM framing around bytes that are not a key ("secret-key-material").
    let framed =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let with = |f: fn(&mut TlsCertificate)| {
        let mut s = cert_secret("x", &chain, &key);
        if let Some(secret::Type::TlsCertificate(c)) = &mut s.r#type {
            f(c);
        }
        s
    };
    let cases: Vec<(Secret, &str)> = vec![
        (
            Secret {
                name: "x".into(),
                r#type: None,
            },
            "type: a tls_certificate or validation_context is required",
        ),
        (
            with(|c| c.certificate_chain = None),
            "tls_certificate.certificate_chain: is required",
        ),
        (
            cert_secret("x", "", &key),
            "tls_certificate.certificate_chain: no certificate in the PEM data",
        ),
        (
            cert_secret("x", &key, &key),
            "tls_certificate.certificate_chain: no certificate in the PEM data",
        ),
        (
            with(|c| c.private_key = None),
            "tls_certificate.private_key: is required",
        ),
        (
            cert_secret("x", &chain, "secret-key-material"),
            "tls_certificate.private_key: not a PEM private key",
        ),
        (
            cert_secret("x", &chain, framed),
            "tls_certificate.private_key: not an RSA, ECDSA or Ed25519 private key",
        ),
        (
            cert_secret("x", &chain, &other_key),
            "tls_certificate.private_key: does not match",
        ),
        (
            with(|c| c.password = inline("hunter2")),
            "tls_certificate.password: is not supported",
        ),
        (
            ca_secret("x", ""),
            "validation_context.trusted_ca: no certificate in the PEM data",
        ),
        (
            Secret {
                name: "x".into(),
                r#type: Some(secret::Type::ValidationContext(Default::default())),
            },
            "validation_context.trusted_ca: is required",
        ),
        (
            Secret {
                name: "x".into(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: inline(&ca.root_pem),
                        crl: inline("not a crl"),
                        ..Default::default()
                    },
                )),
            },
            "validation_context.crl: no CRL in the PEM data",
        ),
        (
            Secret {
                name: "x".into(),
                r#type: Some(secret::Type::GenericSecret(GenericSecret::default())),
            },
            "generic_secret: is not supported",
        ),
    ];
    for (s, want) in cases {
        let err = compile(&s).expect_err(want).to_string();
        assert!(err.starts_with(want), "{err} (expected {want})");
        for line in key_lines(&key).into_iter().chain(key_lines(&other_key)) {
            assert!(!err.contains(line), "{err} quotes the key");
        }
        for leaked in ["c2VjcmV0", "secret-key-material", "hunter2"] {
            assert!(!err.contains(leaked), "{err} quotes the key");
        }
    }
    assert!(matches!(
        compile(&cert_secret("x", &chain, &key)),
        Ok(SecretValue::Certificate(_))
    ));
    assert!(matches!(
        compile(&ca_secret("x", &ca.root_pem)),
        Ok(SecretValue::Authority(_))
    ));
}

#[test]
fn redacted_copies_keep_the_chain_and_hide_the_key() {
    let ca = TestCa::new("gateway");
    let (chain, key) = server_cert(&ca);
    let s = cert_secret("kubernetes://r", &chain, &key);
    let copy = redacted(&any(SECRET, &s));
    assert_eq!(copy.type_url, SECRET);
    let back = Secret::decode(copy.value.as_slice()).expect("a Secret");
    let Some(secret::Type::TlsCertificate(c)) = back.r#type else {
        panic!("a certificate: {back:?}");
    };
    assert_eq!(c.certificate_chain, inline(&chain));
    assert_eq!(
        c.private_key.and_then(|d| d.specifier),
        Some(data_source::Specifier::InlineString("[redacted]".into()))
    );
    // A CA bundle is public: kept whole. Garbage is kept as nothing.
    let bundle = any(SECRET, &ca_secret("kubernetes://r-cacert", &ca.root_pem));
    assert_eq!(redacted(&bundle), bundle);
    let garbage = Any {
        type_url: SECRET.into(),
        value: vec![0xff, 0xff],
    };
    assert!(redacted(&garbage).value.is_empty());
}

#[tokio::test]
async fn a_credential_serves_once_it_arrives_and_rotates_for_new_handshakes() {
    const NAME: &str = "kubernetes://sds-test-rotation";
    let ca = TestCa::new("gateway");
    let store = Store::new(Arc::new(Stats::default()));
    apply_listener(
        &store,
        &gateway_listener("gw", &gateway_context(&[NAME], None, false)),
    );
    // Not gated on its secret: active at once, naming it.
    let snapshot = store.snapshot();
    let names: Vec<&str> = snapshot.listeners["gw"].sds_names().collect();
    assert_eq!(names, [NAME]);
    assert_eq!(store.wanted(SECRET), [NAME]);
    let server = server_of(&store, "gw");
    let client = client(&ca.root_pem, None);
    let err = handshake(server.clone(), client.clone())
        .await
        .expect_err("no certificate yet");
    assert!(
        err.contains("no server certificate chain resolved"),
        "{err}"
    );

    let v1 = server_cert(&ca);
    apply_secrets(&store, "1", &[cert_secret(NAME, &v1.0, &v1.1)]).expect("v1 applies");
    let seen = handshake(server.clone(), client.clone()).await.expect("v1");
    assert_eq!(seen.server, der(&v1.0));

    // A new version: the same listener presents it to new handshakes.
    let v2 = server_cert(&ca);
    apply_secrets(&store, "2", &[cert_secret(NAME, &v2.0, &v2.1)]).expect("v2 applies");
    let seen = handshake(server.clone(), client.clone()).await.expect("v2");
    assert_eq!(seen.server, der(&v2.0));

    // All or nothing: a bad secret in the response and nothing is installed.
    let v3 = server_cert(&ca);
    let err = apply_secrets(
        &store,
        "3",
        &[
            cert_secret(NAME, &v3.0, &v3.1),
            cert_secret("kubernetes://sds-test-rotation-bad", &v3.0, "not a key"),
        ],
    )
    .expect_err("a bad key is NACKed");
    assert_eq!(
        err,
        "secret kubernetes://sds-test-rotation-bad: tls_certificate.private_key: not a PEM private key"
    );
    let seen = handshake(server.clone(), client.clone())
        .await
        .expect("still v2");
    assert_eq!(seen.server, der(&v2.0));

    // The store keeps the chain for /config_dump, never the key.
    let raw = &store.raw(SECRET)[NAME];
    assert_eq!(raw.version, "2");
    let kept = format!("{:?}", Secret::decode(raw.resource.value.as_slice()));
    assert!(kept.contains("[redacted]"), "{kept}");
    for line in key_lines(&v2.1) {
        assert!(!kept.contains(line), "the stored copy holds the key");
    }

    // Removed: later handshakes fail rather than use it.
    store
        .apply(SECRET, Vec::new(), &[NAME.to_string()], false)
        .expect("removal applies");
    let err = handshake(server, client).await.expect_err("removed");
    assert!(
        err.contains("no server certificate chain resolved"),
        "{err}"
    );
}

#[tokio::test]
async fn mutual_tls_checks_clients_against_the_cacert_secret() {
    const CERT: &str = "kubernetes://sds-test-mutual";
    const CA: &str = "kubernetes://sds-test-mutual-cacert";
    let (gateway, clients, stranger) = (
        TestCa::new("gateway"),
        TestCa::new("clients"),
        TestCa::new("stranger"),
    );
    let store = Store::new(Arc::new(Stats::default()));
    apply_listener(
        &store,
        &gateway_listener("mutual", &gateway_context(&[CERT], Some(CA), true)),
    );
    assert_eq!(store.wanted(SECRET), [CERT, CA]);
    let server = server_of(&store, "mutual");
    let cert = server_cert(&gateway);
    apply_secrets(&store, "1", &[cert_secret(CERT, &cert.0, &cert.1)]).expect("cert applies");
    let good = clients.issue(CLIENT_A);
    let err = handshake(server.clone(), client(&gateway.root_pem, Some(&good)))
        .await
        .expect_err("no CA yet: no client is accepted");
    assert!(err.contains("has not been received"), "{err}");

    apply_secrets(&store, "1", &[ca_secret(CA, &clients.root_pem)]).expect("CA applies");
    let err = handshake(server.clone(), client(&gateway.root_pem, None))
        .await
        .expect_err("a client certificate is required");
    assert!(err.starts_with("server:"), "{err}");
    let seen = handshake(server.clone(), client(&gateway.root_pem, Some(&good)))
        .await
        .expect("a client of the CA");
    assert_eq!(seen.client, Some(der(&good.0)));
    let err = handshake(
        server.clone(),
        client(&gateway.root_pem, Some(&stranger.issue(CLIENT_A))),
    )
    .await
    .expect_err("a client of another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn optional_mutual_verifies_presented_certificates_and_exact_sans() {
    const CERT: &str = "kubernetes://sds-test-optional";
    const CA: &str = "kubernetes://sds-test-optional-cacert";
    let (gateway, clients, stranger) = (
        TestCa::new("gateway"),
        TestCa::new("clients"),
        TestCa::new("stranger"),
    );
    // Istio's OPTIONAL_MUTUAL with `subjectAltNames`: a combined validation context.
    #[allow(deprecated)]
    let defaults = CertificateValidationContext {
        match_subject_alt_names: vec![StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(CLIENT_A.into())),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut ctx = gateway_context(&[CERT], None, false);
    if let Some(common) = &mut ctx.common_tls_context {
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(defaults),
                    validation_context_sds_secret_config: Some(sds(CA)),
                    ..Default::default()
                },
            ),
        );
    }
    let tls = crate::tls::downstream(&tls_socket(&ctx))
        .expect("compiles")
        .expect("TLS");
    assert_eq!(tls.sds_names, [CERT, CA]);
    let cert = server_cert(&gateway);
    let secrets = Secrets::global();
    let install = |s: &Secret| secrets.set(&s.name, Some(compile(s).expect("compiles")));
    install(&cert_secret(CERT, &cert.0, &cert.1));
    install(&ca_secret(CA, &clients.root_pem));

    let seen = handshake(tls.config.clone(), client(&gateway.root_pem, None))
        .await
        .expect("no certificate is fine");
    assert_eq!(seen.client, None);
    let a = clients.issue(CLIENT_A);
    let seen = handshake(tls.config.clone(), client(&gateway.root_pem, Some(&a)))
        .await
        .expect("client a");
    assert_eq!(seen.client, Some(der(&a.0)));
    let err = handshake(
        tls.config.clone(),
        client(&gateway.root_pem, Some(&clients.issue(CLIENT_B))),
    )
    .await
    .expect_err("client b is not an accepted SAN");
    assert!(err.contains("match none of"), "{err}");
    let err = handshake(
        tls.config.clone(),
        client(&gateway.root_pem, Some(&stranger.issue(CLIENT_A))),
    )
    .await
    .expect_err("a certificate of another CA is refused even when optional");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn two_credentials_serve_the_first_the_client_can_verify() {
    const P256: &str = "kubernetes://sds-test-p256";
    const P384: &str = "kubernetes://sds-test-p384";
    let ca = TestCa::new("gateway");
    let tls = crate::tls::downstream(&tls_socket(&gateway_context(&[P256, P384], None, false)))
        .expect("compiles")
        .expect("TLS");
    let host = || vec![SanType::DnsName(HOST.try_into().expect("a DNS name"))];
    let p256 = ca.issue_for(host(), KeyPair::generate().expect("key"));
    let p384 = ca.issue_for(
        host(),
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key"),
    );
    let secrets = Secrets::global();
    for (name, (chain, key)) in [(P256, &p256), (P384, &p384)] {
        secrets.set(
            name,
            Some(compile(&cert_secret(name, chain, key)).expect("compiles")),
        );
    }
    let any_client = client(&ca.root_pem, None);
    let seen = handshake(tls.config.clone(), any_client.clone())
        .await
        .expect("any");
    assert_eq!(seen.server, der(&p256.0));
    let p384_client = client_with(&ca.root_pem, None, p384_only());
    let seen = handshake(tls.config.clone(), p384_client)
        .await
        .expect("P-384 only");
    assert_eq!(seen.server, der(&p384.0));
    // The first one gone: the second serves everyone who can verify it.
    secrets.set(P256, None);
    let seen = handshake(tls.config.clone(), any_client)
        .await
        .expect("second");
    assert_eq!(seen.server, der(&p384.0));
}
