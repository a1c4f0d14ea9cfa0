//! MCP-over-xDS between two `capstan discovery` processes: A reads the Bookinfo config files,
//! B has only `--config-source xds://<A>` (and the same registry file). A proxy connected to
//! either gets the same LDS/RDS/CDS/EDS; B follows A's file edits; B keeps serving while A is
//! killed; a restarted A without one object leaves B with exactly A's new config.

mod discovery_support;

use anyhow::{bail, ensure, Context, Result};
use capstan_api::Kind;
use discovery_support::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const PROXY: &str = "sidecar~10.244.0.10~productpage-v1-0.default~default.svc.cluster.local";
const CONFIG_CLIENT: &str = "discovery-mcp-test";
const XDS: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
];
/// Bound of every wait for convergence.
const CONVERGE: Duration = Duration::from_secs(60);

/// Type URL → resource name → (version, packed body).
type Resources = BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>;

/// Everything of `types` that `node` gets from the server on `port`: one Delta stream, an
/// explicit wildcard subscription per type, the first response of each.
async fn fetch(port: u16, node: &str, types: &[&str]) -> Result<Resources> {
    let work = async {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await?
                .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(types.len());
        for (i, type_url) in types.iter().enumerate() {
            tx.send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| Node {
                    id: node.into(),
                    ..Node::default()
                }),
                type_url: type_url.to_string(),
                resource_names_subscribe: vec!["*".into()],
                ..DeltaDiscoveryRequest::default()
            })
            .await?;
        }
        let mut stream = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut out = Resources::new();
        while out.len() < types.len() {
            let Some(response) = stream.message().await? else {
                bail!(
                    "the stream ended after {} of {} types",
                    out.len(),
                    types.len()
                );
            };
            let resources = response
                .resources
                .into_iter()
                .map(|r| {
                    let body = r.resource.map(|a| a.value).unwrap_or_default();
                    (r.name, (r.version, body))
                })
                .collect();
            out.insert(response.type_url, resources);
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .context("no answer in 20 s")?
}

/// The proxy's xDS and every Istio config type, from the server on `port`.
async fn state(port: u16) -> Result<(Resources, Resources)> {
    let config_types: Vec<&str> = Kind::ALL
        .iter()
        .map(|k| capstan_config::mcp::type_url(*k))
        .collect();
    Ok((
        fetch(port, PROXY, &XDS).await?,
        fetch(port, CONFIG_CLIENT, &config_types).await?,
    ))
}

fn names(resources: &Resources, type_url: &str) -> Vec<String> {
    resources
        .get(type_url)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// Polls until `b` serves what `a` serves and `done` holds of it; returns that state.
async fn converged(
    a: u16,
    b: u16,
    done: impl Fn(&(Resources, Resources)) -> bool,
) -> Result<(Resources, Resources)> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let (from_a, from_b) = (state(a).await, state(b).await);
        if let (Ok(from_a), Ok(from_b)) = (&from_a, &from_b) {
            if from_a == from_b && done(from_a) {
                return Ok(from_b.clone());
            }
        }
        if Instant::now() > deadline {
            let describe = |s: &Result<(Resources, Resources)>| match s {
                Ok((xds, config)) => format!(
                    "clusters {:?}; config {:?}",
                    names(xds, XDS[0]),
                    config.iter().map(|(t, r)| (t, r.len())).collect::<Vec<_>>()
                ),
                Err(e) => format!("error: {e:#}"),
            };
            bail!(
                "B did not converge in {CONVERGE:?}\nA: {}\nB: {}",
                describe(&from_a),
                describe(&from_b)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// `text` without the YAML document that contains `marker`.
fn without_document(text: &str, marker: &str) -> String {
    text.split("\n---\n")
        .filter(|doc| !doc.contains(marker))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

const RATINGS_V1: &str = "outbound|9080|v1|ratings.default.svc.cluster.local";
const RATINGS_RULE: &str = "name: ratings\n  namespace: default\nspec:\n  host: ratings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capstan_fed_over_mcp_serves_what_the_file_fed_one_serves() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let config = scratch.path().join("config");
    copy_dir(&examples.join("istio"), &config)?;
    let registry = scratch.path().join("registry.yaml");
    std::fs::copy(examples.join("registry.yaml"), &registry)?;
    let (config_arg, registry_arg) = (config.display().to_string(), registry.display().to_string());
    let a_args = [
        "--config-dir",
        config_arg.as_str(),
        "--registry-file",
        registry_arg.as_str(),
    ];
    let a = Discovery::start(scratch.path(), "a", &a_args)?;
    let source = format!("xds://127.0.0.1:{}", a.xds_port);
    let b = Discovery::start(
        scratch.path(),
        "b",
        &[
            "--config-source",
            source.as_str(),
            "--registry-file",
            registry_arg.as_str(),
        ],
    )
    .context("B with only an MCP config source")?;

    // The same xDS, from config that went over MCP.
    let first = converged(a.xds_port, b.xds_port, |(xds, config)| {
        names(xds, XDS[0]).iter().any(|c| c == RATINGS_V1)
            && config.values().map(BTreeMap::len).sum::<usize>() == 12
    })
    .await
    .with_context(|| format!("A log:\n{}\nB log:\n{}", a.tail(), b.tail()))?;
    for type_url in XDS {
        ensure!(
            !first.0[type_url].is_empty(),
            "nothing of {type_url} served"
        );
    }

    // An edit of A's files reaches B's proxies.
    let routes = config.join("virtual-services.yaml");
    let text = std::fs::read_to_string(&routes)?;
    ensure!(text.contains("weight: 80"), "the example routes 80/20");
    std::fs::write(
        &routes,
        text.replace("weight: 80", "weight: 50")
            .replace("weight: 20", "weight: 50"),
    )?;
    let edited = converged(a.xds_port, b.xds_port, |(xds, _)| {
        xds[XDS[3]] != first.0[XDS[3]]
    })
    .await
    .with_context(|| format!("B log:\n{}", b.tail()))?;

    // A dies: B keeps serving the same.
    let ports = a.ports;
    drop(a); // SIGKILL
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(b.ready_status()? == 200, "B stays ready without its source");
    let (xds, config_b) = state(b.xds_port).await?;
    ensure!(
        (&xds, &config_b) == (&edited.0, &edited.1),
        "B changed while A was down"
    );

    // A comes back without the ratings DestinationRule: B follows, nothing left over twice.
    let rules = config.join("destination-rules.yaml");
    let text = std::fs::read_to_string(&rules)?;
    ensure!(
        text.contains(RATINGS_RULE),
        "the example has a ratings rule"
    );
    std::fs::write(&rules, without_document(&text, RATINGS_RULE))?;
    let a = Discovery::start_on(scratch.path(), "a-restarted", ports, &a_args)?;
    let after = converged(a.xds_port, b.xds_port, |(xds, _)| {
        !names(xds, XDS[0]).iter().any(|c| c == RATINGS_V1)
    })
    .await
    .with_context(|| format!("B log:\n{}", b.tail()))?;
    let dr = capstan_config::mcp::type_url(Kind::DestinationRule);
    ensure!(
        names(&after.1, dr) == ["default/details", "default/productpage", "default/reviews"],
        "B's DestinationRules: {:?}",
        names(&after.1, dr)
    );
    ensure!(after.1.values().map(BTreeMap::len).sum::<usize>() == 11);
    Ok(())
}
