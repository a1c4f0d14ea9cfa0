//! The certificate authority of `capstan discovery` (istiod's Citadel): where its key material
//! comes from, and who may ask it for certificates and for xDS on the TLS port.
//!
//! - `--cacerts DIR`: a plugged-in intermediate (Istio's `cacerts` secret layout), reloaded
//!   when its files change (istiod's `AUTO_RELOAD_PLUGIN_CERTS`), root rotations included;
//! - `--ca-dir DIR`: a self-signed root generated at first start and kept in DIR;
//! - neither, with Kubernetes: a self-signed root kept in the Secret `istio-ca-secret` of the
//!   control plane's namespace, as istiod does;
//! - neither, without Kubernetes: no CA (the embedded file-only default).

use anyhow::{Context as _, Result};
use capstan_ca::{
    Authenticator, CaMetrics, CaOptions, CertificateAuthority, ClientCertAuthenticator, CurrentCa,
    DirStorage, KubeSecretStorage, StaticTokenAuthenticator, TokenReviewAuthenticator,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of the CA and the TLS xDS port.
#[derive(clap::Args, Debug)]
pub struct CaArgs {
    /// Self-signed CA kept in this directory (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`):
    /// generated at first start, reused afterwards.
    #[arg(long = "ca-dir", conflicts_with = "cacerts")]
    ca_dir: Option<PathBuf>,
    /// Plugged-in CA in Istio's `cacerts` layout (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`); Istio mounts it at /etc/cacerts. Reloaded when the
    /// files change; an invalid set is refused and the previous CA keeps signing.
    #[arg(long = "cacerts")]
    cacerts: Option<PathBuf>,
    /// SPIFFE trust domain of issued certificates (`meshConfig.trustDomain`).
    #[arg(long = "trust-domain", default_value = capstan_ca::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Lifetime of a workload certificate when the request asks for none
    /// (`DEFAULT_WORKLOAD_CERT_TTL`).
    #[arg(long = "workload-cert-ttl", default_value = "24h", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// Longest workload certificate lifetime granted (`MAX_WORKLOAD_CERT_TTL`).
    #[arg(long = "max-workload-cert-ttl", default_value = "90d", value_parser = parse_duration)]
    max_workload_cert_ttl: Duration,
    /// Development only: bearer tokens accepted by the CA and on the TLS xDS port, one
    /// `<token> <namespace> <service-account>` per line (like kube-apiserver's
    /// --token-auth-file).
    #[arg(long = "ca-token-file")]
    ca_token_file: Option<PathBuf>,
    /// The control plane's namespace: where `istio-ca-secret` lives (istiod's POD_NAMESPACE).
    #[arg(long = "system-namespace", default_value = "istio-system")]
    pub system_namespace: String,
    /// gRPC over TLS: xDS for authenticated proxies and the CA service (served only with a CA).
    #[arg(long = "secure-xds-addr", default_value = "0.0.0.0:15012")]
    pub secure_xds_addr: std::net::SocketAddr,
    /// Extra DNS name of the TLS serving certificate (repeatable); istiod's names and
    /// `localhost` are always included.
    #[arg(long = "tls-dns-name")]
    tls_dns_names: Vec<String>,
}

/// Parses `90s`, `30m`, `24h`, `90d`.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 90s, 30m, 24h or 90d"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A running CA and the ways callers authenticate to it (and to xDS on the TLS port).
pub struct Ca {
    /// The CA in force (a plugged-in one is replaced when its files change).
    pub authority: CurrentCa,
    pub authenticators: Vec<Arc<dyn Authenticator>>,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// Lifetime of the serving certificate (renewed at half-life).
    pub serving_ttl: Duration,
    /// What the CA service counts (istiod's `citadel_server_*` metrics).
    pub metrics: Arc<CaMetrics>,
}

/// What `/metrics` reads of the CA: the key material in force and the service's counters.
#[derive(Clone)]
pub(crate) struct CaObserved {
    pub authority: CurrentCa,
    pub metrics: Arc<CaMetrics>,
}

impl Ca {
    /// The part of the CA `/metrics` reads.
    pub(crate) fn observed(&self) -> CaObserved {
        CaObserved {
            authority: self.authority.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl CaArgs {
    fn options(&self) -> CaOptions {
        CaOptions {
            trust_domain: self.trust_domain.clone(),
            default_cert_ttl: self.workload_cert_ttl,
            max_cert_ttl: self.max_workload_cert_ttl,
            ..CaOptions::default()
        }
    }

    /// The serving certificate's DNS names: istiod's (what agents dial), `localhost`, and
    /// `--tls-dns-name`s, each once.
    fn dns_names(&self) -> Vec<String> {
        let ns = &self.system_namespace;
        let mut names = vec![
            format!("istiod.{ns}.svc"),
            format!("istiod.{ns}.svc.cluster.local"),
            "istiod".to_owned(),
            "localhost".to_owned(),
        ];
        for name in &self.tls_dns_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The CA these flags ask for, or `None` (no flag and no Kubernetes).
    pub async fn start(&self, kube: Option<&kube::Client>) -> Result<Option<Ca>> {
        let options = self.options();
        let fixed = |ca: CertificateAuthority| CurrentCa::fixed(Arc::new(ca));
        let authority = if let Some(dir) = &self.cacerts {
            let (current, keep_current) = capstan_ca::watch_cacerts(dir, options)
                .with_context(|| format!("loading the plugged-in CA from {}", dir.display()))?;
            tokio::spawn(keep_current);
            current
        } else if let Some(dir) = &self.ca_dir {
            fixed(
                CertificateAuthority::load_or_create_self_signed(&DirStorage::new(dir), options)
                    .await
                    .with_context(|| format!("the self-signed CA in {}", dir.display()))?,
            )
        } else if let Some(client) = kube {
            let storage = KubeSecretStorage::new(client.clone(), &self.system_namespace);
            fixed(
                CertificateAuthority::load_or_create_self_signed(&storage, options)
                    .await
                    .context("the self-signed CA in Kubernetes")?,
            )
        } else {
            anyhow::ensure!(
                self.ca_token_file.is_none(),
                "--ca-token-file needs a CA: give --ca-dir DIR, --cacerts DIR or --kubeconfig"
            );
            return Ok(None);
        };
        let mut authenticators: Vec<Arc<dyn Authenticator>> = vec![Arc::new(
            ClientCertAuthenticator::for_current(authority.clone()),
        )];
        if let Some(client) = kube {
            authenticators.push(Arc::new(TokenReviewAuthenticator::new(
                client.clone(),
                &self.trust_domain,
            )));
        }
        if let Some(path) = &self.ca_token_file {
            let tokens = StaticTokenAuthenticator::from_file(path, &self.trust_domain)?;
            tracing::warn!(path = %path.display(), tokens = tokens.len(),
                "accepting the static tokens of --ca-token-file: for development only");
            authenticators.push(Arc::new(tokens));
        }
        tracing::info!(ca = ?authority.get(), "certificate authority ready");
        Ok(Some(Ca {
            authority,
            authenticators,
            dns_names: self.dns_names(),
            serving_ttl: self.workload_cert_ttl,
            metrics: Arc::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("90s", Ok(90)),
            ("30m", Ok(1800)),
            ("24h", Ok(86_400)),
            ("90d", Ok(7_776_000)),
            ("5", Err("unit must be")),
            ("1w", Err("unit must be")),
            ("h", Err("not a duration")),
            ("99999999999999999999d", Err("not a duration")),
            ("9999999999999999d", Err("too long")),
        ];
        for (input, want) in cases {
            match (parse_duration(input), want) {
                (Ok(d), Ok(secs)) => assert_eq!(d.as_secs(), secs, "{input}"),
                (Err(e), Err(msg)) => assert!(e.contains(msg), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
