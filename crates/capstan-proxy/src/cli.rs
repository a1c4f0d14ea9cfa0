//! The proxy's command line: the flags of both `capstan-proxy` (the injected sidecar's binary)
//! and `capstan proxy` (the all-in-one binary's subcommand), and their wiring into [`crate::run`].
//! One [`Args`] serves both so the two cannot drift apart.

use crate::bootstrap::Bootstrap;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `capstan-proxy` and `capstan proxy`. Either `--bootstrap` (Envoy's v3 bootstrap as Istio's pilot-agent
/// writes it), or `--xds-address` with `--node-id` for quick local use, or `--xds-address` with
/// `--node-from-env` in an injected pod.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Envoy v3 bootstrap file (JSON or YAML): node, ADS config, the xDS cluster, admin address.
    #[arg(long, conflicts_with_all = ["xds_address", "node_id", "node_from_env"])]
    bootstrap: Option<PathBuf>,
    /// xDS server address (HOST:PORT) when there is no bootstrap file.
    #[arg(long)]
    xds_address: Option<String>,
    /// Node id when there is no bootstrap file, e.g.
    /// `sidecar~10.0.0.7~reviews-v1-0.default~default.svc.cluster.local`.
    #[arg(long, conflicts_with = "node_from_env")]
    node_id: Option<String>,
    /// Build the node as pilot-agent does in an injected pod, from the environment:
    /// `POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP` (required), `SERVICE_ACCOUNT`, every
    /// `ISTIO_META_*` (string) and `ISTIO_METAJSON_*` (JSON) variable as metadata.
    #[arg(long)]
    node_from_env: bool,
    /// DNS domain of the node id with `--node-from-env` (pilot-agent's `--domain`); default
    /// `<POD_NAMESPACE>.svc.cluster.local`.
    #[arg(long, requires = "node_from_env")]
    domain: Option<String>,
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
    let usage =
        "give --bootstrap FILE, or --xds-address HOST:PORT with --node-id ID or --node-from-env";
    let Some(xds) = &args.xds_address else {
        anyhow::bail!(usage);
    };
    let (id, cluster, mut metadata) = match (&args.node_id, args.node_from_env) {
        (Some(id), _) => (
            id.clone(),
            args.node_cluster.clone(),
            serde_json::Map::new(),
        ),
        (None, true) => {
            let node = node_from_env(std::env::vars(), args.domain.as_deref())?;
            let cluster = if args.node_cluster.is_empty() {
                node.cluster
            } else {
                args.node_cluster.clone()
            };
            (node.id, cluster, node.metadata)
        }
        (None, false) => anyhow::bail!(usage),
    };
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
        &id,
        &cluster,
        xds,
        !args.sotw,
        Some(args.admin_address),
        serde_json::Value::Object(metadata),
    )?)
}

/// The node pilot-agent gives Envoy in an injected pod.
#[derive(Debug)]
struct EnvNode {
    id: String,
    cluster: String,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// Builds the node from the injected sidecar's environment, as pilot-agent: id
/// `sidecar~<INSTANCE_IP>~<POD_NAME>.<POD_NAMESPACE>~<domain>`, cluster `<canonical name>.<ns>`,
/// metadata from `ISTIO_META_*` / `ISTIO_METAJSON_*` plus NAME, NAMESPACE, INSTANCE_IPS,
/// SERVICE_ACCOUNT and CLUSTER_ID (`Kubernetes` unless given).
fn node_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
    domain: Option<&str>,
) -> Result<EnvNode> {
    use serde_json::Value;
    let vars: std::collections::BTreeMap<String, String> = vars.into_iter().collect();
    let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    let missing: Vec<&str> = ["POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"]
        .into_iter()
        .filter(|k| get(k).is_none())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "--node-from-env: {} not set (the injected sidecar sets them from the Downward API)",
        missing.join(", ")
    );
    let (name, namespace, ip) = (
        get("POD_NAME").unwrap_or_default(),
        get("POD_NAMESPACE").unwrap_or_default(),
        get("INSTANCE_IP").unwrap_or_default(),
    );
    let mut metadata = serde_json::Map::new();
    for (k, v) in &vars {
        if let Some(key) = k.strip_prefix("ISTIO_METAJSON_") {
            let json: Value =
                serde_json::from_str(v).with_context(|| format!("{k}: not JSON: {v:?}"))?;
            metadata.insert(key.to_string(), json);
        } else if let Some(key) = k.strip_prefix("ISTIO_META_") {
            metadata.insert(key.to_string(), Value::String(v.clone()));
        }
    }
    metadata.insert("NAME".into(), Value::String(name.clone()));
    metadata.insert("NAMESPACE".into(), Value::String(namespace.clone()));
    metadata.insert("INSTANCE_IPS".into(), Value::String(ip.clone()));
    if let Some(sa) = get("SERVICE_ACCOUNT") {
        metadata.insert("SERVICE_ACCOUNT".into(), Value::String(sa));
    }
    metadata
        .entry("CLUSTER_ID")
        .or_insert_with(|| Value::String("Kubernetes".into()));
    let label = |k: &str| metadata.get("LABELS")?.get(k)?.as_str().map(str::to_string);
    let canonical = label("service.istio.io/canonical-name")
        .or_else(|| label("app"))
        .or_else(|| metadata.get("WORKLOAD_NAME")?.as_str().map(str::to_string));
    let cluster = match canonical {
        Some(c) => format!("{c}.{namespace}"),
        None => "istio-proxy".to_string(),
    };
    let domain = domain.map_or_else(|| format!("{namespace}.svc.cluster.local"), str::to_string);
    Ok(EnvNode {
        id: format!("sidecar~{ip}~{name}.{namespace}~{domain}"),
        cluster,
        metadata,
    })
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
        (Some(dir), _) => crate::run::IdentitySource::Files(dir.clone()),
        (None, Some(address)) => {
            let spiffe = crate::identity::spiffe_for_node(&bootstrap.node, &args.trust_domain)
                .map_err(anyhow::Error::msg)?;
            crate::run::IdentitySource::Ca(crate::identity::ca::CaOptions {
                address: address.clone(),
                server_name: args.ca_server_name.clone(),
                root_cert: args.ca_root_cert.clone(),
                token_file: args.ca_token_file.clone(),
                spiffe,
                ttl: args.workload_cert_ttl,
            })
        }
        (None, None) => crate::run::IdentitySource::None,
    };
    let xds_tls = args.xds_tls.then(|| crate::xds::XdsTls {
        root_cert: args.ca_root_cert.clone(),
        server_name: args.ca_server_name.clone(),
        token_file: args.ca_token_file.clone(),
    });
    runtime.block_on(crate::run::run(crate::run::Options {
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
    use super::{node_from_env, parse_duration};
    use std::time::Duration;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_from_the_injected_environment() {
        let env = vars(&[
            ("POD_NAME", "reviews-v1-6f9d5c7b8-x2kq9"),
            ("POD_NAMESPACE", "bookinfo"),
            ("INSTANCE_IP", "10.1.1.7"),
            ("SERVICE_ACCOUNT", "bookinfo-reviews"),
            ("ISTIO_META_CLUSTER_ID", "east"),
            ("ISTIO_META_WORKLOAD_NAME", "reviews-v1"),
            (
                "ISTIO_METAJSON_LABELS",
                r#"{"app":"reviews","version":"v1"}"#,
            ),
            ("HOME", "/"),
        ]);
        let node = node_from_env(env, None).expect("a node");
        assert_eq!(
            node.id,
            "sidecar~10.1.1.7~reviews-v1-6f9d5c7b8-x2kq9.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(node.cluster, "reviews.bookinfo");
        let m = serde_json::Value::Object(node.metadata);
        assert_eq!(m["NAME"], "reviews-v1-6f9d5c7b8-x2kq9");
        assert_eq!(m["NAMESPACE"], "bookinfo");
        assert_eq!(m["INSTANCE_IPS"], "10.1.1.7");
        assert_eq!(m["SERVICE_ACCOUNT"], "bookinfo-reviews");
        assert_eq!(m["CLUSTER_ID"], "east");
        assert_eq!(m["WORKLOAD_NAME"], "reviews-v1");
        assert_eq!(m["LABELS"]["version"], "v1");
        assert!(m.get("HOME").is_none());

        let minimal = vars(&[
            ("POD_NAME", "p"),
            ("POD_NAMESPACE", "ns"),
            ("INSTANCE_IP", "10.0.0.2"),
        ]);
        let node = node_from_env(minimal, Some("ns.svc.example.org")).expect("a node");
        assert_eq!(node.id, "sidecar~10.0.0.2~p.ns~ns.svc.example.org");
        assert_eq!(node.cluster, "istio-proxy");
        assert_eq!(node.metadata["CLUSTER_ID"], "Kubernetes");

        let err = node_from_env(vars(&[("POD_NAME", "p")]), None).expect_err("missing");
        assert!(
            err.to_string().contains("POD_NAMESPACE, INSTANCE_IP"),
            "{err}"
        );
        let bad = vars(&[
            ("POD_NAME", "p"),
            ("POD_NAMESPACE", "ns"),
            ("INSTANCE_IP", "10.0.0.2"),
            ("ISTIO_METAJSON_LABELS", "{app"),
        ]);
        assert!(node_from_env(bad, None).is_err());
    }

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
