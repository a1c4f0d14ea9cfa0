//! Upstream TLS for outbound clusters: a DestinationRule's client TLS setting as an
//! `UpstreamTlsContext`, and Istio's auto mTLS when no rule sets TLS (istiod's
//! `buildUpstreamTLSSettings` / `applyUpstreamTLSSettings` in `cluster_tls.go`): the cluster
//! gets two `transport_socket_matches`, `tlsMode-istio` (ISTIO_MUTUAL) for endpoints whose
//! `envoy.transport_socket_match` metadata says `tlsMode: istio`, and `tlsMode-disabled`
//! (plaintext) for the others.

use super::common::{ads, any};
use crate::context::MutualTlsMode;
use capstan_api::networking::{ClientTlsMode, ClientTlsSettings};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, tls_parameters::TlsProtocol, CertificateValidationContext,
    CommonTlsContext, SdsSecretConfig, TlsCertificate, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use std::borrow::Cow;

/// The SDS secret with the workload's certificate (Istio's `SDSDefaultResourceName`).
pub const SDS_DEFAULT: &str = "default";
/// The SDS secret with the mesh's trust roots (Istio's `SDSRootResourceName`).
pub const SDS_ROOT: &str = "ROOTCA";
/// Endpoint metadata namespace that `transport_socket_matches` look at.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// Istio's short label key in that metadata.
pub const TLS_MODE_KEY: &str = "tlsMode";
/// The TLS mode of a workload with a sidecar.
pub const ISTIO_TLS_MODE: &str = "istio";
/// The TLS transport socket's name.
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// What decides one outbound cluster's TLS.
#[derive(Clone, Debug)]
pub struct ClusterTls<'a> {
    /// The DestinationRule's effective client TLS setting for the cluster, if any.
    pub rule: Option<&'a ClientTlsSettings>,
    /// Istio's SNI for ISTIO_MUTUAL, `outbound_.PORT_.SUBSET_.HOST`.
    pub istio_sni: &'a str,
    /// The identities of the service's workloads on the port (the SANs ISTIO_MUTUAL expects
    /// when the rule names none).
    pub service_accounts: &'a [String],
    /// Whether auto mTLS may apply (mesh `enableAutoMtls`, and not a proxyless client).
    pub auto_mtls: bool,
    /// What the service is inferred to accept (None: outside the mesh).
    pub service_mode: Option<MutualTlsMode>,
    /// Whether the cluster speaks HTTP/2 upstream (ALPN offers `h2` then).
    pub http2: bool,
}

/// Applies the TLS setting (or auto mTLS) to a cluster whose discovery type is final.
pub fn apply_tls(c: &mut Cluster, input: &ClusterTls<'_>) {
    let (settings, auto_detected) = match input.rule {
        Some(rule) if rule.mode == ClientTlsMode::IstioMutual => {
            // Istio fills ISTIO_MUTUAL's SNI and SANs when the rule leaves them out.
            let mut s = rule.clone();
            if s.sni.is_empty() {
                s.sni = input.istio_sni.to_string();
            }
            if s.subject_alt_names.is_empty() {
                s.subject_alt_names = input.service_accounts.to_vec();
            }
            (Cow::Owned(s), false)
        }
        Some(rule) => (Cow::Borrowed(rule), false),
        None => {
            let mode = input.service_mode;
            if !input.auto_mtls || matches!(mode, None | Some(MutualTlsMode::Disable)) {
                return;
            }
            let auto = ClientTlsSettings {
                mode: ClientTlsMode::IstioMutual,
                subject_alt_names: input.service_accounts.to_vec(),
                sni: input.istio_sni.to_string(),
                ..ClientTlsSettings::default()
            };
            (Cow::Owned(auto), true)
        }
    };
    let Some(ctx) = upstream_tls(&settings, input.http2) else {
        return;
    };
    let socket = TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    };
    let original_dst = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        ));
    // Istio does not split headless (ORIGINAL_DST) clusters by endpoint: their service mode
    // already says whether every endpoint has a sidecar.
    if auto_detected && !original_dst {
        c.transport_socket_matches = vec![
            cluster::TransportSocketMatch {
                name: format!("tlsMode-{ISTIO_TLS_MODE}"),
                r#match: Some(istio_tls_mode()),
                transport_socket: Some(socket),
            },
            cluster::TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(raw_buffer()),
            },
        ];
    } else {
        c.transport_socket = Some(socket);
    }
}

/// `{tlsMode: istio}`: the match of the mTLS socket and the metadata of endpoints with a
/// sidecar.
pub fn istio_tls_mode() -> Struct {
    Struct {
        fields: [(
            TLS_MODE_KEY.to_string(),
            Value {
                kind: Some(value::Kind::StringValue(ISTIO_TLS_MODE.into())),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// Envoy's plaintext transport socket, as Istio writes it.
fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer::default(),
        ))),
    }
}

/// An SDS secret served over ADS.
pub fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

/// Exact, case-sensitive SAN matchers (Istio's `StringToExactMatch`).
pub fn exact_sans(sans: &[String]) -> Vec<StringMatcher> {
    sans.iter()
        .map(|s| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.clone())),
            ignore_case: false,
        })
        .collect()
}

/// The workload certificate and mesh roots: `default` as the certificate; `ROOTCA` with
/// `sans` as a combined validation context (Istio's shape for ISTIO_MUTUAL on both sides).
pub fn istio_identity(common: &mut CommonTlsContext, sans: &[String]) {
    common.tls_certificate_sds_secret_configs = vec![sds(SDS_DEFAULT)];
    #[allow(deprecated)] // match_subject_alt_names: what Istio sends
    let default_validation_context = CertificateValidationContext {
        match_subject_alt_names: exact_sans(sans),
        ..CertificateValidationContext::default()
    };
    common.validation_context_type = Some(
        common_tls_context::ValidationContextType::CombinedValidationContext(
            common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(default_validation_context),
                validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
                ..Default::default()
            },
        ),
    );
}

fn file(path: &str) -> Option<DataSource> {
    (!path.is_empty()).then(|| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..DataSource::default()
    })
}

/// Istio's `defaultUpstreamCommonTLSContext`: TLS 1.2 to 1.3 (Envoy's client default stops
/// at 1.2).
fn default_common() -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..TlsParameters::default()
        }),
        ..CommonTlsContext::default()
    }
}

/// The UpstreamTlsContext for a client TLS setting (None for DISABLE). ISTIO_MUTUAL must come
/// with its SNI and SANs filled in ([`apply_tls`] does).
pub fn upstream_tls(tls: &ClientTlsSettings, http2: bool) -> Option<UpstreamTlsContext> {
    let mut common = default_common();
    match tls.mode {
        ClientTlsMode::Disable => return None,
        ClientTlsMode::IstioMutual => {
            istio_identity(&mut common, &tls.subject_alt_names);
            // `istio-peer-exchange` for metadata exchange, `istio` marks in-mesh traffic for
            // the server's filter chain match (Istio's ALPNInMeshWithMxc / ...H2WithMxc).
            common.alpn_protocols = vec!["istio-peer-exchange".into(), "istio".into()];
            if http2 {
                common.alpn_protocols.push("h2".into());
            }
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            if !tls.credential_name.is_empty() {
                if tls.mode == ClientTlsMode::Mutual {
                    common.tls_certificate_sds_secret_configs =
                        vec![sds(&format!("kubernetes://{}", tls.credential_name))];
                }
                common.validation_context_type = Some(
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                        sds(&format!("kubernetes://{}-cacert", tls.credential_name)),
                    ),
                );
            } else {
                if tls.mode == ClientTlsMode::Mutual {
                    common.tls_certificates = vec![TlsCertificate {
                        certificate_chain: file(&tls.client_certificate),
                        private_key: file(&tls.private_key),
                        ..TlsCertificate::default()
                    }];
                }
                if !tls.ca_certificates.is_empty() {
                    common.validation_context_type = Some(
                        common_tls_context::ValidationContextType::ValidationContext(
                            CertificateValidationContext {
                                trusted_ca: file(&tls.ca_certificates),
                                ..CertificateValidationContext::default()
                            },
                        ),
                    );
                }
            }
        }
    }
    Some(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone(),
        ..UpstreamTlsContext::default()
    })
}

/// The SPIFFE identity of a service account (Istio's `spiffe.MustGenSpiffeURI`); identities
/// already written as SPIFFE URIs are kept.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    if service_account.starts_with("spiffe://") {
        service_account.to_string()
    } else {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(t: cluster::DiscoveryType) -> Cluster {
        Cluster {
            name: "outbound|80||a.ns.svc.cluster.local".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
            ..Cluster::default()
        }
    }

    fn input<'a>(
        rule: Option<&'a ClientTlsSettings>,
        mode: Option<MutualTlsMode>,
        sas: &'a [String],
    ) -> ClusterTls<'a> {
        ClusterTls {
            rule,
            istio_sni: "outbound_.80_._.a.ns.svc.cluster.local",
            service_accounts: sas,
            auto_mtls: true,
            service_mode: mode,
            http2: false,
        }
    }

    fn decode(ts: &TransportSocket) -> UpstreamTlsContext {
        use prost::Message;
        let Some(transport_socket::ConfigType::TypedConfig(a)) = &ts.config_type else {
            panic!("typed config")
        };
        UpstreamTlsContext::decode(a.value.as_slice()).unwrap()
    }

    #[allow(deprecated)]
    fn sans(ctx: &UpstreamTlsContext) -> Vec<String> {
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) = &ctx
            .common_tls_context
            .as_ref()
            .unwrap()
            .validation_context_type
        else {
            panic!("combined validation context")
        };
        c.default_validation_context
            .as_ref()
            .unwrap()
            .match_subject_alt_names
            .iter()
            .map(|m| match &m.match_pattern {
                Some(string_matcher::MatchPattern::Exact(s)) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// One case a row: rule, inferred mode, discovery type → (socket matches, plain socket).
    #[test]
    fn auto_mtls_applies_only_without_a_rule_and_to_mesh_services() {
        use cluster::DiscoveryType::{Eds, OriginalDst};
        let istio = ClientTlsSettings {
            mode: ClientTlsMode::IstioMutual,
            ..ClientTlsSettings::default()
        };
        let disable = ClientTlsSettings::default();
        let sas = vec!["spiffe://cluster.local/ns/ns/sa/a".to_string()];
        type Case<'a> = (
            &'a str,
            Option<&'a ClientTlsSettings>,
            Option<MutualTlsMode>,
            cluster::DiscoveryType,
            (usize, bool),
        );
        let cases: Vec<Case> = vec![
            (
                "permissive service",
                None,
                Some(MutualTlsMode::Permissive),
                Eds,
                (2, false),
            ),
            (
                "strict service",
                None,
                Some(MutualTlsMode::Strict),
                Eds,
                (2, false),
            ),
            (
                "disabled by PeerAuthentication",
                None,
                Some(MutualTlsMode::Disable),
                Eds,
                (0, false),
            ),
            ("outside the mesh", None, None, Eds, (0, false)),
            (
                "headless",
                None,
                Some(MutualTlsMode::Permissive),
                OriginalDst,
                (0, true),
            ),
            (
                "rule ISTIO_MUTUAL",
                Some(&istio),
                Some(MutualTlsMode::Disable),
                Eds,
                (0, true),
            ),
            (
                "rule DISABLE",
                Some(&disable),
                Some(MutualTlsMode::Strict),
                Eds,
                (0, false),
            ),
        ];
        for (name, rule, mode, discovery, (matches, plain)) in cases {
            let mut c = cluster(discovery);
            apply_tls(&mut c, &input(rule, mode, &sas));
            assert_eq!(
                (
                    c.transport_socket_matches.len(),
                    c.transport_socket.is_some()
                ),
                (matches, plain),
                "{name}"
            );
        }
        let mut off = cluster(Eds);
        let mut no_auto = input(None, Some(MutualTlsMode::Strict), &sas);
        no_auto.auto_mtls = false;
        apply_tls(&mut off, &no_auto);
        assert!(off.transport_socket_matches.is_empty() && off.transport_socket.is_none());
    }

    #[test]
    fn auto_mtls_is_istio_mutual_for_sidecar_endpoints_and_plaintext_otherwise() {
        let sas = vec!["spiffe://cluster.local/ns/ns/sa/a".to_string()];
        let mut c = cluster(cluster::DiscoveryType::Eds);
        apply_tls(&mut c, &input(None, Some(MutualTlsMode::Permissive), &sas));
        let [istio, disabled] = c.transport_socket_matches.as_slice() else {
            panic!("two matches")
        };
        assert_eq!(istio.name, "tlsMode-istio");
        assert_eq!(istio.r#match, Some(istio_tls_mode()));
        let ctx = decode(istio.transport_socket.as_ref().unwrap());
        assert_eq!(ctx.sni, "outbound_.80_._.a.ns.svc.cluster.local");
        assert_eq!(sans(&ctx), sas);
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(common.alpn_protocols, ["istio-peer-exchange", "istio"]);
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
        assert_eq!(disabled.name, "tlsMode-disabled");
        assert_eq!(disabled.r#match, Some(Struct::default()));
        assert_eq!(
            disabled.transport_socket.as_ref().unwrap().name,
            "envoy.transport_sockets.raw_buffer"
        );
    }

    #[test]
    fn istio_mutual_rules_keep_their_sans_and_sni() {
        let sas = vec!["spiffe://cluster.local/ns/ns/sa/a".to_string()];
        let rule = ClientTlsSettings {
            mode: ClientTlsMode::IstioMutual,
            subject_alt_names: vec!["spiffe://other/ns/x/sa/y".into()],
            sni: "custom".into(),
            ..ClientTlsSettings::default()
        };
        let mut c = cluster(cluster::DiscoveryType::Eds);
        let mut h2 = input(Some(&rule), None, &sas);
        h2.http2 = true;
        apply_tls(&mut c, &h2);
        let ctx = decode(c.transport_socket.as_ref().unwrap());
        assert_eq!(
            (ctx.sni.as_str(), sans(&ctx)),
            ("custom", rule.subject_alt_names.clone())
        );
        assert_eq!(
            ctx.common_tls_context.unwrap().alpn_protocols,
            ["istio-peer-exchange", "istio", "h2"]
        );
    }

    #[test]
    fn service_accounts_become_spiffe_ids() {
        assert_eq!(
            spiffe_id("cluster.local", "default", "reviews"),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        assert_eq!(
            spiffe_id("td", "default", "spiffe://x/ns/a/sa/b"),
            "spiffe://x/ns/a/sa/b"
        );
    }
}
