//! Process measurements from /proc (Linux): CPU time of the process or one thread, RSS, and
//! latency percentiles.

use std::time::Duration;

/// Clock ticks per second of /proc's utime/stime (USER_HZ, 100 on every Linux ABI in use).
const USER_HZ: f64 = 100.0;

fn cpu_of(stat_path: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(stat_path) else {
        return f64::NAN;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / USER_HZ
}

/// User + system CPU-seconds of the whole process.
pub fn process_cpu() -> f64 {
    cpu_of("/proc/self/stat")
}

/// User + system CPU-seconds of one thread of this process.
pub fn thread_cpu(tid: u32) -> f64 {
    cpu_of(&format!("/proc/self/task/{tid}/stat"))
}

/// The calling thread's id.
pub fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `VmHWM`).
pub fn status_mib(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// p50 / p99 / max of a sample, formatted in ms.
pub fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

/// The system allocator, counting live heap bytes (so the size of a structure can be read
/// exactly, where RSS hides it behind memory the allocator keeps after frees).
pub struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = std::alloc::System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = std::alloc::System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let p = std::alloc::System.realloc(ptr, layout, new);
        if !p.is_null() {
            LIVE.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

/// Live heap bytes in MiB (requested sizes, without allocator overhead).
pub fn live_mib() -> f64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}
