//! `/metrics` parity with istiod: Istio's Grafana dashboards and Kiali query istiod's metric
//! families by name, type and labels, so Capstan must expose the same. istiod
//! (`pilot-discovery` at the pinned Istio version) and `capstan discovery` watch one private
//! kube-apiserver holding a Service, a VirtualService and a DestinationRule; the same Delta ADS
//! sidecar client connects to each (CDS and LDS, ACKing clusters and NACKing listeners), both
//! objects are patched once, and both scrapes are compared family by family:
//!
//! - every family istiod exposes (less Go's runtime families) is exposed by Capstan with the
//!   same type and label names, or listed with its reason under "Metrics not exposed" in
//!   docs/compatibility.md (read from the doc, so the doc and this test cannot drift);
//! - every `pilot_*` family Capstan exposes is one istiod exposes;
//! - where both see the same thing (the client's Istio version, its rejects, the types sent),
//!   the label values are equal too.

mod discovery_support;

use anyhow::{bail, ensure, Context, Result};
use capstan_e2e::istiod::Istiod;
use capstan_e2e::private_kube::PrivateKube;
use discovery_support::Discovery;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const NODE_ID: &str = "sidecar~10.9.0.1~app-0.demo~demo.svc.cluster.local";

/// Families that appear with their first event, which timing may give one server and not the
/// other in this run (a response answered after the next one of its type was sent).
const EVENT_ONLY: [&str; 1] = ["pilot_xds_expired_nonce"];

/// Families whose label values must be equal on both: what the same client sees of each.
const SAME_SERIES: [&str; 6] = [
    "pilot_xds",
    "pilot_xds_lds_reject",
    "pilot_total_xds_rejects",
    "pilot_xds_pushes",
    "pilot_xds_push_time",
    "pilot_xds_config_size_bytes",
];

const CONFIG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo, labels: {app: app}}
spec:
  selector: {app: app}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: demo}
spec:
  hosts: [app]
  http:
  - route:
    - destination: {host: app, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app, namespace: demo}
spec:
  host: app
  subsets: [{name: v1, labels: {version: v1}}]
"#;

/// One family of a scrape: its type and, per series, its labels (`le` left out).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    series: BTreeSet<Vec<(String, String)>>,
}

impl Family {
    fn label_names(&self) -> BTreeSet<&str> {
        self.series
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Splits `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(body: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(c);
                    }
                }
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value in {body}"),
            }
        };
        out.push((name.trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(out)
}

/// Parses the Prometheus text format: `# TYPE` lines and the samples' label names. A sample
/// `X_bucket`/`X_sum`/`X_count` belongs to histogram (or summary) `X`.
fn parse(text: &str) -> Result<BTreeMap<String, Family>> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("# TYPE without a type")?;
            families.entry(name.to_string()).or_default().kind = kind.trim().to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).context("a sample without a value")?;
        let sample = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|base| {
                families
                    .get(*base)
                    .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
            })
            .unwrap_or(sample);
        let mut labels = match line[name_end..].strip_prefix('{') {
            Some(body) => parse_labels(&body[..body.rfind('}').context("unclosed {")?])?,
            None => Vec::new(),
        };
        labels.retain(|(k, _)| k != "le");
        labels.sort();
        let f = families
            .get_mut(family)
            .with_context(|| format!("sample {sample} before its # TYPE"))?;
        f.series.insert(labels);
    }
    Ok(families)
}

/// The families docs/compatibility.md lists under "Metrics not exposed": the first
/// backquoted name of each table row of that section.
fn not_exposed() -> Result<BTreeSet<String>> {
    let path = capstan_e2e::repo_root().join("docs/compatibility.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let section = doc
        .split("\n### Metrics not exposed")
        .nth(1)
        .context("docs/compatibility.md has no '### Metrics not exposed' section")?;
    let section = section.split("\n#").next().unwrap_or(section);
    let names: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    ensure!(
        !names.is_empty(),
        "the 'Metrics not exposed' table is empty"
    );
    Ok(names)
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn node() -> Node {
    let fields = [
        ("NAMESPACE", "demo"),
        ("ISTIO_VERSION", "1.28.0"),
        ("CLUSTER_ID", "Kubernetes"),
    ];
    Node {
        id: NODE_ID.into(),
        metadata: Some(Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), string(v)))
                .collect(),
        }),
        ..Node::default()
    }
}

/// Responses received per type URL.
type Received = Arc<Mutex<BTreeMap<String, usize>>>;

/// A Delta ADS sidecar subscribed to CDS and LDS that ACKs every cluster response and NACKs
/// every listener response (`INVALID_ARGUMENT`), so the listener reject is always current.
async fn sidecar(port: u16) -> Result<(Received, tokio::task::JoinHandle<()>)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    for (type_url, node) in [(CLUSTER, Some(node())), (LISTENER, None)] {
        tx.send(DeltaDiscoveryRequest {
            node,
            type_url: type_url.into(),
            ..DeltaDiscoveryRequest::default()
        })?;
    }
    let mut stream = client
        .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let received: Received = Arc::default();
    let seen = received.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let error_detail = (resp.type_url == LISTENER).then(|| RpcStatus {
                code: 3,
                message: "this client rejects every listener".into(),
                ..RpcStatus::default()
            });
            let reply = DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail,
                ..DeltaDiscoveryRequest::default()
            };
            *seen.lock().unwrap().entry(resp.type_url).or_default() += 1;
            if tx.send(reply).is_err() {
                return;
            }
        }
    });
    Ok((received, task))
}

fn count(received: &Received, type_url: &str) -> usize {
    received.lock().unwrap().get(type_url).copied().unwrap_or(0)
}

/// The total of the responses received, to see the stream go quiet.
fn total(received: &Received) -> usize {
    received.lock().unwrap().values().sum()
}

fn scrape(port: u16) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let resp = capstan_e2e::curl("GET", &url, None, Duration::from_secs(10))?;
    ensure!(resp.status == 200, "GET {url}: {}", resp.status);
    Ok(resp.body)
}

/// Polls (bounded) until `ok` holds for both scrapes.
async fn until_both(
    what: &str,
    ports: [u16; 2],
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let texts = [scrape(ports[0])?, scrape(ports[1])?];
        if texts.iter().all(|t| ok(t)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing: Vec<&str> = ["istiod", "capstan"]
                .into_iter()
                .zip(&texts)
                .filter(|(_, t)| !ok(t))
                .map(|(n, _)| n)
                .collect();
            bail!("{what}: not seen on {missing:?} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls (bounded) until `ok` holds.
async fn until(what: &str, within: Duration, ok: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !ok() {
        ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits (bounded) until no response arrived for a second.
async fn until_quiet(received: &Received) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = total(received);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total(received);
        if now == last {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the server kept sending for 30 s"
        );
        last = now;
    }
}

/// Go's runtime families, which only a Go process has.
fn is_go_runtime(name: &str) -> bool {
    name.starts_with("go_") || name.starts_with("process_")
}

/// Every difference between the two scrapes, one line each.
fn differences(
    istiod: &BTreeMap<String, Family>,
    capstan: &BTreeMap<String, Family>,
    not_exposed: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, theirs) in istiod.iter().filter(|(n, _)| !is_go_runtime(n)) {
        match capstan.get(name) {
            Some(ours) => {
                if ours.kind != theirs.kind {
                    out.push(format!(
                        "{name}: type {} (istiod: {})",
                        ours.kind, theirs.kind
                    ));
                }
                if ours.label_names() != theirs.label_names() {
                    out.push(format!(
                        "{name}: labels {:?} (istiod: {:?})",
                        ours.label_names(),
                        theirs.label_names()
                    ));
                }
                if SAME_SERIES.contains(&name.as_str()) && ours.series != theirs.series {
                    out.push(format!(
                        "{name}: series {:?} (istiod: {:?})",
                        ours.series, theirs.series
                    ));
                }
            }
            None if not_exposed.contains(name) || EVENT_ONLY.contains(&name.as_str()) => {}
            None => out.push(format!(
                "{name} ({}): istiod exposes it; Capstan neither does nor lists it under \
                 'Metrics not exposed' in docs/compatibility.md",
                theirs.kind
            )),
        }
    }
    for name in capstan.keys().filter(|n| n.starts_with("pilot_")) {
        if !istiod.contains_key(name) && !EVENT_ONLY.contains(&name.as_str()) {
            out.push(format!("{name}: Capstan exposes it, istiod does not"));
        }
        if istiod.contains_key(name) && not_exposed.contains(name) {
            out.push(format!(
                "{name}: exposed, yet listed under 'Metrics not exposed'"
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capstan_exposes_istiods_metric_families() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("metrics-parity")? else {
        return Ok(());
    };
    let not_exposed = not_exposed()?;
    let kube = PrivateKube::start("metrics-parity", &[])?;
    let istiod = Istiod::start(&kube, &ctx.scratch)?;
    kube.apply(CONFIG)?;
    let kubeconfig = kube.kubeconfig();
    let kubeconfig = kubeconfig.to_str().context("kubeconfig path")?;
    let capstan = Discovery::start(&ctx.scratch, "capstan", &["--kubeconfig", kubeconfig])?;
    let ports = [istiod.monitoring_port, capstan.monitoring_port];
    let logs = || format!("istiod:\n{}\ncapstan:\n{}", istiod.tail(), capstan.tail());

    // Both have the config before the sidecars connect.
    until_both(
        "pilot_virt_services 1",
        ports,
        Duration::from_secs(60),
        |t| t.lines().any(|l| l == "pilot_virt_services 1"),
    )
    .await
    .with_context(logs)?;
    let mut clients = Vec::new();
    for port in [istiod.grpc_port, capstan.xds_port] {
        let (received, task) = sidecar(port).await.with_context(logs)?;
        until(
            "the first CDS and LDS responses",
            Duration::from_secs(30),
            || count(&received, CLUSTER) >= 1 && count(&received, LISTENER) >= 1,
        )
        .await
        .with_context(logs)?;
        clients.push((received, task));
    }

    // One change to each: config events, push triggers, and (the clusters change) a push
    // whose responses converge.
    kube.kubectl(&[
        "-n", "demo", "patch", "virtualservice", "app", "--type", "merge", "-p",
        r#"{"spec":{"http":[{"timeout":"5s","route":[{"destination":{"host":"app","subset":"v1"}}]}]}}"#,
    ])?;
    kube.kubectl(&[
        "-n",
        "demo",
        "patch",
        "destinationrule",
        "app",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":10}}}}}"#,
    ])?;
    for (received, _) in &clients {
        until("the pushed CDS response", Duration::from_secs(30), || {
            count(received, CLUSTER) >= 2
        })
        .await
        .with_context(logs)?;
    }
    let updated = |t: &str| {
        ["VirtualService", "DestinationRule"].iter().all(|kind| {
            t.contains(&format!(
                "pilot_k8s_cfg_events{{event=\"update\",type=\"{kind}\"}}"
            ))
        }) && t.contains("pilot_proxy_convergence_time_count")
            && !t.contains("pilot_proxy_convergence_time_count 0")
    };
    until_both(
        "the updates, converged",
        ports,
        Duration::from_secs(30),
        updated,
    )
    .await
    .with_context(logs)?;
    for (received, _) in &clients {
        until_quiet(received).await.with_context(logs)?;
    }

    let texts = [scrape(ports[0])?, scrape(ports[1])?];
    let istiod_families = parse(&texts[0]).context("parsing istiod's scrape")?;
    let capstan_families = parse(&texts[1]).context("parsing Capstan's scrape")?;
    let diff = differences(&istiod_families, &capstan_families, &not_exposed);
    ensure!(
        diff.is_empty(),
        "/metrics differs from istiod's:\n  {}\n\nistiod's scrape:\n{}\n\nCapstan's scrape:\n{}",
        diff.join("\n  "),
        texts[0],
        texts[1]
    );
    let compared = istiod_families
        .keys()
        .filter(|n| capstan_families.contains_key(*n))
        .count();
    eprintln!(
        "metrics parity: {compared} of istiod's families compared, {} listed as not exposed",
        not_exposed.len()
    );
    for (_, task) in clients {
        task.abort();
    }
    Ok(())
}

#[test]
fn the_parser_reads_families_types_and_labels() {
    let text = "# HELP a_total x\n# TYPE h histogram\nh_bucket{type=\"cds\",le=\"0.1\"} 1\nh_bucket{type=\"cds\",le=\"+Inf\"} 1\nh_sum{type=\"cds\"} 0.1\nh_count{type=\"cds\"} 1\n# TYPE c counter\nc{err=\"a,\\\"b\",node=\"x\"} 2\n# TYPE g gauge\ng 3\n";
    let f = parse(text).unwrap();
    assert_eq!(f["h"].kind, "histogram");
    assert_eq!(f["h"].label_names(), BTreeSet::from(["type"]));
    assert_eq!(f["c"].kind, "counter");
    assert_eq!(
        f["c"].series.iter().next().unwrap(),
        &vec![
            ("err".to_string(), "a,\"b".to_string()),
            ("node".to_string(), "x".to_string())
        ]
    );
    assert!(f["g"].label_names().is_empty());
    assert!(parse("x 1\n").is_err(), "a sample needs its # TYPE");
}
