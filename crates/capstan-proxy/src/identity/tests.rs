use super::san::SanMatchers;
use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) struct TestCa {
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = p.self_signed(&key).unwrap();
        TestCa {
            root_pem: root.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (chain PEM, key PEM) for `spiffe`, valid from `from` for `secs`.
    pub(crate) fn issue_at(
        &self,
        spiffe: &str,
        from: time::OffsetDateTime,
        secs: i64,
    ) -> (String, String) {
        let sans = vec![SanType::URI(spiffe.try_into().unwrap())];
        self.sign(sans, KeyPair::generate().unwrap(), from, secs)
    }

    /// (chain PEM, key PEM) for `sans` with `key`, valid for an hour.
    pub(crate) fn issue_for(&self, sans: Vec<SanType>, key: KeyPair) -> (String, String) {
        let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        self.sign(sans, key, from, 3600)
    }

    fn sign(
        &self,
        sans: Vec<SanType>,
        key: KeyPair,
        from: time::OffsetDateTime,
        secs: i64,
    ) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = from;
        p.not_after = from + time::Duration::seconds(secs);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn issue(&self, spiffe: &str) -> (String, String) {
        self.issue_at(
            spiffe,
            time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            3600,
        )
    }

    pub(crate) fn material(&self, spiffe: &str) -> Material {
        let (chain, key) = self.issue(spiffe);
        Material::from_pem(chain.as_bytes(), key.as_bytes(), self.root_pem.as_bytes()).unwrap()
    }
}

const A: &str = "spiffe://cluster.local/ns/default/sa/a";
const B: &str = "spiffe://cluster.local/ns/default/sa/b";

#[test]
fn material_is_checked_when_loaded() {
    let ca = TestCa::new("mesh");
    let m = ca.material(A);
    assert_eq!(m.spiffe.as_deref(), Some(A));
    assert!(m.not_after > SystemTime::now());

    let (chain, _) = ca.issue(A);
    let (_, other_key) = ca.issue(B);
    let err = Material::from_pem(
        chain.as_bytes(),
        other_key.as_bytes(),
        ca.root_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(err.contains("does not match"), "{err}");

    let stranger = TestCa::new("other");
    let (chain, key) = stranger.issue(A);
    let err =
        Material::from_pem(chain.as_bytes(), key.as_bytes(), ca.root_pem.as_bytes()).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");

    let err = Material::from_pem(b"garbage", b"garbage", ca.root_pem.as_bytes()).unwrap_err();
    assert!(err.contains("certificate chain"), "{err}");

    let expired = ca.issue_at(
        A,
        time::OffsetDateTime::now_utc() - time::Duration::hours(2),
        60,
    );
    let err = Material::from_pem(
        expired.0.as_bytes(),
        expired.1.as_bytes(),
        ca.root_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
}

/// Runs one mTLS exchange; returns what each side saw of the other (or the error).
async fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<(Option<Arc<PeerCert>>, Option<String>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_cert(tls.get_ref().1.peer_certificates());
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("outbound_.9080_._.reviews").unwrap();
    let client_side = async {
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer_spiffe(tls.get_ref().1.peer_certificates()))
    };
    let client_saw = client_side.await;
    let server_saw = srv.await.unwrap();
    // The side that refused names the reason; the other only sees an alert.
    let client_saw = client_saw?;
    Ok((server_saw?, client_saw))
}

#[tokio::test]
async fn mutual_tls_sees_both_spiffe_ids_and_checks_sans() {
    let ca = TestCa::new("mesh");
    let (a, b) = (Arc::new(Identity::default()), Arc::new(Identity::default()));
    a.set(ca.material(A));
    b.set(ca.material(B));
    let (server_saw, client_saw) = exchange(
        b.server_config(vec![], true, SanMatchers::default()),
        a.client_config(vec![], SanMatchers::exact([B])),
    )
    .await
    .unwrap();
    assert_eq!(server_saw.unwrap().spiffe(), Some(A));
    assert_eq!(client_saw.as_deref(), Some(B));

    // The client expects another identity: refused.
    let err = exchange(
        b.server_config(vec![], true, SanMatchers::default()),
        a.client_config(
            vec![],
            SanMatchers::exact(["spiffe://cluster.local/ns/x/sa/y"]),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.contains("match none of"), "{err}");

    // A peer from another CA: refused by the server.
    let stranger = TestCa::new("other");
    let c = Arc::new(Identity::default());
    c.set(stranger.material(A));
    // c trusts the mesh root (so it accepts b) but presents a foreign certificate.
    let mut m = stranger.material(A);
    m.roots = b.current().unwrap().roots.clone();
    c.set(m);
    assert!(exchange(
        b.server_config(vec![], true, SanMatchers::default()),
        c.client_config(vec![], SanMatchers::default()),
    )
    .await
    .is_err());
}

/// istiod's inbound mTLS checks only the peer's trust domain:
/// `match_subject_alt_names: [{prefix: "spiffe://cluster.local/"}]`.
#[tokio::test]
async fn a_trust_domain_prefix_admits_the_mesh_and_refuses_other_domains() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext;
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
    use rustls::server::danger::ClientCertVerifier;
    const FOREIGN: &str = "spiffe://other.domain/ns/default/sa/a";
    #[allow(deprecated)]
    let inbound = CertificateValidationContext {
        match_subject_alt_names: vec![StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix(
                "spiffe://cluster.local/".into(),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let sans = SanMatchers::compile(&inbound).expect("istiod's matcher compiles");
    let ca = TestCa::new("mesh");
    let server = Arc::new(Identity::default());
    server.set(ca.material(B));

    let verifier = verify::PeerVerifier::new(
        server.clone(),
        sans.clone(),
        true,
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    let leaf = |spiffe: &str| {
        CertificateDer::from_pem_slice(ca.issue(spiffe).0.as_bytes()).expect("a PEM certificate")
    };
    let now = rustls_pki_types::UnixTime::now();
    verifier
        .verify_client_cert(&leaf(A), &[], now)
        .expect("a peer of the trust domain");
    let err = verifier
        .verify_client_cert(&leaf(FOREIGN), &[], now)
        .expect_err("a peer of another trust domain, though signed by the same roots")
        .to_string();
    assert!(err.contains(&format!("URI:{FOREIGN}")), "{err}");
    // rustls shows the reason with Debug quoting.
    assert!(err.contains("match none of [prefix"), "{err}");

    // The same over a handshake.
    let (a, stranger) = (Arc::new(Identity::default()), Arc::new(Identity::default()));
    a.set(ca.material(A));
    stranger.set(ca.material(FOREIGN));
    let (server_saw, _) = exchange(
        server.server_config(vec![], true, sans.clone()),
        a.client_config(vec![], SanMatchers::default()),
    )
    .await
    .unwrap();
    assert_eq!(server_saw.unwrap().spiffe(), Some(A));
    assert!(exchange(
        server.server_config(vec![], true, sans),
        stranger.client_config(vec![], SanMatchers::default()),
    )
    .await
    .is_err());
}

#[tokio::test]
async fn rotation_applies_to_new_handshakes() {
    let ca = TestCa::new("mesh");
    let (a, b) = (Arc::new(Identity::default()), Arc::new(Identity::default()));
    a.set(ca.material(A));
    b.set(ca.material(B));
    let server = b.server_config(vec![], true, SanMatchers::default());
    let client = a.client_config(vec![], SanMatchers::default());
    let first = exchange(server.clone(), client.clone())
        .await
        .unwrap()
        .0
        .unwrap();
    // A second connection may resume the session: still the first certificate.
    let again = exchange(server.clone(), client.clone())
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(again.hash, first.hash);
    a.set(ca.material(A));
    assert_eq!(a.rotations(), 2);
    // Same configurations, new material: the server sees the new certificate (no session
    // resumed from before the rotation).
    let after = exchange(server, client).await.unwrap().0.unwrap();
    assert_eq!(after.spiffe(), Some(A));
    assert_ne!(after.hash, first.hash);
}

#[tokio::test]
async fn files_are_loaded_and_bad_ones_keep_the_last_good() {
    let ca = TestCa::new("mesh");
    let dir = std::env::temp_dir().join(format!("capstan-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key) = ca.issue(A);
    let [c, k, r] = files::paths(&dir);
    std::fs::write(&c, chain).unwrap();
    std::fs::write(&k, key).unwrap();
    std::fs::write(&r, &ca.root_pem).unwrap();
    let id = Arc::new(Identity::default());
    let task = tokio::spawn(files::run(
        dir.clone(),
        id.clone(),
        std::time::Duration::from_millis(20),
    ));
    tokio::time::timeout(std::time::Duration::from_secs(5), id.ready())
        .await
        .unwrap();
    assert_eq!(id.current().unwrap().spiffe.as_deref(), Some(A));
    std::fs::write(&k, "not a key").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(id.rotations(), 1, "a bad key must not replace the good one");
    assert!(id.current().is_some());
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn renewal_is_half_way() {
    let ca = TestCa::new("mesh");
    let m = ca.material(A);
    let wait = ca::renew_in(&m, m.not_before);
    let life = m.not_after.duration_since(m.not_before).unwrap();
    assert_eq!(wait, life / 2);
    assert_eq!(
        ca::renew_in(&m, m.not_after),
        std::time::Duration::from_secs(1)
    );
}

#[test]
fn csrs_carry_the_spiffe_id() {
    let (csr, key) = ca::csr(A).unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(key.contains("PRIVATE KEY"));
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .unwrap();
    req.verify_signature().unwrap();
    let text = format!(
        "{:?}",
        req.requested_extensions().map(|e| e.collect::<Vec<_>>())
    );
    assert!(text.contains(A), "{text}");
}
