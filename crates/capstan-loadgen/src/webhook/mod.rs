//! `capstan-loadgen webhook`: admission latency of a validating webhook (Capstan's or
//! istiod's `/validate`) under N concurrent keep-alive HTTPS connections, closed loop. Each
//! connection sends AdmissionReviews from a fixed mix of valid and invalid VirtualServices
//! and DestinationRules ([`reviews`]) and checks every verdict; after a warm-up on the same
//! connections, the measured phase times each review and reports p50/p90/p99/max and
//! requests/s, with the server's CPU-seconds (`--server-pid`) beside the load generator's own,
//! so a run shows whether the client was cheap next to the server.
//!
//! ```sh
//! capstan-loadgen webhook --url https://127.0.0.1:15017/validate --ca ca.crt \
//!     --concurrency 100 --requests 50000 --server-pid PID --label capstan
//! ```

mod client;
mod reviews;

use crate::stats;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `capstan-loadgen webhook`.
#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// The webhook, e.g. `https://127.0.0.1:15017/validate`.
    #[arg(long)]
    url: String,
    /// PEM file of the CA the server's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// The name the server's certificate must carry; default: the URL's host (e.g.
    /// `istiod.istio-system.svc` for a certificate made for the in-cluster Service).
    #[arg(long)]
    server_name: Option<String>,
    /// Connections, each sending one review at a time.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Measured requests, over all connections.
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// Requests sent on the same connections before the measured phase (not measured).
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Threads running the connections (each a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Longest wait for one answer (or TLS handshake).
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// The server's pid: its CPU-seconds over the measured phase and its peak RSS are
    /// reported beside the load generator's CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's name in the table and the results.
    #[arg(long, default_value = "server")]
    label: String,
    /// Append the run's figures as a JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// Where the webhook is.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Host as written in the URL (an IPv6 address keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// Reads an `https://` URL (port 443 when none is given).
fn parse_url(url: &str) -> Result<Target> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("{url:?}: admission webhooks are served over https://");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("{url:?} has no host"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok(Target {
        host: authority.host().to_string(),
        port: authority.port_u16().unwrap_or(443),
        path,
    })
}

/// Latency summary of the measured phase.
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub answered: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Summary {
            answered: samples.len(),
            p50_ms: ms(stats::quantile(&samples, 0.50)),
            p90_ms: ms(stats::quantile(&samples, 0.90)),
            p99_ms: ms(stats::quantile(&samples, 0.99)),
            max_ms: ms(samples.last().copied().unwrap_or_default()),
        }
    }
}

/// One run's figures (a JSON line of `--results`).
#[derive(Debug, serde::Serialize)]
struct WebhookResult {
    label: String,
    url: String,
    concurrency: usize,
    threads: usize,
    requests: usize,
    warmup: usize,
    /// Share of the mix a correct webhook denies.
    invalid_percent: f64,
    wall_secs: f64,
    requests_per_sec: f64,
    #[serde(flatten)]
    latency: Summary,
    errors: usize,
    wrong_verdicts: usize,
    server_cpu_secs: Option<f64>,
    client_cpu_secs: f64,
    server_peak_rss_mib: Option<f64>,
}

/// The table's header and separator.
const TABLE_HEAD: &str = "| server | requests | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | wrong verdicts | server CPU-s | client CPU-s |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

impl WebhookResult {
    fn row(&self) -> String {
        let cpu = |c: Option<f64>| c.map_or("—".to_string(), |c| format!("{c:.2}"));
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {:.2} |",
            self.label,
            self.requests,
            self.concurrency,
            self.requests_per_sec,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.errors,
            self.wrong_verdicts,
            cpu(self.server_cpu_secs),
            self.client_cpu_secs
        )
    }
}

/// Sends every review of the mix once and checks the verdict: a server that disagrees with
/// the mix would be measured on different work.
async fn check_verdicts(connector: &client::Connector, mix: &[reviews::Review]) -> Result<()> {
    let mut sender = connector.connect().await?;
    for review in mix {
        let (status, body) = connector
            .post(&mut sender, Bytes::from(review.body.clone()))
            .await?;
        if let Some(problem) = client::check(review, status, &body) {
            bail!("the webhook does not answer the mix as expected: {problem}");
        }
    }
    Ok(())
}

/// Runs the benchmark against one webhook and prints its row.
pub async fn run(args: WebhookArgs) -> Result<()> {
    if args.concurrency == 0 || args.requests == 0 || args.threads == 0 {
        bail!("--concurrency, --requests and --threads must be positive");
    }
    let target = parse_url(&args.url)?;
    let server_name = args.server_name.clone().unwrap_or_else(|| {
        target
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    });
    let connector = client::Connector::new(
        &target,
        &args.ca,
        &server_name,
        Duration::from_secs(args.timeout_secs),
    )?;
    let mix = reviews::mix();
    check_verdicts(&connector, &mix).await?;
    let invalid: usize = mix.iter().filter(|r| !r.allowed).map(|r| r.weight).sum();
    let total: usize = mix.iter().map(|r| r.weight).sum();
    let plan = Arc::new(client::Plan {
        connector,
        bodies: mix.iter().map(|r| Bytes::from(r.body.clone())).collect(),
        schedule: reviews::schedule(&mix),
        reviews: mix,
        warmup: args.warmup,
        requests: args.requests,
        barrier: tokio::sync::Barrier::new(args.concurrency + 1),
        warm_tickets: AtomicUsize::new(0),
        tickets: AtomicUsize::new(0),
    });

    let threads = args.threads.min(args.concurrency);
    let handles: Vec<std::thread::JoinHandle<Vec<client::Outcome>>> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            // Connections t, t + threads, ...: an even share each.
            let mine = (t..args.concurrency).step_by(threads).count();
            std::thread::Builder::new()
                .name(format!("webhook-{t}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the connections");
                    runtime.block_on(async move {
                        let workers = (0..mine).map(|_| tokio::spawn(client::worker(plan.clone())));
                        let mut outcomes = Vec::with_capacity(mine);
                        for w in futures::future::join_all(workers).await {
                            outcomes.push(w.unwrap_or_default());
                        }
                        outcomes
                    })
                })
                .expect("a thread for the connections")
        })
        .collect();

    plan.barrier.wait().await; // connected
    eprintln!(
        "{}: {} connections open; warming up ({} requests)",
        args.label, args.concurrency, args.warmup
    );
    plan.barrier.wait().await; // warmed up
    let own = std::process::id();
    let server_before = args.server_pid.and_then(stats::cpu_seconds);
    let client_before = stats::cpu_seconds(own).unwrap_or_default();
    let started = Instant::now();
    plan.barrier.wait().await; // go
    let outcomes: Vec<client::Outcome> = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
    .await?;
    let server_after = args.server_pid.and_then(stats::cpu_seconds);
    let client_cpu = stats::cpu_seconds(own).unwrap_or_default() - client_before;
    let finished = outcomes
        .iter()
        .filter_map(|o| o.finished)
        .max()
        .unwrap_or(started);
    let wall = (finished - started).as_secs_f64();
    let errors = outcomes.iter().map(|o| o.errors).sum();
    let wrong = outcomes.iter().map(|o| o.wrong).sum();
    if let Some(problem) = outcomes.iter().find_map(|o| o.first_problem.as_ref()) {
        eprintln!("{}: first problem: {problem}", args.label);
    }
    let samples: Vec<Duration> = outcomes.into_iter().flat_map(|o| o.samples).collect();
    let latency = Summary::of(samples);
    let result = WebhookResult {
        label: args.label.clone(),
        url: args.url.clone(),
        concurrency: args.concurrency,
        threads,
        requests: args.requests,
        warmup: args.warmup,
        invalid_percent: 100.0 * invalid as f64 / total.max(1) as f64,
        wall_secs: wall,
        requests_per_sec: latency.answered as f64 / wall.max(1e-9),
        latency,
        errors,
        wrong_verdicts: wrong,
        server_cpu_secs: server_before.zip(server_after).map(|(b, a)| a - b),
        client_cpu_secs: client_cpu,
        server_peak_rss_mib: args.server_pid.and_then(stats::peak_rss_mib),
    };
    println!("{TABLE_HEAD}\n{}", result.row());
    if let Some(server) = result.server_cpu_secs.filter(|s| *s > 0.0) {
        println!(
            "client CPU / server CPU: {:.2} ({} threads)",
            client_cpu / server,
            threads
        );
    }
    if let Some(path) = &args.results {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(&result)?)?;
    }
    if result.wrong_verdicts > 0 {
        bail!("{} answers had the wrong verdict", result.wrong_verdicts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn urls_name_host_port_and_path() {
        assert_eq!(
            parse_url("https://127.0.0.1:15017/validate").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 15017,
                path: "/validate".into()
            }
        );
        let t = parse_url("https://istiod.istio-system.svc/validate?timeout=10s").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("istiod.istio-system.svc", 443, "/validate?timeout=10s")
        );
        assert_eq!(parse_url("https://[::1]:8443").unwrap().path, "/");
        assert!(parse_url("http://127.0.0.1:15017/validate").is_err());
        assert!(parse_url("127.0.0.1:15017").is_err());
    }

    #[test]
    fn the_mode_parses_with_its_defaults() {
        let cli = crate::Cli::try_parse_from([
            "capstan-loadgen",
            "webhook",
            "--url",
            "https://127.0.0.1:1/validate",
            "--ca",
            "ca.crt",
            "--requests",
            "1000",
        ])
        .expect("parses");
        let Some(crate::Mode::Webhook(args)) = cli.mode else {
            panic!("not the webhook mode: {:?}", cli.mode)
        };
        assert_eq!(
            (args.concurrency, args.requests, args.warmup, args.threads),
            (100, 1000, 2000, 1)
        );
        assert_eq!(args.server_pid, None);
        assert!(crate::Cli::try_parse_from(["capstan-loadgen", "webhook", "--ca", "x"]).is_err());
        // The file mode's flags still parse without a subcommand.
        assert!(
            crate::Cli::try_parse_from(["capstan-loadgen", "--proxies", "10"])
                .expect("file mode")
                .mode
                .is_none()
        );
    }

    #[test]
    fn summary_takes_nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let s = Summary::of(samples);
        assert_eq!(s.answered, 1000);
        // Index round((n - 1) q) of the sorted samples.
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (501.0, 900.0, 990.0, 1000.0)
        );
        assert_eq!(Summary::of(vec![]).max_ms, 0.0);
        let one = Summary::of(vec![Duration::from_micros(1500)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (1.5, 1.5, 1.5));
    }

    #[test]
    fn the_row_shows_every_figure() {
        let result = WebhookResult {
            label: "istiod".into(),
            url: "https://x/validate".into(),
            concurrency: 100,
            threads: 1,
            requests: 50_000,
            warmup: 2_000,
            invalid_percent: 20.0,
            wall_secs: 10.0,
            requests_per_sec: 5_000.0,
            latency: Summary {
                answered: 50_000,
                p50_ms: 12.345,
                p90_ms: 20.0,
                p99_ms: 40.0,
                max_ms: 120.04,
            },
            errors: 0,
            wrong_verdicts: 0,
            server_cpu_secs: Some(18.5),
            client_cpu_secs: 2.25,
            server_peak_rss_mib: Some(200.0),
        };
        assert_eq!(
            result.row(),
            "| istiod | 50000 | 100 | 5000 | 12.35 | 20.00 | 40.00 | 120.0 | 0 | 0 | 18.50 | 2.25 |"
        );
        assert_eq!(
            TABLE_HEAD.lines().next().unwrap().matches('|').count(),
            result.row().matches('|').count()
        );
        let json: serde_json::Value = serde_json::to_value(&result).unwrap();
        assert_eq!(json["p99_ms"], 40.0);
        assert_eq!(json["server_cpu_secs"], 18.5);
    }
}
