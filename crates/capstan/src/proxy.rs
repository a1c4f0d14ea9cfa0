//! `capstan proxy`: argument parsing and wiring for the bundled sidecar / gateway.

use anyhow::{Context, Result};
use capstan_proxy::bootstrap::Bootstrap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `capstan proxy`. Either `--bootstrap` (Envoy's v3 bootstrap as Istio's pilot-agent
/// writes it), or `--xds-address` with `--node-id` for quick local use.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Envoy v3 bootstrap file (JSON or YAML): node, ADS config, the xDS cluster, admin address.
    #[arg(long, conflicts_with_all = ["xds_address", "node_id"])]
    bootstrap: Option<PathBuf>,
    /// xDS server address (HOST:PORT) when there is no bootstrap file.
    #[arg(long, requires = "node_id")]
    xds_address: Option<String>,
    /// Node id when there is no bootstrap file, e.g.
    /// `sidecar~10.0.0.7~reviews-v1-0.default~default.svc.cluster.local`.
    #[arg(long)]
    node_id: Option<String>,
    /// Node cluster (Istio: `<app>.<namespace>`) when there is no bootstrap file.
    #[arg(long, default_value = "")]
    node_cluster: String,
    /// Node metadata KEY=VALUE (repeatable) when there is no bootstrap file; `LABELS` takes
    /// JSON, e.g. `LABELS={"app":"reviews"}`.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Use State-of-the-World ADS instead of Delta when there is no bootstrap file.
    #[arg(long)]
    sotw: bool,
    /// Admin address when there is no bootstrap file.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_address: SocketAddr,
    /// Istio's readiness endpoint (`/healthz/ready`), as the injected sidecar serves on
    /// 0.0.0.0:15021; unset: not served.
    #[arg(long)]
    readiness_address: Option<SocketAddr>,
    /// Worker threads (Envoy's `--concurrency`); 0: one per core.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// How long in-flight requests get after SIGTERM (e.g. `5s`, `500ms`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_time: Duration,
    /// Workload certificate files in Istio's `/etc/certs` layout (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`), re-read when they change.
    #[arg(long, conflicts_with = "ca_address")]
    cert_dir: Option<PathBuf>,
    /// The mesh CA (pilot-agent's `CA_ADDR`, istiod's 15012): the proxy generates its key,
    /// sends a CSR and renews at half-life.
    #[arg(long)]
    ca_address: Option<String>,
    /// Root certificate trusted for the CA's serving certificate (the mounted
    /// `istio-ca-root-cert` ConfigMap).
    #[arg(long, default_value = "/var/run/secrets/istio/root-cert.pem")]
    ca_root_cert: PathBuf,
    /// ServiceAccount token presented to the CA (audience `istio-ca`), re-read at each request.
    #[arg(long)]
    ca_token_file: Option<PathBuf>,
    /// Name expected on the CA's serving certificate.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    ca_server_name: String,
    /// Requested workload certificate lifetime (e.g. `24h`, `90s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// The xDS server is secured (istiod's 15012): TLS verified with `--ca-root-cert` for
    /// `--ca-server-name`, with the `--ca-token-file` token and the workload certificate.
    #[arg(long)]
    xds_tls: bool,
    /// Trust domain of the SPIFFE id asked for.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

fn bootstrap(args: &Args) -> Result<Bootstrap> {
    if let Some(path) = &args.bootstrap {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Bootstrap::parse(&text).with_context(|| format!("bootstrap {}", path.display()));
    }
    let (Some(xds), Some(id)) = (&args.xds_address, &args.node_id) else {
        anyhow::bail!("give --bootstrap FILE, or --xds-address HOST:PORT with --node-id ID");
    };
    let mut metadata = serde_json::Map::new();
    for kv in &args.metadata {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--metadata {kv:?}: expected KEY=VALUE"))?;
        // A JSON object or array (LABELS) is taken as JSON; anything else is a string.
        let value = match serde_json::from_str::<serde_json::Value>(v) {
            Ok(j @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => j,
            _ => serde_json::Value::String(v.to_string()),
        };
        metadata.insert(k.to_string(), value);
    }
    Ok(Bootstrap::from_parts(
        id,
        &args.node_cluster,
        xds,
        !args.sotw,
        Some(args.admin_address),
        serde_json::Value::Object(metadata),
    )?)
}

/// Runs the proxy until SIGTERM/SIGINT or `/quitquitquit`, then drains.
pub fn run(args: Args) -> Result<()> {
    let bootstrap = bootstrap(&args)?;
    // One worker is one event loop, as one Envoy worker or one HAProxy thread: a
    // current-thread runtime has no work-stealing queues or cross-thread wake-ups to pay for.
    let mut builder = if args.concurrency == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if args.concurrency > 1 {
        builder.worker_threads(args.concurrency);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let identity = match (&args.cert_dir, &args.ca_address) {
        (Some(dir), _) => capstan_proxy::run::IdentitySource::Files(dir.clone()),
        (None, Some(address)) => {
            let spiffe =
                capstan_proxy::identity::spiffe_for_node(&bootstrap.node, &args.trust_domain)
                    .map_err(anyhow::Error::msg)?;
            capstan_proxy::run::IdentitySource::Ca(capstan_proxy::identity::ca::CaOptions {
                address: address.clone(),
                server_name: args.ca_server_name.clone(),
                root_cert: args.ca_root_cert.clone(),
                token_file: args.ca_token_file.clone(),
                spiffe,
                ttl: args.workload_cert_ttl,
            })
        }
        (None, None) => capstan_proxy::run::IdentitySource::None,
    };
    let xds_tls = args.xds_tls.then(|| capstan_proxy::xds::XdsTls {
        root_cert: args.ca_root_cert.clone(),
        server_name: args.ca_server_name.clone(),
        token_file: args.ca_token_file.clone(),
    });
    runtime.block_on(capstan_proxy::run::run(capstan_proxy::run::Options {
        bootstrap,
        drain_time: args.drain_time,
        readiness: args.readiness_address,
        identity,
        xds_tls,
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
