//! `capstan proxy-status` and `capstan proxy-config` against a running `capstan discovery`
//! serving the Bookinfo example, with one sidecar connected over SotW ADS.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const SIDECAR: &str = "sidecar~10.244.0.30~reviews-v1-0.default~default.svc.cluster.local";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    capstan_e2e::free_port()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

fn capstan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .output()
        .expect("capstan runs")
}

#[tokio::test]
async fn proxy_status_and_proxy_config_show_what_a_sidecar_was_sent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (xds, debug, monitoring) = (free_port(), free_port(), free_port());
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["discovery", "--config-dir"])
            .arg(root.join("examples/bookinfo/istio"))
            .arg("--registry-file")
            .arg(root.join("examples/bookinfo/registry.yaml"))
            .args([
                "--xds-addr",
                &format!("127.0.0.1:{xds}"),
                "--debug-addr",
                &format!("127.0.0.1:{debug}"),
                "--monitoring-addr",
                &format!("127.0.0.1:{monitoring}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("capstan discovery starts"),
    );
    let debug_addr = format!("127.0.0.1:{debug}");
    // Wait (bounded) until the mesh is loaded and pushed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = capstan(&["proxy-status", "--debug-addr", &debug_addr]);
        if out.status.success()
            && !String::from_utf8_lossy(&out.stdout).contains("PUSH VERSION\n0")
            && capstan_e2e::wait_http_ok(monitoring, "/ready", Duration::from_millis(1)).is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "discovery did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}"))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: SIDECAR.into(),
            ..Node::default()
        }),
        type_url: CLUSTER.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("CDS in time")
        .expect("ok")
        .expect("a response");
    assert!(
        first.resources.len() > 5,
        "Bookinfo has clusters: {}",
        first.resources.len()
    );
    tx.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = capstan(&["proxy-status", "--debug-addr", &debug_addr]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(SIDECAR) && text.contains("SYNCED") {
            break text;
        }
        assert!(Instant::now() < deadline, "the ACK never showed: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let row = status
        .lines()
        .find(|l| l.contains(SIDECAR))
        .expect("a row for the sidecar");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..6],
        &["SYNCED", "NOT", "SENT", "NOT", "SENT"][..],
        "{status}"
    );

    let out = capstan(&[
        "proxy-config",
        "cluster",
        "reviews-v1-0.default",
        "--debug-addr",
        &debug_addr,
    ]);
    let clusters = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(clusters.starts_with("SERVICE FQDN"), "{clusters}");
    assert!(
        clusters
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "reviews.default.svc.cluster.local",
                    "9080",
                    "v2",
                    "outbound",
                    "EDS"
                ]),
        "{clusters}"
    );

    let out = capstan(&[
        "proxy-config",
        "route",
        "reviews-v1-0.default",
        "--debug-addr",
        &debug_addr,
    ]);
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        routes.contains("outbound|9080|v1|reviews.default.svc.cluster.local 80%")
            && routes.contains("outbound|9080|v3|reviews.default.svc.cluster.local 20%"),
        "{routes}"
    );

    let out = capstan(&[
        "proxy-config",
        "endpoint",
        "reviews-v1-0.default",
        "--debug-addr",
        &debug_addr,
    ]);
    let endpoints = String::from_utf8_lossy(&out.stdout);
    assert!(
        endpoints.lines().any(|l| l.starts_with("10.244.0.31:9080")
            && l.contains("HEALTHY")
            && l.contains("outbound|9080|v2|reviews")),
        "{endpoints}"
    );

    let metrics = http_get(monitoring, "/metrics");
    // istiod's names, types and labels (the full comparison is tests/metrics_parity.rs).
    for name in [
        "pilot_xds{version=\"\"} 1",
        "pilot_xds_pushes{type=\"cds\"} 1",
        "# TYPE pilot_xds_push_time histogram",
        "pilot_xds_push_time_count{type=\"cds\"} 1",
        "pilot_proxy_convergence_time_bucket{le=\"+Inf\"}",
        "pilot_pushcontext_init_seconds_count",
        "capstan_xds_cache_reads{type=\"hit\"}",
        "capstan_services 4",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        !metrics.contains("pilot_total_xds_rejects") && !metrics.contains("_total_total"),
        "no NACK, no reject series; no suffix added to counters:\n{metrics}"
    );
    assert!(http_get(monitoring, "/ready").contains("ready"));

    let out = capstan(&[
        "proxy-config",
        "cluster",
        "no-such-proxy",
        "--debug-addr",
        &debug_addr,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no connected proxy matches"));
}
