//! Service-account token authentication against the real kube-apiserver of the test harness
//! (tests/infra/up.sh starts it with --service-account-signing-key-file and -issuer, so the
//! TokenRequest and TokenReview APIs work): a token for audience istio-ca authenticates as the
//! service account's SPIFFE identity and gets a certificate; a token for another audience,
//! a garbage token and the token of a deleted service account do not.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use capstan_ca::{
    AuthError, Authenticator, CaOptions, CaService, Caller, CertificateAuthority,
    ClientCertAuthenticator, TokenReviewAuthenticator,
};
use capstan_ca_proto::certificate_request;
use capstan_e2e::context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

async fn kube_client(kubeconfig: &str) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?)
}

fn leaf_uris(pem: &str) -> Result<Vec<String>> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    Ok(cert
        .subject_alternative_name()?
        .context("SAN")?
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_through_token_review() -> Result<()> {
    let Some(ctx) = context("ca-token-review")? else {
        return Ok(());
    };
    ctx.kubectl(&["create", "serviceaccount", "reviews"])?;
    ctx.kubectl(&["create", "serviceaccount", "doomed"])?;
    let token = |sa: &str, audience: &str| -> Result<String> {
        Ok(ctx
            .kubectl(&[
                "create",
                "token",
                sa,
                "--audience",
                audience,
                "--duration",
                "10m",
            ])?
            .trim()
            .to_owned())
    };
    let istio_ca_token = token("reviews", "istio-ca")?;
    let other_audience_token = token("reviews", "some-other-audience")?;
    let doomed_token = token("doomed", "istio-ca")?;

    let client = kube_client(ctx.infra.var("KUBECONFIG")?).await?;
    let authn = TokenReviewAuthenticator::new(client, "cluster.local");

    let id = authn.review(&istio_ca_token).await?;
    let expected = format!("spiffe://cluster.local/ns/{}/sa/reviews", ctx.namespace);
    ensure!(id.to_uri() == expected, "got {id}, want {expected}");

    let refusals = [
        ("another audience", other_audience_token.as_str()),
        ("garbage", "not-a-jwt"),
        ("a JWT-shaped garbage", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
    ];
    for (name, t) in refusals {
        match authn.review(t).await {
            Err(AuthError::Rejected(reason)) => eprintln!("{name}: refused: {reason}"),
            other => anyhow::bail!("{name}: expected a rejection, got {other:?}"),
        }
    }
    // Tokens are bound to the service account object: deleting it revokes them (once the
    // API server's token-authentication cache, about 10 s, has let go of it).
    ensure!(authn.review(&doomed_token).await.is_ok());
    ctx.kubectl(&["delete", "serviceaccount", "doomed"])?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let after = authn.review(&doomed_token).await;
        if matches!(after, Err(AuthError::Rejected(_))) || tokio::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    ensure!(
        matches!(after, Err(AuthError::Rejected(_))),
        "token of a deleted service account still accepted after 30 s: {after:?}"
    );

    // Through the Authenticator interface: the bearer header, or nothing.
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {istio_ca_token}").parse()?);
    let caller = Caller {
        metadata: &metadata,
        peer_certificates: None,
    };
    ensure!(authn.authenticate(&caller).await? == vec![id.clone()]);
    let empty = tonic::metadata::MetadataMap::new();
    let nobody = Caller {
        metadata: &empty,
        peer_certificates: None,
    };
    ensure!(matches!(
        authn.authenticate(&nobody).await,
        Err(AuthError::Absent(_))
    ));

    // The whole service, as a workload's first request: token in, certificate out.
    let ca = Arc::new(CertificateAuthority::generate_self_signed(CaOptions::default())?.0);
    let authenticators: Vec<Arc<dyn Authenticator>> = vec![
        Arc::new(ClientCertAuthenticator::for_ca(&ca)),
        Arc::new(authn.clone()),
    ];
    let service = CaService::new(ca, authenticators);
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let chain = service
        .create_certificate(certificate_request(csr.clone(), 0, Some(&istio_ca_token))?)
        .await?
        .into_inner()
        .cert_chain;
    ensure!(leaf_uris(&chain[0])? == vec![expected]);
    let status = service
        .create_certificate(certificate_request(csr, 0, Some(&other_audience_token))?)
        .await
        .expect_err("wrong audience");
    ensure!(status.code() == tonic::Code::Unauthenticated, "{status:?}");
    ensure!(
        status
            .message()
            .contains("client certificate: no client certificate presented")
            && status
                .message()
                .contains("kubernetes token: token rejected"),
        "{status:?}"
    );
    Ok(())
}
