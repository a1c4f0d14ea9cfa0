//! `capstan discovery --cacerts DIR` reloads its plugged-in CA when the files change
//! (istiod's `AUTO_RELOAD_PLUGIN_CERTS`), on loopback without Kubernetes:
//!
//! - a new root added to `root-cert.pem` is in the next `CreateCertificate` response (its last
//!   entry, the trust bundle), while the old intermediate keeps signing;
//! - an invalid set is refused with the file named, and the CA keeps signing;
//! - a one-step switch to an intermediate of a new root signs under it at once, re-issues the
//!   TLS port's certificate, keeps the old root in the bundle (a certificate issued under it
//!   still authenticates) until the longest certificate lifetime has passed, then drops it.

mod ca_support;

use anyhow::{ensure, Context, Result};
use ca_support::*;
use rustls_pki_types::CertificateDer;
use std::time::{Duration, Instant};

const TOKENS: &str = "token-default default reviews\n";

/// The trust bundle a response ends with, as DER.
fn bundle(chain: &[String]) -> Result<Vec<CertificateDer<'static>>> {
    certs(chain.last().context("an empty chain")?)
}

/// The leaf and intermediates of a response, as DER.
fn issued(chain: &[String]) -> Result<Vec<CertificateDer<'static>>> {
    Ok(chain[..chain.len() - 1]
        .iter()
        .map(|p| certs(p))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugged_in_cacerts_are_reloaded_through_a_root_rotation() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (old_root, new_root) = (TestCa::root("old root")?, TestCa::root("new root")?);
    let (old_ca, new_ca) = (
        old_root.intermediate("old intermediate")?,
        new_root.intermediate("new intermediate")?,
    );
    let cacerts = dir.join("cacerts");
    write_cacerts(&cacerts, &old_ca, &old_root, &old_root.pem)?;
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(dir.join("registry.yaml"), "services: []\n")?;
    std::fs::write(dir.join("tokens"), TOKENS)?;
    let path = |p: &str| dir.join(p).display().to_string();
    let server = Discovery::start(
        dir,
        "discovery",
        &[
            "--config-dir",
            &path("config"),
            "--registry-file",
            &path("registry.yaml"),
            "--cacerts",
            &path("cacerts"),
            "--ca-token-file",
            &path("tokens"),
            // The old root is kept 4 s after the last certificate issued under it.
            "--workload-cert-ttl",
            "4s",
            "--max-workload-cert-ttl",
            "4s",
        ],
    )?;
    let both = format!("{}{}", old_root.pem, new_root.pem);
    let channel = server.tls_channel(&both, None).await?;
    let sign = || create_certificate(channel.clone(), Some("token-default"));
    let (chain, _) = sign().await.with_context(|| server.tail())?;
    ensure!(bundle(&chain)? == std::slice::from_ref(&old_root.der));

    // A new root next to the old one: in the bundle at once, the old intermediate signing.
    put_cacert(&cacerts, "root-cert.pem", &both)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let chain = loop {
        let (chain, _) = sign().await?;
        if bundle(&chain)?.len() == 2 {
            break chain;
        }
        ensure!(Instant::now() < deadline, "no reload:\n{}", server.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(bundle(&chain)? == [old_root.der.clone(), new_root.der.clone()]);
    ensure!(chains_to(&issued(&chain)?, &old_root));
    let (old_chain, old_key) = sign().await?;

    // An invalid set (the new intermediate with the old key) is refused; signing goes on.
    put_cacert(&cacerts, "ca-cert.pem", &new_ca.pem)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.tail().contains("refused the changed cacerts") {
        ensure!(Instant::now() < deadline, "no refusal:\n{}", server.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        server
            .tail()
            .contains("ca-key.pem: private key does not match"),
        "the refusal names the file:\n{}",
        server.tail()
    );
    let (chain, _) = sign().await?;
    ensure!(chains_to(&issued(&chain)?, &old_root));

    // One step to the new root: new intermediate, only the new root listed. (The files
    // change one by one; the sets in between may load too: they are valid.)
    write_cacerts(&cacerts, &new_ca, &new_root, &new_root.pem)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (chain, _) = sign().await?;
        // The old root, no longer listed, is retained after the new one.
        if chains_to(&issued(&chain)?, &new_root)
            && bundle(&chain)? == [new_root.der.clone(), old_root.der.clone()]
        {
            break;
        }
        ensure!(Instant::now() < deadline, "no switch:\n{}", server.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let switched = Instant::now();
    // The TLS port now serves a certificate of the new intermediate: a client trusting the
    // new root alone connects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let only_new = server.tls_channel(&new_root.pem, None).await;
        if let Ok(channel) = only_new {
            if create_certificate(channel, Some("token-default"))
                .await
                .is_ok()
            {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the serving certificate was not re-issued:\n{}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A certificate issued under the old root is still a credential.
    let old_pem = old_chain[..old_chain.len() - 1].concat();
    let mtls = server
        .tls_channel(&both, Some((&old_pem, &old_key)))
        .await?;
    delta_clusters(mtls, None, &node_id("reviews-1", "default"))
        .await
        .context("a client certificate issued under the retained root")?;

    // 4 s after the switch, every certificate of the old root has expired: it leaves.
    let deadline = switched + Duration::from_secs(15);
    loop {
        let (chain, _) = sign().await?;
        if bundle(&chain)? == std::slice::from_ref(&new_root.der) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the old root is still in the bundle:\n{}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        switched.elapsed() >= Duration::from_secs(3),
        "the old root left after {:?}, before the certificates issued under it expired",
        switched.elapsed()
    );
    Ok(())
}
