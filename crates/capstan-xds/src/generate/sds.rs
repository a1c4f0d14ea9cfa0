//! SDS over ADS: the gateways' `credentialName` secrets, as istiod's `SecretGen` serves them
//! (`pilot/pkg/xds/sds.go`).
//!
//! A gateway listener names `kubernetes://<name>` for its certificate and
//! `kubernetes://<name>-cacert` for the CA its MUTUAL clients are checked against; the proxy
//! subscribes to those names and gets `Secret`s with the PEM inline. As istiod does:
//! - only a proxy whose stream was authenticated gets anything, and only Secrets of its own
//!   namespace (`kubernetes://<namespace>/<name>` is accepted when it names that namespace);
//! - `<name>-cacert` is the CA of the Secret `<name>-cacert` if there is one, else of `<name>`;
//! - a Secret that does not exist or holds no usable material is left out (the proxy keeps
//!   waiting for it), never sent broken.

use crate::context::credentials::{Credential, Credentials};
use crate::proxy::Proxy;
use crate::resource::Resource;
use crate::Subscription;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use std::sync::Arc;
use tracing::warn;

/// The prefix of SDS names that refer to Kubernetes Secrets.
pub const KUBERNETES_PREFIX: &str = "kubernetes://";
/// The suffix of the SDS name of a Secret's CA bundle.
pub const CA_SUFFIX: &str = "-cacert";

/// A parsed SDS name: the Secret's namespace and name, and whether the CA is wanted.
#[derive(Debug, PartialEq, Eq)]
struct SecretRef<'a> {
    namespace: &'a str,
    name: &'a str,
}

fn parse<'a>(resource: &'a str, proxy_namespace: &'a str) -> Option<SecretRef<'a>> {
    let rest = resource.strip_prefix(KUBERNETES_PREFIX)?;
    let (namespace, name) = rest.split_once('/').unwrap_or((proxy_namespace, rest));
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
        .then_some(SecretRef { namespace, name })
}

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..DataSource::default()
    })
}

/// The secret for one SDS name, or why there is none.
fn secret(creds: &Credentials, proxy: &Proxy, resource: &str) -> Result<Secret, String> {
    let r = parse(resource, &proxy.namespace).ok_or("not a kubernetes://[namespace/]name")?;
    if r.namespace != proxy.namespace {
        return Err(format!(
            "the proxy is in namespace {:?}; Secrets of {:?} are not served to it",
            proxy.namespace, r.namespace
        ));
    }
    let lookup = |name: &str| -> Option<&Arc<Credential>> { creds.get(r.namespace, name) };
    let missing = || format!("Secret {}/{} does not exist", r.namespace, r.name);
    let kind = if let Some(base) = r.name.strip_suffix(CA_SUFFIX) {
        let c = lookup(r.name)
            .or_else(|| lookup(base))
            .ok_or_else(missing)?;
        let ca = c.ca.as_ref().map_err(Clone::clone)?;
        secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(ca),
            ..CertificateValidationContext::default()
        })
    } else {
        let c = lookup(r.name).ok_or_else(missing)?;
        let m = c.certificate.as_ref().map_err(Clone::clone)?;
        secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&m.chain),
            private_key: inline(&m.key),
            ..TlsCertificate::default()
        })
    };
    Ok(Secret {
        name: resource.to_string(),
        r#type: Some(kind),
    })
}

/// The secrets `proxy` subscribed to that exist and that it may have.
pub fn generate(creds: &Credentials, proxy: &Proxy, sub: &Subscription) -> Vec<Arc<Resource>> {
    if sub.names.is_empty() {
        return Vec::new();
    }
    if !proxy.authenticated {
        warn!(
            proxy = %proxy.id,
            "credentials are served only on an authenticated stream (the TLS xDS port with a \
             token or client certificate); this proxy's gateway TLS secrets are not sent"
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in sub.names.iter() {
        match secret(creds, proxy, name) {
            Ok(s) => out.push(Arc::new(Resource::new(name.to_string(), &s))),
            Err(why) => warn!(proxy = %proxy.id, secret = %name, "not sent: {why}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::BTreeMap;

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUb3Vy\n-----END CERTIFICATE-----\n";
    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUY2Fj\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n";

    fn credential(pairs: &[(&str, &str)]) -> Credential {
        let data: BTreeMap<String, Vec<u8>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Credential::from_data(&data)
    }

    fn gateway(namespace: &str, authenticated: bool) -> Proxy {
        use envoy_types::pb::envoy::config::core::v3::Node;
        let mut p = Proxy::from_node(Some(&Node {
            id: format!("router~10.0.0.1~gw-1.{namespace}~{namespace}.svc.cluster.local"),
            ..Node::default()
        }))
        .unwrap();
        p.authenticated = authenticated;
        p
    }

    fn sub(names: &[&str]) -> Subscription {
        Subscription {
            wildcard: false,
            names: names.iter().map(|n| Arc::from(*n)).collect(),
        }
    }

    fn decode(r: &Resource) -> Secret {
        let any = envoy_types::pb::google::protobuf::Any::decode(r.body.to_bytes()).unwrap();
        assert_eq!(any.type_url, crate::resource::SECRET);
        Secret::decode(any.value.as_slice()).unwrap()
    }

    fn creds() -> Credentials {
        let mut c = Credentials::default();
        c.insert(
            "gw",
            "site",
            credential(&[("tls.crt", CERT), ("tls.key", KEY)]),
        );
        c.insert(
            "gw",
            "mutual",
            credential(&[("tls.crt", CERT), ("tls.key", KEY), ("ca.crt", CA)]),
        );
        c.insert("gw", "split-cacert", credential(&[("cacert", CA)]));
        c.insert("gw", "split", credential(&[("cert", CERT), ("key", KEY)]));
        c.insert(
            "gw",
            "broken",
            credential(&[("tls.crt", "nope"), ("tls.key", KEY)]),
        );
        c.insert(
            "other",
            "site",
            credential(&[("tls.crt", CERT), ("tls.key", KEY)]),
        );
        c
    }

    #[test]
    fn certificates_and_cas_are_served_inline_by_their_sds_names() {
        let names = [
            "kubernetes://site",
            "kubernetes://mutual-cacert",
            "kubernetes://split-cacert",
            "kubernetes://gw/split",
        ];
        let out = generate(&creds(), &gateway("gw", true), &sub(&names));
        let got: BTreeMap<String, Secret> =
            out.iter().map(|r| (r.name.clone(), decode(r))).collect();
        assert_eq!(got.len(), 4, "{:?}", got.keys());
        let Some(secret::Type::TlsCertificate(t)) = &got["kubernetes://site"].r#type else {
            panic!("not a certificate")
        };
        assert_eq!(t.certificate_chain, inline(CERT.as_bytes()));
        assert_eq!(t.private_key, inline(KEY.as_bytes()));
        for ca in ["kubernetes://mutual-cacert", "kubernetes://split-cacert"] {
            let Some(secret::Type::ValidationContext(v)) = &got[ca].r#type else {
                panic!("{ca}: not a CA")
            };
            assert_eq!(v.trusted_ca, inline(CA.as_bytes()));
            assert_eq!(got[ca].name, ca);
        }
    }

    #[test]
    fn nothing_for_unauthenticated_streams_other_namespaces_or_bad_secrets() {
        let c = creds();
        assert!(generate(&c, &gateway("gw", false), &sub(&["kubernetes://site"])).is_empty());
        let gw = gateway("gw", true);
        for name in [
            "kubernetes://other/site",
            "kubernetes://missing",
            "kubernetes://broken",
            "kubernetes://site-cacert",
            "file-cert:/etc/cert.pem",
            "kubernetes://",
            "kubernetes://a/b/c",
        ] {
            assert!(generate(&c, &gw, &sub(&[name])).is_empty(), "{name}");
        }
        // A bad name does not hold back the good ones.
        let out = generate(&c, &gw, &sub(&["kubernetes://broken", "kubernetes://site"]));
        assert_eq!(out.len(), 1);
    }
}
