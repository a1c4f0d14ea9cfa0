//! Signing: what goes into a workload certificate, what is refused, and the response chain.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authn::verify_chain;
use crate::pem::certificates;
use crate::test_support::{csr, hours, id, self_signed_ca, testdata};
use crate::{CaOptions, CertificateAuthority, CsrError, SignError};

fn der(pem: &str) -> CertificateDer<'static> {
    let mut certs = certificates(pem).unwrap();
    assert_eq!(certs.len(), 1, "one certificate per chain entry: {pem}");
    certs.remove(0)
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SAN present");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn lifetime(cert: &X509Certificate<'_>) -> Duration {
    let v = cert.validity();
    Duration::from_secs((v.not_after.timestamp() - v.not_before.timestamp()) as u64)
}

#[test]
fn leaf_names_the_caller_not_the_csr() {
    let ca = self_signed_ca();
    // The CSR asks for an admin identity: ignored.
    let (key, csr) = csr("spiffe://cluster.local/ns/kube-system/sa/admin");
    let caller = id("bookinfo", "reviews");
    let chain = ca.sign(&csr, std::slice::from_ref(&caller), 0).unwrap();
    assert_eq!(chain.len(), 2, "self-signed: leaf, root");
    assert_eq!(chain[1], ca.root_cert_pem());

    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(uris(&leaf), vec![caller.to_uri()]);
    assert!(leaf.subject().as_raw().len() <= 2, "empty subject");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.critical,
        "SAN is critical with an empty subject (RFC 5280)"
    );
    assert_eq!(
        leaf.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    assert!(!leaf.is_ca());
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    // Default TTL 24 h, plus the clock-skew backdating.
    assert_eq!(lifetime(&leaf), hours(24) + crate::sign::CLOCK_SKEW);
    verify_chain(&leaf_der, ca.intermediates(), ca.roots(), UnixTime::now()).unwrap();

    // Serials are random.
    let again = ca.sign(&csr, &[caller], 0).unwrap();
    let other_der = der(&again[0]);
    let (_, other) = X509Certificate::from_der(&other_der).unwrap();
    assert_ne!(leaf.serial, other.serial);
    assert!(leaf.raw_serial().len() >= 16);
}

#[test]
fn several_identities_become_several_sans() {
    let ca = self_signed_ca();
    let ids = [id("a", "x"), id("b", "y")];
    let chain = ca.sign(&csr("spiffe://x").1, &ids, 0).unwrap();
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(uris(&leaf), vec![ids[0].to_uri(), ids[1].to_uri()]);
}

#[test]
fn ttl_table() {
    let ca = self_signed_ca();
    let (_, csr) = csr("spiffe://x");
    let day = 24 * 3600;
    let cases = [
        (0, hours(24)),
        (1, Duration::from_secs(1)),
        (3600, hours(1)),
        (90 * day, hours(90 * 24)),
        (200 * day, hours(90 * 24)), // cut to MAX_WORKLOAD_CERT_TTL
        (i64::MAX, hours(90 * 24)),
    ];
    for (requested, expected) in cases {
        let chain = ca.sign(&csr, &[id("a", "b")], requested).unwrap();
        let leaf_der = der(&chain[0]);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        assert_eq!(
            lifetime(&leaf),
            expected + crate::sign::CLOCK_SKEW,
            "requested {requested}"
        );
    }
    assert!(matches!(
        ca.sign(&csr, &[id("a", "b")], -1),
        Err(SignError::NegativeTtl(-1))
    ));
}

#[test]
fn configured_max_ttl_applies() {
    let options = CaOptions {
        max_cert_ttl: hours(2),
        default_cert_ttl: hours(1),
        ..CaOptions::default()
    };
    let ca = CertificateAuthority::generate_self_signed(options)
        .unwrap()
        .0;
    let (_, csr) = csr("spiffe://x");
    for (requested, expected) in [(0, hours(1)), (3 * 3600, hours(2))] {
        let chain = ca.sign(&csr, &[id("a", "b")], requested).unwrap();
        let leaf_der = der(&chain[0]);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        assert_eq!(lifetime(&leaf), expected + crate::sign::CLOCK_SKEW);
    }
}

#[test]
fn unbounded_maximum_does_not_overflow() {
    let options = CaOptions {
        max_cert_ttl: Duration::MAX,
        ..CaOptions::default()
    };
    let ca = CertificateAuthority::generate_self_signed(options)
        .unwrap()
        .0;
    let chain = ca
        .sign(&csr("spiffe://x").1, &[id("a", "b")], i64::MAX)
        .unwrap();
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let ca_end = ca
        .ca_not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(leaf.validity().not_after.timestamp(), ca_end as i64);
    let too_long = CaOptions {
        self_signed_root_ttl: Duration::MAX,
        ..CaOptions::default()
    };
    assert!(CertificateAuthority::generate_self_signed(too_long).is_err());
}

#[test]
fn leaf_never_outlives_the_ca() {
    let options = CaOptions {
        self_signed_root_ttl: hours(1),
        ..CaOptions::default()
    };
    let ca = CertificateAuthority::generate_self_signed(options)
        .unwrap()
        .0;
    let chain = ca
        .sign(&csr("spiffe://x").1, &[id("a", "b")], 10 * 3600)
        .unwrap();
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let ca_not_after = ca
        .ca_not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(leaf.validity().not_after.timestamp() <= ca_not_after);
}

#[test]
fn bad_csrs_are_refused_with_clear_errors() {
    let ca = self_signed_ca();
    let (_, good) = csr("spiffe://x");
    let body = good
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(good.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let reencode = |bytes: Vec<u8>| pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
    let mut bad_signature = der.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x01;
    let mut trailing = der.clone();
    trailing.extend_from_slice(&[0, 0]);
    // The signed part says one key, the signature was made by another.
    let (_, other) = csr("spiffe://y");
    let other_der: Vec<u8> = rustls_pki_types::pem::PemObject::from_pem_slice(other.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let swapped = swap_signature(&der, &other_der);
    let cert_pem = ca.root_cert_pem().to_owned();

    type IsKind = fn(&CsrError) -> bool;
    let cases: Vec<(&str, String, IsKind, &str)> = vec![
        (
            "empty",
            String::new(),
            |e| matches!(e, CsrError::NotPem(_)),
            "empty",
        ),
        (
            "not PEM",
            "hello".into(),
            |e| matches!(e, CsrError::NotPem(_)),
            "BEGIN CERTIFICATE REQUEST",
        ),
        (
            "bare base64",
            body,
            |e| matches!(e, CsrError::NotPem(_)),
            "not PEM",
        ),
        (
            "a certificate",
            cert_pem,
            |e| matches!(e, CsrError::NotPem(_)),
            "not PEM",
        ),
        (
            "garbage DER",
            reencode(b"\x30\x03\x02\x01\x00garbage".to_vec()),
            |e| matches!(e, CsrError::Malformed(_)),
            "PKCS#10",
        ),
        (
            "random bytes",
            reencode(vec![0xff; 64]),
            |e| matches!(e, CsrError::Malformed(_)),
            "PKCS#10",
        ),
        (
            "truncated",
            reencode(der[..der.len() / 2].to_vec()),
            |e| matches!(e, CsrError::Malformed(_)),
            "PKCS#10",
        ),
        (
            "trailing bytes",
            reencode(trailing),
            |e| matches!(e, CsrError::Malformed(_)),
            "trailing",
        ),
        (
            "flipped signature bit",
            reencode(bad_signature),
            |e| matches!(e, CsrError::BadSignature(_)),
            "signature does not verify",
        ),
        (
            "signature of another key",
            reencode(swapped),
            |e| matches!(e, CsrError::BadSignature(_)),
            "signature does not verify",
        ),
        (
            // Made by `openssl req -new -newkey rsa:1024`: validly self-signed.
            "RSA key of 1024 bits",
            std::fs::read_to_string(testdata("csr-rsa1024.pem")).unwrap(),
            |e| matches!(e, CsrError::UnsupportedKey(_)),
            "RSA key of 1024 bits, at least 2048 required",
        ),
    ];
    for (name, input, kind, message) in cases {
        match ca.sign(&input, &[id("a", "b")], 0) {
            Err(SignError::Csr(e)) => {
                assert!(kind(&e), "{name}: wrong kind {e:?}");
                assert!(e.to_string().contains(message), "{name}: {e}");
            }
            other => panic!("{name}: expected a CSR error, got {other:?}"),
        }
        assert!(SignError::Csr(CsrError::NotPem(String::new())).is_caller_error());
    }
}

/// `a`'s request info with `b`'s signature: a well-formed CSR whose signature is not by its key.
fn swap_signature(a: &[u8], b: &[u8]) -> Vec<u8> {
    use x509_parser::certification_request::X509CertificationRequest;
    let (_, ra) = X509CertificationRequest::from_der(a).unwrap();
    let (_, rb) = X509CertificationRequest::from_der(b).unwrap();
    let info = ra.certification_request_info.raw;
    // signatureAlgorithm and signature of b: everything after b's request info.
    let b_info = rb.certification_request_info.raw;
    let b_body_start = b.windows(b_info.len()).position(|w| w == b_info).unwrap();
    let rest = &b[b_body_start + b_info.len()..];
    let mut body = info.to_vec();
    body.extend_from_slice(rest);
    let mut out = vec![0x30, 0x82];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn identities_must_exist_and_be_in_the_trust_domain() {
    let ca = self_signed_ca();
    let (_, csr) = csr("spiffe://x");
    assert!(matches!(ca.sign(&csr, &[], 0), Err(SignError::NoIdentity)));
    let foreign = crate::Identity::new("evil.example", "a", "b").unwrap();
    let err = ca.sign(&csr, &[foreign], 0).unwrap_err();
    assert!(
        matches!(err, SignError::ForeignTrustDomain { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("evil.example"), "{err}");
}

#[test]
fn plugged_ca_returns_leaf_intermediates_root_in_order() {
    for (dir, intermediates) in [
        ("cacerts-rsa-pkcs1", 1),
        ("cacerts-ec-sec1", 1),
        ("cacerts-ec-pkcs8", 2),
    ] {
        let path = testdata(dir);
        let ca = CertificateAuthority::from_cacerts_dir(&path, CaOptions::default()).unwrap();
        let chain = ca.sign(&csr("spiffe://x").1, &[id("a", "b")], 0).unwrap();
        assert_eq!(chain.len(), 1 + intermediates + 1, "{dir}");
        let file = |n: &str| std::fs::read_to_string(path.join(n)).unwrap();
        let file_certs = |n: &str| certificates(&file(n)).unwrap();
        // Then ca-cert.pem, the rest of cert-chain.pem without the root, and the root last.
        assert_eq!(der(&chain[1]), file_certs("ca-cert.pem")[0], "{dir}");
        let expected_chain = file_certs("cert-chain.pem");
        for (i, entry) in chain[1..=intermediates].iter().enumerate() {
            assert_eq!(der(entry), expected_chain[i], "{dir} entry {i}");
        }
        assert_eq!(
            certificates(chain.last().unwrap()).unwrap(),
            file_certs("root-cert.pem")
        );
        // The leaf verifies against the root through exactly the returned intermediates.
        let intermediates: Vec<_> = chain[1..chain.len() - 1].iter().map(|p| der(p)).collect();
        verify_chain(&der(&chain[0]), &intermediates, ca.roots(), UnixTime::now())
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        // And not without them.
        assert!(verify_chain(&der(&chain[0]), &[], ca.roots(), UnixTime::now()).is_err());
    }
}

#[test]
fn expired_ca_does_not_load() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = time::OffsetDateTime::now_utc() - Duration::from_secs(7200);
    params.not_after = time::OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let cert = params.self_signed(&key).unwrap();
    let secret = crate::CaSecret {
        ca_cert: cert.pem(),
        ca_key: key.serialize_pem(),
        cert_chain: String::new(),
        root_cert: cert.pem(),
    };
    let err = CertificateAuthority::from_secret(&secret, "test", CaOptions::default()).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn serving_certificate_for_istiod_names() {
    let ca =
        CertificateAuthority::from_cacerts_dir(&testdata("cacerts-ec-pkcs8"), CaOptions::default())
            .unwrap();
    let names = vec![
        "istiod.istio-system.svc".to_owned(),
        "istiod.istio-system.svc.cluster.local".to_owned(),
    ];
    let istiod = crate::Identity::new("cluster.local", "istio-system", "istiod").unwrap();
    let serving = ca
        .issue_serving_certificate(&names, Some(&istiod), hours(24 * 365))
        .unwrap();
    let certs = certificates(&serving.cert_chain_pem).unwrap();
    assert_eq!(certs.len(), 3, "leaf and the two intermediates, no root");
    let leaf = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
    let anchors: Vec<_> = ca
        .roots()
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap())
        .collect();
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &anchors,
        &certs[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    for name in &names {
        let server_name = rustls_pki_types::ServerName::try_from(name.as_str()).unwrap();
        leaf.verify_is_valid_for_subject_name(&server_name).unwrap();
    }
    // The key matches the leaf.
    let key = rcgen::KeyPair::from_pem(&serving.key_pem).unwrap();
    let (_, parsed) = X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        parsed.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );

    for bad in ["", "bad name.svc", "a..b", "ünïcode.svc"] {
        let err = ca
            .issue_serving_certificate(&[bad.to_owned()], None, hours(1))
            .unwrap_err();
        assert!(matches!(err, SignError::DnsName(_)), "{bad}: {err:?}");
    }
}

/// No single-byte corruption of a CSR makes signing panic, and none is accepted unless it
/// leaves the signed content and signature intact (e.g. a flip in an unused bit).
#[test]
fn corrupted_csrs_never_panic() {
    let ca = self_signed_ca();
    let (_, good) = csr("spiffe://x");
    let der: Vec<u8> = rustls_pki_types::pem::PemObject::from_pem_slice(good.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let mut accepted = 0;
    for i in 0..der.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = der.clone();
            bad[i] ^= mask;
            let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bad));
            if ca.sign(&pem, &[id("a", "b")], 0).is_ok() {
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 0, "corrupted CSRs were accepted");
}
