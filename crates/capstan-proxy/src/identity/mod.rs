//! The workload identity: the proxy's certificate chain, private key and trusted roots — what
//! Envoy receives from pilot-agent's SDS server as the secrets `default` and `ROOTCA`.
//! `capstan proxy` is its own agent: the material comes from the mesh CA ([`ca`], key generated
//! here and never sent) or from files in Istio's `/etc/certs` layout ([`files`]).
//!
//! TLS configurations built here read the *current* material at every handshake (certificate
//! resolvers and verifiers hold the [`Identity`], not a copy), so a rotation applies to new
//! connections while established ones continue undisturbed.

pub mod ca;
pub mod files;
pub mod san;
pub mod verify;

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use san::SanMatchers;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// Envoy's SDS name of the workload certificate.
pub const DEFAULT_SECRET: &str = "default";
/// Envoy's SDS name of the trusted roots.
pub const ROOT_SECRET: &str = "ROOTCA";

/// One version of the identity.
#[derive(Debug)]
pub struct Material {
    /// Chain (leaf first) and signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// Trusted roots (DER).
    pub roots: Vec<CertificateDer<'static>>,
    /// The leaf's SPIFFE id, if it has one.
    pub spiffe: Option<String>,
    /// The leaf's expiry.
    pub not_after: SystemTime,
    /// The leaf's start of validity.
    pub not_before: SystemTime,
}

impl Material {
    /// Parses PEM material: the chain (leaf first), its PKCS#8/SEC1/PKCS#1 key, and the roots.
    /// Checks that the key matches the leaf and that the chain verifies against the roots.
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Material, String> {
        let chain = pem_certs(chain, "certificate chain")?;
        let mut roots = pem_certs(roots, "root certificates")?;
        // The same root from two sources (the CA's response and the mounted file) counts once.
        let mut unique: Vec<CertificateDer<'static>> = Vec::with_capacity(roots.len());
        roots.retain(|r| {
            let new = !unique.contains(r);
            if new {
                unique.push(r.clone());
            }
            new
        });
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("private key: not a PEM private key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("private key: {e}"))?;
        let certified = CertifiedKey::new(chain.clone(), signing);
        certified
            .keys_match()
            .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
        let leaf = verify::parse_leaf(&chain[0])?;
        verify::chain(
            &chain[0],
            &chain[1..],
            &roots,
            webpki::KeyUsage::client_auth(),
            rustls_pki_types::UnixTime::now(),
        )
        .or_else(|_| {
            verify::chain(
                &chain[0],
                &chain[1..],
                &roots,
                webpki::KeyUsage::server_auth(),
                rustls_pki_types::UnixTime::now(),
            )
        })
        .map_err(|e| format!("the certificate does not verify against the roots: {e}"))?;
        Ok(Material {
            key: Arc::new(certified),
            roots,
            spiffe: leaf.uris.into_iter().find(|u| u.starts_with("spiffe://")),
            not_after: leaf.not_after,
            not_before: leaf.not_before,
        })
    }
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in the PEM data"));
    }
    Ok(certs)
}

/// The proxy's identity: the current [`Material`], replaced whole on rotation.
#[derive(Debug, Default)]
pub struct Identity {
    current: ArcSwapOption<Material>,
    changed: tokio::sync::Notify,
    rotations: std::sync::atomic::AtomicU64,
}

impl Identity {
    /// The process's identity (one per process, as Envoy's secret manager): listeners and
    /// clusters compiled from xDS refer to it by the SDS names above.
    pub fn workload() -> &'static Arc<Identity> {
        static WORKLOAD: OnceLock<Arc<Identity>> = OnceLock::new();
        WORKLOAD.get_or_init(|| Arc::new(Identity::default()))
    }

    /// The current material, if any arrived yet.
    pub fn current(&self) -> Option<Arc<Material>> {
        self.current.load_full()
    }

    /// Installs new material: new handshakes use it from now on.
    pub fn set(&self, m: Material) {
        tracing::info!(spiffe = ?m.spiffe, not_after = ?m.not_after, roots = m.roots.len(), "workload certificate installed");
        self.current.store(Some(Arc::new(m)));
        self.rotations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Installs material that differs from the current one only in its roots (the mounted
    /// trust bundle changed): new handshakes verify peers against them; not a rotation.
    pub fn set_trust(&self, m: Material) {
        tracing::info!(roots = m.roots.len(), "trust bundle (ROOTCA) updated");
        self.current.store(Some(Arc::new(m)));
        self.changed.notify_waiters();
    }

    /// How many times material was installed.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until material is present.
    pub async fn ready(&self) {
        loop {
            let notified = self.changed.notified();
            if self.current.load().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// A server configuration presenting the workload certificate and checking client
    /// certificates against the roots and `sans` (Istio's inbound mTLS); `require_client`
    /// refuses clients without one.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
        require_client: bool,
        sans: SanMatchers,
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(verify::PeerVerifier::new(
            self.clone(),
            sans,
            require_client,
            provider.clone(),
        ));
        let mut c = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        c.alpn_protocols = alpn;
        Arc::new(c)
    }

    /// A client configuration presenting the workload certificate and verifying the server
    /// against the roots and `sans` (empty: any certificate from the roots), not against the
    /// SNI: Istio's SNI names a cluster, not the peer.
    pub fn client_config(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
        sans: SanMatchers,
    ) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(verify::PeerVerifier::new(
            self.clone(),
            sans,
            true,
            provider.clone(),
        ));
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        c.alpn_protocols = alpn;
        // No session resumption: a resumed session carries the identity of its first
        // handshake, and a ticket from a connection made before a rotation can arrive after
        // it, so a shared cache would keep presenting the old certificate (seen in the
        // rotation test). Envoy avoids this with one session cache per secret version; full
        // handshakes cost little here, as upstream connections are pooled.
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    }
}

/// Serves the current certificate on both sides of a handshake.
#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.key.clone())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.key.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The SPIFFE id a node asks for: `spiffe://<trust domain>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`
/// from the node metadata pilot-agent writes (the namespace falls back to the node id's
/// `<pod>.<namespace>` part, the service account to `default`).
pub fn spiffe_for_node(
    node: &envoy_types::pb::envoy::config::core::v3::Node,
    trust_domain: &str,
) -> Result<String, String> {
    let meta = |k: &str| -> Option<String> {
        match node.metadata.as_ref()?.fields.get(k)?.kind.as_ref()? {
            envoy_types::pb::google::protobuf::value::Kind::StringValue(s) if !s.is_empty() => {
                Some(s.clone())
            }
            _ => None,
        }
    };
    let namespace = meta("NAMESPACE")
        .or_else(|| {
            let pod = node.id.split('~').nth(2)?;
            pod.split_once('.').map(|(_, ns)| ns.to_string())
        })
        .ok_or_else(|| {
            format!(
                "node {:?}: no NAMESPACE metadata and no <pod>.<namespace> in the id",
                node.id
            )
        })?;
    let sa = meta("SERVICE_ACCOUNT").unwrap_or_else(|| "default".into());
    Ok(format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"))
}

/// What the HTTP layer knows of a downstream peer's certificate (for XFCC and RBAC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// SHA-256 of the leaf's DER, lower-case hex (XFCC `Hash`).
    pub hash: String,
    /// URI SANs (the first `spiffe://` one is the principal).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// The subject, RFC 4514 style.
    pub subject: String,
    /// The certificates the peer presented, leaf first, DER (XFCC `Cert` and `Chain`).
    pub chain: Vec<Vec<u8>>,
}

impl PeerCert {
    /// The principal: the first SPIFFE URI SAN.
    pub fn spiffe(&self) -> Option<&str> {
        self.uris
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("spiffe://"))
    }
}

/// Reads the peer's leaf certificate after a handshake (None without one).
pub fn peer_cert(certs: Option<&[CertificateDer<'_>]>) -> Option<Arc<PeerCert>> {
    let leaf = certs?.first()?;
    let parsed = verify::parse_leaf(leaf).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(Arc::new(PeerCert {
        hash,
        uris: parsed.uris,
        dns: parsed.dns,
        subject: parsed.subject,
        chain: certs?.iter().map(|c| c.as_ref().to_vec()).collect(),
    }))
}

/// The peer's SPIFFE id from its leaf certificate (the principal of RBAC and XFCC's `URI`).
pub fn peer_spiffe(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certs?.first()?;
    verify::parse_leaf(leaf)
        .ok()?
        .uris
        .into_iter()
        .find(|u| u.starts_with("spiffe://"))
}

#[cfg(test)]
pub(crate) mod tests;
