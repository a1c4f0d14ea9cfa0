//! Bad credentials for the tests of `capstan discovery`'s CA, made from good ones: CSRs that
//! ask for what they may not have or are broken, and ServiceAccount tokens that are expired,
//! forged, for another audience or of a deleted account (real tokens from a [`PrivateKube`],
//! edited and signed again).

use anyhow::{Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use capstan_e2e::private_kube::PrivateKube;
use capstan_e2e::{run_ok, COMMAND_TIMEOUT};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// PEM text of one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A CSR whose subject names `cn` and which asks for the URI SAN `san`, if given.
pub fn csr_asking(cn: &str, san: Option<&str>) -> Result<rcgen::CertificateSigningRequest> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if let Some(san) = san {
        params.subject_alt_names = vec![rcgen::SanType::URI(san.try_into()?)];
    }
    Ok(params.serialize_request(&key)?)
}

/// A valid CSR with its subject changed after signing: the signature no longer verifies.
pub fn tampered_csr() -> Result<String> {
    let mut der = csr_asking("alpha-app", None)?.der().to_vec();
    let at = der
        .windows(5)
        .position(|w| w == b"alpha")
        .context("the subject in the CSR")?;
    der[at..at + 5].copy_from_slice(b"omega");
    Ok(pem("CERTIFICATE REQUEST", &der))
}

/// A CSR for an RSA key of 1024 bits (ring cannot make one; openssl can).
pub fn weak_rsa_csr(dir: &Path) -> Result<String> {
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=weak",
            ])
            .args(["-keyout", "weak.key"])
            .current_dir(dir),
        None,
        COMMAND_TIMEOUT,
    )
}

/// `token` with its claims edited by `edit`, signed RS256 by the RSA key in `key_pem_file`
/// (the header, with its `kid`, kept).
pub fn resign(
    token: &str,
    key_pem_file: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<String> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        anyhow::bail!("not a JWT: {token}");
    };
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims)?)?;
    edit(&mut claims);
    let signed = format!(
        "{header}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let key = match PrivateKeyDer::from_pem_slice(&std::fs::read(key_pem_file)?)? {
        PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => anyhow::bail!("{} is not an RSA key", key_pem_file.display()),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", key_pem_file.display()))?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| anyhow::anyhow!("signing the JWT"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The ServiceAccount tokens of the table, all real or made from real ones.
pub struct Tokens {
    /// `alpha/app`, audience `istio-ca`: the good caller.
    pub alpha: String,
    /// `beta/app`, audience `istio-ca`.
    pub beta: String,
    /// `alpha/app`, audience `other`.
    pub other_audience: String,
    /// `alpha/app`'s claims, expired an hour ago, signed with the API server's signing key.
    pub expired: String,
    /// `alpha/app`'s claims signed with another RSA key (the admin client's).
    pub forged: String,
    /// `alpha/doomed`, whose ServiceAccount was deleted after the token was issued.
    pub deleted_account: String,
}

impl Tokens {
    pub fn issue(kube: &PrivateKube) -> Result<Tokens> {
        for (ns, sa) in [("alpha", "app"), ("beta", "app"), ("alpha", "doomed")] {
            kube.kubectl(&["-n", ns, "create", "serviceaccount", sa])?;
        }
        let token = |ns: &str, sa: &str, audience: &str| -> Result<String> {
            let args = ["-n", ns, "create", "token", sa, "--audience", audience];
            Ok(kube
                .kubectl(&[&args[..], &["--duration", "10m"]].concat())?
                .trim()
                .to_owned())
        };
        let alpha = token("alpha", "app", "istio-ca")?;
        let deleted_account = token("alpha", "doomed", "istio-ca")?;
        kube.kubectl(&["-n", "alpha", "delete", "serviceaccount", "doomed"])?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let certs = kube.certs_dir();
        let expired = resign(&alpha, &certs.join("sa.key"), |claims| {
            claims["iat"] = (now - 7200).into();
            claims["nbf"] = (now - 7200).into();
            claims["exp"] = (now - 3600).into();
        })?;
        Ok(Tokens {
            beta: token("beta", "app", "istio-ca")?,
            other_audience: token("alpha", "app", "other")?,
            forged: resign(&alpha, &certs.join("admin.key"), |_| {})?,
            expired,
            deleted_account,
            alpha,
        })
    }
}
