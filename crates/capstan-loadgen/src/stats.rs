//! Latency percentiles and a process's CPU time and peak memory from /proc.

use std::time::Duration;

/// p50, p99 and max of a set of durations (zero when empty).
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    samples.sort();
    (
        quantile(&samples, 0.50),
        quantile(&samples, 0.99),
        samples[samples.len() - 1],
    )
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank, index round((n - 1) q); zero when
/// empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[(((n as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize).min(n - 1)],
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux x86_64.
    Some((utime + stime) / 100.0)
}

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// Current resident set size (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Idle CPU seconds of the whole machine so far, all cores (`idle` + `iowait` of `/proc/stat`):
/// what neither the server, the load generator nor anything else used.
pub fn machine_idle_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<f64> = cpu
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    Some((fields.get(3)? + fields.get(4)?) / 100.0)
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
