//! The CA service over real TLS on 127.0.0.1, as istiod serves it on 15012: the server uses
//! a serving certificate the CA issued for itself and asks for (optional) client certificates.
//! A workload holding a CA-issued certificate renews it; a caller without credentials is
//! refused; bad requests get precise status codes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use capstan_ca::{
    Authenticator, CaOptions, CaService, CertificateAuthority, ClientCertAuthenticator, Identity,
};
use capstan_ca_proto::{certificate_request, CertificateClient, IMPERSONATED_IDENTITY};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const SERVER_NAME: &str = "istiod.istio-system.svc";

fn new_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM");
    (key, csr)
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

struct Harness {
    ca: Arc<CertificateAuthority>,
    port: u16,
    _server: tokio::task::JoinHandle<()>,
}

async fn start() -> Result<Harness> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cacerts-ec-pkcs8");
    let ca = Arc::new(CertificateAuthority::from_cacerts_dir(
        &dir,
        CaOptions::default(),
    )?);
    let serving =
        ca.issue_serving_certificate(&[SERVER_NAME.to_owned()], None, Duration::from_secs(3600))?;
    let authenticators: Vec<Arc<dyn Authenticator>> =
        vec![Arc::new(ClientCertAuthenticator::for_ca(&ca))];
    let service = CaService::new(ca.clone(), authenticators);
    let tls = ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &serving.cert_chain_pem,
            &serving.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(ca.root_cert_pem()))
        // A workload's first request has no certificate yet (it uses a token).
        .client_auth_optional(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = Server::builder()
        .tls_config(tls)?
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("CA server failed: {e}");
        }
    });
    Ok(Harness {
        ca,
        port,
        _server: server,
    })
}

impl Harness {
    async fn client(
        &self,
        identity: Option<(String, String)>,
    ) -> Result<CertificateClient<Channel>> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.root_cert_pem()))
            .domain_name(SERVER_NAME);
        if let Some((chain, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(chain, key));
        }
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", self.port))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .context("connecting to the CA")?;
        Ok(CertificateClient::new(channel))
    }

    /// A client certificate (chain without the root) and key for `id`, issued by the CA.
    fn workload_credentials(&self, id: &Identity) -> Result<(String, String)> {
        let (key, csr) = new_csr();
        let chain = self.ca.sign(&csr, std::slice::from_ref(id), 3600)?;
        Ok((chain[..chain.len() - 1].concat(), key.serialize_pem()))
    }
}

#[tokio::test]
async fn workload_renews_with_its_certificate_over_mtls() -> Result<()> {
    let h = start().await?;
    let me = Identity::new("cluster.local", "bookinfo", "reviews")?;
    let mut client = h.client(Some(h.workload_credentials(&me)?)).await?;

    let (_, csr) = new_csr();
    let response = client
        .create_certificate(certificate_request(csr, 1800, None)?)
        .await?
        .into_inner();
    let chain = response.cert_chain;
    assert_eq!(chain.len(), 4, "leaf, CA, intermediate, root");
    assert_eq!(chain.last().map(String::as_str), Some(h.ca.root_cert_pem()));

    let leaf = certs(&chain[0]).remove(0);
    let (_, parsed) = X509Certificate::from_der(&leaf)?;
    let uris: Vec<String> = parsed
        .subject_alternative_name()?
        .context("SAN")?
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![me.to_uri()]);
    let v = parsed.validity();
    assert_eq!(
        v.not_after.timestamp() - v.not_before.timestamp(),
        1800 + 120
    );

    // The leaf verifies against the root the client trusts, through the returned chain.
    let roots = certs(chain.last().context("root")?);
    let anchors = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<_> = chain[1..chain.len() - 1]
        .iter()
        .flat_map(|p| certs(p))
        .collect();
    webpki::EndEntityCert::try_from(&leaf)?.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    Ok(())
}

#[tokio::test]
async fn caller_without_credentials_is_unauthenticated() -> Result<()> {
    let h = start().await?;
    let mut client = h.client(None).await?;
    let status = client
        .create_certificate(certificate_request(new_csr().1, 0, None)?)
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("no client certificate presented"),
        "{status:?}"
    );
    // A bearer token nobody checks does not help either.
    let status = client
        .create_certificate(certificate_request(new_csr().1, 0, Some("token"))?)
        .await
        .expect_err("no token authenticator");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn certificate_of_another_ca_fails_the_handshake() -> Result<()> {
    let h = start().await?;
    let other = CertificateAuthority::generate_self_signed(CaOptions::default())?.0;
    let (key, csr) = new_csr();
    let me = Identity::new("cluster.local", "bookinfo", "reviews")?;
    let chain = other.sign(&csr, &[me], 3600)?;
    let result = async {
        let mut client = h
            .client(Some((chain[0].clone(), key.serialize_pem())))
            .await?;
        client
            .create_certificate(certificate_request(new_csr().1, 0, None)?)
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    let err = format!(
        "{:#}",
        result.expect_err("the server does not trust the other CA")
    );
    assert!(
        err.contains("UnknownCA"),
        "refused, but not by the TLS handshake: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_precise_codes() -> Result<()> {
    let h = start().await?;
    let me = Identity::new("cluster.local", "bookinfo", "reviews")?;
    let mut client = h.client(Some(h.workload_credentials(&me)?)).await?;

    let cases = [
        (
            "garbage CSR",
            "not a csr".to_owned(),
            0,
            tonic::Code::InvalidArgument,
            "CSR is not PEM",
        ),
        (
            "negative TTL",
            new_csr().1,
            -5,
            tonic::Code::InvalidArgument,
            "negative",
        ),
    ];
    for (name, csr, ttl, code, message) in cases {
        let status = client
            .create_certificate(certificate_request(csr, ttl, None)?)
            .await
            .expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().contains(message), "{name}: {status:?}");
    }

    let mut request = certificate_request(new_csr().1, 0, None)?;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        IMPERSONATED_IDENTITY.to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(
                "spiffe://cluster.local/ns/kube-system/sa/admin".into(),
            )),
        },
    );
    request.get_mut().metadata = Some(prost_types::Struct { fields });
    let status = client
        .create_certificate(request)
        .await
        .expect_err("impersonation");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("impersonation"), "{status:?}");
    Ok(())
}
