//! One server's measurements at one size, and the side-by-side table (ratio Capstan / istiod,
//! both measured in the same run).

use super::servers::ServerKind;
use crate::stats;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// CPU, bytes and retries over one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub wall_secs: f64,
    /// The server under test (`/proc/PID/stat`, user + system).
    pub server_cpu: f64,
    /// This process: the simulated proxies and the orchestrator.
    pub loadgen_cpu: f64,
    /// The API server, when its pid was given.
    pub apiserver_cpu: Option<f64>,
    /// Idle CPU of the whole machine (all cores): capacity nobody used.
    pub idle_cpu: f64,
    /// Bytes the proxies received.
    pub mib_received: f64,
    pub retries: u64,
    pub refused: u64,
}

/// Latencies of one kind of change, from the API write to each proxy's receipt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Changes made (each reached every proxy: one sample per proxy and change).
    pub changes: usize,
    pub samples: usize,
    pub usage: Usage,
    /// Where the time goes, per change (median over the changes): the API write itself (the
    /// apply request's round trip, part of every sample), and the first proxy's receipt (the
    /// write, the watch, the server's debounce and its first response; the rest of a change's
    /// spread is its fan-out to the other proxies).
    pub write_p50_ms: f64,
    pub first_p50_ms: f64,
}

impl Convergence {
    /// CPU of the server, and of the load generator, per change.
    fn per_change(&self) -> (f64, f64) {
        let n = self.changes.max(1) as f64;
        (self.usage.server_cpu / n, self.usage.loadgen_cpu / n)
    }

    /// Percentiles of `samples`, from `changes` changes.
    pub fn new(samples: Vec<Duration>, changes: usize, usage: Usage) -> Convergence {
        let n = samples.len();
        let (p50, p99, max) = stats::percentiles(samples);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Convergence {
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
            changes,
            samples: n,
            usage,
            write_p50_ms: 0.0,
            first_p50_ms: 0.0,
        }
    }

    /// Adds the breakdown: each change's API write time and its first proxy's latency.
    pub fn with_breakdown(mut self, writes: Vec<Duration>, firsts: Vec<Duration>) -> Convergence {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        self.write_p50_ms = ms(stats::percentiles(writes).0);
        self.first_p50_ms = ms(stats::percentiles(firsts).0);
        self
    }
}

/// Everything measured of one server at one size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunResult {
    pub server: Option<ServerKind>,
    pub proxies: usize,
    /// Start → `/ready`.
    pub ready_secs: f64,
    /// Start → a probe proxy sees the whole mesh.
    pub loaded_secs: f64,
    pub sync: Usage,
    pub rss_after_sync_mib: f64,
    pub endpoint: Convergence,
    pub virtual_service: Convergence,
    /// Every proxy disconnected at once → every proxy fully synced again.
    pub storm: Usage,
    /// VmHWM over the server's whole life.
    pub peak_rss_mib: f64,
    pub nacks: u64,
    /// Why the run failed, if it did (the other server's column is still printed).
    pub error: Option<String>,
}

/// How a row's values are shown.
#[derive(Clone, Copy, PartialEq)]
enum Cell {
    /// A measurement of the server: the ratio of the two servers' values is shown.
    Compared,
    /// What the load generator or the machine did: no ratio.
    Alone,
    /// A count (of refusals, which only istiod makes): an integer, no ratio.
    Count,
}

/// A table row: label, how to read the value from a result, how to show it.
type Row = (&'static str, fn(&RunResult) -> f64, Cell);

const ROWS: &[Row] = &[
    (
        "initial sync of all proxies (s)",
        |r| r.sync.wall_secs,
        Cell::Compared,
    ),
    ("— server CPU (s)", |r| r.sync.server_cpu, Cell::Compared),
    (
        "— load generator CPU (s)",
        |r| r.sync.loadgen_cpu,
        Cell::Alone,
    ),
    (
        "— machine idle CPU (s, all cores)",
        |r| r.sync.idle_cpu,
        Cell::Alone,
    ),
    ("— MiB sent", |r| r.sync.mib_received, Cell::Compared),
    (
        "— streams refused and retried",
        |r| r.sync.refused as f64,
        Cell::Count,
    ),
    (
        "endpoint change → proxy, p50 (ms)",
        |r| r.endpoint.p50_ms,
        Cell::Compared,
    ),
    (
        "endpoint change → proxy, p99 (ms)",
        |r| r.endpoint.p99_ms,
        Cell::Compared,
    ),
    (
        "endpoint change → proxy, max (ms)",
        |r| r.endpoint.max_ms,
        Cell::Compared,
    ),
    (
        "— the API write, p50 (ms)",
        |r| r.endpoint.write_p50_ms,
        Cell::Compared,
    ),
    (
        "— the first proxy, p50 (ms)",
        |r| r.endpoint.first_p50_ms,
        Cell::Compared,
    ),
    (
        "— server CPU per change (s)",
        |r| r.endpoint.per_change().0,
        Cell::Compared,
    ),
    (
        "— load generator CPU per change (s)",
        |r| r.endpoint.per_change().1,
        Cell::Alone,
    ),
    (
        "VirtualService change → proxy, p50 (ms)",
        |r| r.virtual_service.p50_ms,
        Cell::Compared,
    ),
    (
        "VirtualService change → proxy, p99 (ms)",
        |r| r.virtual_service.p99_ms,
        Cell::Compared,
    ),
    (
        "VirtualService change → proxy, max (ms)",
        |r| r.virtual_service.max_ms,
        Cell::Compared,
    ),
    (
        "— server CPU per change (s)",
        |r| r.virtual_service.per_change().0,
        Cell::Compared,
    ),
    (
        "— load generator CPU per change (s)",
        |r| r.virtual_service.per_change().1,
        Cell::Alone,
    ),
    (
        "reconnect storm: all proxies synced again (s)",
        |r| r.storm.wall_secs,
        Cell::Compared,
    ),
    ("— server CPU (s)", |r| r.storm.server_cpu, Cell::Compared),
    (
        "— load generator CPU (s)",
        |r| r.storm.loadgen_cpu,
        Cell::Alone,
    ),
    (
        "— machine idle CPU (s, all cores)",
        |r| r.storm.idle_cpu,
        Cell::Alone,
    ),
    (
        "— streams refused and retried",
        |r| r.storm.refused as f64,
        Cell::Count,
    ),
    (
        "RSS after the initial sync (MiB)",
        |r| r.rss_after_sync_mib,
        Cell::Compared,
    ),
    ("peak RSS, VmHWM (MiB)", |r| r.peak_rss_mib, Cell::Compared),
    (
        "MiB sent over the whole run",
        |r| {
            r.sync.mib_received
                + r.endpoint.usage.mib_received
                + r.virtual_service.usage.mib_received
                + r.storm.mib_received
        },
        Cell::Compared,
    ),
];

fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown table of `results` (one column per server, in order), with the ratio
/// Capstan / istiod when both ran.
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    let proxies = results.first().map_or(0, |r| r.proxies);
    let istiod = results
        .iter()
        .find(|r| r.server == Some(ServerKind::Istiod) && r.error.is_none());
    let capstan = results
        .iter()
        .find(|r| r.server == Some(ServerKind::Capstan) && r.error.is_none());
    let ratio = istiod.is_some() && capstan.is_some();
    let _ = write!(out, "| {proxies} proxies |");
    for r in results {
        let _ = write!(out, " {} |", r.server.map_or("?", ServerKind::label));
    }
    if ratio {
        out.push_str(" Capstan / istiod |");
    }
    out.push_str("\n|---|");
    for _ in results {
        out.push_str("---|");
    }
    if ratio {
        out.push_str("---|");
    }
    out.push('\n');
    for &(label, value, cell) in ROWS {
        let _ = write!(out, "| {label} |");
        for r in results {
            if r.error.is_some() {
                out.push_str(" failed |");
            } else {
                let v = value(r);
                let shown = if cell == Cell::Count {
                    format!("{v:.0}")
                } else {
                    number(v)
                };
                let _ = write!(out, " {shown} |");
            }
        }
        if let (Some(i), Some(c)) = (istiod, capstan) {
            let (i, c) = (value(i), value(c));
            let ratio = if cell != Cell::Compared {
                String::new()
            } else if i == 0.0 {
                "—".to_string()
            } else {
                format!("{:.2}", c / i)
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    }
    for r in results {
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "\n{} failed: {e}",
                r.server.map_or("?", ServerKind::label)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(server: ServerKind, sync_secs: f64, error: Option<&str>) -> RunResult {
        RunResult {
            server: Some(server),
            proxies: 100,
            sync: Usage {
                wall_secs: sync_secs,
                ..Usage::default()
            },
            endpoint: Convergence::new(
                vec![Duration::from_millis(10), Duration::from_millis(30)],
                2,
                Usage {
                    server_cpu: 0.5,
                    ..Usage::default()
                },
            )
            .with_breakdown(
                vec![Duration::from_millis(4), Duration::from_millis(6)],
                vec![Duration::from_millis(9), Duration::from_millis(12)],
            ),
            error: error.map(str::to_string),
            ..RunResult::default()
        }
    }

    #[test]
    fn table_has_a_column_per_server_and_the_ratio() {
        let t = table(&[
            result(ServerKind::Istiod, 8.0, None),
            result(ServerKind::Capstan, 2.0, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| 100 proxies | istiod | Capstan | Capstan / istiod |"
        );
        assert_eq!(lines[1], "|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| initial sync of all proxies (s) | 8.00 | 2.00 | 0.25 |"
        );
        assert!(
            t.contains("| endpoint change → proxy, p99 (ms) | 30.0 | 30.0 | 1.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| — server CPU per change (s) | 0.25 | 0.25 | 1.00 |"),
            "{t}"
        );
        // Nearest-rank median of two samples: the second.
        assert!(
            t.contains("| — the API write, p50 (ms) | 6.00 | 6.00 | 1.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| — the first proxy, p50 (ms) | 12.0 | 12.0 | 1.00 |"),
            "{t}"
        );
        // A zero denominator has no ratio, nor has what the servers do not both do.
        assert!(t.contains("| peak RSS, VmHWM (MiB) | 0 | 0 | — |"), "{t}");
        assert!(
            t.contains("| — streams refused and retried | 0 | 0 |  |"),
            "{t}"
        );
    }

    #[test]
    fn a_failed_run_keeps_the_other_column_and_drops_the_ratio() {
        let t = table(&[
            result(ServerKind::Istiod, 8.0, Some("boom")),
            result(ServerKind::Capstan, 2.0, None),
        ]);
        assert!(t.starts_with("| 100 proxies | istiod | Capstan |\n"), "{t}");
        assert!(
            t.contains("| initial sync of all proxies (s) | failed | 2.00 |"),
            "{t}"
        );
        assert!(t.contains("istiod failed: boom"), "{t}");
    }
}
