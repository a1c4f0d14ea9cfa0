//! `Secret` protos: compiled into [`SecretValue`]s, validated fully so that a bad secret is
//! NACKed rather than installed, and redacted for `/config_dump`.
//!
//! What istiod sends for a gateway `credentialName`: `kubernetes://NAME` as a `tls_certificate`
//! (PEM chain and key, inline bytes) and `kubernetes://NAME-cacert` as a `validation_context`
//! (PEM CA bundle, and the CRL when the Kubernetes secret has `ca.crl`).

use super::SecretValue;
use crate::tls::{certs, provider, read};
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateRevocationListDer, PrivateKeyDer};
use std::sync::Arc;

/// What replaces private keys in every copy kept for display, as in Envoy's config dump.
pub const REDACTED: &str = "[redacted]";

/// Compiles a secret. Errors name the field and never quote key material.
pub fn compile(s: &Secret) -> Result<SecretValue, CompileError> {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            certificate(c).map_err(|e| e.within("tls_certificate"))
        }
        Some(secret::Type::ValidationContext(v)) => {
            authority(v).map_err(|e| e.within("validation_context"))
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            Err(CompileError::new("session_ticket_keys", "is not supported"))
        }
        Some(secret::Type::GenericSecret(_)) => {
            Err(CompileError::new("generic_secret", "is not supported"))
        }
        None => Err(CompileError::new(
            "type",
            "a tls_certificate or validation_context is required",
        )),
    }
}

/// The first field set of `fields` (name, set?) as an error: silently ignoring them would
/// serve or accept something other than configured.
fn unsupported(fields: &[(&str, bool)]) -> Result<(), CompileError> {
    match fields.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(CompileError::new(*name, "is not supported")),
        None => Ok(()),
    }
}

fn certificate(c: &TlsCertificate) -> Result<SecretValue, CompileError> {
    unsupported(&[
        ("password", c.password.is_some()),
        ("pkcs12", c.pkcs12.is_some()),
        ("private_key_provider", c.private_key_provider.is_some()),
    ])?;
    let chain_pem = read(c.certificate_chain.as_ref(), "certificate_chain")?;
    let chain = certs(&chain_pem, "certificate_chain")?;
    let certified = CertifiedKey::new(chain, signing_key(c.private_key.as_ref())?);
    certified.keys_match().map_err(|_| {
        CompileError::new(
            "private_key",
            "does not match the certificate_chain's first certificate",
        )
    })?;
    Ok(SecretValue::Certificate(Arc::new(certified)))
}

/// The key as rustls signs with it. The parsers' errors are not quoted: they may echo part of
/// the key.
fn signing_key(source: Option<&DataSource>) -> Result<Arc<dyn SigningKey>, CompileError> {
    let pem = read(source, "private_key")?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| CompileError::new("private_key", "not a PEM private key"))?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| CompileError::new("private_key", "not an RSA, ECDSA or Ed25519 private key"))
}

fn authority(v: &CertificateValidationContext) -> Result<SecretValue, CompileError> {
    #[allow(deprecated)]
    let sans = !v.match_subject_alt_names.is_empty();
    unsupported(&[
        (
            "verify_certificate_spki",
            !v.verify_certificate_spki.is_empty(),
        ),
        (
            "verify_certificate_hash",
            !v.verify_certificate_hash.is_empty(),
        ),
        ("match_subject_alt_names", sans),
        (
            "match_typed_subject_alt_names",
            !v.match_typed_subject_alt_names.is_empty(),
        ),
        (
            "ca_certificate_provider_instance",
            v.ca_certificate_provider_instance.is_some(),
        ),
        ("system_root_certs", v.system_root_certs.is_some()),
        (
            "custom_validator_config",
            v.custom_validator_config.is_some(),
        ),
    ])?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&read(v.trusted_ca.as_ref(), "trusted_ca")?, "trusted_ca")? {
        roots
            .add(c)
            .map_err(|e| CompileError::new("trusted_ca", e.to_string()))?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl) = &v.crl {
        let pem = read(Some(crl), "crl")?;
        let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| CompileError::new("crl", format!("not a PEM CRL: {e}")))?;
        if crls.is_empty() {
            return Err(CompileError::new("crl", "no CRL in the PEM data"));
        }
        builder = builder.with_crls(crls);
        if v.only_verify_leaf_cert_crl {
            builder = builder.only_check_end_entity_revocation();
        }
    }
    let verifier = builder
        .build()
        .map_err(|e| CompileError::new("trusted_ca", e.to_string()))?;
    Ok(SecretValue::Authority(verifier))
}

fn redacted_source() -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(REDACTED.into())),
        ..Default::default()
    }
}

fn redact(d: &mut Option<DataSource>) {
    if d.is_some() {
        *d = Some(redacted_source());
    }
}

/// A copy of an encoded `Secret` safe to keep for display: private keys, their passwords and
/// other secret material replaced by [`REDACTED`], as Envoy's config dump shows them. What
/// cannot be decoded is kept as nothing.
pub fn redacted(any: &Any) -> Any {
    let value = match Secret::decode(any.value.as_slice()) {
        Ok(mut s) => {
            match &mut s.r#type {
                Some(secret::Type::TlsCertificate(c)) => {
                    redact(&mut c.private_key);
                    redact(&mut c.password);
                    redact(&mut c.pkcs12);
                    c.private_key_provider = None;
                }
                Some(secret::Type::SessionTicketKeys(k)) => {
                    k.keys.iter_mut().for_each(|d| *d = redacted_source());
                }
                Some(secret::Type::GenericSecret(g)) => {
                    redact(&mut g.secret);
                    g.secrets.clear();
                }
                Some(secret::Type::ValidationContext(_)) | None => {}
            }
            s.encode_to_vec()
        }
        Err(_) => Vec::new(),
    };
    Any {
        type_url: any.type_url.clone(),
        value,
    }
}
