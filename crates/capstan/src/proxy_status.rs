//! `capstan proxy-status` and `capstan proxy-config`: istioctl's views of what the control
//! plane sent each proxy, read from `capstan discovery`'s debug endpoints.

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where the debug endpoints are.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Address of `capstan discovery`'s debug endpoints.
    #[arg(long = "debug-addr", default_value = "127.0.0.1:8080")]
    debug_addr: String,
}

/// Arguments of `capstan proxy-status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only proxies whose id contains this.
    proxy: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// What `proxy-config` shows.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Section {
    /// Clusters (CDS).
    Cluster,
    /// Listeners (LDS).
    Listener,
    /// Route configurations (RDS).
    Route,
    /// Endpoints (EDS).
    Endpoint,
}

/// Arguments of `capstan proxy-config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Which resources.
    section: Section,
    /// The proxy: its id or a unique part of it (`reviews-v1.default`).
    proxy: String,
    /// Print the JSON the server returned instead of a table.
    #[arg(short = 'o', long = "output", default_value = "table")]
    output: String,
    #[command(flatten)]
    target: Target,
}

/// A GET on the local debug port (plain HTTP/1.0, bounded in time and size).
fn get(addr: &str, path: &str) -> Result<Value> {
    let mut stream = TcpStream::connect(addr)
        .with_context(|| format!("connecting to capstan discovery's debug port at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = Vec::new();
    stream.take(256 * 1024 * 1024).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{}: {}",
            head.lines().next().unwrap_or_default(),
            body.trim()
        );
    }
    serde_json::from_str(body).context("the debug endpoint did not return JSON")
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("     ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

const TYPES: [(&str, &str); 4] = [
    ("CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
    (
        "LDS",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "EDS",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
    (
        "RDS",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
];

/// istioctl's sync states: SYNCED (ACKed what was sent), NOT SENT, STALE (sent, not ACKed),
/// and NACK (the proxy rejected the last response).
fn sync_state(t: Option<&Value>) -> String {
    let Some(t) = t else { return "NOT SENT".into() };
    let sent = t["last_sent_nonce"].as_str().unwrap_or_default();
    if let Some(nack) = t["last_nack"].as_object() {
        if nack.get("nonce").and_then(Value::as_str) == Some(sent) {
            return "NACK".into();
        }
    }
    match (
        t["last_sent_version"].as_str().unwrap_or_default(),
        t["last_acked_version"].as_str().unwrap_or_default(),
    ) {
        ("", _) => "NOT SENT".into(),
        (s, a) if s == a => "SYNCED".into(),
        _ => "STALE".into(),
    }
}

/// `capstan proxy-status`.
pub fn status(args: &StatusArgs) -> Result<()> {
    let syncz = get(&args.target.debug_addr, "/debug/syncz")?;
    let mut rows = Vec::new();
    for c in syncz["connections"].as_array().into_iter().flatten() {
        let id = c["proxy_id"].as_str().unwrap_or_default();
        if args.proxy.as_deref().is_some_and(|p| !id.contains(p)) {
            continue;
        }
        let mut row = vec![id.to_string()];
        for (_, url) in TYPES {
            row.push(sync_state(c["types"].get(url)));
        }
        row.push(if c["delta"].as_bool() == Some(true) {
            "Delta".into()
        } else {
            "SotW".into()
        });
        row.push(syncz["version"].to_string());
        rows.push(row);
    }
    print!(
        "{}",
        table(
            &[
                "NAME",
                "CDS",
                "LDS",
                "EDS",
                "RDS",
                "PROTOCOL",
                "PUSH VERSION"
            ],
            rows
        )
    );
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `capstan proxy-config`.
pub fn config(args: &ConfigArgs) -> Result<()> {
    let encoded: String = args
        .proxy
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let dump = get(
        &args.target.debug_addr,
        &format!("/debug/config_dump?proxyID={encoded}"),
    )?;
    let key = match args.section {
        Section::Cluster => "clusters",
        Section::Listener => "listeners",
        Section::Route => "routes",
        Section::Endpoint => "endpoints",
    };
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&dump[key])?);
        return Ok(());
    }
    let entries = dump[key].as_array().cloned().unwrap_or_default();
    let out = match args.section {
        Section::Cluster => table(
            &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
            entries
                .iter()
                .map(|e| {
                    let x = &e["summary"];
                    vec![
                        s(&x["service"]),
                        s(&x["port"]),
                        s(&x["subset"]),
                        s(&x["direction"]),
                        s(&x["type"]),
                    ]
                })
                .collect(),
        ),
        Section::Listener => table(
            &["NAME", "ADDRESS", "PORT", "CHAINS"],
            entries
                .iter()
                .map(|e| {
                    let x = &e["summary"];
                    vec![
                        s(&e["name"]),
                        s(&x["address"]),
                        s(&x["port"]),
                        x["filter_chains"]
                            .as_array()
                            .map_or(0, Vec::len)
                            .to_string(),
                    ]
                })
                .collect(),
        ),
        Section::Route => table(
            &["NAME", "VIRTUAL HOST", "DOMAINS", "MATCH", "DESTINATION"],
            entries
                .iter()
                .flat_map(|e| {
                    let name = s(&e["name"]);
                    e["summary"]["virtual_hosts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(move |vh| {
                            let (name, vh_name) = (name.clone(), s(&vh["name"]));
                            let domains = vh["domains"]
                                .as_array()
                                .map(|d| d.iter().map(s).collect::<Vec<_>>().join(","))
                                .unwrap_or_default();
                            vh["routes"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .map(move |r| {
                                    vec![
                                        name.clone(),
                                        vh_name.clone(),
                                        domains.clone(),
                                        s(&r["match"]),
                                        s(&r["to"]),
                                    ]
                                })
                        })
                })
                .collect(),
        ),
        Section::Endpoint => table(
            &["ENDPOINT", "STATUS", "LOCALITY", "CLUSTER"],
            entries
                .iter()
                .flat_map(|e| {
                    let cluster = s(&e["name"]);
                    e["summary"]["endpoints"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |ep| {
                            vec![
                                s(&ep["endpoint"]),
                                s(&ep["status"]),
                                s(&ep["locality"]),
                                cluster.clone(),
                            ]
                        })
                })
                .collect(),
        ),
    };
    print!("{out}");
    Ok(())
}
